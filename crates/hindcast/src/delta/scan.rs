//! A Delta snapshot read as DataFusion's own Parquet scan: one `PartitionedFile` per add
//! action, with its partition values and the log's statistics.
//!
//! hindcast reads a snapshot this way whenever Delta's rules for reading it are plain
//! Parquet's: no deletion vectors, no column mapping, no other reader feature. Then the scan
//! is a `DataSourceExec` like a Parquet view's, so the join's dynamic filter skips whole
//! files by their partition values and statistics before their footers are read, and
//! datafusion-distributed's codec sends it to workers (deltalake-core's `DeltaScanExec` has
//! no codec). Any other snapshot is read by deltalake-core.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::pruning::PrunableStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::{
    ColumnStatistics, DFSchema, Result, ScalarValue, Statistics, plan_datafusion_err,
};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::utils::conjunction;
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use deltalake_core::DeltaTable;
use deltalake_core::kernel::LogicalFileView;
use object_store::ObjectMeta;
use object_store::path::Path;
use serde_json::Value;
use url::Url;

/// The reader features whose files are still plain Parquet: the rest (type widening,
/// variants, ...) need deltalake-core's reader. Deletion vectors and column mapping are
/// checked by what the snapshot uses, not by the feature being enabled.
const PLAIN_READER_FEATURES: &[&str] = &[
    "timestampNtz",
    "v2Checkpoint",
    "vacuumProtocolCheck",
    "deletionVectors",
    "columnMapping",
];

/// Why the snapshot of `table` must be read by deltalake-core, or `None` when its files
/// are plain Parquet under the table's directory.
pub(super) fn needs_delta_reader(table: &DeltaTable) -> Option<String> {
    let Ok(snapshot) = table.snapshot() else {
        return Some("its files were not loaded".into());
    };
    let mapping = snapshot
        .metadata()
        .configuration()
        .get("delta.columnMapping.mode")
        .map(|m| m.to_lowercase());
    if mapping.as_deref().is_some_and(|m| m != "none") {
        return Some("column mapping".into());
    }
    let protocol = serde_json::to_value(snapshot.protocol()).unwrap_or(Value::Null);
    if let Some(features) = protocol.get("readerFeatures").and_then(Value::as_array) {
        for feature in features.iter().filter_map(Value::as_str) {
            if !PLAIN_READER_FEATURES.contains(&feature) {
                return Some(format!("the reader feature {feature}"));
            }
        }
    }
    for file in snapshot.log_data().iter() {
        if file.deletion_vector_descriptor().is_some() {
            return Some("deletion vectors".into());
        }
        // An absolute URL (a shallow clone's files); a relative path may hold ':' in a
        // partition value (a timestamp), which is no URL scheme after `col=`.
        if Url::parse(&file.path()).is_ok() {
            return Some("files outside its directory".into());
        }
    }
    None
}

/// The Parquet scan of `table`'s snapshot, with `schema` (the table's columns, in their
/// order; `partitions` among them) and `projection` as DataFusion gives them to a table.
pub(super) async fn parquet_scan(
    state: &dyn Session,
    table: &DeltaTable,
    schema: &SchemaRef,
    partitions: &[String],
    projection: Option<&Vec<usize>>,
    filters: &[Expr],
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    // The scan's columns are the files' then the partitions' (DataFusion's layout); the
    // projection maps the table's order onto them.
    let (partition_fields, file_fields): (Vec<FieldRef>, Vec<FieldRef>) = schema
        .fields()
        .iter()
        .cloned()
        .partition(|f| partitions.contains(f.name()));
    let scan_schema = Arc::new(Schema::new(
        file_fields
            .iter()
            .chain(&partition_fields)
            .cloned()
            .collect::<Vec<_>>(),
    ));
    let wanted: Vec<usize> = match projection {
        Some(p) => p.clone(),
        None => (0..schema.fields().len()).collect(),
    };
    let projection = wanted
        .iter()
        .map(|&i| scan_schema.index_of(schema.field(i).name()))
        .collect::<std::result::Result<Vec<_>, _>>()?;

    let root = table.table_url();
    let snapshot = table
        .snapshot()
        .map_err(|e| plan_datafusion_err!("cannot list the Delta table's files: {e}"))?;
    let prefix = root_path(root)?;
    let files = snapshot
        .log_data()
        .iter()
        .map(|view| partitioned_file(&view, &prefix, &file_fields, &partition_fields))
        .collect::<Result<Vec<_>>>()?;
    let files = skip_files(state, files, &scan_schema, filters);
    if files.is_empty() {
        return Ok(Arc::new(EmptyExec::new(Arc::new(schema.project(&wanted)?))));
    }
    let rows = files
        .iter()
        .filter_map(|f| match f.statistics.as_ref()?.num_rows {
            Precision::Exact(n) => Some(n),
            _ => None,
        })
        .sum();

    let format = ParquetFormat::default().with_options(state.default_table_options().parquet);
    let source = format.file_source(
        TableSchema::builder(Arc::new(Schema::new(file_fields)))
            .with_table_partition_cols(partition_fields)
            .build(),
    );
    // The files' own statistics are exact bounds for pruning; the table's are left
    // inexact, so no aggregate is answered from them (Delta truncates timestamps and long
    // strings in its statistics).
    let mut statistics = Statistics::new_unknown(&scan_schema);
    statistics.num_rows = Precision::Inexact(rows);
    let groups = FileGroup::new(files).split_files(state.config().target_partitions());
    let config = FileScanConfigBuilder::new(object_store_url(root)?, source)
        .with_file_groups(groups)
        .with_statistics(statistics)
        .with_projection_indices(Some(projection))?
        .with_limit(limit)
        .build();
    format.create_physical_plan(state, config).await
}

/// The files that the query's filters may match, by their partition values and statistics
/// (the files of a partition a filter excludes, say, are not in the plan at all). A
/// filter that cannot be evaluated so skips nothing.
fn skip_files(
    state: &dyn Session,
    files: Vec<PartitionedFile>,
    scan_schema: &SchemaRef,
    filters: &[Expr],
) -> Vec<PartitionedFile> {
    let Some(filter) = conjunction(filters.iter().cloned()) else {
        return files;
    };
    let keep = DFSchema::try_from(Arc::clone(scan_schema))
        .and_then(|df_schema| state.create_physical_expr(filter, &df_schema))
        .and_then(|predicate| {
            PruningPredicateBuilder::new()
                .with_file_schema(Arc::clone(scan_schema))
                .try_build(predicate)
        })
        .and_then(|pruning| {
            let statistics = files
                .iter()
                .map(|f| {
                    f.statistics
                        .clone()
                        .unwrap_or_else(|| Arc::new(Statistics::new_unknown(scan_schema)))
                })
                .collect();
            pruning.prune(&PrunableStatistics::new(
                statistics,
                Arc::clone(scan_schema),
            ))
        });
    match keep {
        Ok(keep) => files
            .into_iter()
            .zip(keep)
            .filter_map(|(file, keep)| keep.then_some(file))
            .collect(),
        Err(_) => files,
    }
}

/// The store of the table's files: `file://`, or the scheme and bucket of its URL.
pub(super) fn object_store_url(root: &Url) -> Result<ObjectStoreUrl> {
    ObjectStoreUrl::parse(&root[..url::Position::BeforePath])
}

/// The table directory's path in its store.
fn root_path(root: &Url) -> Result<Path> {
    Path::from_url_path(root.path())
        .map_err(|e| plan_datafusion_err!("'{root}' is not a table directory: {e}"))
}

/// One add action as a file of the scan: its path under the table, its partition values
/// typed as the table's columns, and the log's statistics for its data columns.
fn partitioned_file(
    view: &LogicalFileView,
    prefix: &Path,
    file_fields: &[FieldRef],
    partition_fields: &[FieldRef],
) -> Result<PartitionedFile> {
    // The log's path, relative to the table and decoded, is the object's name as it is
    // (a Hive-escaped `%3A` in a directory stays one): no second encoding.
    let location = Path::from_iter(prefix.parts().chain(view.object_store_path().parts()));
    let meta = ObjectMeta {
        location,
        last_modified: view
            .modification_datetime()
            .map_err(|e| plan_datafusion_err!("{e}"))?,
        size: view.size().max(0) as u64,
        e_tag: None,
        version: None,
    };
    let raw = view.partition_values_map();
    let partition_values = partition_fields
        .iter()
        .map(|f| partition_value(raw.get(f.name()).cloned().flatten(), f))
        .collect::<Result<Vec<_>>>()?;
    let stats = view
        .stats()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .unwrap_or(Value::Null);
    let mut statistics = file_statistics(&stats, file_fields);
    // The partition columns' statistics, after the files' (the scan's layout). Not
    // `PartitionedFile::with_statistics`, which takes every partition value for non-null:
    // a Delta partition may be null, and `IS NULL` would then skip its files.
    for value in &partition_values {
        statistics.column_statistics.push(if value.is_null() {
            ColumnStatistics {
                null_count: statistics.num_rows,
                ..ColumnStatistics::new_unknown()
            }
        } else {
            ColumnStatistics {
                null_count: Precision::Exact(0),
                min_value: Precision::Exact(value.clone()),
                max_value: Precision::Exact(value.clone()),
                distinct_count: Precision::Exact(1),
                ..ColumnStatistics::new_unknown()
            }
        });
    }
    let mut file = PartitionedFile::new_from_meta(meta).with_partition_values(partition_values);
    file.statistics = Some(Arc::new(statistics));
    Ok(file)
}

/// A partition value as the log writes it (a string; null or empty for null), as a value
/// of the column's type.
fn partition_value(raw: Option<String>, field: &FieldRef) -> Result<ScalarValue> {
    match raw.filter(|v| !v.is_empty()) {
        None => ScalarValue::try_from(field.data_type()),
        Some(value) => ScalarValue::Utf8(Some(value.clone()))
            .cast_to(field.data_type())
            .map_err(|e| {
                plan_datafusion_err!(
                    "the Delta table's partition value '{value}' of {} is not a {}: {e}",
                    field.name(),
                    field.data_type()
                )
            }),
    }
}

/// A file's statistics from the log's `stats` JSON (`numRecords`, `minValues`,
/// `maxValues`, `nullCount`), for the columns a key or a time can be: integers, strings,
/// timestamps, dates. Delta writes timestamps truncated to milliseconds, so a maximum is
/// raised by one millisecond to stay a bound.
fn file_statistics(stats: &Value, file_fields: &[FieldRef]) -> Statistics {
    let value = |kind: &str, field: &FieldRef| -> Precision<ScalarValue> {
        let Some(json) = stats.get(kind).and_then(|m| m.get(field.name())) else {
            return Precision::Absent;
        };
        match stat_value(json, field.data_type(), kind == "maxValues") {
            Some(v) => Precision::Exact(v),
            None => Precision::Absent,
        }
    };
    let column = |field: &FieldRef| ColumnStatistics {
        null_count: stats
            .get("nullCount")
            .and_then(|m| m.get(field.name()))
            .and_then(Value::as_u64)
            .map_or(Precision::Absent, |n| Precision::Exact(n as usize)),
        min_value: value("minValues", field),
        max_value: value("maxValues", field),
        ..ColumnStatistics::new_unknown()
    };
    Statistics {
        num_rows: stats
            .get("numRecords")
            .and_then(Value::as_u64)
            .map_or(Precision::Absent, |n| Precision::Exact(n as usize)),
        total_byte_size: Precision::Absent,
        column_statistics: file_fields.iter().map(column).collect(),
    }
}

/// One statistic as a value of `data_type`, or `None` for a type pruning does not use here
/// or a value that does not parse.
fn stat_value(json: &Value, data_type: &DataType, is_max: bool) -> Option<ScalarValue> {
    let value = match (json, data_type) {
        (Value::Number(n), t) if t.is_integer() => ScalarValue::Int64(Some(n.as_i64()?)),
        (
            Value::String(s),
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(..),
        ) => ScalarValue::Utf8(Some(s.clone())),
        _ => return None,
    };
    let value = value.cast_to(data_type).ok()?;
    if !is_max {
        return Some(value);
    }
    Some(match value {
        ScalarValue::TimestampSecond(Some(v), tz) => {
            ScalarValue::TimestampSecond(Some(v.checked_add(1)?), tz)
        }
        ScalarValue::TimestampMillisecond(Some(v), tz) => {
            ScalarValue::TimestampMillisecond(Some(v.checked_add(1)?), tz)
        }
        ScalarValue::TimestampMicrosecond(Some(v), tz) => {
            ScalarValue::TimestampMicrosecond(Some(v.checked_add(1_000)?), tz)
        }
        ScalarValue::TimestampNanosecond(Some(v), tz) => {
            ScalarValue::TimestampNanosecond(Some(v.checked_add(1_000_000)?), tz)
        }
        other => other,
    })
}
