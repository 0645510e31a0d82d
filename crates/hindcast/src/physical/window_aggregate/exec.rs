//! [`WindowAggregateExec`]: the `ExecutionPlan` of an aggregation view's join.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, assert_eq_or_internal_err, internal_err};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::physical_expr::{
    EquivalenceProperties, LexOrdering, OrderingRequirements, PhysicalExprRef, PhysicalSortExpr,
};
use datafusion::physical_plan::execution_plan::{Boundedness, CardinalityEffect, EmissionType};
use datafusion::physical_plan::filter_pushdown::{
    ChildFilterDescription, ChildPushdownResult, FilterDescription, FilterPushdownPhase,
    FilterPushdownPropagation,
};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricCategory, MetricType, MetricsSet,
};
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, Distribution, ExecutionPlan,
    ExecutionPlanProperties, InputDistributionRequirements, PlanProperties, ReplaceChildrenOptions,
    SendableRecordBatchStream, apply_expression_roots,
};

use super::stream::{WindowAggregateStream, WindowMetrics};
use crate::logical::{WindowAggregateOptions, fmt_attributes};
use crate::physical::asof_join::{tick_range, with_session_batch_size};
use crate::physical::spine_bounds::Narrowing;

/// For every spine (left) row, that row plus each aggregate over the events (right rows)
/// with equal keys and times in `[t - window, t]`. Output rows keep the spine's partitioning
/// and order.
#[derive(Debug, Clone)]
pub struct WindowAggregateExec {
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    options: WindowAggregateOptions<PhysicalExprRef>,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    narrowing: Option<Arc<Narrowing>>,
}

impl WindowAggregateExec {
    pub fn try_new(
        left: Arc<dyn ExecutionPlan>,
        right: Arc<dyn ExecutionPlan>,
        options: WindowAggregateOptions<PhysicalExprRef>,
    ) -> Result<Self> {
        let schema = output_schema(&left.schema(), &right.schema(), &options)?;
        // The spine's columns come first and keep their order: its orderings still hold.
        let mut eq_properties = EquivalenceProperties::new(Arc::clone(&schema));
        let left_orderings = left.equivalence_properties().oeq_class().clone();
        eq_properties.add_orderings(left_orderings.into_iter().map(|o| o.to_vec()));
        let cache = PlanProperties::new(
            eq_properties,
            left.output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self {
            left,
            right,
            options,
            schema,
            cache: Arc::new(cache),
            metrics: ExecutionPlanMetricsSet::new(),
            narrowing: None,
        })
    }

    pub fn with_narrowing(mut self, narrowing: Option<Arc<Narrowing>>) -> Self {
        self.narrowing = narrowing;
        self
    }

    pub fn left(&self) -> &Arc<dyn ExecutionPlan> {
        &self.left
    }

    pub fn right(&self) -> &Arc<dyn ExecutionPlan> {
        &self.right
    }

    pub fn narrowing(&self) -> Option<&Arc<Narrowing>> {
        self.narrowing.as_ref()
    }

    pub fn options(&self) -> &WindowAggregateOptions<PhysicalExprRef> {
        &self.options
    }

    /// Ascending, NULLs first, as the ASOF join's merge compares keys.
    fn sort_requirement(
        exprs: impl Iterator<Item = PhysicalExprRef>,
    ) -> Option<OrderingRequirements> {
        let options = SortOptions {
            descending: false,
            nulls_first: true,
        };
        let exprs = exprs.map(|expr| PhysicalSortExpr { expr, options });
        LexOrdering::new(exprs).map(OrderingRequirements::from)
    }
}

/// The spine's fields, then one per aggregate.
fn output_schema(
    left: &Schema,
    right: &Schema,
    options: &WindowAggregateOptions<PhysicalExprRef>,
) -> Result<SchemaRef> {
    let mut fields: Vec<Arc<Field>> = left.fields().iter().cloned().collect();
    for aggregate in &options.aggregates {
        let argument = aggregate
            .argument
            .as_ref()
            .map(|a| a.data_type(right))
            .transpose()?;
        let data_type = aggregate.function.output_type(argument.as_ref())?;
        let nullable = aggregate.function.nullable();
        fields.push(Arc::new(Field::new(&aggregate.name, data_type, nullable)));
    }
    Ok(Arc::new(Schema::new_with_metadata(
        fields,
        left.metadata().clone(),
    )))
}

impl DisplayAs for WindowAggregateExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let attributes = self.options.attributes();
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(f, "WindowAggregateExec: ")?;
                fmt_attributes(f, &attributes, false)
            }
            DisplayFormatType::TreeRender => fmt_attributes(f, &attributes, true),
        }
    }
}

impl ExecutionPlan for WindowAggregateExec {
    fn name(&self) -> &'static str {
        "WindowAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        self.input_distribution_requirements().into_per_child()
    }

    /// A key's spine rows and events must meet in one partition.
    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        if self.options.on.is_empty() {
            return InputDistributionRequirements::new(vec![
                Distribution::SinglePartition,
                Distribution::SinglePartition,
            ]);
        }
        let (left, right) = self
            .options
            .on
            .iter()
            .map(|(l, r)| (Arc::clone(l), Arc::clone(r)))
            .unzip();
        InputDistributionRequirements::co_partitioned(vec![
            Distribution::KeyPartitioned(left),
            Distribution::KeyPartitioned(right),
        ])
    }

    /// The events' tie order after their time makes their order total, so every run adds
    /// them in the same order (see `WindowAggregateOptions::tie_order`).
    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        let options = &self.options;
        let left = options
            .left_keys()
            .cloned()
            .chain(std::iter::once(Arc::clone(&options.left_time)));
        let right = options
            .right_keys()
            .cloned()
            .chain(std::iter::once(Arc::clone(&options.right_time)))
            .chain(options.tie_order.iter().cloned());
        vec![Self::sort_requirement(left), Self::sort_requirement(right)]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true, false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.left, &self.right]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&PhysicalExprRef) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        apply_expression_roots(self.options.exprs(), f)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [left, right]: [Arc<dyn ExecutionPlan>; 2] = match children.try_into() {
            Ok(children) => children,
            Err(_) => return internal_err!("WindowAggregateExec has two children"),
        };
        match options.children_properties {
            ChildrenPropertiesMode::Keep => Ok(Arc::new(Self {
                left,
                right,
                metrics: ExecutionPlanMetricsSet::new(),
                ..Self::clone(&self)
            })),
            ChildrenPropertiesMode::Recompute => Ok(Arc::new(
                Self::try_new(left, right, self.options.clone())?
                    .with_narrowing(self.narrowing.clone()),
            )),
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        assert_eq_or_internal_err!(
            self.left.output_partitioning().partition_count(),
            self.right.output_partitioning().partition_count(),
            "WindowAggregateExec needs co-partitioned inputs"
        );
        let reservation = MemoryConsumer::new(format!("WindowAggregate[{partition}]"))
            .register(context.memory_pool());
        let counter = |name: &'static str| {
            MetricBuilder::new(&self.metrics)
                .with_type(MetricType::Summary)
                .with_category(MetricCategory::Rows)
                .counter(name, partition)
        };
        let domain = self.options.domain;
        let metrics = WindowMetrics {
            baseline: BaselineMetrics::new(&self.metrics, partition),
            spine_rows: counter("spine_rows"),
            events: counter("events"),
            events_added: counter("events_added"),
            matched_rows: counter("matched_rows"),
            future_matches: counter("future_matches"),
            spine_times: tick_range(&self.metrics, "spine_times", partition, domain, false),
            feature_lead: tick_range(&self.metrics, "feature_lead", partition, domain, true),
            peak_mem_used: MetricBuilder::new(&self.metrics)
                .peak_memory_usage("peak_mem_used", partition),
        };
        // Spine first: its sort finishes (and the bounds are final) before events are read.
        let left = self.left.execute(partition, Arc::clone(&context))?;
        let right = self.right.execute(partition, Arc::clone(&context))?;
        let stream = WindowAggregateStream::try_new(
            self.options.clone(),
            Arc::clone(&self.schema),
            left,
            right,
            reservation,
            metrics,
            self.narrowing.clone(),
        )?;
        Ok(Box::pin(stream))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        CardinalityEffect::Equal
    }

    /// Filters from above stay above. After optimization the events' side gets the spine's
    /// time range, widened by the longest window, as a dynamic filter.
    fn gather_filters_for_pushdown(
        &self,
        phase: FilterPushdownPhase,
        parent_filters: Vec<PhysicalExprRef>,
        config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        let left = ChildFilterDescription::all_unsupported(&parent_filters);
        let mut right = ChildFilterDescription::all_unsupported(&parent_filters);
        if phase == FilterPushdownPhase::Post
            && config.optimizer.enable_join_dynamic_filter_pushdown
            && let Some(narrowing) = &self.narrowing
        {
            right = right.with_self_filters(narrowing.scan_filters());
        }
        Ok(FilterDescription::new().with_child(left).with_child(right))
    }

    /// The events' kept filter at the session's batch size, as the ASOF join's (see
    /// `AsOfJoinExec::handle_child_pushdown_result`).
    fn handle_child_pushdown_result(
        &self,
        _phase: FilterPushdownPhase,
        child_pushdown_result: ChildPushdownResult,
        config: &ConfigOptions,
    ) -> Result<FilterPushdownPropagation<Arc<dyn ExecutionPlan>>> {
        let result = FilterPushdownPropagation::if_all(child_pushdown_result);
        let Some(right) = with_session_batch_size(&self.right, config)? else {
            return Ok(result);
        };
        let node = Self {
            right,
            ..Self::clone(self)
        };
        Ok(result.with_updated_node(Arc::new(node)))
    }
}
