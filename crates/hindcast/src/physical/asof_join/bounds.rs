//! The spine's time bounds, pushed into the feature scan.
//!
//! A backward join with TTL `t` can only use right rows with times in
//! `[min(left time) - t, max(left time)]` (forward joins: `[min, max + t]`). When the spine
//! covers one month of two years of features, everything else is dead weight, so the join
//! tells the right-side scan: Parquet files and row groups whose statistics fall outside the
//! range are skipped, and for feature views partitioned by a date (`date=2025-01-15/`) or by
//! `year=/month=/day=`, whole partitions are skipped before their files are opened.
//!
//! The bounds are only known once every spine row has been seen. [`SpineBoundsExec`] sits
//! under the spine's sort and watches the time column go by; because the sort consumes its
//! whole input before the join sees a single left row, and the join reads left before right,
//! the bounds are final before the right side is first polled. The filters are DataFusion
//! [`DynamicFilterPhysicalExpr`]s that start as `true`, and are set exactly once, to the
//! final bounds, so they are never tighter than the answer allows: a scan that opened a file
//! early merely misses the chance to skip it.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, ScalarValue};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CastExpr, DynamicFilterPhysicalExpr, lit,
};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExprRef};
use datafusion::physical_plan::metrics::{
    ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    RecordBatchStream, SendableRecordBatchStream, apply_expression_roots,
};
use futures::{Stream, StreamExt};

use crate::logical::MatchOp;
use crate::time::TimeDomain;

/// `[min, max]` of the spine's time column in domain ticks; `None` when no spine row has a
/// time (then no right row can match).
pub type Range = Option<(i64, i64)>;

/// Collects the spine's time range over all partitions of [`SpineBoundsExec`].
#[derive(Debug)]
pub struct SpineBounds {
    /// The left time expression, in the spine's schema.
    time: PhysicalExprRef,
    domain: TimeDomain,
    seen: Mutex<Seen>,
    /// Set once, when every partition has ended.
    done: OnceLock<Range>,
}

#[derive(Debug, Default)]
struct Seen {
    range: Range,
    finished: usize,
}

impl SpineBounds {
    pub fn new(time: PhysicalExprRef, domain: TimeDomain) -> Arc<Self> {
        Arc::new(Self {
            time,
            domain,
            seen: Mutex::default(),
            done: OnceLock::new(),
        })
    }

    /// Whether a join with this left time and domain can share these bounds.
    pub fn tracks(&self, time: &PhysicalExprRef, domain: TimeDomain) -> bool {
        self.domain == domain && self.time.as_ref() == time.as_ref()
    }

    pub fn time(&self) -> &PhysicalExprRef {
        &self.time
    }

    /// The final range, once every spine row has been seen.
    pub fn get(&self) -> Option<Range> {
        self.done.get().copied()
    }

    fn finish_partition(&self, range: Range, partitions: usize) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.range = union(seen.range, range);
        seen.finished += 1;
        if seen.finished == partitions {
            let _ = self.done.set(seen.range);
        }
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
        let range = match self.bounds.get() {
            None => "pending".to_string(),
            Some(None) => "empty".to_string(),
            Some(Some((lo, hi))) => format!(
                "[{}, {}]",
                self.bounds.domain.display(lo),
                self.bounds.domain.display(hi)
            ),
        };
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "SpineBoundsExec: time={}, range={range}",
                self.bounds.time
            ),
            DisplayFormatType::TreeRender => {
                writeln!(f, "time={}", self.bounds.time)?;
                writeln!(f, "range={range}")
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
        apply_expression_roots([&self.bounds.time], f)
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
            range: None,
            reported: false,
            elapsed: MetricBuilder::new(&self.metrics).elapsed_compute(partition),
        };
        Ok(Box::pin(stream))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

fn batch_range(bounds: &SpineBounds, batch: &RecordBatch) -> Result<Range> {
    let values = bounds.time.evaluate(batch)?.into_array(batch.num_rows())?;
    let ticks = bounds.domain.to_i64(&values)?;
    let min = datafusion::arrow::compute::min(&ticks);
    let max = datafusion::arrow::compute::max(&ticks);
    Ok(min.zip(max))
}

struct SpineBoundsStream {
    input: SendableRecordBatchStream,
    bounds: Arc<SpineBounds>,
    partitions: usize,
    range: Range,
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
                let range = batch_range(&self.bounds, &batch)?;
                self.range = union(self.range, range);
                Poll::Ready(Some(Ok(batch)))
            }
            Some(Err(e)) => Poll::Ready(Some(Err(e))),
            None => {
                if !self.reported {
                    self.reported = true;
                    self.bounds.finish_partition(self.range, self.partitions);
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

/// How a feature view's hive partitions derive from its event time (UTC). Only views opt
/// in: `DESCRIBE` shows it, and `docs/features.md` states the convention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimePartitioning {
    /// One column holding the event's date: `date=2025-01-15/` (a string or a `DATE`).
    Date(String),
    /// `year=2025/month=1/day=15/[hour=7/]`, coarsest first: a prefix of year, month, day,
    /// hour.
    Calendar(Vec<String>),
}

impl TimePartitioning {
    /// Recognise the time-derived columns among a view's partition columns.
    pub fn detect(partitions: &[String]) -> Option<Self> {
        let has = |name: &str| partitions.iter().any(|p| p.eq_ignore_ascii_case(name));
        if let Some(date) = partitions
            .iter()
            .find(|p| p.eq_ignore_ascii_case("date") || p.eq_ignore_ascii_case("dt"))
        {
            return Some(Self::Date(date.clone()));
        }
        let chain: Vec<String> = ["year", "month", "day", "hour"]
            .into_iter()
            .take_while(|name| has(name))
            .map(|name| {
                partitions
                    .iter()
                    .find(|p| p.eq_ignore_ascii_case(name))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        (!chain.is_empty()).then_some(Self::Calendar(chain))
    }

    pub fn columns(&self) -> Vec<&str> {
        match self {
            Self::Date(name) => vec![name],
            Self::Calendar(names) => names.iter().map(String::as_str).collect(),
        }
    }

    /// `key(partition) BETWEEN key(lo) AND key(hi)`, where `key` is monotone in time: the
    /// date, or `((year * 100 + month) * 100 + day) * 100 + hour`.
    fn predicate(
        &self,
        columns: &[PhysicalExprRef],
        lo: Option<NaiveDateTime>,
        hi: Option<NaiveDateTime>,
    ) -> PhysicalExprRef {
        let (key, bound): (PhysicalExprRef, Box<dyn Fn(NaiveDateTime) -> ScalarValue>) = match self
        {
            Self::Date(_) => (
                Arc::new(CastExpr::new(
                    Arc::clone(&columns[0]),
                    DataType::Date32,
                    None,
                )),
                Box::new(|t: NaiveDateTime| {
                    ScalarValue::Date32(Some((t.date() - NaiveDate::default()).num_days() as i32))
                }),
            ),
            Self::Calendar(_) => {
                let mut key: Option<PhysicalExprRef> = None;
                for column in columns {
                    let part: PhysicalExprRef =
                        Arc::new(CastExpr::new(Arc::clone(column), DataType::Int64, None));
                    key = Some(match key {
                        None => part,
                        Some(k) => binary(
                            binary(k, Operator::Multiply, lit(100i64)),
                            Operator::Plus,
                            part,
                        ),
                    });
                }
                let n = columns.len();
                let key = key.unwrap_or_else(|| lit(true));
                (
                    key,
                    Box::new(move |t: NaiveDateTime| {
                        let parts = [
                            t.year() as i64,
                            t.month() as i64,
                            t.day() as i64,
                            t.hour() as i64,
                        ];
                        ScalarValue::Int64(Some(parts[..n].iter().fold(0, |k, p| k * 100 + p)))
                    }),
                )
            }
        };
        let lower = lo.map(|t| binary(Arc::clone(&key), Operator::GtEq, lit(bound(t))));
        let upper = hi.map(|t| binary(Arc::clone(&key), Operator::LtEq, lit(bound(t))));
        conjunction(lower.into_iter().chain(upper))
    }
}

fn binary(l: PhysicalExprRef, op: Operator, r: PhysicalExprRef) -> PhysicalExprRef {
    Arc::new(BinaryExpr::new(l, op, r))
}

fn conjunction(exprs: impl Iterator<Item = PhysicalExprRef>) -> PhysicalExprRef {
    exprs
        .reduce(|a, b| binary(a, Operator::And, b))
        .unwrap_or_else(|| lit(true))
}

/// A dynamic filter placed directly on a time-partitioned view's Parquet scan, over the
/// partition columns of the scan's table schema. (DataFusion's filter pushdown can only
/// carry expressions over the columns the scan outputs, and a join rarely selects the
/// partition column, so this one is attached when the join is planned.)
#[derive(Debug)]
pub struct PartitionFilter {
    pub filter: Arc<DynamicFilterPhysicalExpr>,
    pub partitioning: TimePartitioning,
    pub columns: Vec<PhysicalExprRef>,
}

impl PartitionFilter {
    pub fn new(partitioning: TimePartitioning, columns: Vec<PhysicalExprRef>) -> Self {
        Self {
            filter: Arc::new(DynamicFilterPhysicalExpr::new(columns.clone(), lit(true))),
            partitioning,
            columns,
        }
    }
}

/// Everything one join needs to narrow its right side once its spine's range is known.
#[derive(Debug)]
pub struct Narrowing {
    pub bounds: Arc<SpineBounds>,
    pub op: MatchOp,
    pub ttl: Option<i64>,
    /// The right time expression and its type, as the right input sees it.
    pub right_time: PhysicalExprRef,
    pub right_type: DataType,
    /// `right_time BETWEEN lo AND hi`, pushed into the right side by DataFusion's
    /// post-optimization filter pushdown (files and row groups pruned by statistics).
    pub time_filter: Arc<DynamicFilterPhysicalExpr>,
    pub partition_filter: Option<Arc<PartitionFilter>>,
    published: AtomicBool,
}

impl Narrowing {
    pub fn new(
        bounds: Arc<SpineBounds>,
        op: MatchOp,
        ttl: Option<i64>,
        right_time: PhysicalExprRef,
        right_type: DataType,
    ) -> Self {
        // `true` until the spine's bounds are known.
        let columns = collect_columns(&right_time)
            .into_iter()
            .map(|c| Arc::new(c) as PhysicalExprRef)
            .collect();
        Self {
            bounds,
            op,
            ttl,
            right_time,
            right_type,
            time_filter: Arc::new(DynamicFilterPhysicalExpr::new(columns, lit(true))),
            partition_filter: None,
            published: AtomicBool::new(false),
        }
    }

    pub fn with_partition_filter(mut self, filter: Option<Arc<PartitionFilter>>) -> Self {
        self.partition_filter = filter;
        self
    }

    /// Set the filters once the spine's range is final. Called by every partition of the
    /// join before it reads right rows; the first call with a final range wins.
    pub fn publish_if_ready(&self) -> Result<()> {
        if self.published.load(Ordering::Acquire) {
            return Ok(());
        }
        let Some(range) = self.bounds.get() else {
            return Ok(());
        };
        if self.published.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let domain = self.bounds.domain;
        let (lo, hi) = match range {
            // No spine row has a time: no right row can match.
            None => {
                for filter in self.filters() {
                    filter.update(lit(false))?;
                    filter.mark_complete();
                }
                return Ok(());
            }
            Some((min, max)) if self.op.is_backward() => {
                (self.ttl.map(|t| min.saturating_sub(t)), Some(max))
            }
            Some((min, max)) => (Some(min), self.ttl.map(|t| max.saturating_add(t))),
        };
        // Bounds that do not fit the right type are left open, which is always safe.
        let lower = lo
            .and_then(|v| domain.scalar(v, &self.right_type, Round::Up))
            .map(|v| binary(Arc::clone(&self.right_time), Operator::GtEq, lit(v)));
        let upper = hi
            .and_then(|v| domain.scalar(v, &self.right_type, Round::Down))
            .map(|v| binary(Arc::clone(&self.right_time), Operator::LtEq, lit(v)));
        self.time_filter
            .update(conjunction(lower.into_iter().chain(upper)))?;
        self.time_filter.mark_complete();
        if let Some(partitions) = &self.partition_filter {
            let lo = lo.and_then(|v| domain.utc(v));
            let hi = hi.and_then(|v| domain.utc(v));
            let predicate = partitions
                .partitioning
                .predicate(&partitions.columns, lo, hi);
            partitions.filter.update(predicate)?;
            partitions.filter.mark_complete();
        }
        Ok(())
    }

    fn filters(&self) -> impl Iterator<Item = &Arc<DynamicFilterPhysicalExpr>> {
        std::iter::once(&self.time_filter).chain(self.partition_filter.iter().map(|p| &p.filter))
    }
}

/// Which way to round a bound that falls between two values of a coarser type.
#[derive(Debug, Clone, Copy)]
pub enum Round {
    Up,
    Down,
}
