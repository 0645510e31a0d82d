//! Running hindcast's plans across processes, on datafusion-distributed.
//!
//! The session that plans a query (the coordinator) plans it as it would alone; then
//! datafusion-distributed cuts the physical plan into stages at its repartitions (both
//! sides of an ASOF join are hash-partitioned by key, so each worker joins its share of the
//! keys) and sends each stage's tasks to the workers, the plans encoded with DataFusion's
//! protobuf and [`HindcastCodec`] for hindcast's operators. `docs/distributed.md` has how
//! to run a cluster.
//!
//! - [`codec`]: hindcast's operators as bytes;
//! - [`worker`]: the worker service (`hindcast worker`);
//! - [`channels`]: how the coordinator connects to the workers (timeouts, errors that
//!   name the worker);
//! - `bounds_first`: the spine's bounds computed before the stages start, so the workers'
//!   feature scans are narrowed as a single process's are.

mod bounds_first;
pub mod channels;
pub mod codec;
mod worker;

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::config::ConfigOptions;
use datafusion::common::display::{PlanType, StringifiedPlan};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, not_impl_err};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::explain::ExplainExec;
use datafusion::physical_plan::{ExecutionPlan, displayable};
use datafusion_distributed::{
    DistributedExt, DistributedMetricsFormat, SessionStateBuilderExt, WorkerResolver,
    display_plan_ascii, rewrite_distributed_plan_with_metrics,
};
use url::Url;

use bounds_first::{BoundsFirstExec, RememberSpines, SpinePlans, bounds_first};
pub use codec::{HindcastCodec, decode_plan, encode_plan};
pub use worker::serve_worker;

/// `builder`'s queries, once planned, run on the workers that `workers_of` reads from the
/// session's options when it names any, else as planned. Call after the builder has its
/// query planner (the distributed planner wraps it).
pub fn coordinate(
    mut builder: SessionStateBuilder,
    workers_of: fn(&ConfigOptions) -> Vec<Url>,
) -> SessionStateBuilder {
    let Some(local) = builder.query_planner().clone() else {
        return builder;
    };
    let scalar_subqueries = builder.config().as_ref().map(|c| {
        c.options()
            .optimizer
            .enable_physical_uncorrelated_scalar_subquery
    });
    let spines = Arc::new(SpinePlans::default());
    let workers = Arc::new(Workers::default());
    let mut builder = builder
        .with_query_planner(Arc::new(RememberSpines {
            inner: Arc::clone(&local),
            spines: Arc::clone(&spines),
        }))
        .with_distributed_worker_resolver(Arc::clone(&workers) as Arc<dyn WorkerResolver>)
        .with_distributed_channel_resolver(channels::WorkerChannels::default())
        .with_distributed_user_codec_arc(Arc::new(HindcastCodec))
        .with_distributed_planner();
    // datafusion-distributed turns this off for every session it is installed in; here it
    // follows the session's workers instead ([`follow_workers`]), so a session without
    // workers plans exactly as DataFusion does.
    if let (Some(value), Some(config)) = (scalar_subqueries, builder.config().as_mut()) {
        config
            .options_mut()
            .optimizer
            .enable_physical_uncorrelated_scalar_subquery = value;
    }
    match builder.query_planner().take() {
        Some(distributed) => builder.with_query_planner(Arc::new(Coordinator {
            local,
            distributed,
            spines,
            workers,
            workers_of,
        })),
        None => builder,
    }
}

/// The optimizer settings a session needs once its workers change (`has_workers`): a
/// distributed plan cannot carry DataFusion's physical uncorrelated scalar subqueries (a
/// subquery's result is shared by operators that may land in different stages), so with
/// workers they are planned as joins, as datafusion-distributed sets up; without, as
/// DataFusion's default.
pub fn follow_workers(options: &mut ConfigOptions, has_workers: bool) {
    options
        .optimizer
        .enable_physical_uncorrelated_scalar_subquery = !has_workers;
}

/// The plans to read an executed plan's metrics from: `executed` itself (whose
/// `DistributedExec`s a reader skips: the coordinator's copies of their operators never
/// ran), and the plan under each `DistributedExec` with the figures its workers sent back.
/// Metrics of hindcast's own kind (custom metrics) do not travel; counts do.
pub async fn with_worker_metrics(
    executed: &Arc<dyn ExecutionPlan>,
) -> Result<Vec<Arc<dyn ExecutionPlan>>> {
    let mut distributed = vec![];
    executed.apply(|node| {
        if node.name() == "DistributedExec" {
            distributed.push(Arc::clone(node));
            return Ok(TreeNodeRecursion::Jump);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let mut plans = vec![Arc::clone(executed)];
    for part in distributed {
        let part =
            rewrite_distributed_plan_with_metrics(part, DistributedMetricsFormat::Aggregated)
                .await?;
        plans.extend(part.children().into_iter().cloned());
    }
    Ok(plans)
}

/// Plans through datafusion-distributed when the session has workers, then has the spines'
/// bounds computed before the stages start ([`bounds_first`]). And `EXPLAIN` with the plan
/// that runs: DataFusion plans an `EXPLAIN`'s query itself, without the session's query
/// planner, so this plans the query again and puts its stages in place of the physical
/// plan.
#[derive(Debug)]
struct Coordinator {
    local: Arc<dyn QueryPlanner + Send + Sync>,
    distributed: Arc<dyn QueryPlanner + Send + Sync>,
    spines: Arc<SpinePlans>,
    workers: Arc<Workers>,
    workers_of: fn(&ConfigOptions) -> Vec<Url>,
}

#[async_trait]
impl QueryPlanner for Coordinator {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let workers = (self.workers_of)(session.config_options());
        if workers.is_empty() {
            return self.local.create_physical_plan(logical_plan, session).await;
        }
        self.workers.set(workers);
        let plan = self
            .distributed
            .create_physical_plan(logical_plan, session)
            .await?;
        refuse_delta_scans(&plan)?;
        let (LogicalPlan::Explain(explain), Some(exec)) =
            (logical_plan, plan.downcast_ref::<ExplainExec>())
        else {
            return Ok(bounds_first(plan, &self.spines));
        };
        let query = self
            .distributed
            .create_physical_plan(&explain.plan, session)
            .await?;
        let query = bounds_first(query, &self.spines);
        let stages = Arc::new(match query.downcast_ref::<BoundsFirstExec>() {
            Some(first) => format!(
                "{}\n{}",
                displayable(query.as_ref()).one_line(),
                display_plan_ascii(first.input().as_ref(), false)
            ),
            None => display_plan_ascii(query.as_ref(), false),
        });
        let plans = exec
            .stringified_plans()
            .iter()
            .map(|p| match p.plan_type {
                PlanType::FinalPhysicalPlan => StringifiedPlan {
                    plan_type: PlanType::FinalPhysicalPlan,
                    plan: Arc::clone(&stages),
                },
                _ => p.clone(),
            })
            .collect();
        Ok(Arc::new(ExplainExec::new(
            exec.schema(),
            plans,
            exec.verbose(),
        )))
    }
}

/// deltalake-core 1.1 has no codec for its scan (`DeltaScanExec`), which reads the Delta
/// snapshots that plain Parquet scans cannot (`delta::scan`), so such a snapshot cannot
/// travel to a worker; found here, the query fails at once with what to do, instead of the
/// coordinator failing to encode its stage while the workers wait for it.
fn refuse_delta_scans(plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
    let mut nodes = vec![Arc::clone(plan)];
    while let Some(node) = nodes.pop() {
        if node.name() == "DeltaScanExec" {
            return not_impl_err!(
                "a Delta table with deletion vectors, column mapping or another reader feature cannot be read by workers yet: run this query in one process (SET hindcast.workers = '')"
            );
        }
        nodes.extend(node.children().into_iter().cloned());
    }
    Ok(())
}

/// The session's workers as of its latest query's planning. datafusion-distributed asks
/// its resolver (which cannot see the session's options) when it plans and again when it
/// sends tasks, so the coordinator leaves the session's `hindcast.workers` here first. A
/// query planned while another of the same session is starting with a different list can
/// send that one's tasks to its workers: the answer is the same, the machines are not.
#[derive(Debug, Default)]
struct Workers(RwLock<Vec<Url>>);

impl Workers {
    fn set(&self, urls: Vec<Url>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = urls;
    }
}

impl WorkerResolver for Workers {
    fn get_urls(&self) -> Result<Vec<Url>> {
        Ok(self.0.read().unwrap_or_else(|e| e.into_inner()).clone())
    }
}
