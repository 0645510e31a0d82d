//! The SQL front end: hindcast's statements on top of DataFusion's parser and planner.
//!
//! DataFusion 55 parses `ASOF JOIN ... MATCH_CONDITION (...)` (sqlparser does) but refuses
//! to plan it. Its planner has one extension point for relations, the
//! [`RelationPlanner`](datafusion::logical_expr::planner::RelationPlanner), and it sees only
//! table factors, not the joins between them. So [`prepare_statement`] first rewrites the
//! AST so that every ASOF join becomes a parenthesised table factor of its own,
//! `(<everything to its left> ASOF JOIN <right> ...)`, and [`HindcastRelationPlanner`] plans
//! exactly those factors into the [`AsOfJoin`](crate::logical::AsOfJoin) node. The temporal
//! join on a feature view (`LEFT JOIN v FOR SYSTEM_TIME AS OF l.ts`) is nested and planned
//! the same way. DuckDB's `ASOF [LEFT] JOIN ... ON | USING`, which sqlparser does not parse,
//! is marked on the tokens first ([`asof_on`]). The feature-store DDL is parsed by
//! [`parser`]. Everything else stays DataFusion SQL.

mod asof_join;
mod asof_on;
mod dialect;
mod parser;
mod relation;
mod retrieval;
mod temporal;

use std::ops::ControlFlow;

use datafusion::sql::parser::{CopyToSource, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::{
    Expr, Join, JoinOperator, Query, SetExpr, TableFactor, TableVersion, TableWithJoins, VisitMut,
    VisitorMut, visit_expressions,
};

pub use dialect::HindcastDialect;
pub use parser::{
    CreateFeatureService, CreateFeatureView, FeatureObject, FeatureViewSource, HindcastStatement,
    parse_statements, quoted,
};
pub use relation::HindcastRelationPlanner;

use crate::features::FeatureRegistry;

/// Rewrite a parsed statement so that DataFusion's planner can hand every point-in-time join
/// to [`HindcastRelationPlanner`], and knows every table a `historical_features` call reads.
pub fn prepare_statement(statement: &mut DFStatement, registry: &FeatureRegistry) {
    let mut declare = DeclareRetrievalTables { registry };
    match statement {
        DFStatement::Statement(s) => {
            let _ = s.visit(&mut NestAsOfJoins);
            let _ = s.visit(&mut declare);
        }
        DFStatement::CopyTo(copy) => {
            if let CopyToSource::Query(query) = &mut copy.source {
                let _ = query.visit(&mut NestAsOfJoins);
                let _ = query.visit(&mut declare);
            }
        }
        DFStatement::Explain(explain) => prepare_statement(&mut explain.statement, registry),
        DFStatement::CreateExternalTable(_) | DFStatement::Reset(_) => {}
    }
}

/// DataFusion's planner sees only the tables it found in the statement before planning (it
/// loads them from the catalog up front). The tables of a `historical_features` call are
/// named inside string arguments, so this adds a hidden argument that names them in SQL:
/// `__hc_tables => (SELECT 1 FROM (<spine>), view1, view2, ...)`. The planner never plans it.
struct DeclareRetrievalTables<'a> {
    registry: &'a FeatureRegistry,
}

impl VisitorMut for DeclareRetrievalTables<'_> {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            args: Some(args),
            ..
        } = factor
            && name.to_string().eq_ignore_ascii_case(retrieval::NAME)
            && let Some(hidden) = retrieval::declared_tables(&args.args, self.registry)
        {
            args.args.push(hidden);
        }
        ControlFlow::Continue(())
    }
}

/// Post-order, so each `FROM` list is rewritten once, after the queries and factors nested
/// in it, and the factors this creates are not visited again.
pub(crate) struct NestAsOfJoins;

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
    if !twj.joins.iter().any(is_point_in_time) {
        return;
    }
    // A clone, because the AST has no cheap placeholder to swap in; it is a one-off per query.
    let mut acc = twj.relation.clone();
    let mut pending: Vec<Join> = vec![];
    for join in std::mem::take(&mut twj.joins) {
        if !is_point_in_time(&join) {
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

/// `ASOF JOIN`, or `LEFT JOIN t FOR SYSTEM_TIME AS OF <a column>`. With a constant
/// instant the versioned table is a snapshot, an ordinary relation of the join.
fn is_point_in_time(join: &Join) -> bool {
    match &join.join_operator {
        JoinOperator::AsOf { .. } => true,
        JoinOperator::Left(_) | JoinOperator::LeftOuter(_) => matches!(
            &join.relation,
            TableFactor::Table {
                version: Some(TableVersion::ForSystemTimeAsOf(instant)),
                ..
            } if names_a_column(instant)
        ),
        _ => false,
    }
}

fn names_a_column(expr: &Expr) -> bool {
    visit_expressions(expr, |e| match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}
