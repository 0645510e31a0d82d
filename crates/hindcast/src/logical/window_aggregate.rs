//! `WindowAggregateJoin`: the logical node of an aggregation feature view's join, and its
//! one options type.
//!
//! For every left (spine) row it adds each aggregate over the right rows (events) with equal
//! keys and times in `[t - window, t]`. `FOR SYSTEM_TIME AS OF` and `historical_features` on
//! an aggregation view build it; the physical planner turns it into
//! `crate::physical::WindowAggregateExec`.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::Field;
use datafusion::common::{
    Column, DFSchema, DFSchemaRef, JoinSide, Result, internal_datafusion_err, internal_err,
    plan_err,
};
use datafusion::logical_expr::{
    Expr, ExprSchemable, Extension, LogicalPlan, UserDefinedLogicalNodeCore,
};

use super::asof_join::coerce_key_pair;
use super::view_column;
use super::{MatchOp, fmt_attributes};
use crate::features::{AggregateFunction, FeatureView};
use crate::time::{DisplayTtl, TimeDomain};

/// One aggregate of the join: `function(argument)` over the events in `[t - window, t]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct WindowAggregate<E> {
    pub function: AggregateFunction,
    /// A right-side expression; `None` for `count(*)`.
    pub argument: Option<E>,
    /// The window's length in the join's time-domain ticks (inclusive at both ends).
    pub window: i64,
    pub name: String,
}

/// Everything a window aggregate join computes besides its inputs, with expressions of
/// type `E` (`Expr` in the logical node, `PhysicalExprRef` in the operator).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct WindowAggregateOptions<E> {
    /// Equality keys `(left, right)`, of one type per pair.
    pub on: Vec<(E, E)>,
    pub left_time: E,
    pub right_time: E,
    pub domain: TimeDomain,
    /// Right-side expressions that order events tied on key and time (the created time,
    /// then the aggregated columns): with them the events' order is total, so sums are added
    /// in the same order, and `last` picks the same event, for any partitioning or batching.
    pub tie_order: Vec<E>,
    /// The events' created time, when only created events count (Feast's
    /// `filter_by_created_timestamp`): an event enters a spine row's windows only if it was
    /// created at or before the row's time (never, with a NULL created time).
    pub created: Option<E>,
    pub aggregates: Vec<WindowAggregate<E>>,
}

impl<E> WindowAggregateOptions<E> {
    /// The options with every expression mapped by `f`, which is told the side it reads,
    /// in the order of [`Self::exprs`].
    pub fn try_map<F>(
        &self,
        mut f: impl FnMut(JoinSide, &E) -> Result<F>,
    ) -> Result<WindowAggregateOptions<F>> {
        let left_keys = self
            .on
            .iter()
            .map(|(l, _)| f(JoinSide::Left, l))
            .collect::<Result<Vec<_>>>()?;
        let left_time = f(JoinSide::Left, &self.left_time)?;
        let right_keys = self
            .on
            .iter()
            .map(|(_, r)| f(JoinSide::Right, r))
            .collect::<Result<Vec<_>>>()?;
        let right_time = f(JoinSide::Right, &self.right_time)?;
        let tie_order = self
            .tie_order
            .iter()
            .map(|e| f(JoinSide::Right, e))
            .collect::<Result<Vec<_>>>()?;
        let created = self
            .created
            .as_ref()
            .map(|e| f(JoinSide::Right, e))
            .transpose()?;
        let aggregates = self
            .aggregates
            .iter()
            .map(|a| {
                Ok(WindowAggregate {
                    function: a.function,
                    argument: a
                        .argument
                        .as_ref()
                        .map(|e| f(JoinSide::Right, e))
                        .transpose()?,
                    window: a.window,
                    name: a.name.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(WindowAggregateOptions {
            on: left_keys.into_iter().zip(right_keys).collect(),
            left_time,
            right_time,
            domain: self.domain,
            tie_order,
            created,
            aggregates,
        })
    }

    /// Every expression: left keys, left time, right keys, right time, the tie order, the
    /// created time if filtered by it, then each aggregate's argument.
    pub fn exprs(&self) -> Vec<&E> {
        let mut exprs: Vec<&E> = self.on.iter().map(|(l, _)| l).collect();
        exprs.push(&self.left_time);
        exprs.extend(self.on.iter().map(|(_, r)| r));
        exprs.push(&self.right_time);
        exprs.extend(&self.tie_order);
        exprs.extend(&self.created);
        exprs.extend(self.aggregates.iter().filter_map(|a| a.argument.as_ref()));
        exprs
    }

    /// The same options over `exprs`, given in the order of [`Self::exprs`].
    pub fn with_exprs<F>(&self, exprs: Vec<F>) -> Result<WindowAggregateOptions<F>> {
        let expected = self.exprs().len();
        if exprs.len() != expected {
            return internal_err!(
                "a window aggregate join has {expected} expressions, got {}",
                exprs.len()
            );
        }
        let mut exprs = exprs.into_iter();
        self.try_map(|_, _| Ok(exprs.next().expect("length checked")))
    }

    pub fn left_keys(&self) -> impl Iterator<Item = &E> {
        self.on.iter().map(|(l, _)| l)
    }

    pub fn right_keys(&self) -> impl Iterator<Item = &E> {
        self.on.iter().map(|(_, r)| r)
    }

    /// The longest window: how far back the events the join reads go.
    pub fn longest_window(&self) -> i64 {
        self.aggregates.iter().map(|a| a.window).max().unwrap_or(0)
    }

    /// The match its event scan is narrowed by, as an ASOF join's by its operator and TTL:
    /// backward, reaching back the longest window.
    pub fn reach(&self) -> (MatchOp, Option<i64>) {
        (MatchOp::GtEq, Some(self.longest_window()))
    }

    /// The distinct window lengths, shortest first.
    pub fn windows(&self) -> Vec<i64> {
        let mut windows: Vec<i64> = self.aggregates.iter().map(|a| a.window).collect();
        windows.sort_unstable();
        windows.dedup();
        windows
    }
}

impl<E: fmt::Display> WindowAggregateOptions<E> {
    /// The options as both `EXPLAIN`s show them.
    pub fn attributes(&self) -> Vec<(&'static str, Option<String>)> {
        let on = self
            .on
            .iter()
            .map(|(l, r)| format!("{l} = {r}"))
            .collect::<Vec<_>>()
            .join(", ");
        let windows = self
            .windows()
            .into_iter()
            .map(|w| DisplayTtl(self.domain, w).to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let aggregates = self
            .aggregates
            .iter()
            .map(|a| {
                let argument = a.argument.as_ref().map(|e| e.to_string());
                let call = a.function.call(argument.as_deref());
                format!(
                    "{call} OVER {} AS {}",
                    DisplayTtl(self.domain, a.window),
                    a.name
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut attributes = vec![
            ("on", Some(format!("[{on}]"))),
            (
                "match",
                Some(format!("[{} >= {}]", self.left_time, self.right_time)),
            ),
            ("windows", Some(format!("[{windows}]"))),
            ("aggregates", Some(format!("[{aggregates}]"))),
        ];
        if !self.tie_order.is_empty() {
            let order = self
                .tie_order
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(", ");
            attributes.push(("tie_order", Some(format!("[{order}]"))));
        }
        if let Some(created) = &self.created {
            attributes.push((
                "visible_by",
                Some(format!("[{created} <= {}]", self.left_time)),
            ));
        }
        attributes
    }
}

/// See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WindowAggregateJoin {
    pub left: Arc<LogicalPlan>,
    pub right: Arc<LogicalPlan>,
    pub options: WindowAggregateOptions<Expr>,
    pub schema: DFSchemaRef,
}

impl WindowAggregateJoin {
    /// The join of `left` with the aggregation view `right` reads, at `left_time`, on `on`,
    /// computing the view's aggregates named in `features` (all of them for `None`). With
    /// `filter_by_created`, a view's events count only once created (see
    /// [`WindowAggregateOptions::created`]).
    pub fn for_view(
        left: LogicalPlan,
        right: LogicalPlan,
        on: Vec<(Expr, Expr)>,
        left_time: Expr,
        view: &FeatureView,
        features: Option<&[String]>,
        filter_by_created: bool,
    ) -> Result<Self> {
        let (left_schema, right_schema) = (left.schema(), right.schema());
        let on = on
            .into_iter()
            .map(|(l, r)| coerce_key_pair(l, r, left_schema, right_schema))
            .collect::<Result<Vec<_>>>()?;
        let right_time = view_column(&right, view, &view.timestamp)?;
        let left_type = left_time.get_type(left_schema.as_ref())?;
        let right_type = right_time.get_type(right_schema.as_ref())?;
        let Some(domain) = TimeDomain::common(&left_type, &right_type) else {
            return plan_err!(
                "feature view {} cannot be joined at {left_time} ({left_type}): its TIMESTAMP {right_time} is {right_type}; \
                 both must be TIMESTAMP or DATE, or both integers",
                view.name
            );
        };
        // With the created filter, in the finest unit of the three times, so created times
        // finer than the spine's and the events' compare exactly.
        let (created, domain) = match (&view.created, filter_by_created) {
            (Some(created), true) => {
                let created = view_column(&right, view, created)?;
                let created_type = created.get_type(right_schema.as_ref())?;
                let Some(with_created) = TimeDomain::common(&right_type, &created_type) else {
                    return plan_err!(
                        "feature view {}: its CREATED {created} is {created_type} and its TIMESTAMP {right_time} is {right_type}; \
                         filtering by created timestamp needs both of the same kind",
                        view.name
                    );
                };
                let finer = match with_created.nanos_per_tick() < domain.nanos_per_tick() {
                    true => with_created,
                    false => domain,
                };
                (Some(created), finer)
            }
            _ => (None, domain),
        };
        let mut tie_order = vec![];
        for column in view
            .created
            .iter()
            .chain(view.aggregates.iter().filter_map(|a| a.argument.as_ref()))
        {
            let expr = view_column(&right, view, column)?;
            if !tie_order.contains(&expr) {
                tie_order.push(expr);
            }
        }
        let mut aggregates = vec![];
        for aggregate in &view.aggregates {
            if features.is_some_and(|wanted| !wanted.contains(&aggregate.name)) {
                continue;
            }
            aggregates.push(WindowAggregate {
                function: aggregate.function,
                argument: aggregate
                    .argument
                    .as_ref()
                    .map(|a| view_column(&right, view, a))
                    .transpose()?,
                window: domain
                    .ttl_from_scalar(&aggregate.window)
                    .map_err(|e| e.context(format!("feature view {}", view.name)))?,
                name: aggregate.name.clone(),
            });
        }
        let options = WindowAggregateOptions {
            on,
            left_time,
            right_time,
            domain,
            tie_order,
            created,
            aggregates,
        };
        Self::try_new(Arc::new(left), Arc::new(right), options)
    }

    pub fn try_new(
        left: Arc<LogicalPlan>,
        right: Arc<LogicalPlan>,
        options: WindowAggregateOptions<Expr>,
    ) -> Result<Self> {
        let schema = Arc::new(output_schema(&left, &right, &options)?);
        Ok(Self {
            left,
            right,
            options,
            schema,
        })
    }

    pub fn into_plan(self) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(self),
        })
    }
}

/// The left columns, then each aggregate under the qualifier of the right side's time
/// column (the view's name or alias).
fn output_schema(
    left: &LogicalPlan,
    right: &LogicalPlan,
    options: &WindowAggregateOptions<Expr>,
) -> Result<DFSchema> {
    let Expr::Column(Column { relation, .. }) = &options.right_time else {
        return internal_err!("a window aggregate join's right time is a column");
    };
    let right_schema = right.schema();
    let mut fields = vec![];
    for aggregate in &options.aggregates {
        let argument = aggregate
            .argument
            .as_ref()
            .map(|e| e.get_type(right_schema.as_ref()))
            .transpose()?;
        let data_type = aggregate.function.output_type(argument.as_ref())?;
        let nullable = aggregate.function.nullable();
        fields.push((
            relation.clone(),
            Arc::new(Field::new(&aggregate.name, data_type, nullable)),
        ));
    }
    let aggregates = DFSchema::new_with_metadata(fields, Default::default())?;
    left.schema().join(&aggregates)
}

impl PartialOrd for WindowAggregateJoin {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (&self.left, &self.right, &self.options).partial_cmp(&(
            &other.left,
            &other.right,
            &other.options,
        ))
    }
}

impl UserDefinedLogicalNodeCore for WindowAggregateJoin {
    fn name(&self) -> &str {
        "WindowAggregateJoin"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![&self.left, &self.right]
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    fn expressions(&self) -> Vec<Expr> {
        self.options.exprs().into_iter().cloned().collect()
    }

    /// A filter on the events changes the aggregates, and one on the spine is the
    /// `PushDownAsOfFilter` rule's business: nothing is pushed through generically.
    fn prevent_predicate_push_down_columns(&self) -> HashSet<String> {
        self.schema
            .columns()
            .into_iter()
            .map(|c: Column| c.name)
            .collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "WindowAggregateJoin: ")?;
        fmt_attributes(f, &self.options.attributes(), false)
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        let [left, right]: [LogicalPlan; 2] = inputs
            .try_into()
            .map_err(|_| internal_datafusion_err!("WindowAggregateJoin has two inputs"))?;
        Self::try_new(
            Arc::new(left),
            Arc::new(right),
            self.options.with_exprs(exprs)?,
        )
    }

    /// Left output columns come from the left input; the right input needs only what
    /// `expressions()` reads (keys, time, tie order, arguments), which DataFusion adds.
    fn necessary_children_exprs(&self, output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        let left_len = self.left.schema().fields().len();
        let left = output_columns
            .iter()
            .copied()
            .filter(|&i| i < left_len)
            .collect();
        Some(vec![left, vec![]])
    }

    fn supports_limit_pushdown(&self) -> bool {
        false
    }
}
