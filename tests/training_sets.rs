//! Training sets: the manifest `COPY (...) TO 'dir/' STORED AS PARQUET` writes, checked
//! field by field against the data and a brute-force join; `validate` on a good set, a
//! leaking one, a tampered one and one whose source changed; `reproduce` after the Delta
//! table has moved on.

use std::path::Path;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Int64Type, TimeUnit};
use hindcast::Hindcast;
use hindcast::manifest::{self, Dataset, SourceKind};
use hindcast::time::{DisplayTtl, TimeDomain};

use crate::common::{collect, error};

/// Feature rows of one commit: users 1..=30, one row every 7 hours from `first` (hours
/// after 2025-01-01), `rows` of them; `spend` null for every fifth.
fn commit_sql(commit: usize, first: usize, rows: usize) -> String {
    format!(
        "SELECT CAST(u.value AS BIGINT) AS user_id, \
           CAST(to_timestamp_seconds(1735689600 + ({first} + h.value * 7) * 3600 + u.value * 60) AS TIMESTAMP) AS ts, \
           CASE WHEN (u.value + h.value) % 5 = 0 THEN NULL ELSE CAST({commit} * 1000 + u.value * 10 + h.value AS DOUBLE) END AS spend \
         FROM generate_series(1, 30) u, generate_series(0, {}) h",
        rows - 1
    )
}

/// A session with: `stats`, a Delta feature view given two commits; `labels`, a Parquet
/// table of 400 labels over the same weeks (some before any feature row, some for a user
/// without features, a third with a null `note`); the service `model` over `stats`.
async fn setup(root: &Path) -> Hindcast {
    let hc = Hindcast::with_defaults(None).expect("session");
    let stats = root.join("stats");
    collect(
        &hc,
        &format!(
            "CREATE EXTERNAL TABLE stats_table (user_id BIGINT, ts TIMESTAMP, spend DOUBLE) \
             STORED AS DELTA LOCATION '{}'",
            stats.display()
        ),
    )
    .await;
    collect(
        &hc,
        &format!("INSERT INTO stats_table {}", commit_sql(1, 0, 40)),
    )
    .await;
    collect(
        &hc,
        &format!("INSERT INTO stats_table {}", commit_sql(2, 280, 40)),
    )
    .await;
    let labels = root.join("labels.parquet");
    collect(
        &hc,
        &format!(
            "COPY (SELECT CAST(value % 31 + 1 AS BIGINT) AS user_id, \
               CAST(to_timestamp_seconds(1735689600 + value * 5000 - 86400) AS TIMESTAMP) AS event_timestamp, \
               value % 2 = 0 AS label, \
               CASE WHEN value % 3 = 0 THEN NULL ELSE 'note' END AS note \
             FROM generate_series(0, 399)) TO '{}' STORED AS PARQUET",
            labels.display()
        ),
    )
    .await;
    collect(
        &hc,
        &format!(
            "CREATE EXTERNAL TABLE labels STORED AS PARQUET LOCATION '{}'",
            labels.display()
        ),
    )
    .await;
    collect(
        &hc,
        &format!(
            "CREATE FEATURE VIEW stats ENTITY (user_id) TIMESTAMP ts TTL INTERVAL '30 days' \
             STORED AS DELTA LOCATION '{}'",
            stats.display()
        ),
    )
    .await;
    collect(&hc, "CREATE FEATURE SERVICE model AS stats (spend)").await;
    hc
}

const TRAINING_SET: &str = "SELECT * FROM historical_features('labels', 'model')";

async fn copy(hc: &Hindcast, query: &str, dir: &Path) {
    collect(
        hc,
        &format!("COPY ({query}) TO '{}/' STORED AS PARQUET", dir.display()),
    )
    .await;
}

fn failures(checks: &[manifest::Check]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.what.clone())
        .collect()
}

fn single_i64(batches: &[datafusion::arrow::array::RecordBatch], column: usize) -> Option<i64> {
    let array = batches[0].column(column).as_primitive::<Int64Type>();
    (!array.is_null(0)).then(|| array.value(0))
}

/// Over the labels with a feature row of theirs at most 30 days before: how many, and the
/// largest lead (newest such row's time minus the label's).
const BRUTE_FIGURES: &str = "SELECT count(*), \
       CAST(max(lead_ns) AS BIGINT), \
       CAST(min(arrow_cast(l_ts, 'Int64')) AS BIGINT), CAST(max(arrow_cast(l_ts, 'Int64')) AS BIGINT) FROM ( \
       SELECT l.event_timestamp AS l_ts, \
         max(arrow_cast(CAST(s.ts AS TIMESTAMP), 'Int64')) - arrow_cast(l.event_timestamp, 'Int64') AS lead_ns \
       FROM labels l JOIN stats_table s ON s.user_id = l.user_id \
         AND s.ts <= l.event_timestamp AND s.ts >= l.event_timestamp - INTERVAL '30 days' \
       GROUP BY l.user_id, l.event_timestamp)";

/// The labels' first and last time, in nanoseconds.
const SPINE_RANGE: &str = "SELECT CAST(min(arrow_cast(event_timestamp, 'Int64')) AS BIGINT), \
       CAST(max(arrow_cast(event_timestamp, 'Int64')) AS BIGINT) FROM labels";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_records_sources_statistics_and_leakage() {
    let root = tempfile::tempdir().expect("temp dir");
    let hc = setup(root.path()).await;
    let out = root.path().join("set");
    copy(&hc, TRAINING_SET, &out).await;
    let m = manifest::read(&out).expect("manifest");

    assert_eq!(m.hindcast_version, env!("CARGO_PKG_VERSION"));
    assert!(
        m.sql
            .starts_with("COPY (SELECT * FROM historical_features('labels', 'model'))"),
        "{}",
        m.sql
    );
    assert_eq!(
        m.services,
        vec!["CREATE FEATURE SERVICE model AS stats (spend)"]
    );

    // Sources: the labels' one file, as listed; the view at the Delta version read.
    let names: Vec<&str> = m.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["labels", "stats"]);
    let labels = &m.sources[0];
    assert_eq!(labels.kind, SourceKind::Files);
    let files = labels.files.as_ref().expect("files");
    assert_eq!(files.len(), 1);
    let on_disk = std::fs::metadata(root.path().join("labels.parquet")).expect("labels");
    assert_eq!(files[0].size, on_disk.len());
    assert!(
        files[0].path.ends_with("labels.parquet"),
        "{}",
        files[0].path
    );
    let stats = &m.sources[1];
    assert_eq!(stats.kind, SourceKind::Delta);
    assert_eq!(stats.delta_version, Some(2));
    let definition = stats.definition.as_deref().expect("a definition");
    assert!(definition.starts_with("CREATE FEATURE VIEW stats ENTITY (user_id) TIMESTAMP ts TTL INTERVAL '30 days' STORED AS DELTA LOCATION '/"), "{definition}");

    // Rows, nulls and the checksum against the data read back.
    collect(
        &hc,
        &format!(
            "CREATE EXTERNAL TABLE written STORED AS PARQUET LOCATION '{}/'",
            out.display()
        ),
    )
    .await;
    let counts = collect(
        &hc,
        "SELECT count(*), count(*) - count(spend), count(*) - count(note) FROM written",
    )
    .await;
    let rows = single_i64(&counts, 0).expect("rows");
    assert_eq!(m.rows, 400);
    assert_eq!(rows, 400);
    let column = |name: &str| m.columns.iter().find(|c| c.name == name).expect(name);
    assert_eq!(
        column("spend").nulls as i64,
        single_i64(&counts, 1).unwrap()
    );
    assert!(column("spend").nulls > 0, "the data has null features");
    assert_eq!(
        column("spend").null_fraction,
        column("spend").nulls as f64 / 400.0
    );
    assert!(column("spend").feature);
    assert!(!column("user_id").feature);
    assert!(!column("label").feature);
    assert_eq!(column("label").nulls, 0);
    assert!(!column("note").feature);
    assert_eq!(column("note").nulls as i64, single_i64(&counts, 2).unwrap());
    let dataset = Dataset::read(&out).await.expect("dataset");
    assert_eq!(m.checksum, dataset.checksum);
    assert_eq!(m.files, dataset.files);
    let parquet_files = std::fs::read_dir(&out)
        .expect("dir")
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "parquet")
        })
        .count();
    assert_eq!(m.files.len(), parquet_files);

    // The same rows in another order and split give the same checksum; other rows do not.
    let sorted = root.path().join("sorted");
    copy(
        &hc,
        &format!("SELECT * FROM ({TRAINING_SET}) ORDER BY spend DESC, user_id"),
        &sorted,
    )
    .await;
    // Sorted, the rows arrive in one stream and are written as one file.
    let resorted = manifest::read(&sorted).unwrap();
    assert!(
        m.files.len() > 1 && resorted.files.len() == 1,
        "{} files, sorted {}",
        m.files.len(),
        resorted.files.len()
    );
    assert_eq!(resorted.checksum, m.checksum);
    let fewer = root.path().join("fewer");
    copy(
        &hc,
        &format!("SELECT * FROM ({TRAINING_SET}) WHERE user_id <> 3"),
        &fewer,
    )
    .await;
    assert_ne!(manifest::read(&fewer).unwrap().checksum, m.checksum);
    let other = root.path().join("other_values");
    copy(
        &hc,
        &format!(
            "SELECT user_id, event_timestamp, label, note, \
               CASE WHEN user_id = 3 THEN spend + 1 ELSE spend END AS spend FROM ({TRAINING_SET})"
        ),
        &other,
    )
    .await;
    let changed = manifest::read(&other).unwrap();
    assert_eq!(changed.rows, m.rows);
    assert_ne!(changed.checksum, m.checksum);

    // The joins' figures against a brute force: the newest feature row at or before each
    // label within 30 days.
    let brute = collect(&hc, BRUTE_FIGURES).await;
    let pit = &m.point_in_time;
    assert_eq!(pit.joins, 1);
    assert_eq!(pit.matched_rows as i64, single_i64(&brute, 0).unwrap());
    assert!(pit.matched_rows > 0 && pit.matched_rows < 400, "{pit:?}");
    assert_eq!(pit.future_matches, 0);
    let nanos = TimeDomain::Instant(TimeUnit::Nanosecond);
    assert_eq!(
        pit.max_feature_lead.as_deref(),
        Some(
            DisplayTtl(nanos, single_i64(&brute, 1).unwrap())
                .to_string()
                .as_str()
        )
    );
    let all = collect(&hc, SPINE_RANGE).await;
    assert_eq!(
        pit.spine_time_min,
        Some(nanos.display(single_i64(&all, 0).unwrap()))
    );
    assert_eq!(
        pit.spine_time_max,
        Some(nanos.display(single_i64(&all, 1).unwrap()))
    );

    // Writing it again replaces it whole; a directory of other files is refused.
    copy(&hc, &format!("{TRAINING_SET} WHERE user_id < 5"), &out).await;
    assert!(manifest::read(&out).unwrap().rows < 400);
    let leftovers: Vec<String> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".hindcast-"))
        .collect();
    assert_eq!(
        leftovers,
        Vec::<String>::new(),
        "the old set and the temporary are gone"
    );
    assert!(
        manifest::validate(&out, 1.0)
            .await
            .unwrap()
            .iter()
            .all(|c| c.passed)
    );
    let other = root.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    let e = error(
        &hc,
        &format!(
            "COPY ({TRAINING_SET}) TO '{}/' STORED AS PARQUET",
            other.display()
        ),
    )
    .await;
    assert!(e.contains("that directory already has files"), "{e}");
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);
}

/// An aggregation view's join in a training set's figures: one join, its matched rows
/// (labels with an event in the window), lead and spine range as the brute force finds
/// them, and its aggregate flagged as a feature.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregation_views_figures_match_the_brute_force() {
    let root = tempfile::tempdir().expect("temp dir");
    let hc = setup(root.path()).await;
    collect(
        &hc,
        &format!(
            "CREATE FEATURE VIEW stats_30d ENTITY (user_id) TIMESTAMP ts \
             AGGREGATE (sum(spend) OVER INTERVAL '30 days' AS spend_30d, \
                        count(*) OVER INTERVAL '5 hours' AS n_5h) \
             STORED AS DELTA LOCATION '{}'",
            root.path().join("stats").display()
        ),
    )
    .await;
    let out = root.path().join("set");
    copy(
        &hc,
        "SELECT * FROM historical_features('labels', 'stats_30d:spend_30d', 'stats_30d:n_5h')",
        &out,
    )
    .await;
    let m = manifest::read(&out).expect("manifest");
    let brute = collect(&hc, BRUTE_FIGURES).await;
    let pit = &m.point_in_time;
    assert_eq!(pit.joins, 1);
    assert_eq!(pit.matched_rows as i64, single_i64(&brute, 0).unwrap());
    assert!(pit.matched_rows > 0 && pit.matched_rows < 400, "{pit:?}");
    assert_eq!(pit.future_matches, 0);
    let nanos = TimeDomain::Instant(TimeUnit::Nanosecond);
    let all = collect(&hc, SPINE_RANGE).await;
    let shown = |column| Some(nanos.display(single_i64(&all, column).unwrap()));
    assert_eq!(
        pit.max_feature_lead,
        Some(DisplayTtl(nanos, single_i64(&brute, 1).unwrap()).to_string())
    );
    assert_eq!(
        (&pit.spine_time_min, &pit.spine_time_max),
        (&shown(0), &shown(1))
    );
    let features: Vec<(&str, bool)> = m
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.feature))
        .collect();
    assert_eq!(
        features,
        [
            ("user_id", false),
            ("event_timestamp", false),
            ("label", false),
            ("note", false),
            ("spend_30d", true),
            ("n_5h", true)
        ]
    );
    assert_eq!(
        failures(&manifest::validate(&out, 1.0).await.unwrap()),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_finds_leakage_tampering_nulls_and_changed_sources() {
    let root = tempfile::tempdir().expect("temp dir");
    let hc = setup(root.path()).await;
    let good = root.path().join("good");
    copy(&hc, TRAINING_SET, &good).await;
    let checks = manifest::validate(&good, 1.0).await.expect("validate");
    assert_eq!(failures(&checks), Vec::<String>::new());
    assert!(
        checks
            .iter()
            .any(|c| c.what.starts_with("no leakage: 1 joins")),
        "{checks:?}"
    );

    // Nulls above the threshold: only the feature column is held to it (`note`, a spine
    // column, has more nulls).
    let nulls = manifest::read(&good)
        .unwrap()
        .columns
        .iter()
        .find(|c| c.name == "spend")
        .unwrap()
        .null_fraction;
    let failed = failures(&manifest::validate(&good, nulls / 2.0).await.unwrap());
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].starts_with("feature spend: null fraction"),
        "{failed:?}"
    );

    // A leaking set, made by hand: each label joined to the next feature row instead.
    let leaking = root.path().join("leaking");
    copy(
        &hc,
        "SELECT l.user_id, l.event_timestamp, s.spend FROM labels l \
         ASOF JOIN stats s MATCH_CONDITION (l.event_timestamp <= s.ts) ON l.user_id = s.user_id",
        &leaking,
    )
    .await;
    let m = manifest::read(&leaking).unwrap();
    assert!(m.point_in_time.future_matches > 0, "{:?}", m.point_in_time);
    let failed = failures(&manifest::validate(&leaking, 1.0).await.unwrap());
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].starts_with("leakage: "), "{failed:?}");

    // A data file rewritten with other rows, then one removed.
    let tampered = root.path().join("tampered");
    copy(&hc, TRAINING_SET, &tampered).await;
    let file = manifest::read(&tampered).unwrap().files[0].path.clone();
    collect(
        &hc,
        &format!(
            "CREATE EXTERNAL TABLE good STORED AS PARQUET LOCATION '{}/'",
            good.display()
        ),
    )
    .await;
    collect(
        &hc,
        &format!(
            "COPY (SELECT * FROM good LIMIT 3) TO '{}/{file}' STORED AS PARQUET",
            tampered.display()
        ),
    )
    .await;
    let failed = failures(&manifest::validate(&tampered, 1.0).await.unwrap());
    assert!(
        failed
            .iter()
            .any(|f| f == &format!("file {file} changed since it was written")),
        "{failed:?}"
    );
    assert!(
        failed
            .iter()
            .any(|f| f.starts_with("the data differs from the manifest")),
        "{failed:?}"
    );
    std::fs::remove_file(tampered.join(&file)).unwrap();
    let failed = failures(&manifest::validate(&tampered, 1.0).await.unwrap());
    assert!(
        failed
            .iter()
            .any(|f| f == &format!("file {file} is missing")),
        "{failed:?}"
    );

    // A source changed: the labels file rewritten. The set is intact, but cannot be re-run.
    collect(
        &hc,
        &format!(
            "COPY (SELECT * FROM labels WHERE user_id > 1) TO '{}' STORED AS PARQUET",
            root.path().join("labels.parquet").display()
        ),
    )
    .await;
    let failed = failures(&manifest::validate(&good, 1.0).await.unwrap());
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].starts_with("source labels: ") && failed[0].contains("changed"),
        "{failed:?}"
    );
    let fresh = Hindcast::with_defaults(None).unwrap();
    let e = manifest::reproduce(&fresh, &good, &root.path().join("again").to_string_lossy())
        .await
        .expect_err("a changed source");
    assert!(e.to_string().contains("source labels:"), "{e}");
    assert!(!root.path().join("again").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reproduce_reads_the_recorded_delta_version() {
    let root = tempfile::tempdir().expect("temp dir");
    let hc = setup(root.path()).await;
    let set = root.path().join("set");
    copy(&hc, TRAINING_SET, &set).await;
    let recorded = manifest::read(&set).unwrap();

    // The table moves on: a third commit with rows the labels would match.
    collect(
        &hc,
        &format!("INSERT INTO stats_table {}", commit_sql(3, 3, 80)),
    )
    .await;
    let now = root.path().join("now");
    copy(&hc, TRAINING_SET, &now).await;
    let moved = manifest::read(&now).unwrap();
    assert_eq!(moved.sources[1].delta_version, Some(3));
    assert_ne!(
        moved.checksum, recorded.checksum,
        "the third commit changes the set"
    );

    // Reproduced in a new session: version 2 again, the same rows.
    let fresh = Hindcast::with_defaults(None).unwrap();
    let again = root.path().join("again");
    let reproduced = manifest::reproduce(&fresh, &set, &again.to_string_lossy())
        .await
        .expect("reproduce");
    assert!(reproduced.matches(), "{reproduced:?}");
    assert_eq!(reproduced.rows, 400);
    let written = manifest::read(&again).unwrap();
    assert_eq!(written.sources[1].delta_version, Some(2));
    assert_eq!(written.checksum, recorded.checksum);
    assert_eq!(written.point_in_time, recorded.point_in_time);

    // A spine that is a view over the labels: recorded after them, and re-run.
    collect(
        &hc,
        "CREATE VIEW some_labels AS SELECT * FROM labels WHERE user_id < 20",
    )
    .await;
    let from_view = root.path().join("from_view");
    copy(
        &hc,
        "SELECT * FROM historical_features('some_labels', 'model')",
        &from_view,
    )
    .await;
    let m = manifest::read(&from_view).unwrap();
    let names: Vec<&str> = m.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["labels", "some_labels", "stats"]);
    assert_eq!(m.sources[1].kind, SourceKind::View);
    let reproduced = manifest::reproduce(
        &Hindcast::with_defaults(None).unwrap(),
        &from_view,
        &root.path().join("from_view_again").to_string_lossy(),
    )
    .await
    .expect("reproduce over a view");
    assert!(reproduced.matches(), "{reproduced:?}");
    assert_eq!(reproduced.rows, m.rows);

    // A spine in memory cannot be re-run.
    let memory = root.path().join("memory");
    collect(&hc, "CREATE TABLE mem_labels AS SELECT * FROM labels").await;
    copy(
        &hc,
        "SELECT * FROM historical_features('mem_labels', 'model')",
        &memory,
    )
    .await;
    let e = manifest::reproduce(
        &Hindcast::with_defaults(None).unwrap(),
        &memory,
        &root.path().join("memory_again").to_string_lossy(),
    )
    .await
    .expect_err("an in-memory source");
    assert!(
        e.to_string()
            .contains("mem_labels, which was built in code"),
        "{e}"
    );
}
