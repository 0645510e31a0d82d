//! [`AsOfJoinExec`]: the `ExecutionPlan` of the point-in-time join.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::{Fields, Schema, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{
    DataFusionError, JoinSide, JoinType, Result, assert_eq_or_internal_err, internal_err,
};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryReservation};
use datafusion::physical_expr::equivalence::join_equivalence_properties;
use datafusion::physical_expr::{
    LexOrdering, OrderingRequirements, PhysicalExprRef, PhysicalSortExpr,
};
use datafusion::physical_plan::execution_plan::{Boundedness, CardinalityEffect, EmissionType};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::filter_pushdown::{
    ChildFilterDescription, ChildPushdownResult, FilterDescription, FilterPushdownPhase,
    FilterPushdownPropagation,
};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, Distribution, ExecutionPlan,
    ExecutionPlanProperties, InputDistributionRequirements, PlanProperties, ReplaceChildrenOptions,
    SendableRecordBatchStream, apply_expression_roots,
};

use futures::TryStreamExt;

use super::input::RightInput;
use super::metrics::AsOfJoinMetrics;
use super::stream::{AsOfJoinStream, JoinStreamConfig};
use crate::logical::{AsOfJoinOptions, JoinMode, fmt_attributes};
use crate::physical::key_time_sort::KeyTimeSortExec;
use crate::physical::spine_bounds::Narrowing;

/// Point-in-time join of co-partitioned inputs, each sorted by `(keys, time)`.
///
/// For every left row it emits that row plus the right row with equal keys nearest in time
/// on the side the options allow (within the TTL), or NULLs. Output rows come in the left
/// input's order, so the output keeps the left side's partitioning and ordering.
#[derive(Debug, Clone)]
pub struct AsOfJoinExec {
    left: Arc<dyn ExecutionPlan>,
    right: Arc<dyn ExecutionPlan>,
    options: AsOfJoinOptions<PhysicalExprRef>,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    /// Narrows the right side to the spine's time range (see `physical::spine_bounds`).
    narrowing: Option<Arc<Narrowing>>,
}

impl AsOfJoinExec {
    pub fn try_new(
        left: Arc<dyn ExecutionPlan>,
        right: Arc<dyn ExecutionPlan>,
        options: AsOfJoinOptions<PhysicalExprRef>,
    ) -> Result<Self> {
        options.validate()?;
        let schema = join_schema(&left.schema(), &right.schema());
        let eq_properties = join_equivalence_properties(
            left.equivalence_properties().clone(),
            right.equivalence_properties().clone(),
            &JoinType::Left,
            Arc::clone(&schema),
            &[true, false],
            Some(JoinSide::Left),
            &[],
        )?;
        // Left columns come first in the output, so the left partitioning still holds.
        let cache = PlanProperties::new(
            eq_properties,
            left.output_partitioning().clone(),
            EmissionType::Incremental,
            // Sorted inputs: the operator never runs on unbounded streams.
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

    pub fn options(&self) -> &AsOfJoinOptions<PhysicalExprRef> {
        &self.options
    }

    /// Whether the left input is another ASOF join's output with no sort between them, as
    /// in a join of several feature views to one spine.
    fn left_is_chained_join(&self) -> bool {
        let mut node = &self.left;
        loop {
            if node.downcast_ref::<AsOfJoinExec>().is_some() {
                return true;
            }
            let children = node.children();
            let holds_all_rows = node.downcast_ref::<SortExec>().is_some()
                || node.downcast_ref::<KeyTimeSortExec>().is_some()
                || node.downcast_ref::<RepartitionExec>().is_some();
            if children.len() != 1 || holds_all_rows {
                return false;
            }
            node = children[0];
        }
    }

    /// Whether the join gathers the right side's rows itself, the winners' only (late
    /// materialization): when hindcast's own sort is below it (see `input::Source::Rows`).
    fn gathers_right_rows(&self) -> bool {
        self.right.downcast_ref::<KeyTimeSortExec>().is_some()
    }

    /// The order the merge needs: keys, then time, ascending, NULLs first. The stream
    /// compares keys with the same options, so its notion of "less" matches the sort.
    fn sort_requirement(
        keys: impl Iterator<Item = PhysicalExprRef>,
        time: &PhysicalExprRef,
    ) -> Option<OrderingRequirements> {
        let options = SortOptions {
            descending: false,
            nulls_first: true,
        };
        let exprs = keys
            .chain(std::iter::once(Arc::clone(time)))
            .map(|expr| PhysicalSortExpr { expr, options });
        LexOrdering::new(exprs).map(OrderingRequirements::from)
    }
}

/// `right` (a `SortExec` over the `FilterExec` it kept) with that filter built at the
/// session's batch size; `None` when there is nothing to change. See
/// `AsOfJoinExec::handle_child_pushdown_result`.
pub(crate) fn with_session_batch_size(
    right: &Arc<dyn ExecutionPlan>,
    config: &ConfigOptions,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let batch_size = config.execution.batch_size.get();
    let Some(sort) = right.downcast_ref::<SortExec>() else {
        return Ok(None);
    };
    let Some(filter) = sort.input().downcast_ref::<FilterExec>() else {
        return Ok(None);
    };
    if filter.batch_size() == batch_size {
        return Ok(None);
    }
    let filter: Arc<dyn ExecutionPlan> = Arc::new(filter.with_batch_size(batch_size)?);
    let right = Arc::clone(right).replace_children(
        vec![filter],
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
    )?;
    Ok(Some(right))
}

/// All of `input`, read before its first batch is passed on.
///
/// Chained joins over one spine: each holds its feature side's partition until its output
/// ends, and the next one reads (and sorts) its own feature side once it has spine rows, so
/// both would be in memory together. Draining the upstream join first lets it finish and
/// free its feature rows before this join loads its own; the spine with the first view's
/// columns is usually far smaller than a feature table. Only without a memory limit: under
/// one, the joins stream through DataFusion's spilling sorts instead.
fn drained(
    input: SendableRecordBatchStream,
    reservation: MemoryReservation,
) -> SendableRecordBatchStream {
    let schema = input.schema();
    let batches = futures::stream::once(async move {
        let batches: Vec<RecordBatch> = input.try_collect().await?;
        reservation.try_grow(batches.iter().map(|b| b.get_array_memory_size()).sum())?;
        let released = batches.into_iter().map(move |batch| {
            reservation.shrink(batch.get_array_memory_size());
            Ok(batch)
        });
        Ok::<_, DataFusionError>(futures::stream::iter(released))
    })
    .try_flatten();
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
}

/// Left columns, then right columns made nullable (unmatched rows get NULLs).
fn join_schema(left: &Schema, right: &Schema) -> SchemaRef {
    let fields = left
        .fields()
        .iter()
        .cloned()
        .chain(
            right
                .fields()
                .iter()
                .map(|f| Arc::new(f.as_ref().clone().with_nullable(true))),
        )
        .collect::<Fields>();
    let mut metadata = left.metadata().clone();
    metadata.extend(right.metadata().clone());
    Arc::new(Schema::new_with_metadata(fields, metadata))
}

impl DisplayAs for AsOfJoinExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let mut attributes = self.options.attributes();
        if self.gathers_right_rows() {
            attributes.push(("late_materialization", None));
        }
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => {
                write!(f, "AsOfJoinExec: ")?;
                fmt_attributes(f, &attributes, false)
            }
            DisplayFormatType::TreeRender => fmt_attributes(f, &attributes, true),
        }
    }
}

impl ExecutionPlan for AsOfJoinExec {
    fn name(&self) -> &'static str {
        "AsOfJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        self.input_distribution_requirements().into_per_child()
    }

    /// Rows with equal keys must meet in one partition. Without keys every row can match
    /// every other, so the join runs in a single partition.
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

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        let options = &self.options;
        vec![
            Self::sort_requirement(options.left_keys().cloned(), &options.left_time),
            Self::sort_requirement(options.right_keys().cloned(), &options.right_time),
        ]
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
            Err(_) => return internal_err!("AsOfJoinExec has two children"),
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
        let left_partitions = self.left.output_partitioning().partition_count();
        let right_partitions = self.right.output_partitioning().partition_count();
        assert_eq_or_internal_err!(
            left_partitions,
            right_partitions,
            "AsOfJoinExec needs co-partitioned inputs"
        );
        let config = JoinStreamConfig {
            schema: Arc::clone(&self.schema),
            right_schema: self.right.schema(),
            batch_size: context.session_config().batch_size(),
            pool: Arc::clone(context.memory_pool()),
        };
        let reservation =
            MemoryConsumer::new(format!("AsOfJoin[{partition}]")).register(context.memory_pool());
        let right = match self.right.downcast_ref::<KeyTimeSortExec>() {
            Some(sort) => RightInput::Unmaterialized(
                sort.execute_unmaterialized(partition, Arc::clone(&context))?,
            ),
            None => RightInput::Batches(self.right.execute(partition, Arc::clone(&context))?),
        };
        let mut left = self.left.execute(partition, Arc::clone(&context))?;
        if self.left_is_chained_join()
            && matches!(context.memory_pool().memory_limit(), MemoryLimit::Infinite)
        {
            let reservation = MemoryConsumer::new(format!("AsOfJoin[{partition}] spine"))
                .register(context.memory_pool());
            left = drained(left, reservation);
        }
        AsOfJoinStream::try_new(
            self.options.clone(),
            config,
            left,
            right,
            reservation,
            AsOfJoinMetrics::new(&self.metrics, partition, self.options.domain),
            self.narrowing.clone(),
        )
        .map(|s| Box::pin(s) as SendableRecordBatchStream)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn cardinality_effect(&self) -> CardinalityEffect {
        match (&self.options.mode, self.options.inner) {
            (JoinMode::KeepTies, true) => CardinalityEffect::Unknown,
            (JoinMode::KeepTies, false) => CardinalityEffect::GreaterEqual,
            (JoinMode::DistinctSpine, _) | (_, true) => CardinalityEffect::LowerEqual,
            (JoinMode::Winner | JoinMode::LatestVisibleBy { .. }, false) => {
                CardinalityEffect::Equal
            }
        }
    }

    /// Filters from above are not pushed through (the join keeps them above). After
    /// optimization, the right side gets the spine's time bounds as a dynamic filter.
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

    /// A `SortExec` keeps a filter its input did not take as a `FilterExec` below itself,
    /// built with DataFusion's default batch size (8192 rows) instead of the session's; under
    /// a tight memory limit one such batch can exceed a sort's share of the pool, so the
    /// right side's one gets the session's batch size.
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
