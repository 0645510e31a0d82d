//! `hindcast generate`: deterministic synthetic data in the seed documents' schema, for
//! the benchmarks and for trying hindcast at scale.
//!
//! Every value is a pure function of (seed, table, day, row), computed with a counter-based
//! hash rather than a stateful random generator, so days can be written in any order by any
//! number of threads and the output is the same bytes every time. That also lets a label
//! land exactly on a feature row's timestamp (a boundary tie) by recomputing that row.
//!
//! What makes the data realistic enough to test semantics, not only speed:
//! - **skew**: user ids are drawn as `users * u^skew`, so low ids are far more active (with
//!   the default skew of 3, the most active user has about 2% of all rows);
//! - **ties**: a fraction of feature rows are corrections of an earlier row of the same day,
//!   with the same user and event time, a later created time and different values (Feast
//!   keeps the latest created); 1% of labels fall exactly on a feature row's event time;
//! - **backfills**: a fraction of rows arrive days after their event time (created time).
//!
//! Feature event times are otherwise unique, so an engine without a created-time tie-break
//! needs only to drop corrections to agree with hindcast.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use clap::{Args as ClapArgs, ValueEnum};
use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::{DataFusionError, Result, config_err};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, Encoding};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::schema::types::ColumnPath;

#[derive(Debug, Clone, ClapArgs)]
pub struct GenerateArgs {
    /// Directory to write `labels.parquet`, `user_spending_stats` and `user_activity` into
    #[arg(long)]
    pub out: PathBuf,
    /// Multiplies the default sizes: 1M labels, 6M spending rows, 4M activity rows, 100k users
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// Label rows (default 1M x scale)
    #[arg(long)]
    pub labels: Option<u64>,
    /// `user_spending_stats` rows before corrections (default 6M x scale; 0 skips the table)
    #[arg(long)]
    pub spending_rows: Option<u64>,
    /// `user_activity` rows (default 4M x scale; 0 skips the table)
    #[arg(long)]
    pub activity_rows: Option<u64>,
    /// Distinct users (default 100k x scale)
    #[arg(long)]
    pub users: Option<u64>,
    /// First day of feature data
    #[arg(long, default_value = "2024-01-01")]
    pub start: NaiveDate,
    /// Days of feature data
    #[arg(long, default_value_t = 730)]
    pub days: u64,
    /// First day of the labels (default: the first feature day)
    #[arg(long)]
    pub label_start: Option<NaiveDate>,
    /// Days the labels cover (default: all feature days)
    #[arg(long)]
    pub label_days: Option<u64>,
    /// Feature tables as daily hive partitions (`date=YYYY-MM-DD/`) or as one file each
    #[arg(long, value_enum, default_value_t = Layout::Hive)]
    pub layout: Layout,
    /// Activity skew: user ids are drawn as users * u^skew (1 is uniform)
    #[arg(long, default_value_t = 3.0)]
    pub skew: f64,
    /// Fraction of spending rows followed by a correction (same user and time, later created)
    #[arg(long, default_value_t = 0.01)]
    pub corrections: f64,
    /// Fraction of spending rows created days after their event time
    #[arg(long, default_value_t = 0.02)]
    pub backfills: f64,
    /// Seed: the same seed and sizes write the same bytes
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Layout {
    Hive,
    File,
}

const MICROS_PER_DAY: i64 = 86_400_000_000;
const CATEGORIES: [&str; 8] = [
    "groceries",
    "electronics",
    "travel",
    "fashion",
    "home",
    "sports",
    "books",
    "health",
];

/// Hash streams: one per table and purpose, so no two values share their randomness.
const LABELS: u64 = 1;
const SPENDING: u64 = 2;
const CORRECTION: u64 = 3;
const ACTIVITY: u64 = 4;

pub fn run(args: &GenerateArgs) -> Result<()> {
    let g = Generator::new(args)?;
    std::fs::create_dir_all(&args.out).map_err(|e| io_error(&args.out, e))?;
    let started = std::time::Instant::now();
    if g.spending_rows > 0 {
        g.write_table("user_spending_stats", spending_schema(), |day| {
            g.spending_day(day)
        })?;
    }
    if g.activity_rows > 0 {
        g.write_table("user_activity", activity_schema(), |day| {
            g.activity_day(day)
        })?;
    }
    g.write_labels()?;
    eprintln!(
        "Wrote {} labels, {} spending rows (+{:.0}% corrections), {} activity rows for {} users \
         over {} days to {} in {:.1} s.",
        g.labels,
        g.spending_rows,
        g.corrections * 100.0,
        g.activity_rows,
        g.users,
        g.days,
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

struct Generator {
    out: PathBuf,
    layout: Layout,
    seed: u64,
    labels: u64,
    spending_rows: u64,
    activity_rows: u64,
    users: u64,
    start: NaiveDate,
    days: u64,
    label_start: i64,
    label_days: u64,
    skew: f64,
    corrections: f64,
    backfills: f64,
}

impl Generator {
    fn new(args: &GenerateArgs) -> Result<Self> {
        let scaled = |explicit: Option<u64>, base: f64| {
            explicit.unwrap_or_else(|| (base * args.scale).round() as u64)
        };
        let users = scaled(args.users, 100_000.0);
        let check = |ok: bool, message: &str| {
            if ok { Ok(()) } else { config_err!("{message}") }
        };
        check(
            args.scale > 0.0,
            "--scale must be positive, e.g. --scale 10",
        )?;
        check(users > 0, "--users must be at least 1")?;
        check(args.days > 0, "--days must be at least 1")?;
        check(args.skew > 0.0, "--skew must be positive (1 is uniform)")?;
        check(
            (0.0..=1.0).contains(&args.corrections) && (0.0..=1.0).contains(&args.backfills),
            "--corrections and --backfills are fractions between 0 and 1",
        )?;
        let label_start = args.label_start.unwrap_or(args.start);
        let label_offset = (label_start - args.start).num_days();
        let label_days = args.label_days.unwrap_or(args.days);
        check(label_days > 0, "--label-days must be at least 1")?;
        // Every day written must be a date (chrono's range ends in the year 262142).
        let ends = |start: NaiveDate, days: u64| start.checked_add_days(Days::new(days)).is_some();
        check(
            ends(args.start, args.days),
            &format!(
                "--days {} runs past the last date that can be written ({}): use fewer days or an earlier --start",
                args.days,
                NaiveDate::MAX
            ),
        )?;
        check(
            ends(label_start, label_days),
            &format!(
                "--label-days {label_days} runs past the last date that can be written ({}): use fewer days or an earlier --label-start",
                NaiveDate::MAX
            ),
        )?;
        let labels = scaled(args.labels, 1_000_000.0);
        // One label per second at most, so labels never share a time.
        check(
            labels.div_ceil(label_days) <= 86_400,
            "at most 86,400 labels a day (one a second): raise --label-days",
        )?;
        Ok(Self {
            out: args.out.clone(),
            layout: args.layout,
            seed: args.seed,
            labels,
            spending_rows: scaled(args.spending_rows, 6_000_000.0),
            activity_rows: scaled(args.activity_rows, 4_000_000.0),
            users,
            start: args.start,
            days: args.days,
            label_start: label_offset,
            label_days,
            skew: args.skew,
            corrections: args.corrections,
            backfills: args.backfills,
        })
    }

    /// Uniform in [0, 1) for (stream, a, b, field).
    fn uniform(&self, stream: u64, a: u64, b: u64, field: u64) -> f64 {
        (self.hash(stream, a, b, field) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn hash(&self, stream: u64, a: u64, b: u64, field: u64) -> u64 {
        let mut x = self.seed;
        for v in [stream, a, b, field] {
            x = splitmix64(x ^ v.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        }
        x
    }

    fn user(&self, u: f64) -> i64 {
        ((self.users as f64 * u.powf(self.skew)) as u64).min(self.users - 1) as i64
    }

    /// Micros since the epoch at the start of feature day `day`.
    fn day_start(&self, day: i64) -> i64 {
        let date = if day >= 0 {
            self.start.checked_add_days(Days::new(day as u64))
        } else {
            self.start.checked_sub_days(Days::new(day.unsigned_abs()))
        }
        .expect("day within chrono's range");
        date.and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp_micros()
    }

    /// Rows of a table of `total` rows that fall on `day`: an even share, the remainder on
    /// the first days.
    fn rows_on(total: u64, days: u64, day: u64) -> u64 {
        total / days + u64::from(day < total % days)
    }

    /// Event time of row `k` of `n` on `day`: strictly increasing within the day and never
    /// shared with another row of the table, so only corrections tie.
    fn event_time(&self, stream: u64, day: i64, k: u64, n: u64) -> i64 {
        let step = MICROS_PER_DAY as f64 / n as f64;
        let jitter = self.uniform(stream, day as u64, k, 0) * step;
        self.day_start(day) + (k as f64 * step + jitter) as i64
    }

    /// (user, event time, created time) of spending row `k` on `day`.
    fn spending_key(&self, day: u64, k: u64, n: u64) -> (i64, i64, i64) {
        let user = self.user(self.uniform(SPENDING, day, k, 1));
        let ts = self.event_time(SPENDING, day as i64, k, n);
        let delay = if self.uniform(SPENDING, day, k, 2) < self.backfills {
            // A backfill: computed one to thirty days late.
            1 + (self.uniform(SPENDING, day, k, 3) * 30.0 * MICROS_PER_DAY as f64) as i64
        } else {
            // The usual pipeline delay: up to ten minutes.
            1 + (self.uniform(SPENDING, day, k, 3) * 600e6) as i64
        };
        (user, ts, ts + delay)
    }

    fn spending_day(&self, day: u64) -> Result<RecordBatch> {
        let n = Self::rows_on(self.spending_rows, self.days, day);
        let corrections = (n as f64 * self.corrections).round() as u64;
        let mut b = SpendingBuilder::with_capacity((n + corrections) as usize);
        for k in 0..n {
            let (user, ts, created) = self.spending_key(day, k, n);
            b.push(user, ts, created, |f| {
                self.uniform(SPENDING, day, k, 10 + f)
            });
        }
        if n > 0 {
            for j in 0..corrections {
                let k = self.hash(CORRECTION, day, j, 0) % n;
                let (user, ts, created) = self.spending_key(day, k, n);
                // Restated between an hour and three days after the original.
                let later = 3_600_000_000
                    + (self.uniform(CORRECTION, day, j, 1) * 3.0 * MICROS_PER_DAY as f64) as i64;
                b.push(user, ts, created + later, |f| {
                    self.uniform(CORRECTION, day, j, 10 + f)
                });
            }
        }
        b.finish()
    }

    fn activity_day(&self, day: u64) -> Result<RecordBatch> {
        let n = Self::rows_on(self.activity_rows, self.days, day);
        let mut user = Vec::with_capacity(n as usize);
        let mut ts = Vec::with_capacity(n as usize);
        let mut last_login = Vec::with_capacity(n as usize);
        let mut sessions = Vec::with_capacity(n as usize);
        for k in 0..n {
            user.push(self.user(self.uniform(ACTIVITY, day, k, 1)));
            ts.push(self.event_time(ACTIVITY, day as i64, k, n));
            last_login.push((self.uniform(ACTIVITY, day, k, 2) * 60.0) as i64);
            sessions.push((self.uniform(ACTIVITY, day, k, 3) * 50.0) as i64);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(user)),
            Arc::new(timestamps(ts)),
            Arc::new(Int64Array::from(last_login)),
            Arc::new(Int64Array::from(sessions)),
        ];
        Ok(RecordBatch::try_new(activity_schema(), columns)?)
    }

    /// Labels in time order, an even share per day of the label window, each in its own
    /// slot of the day, so no two labels share a time and the seed SQL's
    /// `PARTITION BY user, time` has one label per partition.
    fn write_labels(&self) -> Result<()> {
        let mut user = Vec::with_capacity(self.labels as usize);
        let mut ts = Vec::with_capacity(self.labels as usize);
        let mut label = Vec::with_capacity(self.labels as usize);
        let mut i = 0;
        for d in 0..self.label_days {
            let day = self.label_start + d as i64;
            let n = Self::rows_on(self.labels, self.label_days, d);
            let features = if (0..self.days as i64).contains(&day) {
                Self::rows_on(self.spending_rows, self.days, day as u64)
            } else {
                0
            };
            for k in 0..n {
                // Whole seconds, as event logs usually carry.
                let slot = self.event_time(LABELS, day, k, n) / 1_000_000 * 1_000_000;
                let mut row = (self.user(self.uniform(LABELS, i, 0, 2)), slot);
                // 1% land exactly on a spending row's event time, so the `<=` boundary
                // matters. Row k * features / n is a different row for every label of the
                // day when the day has at least as many feature rows as labels.
                if features >= n && self.uniform(LABELS, i, 0, 3) < 0.01 {
                    let (u, t, _) = self.spending_key(day as u64, k * features / n, features);
                    row = (u, t);
                }
                user.push(row.0);
                ts.push(row.1);
                label.push(i32::from(self.uniform(LABELS, i, 0, 5) < 0.2));
                i += 1;
            }
        }
        let schema = labels_schema();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(user)),
            Arc::new(timestamps(ts)),
            Arc::new(Int32Array::from(label)),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)?;
        let partial = self.out.join(".labels.parquet.partial");
        let mut writer = open_writer(&partial, schema)?;
        for start in (0..batch.num_rows()).step_by(1 << 20) {
            let len = (batch.num_rows() - start).min(1 << 20);
            writer.write(&batch.slice(start, len))?;
        }
        writer.close()?;
        publish(&partial, &self.out.join("labels.parquet"))
    }

    /// One file per day under `name/date=.../`, written by every core in turn, or one file
    /// `name.parquet` in day order. Written under a hidden name and renamed into place at
    /// the end, so a failed or interrupted run leaves no half-written table.
    fn write_table(
        &self,
        name: &str,
        schema: SchemaRef,
        day: impl Fn(u64) -> Result<RecordBatch> + Sync,
    ) -> Result<()> {
        let file_name = match self.layout {
            Layout::File => format!("{name}.parquet"),
            Layout::Hive => name.to_string(),
        };
        let partial = self.out.join(format!(".{file_name}.partial"));
        remove(&partial)?;
        match self.layout {
            Layout::File => {
                let mut writer = open_writer(&partial, schema)?;
                for d in 0..self.days {
                    writer.write(&clustered(day(d)?)?)?;
                }
                writer.close()?;
            }
            Layout::Hive => {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                std::thread::scope(|scope| {
                    let workers: Vec<_> = (0..threads as u64)
                        .map(|t| {
                            let (root, schema, day) = (&partial, &schema, &day);
                            scope.spawn(move || -> Result<()> {
                                for d in (t..self.days).step_by(threads) {
                                    let date = self.start + Days::new(d);
                                    let dir =
                                        root.join(format!("date={}", date.format("%Y-%m-%d")));
                                    std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
                                    let file = dir.join("part-0.parquet");
                                    let mut writer = open_writer(&file, Arc::clone(schema))?;
                                    writer.write(&clustered(day(d)?)?)?;
                                    writer.close()?;
                                }
                                Ok(())
                            })
                        })
                        .collect();
                    workers
                        .into_iter()
                        .try_for_each(|w| w.join().expect("generator thread"))
                })?;
            }
        }
        publish(&partial, &self.out.join(file_name))
    }
}

/// Replace `target` by `partial`: the old one moved aside to a hidden name, the new one
/// renamed in, then the old one removed, so a reader sees the old table, the new one, or
/// (between the two renames) none, never one half removed; a failed rename puts the old
/// one back. What a killed run leaves (`.name.partial`, `.name.old`) is hidden from
/// readers, and the next run, which writes the same table, removes it.
fn publish(partial: &Path, target: &Path) -> Result<()> {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let old = target.with_file_name(format!(".{name}.old"));
    remove(&old)?;
    if target.exists() {
        std::fs::rename(target, &old).map_err(|e| io_error(target, e))?;
    }
    hindcast::crash_point("moved-aside");
    if let Err(e) = std::fs::rename(partial, target) {
        let _ = std::fs::rename(&old, target);
        return Err(io_error(target, e));
    }
    remove(&old)
}

/// Remove a file or directory tree if it exists.
fn remove(path: &Path) -> Result<()> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else if path.exists() {
        std::fs::remove_file(path)
    } else {
        Ok(())
    };
    result.map_err(|e| io_error(path, e))
}

struct SpendingBuilder {
    user: Vec<i64>,
    ts: Vec<i64>,
    created: Vec<i64>,
    avg_amount: Vec<f64>,
    count_30d: Vec<i64>,
    spend_90d: Vec<f64>,
    days_between: Vec<f64>,
    category: Vec<&'static str>,
}

impl SpendingBuilder {
    fn with_capacity(n: usize) -> Self {
        Self {
            user: Vec::with_capacity(n),
            ts: Vec::with_capacity(n),
            created: Vec::with_capacity(n),
            avg_amount: Vec::with_capacity(n),
            count_30d: Vec::with_capacity(n),
            spend_90d: Vec::with_capacity(n),
            days_between: Vec::with_capacity(n),
            category: Vec::with_capacity(n),
        }
    }

    /// One row; `u(field)` gives the row's uniform values. Amounts are whole cents so sums
    /// are exact in every engine.
    fn push(&mut self, user: i64, ts: i64, created: i64, u: impl Fn(u64) -> f64) {
        let cents = |x: f64| (x * 100.0).round() / 100.0;
        self.user.push(user);
        self.ts.push(ts);
        self.created.push(created);
        self.avg_amount.push(cents(5.0 + u(0) * 495.0));
        let count = (u(1) * 60.0) as i64;
        self.count_30d.push(count);
        self.spend_90d.push(cents(u(2) * 20_000.0));
        self.days_between.push(cents(0.5 + u(3) * 29.5));
        self.category
            .push(CATEGORIES[(u(4) * CATEGORIES.len() as f64) as usize]);
    }

    fn finish(self) -> Result<RecordBatch> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.user)),
            Arc::new(timestamps(self.ts)),
            Arc::new(timestamps(self.created)),
            Arc::new(Float64Array::from(self.avg_amount)),
            Arc::new(Int64Array::from(self.count_30d)),
            Arc::new(Float64Array::from(self.spend_90d)),
            Arc::new(Float64Array::from(self.days_between)),
            Arc::new(StringArray::from(self.category)),
        ];
        Ok(RecordBatch::try_new(spending_schema(), columns)?)
    }
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn utc() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn timestamps(values: Vec<i64>) -> TimestampMicrosecondArray {
    TimestampMicrosecondArray::from(values).with_timezone("UTC")
}

fn labels_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("event_timestamp", utc(), false),
        Field::new("label", DataType::Int32, false),
    ]))
}

fn spending_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("event_timestamp", utc(), false),
        Field::new("created_timestamp", utc(), false),
        Field::new("avg_transaction_amount", DataType::Float64, false),
        Field::new("transaction_count_30d", DataType::Int64, false),
        Field::new("total_spend_90d", DataType::Float64, false),
        Field::new("avg_days_between_purchases", DataType::Float64, false),
        Field::new("preferred_category", DataType::Utf8, false),
    ]))
}

fn activity_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("ts", utc(), false),
        Field::new("last_login_days_ago", DataType::Int64, false),
        Field::new("session_count_7d", DataType::Int64, false),
    ]))
}

/// Snappy: fast to write and to read, and every peer reads it.
/// Rows of a Parquet data page in the feature tables: with each day's rows clustered by
/// entity (`clustered`), a page holds a narrow range of entities, so a lookup of a few
/// entities reads the pages whose statistics (the page index) can hold them, not the day's
/// every row (`docs/features.md`, "Writing features for fast lookups").
const PAGE_ROWS: usize = 1024;

/// A day's feature rows ordered by entity, then time: what makes the page statistics
/// exclude entities. The rows are the same; only their order in the file changes.
fn clustered(batch: RecordBatch) -> Result<RecordBatch> {
    let sort = |i: usize| SortColumn {
        values: Arc::clone(batch.column(i)),
        options: None,
    };
    let order = lexsort_to_indices(&[sort(0), sort(1)], None)?;
    Ok(take_record_batch(&batch, &order)?)
}

fn open_writer(path: &Path, schema: SchemaRef) -> Result<ArrowWriter<std::fs::File>> {
    let file = std::fs::File::create(path).map_err(|e| io_error(path, e))?;
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_data_page_row_count_limit(PAGE_ROWS);
    // The entity and the times have too many values for a dictionary, and a column's
    // dictionary page is read whole before any of its pages: for a lookup it was most of
    // the bytes read. Entities in order, and times, delta-encode instead.
    for field in schema.fields() {
        if field.name() == "user_id" || matches!(field.data_type(), DataType::Timestamp(..)) {
            let column = ColumnPath::from(field.name().as_str());
            properties = properties
                .set_column_dictionary_enabled(column.clone(), false)
                .set_column_encoding(column, Encoding::DELTA_BINARY_PACKED);
        }
    }
    let properties = properties.build();
    Ok(ArrowWriter::try_new(file, schema, Some(properties))?)
}

fn io_error(path: &Path, e: std::io::Error) -> DataFusionError {
    DataFusionError::from(e).context(format!("cannot write {}", path.display()))
}
