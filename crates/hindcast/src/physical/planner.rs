//! Turns hindcast's logical nodes into physical operators.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::JoinSide;
use datafusion::common::{Result, internal_err};
use datafusion::datasource::physical_plan::{FileScanConfig, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::logical_expr::Operator;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, LogicalPlan, UserDefinedLogicalNode};
use datafusion::physical_expr::PhysicalExprRef;
use datafusion::physical_expr::expressions::{BinaryExpr, Column};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ChildrenPropertiesMode, ExecutionPlan, ReplaceChildrenOptions};
use datafusion::physical_planner::{ExtensionPlanner, PhysicalPlanner};

use super::spine_bounds::{Narrowing, PartitionFilter, SpineBounds, SpineBoundsExec};
use super::{AsOfJoinExec, WindowAggregateExec};
use crate::features::TimePartitioning;
use crate::logical::{AsOfJoin, MatchOp, WindowAggregateJoin, scanned_partitioning};
use crate::time::TimeDomain;

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
        if let Some(join) = node.as_any().downcast_ref::<WindowAggregateJoin>() {
            let ([left_plan, right_plan], [left, right]) = (logical_inputs, physical_inputs) else {
                return internal_err!("WindowAggregateJoin has two inputs");
            };
            let sides = [*left_plan, *right_plan];
            let options =
                join.options
                    .try_map(physical_exprs(planner, sides, session, planning_ctx))?;
            let (op, ttl) = options.reach();
            let sides = Sides {
                left_time: &options.left_time,
                on: &options.on,
                domain: options.domain,
                op,
                ttl,
                right_time: &options.right_time,
                partitioning: scanned_partitioning(right_plan),
            };
            let (left, right, narrowing) = narrowed(left, right, sides, session)?;
            let exec =
                WindowAggregateExec::try_new(left, right, options)?.with_narrowing(narrowing);
            return Ok(Some(Arc::new(exec)));
        }
        let Some(join) = node.as_any().downcast_ref::<AsOfJoin>() else {
            return Ok(None);
        };
        let ([left_plan, right_plan], [left, right]) = (logical_inputs, physical_inputs) else {
            return internal_err!("AsOfJoin has two inputs");
        };
        let sides = [*left_plan, *right_plan];
        let options =
            join.options
                .try_map(physical_exprs(planner, sides, session, planning_ctx))?;
        let sides = Sides {
            left_time: &options.left_time,
            on: &options.on,
            domain: options.domain,
            op: options.op,
            ttl: options.ttl,
            right_time: &options.right_time,
            partitioning: join.right_partitioning(),
        };
        let (left, right, narrowing) = narrowed(left, right, sides, session)?;
        let exec = AsOfJoinExec::try_new(left, right, options)?.with_narrowing(narrowing);
        Ok(Some(Arc::new(exec)))
    }
}

/// Plans a join's expression against the input of the side it reads (`[left, right]`), for
/// the options' `try_map`.
fn physical_exprs<'a>(
    planner: &'a dyn PhysicalPlanner,
    [left, right]: [&'a LogicalPlan; 2],
    session: &'a dyn Session,
    planning_ctx: &'a PhysicalPlanningContext,
) -> impl FnMut(JoinSide, &Expr) -> Result<PhysicalExprRef> + 'a {
    move |side, e| {
        let schema = match side {
            JoinSide::Left => left.schema(),
            _ => right.schema(),
        };
        planner.create_physical_expr(e, schema, session, planning_ctx)
    }
}

/// What narrowing a join's right side by its spine needs to know of the join.
struct Sides<'a> {
    left_time: &'a PhysicalExprRef,
    on: &'a [(PhysicalExprRef, PhysicalExprRef)],
    domain: TimeDomain,
    op: MatchOp,
    /// How far from the spine's range a right row can still count.
    ttl: Option<i64>,
    right_time: &'a PhysicalExprRef,
    /// How the feature view the right side scans is partitioned by time.
    partitioning: Option<TimePartitioning>,
}

/// `(left, right, narrowing)`, see [`narrowed`].
type Narrowed = (
    Arc<dyn ExecutionPlan>,
    Arc<dyn ExecutionPlan>,
    Option<Arc<Narrowing>>,
);

/// The spine wrapped to record its bounds, the right side (with a partition filter on its
/// scan where it can take one), and the narrowing that sets their filters at run time.
fn narrowed(
    left: &Arc<dyn ExecutionPlan>,
    right: &Arc<dyn ExecutionPlan>,
    sides: Sides,
    session: &dyn Session,
) -> Result<Narrowed> {
    let mut right = Arc::clone(right);
    // The same switch as DataFusion's own join filters, so plans can be compared.
    if !session
        .config_options()
        .optimizer
        .enable_join_dynamic_filter_pushdown
    {
        return Ok((Arc::clone(left), right, None));
    }
    let (left, bounds) = spine_bounds(left, sides.left_time, sides.on, sides.domain);
    let Some(bounds) = bounds else {
        return Ok((left, right, None));
    };
    let left_keys: Vec<PhysicalExprRef> = sides.on.iter().map(|(l, _)| Arc::clone(l)).collect();
    let right_keys = if bounds.tracks_keys(&left_keys) {
        sides.on.iter().map(|(_, r)| Arc::clone(r)).collect()
    } else {
        vec![]
    };
    let narrowing = Narrowing::new(
        bounds,
        sides.op,
        sides.ttl,
        Arc::clone(sides.right_time),
        right_keys,
        right.schema(),
    )?;
    let partitions = match sides.partitioning {
        Some(partitioning) => narrow_partitions(&right, partitioning)?,
        None => None,
    };
    let partition_filter = partitions.map(|(plan, filter)| {
        right = plan;
        Arc::new(filter)
    });
    let narrowing = Arc::new(narrowing.with_partition_filter(partition_filter));
    Ok((left, right, Some(narrowing)))
}

/// The spine side of a join, wrapped so it records its time range, and that range.
///
/// A join whose spine is another join's output (several views, one spine) shares the
/// first join's bounds when it uses the same time column: wrapping it again would hide the
/// order the first join already produces and cost a re-sort of the spine. If the time column
/// is a different one, the later join is not narrowed.
fn spine_bounds(
    left: &Arc<dyn ExecutionPlan>,
    time: &PhysicalExprRef,
    on: &[(PhysicalExprRef, PhysicalExprRef)],
    domain: TimeDomain,
) -> (Arc<dyn ExecutionPlan>, Option<Arc<SpineBounds>>) {
    let mut plan = Arc::clone(left);
    let mut column = time.downcast_ref::<Column>().cloned();
    loop {
        if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
            column = column.and_then(|c| {
                projection
                    .expr()
                    .get(c.index())
                    .and_then(|e| e.expr.downcast_ref::<Column>().cloned())
            });
            plan = Arc::clone(projection.input());
            continue;
        }
        if let Some((spine, narrowing)) = super::join_spine(&plan) {
            let shared = narrowing.map(|n| &n.bounds).filter(|bounds| {
                column.as_ref().is_some_and(|c| {
                    c.index() < spine.schema().fields().len()
                        && bounds.tracks(&(Arc::new(c.clone()) as PhysicalExprRef), domain)
                })
            });
            return (Arc::clone(left), shared.cloned());
        }
        break;
    }
    let keys = on.iter().map(|(l, _)| Arc::clone(l)).collect();
    let bounds = SpineBounds::new(Arc::clone(time), keys, domain);
    let left = Arc::new(SpineBoundsExec::new(Arc::clone(left), Arc::clone(&bounds)));
    (left, Some(bounds))
}

/// Put a partition filter on the Parquet scan at the bottom of `plan` (under projections
/// only), returning the new plan. `None` when the scan is not a partitioned Parquet scan.
fn narrow_partitions(
    plan: &Arc<dyn ExecutionPlan>,
    partitioning: TimePartitioning,
) -> Result<Option<(Arc<dyn ExecutionPlan>, PartitionFilter)>> {
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let Some((input, filter)) = narrow_partitions(projection.input(), partitioning)? else {
            return Ok(None);
        };
        let options = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
        return Ok(Some((
            Arc::clone(plan).replace_children(vec![input], options)?,
            filter,
        )));
    }
    let Some(scan) = plan.downcast_ref::<DataSourceExec>() else {
        return Ok(None);
    };
    let Some(config) = scan.data_source().downcast_ref::<FileScanConfig>() else {
        return Ok(None);
    };
    let Some(parquet) = config.file_source().downcast_ref::<ParquetSource>() else {
        return Ok(None);
    };
    let table_schema = config.file_source().table_schema().table_schema();
    let partition_names: Vec<&str> = config
        .file_source()
        .table_schema()
        .table_partition_cols()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    let mut columns = vec![];
    for name in partitioning.columns() {
        if !partition_names.contains(&name) {
            return Ok(None);
        }
        let index = table_schema.index_of(name)?;
        columns.push(Arc::new(Column::new(name, index)) as PhysicalExprRef);
    }
    let filter = PartitionFilter::new(partitioning, columns);
    let predicate: PhysicalExprRef = match config.file_source().filter() {
        Some(existing) => Arc::new(BinaryExpr::new(
            existing,
            Operator::And,
            Arc::clone(&filter.filter) as PhysicalExprRef,
        )),
        None => Arc::clone(&filter.filter) as PhysicalExprRef,
    };
    let source = Arc::new(parquet.with_predicate(predicate));
    let config = FileScanConfigBuilder::from(config.clone())
        .with_source(source)
        .build();
    Ok(Some((DataSourceExec::from_data_source(config), filter)))
}
