//! The spine's time bounds, pushed into the feature scan.
//!
//! A backward join with TTL `t` can only use right rows with times in
//! `[min(left time) - t, max(left time)]` (forward joins: `[min, max + t]`). When the spine
//! covers one month of two years of features, everything else is dead weight, so the join
//! tells the right-side scan: Parquet files and row groups whose statistics fall outside the
//! range are skipped, and for feature views partitioned by a date (`date=2025-01-15/`) or by
//! `year=/month=/day=`, whole partitions are skipped before their files are opened.
//!
//! The spine's keys narrow the scan too when they are few (a spine of a handful of
//! entities, an online-like lookup): up to [`MAX_KEYS`] distinct values per key column
//! become `key IN (...)`, so the feature side's sort only sees those entities' rows and
//! Parquet row groups whose key statistics or bloom filters exclude them are skipped.
//!
//! The bounds are only known once every spine row has been seen. [`SpineBoundsExec`] sits
//! under the spine's sort and watches the time column go by; because the sort consumes its
//! whole input before the join sees a single left row, and the join reads left before right,
//! the bounds are final before the right side is first polled. The filters are DataFusion
//! [`DynamicFilterPhysicalExpr`]s that start as `true`, and are set exactly once, to the
//! final bounds, so they are never tighter than the answer allows: a scan that opened a file
//! early merely misses the chance to skip it.

mod narrowing;

use std::collections::HashSet;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, ScalarValue};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExprRef};
use datafusion::physical_plan::metrics::{
    ExecutionPlanMetricsSet, MetricBuilder, MetricType, MetricsSet, Time,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    RecordBatchStream, SendableRecordBatchStream, apply_expression_roots,
};
use futures::{Stream, StreamExt};

pub use narrowing::{Narrowing, PartitionFilter};

use crate::time::TimeDomain;

/// `[min, max]` of the spine's time column in domain ticks; `None` when no spine row has a
/// time (then no right row can match).
pub type Range = Option<(i64, i64)>;

/// Distinct values seen per key column, at most this many; beyond it a key is not used.
pub const MAX_KEYS: usize = 1024;

/// What the spine holds: its time range and, per key column, its distinct non-NULL values
/// (`None` once there are more than [`MAX_KEYS`]).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub range: Range,
    pub keys: Vec<Option<HashSet<ScalarValue>>>,
}

impl Summary {
    fn empty(keys: usize) -> Self {
        Self {
            range: None,
            keys: vec![Some(HashSet::new()); keys],
        }
    }

    fn merge(&mut self, other: Summary) {
        self.range = union(self.range, other.range);
        for (mine, theirs) in self.keys.iter_mut().zip(other.keys) {
            *mine = match (mine.take(), theirs) {
                (Some(mut a), Some(b)) => {
                    a.extend(b);
                    (a.len() <= MAX_KEYS).then_some(a)
                }
                _ => None,
            };
        }
    }
}

/// Collects the spine's [`Summary`] over all partitions of [`SpineBoundsExec`].
#[derive(Debug)]
pub struct SpineBounds {
    /// Unique among the bounds of one process, and kept when a plan is encoded, so a
    /// decoded join finds the [`SpineBoundsExec`] it shares these with (`distributed::codec`).
    id: u64,
    /// The left time and key expressions, in the spine's schema.
    time: PhysicalExprRef,
    keys: Vec<PhysicalExprRef>,
    domain: TimeDomain,
    seen: Mutex<(Summary, usize)>,
    /// Set once, when every partition has ended.
    done: OnceLock<Summary>,
}

impl SpineBounds {
    pub fn new(time: PhysicalExprRef, keys: Vec<PhysicalExprRef>, domain: TimeDomain) -> Arc<Self> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Self::with_id(NEXT_ID.fetch_add(1, Ordering::Relaxed), time, keys, domain)
    }

    /// Bounds with a given [`Self::id`]: a decoded plan's.
    pub fn with_id(
        id: u64,
        time: PhysicalExprRef,
        keys: Vec<PhysicalExprRef>,
        domain: TimeDomain,
    ) -> Arc<Self> {
        let n = keys.len();
        Arc::new(Self {
            id,
            time,
            keys,
            domain,
            seen: Mutex::new((Summary::empty(n), 0)),
            done: OnceLock::new(),
        })
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn time(&self) -> &PhysicalExprRef {
        &self.time
    }

    pub fn keys(&self) -> &[PhysicalExprRef] {
        &self.keys
    }

    pub fn domain(&self) -> TimeDomain {
        self.domain
    }

    /// Whether a join with this left time and domain can share these bounds.
    pub fn tracks(&self, time: &PhysicalExprRef, domain: TimeDomain) -> bool {
        self.domain == domain && self.time.as_ref() == time.as_ref()
    }

    /// Whether these bounds' key sets are those of a join with these left keys.
    pub fn tracks_keys(&self, keys: &[PhysicalExprRef]) -> bool {
        self.keys.len() == keys.len()
            && self
                .keys
                .iter()
                .zip(keys)
                .all(|(a, b)| a.as_ref() == b.as_ref())
    }

    /// The final summary, once every spine row has been seen.
    pub fn get(&self) -> Option<&Summary> {
        self.done.get()
    }

    fn finish_partition(&self, summary: Summary, partitions: usize) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.0.merge(summary);
        seen.1 += 1;
        if seen.1 == partitions {
            let _ = self.done.set(seen.0.clone());
        }
    }

    fn observe(&self, summary: &mut Summary, batch: &RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        let values = self.time.evaluate(batch)?.into_array(n)?;
        let ticks = self.domain.to_i64(&values)?;
        let min = datafusion::arrow::compute::min(&ticks);
        let max = datafusion::arrow::compute::max(&ticks);
        summary.range = union(summary.range, min.zip(max));
        for (expr, set) in self.keys.iter().zip(summary.keys.iter_mut()) {
            let Some(values) = set else {
                continue;
            };
            let array = expr.evaluate(batch)?.into_array(n)?;
            for row in 0..n {
                if array.is_valid(row) {
                    values.insert(ScalarValue::try_from_array(&array, row)?);
                    if values.len() > MAX_KEYS {
                        *set = None;
                        break;
                    }
                }
            }
        }
        Ok(())
    }
}

fn union(a: Range, b: Range) -> Range {
    match (a, b) {
        (Some((a0, a1)), Some((b0, b1))) => Some((a0.min(b0), a1.max(b1))),
        (x, None) | (None, x) => x,
    }
}

/// Passes the spine through unchanged while recording its time range into [`SpineBounds`].
///
/// It declares no output ordering on purpose: the spine's sort must sit above this node,
/// since that sort is what guarantees every spine row has gone by before the join reads its
/// first left row (and therefore before it opens the right side).
#[derive(Debug)]
pub struct SpineBoundsExec {
    input: Arc<dyn ExecutionPlan>,
    bounds: Arc<SpineBounds>,
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl SpineBoundsExec {
    pub fn new(input: Arc<dyn ExecutionPlan>, bounds: Arc<SpineBounds>) -> Self {
        let input_props = input.properties();
        let cache = PlanProperties::new(
            EquivalenceProperties::new(input.schema()),
            input_props.output_partitioning().clone(),
            input_props.emission_type,
            input_props.boundedness,
        );
        Self {
            input,
            bounds,
            cache: Arc::new(cache),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    pub fn bounds(&self) -> &Arc<SpineBounds> {
        &self.bounds
    }
}

impl DisplayAs for SpineBoundsExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let (range, keys) = match self.bounds.get() {
            None => ("pending".to_string(), String::new()),
            Some(summary) => {
                let range = match summary.range {
                    None => "empty".to_string(),
                    Some((lo, hi)) => format!(
                        "[{}, {}]",
                        self.bounds.domain.display(lo),
                        self.bounds.domain.display(hi)
                    ),
                };
                let keys: Vec<String> = summary
                    .keys
                    .iter()
                    .map(|k| match k {
                        Some(values) => values.len().to_string(),
                        None => format!("more than {MAX_KEYS}"),
                    })
                    .collect();
                (range, format!(", distinct_keys=[{}]", keys.join(", ")))
            }
        };
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "SpineBoundsExec: time={}, range={range}{keys}",
                self.bounds.time
            ),
            DisplayFormatType::TreeRender => {
                writeln!(f, "time={}", self.bounds.time)?;
                writeln!(f, "range={range}{keys}")
            }
        }
    }
}

impl ExecutionPlan for SpineBoundsExec {
    fn name(&self) -> &'static str {
        "SpineBoundsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    /// A pass-through: splitting its input only to merge it again above would cost a copy.
    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&PhysicalExprRef) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        apply_expression_roots(
            std::iter::once(&self.bounds.time).chain(&self.bounds.keys),
            f,
        )
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children.swap_remove(0);
        Ok(Arc::new(Self::new(input, Arc::clone(&self.bounds))))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let stream = SpineBoundsStream {
            input: self.input.execute(partition, context)?,
            bounds: Arc::clone(&self.bounds),
            partitions: self.input.output_partitioning().partition_count(),
            summary: Summary::empty(self.bounds.keys.len()),
            reported: false,
            elapsed: MetricBuilder::new(&self.metrics)
                .with_type(MetricType::Summary)
                .elapsed_compute(partition),
        };
        Ok(Box::pin(stream))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

struct SpineBoundsStream {
    input: SendableRecordBatchStream,
    bounds: Arc<SpineBounds>,
    partitions: usize,
    summary: Summary,
    /// A partition reports once, at the end of its input. One that fails or is dropped
    /// early never reports, so the bounds are never published from a partial spine.
    reported: bool,
    elapsed: Time,
}

impl Stream for SpineBoundsStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match ready!(self.input.poll_next_unpin(cx)) {
            Some(Ok(batch)) => {
                let elapsed = self.elapsed.clone();
                let _timer = elapsed.timer();
                let this = &mut *self;
                this.bounds.observe(&mut this.summary, &batch)?;
                Poll::Ready(Some(Ok(batch)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => {
                if !self.reported {
                    self.reported = true;
                    let summary = std::mem::take(&mut self.summary);
                    self.bounds.finish_partition(summary, self.partitions);
                }
                Poll::Ready(None)
            }
        }
    }
}

impl RecordBatchStream for SpineBoundsStream {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}
