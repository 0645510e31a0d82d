//! Planning `l ASOF JOIN r MATCH_CONDITION (...) ON ... | USING (...)`, and DuckDB's
//! `l ASOF [LEFT] JOIN r ON ... | USING (...)` (see [`super::asof_on`]), into [`AsOfJoin`].
//!
//! Grammar accepted in `MATCH_CONDITION`, as AND-ed terms in any order:
//! - exactly one comparison `<left time> {>=|>|<=|<} <right time>` (either operand order),
//!   or `nearest(<left time>, <right time>)` (either order), optionally with
//!   `<left time> <> <right time>` to leave out right rows at exactly the left row's time;
//! - optionally one inclusive TTL bound on the distance, in any of the usual spellings:
//!   `l.ts - r.ts <= c`, `r.ts >= l.ts - c`, `l.ts <= r.ts + c` (mirrored for forward joins),
//!   and for `nearest`, `abs(l.ts - r.ts) <= c`;
//! - optionally `latest_by(r.created)`: among right rows tied on time, the larger value wins.
//!
//! DuckDB's `ON` holds the key equalities and the time comparison together (and here may
//! hold a TTL bound too); `USING (k, ..., ts)` names the keys and, last, the time, with
//! `>=`. Without `LEFT` the join is inner, as in DuckDB.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::common::{Column, DFSchema, Result, plan_datafusion_err, plan_err};
use datafusion::logical_expr::planner::RelationPlannerContext;
use datafusion::logical_expr::utils::split_conjunction_owned;
use datafusion::logical_expr::{BinaryExpr, Expr, LogicalPlan, LogicalPlanBuilder, Operator};
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr as SQLExpr, FunctionArg, FunctionArgExpr, FunctionArguments,
    JoinConstraint, visit_expressions,
};

use super::asof_on::OnForm;
use crate::logical::{AsOfJoin, MatchOp, Term, TimeCondition};

pub(super) fn plan_asof_join(
    left: LogicalPlan,
    right: LogicalPlan,
    match_condition: SQLExpr,
    constraint: JoinConstraint,
    context: &mut dyn RelationPlannerContext,
) -> Result<LogicalPlan> {
    let join_schema = left.schema().join(right.schema())?;
    if let Some(form) = OnForm::of(&match_condition) {
        return plan_on_form(left, right, form, constraint, &join_schema, context);
    }

    let mut tie_breaker = None;
    let mut nearest = None;
    let mut nearest_ttl = None;
    let mut conditions = vec![];
    for term in split_sql_and(match_condition) {
        if let Some((a, b)) = function_arguments(&term, "nearest")? {
            if nearest.is_some() {
                return plan_err!("MATCH_CONDITION may name nearest(...) only once");
            }
            let a = context.sql_to_expr(a, &join_schema)?;
            let b = context.sql_to_expr(b, &join_schema)?;
            nearest = Some(a.gt_eq(b));
        } else if let Some(distance) = abs_bound(&term) {
            if nearest_ttl.is_some() {
                return plan_err!("MATCH_CONDITION may bound abs(...) only once");
            }
            nearest_ttl = Some((context.sql_to_expr(distance, &join_schema)?, term));
        } else if let Some(arg) = latest_by_argument(&term)? {
            if tie_breaker.is_some() {
                return plan_err!("MATCH_CONDITION may name latest_by(...) only once");
            }
            let expr = context.sql_to_expr(arg, right.schema()).map_err(|e| {
                e.context("latest_by(...) must name a column of the right side of the ASOF JOIN")
            })?;
            tie_breaker = Some(expr);
        } else {
            if let Some(name) = misplaced_call(&term) {
                return plan_err!(
                    "{name}(...) is a term of MATCH_CONDITION on its own, AND-ed with the others \
                     (not inside NOT, OR or another expression); found {term}"
                );
            }
            conditions.extend(split_conjunction_owned(
                context.sql_to_expr(term, &join_schema)?,
            ));
        }
    }
    let condition = match nearest {
        Some(times) => read_nearest(
            times,
            conditions,
            nearest_ttl,
            left.schema(),
            right.schema(),
        )?,
        None => {
            if let Some((_, term)) = nearest_ttl {
                return plan_err!(
                    "abs(...) bounds the distance of nearest(l.ts, r.ts) only; for >= or <= write the TTL \
                     as l.ts - r.ts <= INTERVAL '...'; found: {term}"
                );
            }
            read_match_condition(conditions, left.schema(), right.schema(), "MATCH_CONDITION")?
        }
    };

    let (on, using) = join_keys(constraint, &left, &right, &join_schema, context)?;

    let node = AsOfJoin::try_new(Arc::new(left), Arc::new(right), on, condition, tie_breaker)?;
    merge_using(node.into_plan(), &using)
}

/// DuckDB's form: `ON` with the key equalities and one time comparison (and, beyond DuckDB,
/// at most one TTL bound), or `USING (keys..., time)` for `>=`.
fn plan_on_form(
    left: LogicalPlan,
    right: LogicalPlan,
    form: OnForm,
    constraint: JoinConstraint,
    join_schema: &DFSchema,
    context: &mut dyn RelationPlannerContext,
) -> Result<LogicalPlan> {
    let (on, condition, using) = match constraint {
        JoinConstraint::On(expr) => {
            if let Some(name) = misplaced_call(&expr) {
                return plan_err!(
                    "{name}(...) belongs in MATCH_CONDITION, not in DuckDB's ASOF JOIN ... ON: write \
                     ASOF JOIN r MATCH_CONDITION (...) ON l.k = r.k; found {expr}"
                );
            }
            let expr = context.sql_to_expr(expr, join_schema)?;
            let mut on = vec![];
            let mut conditions = vec![];
            for term in split_conjunction_owned(expr) {
                match Term::classify(&term, left.schema(), right.schema()) {
                    Term::KeyEquality(l, r) => on.push((l, r)),
                    Term::Compare(_) | Term::Bound(_) => conditions.push(term),
                    Term::Other => {
                        return plan_err!(
                            "ASOF JOIN ... ON takes equalities between a left and a right expression and one \
                             of >=, >, <=, < between their times (optionally a TTL bound such as \
                             l.ts - r.ts <= INTERVAL '1 day'), AND-ed together; found: {term}. Filter \
                             either side in a subquery, or the result in WHERE"
                        );
                    }
                }
            }
            if conditions.is_empty() {
                return plan_err!(
                    "ASOF JOIN ... ON needs one of >=, >, <=, < between a left and a right time, \
                     e.g. ON l.k = r.k AND l.ts >= r.ts"
                );
            }
            let condition = read_match_condition(conditions, left.schema(), right.schema(), "ON")?;
            (on, condition, vec![])
        }
        JoinConstraint::Using(names) => {
            let Some((time, keys)) = names.split_last() else {
                return plan_err!("ASOF JOIN ... USING needs at least the time column");
            };
            let (on, mut using) = join_keys(
                JoinConstraint::Using(keys.to_vec()),
                &left,
                &right,
                join_schema,
                context,
            )?;
            let (mut times, time_column) = join_keys(
                JoinConstraint::Using(vec![time.clone()]),
                &left,
                &right,
                join_schema,
                context,
            )?;
            let (left_time, right_time) = times.pop().expect("one USING column");
            using.extend(time_column);
            let condition = TimeCondition {
                left_time,
                op: MatchOp::GtEq,
                right_time,
                ttl: None,
            };
            (on, condition, using)
        }
        JoinConstraint::Natural | JoinConstraint::None => {
            return plan_err!(
                "ASOF JOIN needs ON l.k = r.k AND l.ts >= r.ts, USING (k, ts) or MATCH_CONDITION (...)"
            );
        }
    };
    let mut node = AsOfJoin::try_new(Arc::new(left), Arc::new(right), on, condition, None)?;
    if form == OnForm::Inner {
        node = node.inner();
    }
    merge_using(node.into_plan(), &using)
}

/// `nearest(a, b)` (read as `a >= b` to tell the sides apart), with the other terms: at
/// most `l.ts <> r.ts` over the same times, and the TTL from `abs(a - b) <= c`.
fn read_nearest(
    times: Expr,
    conditions: Vec<Expr>,
    ttl: Option<(Expr, SQLExpr)>,
    left: &DFSchema,
    right: &DFSchema,
) -> Result<TimeCondition> {
    let Term::Compare(mut condition) = Term::classify(&times, left, right) else {
        return plan_err!(
            "nearest(...) takes a time of the left input and a time of the right input, e.g. nearest(l.ts, r.ts); \
             found: {times}"
        );
    };
    let same_times = |a: &Expr, b: &Expr| {
        (*a == condition.left_time && *b == condition.right_time)
            || (*a == condition.right_time && *b == condition.left_time)
    };
    condition.op = MatchOp::Nearest;
    for c in &conditions {
        match c {
            Expr::BinaryExpr(BinaryExpr {
                left: a,
                op: Operator::NotEq,
                right: b,
            }) if same_times(a, b) => {
                if condition.op == MatchOp::NearestExclusive {
                    return plan_err!(
                        "MATCH_CONDITION may leave out exact matches only once; found: {c}"
                    );
                }
                condition.op = MatchOp::NearestExclusive;
            }
            _ => {
                return plan_err!(
                    "with nearest(l.ts, r.ts), MATCH_CONDITION takes only l.ts <> r.ts (to leave out exact \
                     matches), abs(l.ts - r.ts) <= c (a TTL) and latest_by(...); found: {c}"
                );
            }
        }
    }
    if let Some((bound, term)) = ttl {
        match Term::classify(&bound, left, right) {
            Term::Bound(b) if b.difference && same_times(&b.later, &b.earlier) => {
                if b.strict {
                    return plan_err!(
                        "the TTL bound is inclusive: write it with <=, e.g. abs(l.ts - r.ts) <= INTERVAL '1 hour'; \
                         found: {term}"
                    );
                }
                condition.ttl = Some(b.amount);
            }
            _ => {
                return plan_err!(
                    "abs(...) must bound the distance between the two times of nearest(...) by a constant, \
                     e.g. abs(l.ts - r.ts) <= INTERVAL '1 hour'; found: {term}"
                );
            }
        }
    }
    Ok(condition)
}

/// `abs(x) <= c` (or `c >= abs(x)`, or with `<`) as `x <= c` (`x < c`), the bound on a
/// nearest join's distance.
fn abs_bound(expr: &SQLExpr) -> Option<SQLExpr> {
    let SQLExpr::BinaryOp { left, op, right } = expr else {
        return None;
    };
    let (abs, op, c) = match op {
        BinaryOperator::LtEq | BinaryOperator::Lt => (left, op.clone(), right),
        BinaryOperator::GtEq => (right, BinaryOperator::LtEq, left),
        BinaryOperator::Gt => (right, BinaryOperator::Lt, left),
        _ => return None,
    };
    let args = call_of(abs, "abs")??;
    let [x] = args.as_slice() else {
        return None;
    };
    Some(SQLExpr::BinaryOp {
        left: Box::new((*x).clone()),
        op,
        right: c.clone(),
    })
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
            if let Some(name) = misplaced_call(&expr) {
                return plan_err!(
                    "{name}(...) belongs in MATCH_CONDITION, not in DuckDB's ASOF JOIN ... ON: write \
                     ASOF JOIN r MATCH_CONDITION (...) ON l.k = r.k; found {expr}"
                );
            }
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
/// that column: it is never NULL where the right is set, whether unmatched left rows are
/// kept or not.
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

/// `name(args...)`: `None` if `expr` is not a call of `name`, else its plain arguments
/// (`None` inside for any other kind of argument list).
fn call_of<'a>(expr: &'a SQLExpr, name: &str) -> Option<Option<Vec<&'a SQLExpr>>> {
    let SQLExpr::Function(function) = expr else {
        return None;
    };
    if !function.name.to_string().eq_ignore_ascii_case(name) {
        return None;
    }
    let FunctionArguments::List(list) = &function.args else {
        return Some(None);
    };
    Some(
        list.args
            .iter()
            .map(|arg| match arg {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                _ => None,
            })
            .collect(),
    )
}

/// `latest_by` or `nearest` if `expr` calls one anywhere inside it: they are words of the
/// `MATCH_CONDITION` grammar, which DataFusion would report as unknown functions.
fn misplaced_call(expr: &SQLExpr) -> Option<&'static str> {
    let mut found = None;
    let _ = visit_expressions(expr, |e| {
        if let Some(name) = ["latest_by", "nearest"]
            .into_iter()
            .find(|name| call_of(e, name).is_some())
        {
            found = Some(name);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    found
}

/// The two arguments of `name(a, b)`, or an error for `name` with other arguments.
fn function_arguments(expr: &SQLExpr, name: &str) -> Result<Option<(SQLExpr, SQLExpr)>> {
    match call_of(expr, name) {
        None => Ok(None),
        Some(Some(args)) if args.len() == 2 => Ok(Some((args[0].clone(), args[1].clone()))),
        Some(_) => {
            plan_err!("{name} takes a left and a right time, e.g. {name}(l.ts, r.ts); found {expr}")
        }
    }
}

fn latest_by_argument(expr: &SQLExpr) -> Result<Option<SQLExpr>> {
    match call_of(expr, "latest_by") {
        None => Ok(None),
        Some(Some(args)) if args.len() == 1 => Ok(Some(args[0].clone())),
        Some(_) => plan_err!(
            "latest_by takes one right-side column, e.g. latest_by(f.created_timestamp); found {expr}"
        ),
    }
}

/// The `MATCH_CONDITION` grammar over the terms [`Term::classify`] reads: exactly one time
/// comparison, plus at most one inclusive bound on the distance it looks across. `clause`
/// names where they were written (`MATCH_CONDITION`, or DuckDB's `ON`).
fn read_match_condition(
    conditions: Vec<Expr>,
    left: &DFSchema,
    right: &DFSchema,
    clause: &str,
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
                "{clause} must compare a time of the left input with a time of the right input, e.g. l.ts >= r.ts; found: {only}"
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
                "ASOF JOIN needs exactly one time comparison in {clause}, plus at most one TTL bound such as \
                 l.ts - r.ts <= INTERVAL '90 days'; found: {a} AND {b}"
            )
        }
        _ => plan_err!(
            "ASOF JOIN takes one time comparison and at most one TTL bound in {clause}; found {} conditions",
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
