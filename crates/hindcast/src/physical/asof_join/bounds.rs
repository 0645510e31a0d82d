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

use std::collections::HashSet;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};

use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, ScalarValue};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{
    BinaryExpr, CastExpr, DynamicFilterPhysicalExpr, in_list, lit,
};
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExprRef};
use datafusion::physical_plan::metrics::{
    ExecutionPlanMetricsSet, MetricBuilder, MetricType, MetricsSet, Time,
};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    RecordBatchStream, SendableRecordBatchStream, apply_expression_roots,
};
use futures::{Stream, StreamExt};

use crate::logical::MatchOp;
use crate::time::{Round, TimeDomain};

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
        let n = keys.len();
        Arc::new(Self {
            time,
            keys,
            domain,
            seen: Mutex::new((Summary::empty(n), 0)),
            done: OnceLock::new(),
        })
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
    /// The right key expressions, when the spine's key sets are this join's (a later join
    /// in a chain on other keys uses the time range only), and the right input's schema.
    pub right_keys: Vec<PhysicalExprRef>,
    pub right_schema: SchemaRef,
    /// `right_time BETWEEN lo AND hi`, pushed into the right side by DataFusion's
    /// post-optimization filter pushdown (files and row groups pruned by statistics).
    pub time_filter: Arc<DynamicFilterPhysicalExpr>,
    pub partition_filter: Option<Arc<PartitionFilter>>,
    /// Held while the filters are set, so no partition reads right rows before they are.
    published: Mutex<bool>,
}

impl Narrowing {
    pub fn new(
        bounds: Arc<SpineBounds>,
        op: MatchOp,
        ttl: Option<i64>,
        right_time: PhysicalExprRef,
        right_keys: Vec<PhysicalExprRef>,
        right_schema: SchemaRef,
    ) -> Result<Self> {
        let right_type = right_time.data_type(&right_schema)?;
        // `true` until the spine's bounds are known.
        let mut columns: Vec<_> = collect_columns(&right_time).into_iter().collect();
        for key in &right_keys {
            columns.extend(collect_columns(key));
        }
        columns.sort_by_key(|c| c.index());
        columns.dedup();
        let columns = columns
            .into_iter()
            .map(|c| Arc::new(c) as PhysicalExprRef)
            .collect();
        Ok(Self {
            bounds,
            op,
            ttl,
            right_time,
            right_type,
            right_keys,
            right_schema,
            time_filter: Arc::new(DynamicFilterPhysicalExpr::new(columns, lit(true))),
            partition_filter: None,
            published: Mutex::new(false),
        })
    }

    pub fn with_partition_filter(mut self, filter: Option<Arc<PartitionFilter>>) -> Self {
        self.partition_filter = filter;
        self
    }

    /// Set the filters once the spine's range is final, and say whether they are set.
    /// Called by every partition of the join before it reads right rows (until this returns
    /// `true`); the first call with a final range sets them, and the others wait until it
    /// has (a flag set before the filters would let another partition open files
    /// unfiltered in between).
    pub fn publish_if_ready(&self) -> Result<bool> {
        let mut published = self.published.lock().unwrap_or_else(|e| e.into_inner());
        if *published {
            return Ok(true);
        }
        let Some(summary) = self.bounds.get() else {
            return Ok(false);
        };
        *published = true;
        let domain = self.bounds.domain;
        let (lo, hi) = match summary.range {
            // No spine row has a time: no right row can match.
            None => {
                for filter in self.filters() {
                    filter.update(lit(false))?;
                    filter.mark_complete();
                }
                return Ok(true);
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
        // A spine with few entities: `key IN (...)`. A key with no value in the spine (all
        // NULL) matches nothing.
        let keys = self
            .right_keys
            .iter()
            .zip(&summary.keys)
            .filter_map(|(key, values)| {
                let values = values.as_ref()?;
                if values.is_empty() {
                    return Some(lit(false));
                }
                // Sorted, so plans and EXPLAIN output do not depend on hashing.
                let mut values: Vec<&ScalarValue> = values.iter().collect();
                values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
                let list = values.into_iter().map(|v| lit(v.clone())).collect();
                in_list(Arc::clone(key), list, &false, &self.right_schema).ok()
            })
            .collect::<Vec<_>>();
        self.time_filter
            .update(conjunction(lower.into_iter().chain(upper).chain(keys)))?;
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
        Ok(true)
    }

    fn filters(&self) -> impl Iterator<Item = &Arc<DynamicFilterPhysicalExpr>> {
        std::iter::once(&self.time_filter).chain(self.partition_filter.iter().map(|p| &p.filter))
    }
}
