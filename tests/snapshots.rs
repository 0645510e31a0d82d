//! Snapshot tests of the shell: each `tests/snapshots/NAME.sql` is piped into
//! `hindcast --repo examples/feature_repo` and its output (stdout and stderr, interleaved as
//! a terminal shows them) must equal `NAME.out`, with timings and the checkout's path
//! masked. `HINDCAST_BLESS=1 cargo test snapshots` rewrites the `.out` files; review the
//! diff before committing it.

use std::process::{Command, Stdio};

use regex::Regex;

use crate::common::repo_root;

fn check(name: &str) {
    let dir = repo_root().join("tests/snapshots");
    let input = std::fs::File::open(dir.join(format!("{name}.sql"))).expect("snapshot input");
    // One pipe for both streams, so errors appear where they happen.
    let out = Command::new("sh")
        .args(["-c", "exec \"$0\" --repo examples/feature_repo 2>&1"])
        .arg(env!("CARGO_BIN_EXE_hindcast"))
        .env(
            "XDG_DATA_HOME",
            tempfile::tempdir().expect("temp dir").path(),
        )
        .current_dir(repo_root())
        .stdin(Stdio::from(input))
        .output()
        .expect("runs hindcast");
    assert!(out.status.success(), "{name}: exit {}", out.status);
    let actual = mask(&String::from_utf8_lossy(&out.stdout));
    let expected_path = dir.join(format!("{name}.out"));
    if std::env::var_os("HINDCAST_BLESS").is_some() {
        std::fs::write(&expected_path, &actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
    if actual != expected {
        let first = actual
            .lines()
            .zip(
                expected
                    .lines()
                    .chain(std::iter::repeat("<end of snapshot>")),
            )
            .position(|(a, e)| a != e)
            .unwrap_or(0);
        panic!(
            "{name}: output differs from {} from line {}:\n  got:      {:?}\n  expected: {:?}\n\
             (HINDCAST_BLESS=1 rewrites the snapshot)\n--- full output ---\n{actual}",
            expected_path.display(),
            first + 1,
            actual.lines().nth(first).unwrap_or(""),
            expected.lines().nth(first).unwrap_or("<end of snapshot>"),
        );
    }
}

/// Timings, and the absolute path of this checkout (which plans print without its
/// leading `/`), vary from run to run and machine to machine.
fn mask(text: &str) -> String {
    let root = repo_root()
        .to_string_lossy()
        .trim_start_matches('/')
        .to_string();
    let text = text.replace(&root, "[REPO]");
    let took = Regex::new(r"Query took \d+\.\d+ seconds").expect("regex");
    let text = took.replace_all(&text, "Query took [T] seconds");
    let time = Regex::new(r"=\d+(\.\d+)?(ns|µs|ms|s)\b").expect("regex");
    time.replace_all(&text, "=[T]").to_string()
}

#[test]
fn output_formats() {
    check("output");
}

#[test]
fn meta_commands_and_errors() {
    check("meta");
}

#[test]
fn explain_renders_plans() {
    check("explain");
}
