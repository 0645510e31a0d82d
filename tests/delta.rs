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

/// A commit that turns on column mapping (`name` mode), each column's physical name its own
/// name, so the table's files still read the same: from this version on, hindcast must read
/// the table with deltalake-core's reader rather than as plain Parquet.
pub fn commit_column_mapping(location: &std::path::Path, version: usize) {
    let log = location.join("_delta_log");
    let first = std::fs::read_to_string(log.join(format!("{:020}.json", 0))).expect("log");
    let action = |kind: &str| {
        first
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find_map(|action| action.get(kind).cloned())
            .unwrap_or_else(|| panic!("a {kind} action"))
    };
    let mut metadata = action("metaData");
    let mut protocol = action("protocol");
    let mut schema: serde_json::Value =
        serde_json::from_str(metadata["schemaString"].as_str().expect("schema")).expect("json");
    let fields = schema["fields"].as_array_mut().expect("fields");
    let count = fields.len();
    for (id, field) in fields.iter_mut().enumerate() {
        let name = field["name"].clone();
        field["metadata"]["delta.columnMapping.id"] = serde_json::json!(id + 1);
        field["metadata"]["delta.columnMapping.physicalName"] = name;
    }
    metadata["schemaString"] = serde_json::Value::String(schema.to_string());
    metadata["configuration"]["delta.columnMapping.mode"] = "name".into();
    metadata["configuration"]["delta.columnMapping.maxColumnId"] = count.to_string().into();
    protocol["minReaderVersion"] = 3.into();
    protocol["minWriterVersion"] = 7.into();
    for features in ["readerFeatures", "writerFeatures"] {
        if !protocol[features].is_array() {
            protocol[features] = serde_json::json!([]);
        }
        let list = protocol[features].as_array_mut().expect("features");
        list.push("columnMapping".into());
    }
    let commit = format!(
        "{}\n{}\n",
        serde_json::json!({ "protocol": protocol }),
        serde_json::json!({ "metaData": metadata })
    );
    std::fs::write(log.join(format!("{version:020}.json")), commit).expect("commit");
}

/// A partition value's tail that a file path escapes (Hive's and Delta's `%XX`).
const SUFFIX: &str = " 10:00 ~#%[x]";

/// hindcast's own Parquet scan of a Delta snapshot against deltalake-core's reader of the
/// same files and against the rows held in memory, on random tables (several commits, so
/// several files a partition; times with microseconds, which the log's statistics truncate
/// to milliseconds) and random filters on the partition, the time and the key, and a join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_parquet_scan_of_a_snapshot_answers_as_deltalakes_reader() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let mut rng = StdRng::seed_from_u64(0x0de17a);
    for round in 0..3 {
        let dir = tempfile::tempdir().expect("temp dir");
        let location = dir.path().join("t");
        let hc = Hindcast::with_defaults(None).expect("session");
        collect(
            &hc,
            &format!(
                "CREATE EXTERNAL TABLE t (user_id BIGINT, ts TIMESTAMP, day VARCHAR, \
                 bucket BIGINT, d DATE, v BIGINT, s VARCHAR) \
                 STORED AS DELTA PARTITIONED BY (day, bucket, d) LOCATION '{}'",
                location.display()
            ),
        )
        .await;
        let commits = rng.random_range(2..5);
        let mut sqls = vec![];
        for _ in 0..commits {
            let (a, b, rows) = (
                rng.random_range(1..1_000_003i64),
                rng.random_range(1..997i64),
                rng.random_range(1..400),
            );
            // Times over five days, at microseconds; days from the time, so each
            // partition's files cover part of it, and named with characters a path escapes
            // (some null: a null partition); a string column with statistics of its own.
            let sql = format!(
                "SELECT CAST((value * {b}) % 13 AS BIGINT) AS user_id, \
                   to_timestamp_micros(1735689600000000 + (value * {a} * 7919) % 432000000000) AS ts, \
                   CASE WHEN value % 11 = 0 THEN NULL ELSE concat(to_char(to_timestamp_micros(1735689600000000 + (value * {a} * 7919) % 432000000000), '%Y-%m-%d'), '{SUFFIX}') END AS day, \
                   CAST((value * {b}) % 13 % 3 AS BIGINT) AS bucket, \
                   CAST(to_timestamp_micros(1735689600000000 + (value * {a} * 7919) % 432000000000) AS DATE) AS d, \
                   CAST(value * {b} AS BIGINT) AS v, \
                   concat('u', CAST((value * {a}) % 50 AS VARCHAR)) AS s \
                 FROM generate_series(0, {rows})"
            );
            collect(&hc, &format!("INSERT INTO t {sql}")).await;
            sqls.push(sql);
        }
        commit_column_mapping(&location, commits + 1);
        collect(
            &hc,
            &format!("CREATE TABLE memory AS {}", sqls.join(" UNION ALL ")),
        )
        .await;
        for (name, version) in [("plain", commits), ("mapped", commits + 1)] {
            collect(
                &hc,
                &format!(
                    "CREATE FEATURE VIEW {name} ENTITY (user_id) TIMESTAMP ts STORED AS DELTA \
                     LOCATION '{}' OPTIONS ('version' '{version}')",
                    location.display()
                ),
            )
            .await;
        }
        let plan = |view: &str| format!("EXPLAIN SELECT * FROM {view}");
        assert!(!shown(&hc, &plan("plain")).await.contains("DeltaScanExec"));
        assert!(shown(&hc, &plan("mapped")).await.contains("DeltaScanExec"));

        // Each file's largest time (a commit's in a partition), less a microsecond: a
        // filter that the log's statistics, truncated to milliseconds, would wrongly
        // exclude the file for if taken as they are.
        let mut edges: Vec<i64> = vec![];
        for sql in &sqls {
            let batches = collect(
                &hc,
                &format!("SELECT CAST(max(ts) AS BIGINT) - 1 FROM ({sql}) GROUP BY day, bucket"),
            )
            .await;
            for b in &batches {
                let column = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::Int64Array>()
                    .expect("int64");
                edges.extend(column.values().iter());
            }
        }
        for case in 0..25 {
            let day = format!("2025-01-0{}{SUFFIX}", rng.random_range(1..6));
            let instant = if case % 2 == 0 {
                edges[rng.random_range(0..edges.len())]
            } else {
                1735689600000000 + rng.random_range(0..432000000000i64)
            };
            let filter = match case % 9 {
                0 => format!("day = '{day}'"),
                1 => format!("ts > to_timestamp_micros({instant})"),
                2 => format!("ts >= to_timestamp_micros({instant}) AND day <= '{day}'"),
                3 => format!("user_id = {} OR day > '{day}'", rng.random_range(0..13)),
                4 => format!(
                    "bucket = {} AND d >= DATE '{}'",
                    rng.random_range(0..3),
                    &day[..10]
                ),
                5 => format!("d = DATE '{}' OR bucket IN (0, 2)", &day[..10]),
                6 => format!("day IS NULL AND s < 'u{}'", rng.random_range(0..50)),
                7 => format!(
                    "s = 'u{}' OR day IS NOT NULL AND d > DATE '{}'",
                    rng.random_range(0..50),
                    &day[..10]
                ),
                _ => format!("ts < to_timestamp_micros({instant}) AND user_id IN (1, 5, 8)"),
            };
            let query = |table: &str| {
                format!(
                    "SELECT count(*) AS n, sum(v) AS s, min(ts) AS lo, max(ts) AS hi, \
                     count(DISTINCT day) AS days, sum(bucket) AS b, max(d) AS dd, \
                     count(s) AS strings, min(s) AS first, max(s) AS last \
                     FROM {table} WHERE {filter}"
                )
            };
            let expected = shown(&hc, &query("memory")).await;
            assert_eq!(
                shown(&hc, &query("plain")).await,
                expected,
                "{round}: {filter}"
            );
            assert_eq!(
                shown(&hc, &query("mapped")).await,
                expected,
                "{round}: {filter}"
            );
        }
        collect(
            &hc,
            "CREATE FEATURE VIEW in_memory ENTITY (user_id) TIMESTAMP ts AS SELECT * FROM memory",
        )
        .await;
        collect(
            &hc,
            "CREATE TABLE labels AS SELECT CAST(value % 13 AS BIGINT) AS user_id, \
             to_timestamp_micros(1735689600000000 + value * 1234567891) AS event_timestamp \
             FROM generate_series(0, 300)",
        )
        .await;
        let join = |view: &str| {
            JOIN.replace("VIEW", view)
                .replace("f.spend, f.ts, f.created", "f.v, f.ts")
        };
        let expected = shown(&hc, &join("in_memory")).await;
        assert_eq!(shown(&hc, &join("plain")).await, expected, "round {round}");
        assert_eq!(shown(&hc, &join("mapped")).await, expected, "round {round}");
    }
}
