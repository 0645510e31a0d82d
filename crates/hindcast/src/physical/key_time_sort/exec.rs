//! [`KeyTimeSortExec`]: the plan node, a drop-in for the `SortExec` it replaces.

use std::fmt;
use std::sync::Arc;
use std::task::Poll;

use datafusion::arrow::array::Array;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::utils::memory::RecordBatchMemoryCounter;
use datafusion::common::{Result, internal_err};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_expr::PhysicalExprRef;
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet, SpillMetrics,
};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::streaming_merge::{SortedSpillFile, StreamingMergeBuilder};
use datafusion::physical_plan::spill::SpillManager;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    apply_expression_roots,
};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};

use super::{CHUNK_ROWS, SortedPartition};

/// Sorts each partition of its input by `(keys, time)` ascending, NULLs first: in memory,
/// or in sorted runs spilled to disk and merged back when the memory pool has no more.
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

    /// The sort this replaces.
    pub fn sort(&self) -> &Arc<SortExec> {
        &self.sort
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

    /// Partition `partition` sorted but, where it fits in memory, not gathered: for a
    /// parent that reads a few columns of every row and the rest of only some rows (the
    /// ASOF join, see `stream::Source::Rows`). The rows count as this plan's output when
    /// sorted in memory; merged from disk, as the merge emits them.
    pub fn execute_unmaterialized(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<BoxFuture<'static, Result<Sorted>>> {
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let sorted = self.sort_partition(partition, context, metrics.clone())?;
        Ok(async move {
            let sorted = sorted.await?;
            if let Sorted::InMemory(rows) = &sorted {
                metrics.output_rows().add(rows.num_rows());
                metrics.done();
            }
            Ok(sorted)
        }
        .boxed())
    }

    fn sort_partition(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
        metrics: BaselineMetrics,
    ) -> Result<impl Future<Output = Result<Sorted>> + use<>> {
        let input = self.input().execute(partition, Arc::clone(&context))?;
        let pool = context.memory_pool();
        let runs = Runs {
            schema: self.schema(),
            exprs: self.exprs(),
            ordering: self.sort.expr().clone(),
            bounded: !matches!(pool.memory_limit(), MemoryLimit::Infinite),
            reservation: MemoryConsumer::new(format!("KeyTimeSortExec[{partition}]"))
                .with_can_spill(true)
                .register(pool),
            pool: Arc::clone(pool),
            partition,
            merge_reservation: None,
            merge_headroom: context
                .session_config()
                .options()
                .execution
                .sort_spill_reservation_bytes,
            spill_manager: SpillManager::new(
                context.runtime_env(),
                SpillMetrics::new(&self.metrics, partition),
                self.schema(),
            )
            .with_compression_type(
                context
                    .session_config()
                    .options()
                    .execution
                    .spill_compression,
            ),
            batch_size: context.session_config().batch_size(),
            metrics,
            buffered: vec![],
            chunks: 0,
            counted: RecordBatchMemoryCounter::new(),
            scratch: 0,
            spilled: vec![],
        };
        Ok(runs.sort(input))
    }
}

/// A sorted partition: in memory, or merged back from the sorted runs it was spilled as.
pub enum Sorted {
    InMemory(SortedPartition),
    /// The partition's rows in order, every column gathered, as DataFusion's merge of
    /// sorted spill files emits them.
    Merged(SendableRecordBatchStream),
}

/// Bytes reserved per row, on top of its batch, for the sort's own buffers: the radix
/// path's packed codes, its spare buffer, the order and the sorted key and time (about 52
/// bytes a row with one key, see `radix::key_time_order`).
const SCRATCH_PER_ROW: usize = 64;

/// One partition's sort: batches buffered while the pool grants their memory, each time
/// it does not, sorted and written to disk as a run; at the end, either all in memory or
/// all on disk, merged by DataFusion's multi-level merge (which also keeps to the pool).
struct Runs {
    schema: SchemaRef,
    exprs: Vec<PhysicalExprRef>,
    ordering: LexOrdering,
    /// Whether the pool has a limit: without one no run is spilled.
    bounded: bool,
    /// The buffered batches and the scratch their sort will need.
    reservation: MemoryReservation,
    pool: Arc<dyn MemoryPool>,
    partition: usize,
    /// The merge's, registered with the first run (a consumer more would shrink every
    /// other's share of a fair pool), with `sort_spill_reservation_bytes` in it where the
    /// pool grants them, as `SortExec` holds them, so the merge has memory to start with.
    /// Spillable, so that a fair pool caps it at a share: DataFusion's multi-level merge
    /// grows it for as many runs as it can read at once, and merges the rest in further
    /// passes; registered unspillable, it grew until the join above could reserve nothing.
    merge_reservation: Option<MemoryReservation>,
    merge_headroom: usize,
    spill_manager: SpillManager,
    batch_size: usize,
    metrics: BaselineMetrics,
    buffered: Vec<RecordBatch>,
    /// The chunks of at most `CHUNK_ROWS` rows `buffered` makes (see `partition`).
    chunks: usize,
    /// The buffers of `buffered`, each counted once: batches sliced from one batch share
    /// its buffers, and each keeps all of them alive.
    counted: RecordBatchMemoryCounter,
    /// The part of `reservation` that is scratch, not batches.
    scratch: usize,
    spilled: Vec<SortedSpillFile>,
}

impl Runs {
    async fn sort(mut self, mut input: SendableRecordBatchStream) -> Result<Sorted> {
        while let Some(batch) = input.next().await.transpose()? {
            if batch.num_rows() > 0 {
                self.buffer(batch)?;
            }
        }
        if self.spilled.is_empty() {
            let _timer = self.metrics.elapsed_compute().timer();
            let batches = std::mem::take(&mut self.buffered);
            let mut sorted = SortedPartition::sort(Arc::clone(&self.schema), batches, &self.exprs)?;
            // The scratch is free again but for what the partition keeps of it (the order,
            // the sorted key and time); the rows stay, with their reservation.
            self.reservation
                .shrink(self.scratch.saturating_sub(sorted.sort_memory()));
            sorted.hold(self.reservation);
            return Ok(Sorted::InMemory(sorted));
        }
        self.spill()?;
        let Some(merge_reservation) = self.merge_reservation else {
            return internal_err!("KeyTimeSortExec spilled without a merge reservation");
        };
        let merged = StreamingMergeBuilder::new()
            .with_sorted_spill_files(self.spilled)
            .with_spill_manager(self.spill_manager)
            .with_schema(self.schema)
            .with_expressions(&self.ordering)
            .with_metrics(self.metrics)
            .with_batch_size(self.batch_size)
            .with_reservation(merge_reservation)
            .build()?;
        Ok(Sorted::Merged(merged))
    }

    /// Keeps `batch` with the memory for it and for its share of the sort's scratch,
    /// spilling what is buffered first when the pool has no more.
    fn buffer(&mut self, batch: RecordBatch) -> Result<()> {
        if !self.bounded {
            // Accounted, but no scratch estimated: nothing is refused.
            self.reservation.grow(self.counted.count_batch(&batch));
            self.buffered.push(batch);
            return Ok(());
        }
        let scratch = self.scratch_for(&batch)?;
        // Past `CHUNK_ROWS` chunks the sort would concatenate them (see
        // `partition::sort_order`), a copy of the rows the reservation does not cover.
        let chunks = batch.num_rows().div_ceil(CHUNK_ROWS);
        let full = self.chunks + chunks > CHUNK_ROWS;
        let size = self.counted.count_batch(&batch) + scratch;
        if full || self.reservation.try_grow(size).is_err() {
            // With nothing buffered this only forgets the batch's count: then not even it
            // fits, and the pool's own error names the limit.
            self.spill()?;
            let size = self.counted.count_batch(&batch) + scratch;
            self.reservation.try_grow(size)?;
        }
        self.scratch += scratch;
        self.chunks += chunks;
        self.buffered.push(batch);
        Ok(())
    }

    /// The sort's scratch for `batch`'s rows: [`SCRATCH_PER_ROW`], and as much again as
    /// its sort columns (their `i64` copies on the radix path; their concatenation on the
    /// general one).
    fn scratch_for(&self, batch: &RecordBatch) -> Result<usize> {
        let mut bytes = SCRATCH_PER_ROW * batch.num_rows();
        for e in &self.exprs {
            let values = e.evaluate(batch)?.into_array(batch.num_rows())?;
            bytes += values.to_data().get_slice_memory_size()?;
        }
        Ok(bytes)
    }

    /// Sorts the buffered batches and writes them to disk as one run, in batches of the
    /// session's size; frees their memory.
    fn spill(&mut self) -> Result<()> {
        self.counted = RecordBatchMemoryCounter::new();
        self.chunks = 0;
        if self.buffered.is_empty() {
            return Ok(());
        }
        let batches = std::mem::take(&mut self.buffered);
        let mut file = self
            .spill_manager
            .create_in_progress_file("KeyTimeSortExec run")?;
        let mut max_record_batch_memory = 0;
        {
            let _timer = self.metrics.elapsed_compute().timer();
            let sorted = SortedPartition::sort(Arc::clone(&self.schema), batches, &self.exprs)?;
            for start in (0..sorted.num_rows()).step_by(self.batch_size) {
                let len = self.batch_size.min(sorted.num_rows() - start);
                let batch = sorted.batch(start, len)?;
                max_record_batch_memory = max_record_batch_memory.max(file.append_batch(&batch)?);
            }
        }
        if let Some(file) = file.finish()? {
            self.spilled.push(SortedSpillFile {
                file,
                max_record_batch_memory,
            });
        }
        self.reservation.free();
        self.scratch = 0;
        if self.merge_reservation.is_none() {
            let merge = MemoryConsumer::new(format!("KeyTimeSortExec[{}] merge", self.partition))
                .with_can_spill(true)
                .register(&self.pool);
            // Best effort: the merge also grows it as it needs.
            let _ = merge.try_grow(self.merge_headroom);
            self.merge_reservation = Some(merge);
        }
        Ok(())
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
            .map_ok(move |sorted| match sorted {
                Sorted::Merged(merged) => merged.boxed(),
                Sorted::InMemory(sorted) => {
                    let metrics = metrics.clone();
                    let starts = (0..sorted.num_rows()).step_by(batch_size);
                    futures::stream::iter(starts)
                        .map(move |start| {
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
                        .boxed()
                }
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
