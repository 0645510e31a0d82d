//! The interactive shell in a real terminal: tmux runs `hindcast`, the test types into it
//! (`send-keys`) and reads the screen (`capture-pane`).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::repo_root;

/// A tmux session running the shell; killed when dropped.
struct Terminal {
    name: String,
}

impl Terminal {
    fn start(args: &str, data_home: &std::path::Path) -> Self {
        let setup = Command::new("bash")
            .arg(repo_root().join("tests/support/ensure_tmux.sh"))
            .status()
            .expect("runs tests/support/ensure_tmux.sh");
        assert!(
            setup.success(),
            "tmux is needed for the shell test and could not be installed"
        );
        let name = format!("hindcast-test-{}", std::process::id());
        let command = format!(
            "XDG_DATA_HOME={} {} {args}",
            data_home.display(),
            env!("CARGO_BIN_EXE_hindcast")
        );
        let status = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &name,
                "-x",
                "200",
                "-y",
                "60",
                &command,
            ])
            .current_dir(repo_root())
            .status()
            .expect("starts tmux");
        assert!(status.success(), "tmux new-session failed");
        Self { name }
    }

    /// Type `keys` (tmux key names such as `Enter`, `Tab`, `C-c` are keys, the rest text).
    fn keys(&self, keys: &[&str]) {
        let status = Command::new("tmux")
            .args(["send-keys", "-t", &self.name])
            .args(keys)
            .status()
            .expect("tmux send-keys");
        assert!(status.success());
    }

    fn screen(&self) -> String {
        let out = Command::new("tmux")
            .args(["capture-pane", "-p", "-S", "-200", "-t", &self.name])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Wait until the screen holds `text` `times` times (the machine may be busy).
    fn wait_for(&self, text: &str, times: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if screen.matches(text).count() >= times {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} after 60 s:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        // After `\q` the session is already gone.
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn shell_in_a_terminal() {
    let data_home = tempfile::tempdir().expect("temp dir");
    let t = Terminal::start("--repo examples/feature_repo", data_home.path());
    t.wait_for("4 feature views, 1 feature service.", 1);
    t.wait_for("hindcast>", 1);

    // A statement over three lines runs once the `;` arrives. (tmux reads a trailing `;`
    // as its own separator, hence `\;`.)
    t.keys(&["SELECT user_id, count(*) AS n", "Enter"]);
    t.keys(&["FROM labels GROUP BY user_id", "Enter"]);
    t.keys(&["ORDER BY user_id LIMIT 3\\;", "Enter"]);
    let screen = t.wait_for("3 rows in set", 1);
    assert!(screen.contains("| 1000    | 4 |"), "{screen}");

    // Meta-commands, and a hint for an unknown one.
    t.keys(&["\\dv", "Enter"]);
    let screen = t.wait_for("DELTA 'examples/feature_repo/data/user_plan/'", 1);
    assert!(screen.contains("user_spending_stats"), "{screen}");
    t.keys(&["\\nope", "Enter"]);
    t.wait_for("Unknown command \\nope: \\? lists the commands.", 1);

    // A parse error points at its position.
    t.keys(&["SELECT user_id FROM labels WHERE\\;", "Enter"]);
    let screen = t.wait_for("Column: 33", 1);
    let caret = format!("  SELECT user_id FROM labels WHERE;\n  {}^", " ".repeat(32));
    assert!(screen.contains(&caret), "{screen}");

    // Tab completes a feature view's name.
    t.keys(&["SELECT count(*) AS activity_rows FROM user_act", "Tab"]);
    t.wait_for("FROM user_activity", 1);
    t.keys(&[" \\;", "Enter"]);
    let screen = t.wait_for("1 row in set", 1);
    assert!(screen.contains("| 10000         |"), "{screen}");

    // A long query shows its progress; Ctrl-C cancels it and the prompt comes back.
    let prompts = t.screen().matches("hindcast>").count();
    t.keys(&[
        "SELECT count(*) FROM labels l JOIN generate_series(1, 100000000000) t(x) \
         ON x % 7919 = l.user_id\\;",
        "Enter",
    ]);
    // After a second, a progress line (stderr is a terminal here): the labels file is read
    // (it is the hash join's build side) while the series streams on.
    t.wait_for("s elapsed, scanned 1 of 1 files (100%),", 1);
    t.keys(&["C-c"]);
    t.wait_for("Query cancelled.", 1);
    t.wait_for("hindcast>", prompts + 1);
    t.keys(&["SELECT 41 + 1 AS answer\\;", "Enter"]);
    let screen = t.wait_for("| 42     |", 1);
    assert!(!screen.contains("panicked"), "{screen}");

    // Expanded display.
    t.keys(&["\\x", "Enter"]);
    t.wait_for("Expanded display is on.", 1);
    t.keys(&["SELECT 1 AS a, 22 AS bee\\;", "Enter"]);
    t.wait_for("bee | 22", 1);

    // \q leaves and saves the history in the data directory, not the working directory.
    t.keys(&["\\q", "Enter"]);
    let history = data_home.path().join("hindcast/history");
    // The file can exist before the shell has finished writing it: wait for the content.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let saved = std::fs::read_to_string(&history).unwrap_or_default();
        if saved.contains("SELECT 41 + 1 AS answer;") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no history with the last query at {}: {saved:?}",
            history.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
