//! Reading a Parquet feature view's files with errors that name the file, the problem and
//! the fix. DataFusion reads them; this wraps the reader it planned (`CheckedReaders`),
//! so its caches, byte ranges and pruning are unchanged.
//!
//! Each file's footer is checked against the view's schema as it is opened, before a row
//! is decoded: a missing nullable column reads as NULL (DataFusion's schema adapter), an
//! integer or float type that only widens is coerced, and any other difference is an error
//! naming the column, both types and the file. Without the check DataFusion casts whatever
//! it can cast, so a string column where the view has a float fails on the first value
//! that does not parse, or not at all when every value does, with no file named.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::listing::{ListingTableUrl, PartitionedFile};
use datafusion::datasource::physical_plan::parquet::ParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfig, FileScanConfigBuilder, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::arrow::parquet_to_arrow_schema;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::path::Path as ObjectPath;

/// A file of a feature view that cannot be read as the view declares it.
#[derive(Debug)]
pub struct BadFile {
    pub view: String,
    /// The file's location (`file_location`).
    pub file: String,
    pub problem: String,
}

impl fmt::Display for BadFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            view,
            file,
            problem,
        } = self;
        write!(f, "feature view {view}: cannot read '{file}': {problem}")
    }
}

impl std::error::Error for BadFile {}

/// What a failure to open a Parquet file means to the user, from the reader's message
/// (the parquet crate and the object store report these cases only as text).
pub fn open_problem(message: &str) -> String {
    let message = strip_prefixes(message);
    if message.contains(" retries") || message.contains("error sending request") {
        // The object store's client gave up (`storage::S3_RETRIES`): nothing is wrong
        // with the file.
        format!("the object store did not answer: {message}; run the query again once it does")
    } else if message.contains("not found") || message.contains("No such file") {
        "the file is gone: it was removed after the query listed the view's files; run the query again".to_string()
    } else if message.contains("Corrupt footer")
        || message.contains("Invalid Parquet file")
        || message.contains("at least 8 bytes")
    {
        "it is not a Parquet file, or it was cut short (it does not end in a Parquet footer): rewrite it, or remove it from the view's location".to_string()
    } else {
        format!("{message}: rewrite it, or remove it from the view's location")
    }
}

/// `message` without the "Parquet error: " and "External: " prefixes each layer adds.
fn strip_prefixes(mut message: &str) -> &str {
    loop {
        let rest = ["Parquet error: ", "External: ", "Object Store error: "]
            .iter()
            .find_map(|p| message.strip_prefix(p));
        match rest {
            Some(rest) => message = rest,
            None => return message,
        }
    }
}

/// A file as the user would write its location: `/dir/file.parquet` on the local file
/// system, `s3://bucket/key` on an object store (the store's own path has neither).
pub fn file_location(store: &ObjectStoreUrl, file: &ObjectPath) -> String {
    match store.as_str() {
        "file:///" => format!("/{file}"),
        url => format!("{url}{file}"),
    }
}

/// Whether `file`, listed under the view's `root`, is hidden: a name below the root starting
/// with `.` or `_`. Spark, Hive and pyarrow skip these (`_SUCCESS`, `.part-0.parquet.crc`,
/// an unfinished job's `_temporary/`, hindcast's own `.hindcast-*` leftovers); DataFusion
/// lists every file of a directory, so the view drops them from its scan.
pub fn is_hidden(root: &ObjectPath, file: &ObjectPath) -> bool {
    file.prefix_match(root).is_some_and(|mut parts| {
        parts.any(|part| {
            let part = part.as_ref();
            // `_date=2025-01-01/` is a partition (Spark hides `_` names only without `=`).
            part.starts_with('.') || (part.starts_with('_') && !part.contains('='))
        })
    })
}

/// `plan` with every Parquet scan in it reading through [`CheckedReaders`] for `view`, and
/// without the hidden files under `location`.
pub(crate) fn checked_scans(
    view: &str,
    location: &str,
    plan: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let root = ListingTableUrl::parse(location)?.prefix().clone();
    plan.transform_down(|node| {
        let Some(exec) = node.downcast_ref::<DataSourceExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(config) = exec.data_source().downcast_ref::<FileScanConfig>() else {
            return Ok(Transformed::no(node));
        };
        let Some(source) = config.file_source().downcast_ref::<ParquetSource>() else {
            return Ok(Transformed::no(node));
        };
        let Some(inner) = source.parquet_file_reader_factory() else {
            return Ok(Transformed::no(node));
        };
        let checked = CheckedReaders {
            inner: Arc::clone(inner),
            store: config.object_store_url.clone(),
            view: view.to_string(),
            schema: Arc::clone(config.file_schema()),
        };
        let source = source
            .clone()
            .with_parquet_file_reader_factory(Arc::new(checked));
        let groups = config
            .file_groups
            .iter()
            .map(|group| {
                let files = group
                    .iter()
                    .filter(|f| !is_hidden(&root, &f.object_meta.location));
                FileGroup::new(files.cloned().collect())
            })
            .collect();
        let config = FileScanConfigBuilder::from(config.clone())
            .with_file_groups(groups)
            .with_source(Arc::new(source))
            .build();
        Ok(Transformed::yes(
            DataSourceExec::from_data_source(config) as Arc<dyn ExecutionPlan>
        ))
    })
    .map(|t| t.data)
}

/// DataFusion's reader factory for a view's scan, its readers checking each file.
#[derive(Debug)]
struct CheckedReaders {
    inner: Arc<dyn ParquetFileReaderFactory>,
    store: ObjectStoreUrl,
    view: String,
    /// The columns the view reads from its files (no partition columns).
    schema: SchemaRef,
}

impl ParquetFileReaderFactory for CheckedReaders {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> Result<Box<dyn AsyncFileReader + Send>> {
        let name = file_location(&self.store, &file.object_meta.location);
        let inner = self
            .inner
            .create_reader(partition_index, file, metadata_size_hint, metrics)?;
        Ok(Box::new(CheckedReader {
            inner,
            view: self.view.clone(),
            file: name,
            schema: Arc::clone(&self.schema),
        }))
    }
}

struct CheckedReader {
    inner: Box<dyn AsyncFileReader + Send>,
    view: String,
    file: String,
    schema: SchemaRef,
}

impl CheckedReader {
    fn bad(&self, problem: String) -> ParquetError {
        ParquetError::External(Box::new(BadFile {
            view: self.view.clone(),
            file: self.file.clone(),
            problem,
        }))
    }

    /// The first column of the view the file cannot give as the view declares it.
    fn check(&self, metadata: &ParquetMetaData) -> Result<(), ParquetError> {
        let file = metadata.file_metadata();
        let schema = parquet_to_arrow_schema(file.schema_descr(), file.key_value_metadata())
            .map_err(|e| {
                self.bad(format!(
                    "its schema has no Arrow form: {}",
                    strip_prefixes(&e.to_string())
                ))
            })?;
        for field in self.schema.fields() {
            match schema.field_with_name(field.name()) {
                Ok(found) => {
                    if !reads_as(found.data_type(), field.data_type()) {
                        return Err(self.bad(type_problem(found, field)));
                    }
                }
                Err(_) if field.is_nullable() => {}
                Err(_) => {
                    return Err(self.bad(format!(
                        "it has no column {}, which the view declares NOT NULL: rewrite the file with the column, or recreate the view with it nullable",
                        field.name()
                    )));
                }
            }
        }
        Ok(())
    }
}

fn type_problem(found: &Field, declared: &Field) -> String {
    format!(
        "its column {} is {} where the view's is {}, and the one does not widen to the other: rewrite the file with {} as {}, or keep files of that type under another view",
        declared.name(),
        found.data_type(),
        declared.data_type(),
        declared.name(),
        declared.data_type()
    )
}

/// Whether a file's column of type `found` reads as the view's `declared` with no loss
/// (DataFusion's schema adapter performs the cast):
/// - the same type, or dictionary encoding on either side;
/// - an integer or float that widens; an integer of at most 16 bits into `FLOAT`, of at
///   most 32 into `DOUBLE`; a decimal into one with at least as many digits on both sides
///   of the point;
/// - strings, or binaries, of another offset width; a binary as a string (DataFusion reads
///   Parquet binaries as strings where the table says so);
/// - a timestamp into a finer unit with the same zone-ness (a naive time read as zoned
///   would be shifted by the zone; a coarser unit truncates); a `DATE32` into `DATE64` or
///   a naive timestamp;
/// - lists, maps and structs whose elements do, whatever their fields are named (writers
///   name list elements differently); a struct field the file lacks must be nullable.
///
/// That is Delta's type widening (and Spark's) plus the encodings Arrow writers differ in.
fn reads_as(found: &DataType, declared: &DataType) -> bool {
    use DataType::*;
    if found == declared {
        return true;
    }
    let int_width = |t: &DataType| match t {
        Int8 => Some((true, 8)),
        Int16 => Some((true, 16)),
        Int32 => Some((true, 32)),
        Int64 => Some((true, 64)),
        UInt8 => Some((false, 8)),
        UInt16 => Some((false, 16)),
        UInt32 => Some((false, 32)),
        UInt64 => Some((false, 64)),
        _ => None,
    };
    let decimal = |t: &DataType| match t {
        Decimal32(p, s) | Decimal64(p, s) | Decimal128(p, s) | Decimal256(p, s) => {
            Some((i16::from(*p), i16::from(*s)))
        }
        _ => None,
    };
    let unit = |u: &TimeUnit| match u {
        TimeUnit::Second => 0,
        TimeUnit::Millisecond => 1,
        TimeUnit::Microsecond => 2,
        TimeUnit::Nanosecond => 3,
    };
    match (found, declared) {
        (Dictionary(_, values), _) => reads_as(values, declared),
        (_, Dictionary(_, values)) => reads_as(found, values),
        (Utf8 | LargeUtf8 | Utf8View, Utf8 | LargeUtf8 | Utf8View) => true,
        (Binary | LargeBinary | BinaryView, Binary | LargeBinary | BinaryView) => true,
        (Binary | LargeBinary | BinaryView, Utf8 | LargeUtf8 | Utf8View) => true,
        (Float16, Float32 | Float64) | (Float32, Float64) => true,
        (Timestamp(from, a), Timestamp(to, b)) => {
            a.is_some() == b.is_some() && unit(from) <= unit(to)
        }
        (Date32, Date64 | Timestamp(_, None)) => true,
        (Int8 | Int16 | UInt8 | UInt16, Float32)
        | (Int8 | Int16 | Int32 | UInt8 | UInt16 | UInt32, Float64) => true,
        (
            List(a) | LargeList(a) | ListView(a) | LargeListView(a),
            List(b) | LargeList(b) | ListView(b) | LargeListView(b),
        )
        | (FixedSizeList(a, _), List(b) | LargeList(b)) => reads_as(a.data_type(), b.data_type()),
        (FixedSizeList(a, n), FixedSizeList(b, m)) => {
            n == m && reads_as(a.data_type(), b.data_type())
        }
        (Map(a, _), Map(b, _)) => reads_as(a.data_type(), b.data_type()),
        (Struct(found), Struct(declared)) => {
            declared.iter().all(
                |field| match found.iter().find(|f| f.name() == field.name()) {
                    Some(f) => reads_as(f.data_type(), field.data_type()),
                    None => field.is_nullable(),
                },
            )
        }
        _ => match (decimal(found), decimal(declared)) {
            (Some((p, s)), Some((q, t))) => t >= s && q - t >= p - s,
            _ => match (int_width(found), int_width(declared)) {
                (Some((signed, from)), Some((to_signed, to))) => {
                    (signed == to_signed && from <= to) || (!signed && to_signed && from < to)
                }
                _ => false,
            },
        },
    }
}

impl AsyncFileReader for CheckedReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes, ParquetError>> {
        async move {
            match self.inner.get_bytes(range).await {
                Ok(bytes) => Ok(bytes),
                Err(e) => Err(self.bad(open_problem(&e.to_string()))),
            }
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, Result<Vec<Bytes>, ParquetError>> {
        async move {
            match self.inner.get_byte_ranges(ranges).await {
                Ok(bytes) => Ok(bytes),
                Err(e) => Err(self.bad(open_problem(&e.to_string()))),
            }
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>, ParquetError>> {
        async move {
            let metadata = match self.inner.get_metadata(options).await {
                Ok(metadata) => metadata,
                Err(e) => return Err(self.bad(open_problem(&e.to_string()))),
            };
            self.check(&metadata)?;
            Ok(metadata)
        }
        .boxed()
    }
}
