//! Compute only the aggregates a query reads: a projection over a [`WindowAggregateJoin`]
//! (or over filters over one) that uses some of its aggregates gets a join computing just
//! those, and one that uses none gets the spine itself (the events are then not read at
//! all).
//!
//! A join written `FOR SYSTEM_TIME AS OF` computes every aggregate of its view, and
//! DataFusion's projection pushdown cannot narrow a node's own outputs. The tie order is
//! kept whole, so the surviving aggregates add their events in the same order as before.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::Transformed;
use datafusion::logical_expr::{Expr, Extension, Filter, LogicalPlan, Projection};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use super::WindowAggregateJoin;

#[derive(Debug, Default)]
pub struct PruneWindowAggregates;

impl OptimizerRule for PruneWindowAggregates {
    fn name(&self) -> &str {
        "prune_window_aggregates"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Projection(projection) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let mut used: Vec<_> = projection
            .expr
            .iter()
            .flat_map(Expr::column_refs)
            .cloned()
            .collect();
        // Filters between the projection and the join read columns too.
        let mut filters = vec![];
        let mut below = projection.input.as_ref();
        while let LogicalPlan::Filter(filter) = below {
            used.extend(filter.predicate.column_refs().into_iter().cloned());
            filters.push(filter.predicate.clone());
            below = filter.input.as_ref();
        }
        let LogicalPlan::Extension(Extension { node }) = below else {
            return Ok(Transformed::no(plan));
        };
        let Some(join) = node.as_any().downcast_ref::<WindowAggregateJoin>() else {
            return Ok(Transformed::no(plan));
        };
        let left_len = join.left.schema().fields().len();
        let kept: Vec<_> = join
            .options
            .aggregates
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                let (qualifier, field) = join.schema.qualified_field(left_len + i);
                used.iter().any(|c| {
                    c.name == *field.name()
                        && c.relation.as_ref().is_none_or(|r| Some(r) == qualifier)
                })
            })
            .map(|(_, a)| a.clone())
            .collect();
        if kept.len() == join.options.aggregates.len() {
            return Ok(Transformed::no(plan));
        }
        let mut input = if kept.is_empty() {
            Arc::clone(&join.left)
        } else {
            let mut options = join.options.clone();
            options.aggregates = kept;
            let pruned = WindowAggregateJoin::try_new(
                Arc::clone(&join.left),
                Arc::clone(&join.right),
                options,
            )?;
            Arc::new(pruned.into_plan())
        };
        for predicate in filters.into_iter().rev() {
            input = Arc::new(LogicalPlan::Filter(Filter::try_new(predicate, input)?));
        }
        let projection = Projection::try_new(projection.expr.clone(), input)?;
        Ok(Transformed::yes(LogicalPlan::Projection(projection)))
    }
}
