//! Turns hindcast's logical nodes into physical operators.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{Result, internal_err};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_expr::PhysicalExprRef;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};

use super::AsOfJoinExec;
use crate::logical::AsOfJoin;

/// The one extension planner: it downcasts each hindcast node to its operator.
#[derive(Debug, Default)]
pub struct HindcastExtensionPlanner;

#[async_trait]
impl ExtensionPlanner for HindcastExtensionPlanner {
    async fn plan_extension(
        &self,
        planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(join) = node.as_any().downcast_ref::<AsOfJoin>() else {
            return Ok(None);
        };
        let ([left_plan, right_plan], [left, right]) = (logical_inputs, physical_inputs) else {
            return internal_err!("AsOfJoin has two inputs");
        };
        let left_expr = |e: &Expr| -> Result<PhysicalExprRef> {
            planner.create_physical_expr(e, left_plan.schema(), session, planning_ctx)
        };
        let right_expr = |e: &Expr| -> Result<PhysicalExprRef> {
            planner.create_physical_expr(e, right_plan.schema(), session, planning_ctx)
        };
        let on = join
            .on
            .iter()
            .map(|(l, r)| Ok((left_expr(l)?, right_expr(r)?)))
            .collect::<Result<Vec<_>>>()?;
        let exec = AsOfJoinExec::try_new(
            Arc::clone(left),
            Arc::clone(right),
            on,
            left_expr(&join.left_time)?,
            right_expr(&join.right_time)?,
            join.op,
            join.domain,
            join.ttl,
            join.tie_breaker.as_ref().map(right_expr).transpose()?,
        )?;
        Ok(Some(Arc::new(exec)))
    }
}
