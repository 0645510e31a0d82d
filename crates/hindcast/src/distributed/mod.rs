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
//!   name the worker).

pub mod channels;
pub mod codec;
mod worker;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::Result;
use datafusion::common::display::{PlanType, StringifiedPlan};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::explain::ExplainExec;
use datafusion_distributed::{
    DistributedExt, SessionStateBuilderExt, WorkerResolver, display_plan_ascii,
};
use url::Url;

pub use codec::{HindcastCodec, decode_plan, encode_plan};
pub use worker::serve_worker;

/// `builder`'s queries, once planned, run on `workers`. Call after the builder has its
/// query planner (the distributed planner wraps it).
pub fn coordinate(builder: SessionStateBuilder, workers: Vec<Url>) -> SessionStateBuilder {
    let mut builder = builder
        .with_distributed_worker_resolver(Workers(workers))
        .with_distributed_channel_resolver(channels::WorkerChannels::default())
        .with_distributed_user_codec_arc(Arc::new(HindcastCodec))
        .with_distributed_planner();
    match builder.query_planner().take() {
        Some(distributed) => builder.with_query_planner(Arc::new(ExplainStages { distributed })),
        None => builder,
    }
}

/// `EXPLAIN` with the plan that runs: its stages and their tasks. DataFusion plans an
/// `EXPLAIN`'s query itself, without the session's query planner, so the distributed
/// planner never sees it; this plans the query again through it and puts its stages in
/// place of the physical plan.
#[derive(Debug)]
struct ExplainStages {
    distributed: Arc<dyn QueryPlanner + Send + Sync>,
}

#[async_trait]
impl QueryPlanner for ExplainStages {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self
            .distributed
            .create_physical_plan(logical_plan, session)
            .await?;
        let (LogicalPlan::Explain(explain), Some(exec)) =
            (logical_plan, plan.downcast_ref::<ExplainExec>())
        else {
            return Ok(plan);
        };
        let query = self
            .distributed
            .create_physical_plan(&explain.plan, session)
            .await?;
        let stages = Arc::new(display_plan_ascii(query.as_ref(), false));
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

/// A fixed list of workers.
struct Workers(Vec<Url>);

impl WorkerResolver for Workers {
    fn get_urls(&self) -> Result<Vec<Url>> {
        Ok(self.0.clone())
    }
}
