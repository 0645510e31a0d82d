//! Delta Lake tables and feature views (`STORED AS DELTA`): a table created and given three
//! commits by hindcast's `INSERT`, read at each version and at instants between the commits
//! against the same rows held in memory, and joined as a feature view.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::datasource::MemTable;
use hindcast::Hindcast;

use crate::common::{collect, error, shown};

/// One commit's feature rows: users 1..=20, one row a day for days `first..=last` after
/// 2025-01-01, created `commit` hours after its event time, partitioned by its date.
fn commit_sql(commit: usize, first: usize, last: usize) -> String {
    format!(
        "SELECT CAST(u.value AS BIGINT) AS user_id, \
           CAST(to_timestamp_seconds(1735689600 + d.value * 86400 + u.value * 60) AS TIMESTAMP) AS ts, \
           CAST(to_timestamp_seconds(1735689600 + d.value * 86400 + u.value * 60 + {commit} * 3600) AS TIMESTAMP) AS created, \
           CAST(to_char(to_timestamp_seconds(1735689600 + d.value * 86400), '%Y-%m-%d') AS VARCHAR) AS date, \
           CAST({commit} * 1000 + u.value * 10 + d.value AS DOUBLE) AS spend \
         FROM generate_series(1, 20) u, generate_series({first}, {last}) d"
    )
}

/// The `delta version` row of a `DESCRIBE`.
fn delta_version(describe: &str) -> Option<usize> {
    let line = describe.lines().find(|l| l.contains("| delta version "))?;
    line.split('|')
        .nth(2)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Labels over the commits' days; the join shows which row each label got.
const LABELS: &str = "CREATE TABLE labels AS SELECT CAST(value % 20 + 1 AS BIGINT) AS user_id, \
    CAST(to_timestamp_seconds(1735689600 + value * 4000) AS TIMESTAMP) AS event_timestamp \
    FROM generate_series(0, 500)";
const JOIN: &str = "SELECT l.user_id, l.event_timestamp, f.spend, f.ts, f.created FROM labels l \
    LEFT JOIN VIEW FOR SYSTEM_TIME AS OF l.event_timestamp AS f ON f.user_id = l.user_id \
    ORDER BY l.user_id, l.event_timestamp";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_version_reads_exactly_its_commits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let location = dir.path().join("stats");
    let hc = Hindcast::with_defaults(None).expect("session");
    collect(&hc, LABELS).await;

    // A new table (version 0, empty), then three INSERTs: days 0-9, days 10-19, then
    // corrections of days 5-9 (the same event times, created later, other values); the
    // instant after each commit.
    collect(
        &hc,
        &format!(
            "CREATE EXTERNAL TABLE stats (user_id BIGINT, ts TIMESTAMP, created TIMESTAMP, \
             date VARCHAR, spend DOUBLE) STORED AS DELTA PARTITIONED BY (date) LOCATION '{}'",
            location.display()
        ),
    )
    .await;
    let commits = [
        commit_sql(0, 0, 9),
        commit_sql(1, 10, 19),
        commit_sql(2, 5, 9),
    ];
    let mut written: Vec<Vec<RecordBatch>> = vec![];
    let mut after = vec![];
    for sql in &commits {
        collect(&hc, &format!("INSERT INTO stats {sql}")).await;
        written.push(collect(&hc, sql).await);
        std::thread::sleep(std::time::Duration::from_millis(50));
        after.push(chrono::Utc::now().to_rfc3339());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let log = std::fs::read_dir(location.join("_delta_log"))
        .expect("a Delta log")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
        })
        .count();
    assert_eq!(log, 4, "one commit to create, one per INSERT");

    let delta = |name: &str, options: &str| {
        format!(
            "CREATE FEATURE VIEW {name} ENTITY (user_id) TIMESTAMP ts CREATED created \
             STORED AS DELTA LOCATION '{}' {options}",
            location.display()
        )
    };
    for commit in 0..3 {
        let version = commit + 1;
        let rows: Vec<RecordBatch> = written[..=commit].concat();
        let memory = MemTable::try_new(rows[0].schema(), vec![rows]).expect("table");
        hc.session_context()
            .register_table(format!("rows_{version}").as_str(), Arc::new(memory))
            .expect("register");
        collect(
            &hc,
            &format!(
                "CREATE FEATURE VIEW expected_{version} ENTITY (user_id) TIMESTAMP ts \
                 CREATED created AS SELECT * FROM rows_{version}"
            ),
        )
        .await;
        let expected = shown(&hc, &JOIN.replace("VIEW", &format!("expected_{version}"))).await;
        for (name, options) in [
            (
                format!("at_version_{version}"),
                format!("OPTIONS ('version' '{version}')"),
            ),
            (
                format!("at_instant_{version}"),
                format!("OPTIONS ('timestamp' '{}')", after[commit]),
            ),
        ] {
            collect(&hc, &delta(&name, &options)).await;
            let got = shown(&hc, &JOIN.replace("VIEW", &name)).await;
            assert_eq!(got, expected, "{name}");
            let describe = shown(&hc, &format!("DESCRIBE {name}")).await;
            assert_eq!(delta_version(&describe), Some(version), "{describe}");
        }
    }
    // Unpinned: the newest version; the corrections change what labels of days 5-9 get.
    collect(&hc, &delta("latest", "")).await;
    let latest = shown(&hc, &JOIN.replace("VIEW", "latest")).await;
    assert_eq!(
        latest,
        shown(&hc, &JOIN.replace("VIEW", "expected_3")).await
    );
    assert_ne!(
        latest,
        shown(&hc, &JOIN.replace("VIEW", "expected_2")).await
    );
    let describe = shown(&hc, "DESCRIBE latest").await;
    assert_eq!(delta_version(&describe), Some(3), "{describe}");
    assert!(describe.contains("date"), "{describe}");

    let narrow = "SELECT count(*), count(f.spend) FROM labels l \
        LEFT JOIN latest FOR SYSTEM_TIME AS OF l.event_timestamp AS f ON f.user_id = l.user_id \
        WHERE l.event_timestamp < TIMESTAMP '2025-01-03 00:00:00'";
    // The spine's bounds reach the Parquet scan under Delta's: the files of the later
    // days are skipped by the log's statistics.
    let analyzed = shown(&hc, &format!("EXPLAIN ANALYZE {narrow}")).await;
    let figures = analyzed
        .split("files_ranges_pruned_statistics=")
        .nth(1)
        .and_then(|rest| rest.split(" matched").next())
        .unwrap_or_else(|| panic!("no row group figures: {analyzed}"));
    let numbers: Vec<usize> = figures
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        numbers.len() == 2 && numbers[1] < numbers[0] / 4,
        "files {figures}: {analyzed}"
    );

    // INSERT INTO the unpinned view appends one commit, which its next query reads; a
    // pinned one, an AS SELECT view and rows of the wrong shape are refused, with nothing
    // written.
    collect(
        &hc,
        "INSERT INTO latest SELECT 99, TIMESTAMP '2025-02-01 00:00:00' AS ts, TIMESTAMP '2025-02-01 00:00:00' AS created, '2025-02-01', 1.0",
    )
    .await;
    assert_eq!(delta_version(&shown(&hc, "DESCRIBE latest").await), Some(4));
    assert!(
        shown(&hc, "SELECT count(*) AS n FROM latest WHERE user_id = 99")
            .await
            .contains("| 1 |")
    );
    // Two sessions appending at once: both commits land, one after the other.
    let other = Hindcast::with_defaults(None).expect("session");
    let create = format!(
        "CREATE EXTERNAL TABLE stats STORED AS DELTA LOCATION '{}'",
        location.display()
    );
    collect(&other, &create).await;
    let append = |user: usize| {
        format!(
            "INSERT INTO stats SELECT {user} AS user_id, TIMESTAMP '2025-03-01 00:00:00' AS ts, \
             TIMESTAMP '2025-03-01 00:00:00' AS created, '2025-03-01', 1.0"
        )
    };
    let (first, second) = (append(101), append(102));
    let (a, b) = tokio::join!(collect(&hc, &first), collect(&other, &second));
    assert_eq!((a.len(), b.len()), (1, 1));
    assert_eq!(delta_version(&shown(&hc, "DESCRIBE latest").await), Some(6));
    assert!(
        shown(
            &hc,
            "SELECT count(*) AS n FROM latest WHERE user_id IN (101, 102)"
        )
        .await
        .contains("| 2 |")
    );

    let refused = [
        (
            "INSERT INTO at_version_1 SELECT * FROM rows_1",
            "pinned version",
        ),
        ("INSERT INTO expected_1 SELECT * FROM rows_1", "AS SELECT"),
        ("INSERT INTO latest SELECT 1, 2", "doesn't match"),
    ];
    for (sql, expected) in refused {
        let message = error(&hc, sql).await;
        assert!(message.contains(expected), "{sql}: {message}");
    }
    assert_eq!(delta_version(&shown(&hc, "DESCRIBE latest").await), Some(6));

    // A plain table over it, as DataFusion's CREATE EXTERNAL TABLE.
    collect(
        &hc,
        &format!(
            "CREATE EXTERNAL TABLE stats_v1 STORED AS DELTA LOCATION '{}' OPTIONS ('version' '1')",
            location.display()
        ),
    )
    .await;
    assert!(
        shown(&hc, "SELECT count(*) AS n FROM stats_v1")
            .await
            .contains("| 200 |")
    );

    // Errors name the problem and the table.
    let plain = dir.path().join("plain");
    std::fs::create_dir(&plain).expect("dir");
    let cases = [
        (
            format!(
                "STORED AS DELTA LOCATION '{}'",
                dir.path().join("absent").display()
            ),
            "there is no such directory",
        ),
        (
            format!("STORED AS DELTA LOCATION '{}'", plain.display()),
            "no _delta_log",
        ),
        (
            format!(
                "STORED AS DELTA LOCATION '{}' OPTIONS ('version' '7')",
                location.display()
            ),
            "it has no version 7; its newest is 6",
        ),
        (
            format!(
                "STORED AS DELTA LOCATION '{}' OPTIONS ('version' 'two')",
                location.display()
            ),
            "must be a table version",
        ),
        (
            format!(
                "STORED AS DELTA LOCATION '{}' OPTIONS ('version' '1', 'timestamp' '{}')",
                location.display(),
                after[0]
            ),
            "not both",
        ),
        (
            format!(
                "STORED AS DELTA LOCATION '{}' OPTIONS ('timestamp' '2020-01-01T00:00:00Z')",
                location.display()
            ),
            "has no version as of 2020-01-01",
        ),
        (
            format!(
                "STORED AS DELTA LOCATION '{}' OPTIONS ('colour' 'red')",
                location.display()
            ),
            "unknown option",
        ),
        (
            format!(
                "STORED AS DELTA PARTITIONED BY (date) LOCATION '{}'",
                location.display()
            ),
            "partition columns come from its log",
        ),
    ];
    for (source, expected) in cases {
        let sql = format!("CREATE FEATURE VIEW bad ENTITY (user_id) TIMESTAMP ts {source}");
        let message = error(&hc, &sql).await;
        assert!(message.contains(expected), "{sql}: {message}");
    }
    let again = format!(
        "CREATE EXTERNAL TABLE again (user_id BIGINT) STORED AS DELTA LOCATION '{}'",
        location.display()
    );
    let message = error(&hc, &again).await;
    assert!(message.contains("already exists"), "{message}");
    let pinned_new = format!(
        "CREATE EXTERNAL TABLE fresh (user_id BIGINT) STORED AS DELTA LOCATION '{}' \
         OPTIONS ('version' '0')",
        dir.path().join("fresh").display()
    );
    let message = error(&hc, &pinned_new).await;
    assert!(message.contains("has no earlier version"), "{message}");
    assert!(
        !dir.path().join("fresh").exists(),
        "a refused CREATE wrote a table"
    );
}
