//! `INSERT INTO` a feature view over Parquet files: new files in the view's hive
//! partitions, moved into place only once written; refused inserts write nothing.
//! (Delta views: `delta`.)

use hindcast::Hindcast;

use crate::common::{collect, error, shown};

/// Every file under `dir`, relative, sorted.
fn files(dir: &std::path::Path) -> Vec<String> {
    let mut found = vec![];
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir).expect("under dir");
                found.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_into_a_parquet_view_adds_whole_files_to_its_partitions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let location = dir.path().join("daily");
    let hc = Hindcast::with_defaults(None).expect("session");
    let rows = |first: usize, last: usize, value: usize| {
        format!(
            "SELECT CAST(u.value AS BIGINT) AS user_id, \
               CAST(to_timestamp_seconds(1735689600 + d.value * 86400 + u.value) AS TIMESTAMP) AS ts, \
               CAST({value} + u.value AS DOUBLE) AS spend, \
               to_char(to_timestamp_seconds(1735689600 + d.value * 86400), '%Y-%m-%d') AS date \
             FROM generate_series(1, 5) u, generate_series({first}, {last}) d"
        )
    };
    collect(
        &hc,
        &format!(
            "COPY ({}) TO '{}/' STORED AS PARQUET PARTITIONED BY (date)",
            rows(0, 2, 0),
            location.display()
        ),
    )
    .await;
    collect(
        &hc,
        &format!(
            "CREATE FEATURE VIEW daily ENTITY (user_id) TIMESTAMP ts STORED AS PARQUET \
             PARTITIONED BY (date) LOCATION '{}/'",
            location.display()
        ),
    )
    .await;
    let before = files(&location);
    assert_eq!(before.len(), 3, "{before:?}");

    // Days 2-4: one partition that exists, two new ones. The view reads them next query.
    collect(&hc, &format!("INSERT INTO daily {}", rows(2, 4, 100))).await;
    let after = files(&location);
    assert_eq!(after.len(), 6, "{after:?}");
    for day in ["date=2025-01-03", "date=2025-01-04", "date=2025-01-05"] {
        assert!(after.iter().any(|f| f.starts_with(day)), "{day}: {after:?}");
    }
    let siblings: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(siblings, vec!["daily".to_string()], "temporary files left");
    let totals = shown(&hc, "SELECT count(*) AS n, sum(spend) AS s FROM daily").await;
    assert!(totals.contains("| 30 | 1590.0 |"), "{totals}");
    let joined = shown(
        &hc,
        "SELECT l.user_id, f.spend FROM (SELECT 3 AS user_id, \
         TIMESTAMP '2025-01-05 12:00:00' AS ts) l \
         LEFT JOIN daily FOR SYSTEM_TIME AS OF l.ts AS f ON f.user_id = l.user_id",
    )
    .await;
    assert!(joined.contains("| 3       | 103.0 |"), "{joined}");

    // Refused, or failing while it runs: nothing lands, nothing is left behind.
    let refused = [
        ("INSERT INTO daily SELECT 1, 2".to_string(), "doesn't match"),
        (
            // Fails while the rows are written: an integer division by zero in the last.
            format!(
                "INSERT INTO daily {}",
                rows(5, 9, 0).replace(
                    "CAST(0 + u.value AS DOUBLE)",
                    "CAST(u.value / (d.value - 9) AS DOUBLE)"
                )
            ),
            "Divide by zero",
        ),
    ];
    for (sql, expected) in refused {
        let message = error(&hc, &sql).await;
        assert!(message.contains(expected), "{sql}: {message}");
        assert_eq!(files(&location), after);
        let siblings = std::fs::read_dir(dir.path()).expect("list").count();
        assert_eq!(siblings, 1, "temporary files left by {sql}");
    }

    // A view over one file takes no rows: it would have to be rewritten.
    collect(
        &hc,
        &format!(
            "COPY (SELECT 1 AS user_id, TIMESTAMP '2025-01-01 00:00:00' AS ts) TO '{}' STORED AS PARQUET",
            dir.path().join("one.parquet").display()
        ),
    )
    .await;
    collect(
        &hc,
        &format!(
            "CREATE FEATURE VIEW one ENTITY (user_id) TIMESTAMP ts STORED AS PARQUET LOCATION '{}'",
            dir.path().join("one.parquet").display()
        ),
    )
    .await;
    let message = error(
        &hc,
        "INSERT INTO one SELECT 2, TIMESTAMP '2025-01-02 00:00:00'",
    )
    .await;
    assert!(message.contains("reads one file"), "{message}");
}
