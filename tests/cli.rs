//! The `hindcast` binary as a user runs it: the README's main job, formats, errors.

use std::process::{Command, Output};

use crate::common::repo_root;

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
fn readme_main_job_prints_training_rows() {
    let out = hindcast(&["-f", "examples/training_set.sql"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    // First label of the example: user 1000 at 2025-01-11 00:00; its stats row of
    // 2025-01-11 (re-computed a day later) wins over nothing older.
    let first = text
        .lines()
        .find(|l| l.contains("| 1000    | 2025-01-11T00:00:00"))
        .unwrap_or_else(|| panic!("no row for user 1000 in:\n{text}"));
    assert!(first.contains("grocery"), "{first}");
    assert!(text.contains("20 rows in set"), "{text}");
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
