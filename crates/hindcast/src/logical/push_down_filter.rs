//! Push predicates that read only the spine (left input) below an [`AsOfJoin`] or a
//! [`WindowAggregateJoin`].
//!
//! Removing a left row removes exactly its output row and never changes which right row
//! another left row gets (or what its windows hold), so left-only predicates are safe to
//! push. Nothing is pushed into
//! the right input: dropping a right row can hand the win to an older row, which changes
//! the answer (`WHERE f.x > 0` after the join is not `f.x > 0` before it).

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::Transformed;
use datafusion::logical_expr::utils::{conjunction, split_conjunction_owned};
use datafusion::logical_expr::{Expr, Extension, Filter, LogicalPlan, Projection};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use super::{AsOfJoin, WindowAggregateJoin};

#[derive(Debug, Default)]
pub struct PushDownAsOfFilter;

impl OptimizerRule for PushDownAsOfFilter {
    fn name(&self) -> &str {
        "push_down_asof_filter"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Filter(filter) = plan else {
            return Ok(Transformed::no(plan));
        };
        // `optimize_projections` can leave a column-selecting projection between the
        // filter and the join: move the filter below it first.
        if let LogicalPlan::Projection(projection) = filter.input.as_ref()
            && spine_of(&projection.input).is_some()
            && filter.predicate.column_refs().iter().all(|c| {
                projection
                    .expr
                    .iter()
                    .any(|e| matches!(e, Expr::Column(p) if p == *c))
            })
        {
            let below = Filter::try_new(filter.predicate.clone(), Arc::clone(&projection.input))?;
            let pushed = self.rewrite(LogicalPlan::Filter(below), _config)?.data;
            let projection = Projection::try_new(projection.expr.clone(), Arc::new(pushed))?;
            return Ok(Transformed::yes(LogicalPlan::Projection(projection)));
        }
        let Some(spine) = spine_of(&filter.input) else {
            return Ok(Transformed::no(LogicalPlan::Filter(filter)));
        };
        let left_schema = spine.schema();
        let (push, keep): (Vec<_>, Vec<_>) = split_conjunction_owned(filter.predicate.clone())
            .into_iter()
            .partition(|e| {
                !e.is_volatile() && e.column_refs().iter().all(|c| left_schema.has_column(c))
            });
        let Some(pushed) = conjunction(push) else {
            return Ok(Transformed::no(LogicalPlan::Filter(filter)));
        };
        let left = LogicalPlan::Filter(Filter::try_new(pushed, Arc::clone(spine))?);
        let Some(new_join) = with_spine(&filter.input, left) else {
            return Ok(Transformed::no(LogicalPlan::Filter(filter)));
        };
        let plan = match conjunction(keep) {
            Some(rest) => LogicalPlan::Filter(Filter::try_new(rest, Arc::new(new_join))?),
            None => new_join,
        };
        Ok(Transformed::yes(plan))
    }
}

/// The spine (left input) of a point-in-time join node.
fn spine_of(plan: &LogicalPlan) -> Option<&Arc<LogicalPlan>> {
    let LogicalPlan::Extension(Extension { node }) = plan else {
        return None;
    };
    if let Some(join) = node.as_any().downcast_ref::<AsOfJoin>() {
        return Some(&join.left);
    }
    let join = node.as_any().downcast_ref::<WindowAggregateJoin>()?;
    Some(&join.left)
}

/// The join node `plan` (one [`spine_of`] accepts) over `left`, a filter of its spine:
/// the same schema.
fn with_spine(plan: &LogicalPlan, left: LogicalPlan) -> Option<LogicalPlan> {
    let LogicalPlan::Extension(Extension { node }) = plan else {
        return None;
    };
    let left = Arc::new(left);
    if let Some(join) = node.as_any().downcast_ref::<AsOfJoin>() {
        let join = AsOfJoin {
            left,
            ..join.clone()
        };
        return Some(join.into_plan());
    }
    let join = node.as_any().downcast_ref::<WindowAggregateJoin>()?;
    let join = WindowAggregateJoin {
        left,
        ..join.clone()
    };
    Some(join.into_plan())
}
