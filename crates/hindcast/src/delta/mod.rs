//! Delta Lake tables: `STORED AS DELTA LOCATION '...' [OPTIONS ('version' 'N' |
//! 'timestamp' '...')]`, for tables and feature views alike.
//!
//! [`DeltaTableFactory`] loads the table's log with deltalake-core (the latest snapshot, or
//! the one pinned by `version` or `timestamp`). A snapshot whose files are plain Parquet is
//! read by DataFusion's Parquet scan over the log's files ([`scan`]); one with deletion
//! vectors, column mapping or another reader feature, by deltalake-core's own scan, which
//! reads them as Delta defines them. Files are reached through the session's object
//! stores: an `s3://` table uses the same clients and credentials as a Parquet view
//! (`storage`).

mod scan;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::common::{DataFusionError, Result, plan_datafusion_err, plan_err};
use datafusion::datasource::TableType;
use datafusion::execution::SessionState;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{
    CreateExternalTable, Expr, LogicalPlan, TableProviderFilterPushDown,
};
use datafusion::physical_plan::ExecutionPlan;
use deltalake_core::logstore::{
    LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
};
use deltalake_core::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use url::Url;

/// The format name in `STORED AS DELTA`.
pub const DELTA: &str = "DELTA";

/// Which snapshot of a Delta table to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaPin {
    /// The newest version when the table is opened.
    Latest,
    /// Exactly this version (`OPTIONS ('version' 'N')`).
    Version(u64),
    /// The newest version committed at or before this instant (`OPTIONS ('timestamp' '...')`).
    Timestamp(DateTime<Utc>),
}

impl DeltaPin {
    /// The pin in a table's `OPTIONS`: `version` or `timestamp` (also as `format.version`,
    /// `format.timestamp`), not both; any other option is an error naming it.
    pub fn from_options(options: &HashMap<String, String>) -> Result<Self> {
        let mut pin = Self::Latest;
        for (key, value) in options {
            let key = key.to_lowercase();
            let name = key.strip_prefix("format.").unwrap_or(&key);
            let next = match name {
                "version" => match value.trim().parse::<u64>() {
                    Ok(version) => Self::Version(version),
                    Err(_) => {
                        return plan_err!(
                            "Delta option 'version' must be a table version such as '12', not '{value}'"
                        );
                    }
                },
                "timestamp" => match DateTime::parse_from_rfc3339(value.trim()) {
                    Ok(instant) => Self::Timestamp(instant.with_timezone(&Utc)),
                    Err(_) => {
                        return plan_err!(
                            "Delta option 'timestamp' must be an RFC 3339 instant such as '2025-03-01T00:00:00Z', not '{value}'"
                        );
                    }
                },
                _ => {
                    return plan_err!(
                        "unknown option '{key}' for a Delta table: use 'version' or 'timestamp'"
                    );
                }
            };
            if pin != Self::Latest {
                return plan_err!("a Delta table takes 'version' or 'timestamp', not both");
            }
            pin = next;
        }
        Ok(pin)
    }
}

/// `CREATE EXTERNAL TABLE ... STORED AS DELTA` (and feature views `STORED AS DELTA`).
#[derive(Debug, Default)]
pub struct DeltaTableFactory;

#[async_trait]
impl TableProviderFactory for DeltaTableFactory {
    async fn create(
        &self,
        state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        let [location] = cmd.locations.as_slice() else {
            return plan_err!("a Delta table has one LOCATION, its directory");
        };
        let pin = DeltaPin::from_options(&cmd.options)?;
        if !cmd.schema.fields().is_empty() && pin != DeltaPin::Latest {
            return plan_err!(
                "a column list creates a new Delta table, which has no earlier version: drop 'version' or 'timestamp' for '{location}'"
            );
        }
        if !cmd.schema.fields().is_empty() {
            // A column list creates the table; an existing one has its columns in its log.
            create(state, location, cmd).await?;
        } else if !cmd.table_partition_cols.is_empty() {
            return plan_err!(
                "a Delta table's partition columns come from its log: drop PARTITIONED BY for '{location}'"
            );
        }
        Ok(Arc::new(DeltaSource::open(state, location, pin).await?))
    }
}

/// A Delta table as a DataFusion table: the pinned snapshot, or, unpinned, the newest
/// version each time a query reads it (as a Parquet table lists its files each time).
#[derive(Debug)]
pub struct DeltaSource {
    pin: DeltaPin,
    location: String,
    /// The snapshot read when the table was opened.
    opened: Arc<Snapshot>,
    /// The version the last scan read: what a training set written by the query that
    /// planned it records (a session planning two queries over the table at once may see
    /// the other's).
    scanned: Mutex<Option<u64>>,
}

/// A loaded version of the table, and its scan.
#[derive(Debug)]
struct Snapshot {
    table: DeltaTable,
    version: u64,
    /// deltalake-core's scan: the table's columns and its writes, and its reads when
    /// `delta_reader` says why they need it.
    scan: Arc<dyn TableProvider>,
    delta_reader: Option<String>,
}

impl Snapshot {
    /// The partition columns, from the log.
    fn partitions(&self) -> Vec<String> {
        self.table
            .snapshot()
            .map(|s| s.metadata().partition_columns().to_vec())
            .unwrap_or_default()
    }

    /// A rule of the table's that deltalake-core's DataFusion sink does not check (its own
    /// writer does): CHECK constraints (table properties `delta.constraints.*`), column
    /// invariants, generated and identity columns (column metadata).
    fn unenforced_rule(&self) -> Option<String> {
        let constraint = self.table.snapshot().ok().and_then(|s| {
            s.metadata()
                .configuration()
                .keys()
                .find(|k| k.starts_with("delta.constraints."))
                .cloned()
        });
        if let Some(key) = constraint {
            return Some(format!("a CHECK constraint ({key})"));
        }
        let schema = self.scan.schema();
        schema.fields().iter().find_map(|f| {
            f.metadata()
                .keys()
                .find(|k| {
                    k.starts_with("delta.invariants")
                        || k.starts_with("delta.generationExpression")
                        || k.starts_with("delta.identity")
                })
                .map(|k| format!("a rule on column {} ({k})", f.name()))
        })
    }
}

impl DeltaSource {
    /// Load the table at `location` (a directory or an `s3://` URL) as of `pin`.
    pub async fn open(state: &dyn Session, location: &str, pin: DeltaPin) -> Result<Self> {
        let mut builder = builder(state, location)?;
        builder = match pin {
            DeltaPin::Latest => builder,
            DeltaPin::Version(version) => builder.with_version(version),
            DeltaPin::Timestamp(instant) => builder.with_timestamp(instant),
        };
        if let Ok(path) = table_url(location)?.to_file_path()
            && !path.is_dir()
        {
            return plan_err!(
                "cannot read the Delta table at '{location}': there is no such directory"
            );
        }
        let table = match builder.load().await {
            Ok(table) => table,
            Err(e) => return Err(self::version_error(state, location, pin, e).await),
        };
        let snapshot = table.snapshot().map_err(|e| load_error(location, e))?;
        let version = snapshot.version();
        // deltalake-core reads the first version for an instant before the table existed.
        if let DeltaPin::Timestamp(instant) = pin
            && let Some(committed) = snapshot.version_timestamp(version)
            && committed > instant.timestamp_millis()
        {
            return plan_err!(
                "cannot read the Delta table at '{location}': it has no version as of {}; its first was committed at {}",
                instant.to_rfc3339(),
                DateTime::from_timestamp_millis(committed)
                    .map(|t| t.to_rfc3339())
                    .unwrap_or_else(|| committed.to_string())
            );
        }
        let scan = scan_of(&table, state, location).await?;
        Ok(Self {
            pin,
            location: location.to_string(),
            opened: Arc::new(Snapshot {
                delta_reader: scan::needs_delta_reader(&table),
                table,
                version,
                scan,
            }),
            scanned: Mutex::new(None),
        })
    }

    /// The version read when the table was opened (for an unpinned table, later queries
    /// read newer ones: see [`Self::current_version`]).
    pub fn version(&self) -> u64 {
        self.opened.version
    }

    /// The version the last query planned over the table reads.
    pub fn scanned_version(&self) -> u64 {
        self.scanned
            .lock()
            .expect("not poisoned")
            .unwrap_or(self.opened.version)
    }

    /// The table's directory or URL.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Whether a `version` or `timestamp` option pins the snapshot.
    pub fn is_pinned(&self) -> bool {
        self.pin != DeltaPin::Latest
    }

    /// The version a query reads now.
    pub async fn current_version(&self) -> Result<u64> {
        Ok(self.newest().await?.0)
    }

    /// The table's partition columns, from its log.
    pub fn partitions(&self) -> Vec<String> {
        self.opened.partitions()
    }

    /// `provider` as a Delta table, if it is one.
    pub fn of(provider: &dyn TableProvider) -> Option<&Self> {
        provider.downcast_ref::<Self>()
    }

    /// The version a query reads and the table loaded at it: the pinned one, or the
    /// newest.
    async fn newest(&self) -> Result<(u64, DeltaTable)> {
        let mut table = self.opened.table.clone();
        if !self.is_pinned() {
            table
                .update_incremental(None)
                .await
                .map_err(|e| load_error(&self.location, e))?;
        }
        Ok((table.version().unwrap_or(self.opened.version), table))
    }

    /// The snapshot a query reads: the pinned one, or the newest (whose columns must still
    /// be the ones the session planned with).
    async fn current(&self, state: &dyn Session) -> Result<Arc<Snapshot>> {
        if self.is_pinned() {
            return Ok(Arc::clone(&self.opened));
        }
        let (version, table) = self.newest().await?;
        if version == self.opened.version {
            return Ok(Arc::clone(&self.opened));
        }
        let scan = scan_of(&table, state, &self.location).await?;
        let snapshot = Snapshot {
            delta_reader: scan::needs_delta_reader(&table),
            table,
            version,
            scan,
        };
        // Field metadata (comments) may change; names, types and partitioning may not: the
        // session planned with them.
        let shape = |schema: &SchemaRef| -> Vec<(String, DataType, bool)> {
            schema
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone(), f.is_nullable()))
                .collect()
        };
        if shape(&snapshot.scan.schema()) != shape(&self.opened.scan.schema())
            || snapshot.partitions() != self.opened.partitions()
        {
            return plan_err!(
                "the Delta table at '{}' changed its columns or partitioning in version {version}: create the table or view again to read them",
                self.location
            );
        }
        Ok(Arc::new(snapshot))
    }
}

/// A filter that holds for every row (`c IS NULL OR c IS NOT NULL`) on each data column
/// that can be a key or a time (integers, strings, timestamps, dates), for a snapshot read
/// by deltalake-core: its scan attaches the log's per-file statistics to its Parquet files
/// only for the columns of its predicate, and with them the join's time range and keys,
/// which arrive as a dynamic filter while the query runs, skip whole files before their
/// footers are read. (Its own file skipping at run time is not public.)
fn stats_wanted(schema: &SchemaRef, partitions: &[String]) -> Vec<Expr> {
    use datafusion::prelude::col;
    let key_or_time = |t: &DataType| {
        t.is_integer()
            || matches!(
                t,
                DataType::Utf8
                    | DataType::LargeUtf8
                    | DataType::Utf8View
                    | DataType::Timestamp(..)
                    | DataType::Date32
                    | DataType::Date64
            )
    };
    schema
        .fields()
        .iter()
        .filter(|f| !partitions.contains(f.name()) && key_or_time(f.data_type()))
        .map(|f| {
            let c = col(datafusion::common::Column::from_name(f.name()));
            c.clone().is_null().or(c.is_not_null())
        })
        .collect()
}

/// deltalake-core's scan of `table`'s loaded snapshot, with the session's Parquet settings
/// (view types, pushdown).
async fn scan_of(
    table: &DeltaTable,
    state: &dyn Session,
    location: &str,
) -> Result<Arc<dyn TableProvider>> {
    let mut scan = table.table_provider();
    if let Some(session) = state.as_any().downcast_ref::<SessionState>() {
        scan = scan.with_session(Arc::new(session.clone()));
    }
    scan.await
        .map_err(|e| e.context(format!("cannot read the Delta table at '{location}'")))
}

/// A failure to load a pinned version: when the table loads unpinned and ends before the
/// version, that (deltalake-core's kernel reports it as a log segment mismatch).
async fn version_error(
    state: &dyn Session,
    location: &str,
    pin: DeltaPin,
    e: DeltaTableError,
) -> DataFusionError {
    if let DeltaPin::Version(version) = pin
        && let Ok(builder) = builder(state, location)
        && let Ok(table) = builder.load().await
        && let Some(newest) = table.version()
        && newest < version
    {
        return plan_datafusion_err!(
            "cannot read the Delta table at '{location}': it has no version {version}; its newest is {newest}"
        );
    }
    load_error(location, e)
}

/// A load failure as the user's problem: not a Delta table, a version it lacks, or the
/// storage's own error.
fn load_error(location: &str, e: DeltaTableError) -> DataFusionError {
    let reason = match &e {
        DeltaTableError::NotATable(_) => "it has no _delta_log (is it a Delta table?)".to_string(),
        DeltaTableError::InvalidVersion(v) => format!("it has no version {v}"),
        _ => e.to_string(),
    };
    plan_datafusion_err!("cannot read the Delta table at '{location}': {reason}")
}

/// A new, empty Delta table at `location` with `cmd`'s columns and partition columns: its
/// first commit. Timestamps are stored in microseconds (Delta has no finer unit).
async fn create(state: &dyn Session, location: &str, cmd: &CreateExternalTable) -> Result<()> {
    if let Ok(path) = table_url(location)?.to_file_path() {
        std::fs::create_dir_all(&path).map_err(|e| {
            DataFusionError::from(e).context(format!("cannot create directory '{location}'"))
        })?;
    }
    let mut table = builder(state, location)?
        .build()
        .map_err(|e| load_error(location, e))?;
    match table.load().await {
        Err(DeltaTableError::NotATable(_)) => {}
        Ok(()) => {
            return plan_err!(
                "a Delta table already exists at '{location}': its columns come from its log, so drop the column list"
            );
        }
        Err(e) => return Err(load_error(location, e)),
    }
    let fields: Vec<Field> = cmd
        .schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Timestamp(_, zone) => f
                .as_ref()
                .clone()
                .with_data_type(DataType::Timestamp(TimeUnit::Microsecond, zone.clone())),
            _ => f.as_ref().clone(),
        })
        .collect();
    for column in &cmd.table_partition_cols {
        if !fields.iter().any(|f| f.name() == column) {
            return plan_err!(
                "partition column {column} of the new Delta table at '{location}' is not in its column list"
            );
        }
    }
    let empty = RecordBatch::new_empty(Arc::new(Schema::new(fields)));
    table
        .write(vec![empty])
        .with_partition_columns(cmd.table_partition_cols.clone())
        .await
        .map_err(|e| plan_datafusion_err!("cannot create the Delta table at '{location}': {e}"))?;
    Ok(())
}

/// A table builder for `location` over the session's object store for it.
fn builder(state: &dyn Session, location: &str) -> Result<DeltaTableBuilder> {
    let url = table_url(location)?;
    if url.scheme() == "s3" {
        commit_to_s3_with_conditional_writes();
    }
    let root = scan::object_store_url(&url)?;
    let store = state.runtime_env().object_store(&root)?;
    Ok(DeltaTableBuilder::from_url(url.clone())
        .map_err(|e| load_error(location, e))?
        .with_storage_backend(store, url))
}

/// deltalake-core commits only to local files and memory by itself (its S3 log store is
/// another crate, built around a DynamoDB lock). S3 has had conditional writes since 2024,
/// and deltalake-core's default log store commits with them (a `PUT` with `If-None-Match`
/// that fails if the version exists), so `s3://` tables commit with it, through the
/// session's own S3 client.
fn commit_to_s3_with_conditional_writes() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        let s3 = Url::parse("s3://").expect("a URL");
        logstore_factories()
            .entry(s3)
            .or_insert_with(|| Arc::new(ConditionalWrites));
    });
}

#[derive(Debug)]
struct ConditionalWrites;

impl LogStoreFactory for ConditionalWrites {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> deltalake_core::DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// A local directory (relative paths from the current directory) or a URL, as a URL.
fn table_url(location: &str) -> Result<Url> {
    if location.contains("://") {
        return Url::parse(location)
            .map_err(|e| plan_datafusion_err!("'{location}' is not a valid URL: {e}"));
    }
    let path = std::path::absolute(location)
        .map_err(|e| DataFusionError::from(e).context(format!("cannot resolve '{location}'")))?;
    Url::from_directory_path(&path)
        .map_err(|_| plan_datafusion_err!("'{location}' is not a directory path"))
}

#[async_trait]
impl TableProvider for DeltaSource {
    fn schema(&self) -> SchemaRef {
        self.opened.scan.schema()
    }

    fn table_type(&self) -> TableType {
        self.opened.scan.table_type()
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        self.opened.scan.get_logical_plan()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let snapshot = self.current(state).await?;
        *self.scanned.lock().expect("not poisoned") = Some(snapshot.version);
        if snapshot.delta_reader.is_none() {
            return scan::parquet_scan(
                state,
                &snapshot.table,
                &snapshot.scan.schema(),
                &snapshot.partitions(),
                projection,
                filters,
                limit,
            )
            .await;
        }
        let mut filters = filters.to_vec();
        filters.extend(stats_wanted(
            &snapshot.scan.schema(),
            &snapshot.partitions(),
        ));
        snapshot.scan.scan(state, projection, &filters, limit).await
    }

    /// Inexact for every filter, whichever scan reads the snapshot: DataFusion keeps each
    /// above the scan and pushes it into the Parquet reader, where partition values and
    /// file statistics skip files.
    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    /// One Delta commit with every row, or none: deltalake-core's sink writes the files,
    /// then commits them (a concurrent append is retried through Delta's conditional
    /// commit).
    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if self.is_pinned() {
            return plan_err!(
                "the Delta table at '{}' is read at a pinned version ({}): rows are appended to the newest, so open it without 'version' or 'timestamp' to insert",
                self.location,
                self.opened.version
            );
        }
        if insert_op != InsertOp::Append {
            return plan_err!("only INSERT INTO (appending) is supported for Delta tables");
        }
        let snapshot = self.current(state).await?;
        if let Some(rule) = snapshot.unenforced_rule() {
            return plan_err!(
                "the Delta table at '{}' has {rule}, which hindcast's INSERT does not enforce yet: write to it with a Delta writer that does",
                self.location
            );
        }
        snapshot.scan.insert_into(state, input, insert_op).await
    }
}
