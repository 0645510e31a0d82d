//! The spine's bounds, computed before the stages start.
//!
//! Alone, a join learns the spine's time range and key set while it reads the spine, and
//! narrows its feature scans through dynamic filters (`physical::spine_bounds`).
//! Distributed, the spine is read in one stage and the feature scans run in others, and a
//! dynamic filter does not cross stages: each stage's plan is encoded once, when the query
//! starts. So the coordinator first reads the spine itself, through the single-node plan
//! of each `SpineBoundsExec`, sets the joins' filters to the spine's final bounds, and only
//! then starts the stages: their scans are encoded with the filters set, literal ranges and
//! key lists the workers prune files, row groups and hive partitions with. Feast's Spark
//! store does the same with the entity rows' time range. The cost is reading the spine
//! twice, which is usually far smaller than the feature tables.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExprRef;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use datafusion_distributed::DistributedExec;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use crate::physical::join_spine;
use crate::physical::spine_bounds::{Narrowing, SpineBoundsExec};

/// The single-node `SpineBoundsExec`s of plans being distributed, by [`SpineBounds`] id,
/// from [`RememberSpines`] (before distribution) to [`bounds_first`] (after).
///
/// [`SpineBounds`]: crate::physical::spine_bounds::SpineBounds
#[derive(Debug, Default)]
pub struct SpinePlans(Mutex<HashMap<u64, Arc<dyn ExecutionPlan>>>);

/// The planner the distributed planner calls: plans as hindcast does alone, and remembers
/// each spine's plan before the distributed planner splits its scan into tasks.
#[derive(Debug)]
pub struct RememberSpines {
    pub inner: Arc<dyn QueryPlanner + Send + Sync>,
    pub spines: Arc<SpinePlans>,
}

#[async_trait]
impl QueryPlanner for RememberSpines {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self
            .inner
            .create_physical_plan(logical_plan, session)
            .await?;
        let mut spines = self.spines.0.lock().unwrap_or_else(|e| e.into_inner());
        visit(&plan, &mut |node| {
            if let Some(exec) = node.downcast_ref::<SpineBoundsExec>() {
                spines.insert(exec.bounds().id(), Arc::clone(node));
            }
        });
        Ok(plan)
    }
}

/// `plan`, distributed, with its joins' bounds computed first (when any join has them).
pub fn bounds_first(plan: Arc<dyn ExecutionPlan>, spines: &SpinePlans) -> Arc<dyn ExecutionPlan> {
    let mut distributed = false;
    let mut narrowings: Vec<Arc<Narrowing>> = vec![];
    visit(&plan, &mut |node| {
        distributed |= node.downcast_ref::<DistributedExec>().is_some();
        if let Some((_, Some(narrowing))) = join_spine(node) {
            narrowings.push(Arc::clone(narrowing));
        }
    });
    let mut remembered = spines.0.lock().unwrap_or_else(|e| e.into_inner());
    let mut spine_plans = vec![];
    for narrowing in &narrowings {
        if let Some(spine) = remembered.remove(&narrowing.bounds.id()) {
            spine_plans.push(spine);
        }
    }
    if !distributed || spine_plans.is_empty() {
        // Not distributed: the joins narrow their scans themselves.
        return plan;
    }
    Arc::new(BoundsFirstExec {
        cache: Arc::clone(plan.properties()),
        input: plan,
        spines: spine_plans,
        narrowings,
        ready: Arc::new(OnceCell::new()),
    })
}

/// Every node of `plan`, stages included.
fn visit(plan: &Arc<dyn ExecutionPlan>, f: &mut impl FnMut(&Arc<dyn ExecutionPlan>)) {
    f(plan);
    for child in plan.children() {
        visit(child, f);
    }
}

/// Runs its spines to their end, sets its joins' filters, then runs its input.
#[derive(Debug)]
pub struct BoundsFirstExec {
    input: Arc<dyn ExecutionPlan>,
    spines: Vec<Arc<dyn ExecutionPlan>>,
    narrowings: Vec<Arc<Narrowing>>,
    /// Done once, by the first partition executed.
    ready: Arc<OnceCell<std::result::Result<(), Arc<DataFusionError>>>>,
    cache: Arc<PlanProperties>,
}

impl BoundsFirstExec {
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }
}

async fn compute_bounds(
    spines: &[Arc<dyn ExecutionPlan>],
    narrowings: &[Arc<Narrowing>],
    context: Arc<TaskContext>,
) -> Result<()> {
    for spine in spines {
        let all: Arc<dyn ExecutionPlan> = match spine.output_partitioning().partition_count() {
            1 => Arc::clone(spine),
            _ => Arc::new(CoalescePartitionsExec::new(Arc::clone(spine))),
        };
        let mut rows = all.execute(0, Arc::clone(&context))?;
        while let Some(batch) = rows.next().await {
            batch?;
        }
    }
    for narrowing in narrowings {
        narrowing.publish_if_ready()?;
    }
    Ok(())
}

impl DisplayAs for BoundsFirstExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "BoundsFirstExec: spines={}, joins={}",
            self.spines.len(),
            self.narrowings.len()
        )
    }
}

impl ExecutionPlan for BoundsFirstExec {
    fn name(&self) -> &'static str {
        "BoundsFirstExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&PhysicalExprRef) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children.swap_remove(0);
        Ok(Arc::new(Self {
            cache: Arc::clone(input.properties()),
            input,
            spines: self.spines.clone(),
            narrowings: self.narrowings.clone(),
            ready: Arc::new(OnceCell::new()),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let (input, spines, narrowings, ready) = (
            Arc::clone(&self.input),
            self.spines.clone(),
            self.narrowings.clone(),
            Arc::clone(&self.ready),
        );
        let schema = input.schema();
        let stream = futures::stream::once(async move {
            ready
                .get_or_init(|| async {
                    compute_bounds(&spines, &narrowings, Arc::clone(&context))
                        .await
                        .map_err(Arc::new)
                })
                .await
                .clone()
                .map_err(DataFusionError::Shared)?;
            input.execute(partition, context)
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
