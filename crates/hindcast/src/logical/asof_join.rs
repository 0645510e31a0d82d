//! `AsOfJoin`: the logical point-in-time join node.
//!
//! Every SQL form hindcast accepts (`ASOF JOIN ... MATCH_CONDITION`, temporal joins on
//! feature views, `historical_features` and rewritten `ROW_NUMBER()` queries) ends up as this
//! one node, which the physical planner turns into `crate::physical::AsOfJoinExec`.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{
    Column, DFSchema, DFSchemaRef, JoinType, Result, ScalarValue, internal_datafusion_err,
    plan_datafusion_err, plan_err,
};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::logical_plan::builder::build_join_schema;
use datafusion::logical_expr::type_coercion::binary::comparison_coercion;
use datafusion::logical_expr::{
    Expr, ExprSchemable, Extension, LogicalPlan, UserDefinedLogicalNodeCore, cast, when,
};

use super::options::fmt_attributes;
use super::{AsOfJoinOptions, JoinMode, MatchOp, TimeCondition};
use crate::features::{FeatureView, FeatureViewTable, TimePartitioning};
use crate::time::TimeDomain;

/// For every left row, the one right row with equal keys that is closest in time on the
/// side the options' `op` allows, within their TTL; left rows without one get NULLs. See
/// `docs/semantics.md`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsOfJoin {
    pub left: Arc<LogicalPlan>,
    pub right: Arc<LogicalPlan>,
    pub options: AsOfJoinOptions<Expr>,
    pub schema: DFSchemaRef,
}

impl AsOfJoin {
    /// Validate and build the node: keys cast to a common type per pair, the time domain
    /// chosen, the TTL literal read in it.
    pub fn try_new(
        left: Arc<LogicalPlan>,
        right: Arc<LogicalPlan>,
        on: Vec<(Expr, Expr)>,
        condition: TimeCondition,
        tie_breaker: Option<Expr>,
    ) -> Result<Self> {
        let TimeCondition {
            left_time,
            op,
            right_time,
            ttl,
        } = condition;
        let (left_schema, right_schema) = (left.schema(), right.schema());
        let on = on
            .into_iter()
            .map(|(l, r)| coerce_key_pair(l, r, left_schema, right_schema))
            .collect::<Result<Vec<_>>>()?;

        let left_type = left_time.get_type(left_schema.as_ref())?;
        let right_type = right_time.get_type(right_schema.as_ref())?;
        let Some(domain) = TimeDomain::common(&left_type, &right_type) else {
            return plan_err!(
                "ASOF JOIN cannot compare the time columns {left_time} ({left_type}) and {right_time} ({right_type}): \
                 both must be TIMESTAMP or DATE (any unit or time zone), or both integers; cast one side"
            );
        };
        let ttl = ttl
            .map(|value| domain.ttl_from_scalar(&value))
            .transpose()?;
        if let Some(tie) = &tie_breaker {
            check_tie_breaker(tie, &tie.get_type(right_schema.as_ref())?)?;
        }
        let schema = Arc::new(build_join_schema(
            left_schema,
            right_schema,
            &JoinType::Left,
        )?);
        Ok(Self {
            left,
            right,
            options: AsOfJoinOptions {
                on,
                left_time,
                right_time,
                op,
                domain,
                ttl,
                tie_breaker,
                mode: JoinMode::Winner,
                inner: false,
            },
            schema,
        })
    }

    /// The join of `left` with the feature view `right` reads (its table, maybe projected
    /// or aliased) at `left_time`, on the keys `on`: the view's timestamp, latest row first,
    /// its created timestamp as the tie-breaker and its TTL. With `filter_by_created`
    /// (Feast's `filter_by_created_timestamp`) a row counts only once its created
    /// timestamp, too, has passed (see [`JoinMode::LatestVisibleBy`]).
    pub fn for_view(
        left: LogicalPlan,
        right: LogicalPlan,
        on: Vec<(Expr, Expr)>,
        left_time: Expr,
        view: &FeatureView,
        filter_by_created: bool,
    ) -> Result<Self> {
        let timestamp = view_column(&right, view, &view.timestamp)?;
        let created = view
            .created
            .as_ref()
            .map(|created| view_column(&right, view, created))
            .transpose()?;
        let visible = match (&created, filter_by_created) {
            (Some(created), true) => Some(visible_time(
                timestamp.clone(),
                created.clone(),
                right.schema(),
                &view.name,
            )?),
            _ => None,
        };
        let condition = TimeCondition {
            left_time,
            op: MatchOp::GtEq,
            right_time: visible.clone().unwrap_or_else(|| timestamp.clone()),
            ttl: view.ttl().cloned(),
        };
        let join = Self::try_new(Arc::new(left), Arc::new(right), on, condition, created)?;
        match visible {
            Some(_) => join.with_mode(JoinMode::LatestVisibleBy {
                rank_time: timestamp,
            }),
            None => Ok(join),
        }
    }

    /// The same join in another [`JoinMode`]. A rank time is cast to the right time's type,
    /// so the operator reads both in the join's time domain.
    pub fn with_mode(mut self, mode: JoinMode<Expr>) -> Result<Self> {
        let mode = match mode {
            JoinMode::LatestVisibleBy { rank_time } => {
                let right_schema = self.right.schema();
                let right_type = self.options.right_time.get_type(right_schema.as_ref())?;
                let rank_type = rank_time.get_type(right_schema.as_ref())?;
                JoinMode::LatestVisibleBy {
                    rank_time: cast_unless(rank_time, &rank_type, &right_type),
                }
            }
            other => other,
        };
        self.options.mode = mode;
        self.options.validate()?;
        Ok(self)
    }

    /// Drop the left rows without a winner instead of keeping them with NULLs.
    pub fn inner(mut self) -> Self {
        self.options.inner = true;
        self
    }

    /// Wrap into a `LogicalPlan`.
    pub fn into_plan(self) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(self),
        })
    }

    /// How the feature view the right side scans is partitioned by time, when the right
    /// side is such a scan (under projections and aliases only): the physical planner puts
    /// a partition filter on it.
    pub fn right_partitioning(&self) -> Option<TimePartitioning> {
        scanned_partitioning(&self.right)
    }
}

/// How the feature view `plan` scans is partitioned by time, when `plan` is such a scan
/// (under projections and aliases only).
pub fn scanned_partitioning(plan: &LogicalPlan) -> Option<TimePartitioning> {
    match plan {
        LogicalPlan::Projection(p) => scanned_partitioning(&p.input),
        LogicalPlan::SubqueryAlias(a) => scanned_partitioning(&a.input),
        LogicalPlan::TableScan(scan) => {
            let provider = source_as_provider(&scan.source).ok()?;
            FeatureViewTable::of(provider.as_ref())?.time_partitioning()
        }
        _ => None,
    }
}

/// The tie-breaker is compared as an instant or an integer (in the domain its type shares
/// with itself).
fn check_tie_breaker(tie: &Expr, tie_type: &DataType) -> Result<()> {
    if TimeDomain::common(tie_type, tie_type).is_none() {
        return plan_err!(
            "the tie-breaker {tie} must be a TIMESTAMP, DATE or integer column, found {tie_type}"
        );
    }
    Ok(())
}

/// The view's column `name` in `plan`, qualified as `plan` qualifies it.
pub fn view_column(plan: &LogicalPlan, view: &FeatureView, name: &str) -> Result<Expr> {
    let (qualifier, field) = plan
        .schema()
        .qualified_field_with_unqualified_name(name)
        .map_err(|_| plan_datafusion_err!("feature view {} has no column {name}", view.name))?;
    Ok(Expr::Column(Column::new(qualifier.cloned(), field.name())))
}

/// When a row became visible: the later of its event and created times, NULL if either is
/// (Feast compares `created <= spine time`, which a NULL never passes). Both are read in the
/// finer of their units; they must agree on the time zone.
fn visible_time(event: Expr, created: Expr, schema: &DFSchema, view: &str) -> Result<Expr> {
    let event_type = event.get_type(schema)?;
    let created_type = created.get_type(schema)?;
    let common = match (&event_type, &created_type) {
        (a, b) if a == b => a.clone(),
        (DataType::Timestamp(unit, za), DataType::Timestamp(_, zb)) if za == zb => {
            let finer = match TimeDomain::common(&event_type, &created_type) {
                Some(TimeDomain::Instant(finer)) => finer,
                _ => *unit,
            };
            DataType::Timestamp(finer, za.clone())
        }
        _ => {
            return plan_err!(
                "filter_by_created_timestamp compares the timestamp and created columns of feature view {view}, but they are {event_type} and {created_type}; give them one time zone"
            );
        }
    };
    let (event, created) = (
        cast_unless(event, &event_type, &common),
        cast_unless(created, &created_type, &common),
    );
    let null = Expr::Literal(ScalarValue::try_from(&common)?, None);
    when(created.clone().is_null(), null)
        .when(created.clone().gt(event.clone()), created)
        .otherwise(event)
}

/// Cast a key pair to the type both compare in, or explain why they cannot be compared.
pub(super) fn coerce_key_pair(
    left: Expr,
    right: Expr,
    left_schema: &DFSchema,
    right_schema: &DFSchema,
) -> Result<(Expr, Expr)> {
    let lt = left.get_type(left_schema)?;
    let rt = right.get_type(right_schema)?;
    if lt == rt {
        return Ok((left, right));
    }
    let Some(common) = comparison_coercion(&lt, &rt) else {
        return plan_err!(
            "ASOF JOIN cannot compare the keys {left} ({lt}) and {right} ({rt}); cast one side"
        );
    };
    Ok((
        cast_unless(left, &lt, &common),
        cast_unless(right, &rt, &common),
    ))
}

/// `expr` (of type `from`) as a value of type `to`: cast, unless it already is one.
fn cast_unless(expr: Expr, from: &DataType, to: &DataType) -> Expr {
    if from == to {
        expr
    } else {
        cast(expr, to.clone())
    }
}

impl PartialOrd for AsOfJoin {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        // The schema is derived from the inputs, so it takes no part in ordering.
        (&self.left, &self.right, &self.options).partial_cmp(&(
            &other.left,
            &other.right,
            &other.options,
        ))
    }
}

impl UserDefinedLogicalNodeCore for AsOfJoin {
    fn name(&self) -> &str {
        "AsOfJoin"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.left, &self.right]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    /// In the order of [`AsOfJoinOptions::exprs`].
    fn expressions(&self) -> Vec<Expr> {
        self.options.exprs().into_iter().cloned().collect()
    }

    /// Filters are never pushed through generically: DataFusion would push a predicate into
    /// both inputs, and a filter on the right input changes which row wins. The
    /// `PushDownAsOfFilter` rule pushes left-only predicates to the left input instead.
    fn prevent_predicate_push_down_columns(&self) -> HashSet<String> {
        self.schema
            .columns()
            .into_iter()
            .map(|c: Column| c.name)
            .collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "AsOfJoin: ")?;
        fmt_attributes(f, &self.options.attributes(), false)
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        let [left, right]: [LogicalPlan; 2] = inputs
            .try_into()
            .map_err(|_| internal_datafusion_err!("AsOfJoin has two inputs"))?;
        let schema = Arc::new(build_join_schema(
            left.schema(),
            right.schema(),
            &JoinType::Left,
        )?);
        Ok(Self {
            left: Arc::new(left),
            right: Arc::new(right),
            options: self.options.with_exprs(exprs)?,
            schema,
        })
    }

    /// Output columns map to the input they come from; `expressions()` adds the keys and
    /// times. Every right column that is kept also takes part in the exact-tie rule, so the
    /// rule only ever compares columns the query reads.
    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        let left_len = self.left.schema().fields().len();
        let (mut left, mut right) = (vec![], vec![]);
        for &i in output_columns {
            if i < left_len {
                left.push(i);
            } else {
                right.push(i - left_len);
            }
        }
        Some(vec![left, right])
    }

    fn supports_limit_pushdown(&self) -> bool {
        // A LIMIT may go to the left input only; DataFusion pushes into every input.
        false
    }
}
