//! The `hindcast` binary as a user runs it: the README's main job, formats, errors.

use std::process::{Command, Output};

use crate::common::{WorkerProcesses, link_example_repository, repo_root};

fn hindcast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hindcast"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("runs hindcast")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).to_string()
}

#[test]
fn readme_main_job_writes_the_training_set_and_prints_rows() {
    let out = hindcast(&[
        "--repo",
        "examples/feature_repo",
        "-f",
        "examples/training_set.sql",
    ]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    // COPY reports one row per label.
    assert!(text.contains("| 2000  |"), "{text}");
    // First label of the example: user 1000 at 2025-01-11 00:00; its stats row of
    // 2025-01-11 (re-computed a day later) wins over nothing older.
    let first = text
        .lines()
        .find(|l| l.contains("| 1000    | 2025-01-11T00:00:00"))
        .unwrap_or_else(|| panic!("no row for user 1000 in:\n{text}"));
    assert!(first.contains("grocery"), "{first}");
    assert!(text.contains("10 rows in set"), "{text}");

    // The written training set (as `t`, the statements after it): one row per label,
    // features as of each label's time.
    let on_training_set = |statements: &[&str]| {
        let mut args = vec![
            "-q",
            "--format",
            "csv",
            "-c",
            "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 'target/training_set/'",
        ];
        for statement in statements {
            args.extend(["-c", statement]);
        }
        hindcast(&args)
    };
    let check = on_training_set(&[
        "SELECT count(*), count(DISTINCT user_id), max(session_count_7d) FROM t",
    ]);
    assert!(check.status.success(), "stderr: {}", stderr(&check));
    assert_eq!(stdout(&check).lines().last(), Some("2000,500,49"));

    // Its aggregates against plain SQL over the raw transactions (a range join, then GROUP
    // BY): every row the same, and most labels with transactions in their windows.
    let reference = on_training_set(&[
        "CREATE EXTERNAL TABLE tx STORED AS PARQUET LOCATION 'examples/feature_repo/data/transactions/'",
        "SELECT count(*), \
           sum(CASE WHEN txn_count_30d = n30 THEN 1 ELSE 0 END), \
           sum(CASE WHEN (avg_amount_30d IS NULL AND avg30 IS NULL) \
                     OR abs(avg_amount_30d - avg30) < 1e-9 THEN 1 ELSE 0 END), \
           sum(CASE WHEN merchants_7d = m7 THEN 1 ELSE 0 END), \
           sum(CASE WHEN txn_count_30d > 0 THEN 1 ELSE 0 END) \
         FROM (SELECT t.user_id, t.event_timestamp, t.txn_count_30d, t.avg_amount_30d, t.merchants_7d, \
                 count(x.ts) AS n30, avg(x.amount) AS avg30, \
                 count(DISTINCT CASE WHEN x.ts >= t.event_timestamp - INTERVAL '7 days' THEN x.merchant END) AS m7 \
               FROM t LEFT JOIN tx x ON x.user_id = t.user_id \
                 AND x.ts BETWEEN t.event_timestamp - INTERVAL '30 days' AND t.event_timestamp \
               GROUP BY 1, 2, 3, 4, 5)",
    ]);
    assert!(reference.status.success(), "stderr: {}", stderr(&reference));
    let counts: Vec<usize> = stdout(&reference)
        .lines()
        .last()
        .expect("a row")
        .split(',')
        .map(|n| n.parse().expect("a count"))
        .collect();
    assert_eq!(counts[..4], [2000; 4], "{counts:?}");
    assert!(counts[4] > 1500, "{counts:?}");

    // The README's check of it passes; a stricter null threshold fails, naming the column.
    let valid = hindcast(&[
        "validate",
        "target/training_set",
        "--max-null-fraction",
        "0.2",
    ]);
    let text = stdout(&valid);
    assert!(valid.status.success(), "{text}{}", stderr(&valid));
    assert!(text.contains("ok   no leakage: 4 joins, "), "{text}");
    assert!(text.ends_with("target/training_set: valid\n"), "{text}");
    let strict = hindcast(&[
        "validate",
        "target/training_set",
        "--max-null-fraction",
        "0",
    ]);
    let text = stdout(&strict);
    assert!(!strict.status.success(), "{text}");
    assert!(
        text.contains("FAIL feature avg_transaction_amount: null fraction"),
        "{text}"
    );

    // The README's reproduction: the same rows from the manifest's sources.
    let again = hindcast(&[
        "reproduce",
        "target/training_set",
        "target/training_set_again",
    ]);
    let text = stdout(&again);
    assert!(again.status.success(), "{text}{}", stderr(&again));
    assert!(text.contains("2000 rows, checksum 2000:"), "{text}");
    assert!(
        text.contains("as recorded in target/training_set"),
        "{text}"
    );
}

#[test]
fn repository_is_listed_and_described() {
    let out = hindcast(&[
        "--repo",
        "examples/feature_repo",
        "-q",
        "--format",
        "csv",
        "-c",
        "SHOW FEATURE VIEWS",
        "-c",
        "SHOW FEATURE SERVICES",
    ]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("user_spending_stats,user_id,event_timestamp,created_timestamp,90 days,PARQUET 'examples/feature_repo/data/user_spending_stats.parquet'"), "{text}");
    assert!(text.contains("user_activity,user_id,ts,,7 days,"), "{text}");
    assert!(
        text.contains("churn_model,user_activity,session_count_7d"),
        "{text}"
    );
}

#[test]
fn bad_repository_file_is_reported_with_file_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("a.sql"),
        "-- fine\nCREATE TABLE t AS VALUES (1);\n\nCREATE FEATURE VIEW v ENTITY (column1) TIMESTAMP nope AS SELECT * FROM t;\n",
    )
    .expect("write");
    let out = hindcast(&["--repo", dir.path().to_str().unwrap(), "-c", "SELECT 1"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("a.sql:4: "), "{err}");
    assert!(
        err.contains("TIMESTAMP column nope is not in the source"),
        "{err}"
    );

    std::fs::write(
        dir.path().join("a.sql"),
        "CREATE FEATURE VIEW v ENTITY (k) TIMESTAMP;\n",
    )
    .expect("write");
    let out = hindcast(&["--repo", dir.path().to_str().unwrap(), "-c", "SELECT 1"]);
    let err = stderr(&out);
    assert!(err.contains("a.sql: ") && err.contains("Line: 1"), "{err}");
}

#[test]
fn failed_copy_leaves_no_partial_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let target = dir.path().join("training");
    // The cast fails on a late row, after earlier batches were written.
    let sql = format!(
        "COPY (SELECT CASE WHEN value < 50000 THEN CAST(value AS VARCHAR) ELSE 'x' END::INT AS v \
         FROM generate_series(1, 100000)) TO '{}/' STORED AS PARQUET",
        target.display()
    );
    let out = hindcast(&["-c", &sql]);
    assert!(!out.status.success(), "the COPY was expected to fail");
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("list").collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    // The same COPY without the failure writes the dataset.
    let sql = format!(
        "COPY (SELECT value AS v FROM generate_series(1, 100000)) TO '{}/' STORED AS PARQUET",
        target.display()
    );
    let out = hindcast(&["-c", &sql]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["training".to_string()]);
}

#[test]
fn csv_output_and_quiet() {
    let out = hindcast(&[
        "-q",
        "--format",
        "csv",
        "-c",
        "SELECT * FROM (VALUES (1, 'a')) t(x, y)",
    ]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "x,y\n1,a\n");
}

#[test]
fn ndjson_output() {
    let out = hindcast(&["-q", "--format", "ndjson", "-c", "SELECT 1 AS x"]);
    assert_eq!(stdout(&out), "{\"x\":1}\n");
}

#[test]
fn maxrows_limits_table_output() {
    let out = hindcast(&[
        "--maxrows",
        "2",
        "-c",
        "SELECT * FROM generate_series(1, 5)",
    ]);
    let text = stdout(&out);
    assert!(text.contains("5 rows (first 2 shown) in set"), "{text}");
    assert!(!text.contains("| 3 "), "{text}");
}

#[test]
fn sql_errors_exit_nonzero_with_one_readable_line() {
    let out = hindcast(&[
        "-c",
        "SELECT * FROM (VALUES (1, 1)) l(k, t) ASOF JOIN (VALUES (1, 1)) r(k, t) MATCH_CONDITION (l.t = r.t) ON l.k = r.k",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("put equality conditions in ON"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn memory_limit_flag_is_parsed_and_checked() {
    let ok = hindcast(&["-q", "-m", "64M", "-c", "SELECT 1"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let bad = hindcast(&["-m", "lots", "-c", "SELECT 1"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("512M"), "{}", stderr(&bad));
}

#[test]
fn missing_file_is_a_clear_error() {
    let out = hindcast(&[
        "-c",
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 'no/such/file.parquet'",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.to_lowercase().contains("no/such/file.parquet"), "{err}");
}

/// The shell reads piped input too: an rc file first, then statements and meta-commands.
#[test]
fn shell_reads_piped_statements_after_the_rc_file() {
    use std::io::Write;
    use std::process::Stdio;

    let dir = tempfile::tempdir().expect("temp dir");
    let rc = dir.path().join("rc.sql");
    std::fs::write(&rc, "CREATE TABLE from_rc AS VALUES (7);").expect("rc file");
    let out_file = dir.path().join("out.txt");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hindcast"))
        .args(["-r", rc.to_str().expect("utf-8 path")])
        .env("XDG_DATA_HOME", dir.path())
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs hindcast");
    let script = format!(
        "SELECT column1 * 6 AS six_times FROM from_rc;\n\\x\nSELECT 1 AS a, 22 AS bee;\n\\o {}\nSELECT 3 AS in_file;\n\\o\n\\q\n",
        out_file.display()
    );
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write script");
    let out = child.wait_with_output().expect("hindcast exits");
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("| 42        |"), "{text}");
    assert!(text.contains("bee | 22"), "{text}");
    assert!(!text.contains("in_file"), "{text}");
    let written = std::fs::read_to_string(&out_file).expect("\\o file");
    assert!(written.contains("in_file | 3"), "{written}");
}

/// `hindcast generate` is deterministic, writes the seed schema in daily partitions, and
/// puts in what the semantics need: skewed users, corrections that tie on (user, time) with
/// a later created time, backfills, and labels exactly on a feature row's time.
#[test]
fn generate_writes_deterministic_realistic_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let generate = |out: &std::path::Path| {
        let out = hindcast(&[
            "generate",
            "--out",
            out.to_str().expect("utf-8 path"),
            "--labels",
            "2000",
            "--spending-rows",
            "20000",
            "--activity-rows",
            "5000",
            "--users",
            "500",
            "--days",
            "10",
        ]);
        assert!(out.status.success(), "stderr: {}", stderr(&out));
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    generate(&a);
    generate(&b);
    let file = "user_spending_stats/date=2024-01-07/part-0.parquet";
    let bytes = |root: &std::path::Path, f: &str| std::fs::read(root.join(f)).expect(f);
    assert_eq!(bytes(&a, file), bytes(&b, file), "same seed, same bytes");
    assert_eq!(bytes(&a, "labels.parquet"), bytes(&b, "labels.parquet"));
    assert!(!a.join(".user_spending_stats.partial").exists());

    let root = a.display();
    let sql = format!(
        "CREATE EXTERNAL TABLE s STORED AS PARQUET PARTITIONED BY (date) \
           LOCATION '{root}/user_spending_stats/';
         CREATE EXTERNAL TABLE l STORED AS PARQUET LOCATION '{root}/labels.parquet';
         SELECT
           (SELECT count(DISTINCT date) FROM s) AS days,
           (SELECT count(*) FROM s) AS spending_rows,
           (SELECT count(*) FROM (SELECT user_id, event_timestamp FROM s GROUP BY 1, 2
                                  HAVING count(*) > 1)) AS tied,
           (SELECT count(*) FROM s WHERE arrow_cast(created_timestamp, 'Int64')
                 - arrow_cast(event_timestamp, 'Int64') > 86400000000) AS late,
           (SELECT max(n) FROM (SELECT count(*) AS n FROM s GROUP BY user_id)) AS busiest,
           (SELECT count(*) FROM l) AS labels,
           (SELECT count(*) FROM (SELECT DISTINCT user_id, event_timestamp FROM l)) AS distinct_labels,
           (SELECT count(*) FROM l JOIN s ON l.user_id = s.user_id
                 AND l.event_timestamp = s.event_timestamp) AS on_feature_time;"
    );
    let out = hindcast(&["-q", "--format", "csv", "-c", &sql]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    let values: Vec<i64> = text
        .lines()
        .nth(1)
        .expect("a row")
        .split(',')
        .map(|v| v.parse().expect("a number"))
        .collect();
    let [days, rows, tied, late, busiest, labels, distinct, on_time] = values[..] else {
        panic!("{text}")
    };
    assert_eq!(days, 10);
    // 1% corrections on top of the rows asked for, each tying with an original.
    assert_eq!(rows, 20_200);
    assert!((150..=200).contains(&tied), "{text}");
    // About 2% backfills, plus corrections restated more than a day later.
    assert!((300..=700).contains(&late), "{text}");
    // Skew: the busiest of 500 users has far more than the average 40 rows.
    assert!(busiest > 400, "{text}");
    assert_eq!(
        (labels, distinct),
        (2000, 2000),
        "labels never share (user, time)"
    );
    assert!((5..=40).contains(&on_time), "{text}");
}

#[test]
fn generate_rejects_bad_sizes_with_a_hint() {
    let out = hindcast(&[
        "generate",
        "--out",
        "/tmp/unused",
        "--labels",
        "10000000",
        "--days",
        "1",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("at most 86,400 labels a day (one a second): raise --label-days"),
        "{}",
        stderr(&out)
    );
}

/// A date range past chrono's last date is an error that names the flag, not a panic.
#[test]
fn generate_rejects_days_past_the_last_date() {
    let out_dir = tempfile::tempdir().expect("temp dir");
    let out_path = out_dir.path().join("never");
    for flags in [["--days", "100000000000"], ["--label-days", "100000000000"]] {
        let mut args = vec![
            "generate",
            "--out",
            out_path.to_str().expect("utf-8 path"),
            "--scale",
            "0.001",
        ];
        args.extend(flags);
        let out = hindcast(&args);
        assert!(!out.status.success(), "{flags:?} succeeded");
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "{} 100000000000 runs past the last date",
                flags[0]
            )) && !err.contains("panicked"),
            "{flags:?}: {err}"
        );
        assert!(!out_path.exists(), "{flags:?} wrote {}", out_path.display());
    }
}

const EXAMPLE_COUNT: &str = "SELECT count(*) FROM historical_features('labels', 'user_spending_stats:avg_transaction_amount')";

/// `query` on the example repository through the workers at `addresses`, every scan split
/// across them however small its files.
fn on_workers(addresses: &[String], flags: &[&str], query: &str) -> Output {
    let workers = addresses.join(",");
    let mut args = flags.to_vec();
    args.extend([
        "--repo",
        "examples/feature_repo",
        "--workers",
        &workers,
        "-c",
        "SET distributed.file_scan_config_bytes_per_partition = 1",
        "-c",
        query,
    ]);
    hindcast(&args)
}

/// The README's training set through three worker processes: the same CSV as in one
/// process.
#[test]
fn training_set_on_three_worker_processes() {
    let (_workers, addresses) = WorkerProcesses::start(3, &[]);
    let query = "SELECT * FROM historical_features('labels', 'user_spending_stats:avg_transaction_amount', \
                 'user_activity:session_count_7d', 'user_transactions:spend_90d', \
                 'user_transactions:merchants_7d') ORDER BY user_id, event_timestamp, label";
    let local = hindcast(&[
        "-q",
        "--format",
        "csv",
        "--repo",
        "examples/feature_repo",
        "-c",
        query,
    ]);
    assert!(local.status.success(), "stderr: {}", stderr(&local));
    let distributed = on_workers(&addresses, &["-q", "--format", "csv"], query);
    assert!(
        distributed.status.success(),
        "stderr: {}",
        stderr(&distributed)
    );
    assert_eq!(stdout(&local).lines().count(), 2001);
    assert_eq!(stdout(&distributed), stdout(&local));
}

/// One of three workers is not there: the query fails, soon, naming it.
#[test]
fn unreachable_worker_is_a_clear_error() {
    let (_workers, mut addresses) = WorkerProcesses::start(2, &[]);
    // A port nobody listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    addresses.push(format!("127.0.0.1:{port}"));
    let started = std::time::Instant::now();
    let out = on_workers(&addresses, &[], EXAMPLE_COUNT);
    assert!(!out.status.success(), "stdout: {}", stdout(&out));
    let text = stderr(&out);
    assert!(
        text.contains(&port.to_string()),
        "the error does not name the worker: {text}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

/// A repository naming its workers (`SET hindcast.workers` in one of its files) runs on
/// them; `--workers` wins over it.
#[test]
fn workers_from_the_repository_and_the_command_line() {
    let (_workers, addresses) = WorkerProcesses::start(3, &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    link_example_repository(dir.path());
    let settings = |workers: &str| {
        std::fs::write(
            dir.path().join("settings.sql"),
            format!(
                "SET hindcast.workers = '{workers}';\n\
                 SET distributed.file_scan_config_bytes_per_partition = 1;\n"
            ),
        )
        .expect("settings")
    };
    let repo = dir.path().to_str().expect("utf-8 path");
    let count = |extra: &[&str]| {
        let mut args = vec!["-q", "--format", "csv", "--repo", repo];
        args.extend(extra);
        args.extend(["-c", EXAMPLE_COUNT]);
        hindcast(&args)
    };
    settings(&addresses.join(","));
    let out = count(&[]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert!(stdout(&out).contains("2000"), "{}", stdout(&out));

    // The repository names a worker that is not there: it is used (the query fails,
    // naming it) unless the command line names others. (With one worker, a query runs
    // in-process: two live ones go with it.)
    settings(&format!("{},{},127.0.0.1:1", addresses[0], addresses[1]));
    let out = count(&[]);
    assert!(!out.status.success(), "stdout: {}", stdout(&out));
    assert!(stderr(&out).contains("127.0.0.1:1"), "{}", stderr(&out));
    let workers = addresses.join(",");
    let out = count(&["--workers", &workers]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert!(stdout(&out).contains("2000"), "{}", stdout(&out));
}

#[test]
fn bad_worker_address_is_a_clear_error() {
    let out = hindcast(&["--workers", "not a host", "-c", "SELECT 1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not host:port"),
        "{}",
        stderr(&out)
    );
}

/// A worker that stops answering (a frozen process: it still accepts connections) fails
/// the query within the keep-alive bound, naming it, instead of leaving it waiting.
#[test]
fn frozen_worker_fails_the_query_in_bounded_time() {
    let (workers, addresses) = WorkerProcesses::start(3, &[]);
    workers.signal(1, "-STOP");
    let started = std::time::Instant::now();
    let out = on_workers(&addresses, &[], EXAMPLE_COUNT);
    let elapsed = started.elapsed();
    assert!(!out.status.success(), "stdout: {}", stdout(&out));
    let text = stderr(&out);
    assert!(
        text.contains(&addresses[1]),
        "the error does not name {}: {text}",
        addresses[1]
    );
    assert!(!text.contains("panicked"), "{text}");
    // The connect timeout (5 s) or the keep-alive bound (15 s), with room for a slow machine.
    assert!(
        elapsed < std::time::Duration::from_secs(40),
        "took {elapsed:?}"
    );
}

/// A worker killed in the middle of a `COPY`: the query fails naming it, and nothing is
/// left where the output was to go.
#[test]
fn killed_worker_fails_the_copy_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let generated = hindcast(&[
        "generate",
        "--out",
        data.to_str().unwrap(),
        "--scale",
        "0.2",
        "--layout",
        "file",
        "--activity-rows",
        "0",
    ]);
    assert!(generated.status.success(), "stderr: {}", stderr(&generated));
    let output = dir.path().join("training_set.parquet");
    let script = format!(
        "SET distributed.file_scan_config_bytes_per_partition = 1;
         CREATE FEATURE VIEW spend ENTITY (user_id) TIMESTAMP event_timestamp
           CREATED created_timestamp TTL INTERVAL '90 days'
           STORED AS PARQUET LOCATION '{data}/user_spending_stats.parquet';
         CREATE EXTERNAL TABLE labels STORED AS PARQUET LOCATION '{data}/labels.parquet';
         COPY (SELECT * FROM historical_features('labels', 'spend:avg_transaction_amount'))
           TO '{output}' STORED AS PARQUET;",
        data = data.display(),
        output = output.display()
    );
    let (workers, addresses) = WorkerProcesses::start(3, &[]);
    let coordinator = Command::new(env!("CARGO_BIN_EXE_hindcast"))
        .args(["--workers", &addresses.join(","), "-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs hindcast");
    std::thread::sleep(std::time::Duration::from_millis(400));
    workers.signal(2, "-KILL");
    let started = std::time::Instant::now();
    let out = coordinator.wait_with_output().expect("waits for hindcast");
    assert!(
        !out.status.success(),
        "the COPY finished before the worker was killed: make the data larger"
    );
    let text = stderr(&out);
    assert!(
        text.contains(&addresses[2]),
        "the error does not name {}: {text}",
        addresses[2]
    );
    assert!(!text.contains("panicked"), "{text}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("temp dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name != "data")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
