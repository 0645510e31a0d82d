//! Metrics shown by `EXPLAIN ANALYZE` for [`super::AsOfJoinExec`].

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, CustomMetricValue, ExecutionPlanMetricsSet, Gauge, MetricBuilder,
    MetricCategory, MetricType, MetricValue,
};

use crate::time::{DisplayTtl, TimeDomain};

/// Per-partition counters; `EXPLAIN ANALYZE` sums them over partitions.
#[derive(Debug, Clone)]
pub(super) struct AsOfJoinMetrics {
    /// Output rows and compute time.
    pub baseline: BaselineMetrics,
    pub left_rows: Count,
    pub right_rows: Count,
    /// Left rows that found a winning right row.
    pub matched_rows: Count,
    /// Left rows whose nearest right row was older (or newer) than the TTL allows.
    pub expired_by_ttl: Count,
    /// Matched rows whose feature row's event time is after the spine time: none in a
    /// backward join, which is what a training set's leakage check relies on.
    pub future_matches: Count,
    /// The spine rows' times (rows with a key and a time).
    pub spine_times: Arc<TickRange>,
    /// Over matched rows: feature event time minus spine time.
    pub feature_lead: Arc<TickRange>,
    /// Most bytes the join held at once: its current left batch and the buffered right
    /// rows, each with its join arrays (keys, times, tie-breaker, rank time).
    pub peak_mem_used: Gauge,
}

impl AsOfJoinMetrics {
    pub fn new(metrics: &ExecutionPlanMetricsSet, partition: usize, domain: TimeDomain) -> Self {
        // Summary: the join's own row counts are what `EXPLAIN ANALYZE` is read for, so they
        // show at `datafusion.explain.analyze_level = summary` (the shell's default) too.
        let counter = |name: &'static str| {
            MetricBuilder::new(metrics)
                .with_type(MetricType::Summary)
                .with_category(MetricCategory::Rows)
                .counter(name, partition)
        };
        Self {
            baseline: BaselineMetrics::new(metrics, partition),
            left_rows: counter("left_rows"),
            right_rows: counter("right_rows"),
            matched_rows: counter("matched_rows"),
            expired_by_ttl: counter("expired_by_ttl"),
            future_matches: counter("future_matches"),
            spine_times: tick_range(metrics, "spine_times", partition, domain, false),
            feature_lead: tick_range(metrics, "feature_lead", partition, domain, true),
            peak_mem_used: MetricBuilder::new(metrics)
                .peak_memory_usage("peak_mem_used", partition),
        }
    }
}

/// The smallest and largest of some times of one join, in its time domain: the spine's
/// times, or how far each matched feature row's event time lies after its spine time (the
/// lead; positive is a feature from the spine row's future). A custom metric so that
/// `EXPLAIN ANALYZE` combines partitions by min and max, not by summing.
#[derive(Debug)]
pub struct TickRange {
    domain: TimeDomain,
    /// Instants (`spine_times`) or distances (`feature_lead`), for display.
    distances: bool,
    range: Mutex<Option<(i64, i64)>>,
}

impl TickRange {
    fn new(domain: TimeDomain, distances: bool) -> Self {
        Self {
            domain,
            distances,
            range: Mutex::new(None),
        }
    }

    /// Widen the range to include `other`.
    pub fn include(&self, other: Option<(i64, i64)>) {
        if let Some((lo, hi)) = other {
            widen(&mut self.range.lock().expect("not poisoned"), lo, hi);
        }
    }

    /// The smallest and largest value seen, in ticks of [`Self::domain`].
    pub fn range(&self) -> Option<(i64, i64)> {
        *self.range.lock().expect("not poisoned")
    }

    pub fn domain(&self) -> TimeDomain {
        self.domain
    }

    fn show(&self, ticks: i64) -> String {
        if self.distances {
            DisplayTtl(self.domain, ticks).to_string()
        } else {
            self.domain.display(ticks)
        }
    }
}

impl fmt::Display for TickRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.range() {
            Some((lo, hi)) => write!(f, "{}..{}", self.show(lo), self.show(hi)),
            None => f.write_str("none"),
        }
    }
}

impl CustomMetricValue for TickRange {
    fn new_empty(&self) -> Arc<dyn CustomMetricValue> {
        Arc::new(Self::new(self.domain, self.distances))
    }

    fn aggregate(&self, other: Arc<dyn CustomMetricValue>) {
        if let Some(other) = other.as_any().downcast_ref::<Self>() {
            self.include(other.range());
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn is_eq(&self, other: &Arc<dyn CustomMetricValue>) -> bool {
        other
            .as_any()
            .downcast_ref::<Self>()
            .is_some_and(|o| o.range() == self.range())
    }
}

/// A [`TickRange`] metric of one partition.
pub(crate) fn tick_range(
    metrics: &ExecutionPlanMetricsSet,
    name: &'static str,
    partition: usize,
    domain: TimeDomain,
    distances: bool,
) -> Arc<TickRange> {
    let range = Arc::new(TickRange::new(domain, distances));
    MetricBuilder::new(metrics)
        .with_partition(partition)
        .build(MetricValue::Custom {
            name: name.into(),
            value: Arc::clone(&range) as Arc<dyn CustomMetricValue>,
        });
    range
}

/// Widen `range` to include `lo..hi`.
pub fn widen(range: &mut Option<(i64, i64)>, lo: i64, hi: i64) {
    *range = Some(match *range {
        Some((a, b)) => (a.min(lo), b.max(hi)),
        None => (lo, hi),
    });
}
