//! Planning `l ASOF JOIN r MATCH_CONDITION (...) ON ... | USING (...)` into [`AsOfJoin`].
//!
//! Grammar accepted in `MATCH_CONDITION`, as AND-ed terms in any order:
//! - exactly one comparison `<left time> {>=|>|<=|<} <right time>` (either operand order);
//! - optionally one inclusive TTL bound on the distance, in any of the usual spellings:
//!   `l.ts - r.ts <= c`, `r.ts >= l.ts - c`, `l.ts <= r.ts + c` (mirrored for forward joins);
//! - optionally `latest_by(r.created)`: among right rows tied on time, the larger value wins.

use std::sync::Arc;

use datafusion::common::{Column, DFSchema, Result, plan_datafusion_err, plan_err};
use datafusion::logical_expr::planner::RelationPlannerContext;
use datafusion::logical_expr::utils::split_conjunction_owned;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, LogicalPlanBuilder, Operator};
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr as SQLExpr, FunctionArg, FunctionArgExpr, FunctionArguments,
    JoinConstraint,
};

use crate::logical::{AsOfJoin, MatchOp, Term, TimeCondition};

pub(super) fn plan_asof_join(
    left: LogicalPlan,
    right: LogicalPlan,
    match_condition: SQLExpr,
    constraint: JoinConstraint,
    context: &mut dyn RelationPlannerContext,
) -> Result<LogicalPlan> {
    let join_schema = left.schema().join(right.schema())?;

    let mut tie_breaker = None;
    let mut conditions = vec![];
    for term in split_sql_and(match_condition) {
        if let Some(arg) = latest_by_argument(&term)? {
            if tie_breaker.is_some() {
                return plan_err!("MATCH_CONDITION may name latest_by(...) only once");
            }
            let expr = context.sql_to_expr(arg, right.schema()).map_err(|e| {
                e.context("latest_by(...) must name a column of the right side of the ASOF JOIN")
            })?;
            tie_breaker = Some(expr);
        } else {
            conditions.extend(split_conjunction_owned(
                context.sql_to_expr(term, &join_schema)?,
            ));
        }
    }
    let condition = read_match_condition(conditions, left.schema(), right.schema())?;

    let (on, using) = join_keys(constraint, &left, &right, &join_schema, context)?;

    let node = AsOfJoin::try_new(Arc::new(left), Arc::new(right), on, condition, tie_breaker)?;
    merge_using(node.into_plan(), &using)
}

/// Equality keys as (left, right) pairs, and for `USING` the right columns to project away
/// afterwards ([`merge_using`]).
pub(super) type JoinKeys = (Vec<(Expr, Expr)>, Vec<Column>);

/// The keys of `ON` or `USING`.
pub(super) fn join_keys(
    constraint: JoinConstraint,
    left: &LogicalPlan,
    right: &LogicalPlan,
    join_schema: &DFSchema,
    context: &mut dyn RelationPlannerContext,
) -> Result<JoinKeys> {
    Ok(match constraint {
        JoinConstraint::On(expr) => {
            let expr = context.sql_to_expr(expr, join_schema)?;
            (equi_keys(expr, left.schema(), right.schema())?, vec![])
        }
        JoinConstraint::Using(names) => {
            let mut on = vec![];
            let mut right_columns = vec![];
            for name in names {
                let name = match name.0.as_slice() {
                    [part] => match part.as_ident() {
                        Some(ident) => context.normalize_ident(ident.clone()),
                        None => return plan_err!("USING expects column names, found {name}"),
                    },
                    _ => return plan_err!("USING expects unqualified column names, found {name}"),
                };
                let l = using_column(left.schema(), &name, "left")?;
                let r = using_column(right.schema(), &name, "right")?;
                on.push((Expr::Column(l), Expr::Column(r.clone())));
                right_columns.push(r);
            }
            (on, right_columns)
        }
        JoinConstraint::None => (vec![], vec![]),
        JoinConstraint::Natural => {
            return plan_err!("NATURAL ASOF JOIN is not supported: name the keys with ON or USING");
        }
    })
}

/// USING merges each key pair into one column, as in DuckDB and PostgreSQL. The left key is
/// that column: every left row is kept, so it is never NULL where the right is set.
pub(super) fn merge_using(plan: LogicalPlan, using: &[Column]) -> Result<LogicalPlan> {
    if using.is_empty() {
        return Ok(plan);
    }
    let kept: Vec<Expr> = plan
        .schema()
        .columns()
        .into_iter()
        .filter(|c| !using.contains(c))
        .map(Expr::Column)
        .collect();
    LogicalPlanBuilder::from(plan).project(kept)?.build()
}

fn using_column(schema: &DFSchema, name: &str, side: &str) -> Result<Column> {
    let (qualifier, field) = schema
        .qualified_field_with_unqualified_name(name)
        .map_err(|_| {
            plan_datafusion_err!("USING column {name} is not in the {side} input of the ASOF JOIN")
        })?;
    Ok(Column::new(qualifier.cloned(), field.name()))
}

/// `a AND (b AND c)` as `[a, b, c]`, on the SQL AST, so `latest_by(...)` can be taken out
/// before DataFusion tries to resolve it as a function.
fn split_sql_and(expr: SQLExpr) -> Vec<SQLExpr> {
    match expr {
        SQLExpr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            let mut terms = split_sql_and(*left);
            terms.extend(split_sql_and(*right));
            terms
        }
        SQLExpr::Nested(inner) => match *inner {
            and @ SQLExpr::BinaryOp {
                op: BinaryOperator::And,
                ..
            } => split_sql_and(and),
            other => vec![SQLExpr::Nested(Box::new(other))],
        },
        other => vec![other],
    }
}

fn latest_by_argument(expr: &SQLExpr) -> Result<Option<SQLExpr>> {
    let SQLExpr::Function(function) = expr else {
        return Ok(None);
    };
    if !function.name.to_string().eq_ignore_ascii_case("latest_by") {
        return Ok(None);
    }
    if let FunctionArguments::List(list) = &function.args
        && let [FunctionArg::Unnamed(FunctionArgExpr::Expr(arg))] = list.args.as_slice()
    {
        return Ok(Some(arg.clone()));
    }
    plan_err!(
        "latest_by takes one right-side column, e.g. latest_by(f.created_timestamp); found {expr}"
    )
}

/// The `MATCH_CONDITION` grammar over the terms [`Term::classify`] reads: exactly one time
/// comparison, plus at most one inclusive bound on the distance it looks across.
fn read_match_condition(
    conditions: Vec<Expr>,
    left: &DFSchema,
    right: &DFSchema,
) -> Result<TimeCondition> {
    for c in &conditions {
        check_term(c)?;
    }
    let comparison = |e: &Expr| match Term::classify(e, left, right) {
        Term::Compare(condition) => Some(condition),
        _ => None,
    };
    match conditions.as_slice() {
        [] => plan_err!(
            "ASOF JOIN needs exactly one of >=, >, <=, < in MATCH_CONDITION, e.g. MATCH_CONDITION (l.ts >= r.ts)"
        ),
        [only] => comparison(only).ok_or_else(|| {
            plan_datafusion_err!(
                "MATCH_CONDITION must compare a time of the left input with a time of the right input, e.g. l.ts >= r.ts; found: {only}"
            )
        }),
        [a, b] => {
            for (cmp, bound) in [(a, b), (b, a)] {
                if let Some(mut condition) = comparison(cmp)
                    && let Term::Bound(ttl) = Term::classify(bound, left, right)
                    && condition.is_bounded_by(&ttl)
                {
                    if ttl.strict {
                        return plan_err!(
                            "the TTL bound is inclusive: write it with <= (or >=), e.g. l.ts - r.ts <= INTERVAL '90 days'; found: {bound}"
                        );
                    }
                    condition.ttl = Some(ttl.amount);
                    return Ok(condition);
                }
            }
            plan_err!(
                "ASOF JOIN needs exactly one time comparison in MATCH_CONDITION, plus at most one TTL bound such as \
                 l.ts - r.ts <= INTERVAL '90 days'; found: {a} AND {b}"
            )
        }
        _ => plan_err!(
            "ASOF JOIN takes one time comparison and at most one TTL bound in MATCH_CONDITION; found {} conditions",
            conditions.len()
        ),
    }
}

/// Reject what can never be part of the grammar with a message that names it.
fn check_term(expr: &Expr) -> Result<()> {
    if let Expr::BinaryExpr(BinaryExpr { op, .. }) = expr {
        match op {
            Operator::Or => {
                return plan_err!("MATCH_CONDITION does not support OR; found: {expr}");
            }
            Operator::Eq => {
                return plan_err!(
                    "MATCH_CONDITION needs one of >=, >, <=, <, found: {expr}; put equality conditions in ON (...)"
                );
            }
            _ => {}
        }
    }
    let is_inequality =
        matches!(expr, Expr::BinaryExpr(BinaryExpr { op, .. }) if MatchOp::try_from(*op).is_ok());
    if !is_inequality {
        return plan_err!(
            "ASOF JOIN needs exactly one of >=, >, <=, < in MATCH_CONDITION, found: {expr}"
        );
    }
    Ok(())
}

/// `ON a = b AND c = d` as key pairs `(left, right)`.
fn equi_keys(expr: Expr, left: &DFSchema, right: &DFSchema) -> Result<Vec<(Expr, Expr)>> {
    split_conjunction_owned(expr)
        .into_iter()
        .map(|term| match Term::classify(&term, left, right) {
            Term::KeyEquality(l, r) => Ok((l, r)),
            _ => plan_err!(
                "ASOF JOIN ... ON accepts only equalities between a left and a right expression, AND-ed together; \
                 found: {term}. Time conditions belong in MATCH_CONDITION"
            ),
        })
        .collect()
}
