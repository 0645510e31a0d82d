//! The SQL front end: hindcast's statements on top of DataFusion's parser and planner.
//!
//! DataFusion 55 parses `ASOF JOIN ... MATCH_CONDITION (...)` (sqlparser does) but refuses
//! to plan it. Its planner has one extension point for relations, the
//! [`RelationPlanner`](datafusion::logical_expr::planner::RelationPlanner), and it sees only
//! table factors, not the joins between them. So [`prepare_statement`] first rewrites the
//! AST so that every ASOF join becomes a parenthesised table factor of its own,
//! `(<everything to its left> ASOF JOIN <right> ...)`, and [`AsOfRelationPlanner`] plans
//! exactly those factors into the [`AsOfJoin`](crate::logical::AsOfJoin) node. Everything
//! else stays DataFusion SQL.

mod asof_join;

use std::ops::ControlFlow;

use datafusion::sql::parser::{CopyToSource, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    Join, JoinOperator, Query, SetExpr, TableFactor, TableWithJoins, VisitMut, VisitorMut,
};

pub use asof_join::AsOfRelationPlanner;

/// Rewrite a parsed statement so that DataFusion's planner can hand every ASOF join to
/// [`AsOfRelationPlanner`].
pub fn prepare_statement(statement: &mut DFStatement) {
    match statement {
        DFStatement::Statement(s) => {
            let _ = s.visit(&mut NestAsOfJoins);
        }
        DFStatement::CopyTo(copy) => {
            if let CopyToSource::Query(query) = &mut copy.source {
                let _ = query.visit(&mut NestAsOfJoins);
            }
        }
        DFStatement::Explain(explain) => prepare_statement(&mut explain.statement),
        DFStatement::CreateExternalTable(_) | DFStatement::Reset(_) => {}
    }
}

/// Post-order, so each `FROM` list is rewritten once, after the queries and factors nested
/// in it, and the factors this creates are not visited again.
struct NestAsOfJoins;

impl VisitorMut for NestAsOfJoins {
    type Break = ();

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        nest_in_set_expr(&mut query.body);
        ControlFlow::Continue(())
    }

    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::NestedJoin {
            table_with_joins, ..
        } = factor
        {
            nest_asof_joins(table_with_joins);
        }
        ControlFlow::Continue(())
    }
}

fn nest_in_set_expr(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => select.from.iter_mut().for_each(nest_asof_joins),
        SetExpr::SetOperation { left, right, .. } => {
            nest_in_set_expr(left);
            nest_in_set_expr(right);
        }
        // Nested queries are visited as queries of their own.
        _ => {}
    }
}

/// `a JOIN b ASOF JOIN c LEFT JOIN d` becomes `((a JOIN b) ASOF JOIN c) LEFT JOIN d`: each
/// ASOF join is the single join of a nested factor whose left side is everything before it,
/// which is how SQL associates joins (left to right).
fn nest_asof_joins(twj: &mut TableWithJoins) {
    if !twj.joins.iter().any(is_asof) {
        return;
    }
    // A clone, because the AST has no cheap placeholder to swap in; it is a one-off per query.
    let mut acc = twj.relation.clone();
    let mut pending: Vec<Join> = vec![];
    for join in std::mem::take(&mut twj.joins) {
        if !is_asof(&join) {
            pending.push(join);
            continue;
        }
        let left = if pending.is_empty() {
            acc
        } else {
            nested(acc, std::mem::take(&mut pending))
        };
        acc = nested(left, vec![join]);
    }
    twj.relation = acc;
    twj.joins = pending;
}

fn nested(relation: TableFactor, joins: Vec<Join>) -> TableFactor {
    TableFactor::NestedJoin {
        table_with_joins: Box::new(TableWithJoins { relation, joins }),
        alias: None,
    }
}

fn is_asof(join: &Join) -> bool {
    matches!(join.join_operator, JoinOperator::AsOf { .. })
}
