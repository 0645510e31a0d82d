//! `FOR SYSTEM_TIME AS OF` on feature views.
//!
//! - `l LEFT JOIN view FOR SYSTEM_TIME AS OF l.ts ON view.k = l.k` is a point-in-time join:
//!   the [`AsOfJoin`] node with the view's timestamp, created-timestamp tie-breaker and TTL.
//! - `view FOR SYSTEM_TIME AS OF <constant>` is a snapshot: the latest row per entity as of
//!   that instant, within the TTL; of an aggregation view, each entity's aggregates then.
//!
//! DataFusion 55 would silently ignore the clause and read all of history; hindcast never
//! does: on anything that is not a feature view, or in a form it does not plan, it is an error.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, DFSchema, Result, ScalarValue, plan_err};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::planner::RelationPlannerContext;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, lit};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::sql::sqlparser::ast::{Expr as SQLExpr, JoinConstraint, TableFactor, TableVersion};

use super::asof_join::{join_keys, merge_using};
use crate::features::{FeatureView, FeatureViewTable};
use crate::logical::{AsOfJoin, WindowAggregateJoin, view_column};
use crate::time::TimeDomain;

/// The `AS OF` expression of a versioned table factor; an error for versioning clauses other
/// than `FOR SYSTEM_TIME AS OF`.
fn as_of_expr(factor: &TableFactor) -> Result<Option<&SQLExpr>> {
    match factor {
        TableFactor::Table {
            version: Some(TableVersion::ForSystemTimeAsOf(expr)),
            ..
        } => Ok(Some(expr)),
        TableFactor::Table {
            version: Some(other),
            ..
        } => plan_err!(
            "{other} is not supported; hindcast reads feature views at a point in time with FOR SYSTEM_TIME AS OF"
        ),
        _ => Ok(None),
    }
}

/// The factor without its `FOR SYSTEM_TIME AS OF`, and the feature view it names.
fn unversioned(
    factor: TableFactor,
    context: &mut dyn RelationPlannerContext,
) -> Result<(TableFactor, FeatureView)> {
    let TableFactor::Table {
        name,
        alias,
        args,
        with_hints,
        version: _,
        with_ordinality,
        partitions,
        json_path,
        sample,
        index_hints,
    } = factor
    else {
        return plan_err!("FOR SYSTEM_TIME AS OF applies to a table name");
    };
    let reference = context.object_name_to_table_reference(name.clone())?;
    let source = context
        .context_provider()
        .get_table_source(reference.clone())?;
    let provider = source_as_provider(&source)?;
    let Some(view) = FeatureViewTable::of(provider.as_ref()).cloned() else {
        return plan_err!(
            "FOR SYSTEM_TIME AS OF needs a feature view, and {reference} is a plain table: \
             define it with CREATE FEATURE VIEW ... ENTITY (...) TIMESTAMP ..., or join it with ASOF JOIN ... MATCH_CONDITION (...)"
        );
    };
    let factor = TableFactor::Table {
        name,
        alias,
        args,
        with_hints,
        version: None,
        with_ordinality,
        partitions,
        json_path,
        sample,
        index_hints,
    };
    Ok((factor, view))
}

/// `left LEFT JOIN view FOR SYSTEM_TIME AS OF <left time> ON ...`.
pub(super) fn plan_temporal_join(
    left: LogicalPlan,
    right: TableFactor,
    constraint: JoinConstraint,
    context: &mut dyn RelationPlannerContext,
) -> Result<LogicalPlan> {
    let as_of = as_of_expr(&right)?
        .cloned()
        .expect("called for a versioned factor");
    let (right, view) = unversioned(right, context)?;
    let right = context.plan(right)?;
    let left_time = context
        .sql_to_expr(as_of.clone(), left.schema())
        .map_err(|e| {
            e.context(format!(
            "FOR SYSTEM_TIME AS OF {as_of} must be a time column of the tables joined before {}",
            view.name
        ))
        })?;
    let join_schema = left.schema().join(right.schema())?;
    let (on, using) = join_keys(constraint, &left, &right, &join_schema, context)?;
    for entity in &view.entities {
        let covered = on
            .iter()
            .any(|(_, r)| matches!(r, Expr::Column(c) if c.name == *entity));
        if !covered {
            return plan_err!(
                "the join with feature view {} must match its entity column {entity} in ON (...), e.g. ON {}.{entity} = l.{entity}",
                view.name,
                view.name
            );
        }
    }
    let plan = match view.aggregates.is_empty() {
        true => AsOfJoin::for_view(left, right, on, left_time, &view, false)?.into_plan(),
        false => WindowAggregateJoin::for_view(left, right, on, left_time, &view, None, false)?
            .into_plan(),
    };
    merge_using(plan, &using)
}

/// `view FOR SYSTEM_TIME AS OF <constant>`: the latest row per entity as of that instant,
/// or for an aggregation view each entity's aggregates at that instant.
///
/// Planned as a point-in-time join of the view against its own entities that have a row in
/// `[instant - TTL, instant]`, so a snapshot picks exactly the row a temporal join at that
/// instant would (same tie rule, same TTL). An aggregation view's snapshot is its window
/// join at that instant for the entities with an event in `[instant - longest window,
/// instant]`: one row per entity, its keys and aggregates.
pub(super) fn plan_snapshot(
    factor: TableFactor,
    context: &mut dyn RelationPlannerContext,
) -> Result<LogicalPlan> {
    let as_of = as_of_expr(&factor)?
        .cloned()
        .expect("called for a versioned factor");
    let (factor, view) = unversioned(factor, context)?;
    let instant = context
        .sql_to_expr(as_of.clone(), &DFSchema::empty())
        .map_err(|e| {
            e.context(format!(
                "FOR SYSTEM_TIME AS OF {as_of}: on its own (not in a LEFT JOIN) the instant must be a constant such as TIMESTAMP '2025-02-01'; \
                 to join at each row's time write: spine LEFT JOIN {} FOR SYSTEM_TIME AS OF spine.ts ON ...",
                view.name
            ))
        })?;
    let right = context.plan(factor)?;
    let time = view_column(&right, &view, &view.timestamp)?;
    let instant = lit(instant_as(
        &instant,
        right
            .schema()
            .field_with_unqualified_name(&view.timestamp)?
            .data_type(),
    )?);
    let mut in_range = time.clone().lt_eq(instant.clone());
    // How far back a row still counts: the TTL, or an aggregation view's longest window.
    let reach = match view.aggregates.is_empty() {
        true => view.ttl().cloned(),
        false => Some(longest_window(&view, &right)?),
    };
    if let Some(reach) = reach {
        in_range = in_range.and(time.clone().gt_eq(instant.clone() - lit(reach)));
    }
    let keys = view
        .entities
        .iter()
        .map(|e| view_column(&right, &view, e))
        .collect::<Result<Vec<_>>>()?;
    let spine_keys: Vec<String> = (0..keys.len()).map(|i| format!("__hc_key{i}")).collect();
    let mut spine_columns: Vec<Expr> = keys
        .iter()
        .zip(&spine_keys)
        .map(|(k, name)| k.clone().alias(name))
        .collect();
    spine_columns.push(instant.alias("__hc_as_of"));
    // Rows outside [instant - TTL, instant] can never win, so the feature side is filtered
    // too: DataFusion pushes the bound into the scan (Parquet row-group statistics).
    let right = LogicalPlanBuilder::from(right)
        .filter(in_range.clone())?
        .build()?;
    // An entity with a NULL key matches nothing; it must not become an all-NULL row.
    let keyed = keys
        .iter()
        .fold(in_range, |acc, k| acc.and(k.clone().is_not_null()));
    let spine = LogicalPlanBuilder::from(right.clone())
        .filter(keyed)?
        .aggregate(keys.clone(), Vec::<Expr>::new())?
        .project(spine_columns)?
        .alias("__hc_snapshot")?
        .build()?;
    let on = spine_keys
        .iter()
        .zip(keys)
        .map(|(name, key)| (Expr::Column(Column::new(Some("__hc_snapshot"), name)), key))
        .collect();
    let as_of = Expr::Column(Column::new(Some("__hc_snapshot"), "__hc_as_of"));
    if !view.aggregates.is_empty() {
        // The entities under the view's names, then the aggregates at the instant.
        let Expr::Column(Column { relation, .. }) = time else {
            return plan_err!("feature view {}: its timestamp is not a column", view.name);
        };
        let mut output: Vec<Expr> = spine_keys
            .iter()
            .zip(&view.entities)
            .map(|(key, entity)| {
                Expr::Column(Column::new(Some("__hc_snapshot"), key))
                    .alias_qualified(relation.clone(), entity)
            })
            .collect();
        output.extend(
            view.aggregates
                .iter()
                .map(|a| Expr::Column(Column::new(relation.clone(), &a.name))),
        );
        let node = WindowAggregateJoin::for_view(spine, right, on, as_of, &view, None, false)?;
        return LogicalPlanBuilder::from(node.into_plan())
            .project(output)?
            .build();
    }
    let output: Vec<Expr> = right
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    let node = AsOfJoin::for_view(spine, right, on, as_of, &view, false)?;
    LogicalPlanBuilder::from(node.into_plan())
        .project(output)?
        .build()
}

/// An aggregation view's longest window, as written (the interval or integer of its
/// `OVER`), compared in its timestamp's ticks.
fn longest_window(view: &FeatureView, right: &LogicalPlan) -> Result<ScalarValue> {
    let time_type = right
        .schema()
        .field_with_unqualified_name(&view.timestamp)?
        .data_type()
        .clone();
    let Some(domain) = TimeDomain::common(&time_type, &time_type) else {
        return plan_err!(
            "feature view {}: its TIMESTAMP {} is {time_type}, not a time or an integer",
            view.name,
            view.timestamp
        );
    };
    let mut longest: Option<(i64, &ScalarValue)> = None;
    for aggregate in &view.aggregates {
        let ticks = domain.ttl_from_scalar(&aggregate.window)?;
        if longest.is_none_or(|(most, _)| ticks > most) {
            longest = Some((ticks, &aggregate.window));
        }
    }
    match longest {
        Some((_, window)) => Ok(window.clone()),
        None => plan_err!("feature view {} has no aggregates", view.name),
    }
}

/// The constant instant as a value of the view's time type, read as an instant: a
/// time-zone-naive value means UTC (SPEC section 1), whereas DataFusion's own coercion would
/// read it as wall-clock time in the view's zone. A finer instant is truncated to the
/// view's unit.
fn instant_as(instant: &Expr, target: &DataType) -> Result<ScalarValue> {
    let simplified = ExprSimplifier::new(SimplifyContext::default()).simplify(instant.clone())?;
    let Expr::Literal(value, _) = simplified else {
        return plan_err!("FOR SYSTEM_TIME AS OF needs a constant instant, found {instant}");
    };
    let DataType::Timestamp(unit, Some(zone)) = target else {
        return value.cast_to(target);
    };
    if matches!(value.data_type(), DataType::Timestamp(_, Some(_))) {
        return value.cast_to(target);
    }
    // Naive to naive keeps the epoch value; then attach the zone without shifting it.
    let naive = value.cast_to(&DataType::Timestamp(*unit, None))?;
    let zone = Some(Arc::clone(zone));
    Ok(match naive {
        ScalarValue::TimestampSecond(v, _) => ScalarValue::TimestampSecond(v, zone),
        ScalarValue::TimestampMillisecond(v, _) => ScalarValue::TimestampMillisecond(v, zone),
        ScalarValue::TimestampMicrosecond(v, _) => ScalarValue::TimestampMicrosecond(v, zone),
        ScalarValue::TimestampNanosecond(v, _) => ScalarValue::TimestampNanosecond(v, zone),
        other => other,
    })
}
