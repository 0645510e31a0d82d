//! [`HindcastRelationPlanner`]: where hindcast's table factors enter DataFusion's SQL planner.

use datafusion::common::Result;
use datafusion::logical_expr::planner::{
    PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning,
};
use datafusion::sql::sqlparser::ast::{JoinOperator, TableFactor, TableWithJoins};

use super::asof_join::plan_asof_join;
use super::retrieval::{self, plan_historical_features};
use super::temporal::{plan_snapshot, plan_temporal_join};
use crate::features::FeatureRegistry;

/// Plans, in DataFusion's SQL planner:
/// - the nested factors [`super::prepare_statement`] makes around each `ASOF JOIN` and each
///   `LEFT JOIN view FOR SYSTEM_TIME AS OF l.ts` into the `AsOfJoin` node;
/// - `view FOR SYSTEM_TIME AS OF <constant>` into a snapshot;
/// - `historical_features(...)`.
#[derive(Debug, Default)]
pub struct HindcastRelationPlanner {
    registry: FeatureRegistry,
}

impl HindcastRelationPlanner {
    pub fn new(registry: FeatureRegistry) -> Self {
        Self { registry }
    }
}

impl RelationPlanner for HindcastRelationPlanner {
    fn plan_relation(
        &self,
        relation: TableFactor,
        context: &mut dyn RelationPlannerContext,
    ) -> Result<RelationPlanning> {
        match relation {
            TableFactor::NestedJoin {
                table_with_joins,
                alias: None,
            } if table_with_joins.joins.len() == 1
                && super::is_point_in_time(&table_with_joins.joins[0]) =>
            {
                let TableWithJoins {
                    relation: left,
                    mut joins,
                } = *table_with_joins;
                let join = joins.pop().expect("one join");
                let plan = match join.join_operator {
                    JoinOperator::AsOf {
                        match_condition,
                        constraint,
                    } => {
                        let left = context.plan(left)?;
                        let right = context.plan(join.relation)?;
                        plan_asof_join(left, right, match_condition, constraint, context)?
                    }
                    JoinOperator::Left(constraint) | JoinOperator::LeftOuter(constraint) => {
                        let left = context.plan(left)?;
                        plan_temporal_join(left, join.relation, constraint, context)?
                    }
                    _ => unreachable!("is_point_in_time accepts only these"),
                };
                Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(
                    plan, None,
                ))))
            }
            TableFactor::Table {
                version: Some(_), ..
            } => {
                // Not a per-row temporal join (see `is_point_in_time`): a snapshot at a
                // constant instant. The factor keeps its alias, so the plan is qualified by it.
                let plan = plan_snapshot(relation, context)?;
                Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(
                    plan, None,
                ))))
            }
            TableFactor::Table {
                ref name,
                args: Some(_),
                ..
            } if name.to_string().eq_ignore_ascii_case(retrieval::NAME) => {
                let TableFactor::Table { args, alias, .. } = relation else {
                    unreachable!()
                };
                let plan =
                    plan_historical_features(args.expect("matched"), &self.registry, context)?;
                Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(
                    plan, alias,
                ))))
            }
            other => Ok(RelationPlanning::Original(Box::new(other))),
        }
    }
}
