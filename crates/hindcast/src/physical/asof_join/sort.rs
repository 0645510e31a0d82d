//! [`KeyTimeSortExec`]: the sort under an ASOF join, when the session has no memory limit.
//!
//! Why not DataFusion's `SortExec`: it sorts each incoming batch and then merges the sorted
//! runs through its row format, comparing rows a pair at a time and copying every column
//! at each step. The join's inputs are usually sorted by one integer key and a timestamp,
//! and usually arrive in time order (feature logs are written that way). Then a stable
//! radix sort of row numbers by key (two passes for 100k keys) leaves each key's rows in
//! time order already, a per-key check confirms it in one look, and the sorted key and
//! time columns come out on the way; the other columns stay where they are until a parent
//! gathers them (all of them for the spine, only the winners' for the ASOF join's feature
//! side). On `crates/hindcast/benches/asof_operator.rs` (1M x 10M rows in time order, 4
//! partitions, 2 cores) sort plus join takes 0.60 s with this sort and 1.77 s with
//! `SortExec`.
//!
//! What it keeps from `SortExec`: the same output (every input row, ordered by the same
//! expressions, ascending, NULLs first), the same properties, and the memory accounting.
//! What it does not have is a spill path, so a session with a memory limit keeps the
//! `SortExec`s: the rule is only installed without one. Several keys, keys that are not
//! integers or instants, key ranges wider than 32 bits, and a time equal to `i64::MIN`
//! (which would tie with NULL) take a general path: Arrow's `lexsort` over the partition.
//! So do partitions of very many small batches (over 64Ki of them, see [`CHUNK_BITS`]).

use std::fmt;
use std::sync::Arc;
use std::task::Poll;

use datafusion::arrow::array::builder::NullBufferBuilder;
use datafusion::arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, UInt32Array, new_empty_array, new_null_array,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::{
    SortColumn, SortOptions, cast, concat, concat_batches, interleave, lexsort_to_indices, take,
};
use datafusion::arrow::datatypes::{DataType, Date32Type, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, internal_err};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExprRef;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties, ReplaceChildrenOptions, apply_expression_roots,
};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};

use crate::time::TimeDomain;

/// Sorts each partition of its input by `(keys, time)` ascending, NULLs first, in memory.
#[derive(Debug)]
pub struct KeyTimeSortExec {
    /// The sort this replaces: its input, expressions and properties.
    sort: Arc<SortExec>,
    metrics: ExecutionPlanMetricsSet,
}

impl KeyTimeSortExec {
    /// Replaces `sort` when it is a plain ascending, NULLs-first sort of each partition
    /// (or of a single one) with no row limit, the kind the ASOF join asks for.
    pub fn try_replace(sort: &SortExec) -> Option<Self> {
        let per_partition = sort.preserve_partitioning()
            || sort.input().output_partitioning().partition_count() == 1;
        let plain = per_partition
            && sort.fetch().is_none()
            && sort
                .expr()
                .iter()
                .all(|e| !e.options.descending && e.options.nulls_first);
        plain.then(|| Self {
            sort: Arc::new(sort.clone()),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    fn input(&self) -> &Arc<dyn ExecutionPlan> {
        self.sort.input()
    }

    fn exprs(&self) -> Vec<PhysicalExprRef> {
        self.sort
            .expr()
            .iter()
            .map(|e| Arc::clone(&e.expr))
            .collect()
    }

    /// Partition `partition` sorted but not gathered: for a parent that reads a few columns
    /// of every row and the rest of only some rows (the ASOF join, see
    /// `stream::Source::Rows`). The rows count as this plan's output when sorted.
    pub fn execute_unmaterialized(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<BoxFuture<'static, Result<SortedPartition>>> {
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let sorted = self.sort_partition(partition, context, metrics.clone())?;
        Ok(async move {
            let sorted = sorted.await?;
            metrics.output_rows().add(sorted.num_rows());
            metrics.done();
            Ok(sorted)
        }
        .boxed())
    }

    fn sort_partition(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
        metrics: BaselineMetrics,
    ) -> Result<impl Future<Output = Result<SortedPartition>> + use<>> {
        let input = self.input().execute(partition, Arc::clone(&context))?;
        let schema = self.schema();
        let exprs = self.exprs();
        let reservation = MemoryConsumer::new(format!("KeyTimeSortExec[{partition}]"))
            .register(context.memory_pool());
        Ok(async move {
            let batches: Vec<RecordBatch> = input
                .try_filter(|b| futures::future::ready(b.num_rows() > 0))
                .try_collect()
                .await?;
            reservation.try_grow(batches.iter().map(|b| b.get_array_memory_size()).sum())?;
            let _timer = metrics.elapsed_compute().timer();
            let mut sorted = sort_order(schema, batches, &exprs)?;
            sorted._reservation = Some(reservation);
            Ok(sorted)
        })
    }
}

/// Rows per chunk of a [`SortedPartition`]: a row is coded as `chunk << 16 | row`.
const CHUNK_BITS: u32 = 16;
const CHUNK_ROWS: usize = 1 << CHUNK_BITS;

/// A partition's rows and the order that sorts them.
///
/// The rows stay in the chunks they arrived in (at most [`CHUNK_ROWS`] rows each), not
/// concatenated: concatenating copied every column once more and faulted in as much new
/// memory again (about 6% of workload M's time, plus its page faults). The sort's key and
/// time columns are produced in sorted order on the way (gathering them again would read at
/// random); the chunks keep the other columns.
pub struct SortedPartition {
    schema: SchemaRef,
    /// Column `c` in sorted order, where the sort produced it.
    sorted: Vec<Option<ArrayRef>>,
    /// The input, in order, projected to the columns not in `sorted`.
    chunks: Vec<RecordBatch>,
    /// Column `c`'s index in the chunks, for the columns not in `sorted`.
    chunk_column: Vec<Option<usize>>,
    /// The input row number of each chunk's first row.
    chunk_starts: Vec<usize>,
    /// The rows' codes (`chunk << 16 | row`), in sorted order.
    order: UInt32Array,
    /// The memory of the rows, accounted until they are dropped.
    _reservation: Option<MemoryReservation>,
}

impl SortedPartition {
    /// `chunks` (each at most `CHUNK_ROWS` rows) sorted by `order`, with `sorted` columns.
    fn new(
        schema: SchemaRef,
        chunks: Vec<RecordBatch>,
        mut sorted: Vec<Option<ArrayRef>>,
        order: UInt32Array,
    ) -> Result<Self> {
        sorted.resize(schema.fields().len(), None);
        let kept: Vec<usize> = (0..sorted.len()).filter(|&c| sorted[c].is_none()).collect();
        let mut chunk_column = vec![None; sorted.len()];
        for (i, &c) in kept.iter().enumerate() {
            chunk_column[c] = Some(i);
        }
        let chunks = chunks
            .iter()
            .map(|chunk| Ok(chunk.project(&kept)?))
            .collect::<Result<Vec<_>>>()?;
        let chunk_starts = chunks
            .iter()
            .scan(0, |start, chunk| {
                let this = *start;
                *start += chunk.num_rows();
                Some(this)
            })
            .collect();
        Ok(Self {
            schema,
            sorted,
            chunks,
            chunk_column,
            chunk_starts,
            order,
            _reservation: None,
        })
    }

    pub fn num_rows(&self) -> usize {
        self.order.len()
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Chunk and row of the row at sorted position `i`.
    fn locate(&self, i: usize) -> (usize, usize) {
        let code = self.order.value(i) as usize;
        (code >> CHUNK_BITS, code & (CHUNK_ROWS - 1))
    }

    /// Column `c` and the position in it of the row at sorted position `i`.
    pub fn cell(&self, c: usize, i: usize) -> (&ArrayRef, usize) {
        match (&self.sorted[c], self.chunk_column[c]) {
            (Some(array), _) => (array, i),
            (None, column) => {
                let (chunk, row) = self.locate(i);
                (self.chunks[chunk].column(column.unwrap_or(0)), row)
            }
        }
    }

    /// Every column at the sorted positions `positions` (NULL where a position is NULL).
    pub fn take_columns(&self, positions: &UInt32Array) -> Result<Vec<ArrayRef>> {
        let indices = self.interleave_indices(positions.iter().map(|p| p.map(|i| i as usize)));
        (0..self.schema.fields().len())
            .map(|c| match &self.sorted[c] {
                Some(array) => Ok(take(array.as_ref(), positions, None)?),
                None => self.interleave_column(c, &indices),
            })
            .collect()
    }

    /// Column `c` of the sorted rows `start..start + len`.
    pub fn column(&self, c: usize, start: usize, len: usize) -> Result<ArrayRef> {
        match &self.sorted[c] {
            Some(array) => Ok(array.slice(start, len)),
            None => {
                let indices = self.interleave_indices((start..start + len).map(Some));
                self.interleave_column(c, &indices)
            }
        }
    }

    /// The sorted rows `start..start + len`.
    pub fn batch(&self, start: usize, len: usize) -> Result<RecordBatch> {
        // The rows' chunk positions are found once for all columns.
        let indices = self.interleave_indices((start..start + len).map(Some));
        let columns = (0..self.schema.fields().len())
            .map(|c| match &self.sorted[c] {
                Some(array) => Ok(array.slice(start, len)),
                None => self.interleave_column(c, &indices),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema(), columns)?)
    }

    /// `interleave` indices of the rows at sorted positions `positions` into
    /// [`Self::interleave_column`]'s sources: source 0 is a NULL row (for `None`), source
    /// `1 + k` chunk `k`.
    fn interleave_indices(
        &self,
        positions: impl Iterator<Item = Option<usize>>,
    ) -> Vec<(usize, usize)> {
        positions
            .map(|p| match p {
                Some(i) => {
                    let (chunk, row) = self.locate(i);
                    (1 + chunk, row)
                }
                None => (0, 0),
            })
            .collect()
    }

    /// Column `c` (one not in `sorted`) gathered from the chunks at `indices`.
    fn interleave_column(&self, c: usize, indices: &[(usize, usize)]) -> Result<ArrayRef> {
        let null = new_null_array(self.schema.field(c).data_type(), 1);
        let mut sources: Vec<&dyn Array> = vec![null.as_ref()];
        sources.extend(self.chunk_arrays(c));
        Ok(interleave(&sources, indices)?)
    }

    /// Column `c` (one not in `sorted`) of each chunk, in input order.
    fn chunk_arrays(&self, c: usize) -> Vec<&dyn Array> {
        let column = self.chunk_column[c].unwrap_or(0);
        self.chunks
            .iter()
            .map(|chunk| chunk.column(column).as_ref())
            .collect()
    }

    /// Whether column `c` is in sorted order (see [`Self::whole_column`]).
    pub fn in_order(&self, c: usize) -> bool {
        self.sorted[c].is_some()
    }

    /// Column `c` whole: in sorted order if [`Self::in_order`], else in input order.
    pub fn whole_column(&self, c: usize) -> Result<ArrayRef> {
        if let Some(array) = &self.sorted[c] {
            return Ok(Arc::clone(array));
        }
        let arrays = self.chunk_arrays(c);
        match arrays.as_slice() {
            [] => Ok(new_empty_array(self.schema.field(c).data_type())),
            _ => Ok(concat(&arrays)?),
        }
    }

    /// All rows in input order, for expressions over several columns; the sorted columns
    /// are put back (a scatter), so call it only when an expression needs it.
    pub fn input_order(&self) -> Result<RecordBatch> {
        let mut inverse = vec![0u32; self.num_rows()];
        for i in 0..self.num_rows() {
            inverse[self.input_row(i)] = i as u32;
        }
        let inverse = UInt32Array::from(inverse);
        let columns = (0..self.schema.fields().len())
            .map(|c| match &self.sorted[c] {
                Some(array) => Ok(take(array.as_ref(), &inverse, None)?),
                None => self.whole_column(c),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema(), columns)?)
    }

    /// The input row number of the row at sorted position `i`.
    pub fn input_row(&self, i: usize) -> usize {
        let (chunk, row) = self.locate(i);
        self.chunk_starts[chunk] + row
    }

    /// The input row numbers of the sorted rows `start..start + len`.
    pub fn input_rows(&self, start: usize, len: usize) -> UInt32Array {
        (start..start + len)
            .map(|i| self.input_row(i) as u32)
            .collect()
    }
}

impl DisplayAs for KeyTimeSortExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let exprs = self.sort.expr();
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(f, "KeyTimeSortExec: expr=[{exprs}]")
            }
            DisplayFormatType::TreeRender => writeln!(f, "{exprs}"),
        }
    }
}

impl ExecutionPlan for KeyTimeSortExec {
    fn name(&self) -> &'static str {
        "KeyTimeSortExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.sort.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![self.input()]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&PhysicalExprRef) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let exprs = self.exprs();
        apply_expression_roots(exprs.iter(), f)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("KeyTimeSortExec has one child");
        }
        let sort = SortExec::new(self.sort.expr().clone(), children.swap_remove(0))
            .with_preserve_partitioning(self.sort.preserve_partitioning());
        Ok(Arc::new(Self {
            sort: Arc::new(sort),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let batch_size = context.session_config().batch_size();
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let sorted = self.sort_partition(partition, context, metrics.clone())?;
        // Output batches are gathered as the join asks for them, so at most a few exist next
        // to the partition's rows, which stay (with their reservation) for the stream's life.
        let output = futures::stream::once(sorted)
            .map_ok(move |sorted| {
                let metrics = metrics.clone();
                let starts = (0..sorted.num_rows()).step_by(batch_size);
                futures::stream::iter(starts).map(move |start| {
                    let batch = {
                        let _timer = metrics.elapsed_compute().timer();
                        let len = batch_size.min(sorted.num_rows() - start);
                        sorted.batch(start, len)
                    };
                    match metrics.record_poll(Poll::Ready(Some(batch))) {
                        Poll::Ready(Some(result)) => result,
                        _ => internal_err!("record_poll returns the poll it is given"),
                    }
                })
            })
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            output,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The partition's rows and the order of its rows by `exprs` ascending, NULLs first.
fn sort_order(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    exprs: &[PhysicalExprRef],
) -> Result<SortedPartition> {
    let mut chunks: Vec<RecordBatch> = vec![];
    for batch in batches {
        for start in (0..batch.num_rows()).step_by(CHUNK_ROWS) {
            chunks.push(batch.slice(start, CHUNK_ROWS.min(batch.num_rows() - start)));
        }
    }
    // Chunk numbers take the 16 bits above the row's (`u32` codes); very many small
    // batches (tests use one-row batches) take the general path, which concatenates.
    if chunks.len() <= CHUNK_ROWS {
        let evaluate = |e: &PhysicalExprRef| {
            chunks
                .iter()
                .map(|c| e.evaluate(c)?.into_array(c.num_rows()))
                .collect::<Result<Vec<_>>>()
        };
        let columns = exprs.iter().map(evaluate).collect::<Result<Vec<_>>>()?;
        if let Some(sorted) = key_time_order(&columns)? {
            drop(columns);
            // The sorted key and time stand in for their columns when the expressions are
            // plain columns, so the partition holds no more than its rows.
            let mut sorted_columns = vec![None; schema.fields().len()];
            for (expr, values) in exprs.iter().zip([sorted.keys, sorted.times]) {
                if let Some(column) = expr.downcast_ref::<Column>() {
                    let c = column.index();
                    let data_type = schema.field(c).data_type();
                    sorted_columns[c] = Some(restore(values, data_type)?);
                }
            }
            let order = UInt32Array::from(sorted.order);
            return SortedPartition::new(schema, chunks, sorted_columns, order);
        }
    }
    // General path: any key types, any number of keys. Row `i` of the concatenation is
    // row `i % CHUNK_ROWS` of chunk `i / CHUNK_ROWS`, so its code is `i`.
    let all = concat_batches(&schema, &chunks)?;
    drop(chunks);
    let sort_columns = exprs
        .iter()
        .map(|e| {
            Ok(SortColumn {
                values: e.evaluate(&all)?.into_array(all.num_rows())?,
                options: Some(SortOptions {
                    descending: false,
                    nulls_first: true,
                }),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let order = lexsort_to_indices(&sort_columns, None)?;
    let chunks = (0..all.num_rows())
        .step_by(CHUNK_ROWS)
        .map(|start| all.slice(start, CHUNK_ROWS.min(all.num_rows() - start)))
        .collect();
    SortedPartition::new(schema, chunks, vec![], order)
}

/// [`key_time_order`]'s result: the order, and the key and time (as `i64` in their own
/// order, see `ordered`) in that order.
struct KeyTimeOrder {
    order: Vec<u32>,
    keys: Int64Array,
    times: Int64Array,
}

/// A column as `i64` in its own order: the domain it shares with itself (instants in their
/// unit, integers as they are); `None` for other types. UInt64 beyond i64::MAX would not
/// convert.
fn ordered(array: &ArrayRef) -> Result<Option<Int64Array>> {
    let data_type = array.data_type();
    match TimeDomain::common(data_type, data_type) {
        Some(domain) if *data_type != DataType::UInt64 => domain.to_i64(array).map(Some),
        _ => Ok(None),
    }
}

/// The inverse of [`ordered`]: `values` back in the column's type.
fn restore(values: Int64Array, data_type: &DataType) -> Result<ArrayRef> {
    Ok(match data_type {
        // `ordered` counts a date in seconds.
        DataType::Date32 => Arc::new(values.unary::<_, Date32Type>(|s| (s / 86_400) as i32)),
        _ => cast(&values, data_type)?,
    })
}

/// The order of the rows for one integer key and an integer-backed time (timestamps,
/// dates, integers), or `None` when the columns do not fit that shape.
///
/// Two steps, both cheap for the usual input, a feature log written in time order:
/// 1. a stable radix sort of the row numbers by key, which needs as many passes as the
///    key's range has 11-bit digits (two for 100k users) and keeps each key's rows in
///    their input order;
/// 2. a stable sort of each key's rows by time, which finds them already in order (or
///    nearly: a late correction) and costs one look at each.
///
/// A NULL key sorts first (as key 0, the others from 1), a NULL time first within its key
/// (as 0; a time equal to `i64::MIN` would tie with it, so then `None`).
fn key_time_order(columns: &[Vec<ArrayRef>]) -> Result<Option<KeyTimeOrder>> {
    let [key_chunks, time_chunks] = columns else {
        return Ok(None);
    };
    let mut keys = Vec::with_capacity(key_chunks.len());
    let mut times = Vec::with_capacity(time_chunks.len());
    for (key, time) in key_chunks.iter().zip(time_chunks) {
        let (Some(key), Some(time)) = (ordered(key)?, ordered(time)?) else {
            return Ok(None);
        };
        keys.push(key);
        times.push(time);
    }
    let rows: usize = keys.iter().map(|k| k.len()).sum();
    if u32::try_from(rows).is_err() {
        return Ok(None);
    }
    let (key_min, key_max) = keys
        .iter()
        .filter_map(min_max)
        .fold((i64::MAX, i64::MIN), |(lo, hi), (l, h)| {
            (lo.min(l), hi.max(h))
        });
    let (key_min, key_max) = if key_min > key_max {
        (0, 0)
    } else {
        (key_min, key_max)
    };
    // Key ranks from 1 (0 is NULL); ranges past 32 bits take the general path.
    let Ok(key_range) = u32::try_from(key_max as i128 - key_min as i128 + 1) else {
        return Ok(None);
    };
    let has_min = |time: &Int64Array| match time.nulls() {
        None => time.values().contains(&i64::MIN),
        Some(nulls) => nulls.valid_indices().any(|i| time.value(i) == i64::MIN),
    };
    if times.iter().any(has_min) {
        return Ok(None);
    }
    // Each row as (key rank << 32 | row code): the radix passes read the key from the
    // element they move, not from a rank array in row order, so no pass reads at random.
    // (Carrying the time along too doubles the bytes each pass moves: slower on workload
    // M than looking each time up once, after the passes.)
    let mut packed: Vec<u64> = Vec::with_capacity(rows);
    for (chunk, key) in keys.iter().enumerate() {
        let base = (chunk as u64) << CHUNK_BITS;
        packed.extend((0..key.len()).map(|i| {
            let rank = match key.is_null(i) {
                true => 0,
                false => (key.value(i) as i128 - key_min as i128 + 1) as u64,
            };
            (rank << 32) | base | i as u64
        }));
    }
    // The radix sort's spare buffer receives the times in key order: the one read at random
    // per row, in a loop of its own, so the processor overlaps the cache misses (on
    // workload M this read was two thirds of the sort's time when done key by key in the
    // loop below). A NULL time is 0, below every flipped value (i64::MIN is out).
    let mut sorted_times = radix_sort_by_rank(&mut packed, bits(key_range as u128));
    let time_values: Vec<&[i64]> = times.iter().map(|t| t.values().as_ref()).collect();
    let time_nulls: Vec<Option<&NullBuffer>> = times.iter().map(|t| t.nulls()).collect();
    let any_null_time = time_nulls.iter().any(Option::is_some);
    for (t, &e) in sorted_times.iter_mut().zip(&packed) {
        let (chunk, row) = (
            (e as u32 >> CHUNK_BITS) as usize,
            e as usize & (CHUNK_ROWS - 1),
        );
        let valid = !any_null_time || time_nulls[chunk].is_none_or(|n| n.is_valid(row));
        *t = if valid {
            flip(time_values[chunk][row])
        } else {
            0
        };
    }
    // Each key's rows are usually in time order already; otherwise they are sorted, in
    // place.
    let mut order: Vec<u32> = Vec::with_capacity(rows);
    let mut sorted_keys: Vec<i64> = Vec::with_capacity(rows);
    let (mut group, mut main, mut late) = (vec![], vec![], vec![]);
    let mut start = 0;
    for run in packed.chunk_by(|a, b| a >> 32 == b >> 32) {
        let run_times = &mut sorted_times[start..start + run.len()];
        start += run.len();
        if run_times.is_sorted() {
            order.extend(run.iter().map(|&e| e as u32));
        } else {
            group.clear();
            group.extend(run_times.iter().zip(run).map(|(&t, &e)| (t, e as u32)));
            sort_nearly_sorted(&mut group, &mut main, &mut late);
            for (slot, &(t, row)) in run_times.iter_mut().zip(&group) {
                *slot = t;
                order.push(row);
            }
        }
        let key = (key_min as i128 + (run[0] >> 32) as i128 - 1) as i64;
        sorted_keys.extend(std::iter::repeat_n(key, run.len()));
    }
    drop(packed);
    // NULL keys have rank 0, so they are the first rows.
    let key_nulls: usize = keys.iter().map(|k| k.null_count()).sum();
    let key_nulls = (key_nulls > 0).then(|| {
        let mut nulls = NullBufferBuilder::new(rows);
        nulls.append_n_nulls(key_nulls);
        nulls.append_n_non_nulls(rows - key_nulls);
        nulls.finish()
    });
    let time_nulls =
        any_null_time.then(|| NullBuffer::from_iter(sorted_times.iter().map(|&t| t != 0)));
    // In place: the same allocation, now as i64.
    let sorted_times: Vec<i64> = sorted_times
        .into_iter()
        .map(|t| (t ^ (1 << 63)) as i64)
        .collect();
    Ok(Some(KeyTimeOrder {
        order,
        keys: Int64Array::new(sorted_keys.into(), key_nulls.flatten()),
        times: Int64Array::new(sorted_times.into(), time_nulls),
    }))
}

/// A stable sort by time of a key's rows, which are usually nearly in order: a late
/// correction or backfill sits after rows with later times, up to 30 days of them (for the
/// busiest user of workload M that is tens of thousands of rows, so insertion sort is out).
/// The rows that keep up with the running maximum stay in order (`main`); the few others
/// (`late`) are sorted and merged in. A row of `main` comes before every row of `late` with
/// the same time (once the maximum passes a time, every later row with that time is late),
/// so taking `main` first on ties keeps the sort stable. O(n + k log k) for k late rows.
/// (On workload M the standard sort of these runs was about 5% of the time.)
fn sort_nearly_sorted(
    group: &mut [(u64, u32)],
    main: &mut Vec<(u64, u32)>,
    late: &mut Vec<(u64, u32)>,
) {
    main.clear();
    late.clear();
    let mut max = 0;
    for &e in group.iter() {
        if e.0 >= max {
            max = e.0;
            main.push(e);
        } else {
            late.push(e);
        }
    }
    late.sort_by_key(|&(t, _)| t);
    let (mut m, mut l) = (0, 0);
    for slot in group.iter_mut() {
        if l == late.len() || (m < main.len() && main[m].0 <= late[l].0) {
            *slot = main[m];
            m += 1;
        } else {
            *slot = late[l];
            l += 1;
        }
    }
}

/// The smallest and largest non-NULL value, in one pass; `None` when all are NULL.
fn min_max(values: &Int64Array) -> Option<(i64, i64)> {
    let fold = |(lo, hi): (i64, i64), v: i64| (lo.min(v), hi.max(v));
    let (lo, hi) = match values.nulls() {
        None => values
            .values()
            .iter()
            .copied()
            .fold((i64::MAX, i64::MIN), fold),
        Some(nulls) => nulls
            .valid_indices()
            .map(|i| values.value(i))
            .fold((i64::MAX, i64::MIN), fold),
    };
    (lo <= hi).then_some((lo, hi))
}

/// Bits needed to hold `v`.
fn bits(v: u128) -> u32 {
    128 - v.leading_zeros()
}

/// Stable least-significant-digit radix sort of `(rank << 32 | row)` elements by rank, 11
/// bits a pass (a 2048-entry histogram stays in L1). One read of the input counts every
/// pass's digits; passes where every row has the same digit are skipped. Returns the spare
/// buffer (as long as `packed`, its contents unspecified) for the caller to reuse.
fn radix_sort_by_rank(packed: &mut Vec<u64>, bits: u32) -> Vec<u64> {
    const DIGIT: u32 = 11;
    const MASK: u64 = (1 << DIGIT) - 1;
    let passes = bits.div_ceil(DIGIT) as usize;
    let digit = |e: u64, pass: usize| (((e >> 32) >> (pass as u32 * DIGIT)) & MASK) as usize;
    let mut counts = vec![[0usize; 1 << DIGIT]; passes];
    for &e in packed.iter() {
        for (pass, c) in counts.iter_mut().enumerate() {
            c[digit(e, pass)] += 1;
        }
    }
    let mut scratch = vec![0u64; packed.len()];
    for (pass, c) in counts.iter_mut().enumerate() {
        if c.contains(&packed.len()) {
            continue;
        }
        let mut next = 0;
        for slot in c.iter_mut() {
            let n = *slot;
            *slot = next;
            next += n;
        }
        for &e in packed.iter() {
            let d = digit(e, pass);
            scratch[c[d]] = e;
            c[d] += 1;
        }
        std::mem::swap(packed, &mut scratch);
    }
    scratch
}

/// A signed value as an unsigned one of the same order.
fn flip(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

/// The physical optimizer's last step: the `SortExec`s directly under an ASOF join become
/// [`KeyTimeSortExec`]s. It runs after DataFusion's own rules, so the sorts it finds are
/// the ones `EnforceSorting` decided are needed, with the filters pushed below them.
#[derive(Debug, Default)]
pub struct UseKeyTimeSort;

impl datafusion::physical_optimizer::PhysicalOptimizerRule for UseKeyTimeSort {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &datafusion::config::ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        use datafusion::common::tree_node::{Transformed, TreeNode};
        plan.transform_up(|node| {
            if node.downcast_ref::<super::AsOfJoinExec>().is_none() {
                return Ok(Transformed::no(node));
            }
            let mut changed = false;
            let children = node
                .children()
                .into_iter()
                .map(|child| match child.downcast_ref::<SortExec>() {
                    Some(sort) => match KeyTimeSortExec::try_replace(sort) {
                        Some(replacement) => {
                            changed = true;
                            Arc::new(replacement) as Arc<dyn ExecutionPlan>
                        }
                        None => Arc::clone(child),
                    },
                    None => Arc::clone(child),
                })
                .collect();
            if changed {
                // Same properties: the replacement sorts exactly as the SortExec did.
                let options = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep);
                Ok(Transformed::yes(node.replace_children(children, options)?))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "UseKeyTimeSort"
    }

    fn schema_check(&self) -> bool {
        true
    }
}
