//! A Parquet feature view over a directory with something wrong in it: a truncated file, a
//! zero-byte one, files that are not Parquet (hidden or not), a file outside the partition
//! directories, a partition removed after
//! the query listed it, files whose schema drifted. Each case either gives the answer the
//! good files give, or an error naming the file and the problem, never a panic and never
//! a silently different answer (`docs/reliability.md`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, TimeUnit};
use datafusion::common::Result;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::physical_plan::collect;

use hindcast::Hindcast;

/// `user_id` 1 has one row a day on days 1 to 5 of January 2025, `spend` = 10 × day.
const DAYS: i64 = 5;

fn timestamp(day: i64) -> ArrayRef {
    let text = format!("2025-01-{day:02} 01:00:00");
    cast(
        &StringArray::from(vec![text]),
        &DataType::Timestamp(TimeUnit::Microsecond, None),
    )
    .expect("a timestamp")
}

/// `columns` as one Parquet file at `path`, modified `age` seconds ago (the newest file
/// gives a view its schema).
fn write(path: &Path, columns: Vec<(&str, ArrayRef, bool)>, age: u64) {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, array, nullable)| Field::new(*name, array.data_type().clone(), *nullable))
        .collect();
    let arrays = columns.into_iter().map(|(_, array, _)| array).collect();
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).expect("batch");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("directory");
    let file = std::fs::File::create(path).expect("file");
    let mut writer = ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    let file = writer.into_inner().expect("close");
    file.set_modified(SystemTime::now() - Duration::from_secs(age))
        .expect("mtime");
}

fn set_age(path: &Path, age: u64) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now() - Duration::from_secs(age)))
        .expect("mtime");
}

fn partition(view: &Path, day: i64) -> PathBuf {
    view.join(format!("date=2025-01-{day:02}/part-0.parquet"))
}

/// Day `day`'s row as the good files have it: `user_id` and `spend` nullable, as pandas
/// and Spark write them, `visits` = day.
fn good_row(day: i64) -> Vec<(&'static str, ArrayRef, bool)> {
    vec![
        ("user_id", Arc::new(Int64Array::from(vec![1])), true),
        ("ts", timestamp(day), true),
        (
            "spend",
            Arc::new(Float64Array::from(vec![10.0 * day as f64])),
            true,
        ),
        ("visits", Arc::new(Int64Array::from(vec![day])), true),
    ]
}

/// A view directory with days 1 to 5, newer days written later.
fn good_view(dir: &Path) -> PathBuf {
    let view = dir.join("spend");
    for day in 1..=DAYS {
        write(
            &partition(&view, day),
            good_row(day),
            3600 * (10 - day as u64),
        );
    }
    view
}

async fn session(view: &Path) -> Result<Hindcast> {
    let hc = Hindcast::with_defaults(None)?;
    hc.sql(&format!(
        "CREATE FEATURE VIEW spend ENTITY (user_id) TIMESTAMP ts \
         STORED AS PARQUET PARTITIONED BY (date) LOCATION '{}/'",
        view.display()
    ))
    .await?;
    Ok(hc)
}

/// For a label at noon of each day, the view's `spend` and `visits` as of then.
const QUERY: &str = "SELECT s.spend, s.visits FROM \
    (SELECT 1 AS user_id, t FROM unnest(range(TIMESTAMP '2025-01-01 12:00:00', \
      TIMESTAMP '2025-01-06 00:00:00', INTERVAL '1 day')) AS r(t)) AS l \
    LEFT JOIN spend FOR SYSTEM_TIME AS OF l.t AS s ON s.user_id = l.user_id \
    ORDER BY l.t";

type Rows = Vec<(Option<f64>, Option<i64>)>;

fn rows(batches: &[RecordBatch]) -> Rows {
    batches
        .iter()
        .flat_map(|b| {
            let spend = b.column(0).as_primitive::<Float64Type>().clone();
            let visits = b.column(1).as_primitive::<Int64Type>().clone();
            (0..b.num_rows()).map(move |i| {
                (
                    spend.is_valid(i).then(|| spend.value(i)),
                    visits.is_valid(i).then(|| visits.value(i)),
                )
            })
        })
        .collect()
}

/// What the good files answer: day d's row at day d's noon.
fn expected() -> Rows {
    (1..=DAYS)
        .map(|d| (Some(10.0 * d as f64), Some(d)))
        .collect()
}

/// The view created over `view` and queried, as rows or the error the shell shows.
async fn answer(view: &Path) -> std::result::Result<Rows, String> {
    let run = async {
        let hc = session(view).await?;
        hc.sql(QUERY).await?.collect().await
    };
    run.await
        .map(|batches| rows(&batches))
        .map_err(|e| hindcast::error_message(&e))
}

/// Asserts the error names `file`, says `problem`, and carries no doubled prefix.
fn assert_names(error: &str, file: &Path, problem: &str) {
    assert!(
        error.contains(&format!("'{}'", file.display())),
        "{error} does not name {}",
        file.display()
    );
    assert!(error.contains(problem), "{error} does not say {problem}");
    assert!(
        !error.contains("Parquet error: Parquet error"),
        "{error} repeats its prefix"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_file_is_named_at_the_query_or_at_create_when_it_is_the_newest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let view = good_view(dir.path());
    assert_eq!(answer(&view).await, Ok(expected()));

    let file = partition(&view, 3);
    let bytes = std::fs::read(&file).expect("read");
    std::fs::write(&file, &bytes[..bytes.len() / 2]).expect("truncate");
    // Not the newest file (that case follows).
    set_age(&file, 3600 * 7);
    let error = answer(&view).await.expect_err("a truncated file was read");
    assert_names(&error, &file, "cut short");
    assert!(!error.contains("newest"), "{error}");

    // Now the newest: the view takes its schema from it.
    let file = partition(&view, 5);
    let bytes = std::fs::read(&file).expect("read");
    std::fs::write(&file, &bytes[..bytes.len() - 5]).expect("truncate");
    let created = session(&view).await.map(|_| ());
    let error = hindcast::error_message(&created.expect_err("CREATE read a truncated file"));
    assert_names(&error, &file, "cut short");
    assert!(error.contains("newest file"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_byte_and_hidden_files_are_skipped_and_other_files_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let view = good_view(dir.path());
    // A zero-byte file, as a writer that created it and failed leaves it, is newest.
    std::fs::write(view.join("date=2025-01-03/part-1.parquet"), b"").expect("empty file");
    // What Spark and Hadoop leave in a table's directory: a success marker, checksums,
    // and an unfinished job's output, whose rows must not be read (here a row for day 4
    // that would win).
    std::fs::write(view.join("_SUCCESS"), b"marker").expect("marker");
    // Hidden names that end in `.parquet` (an editor's or a copy tool's), at the top.
    std::fs::write(view.join(".part-9.parquet"), b"half copied").expect("hidden");
    std::fs::write(view.join("_part-9.parquet"), b"half copied").expect("hidden");
    std::fs::write(view.join("date=2025-01-02/.part-0.parquet.crc"), b"crc").expect("crc");
    let mut unfinished = good_row(4);
    unfinished[2].1 = Arc::new(Float64Array::from(vec![999.0]));
    write(
        &view.join("_temporary/0/date=2025-01-04/part-9.parquet"),
        unfinished,
        0,
    );
    assert_eq!(answer(&view).await, Ok(expected()));

    // A directory's files are its `.parquet` files (as DataFusion lists one it infers
    // the schema of): notes beside them are not read.
    std::fs::write(view.join("date=2025-01-02/notes.txt"), b"by hand").expect("notes");
    assert_eq!(answer(&view).await, Ok(expected()));

    // A `.parquet` file that is not Parquet is an error naming it.
    let fake = view.join("date=2025-01-02/part-1.parquet");
    std::fs::write(&fake, b"a CSV export, misnamed").expect("fake");
    set_age(&fake, 86_400);
    let error = answer(&view).await.expect_err("a text file was read");
    assert_names(&error, &fake, "not a Parquet file");
    std::fs::remove_file(&fake).expect("remove");

    // A file outside the partition directories would never be read: `CREATE` says so.
    let stray = view.join("part-0.parquet");
    std::fs::copy(partition(&view, 1), &stray).expect("copy");
    set_age(&stray, 86_400);
    let error = answer(&view).await.expect_err("a stray file was left out");
    assert_names(
        &error,
        &stray,
        "not under the view's partition directories (date=...)",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_removed_after_planning_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let view = good_view(dir.path());
    let hc = session(&view).await.expect("session");
    let frame = hc.sql(QUERY).await.expect("plan");
    let task = frame.task_ctx();
    let plan = frame.create_physical_plan().await.expect("listed");
    std::fs::remove_dir_all(view.join("date=2025-01-02")).expect("remove");
    let error = collect(plan, Arc::new(task))
        .await
        .map(|_| ())
        .expect_err("a removed file was read");
    assert_names(
        &hindcast::error_message(&error),
        &partition(&view, 2),
        "removed after the query listed",
    );
    // Planned again, the query lists what is there.
    let mut want = expected();
    want[1] = want[0];
    assert_eq!(rows(&crate::common::collect(&hc, QUERY).await), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drifted_schemas_widen_or_read_null_and_any_other_change_names_the_column() {
    let dir = tempfile::tempdir().expect("temp dir");
    let view = good_view(dir.path());
    let age = |day: u64| 3600 * (10 - day);
    // Day 1 was written before `visits` existed; day 3 with narrower types.
    write(
        &partition(&view, 1),
        good_row(1)
            .into_iter()
            .filter(|c| c.0 != "visits")
            .collect(),
        age(1),
    );
    write(
        &partition(&view, 3),
        vec![
            ("user_id", Arc::new(Int32Array::from(vec![1])), true),
            // Milliseconds, where the view has microseconds: a finer unit loses nothing.
            (
                "ts",
                cast(
                    &timestamp(3),
                    &DataType::Timestamp(TimeUnit::Millisecond, None),
                )
                .expect("ms"),
                true,
            ),
            ("spend", Arc::new(Float32Array::from(vec![30.0])), true),
            ("visits", Arc::new(Int32Array::from(vec![3])), true),
        ],
        age(3),
    );
    let mut want = expected();
    want[0].1 = None;
    assert_eq!(answer(&view).await, Ok(want));

    // Day 2's spend as text: every value parses as a number, so a cast would succeed
    // and the file's type would go unnoticed.
    let file = partition(&view, 2);
    let mut text = good_row(2);
    text[2].1 = Arc::new(StringArray::from(vec!["20"]));
    write(&file, text, age(2));
    let error = answer(&view)
        .await
        .expect_err("a string column read as a float");
    assert_names(
        &error,
        &file,
        "column spend is Utf8 where the view's is Float64",
    );

    // A zoned time where the view's is naive: Arrow would shift it by the zone.
    let mut zoned = good_row(2);
    zoned[1].1 = cast(
        &timestamp(2),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("+02:00".into())),
    )
    .expect("zoned");
    write(&file, zoned, age(2));
    let error = answer(&view)
        .await
        .expect_err("a zoned time read as a naive one");
    assert_names(&error, &file, "column ts is Timestamp");

    // A float where the view has an integer would lose its fraction.
    let mut float = good_row(2);
    float[3].1 = Arc::new(Float64Array::from(vec![2.5]));
    write(&file, float, age(2));
    let error = answer(&view)
        .await
        .expect_err("a float column read as an integer");
    assert_names(
        &error,
        &file,
        "column visits is Float64 where the view's is Int64",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_null_column_missing_from_an_older_file_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let view = good_view(dir.path());
    let mut newest = good_row(5);
    newest[3].2 = false;
    write(&partition(&view, 5), newest, 0);
    let file = partition(&view, 2);
    write(
        &file,
        good_row(2)
            .into_iter()
            .filter(|c| c.0 != "visits")
            .collect(),
        3600 * 8,
    );
    let error = answer(&view)
        .await
        .expect_err("a NOT NULL column read as NULL");
    assert_names(
        &error,
        &file,
        "no column visits, which the view declares NOT NULL",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_tables_parquet_error_has_one_prefix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("labels.parquet");
    std::fs::write(&file, b"PAR1 and then nothing").expect("file");
    let hc = Hindcast::with_defaults(None).expect("session");
    let error = crate::common::error(
        &hc,
        &format!(
            "CREATE EXTERNAL TABLE labels STORED AS PARQUET LOCATION '{}'",
            file.display()
        ),
    )
    .await;
    assert!(error.starts_with("Parquet error: "), "{error}");
    assert!(!error.contains("Parquet error: Parquet error"), "{error}");
}
