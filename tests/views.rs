//! Feature views over directories that change: a view's schema is its newest file's (older
//! files without a column added since read it as NULL), and a file outside a query's time
//! range is not opened, at `CREATE FEATURE VIEW` or at the query (hindcast's defaults do
//! not collect table statistics, which read every footer).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;

use hindcast::Hindcast;

/// One row, `(user_id, ts, spend[, visits])`, as `dir/date=<date>/part-0.parquet`, modified
/// `age` ago.
fn write_partition(dir: &Path, date: &str, ts: &str, spend: f64, visits: Option<i64>, age: u64) {
    let ts = cast(
        &StringArray::from(vec![ts]),
        &DataType::Timestamp(TimeUnit::Microsecond, None),
    )
    .expect("a timestamp");
    let mut columns: Vec<(&str, ArrayRef)> = vec![
        ("user_id", Arc::new(Int64Array::from(vec![1]))),
        ("ts", ts),
        ("spend", Arc::new(Float64Array::from(vec![spend]))),
    ];
    if let Some(visits) = visits {
        columns.push(("visits", Arc::new(Int64Array::from(vec![visits]))));
    }
    // Nullable, as pandas and Spark write them.
    let batch = RecordBatch::try_from_iter_with_nullable(
        columns.into_iter().map(|(name, array)| (name, array, true)),
    )
    .expect("batch");
    let path = dir.join(format!("date={date}"));
    std::fs::create_dir_all(&path).expect("partition directory");
    let file = std::fs::File::create(path.join("part-0.parquet")).expect("file");
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    let file = writer.into_inner().expect("close");
    file.set_modified(SystemTime::now() - Duration::from_secs(age))
        .expect("mtime");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_views_schema_is_its_newest_files_and_partitions_out_of_range_are_not_opened() {
    let dir = tempfile::tempdir().expect("temp dir");
    let view = dir.path().join("spend");
    write_partition(&view, "2025-01-01", "2025-01-01 01:00:00", 10.0, None, 3600);
    // Written later, with a column added.
    write_partition(
        &view,
        "2025-01-02",
        "2025-01-02 01:00:00",
        20.0,
        Some(7),
        60,
    );
    // An old partition whose file is not Parquet at all: no query below reaches it.
    let broken = view.join("date=2024-06-01");
    std::fs::create_dir_all(&broken).expect("directory");
    std::fs::write(broken.join("part-0.parquet"), b"PAR1 truncated").expect("file");
    std::fs::File::options()
        .write(true)
        .open(broken.join("part-0.parquet"))
        .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(86_400)))
        .expect("mtime");

    // As the shell and the Python package open one: hindcast's defaults.
    let hc = Hindcast::with_defaults(None).expect("session");
    hc.sql(&format!(
        "CREATE FEATURE VIEW spend ENTITY (user_id) TIMESTAMP ts TTL INTERVAL '2 days' \
         STORED AS PARQUET PARTITIONED BY (date) LOCATION '{}/'",
        view.display()
    ))
    .await
    .expect("the view is created from its newest file's footer alone");
    let batches = hc
        .sql(
            "SELECT l.t, s.spend, s.visits FROM \
             (VALUES (1, TIMESTAMP '2025-01-01 12:00:00'), (1, TIMESTAMP '2025-01-02 12:00:00')) \
               AS l(user_id, t) \
             LEFT JOIN spend FOR SYSTEM_TIME AS OF l.t AS s ON s.user_id = l.user_id \
             ORDER BY l.t",
        )
        .await
        .expect("plan")
        .collect()
        .await
        .expect("runs without opening the broken partition");
    let rows: Vec<(f64, Option<i64>)> = batches
        .iter()
        .flat_map(|b| {
            let spend = b.column(1).as_primitive::<Float64Type>().clone();
            let visits = b.column(2).as_primitive::<Int64Type>().clone();
            (0..b.num_rows())
                .map(move |i| (spend.value(i), visits.is_valid(i).then(|| visits.value(i))))
        })
        .collect();
    assert_eq!(rows, vec![(10.0, None), (20.0, Some(7))]);

    // A spine in the broken partition's range reads it, and fails.
    let reached = async {
        hc.sql(
            "SELECT s.spend FROM (VALUES (1, TIMESTAMP '2024-06-01 12:00:00')) AS l(user_id, t) \
             LEFT JOIN spend FOR SYSTEM_TIME AS OF l.t AS s ON s.user_id = l.user_id",
        )
        .await?
        .collect()
        .await
    };
    assert!(
        reached.await.is_err(),
        "a file that is not Parquet was read"
    );
}
