//! Writes killed with SIGKILL (`kill -9`) at several points: `COPY ... TO` a training set,
//! `INSERT INTO` a Parquet feature view, and `hindcast generate`, each a real `hindcast`
//! process. Afterwards the target holds what it held before or the whole new write, never
//! part of a file; what the killed process left is named `.hindcast-*` (`.name.partial`
//! for `generate`), hidden from readers, and the next write to the same place finishes or
//! removes it. A reader running throughout sees only whole datasets.
//!
//! Exact points come from `HINDCAST_CRASH_POINT` (the process stops there and says so, and
//! is killed then): `written` (all files written, not yet marked complete), `complete`
//! (marked complete, not yet in place), `moved-aside` (the previous set moved aside, the
//! new one not yet in), `merging` (the first file moved into a view's directory). Points
//! in the middle of the writing itself are kills after a delay.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};

fn hindcast(dir: &Path, args: &[&str], crash_point: Option<&str>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hindcast"));
    command
        .current_dir(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(point) = crash_point {
        command.env("HINDCAST_CRASH_POINT", point);
    }
    command.spawn().expect("runs hindcast")
}

/// Kill `child` once it says it reached `point`.
fn kill_at(mut child: Child, point: &str) {
    let stderr = child.stderr.take().expect("stderr");
    let said = format!("hindcast: at crash point {point}");
    let reached = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .any(|line| line == said);
    assert!(reached, "the process ended before {point}");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
}

/// Kill `child` `delay` after it starts writing (a `.hindcast-tmp-` or `.partial` appears in
/// `dir`), asserting it had not finished by then, so the kill lands in the middle of the
/// write.
fn kill_while_writing(mut child: Child, dir: &Path, delay: Duration) {
    let started = std::time::Instant::now();
    while !leftovers(dir)
        .iter()
        .any(|name| name.starts_with(".hindcast-tmp-") || name.ends_with(".partial"))
    {
        assert!(
            child.try_wait().expect("status").is_none(),
            "the write ended before it began"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no write began"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(delay);
    assert!(
        child.try_wait().expect("status").is_none(),
        "the write finished within {delay:?}: nothing was killed"
    );
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
}

fn finish(child: Child) {
    let output = child.wait_with_output().expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Rows in the Parquet files under `dir` (hidden names skipped, as readers skip them):
/// `None` if `dir` is not there; an error if a file is not whole.
fn rows_in(dir: &Path) -> Result<Option<i64>, String> {
    fn walk(dir: &Path, rows: &mut i64) -> std::io::Result<Result<(), String>> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name.starts_with('_') {
                continue;
            }
            if entry.file_type()?.is_dir() {
                if let Err(e) = walk(&entry.path(), rows)? {
                    return Ok(Err(e));
                }
            } else if name.ends_with(".parquet") {
                let file = std::fs::File::open(entry.path())?;
                match SerializedFileReader::new(file) {
                    Ok(reader) => *rows += reader.metadata().file_metadata().num_rows(),
                    Err(e) => return Ok(Err(format!("{}: {e}", entry.path().display()))),
                }
            }
        }
        Ok(Ok(()))
    }
    let mut rows = 0;
    match walk(dir, &mut rows) {
        // Renamed away while being read: the reader saw no dataset, not part of one.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", dir.display())),
        Ok(Err(e)) => Err(e),
        Ok(Ok(())) => Ok(Some(rows)),
    }
}

/// What `hindcast` left beside `dir/name` (and in it).
fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = vec![];
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".hindcast-") || name.ends_with(".partial") || name.ends_with(".old") {
            found.push(name);
        }
    }
    found
}

/// A reader that checks `dir` every few milliseconds until stopped: each time it must
/// find no dataset or one whose rows are one of `whole`.
struct Reader {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl Reader {
    fn start(dir: &Path, whole: Vec<i64>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (dir, flag) = (dir.to_path_buf(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut reads = 0;
            while !flag.load(Ordering::Relaxed) {
                match rows_in(&dir) {
                    Ok(None) => {}
                    Ok(Some(rows)) => assert!(
                        whole.contains(&rows),
                        "a reader saw {rows} rows at {}, not a whole write ({whole:?})",
                        dir.display()
                    ),
                    Err(e) => panic!("a reader saw a file that is not whole: {e}"),
                }
                reads += 1;
                std::thread::sleep(Duration::from_millis(3));
            }
            reads
        });
        Self { stop, thread }
    }

    fn stop(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .expect("the reader saw only whole datasets")
    }
}

/// `COPY` of `rows` rows to the training set `out/`.
fn copy_sql(rows: i64) -> String {
    format!(
        "COPY (SELECT v AS k, v * 2 AS x FROM generate_series(1, {rows}) t(v)) \
         TO 'out/' STORED AS PARQUET"
    )
}

#[test]
fn a_killed_copy_leaves_the_previous_training_set_or_the_new_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out");
    // Each write has its own row count, so a reader can tell them apart.
    let sizes: Vec<i64> = (0..9).map(|i| 2_000_000 + i).collect();
    let reader = Reader::start(&out, sizes.clone());
    finish(hindcast(dir.path(), &["-c", &copy_sql(sizes[0])], None));
    assert_eq!(rows_in(&out), Ok(Some(sizes[0])));

    let mut kills = 0;
    let mut previous = sizes[0];
    let points: [(Option<&str>, u64); 7] = [
        (None, 0),
        (None, 100),
        (None, 300),
        (Some("written"), 0),
        (Some("complete"), 0),
        (Some("moved-aside"), 0),
        (None, 200),
    ];
    for (i, (point, delay)) in points.into_iter().enumerate() {
        let rows = sizes[i + 1];
        let child = hindcast(dir.path(), &["-c", &copy_sql(rows)], point);
        match point {
            Some(point) => kill_at(child, point),
            None => kill_while_writing(child, dir.path(), Duration::from_millis(delay)),
        }
        kills += 1;
        let left = leftovers(dir.path());
        assert!(!left.is_empty(), "a killed write left nothing to clean up");
        // The target is as it was, or missing while the previous set is moved aside.
        let now = rows_in(&out).expect("whole files");
        match point {
            Some("moved-aside") => assert_eq!(now, None),
            _ => assert_eq!(now, Some(previous)),
        }
        // The next write finishes or removes what the killed one left, then writes.
        let next = *sizes.last().expect("sizes");
        finish(hindcast(dir.path(), &["-c", &copy_sql(next)], None));
        assert_eq!(rows_in(&out), Ok(Some(next)));
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
        previous = next;
    }
    let reads = reader.stop();
    assert!(reads > 50, "the reader read {reads} times");
    assert_eq!(kills, 7);
}

#[test]
fn a_killed_insert_is_finished_or_undone_by_the_next_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let view = dir.path().join("events");
    std::fs::create_dir_all(&view).expect("view directory");
    let create = format!(
        "CREATE FEATURE VIEW events ENTITY (k) TIMESTAMP ts STORED AS PARQUET LOCATION '{}/'",
        view.display()
    );
    let insert = |rows: i64| {
        format!(
            "{create}; INSERT INTO events SELECT v AS k, to_timestamp_seconds(v) AS ts, \
             v * 2 AS x FROM generate_series(1, {rows}) t(v)"
        )
    };
    // A view's schema comes from its files: the first one written by COPY.
    let base = 1000;
    let first = format!(
        "COPY (SELECT v AS k, to_timestamp_seconds(v) AS ts, v * 2 AS x \
         FROM generate_series(1, {base}) t(v)) TO 'events/base.parquet'"
    );
    finish(hindcast(dir.path(), &["-c", &first], None));
    assert_eq!(rows_in(&view), Ok(Some(base)));

    // (where it is killed, rows the next insert of `n` finds afterwards besides its own).
    let n = 500_000;
    let cases = [
        // Killed while writing: the killed insert's rows are removed.
        (None, 0),
        // All files written, not yet marked complete: removed.
        (Some("written"), 0),
        // Marked complete: moved in by the next insert.
        (Some("complete"), n),
        // Its first file moved in (visible then): the rest moved in by the next insert.
        (Some("merging"), n),
    ];
    let mut total = base;
    for (point, kept) in cases {
        let child = hindcast(dir.path(), &["-c", &insert(n)], point);
        match point {
            Some(point) => kill_at(child, point),
            None => kill_while_writing(child, dir.path(), Duration::from_millis(50)),
        }
        let seen = rows_in(&view).expect("whole files").expect("the view");
        if point == Some("merging") {
            assert!(seen > total && seen < total + n, "{seen} rows mid-merge");
        } else {
            assert_eq!(seen, total);
        }
        assert!(!leftovers(dir.path()).is_empty(), "nothing left to recover");
        finish(hindcast(dir.path(), &["-c", &insert(n)], None));
        total += kept + n;
        assert_eq!(rows_in(&view), Ok(Some(total)), "killed at {point:?}");
        assert_eq!(leftovers(dir.path()), Vec::<String>::new());
    }
}

#[test]
fn a_killed_generate_leaves_no_half_written_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let generate = ["generate", "--out", "d", "--scale", "0.05", "--days", "60"];
    finish(hindcast(dir.path(), &generate, None));
    let table = dir.path().join("d/user_spending_stats");
    let whole = rows_in(&table).expect("whole").expect("written");
    let reader = Reader::start(&table, vec![whole]);
    for (point, delay) in [(None, 0), (None, 300), (Some("moved-aside"), 0)] {
        let child = hindcast(dir.path(), &generate, point);
        match point {
            Some(point) => kill_at(child, point),
            None => kill_while_writing(child, &dir.path().join("d"), Duration::from_millis(delay)),
        }
        let now = rows_in(&table).expect("whole files");
        match point {
            Some(_) => assert_eq!(now, None),
            None => assert_eq!(now, Some(whole)),
        }
        finish(hindcast(dir.path(), &generate, None));
        assert_eq!(rows_in(&table), Ok(Some(whole)));
        assert_eq!(leftovers(&dir.path().join("d")), Vec::<String>::new());
    }
    reader.stop();
}
