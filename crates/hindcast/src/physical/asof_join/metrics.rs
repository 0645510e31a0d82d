//! Metrics shown by `EXPLAIN ANALYZE` for [`super::AsOfJoinExec`].

use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, Gauge, MetricBuilder, MetricCategory,
    MetricType,
};

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
    /// Most bytes the join held at once: its current left batch and the buffered right
    /// rows, each with its join arrays (keys, times, tie-breaker, rank time).
    pub peak_mem_used: Gauge,
}

impl AsOfJoinMetrics {
    pub fn new(metrics: &ExecutionPlanMetricsSet, partition: usize) -> Self {
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
            peak_mem_used: MetricBuilder::new(metrics)
                .peak_memory_usage("peak_mem_used", partition),
        }
    }
}
