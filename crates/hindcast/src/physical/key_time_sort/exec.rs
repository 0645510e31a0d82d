//! [`KeyTimeSortExec`]: the plan node, a drop-in for the `SortExec` it replaces.

use std::fmt;
use std::sync::Arc;
use std::task::Poll;

use datafusion::arrow::array::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, internal_err};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExprRef;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    apply_expression_roots,
};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};

use super::SortedPartition;

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
            let mut sorted = SortedPartition::sort(schema, batches, &exprs)?;
            sorted.hold(reservation);
            Ok(sorted)
        })
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
