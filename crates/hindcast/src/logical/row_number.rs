//! Compile the classic point-in-time SQL to the [`AsOfJoin`] node.
//!
//! ```sql
//! WITH ranked AS (
//!   SELECT e.*, f.amount,
//!          ROW_NUMBER() OVER (PARTITION BY e.user_id, e.event_timestamp
//!                             ORDER BY f.ts DESC [, f.created DESC NULLS LAST]) AS rn
//!   FROM events e LEFT JOIN features f
//!     ON e.user_id = f.user_id AND f.ts <= e.event_timestamp
//!    [AND f.ts >= e.event_timestamp - INTERVAL '90 days'])
//! SELECT * FROM ranked WHERE rn = 1     -- or rn <= 1, rn < 2, or QUALIFY ... = 1
//! ```
//!
//! DataFusion runs this as a join that pairs every event with every older feature row of its
//! user, then sorts that for the window. The rule replaces `Filter(rn = 1)` over
//! `Window(ROW_NUMBER) over Join` by the same projections over an ASOF join, with `rn` a
//! constant 1. What the original keeps is kept exactly:
//!
//! - one row per window partition: when the `PARTITION BY` does not identify a spine row
//!   (duplicate spine rows), only one row per partition survives, as in the original;
//! - an `INNER` join drops spine rows without a match;
//! - among feature rows tied on time the original keeps an arbitrary one, and the ASOF
//!   join's deterministic pick is one of them;
//! - with `RANK()` or `DENSE_RANK()` instead of `ROW_NUMBER()`, rank 1 is every row tied at
//!   the top of the order: each spine row with each feature row tied on time (and
//!   tie-breaker), which the ASOF join emits with `keep_ties`.
//!
//! Anything else is left alone: another window function or frame, another sort direction,
//! a `NULLS FIRST` tie-breaker on a nullable column (NULL would win there, and loses in the
//! ASOF join), a join predicate that is not a key equality or a time bound, a filter
//! between the join and the window. The session switches the rule off with
//! `SET hindcast.rewrite_row_number = false`.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, JoinType, NullEquality, Result, ScalarValue};
use datafusion::logical_expr::expr::{WindowFunction, WindowFunctionParams};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{
    BinaryExpr, Expr, ExprFunctionExt, ExprSchemable, Filter, Join, LogicalPlan,
    LogicalPlanBuilder, Operator, Projection, Window, WindowFrameBound, WindowFunctionDefinition,
    lit,
};
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

use super::{AsOfJoin, JoinMode, Term, TimeCondition, only_refs};

#[derive(Debug)]
pub struct RewriteRowNumberAsOf {
    /// Whether a query's configuration asks for the rewrite: the switch is a session
    /// option, which this layer does not know.
    enabled: fn(&ConfigOptions) -> bool,
}

impl RewriteRowNumberAsOf {
    pub fn new(enabled: fn(&ConfigOptions) -> bool) -> Self {
        Self { enabled }
    }
}

impl OptimizerRule for RewriteRowNumberAsOf {
    fn name(&self) -> &str {
        "rewrite_row_number_as_asof"
    }

    fn apply_order(&self) -> Option<datafusion::optimizer::optimizer::ApplyOrder> {
        Some(datafusion::optimizer::optimizer::ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if !(self.enabled)(&config.options()) {
            return Ok(Transformed::no(plan));
        }
        let LogicalPlan::Filter(filter) = &plan else {
            return Ok(Transformed::no(plan));
        };
        match rewrite_filter(filter)? {
            Some(rewritten) => Ok(Transformed::yes(rewritten)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

fn rewrite_filter(filter: &Filter) -> Result<Option<LogicalPlan>> {
    let Some(mut column) = first_row_column(&filter.predicate) else {
        return Ok(None);
    };
    // Follow the ranking column down to the window that computes it. The aliases and
    // projections passed on the way are rebuilt unchanged above the join.
    let mut between: Vec<&LogicalPlan> = vec![];
    let mut plan = filter.input.as_ref();
    let window = loop {
        let Ok(index) = plan.schema().index_of_column(&column) else {
            return Ok(None);
        };
        match plan {
            LogicalPlan::SubqueryAlias(alias) => {
                column = Column::from(alias.input.schema().qualified_field(index));
                between.push(plan);
                plan = alias.input.as_ref();
            }
            LogicalPlan::Projection(projection) => {
                let Expr::Column(inner) = projection.expr[index].clone().unalias_nested().data
                else {
                    return Ok(None);
                };
                column = inner;
                between.push(plan);
                plan = projection.input.as_ref();
            }
            LogicalPlan::Window(window)
                if window.window_expr.len() == 1
                    && index == window.input.schema().fields().len() =>
            {
                break window;
            }
            _ => return Ok(None),
        }
    };
    let Some(asof) = asof_for(window)? else {
        return Ok(None);
    };
    // The window's schema, with the ranking a constant 1 (what the filter let through).
    let (qualifier, field) = window
        .schema
        .qualified_field(window.schema.fields().len() - 1);
    let mut exprs: Vec<Expr> = window
        .input
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    exprs.push(lit(ScalarValue::UInt64(Some(1))).alias_qualified(qualifier.cloned(), field.name()));
    let mut rebuilt = LogicalPlan::Projection(Projection::try_new(exprs, Arc::new(asof))?);
    for node in between.into_iter().rev() {
        rebuilt = node.with_new_exprs(node.expressions(), vec![rebuilt])?;
    }
    Ok(Some(rebuilt))
}

/// `c = 1`, `c <= 1`, `c < 2` (either way round): the column `c`.
fn first_row_column(predicate: &Expr) -> Option<Column> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = predicate else {
        return None;
    };
    let (column, op, value) = match (column_of(left), column_of(right)) {
        (Some(c), None) => (c, *op, int_literal(right)?),
        (None, Some(c)) => (c, op.swap()?, int_literal(left)?),
        _ => return None,
    };
    match (op, value) {
        (Operator::Eq | Operator::LtEq, 1) | (Operator::Lt, 2) => Some(column.clone()),
        _ => None,
    }
}

/// A column, possibly cast (type coercion casts `rn` to compare it with the literal).
fn column_of(expr: &Expr) -> Option<&Column> {
    match expr {
        Expr::Column(c) => Some(c),
        Expr::Cast(cast) => column_of(&cast.expr),
        _ => None,
    }
}

fn int_literal(expr: &Expr) -> Option<i64> {
    match expr {
        Expr::Literal(value, _) => match value.cast_to(&DataType::Int64) {
            Ok(ScalarValue::Int64(Some(v))) => Some(v),
            _ => None,
        },
        Expr::Cast(cast) => int_literal(&cast.expr),
        _ => None,
    }
}

/// The ASOF join (plus the deduplication and matched-only filter the original implies) that
/// `window` over its join computes for rank 1, or `None` if the pattern does not match.
fn asof_for(window: &Window) -> Result<Option<LogicalPlan>> {
    let Expr::WindowFunction(function) = window.window_expr[0].clone().unalias_nested().data else {
        return Ok(None);
    };
    let WindowFunction { fun, params } = *function;
    let WindowFunctionParams {
        args,
        partition_by,
        order_by,
        window_frame,
        filter,
        null_treatment,
        distinct,
    } = params;
    // RANK and DENSE_RANK keep every row tied at the top; ROW_NUMBER one of them.
    let ranking = match &fun {
        WindowFunctionDefinition::WindowUDF(udf) => udf.name().to_string(),
        _ => return Ok(None),
    };
    let keeps_ties = match ranking.as_str() {
        "row_number" => false,
        "rank" | "dense_rank" => true,
        _ => return Ok(None),
    };
    let default_frame = matches!(window_frame.start_bound, WindowFrameBound::Preceding(ref v) if v.is_null())
        && matches!(window_frame.end_bound, WindowFrameBound::CurrentRow);
    if !args.is_empty()
        || filter.is_some()
        || null_treatment.is_some()
        || distinct
        || !default_frame
    {
        return Ok(None);
    }
    // DataFusion may have put a column-selecting projection between the join and the window.
    let (join, selection) = match window.input.as_ref() {
        LogicalPlan::Join(join) => (join, None),
        LogicalPlan::Projection(p) if p.expr.iter().all(|e| matches!(e, Expr::Column(_))) => {
            let LogicalPlan::Join(join) = p.input.as_ref() else {
                return Ok(None);
            };
            (join, Some(p.expr.clone()))
        }
        _ => return Ok(None),
    };
    let Some(shape) = JoinShape::of(join)? else {
        return Ok(None);
    };
    let (left_schema, right_schema) = (join.left.schema(), join.right.schema());

    // ORDER BY the right time descending, then optionally a tie-breaker descending.
    let mut sorts = order_by.iter();
    let Some(first) = sorts.next() else {
        return Ok(None);
    };
    // Latest first for a backward join, earliest first for a forward one.
    if first.asc == shape.condition.op.is_backward() || first.expr != shape.condition.right_time {
        return Ok(None);
    }
    let tie_breaker = match sorts.next() {
        None => None,
        Some(sort) => {
            let nullable = sort.expr.nullable(right_schema.as_ref()).unwrap_or(true);
            if sort.asc || (sort.nulls_first && nullable) || !only_refs(&sort.expr, right_schema) {
                return Ok(None);
            }
            Some(sort.expr.clone())
        }
    };
    if sorts.next().is_some() {
        return Ok(None);
    }

    // PARTITION BY spine columns only, covering the keys and the time.
    if !partition_by.iter().all(|e| only_refs(e, left_schema))
        || !shape
            .on
            .iter()
            .map(|(l, _)| l)
            .chain(std::iter::once(&shape.condition.left_time))
            .all(|e| partition_by.contains(e))
    {
        return Ok(None);
    }

    // Partitions of exactly (keys, time) come out of the join's sorted spine as runs of
    // adjacent rows, which the operator collapses itself; any other partitioning is
    // deduplicated by a window after the join.
    let exact_partition = !keeps_ties
        && partition_by.len() == shape.on.len() + 1
        && partition_by
            .iter()
            .all(|e| *e == shape.condition.left_time || shape.on.iter().any(|(l, _)| l == e));
    let node = AsOfJoin::try_new(
        Arc::clone(&join.left),
        Arc::clone(&join.right),
        shape.on,
        shape.condition,
        tie_breaker,
    );
    // A pattern whose types the ASOF join cannot compare stays as written.
    let Ok(mut node) = node else {
        return Ok(None);
    };
    if keeps_ties {
        // Every spine row keeps each tied top row: no deduplication at all.
        node = node.with_mode(JoinMode::KeepTies)?;
    } else if exact_partition {
        node = node.with_mode(JoinMode::DistinctSpine)?;
    }
    if join.join_type == JoinType::Inner {
        node = node.inner();
    }
    let mut plan = LogicalPlanBuilder::from(node.into_plan());
    if let Some(columns) = selection {
        plan = plan.project(columns)?;
    }
    let plan = plan.build()?;
    if exact_partition || keeps_ties {
        return Ok(Some(plan));
    }
    Ok(Some(one_row_per(plan, partition_by)?))
}

/// Keep one row of `plan` per distinct value of `partition_by`, as `ROW_NUMBER() = 1` over
/// those partitions does. All rows of a partition carry the same spine keys and time, so the
/// same feature row: which one is kept does not matter.
fn one_row_per(plan: LogicalPlan, partition_by: Vec<Expr>) -> Result<LogicalPlan> {
    let columns: Vec<Expr> = plan
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    let row_number = Expr::from(WindowFunction::new(
        datafusion::functions_window::row_number::row_number_udwf(),
        vec![],
    ))
    .partition_by(partition_by)
    .build()?
    .alias("__hc_partition_row");
    LogicalPlanBuilder::from(plan)
        .window(vec![row_number.clone()])?
        .filter(Expr::Column(Column::from_name("__hc_partition_row")).eq(lit(1u64)))?
        .project(columns)?
        .build()
}

/// A join condition in the shape of a point-in-time join: key equalities and one time
/// comparison, backward (`f.ts <= l.ts`, ranked latest first) or forward (`f.ts >= l.ts`,
/// ranked earliest first), with at most one inclusive bound on the distance.
struct JoinShape {
    on: Vec<(Expr, Expr)>,
    condition: TimeCondition,
}

impl JoinShape {
    fn of(join: &Join) -> Result<Option<Self>> {
        if !matches!(join.join_type, JoinType::Left | JoinType::Inner)
            || join.null_equality != NullEquality::NullEqualsNothing
        {
            return Ok(None);
        }
        let (left, right) = (join.left.schema(), join.right.schema());
        let mut on: Vec<(Expr, Expr)> = join.on.clone();
        let mut comparison = None;
        let mut bound = None;
        let conjuncts = join
            .filter
            .as_ref()
            .map(split_conjunction)
            .unwrap_or_default();
        for conjunct in conjuncts {
            match Term::classify(conjunct, left, right) {
                Term::KeyEquality(l, r) => on.push((l, r)),
                Term::Compare(c) => {
                    if comparison.replace(c).is_some() {
                        return Ok(None);
                    }
                }
                // DataFusion compares a timestamp difference (a duration) with an interval
                // field by field, so `ts - ts <= INTERVAL '90 days'` holds for 162 days: not
                // a TTL, left alone. A strict bound is no TTL either.
                Term::Bound(b)
                    if b.strict
                        || (b.difference
                            && matches!(b.amount.data_type(), DataType::Interval(_)))
                        || b.amount.is_null() =>
                {
                    return Ok(None);
                }
                Term::Bound(b) => {
                    if bound.replace(b).is_some() {
                        return Ok(None);
                    }
                }
                Term::Other => return Ok(None),
            }
        }
        let Some(mut condition) = comparison else {
            return Ok(None);
        };
        // The bound must be on the same two times, and on the side the join looks to.
        match bound {
            None => {}
            Some(b) if condition.is_bounded_by(&b) => condition.ttl = Some(b.amount),
            Some(_) => return Ok(None),
        }
        if on
            .iter()
            .any(|(l, r)| !only_refs(l, left) || !only_refs(r, right))
        {
            return Ok(None);
        }
        Ok(Some(Self { on, condition }))
    }
}
