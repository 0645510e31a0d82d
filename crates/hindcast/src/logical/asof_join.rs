//! `AsOfJoin`: the logical point-in-time join node.
//!
//! Every SQL form hindcast accepts (`ASOF JOIN ... MATCH_CONDITION`, and later temporal joins
//! and rewritten `ROW_NUMBER()` queries) ends up as this one node, which the physical planner
//! turns into [`crate::physical::AsOfJoinExec`].

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{
    Column, DFSchema, DFSchemaRef, JoinType, Result, ScalarValue, internal_datafusion_err,
    internal_err, plan_err,
};
use datafusion::logical_expr::logical_plan::builder::build_join_schema;
use datafusion::logical_expr::type_coercion::binary::comparison_coercion;
use datafusion::logical_expr::{
    Expr, ExprSchemable, Extension, LogicalPlan, UserDefinedLogicalNodeCore, cast,
};

use crate::time::{DisplayTtl, TimeDomain};

/// The match condition's comparison, read as `left_time <op> right_time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub enum MatchOp {
    /// `l.ts >= r.ts`: the latest right row at or before the left row (features).
    GtEq,
    /// `l.ts > r.ts`: the latest right row strictly before.
    Gt,
    /// `l.ts <= r.ts`: the earliest right row at or after.
    LtEq,
    /// `l.ts < r.ts`: the earliest right row strictly after.
    Lt,
}

impl MatchOp {
    /// Backward joins look into the past of the left row.
    pub fn is_backward(&self) -> bool {
        matches!(self, MatchOp::GtEq | MatchOp::Gt)
    }

    /// Strict joins exclude right rows at exactly the left row's time.
    pub fn is_strict(&self) -> bool {
        matches!(self, MatchOp::Gt | MatchOp::Lt)
    }

    /// The same condition with its operands swapped (`a >= b` is `b <= a`).
    pub fn swap(&self) -> Self {
        match self {
            MatchOp::GtEq => MatchOp::LtEq,
            MatchOp::Gt => MatchOp::Lt,
            MatchOp::LtEq => MatchOp::GtEq,
            MatchOp::Lt => MatchOp::Gt,
        }
    }
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatchOp::GtEq => ">=",
            MatchOp::Gt => ">",
            MatchOp::LtEq => "<=",
            MatchOp::Lt => "<",
        })
    }
}

/// For every left row, the one right row with equal keys that is closest in time on the
/// side `op` allows, within `ttl`; left rows without one get NULLs. See `docs/semantics.md`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsOfJoin {
    pub left: Arc<LogicalPlan>,
    pub right: Arc<LogicalPlan>,
    /// Equality keys `(left, right)`, already cast to a common type per pair.
    pub on: Vec<(Expr, Expr)>,
    pub left_time: Expr,
    pub right_time: Expr,
    pub op: MatchOp,
    /// The scale both time expressions are compared in.
    pub domain: TimeDomain,
    /// Inclusive bound on `|left_time - right_time|` in `domain` ticks; `None` is unbounded.
    pub ttl: Option<i64>,
    /// Right-side column whose larger value wins among rows tied on time (Feast's
    /// created timestamp).
    pub tie_breaker: Option<Expr>,
    /// Feast's `filter_by_created_timestamp`: when set, `right_time` is the instant a row
    /// became visible (the later of its event and created times), and among the rows visible
    /// at a left row's time the winner is the one with the latest `rank_time` (its event
    /// time), then the tie-breaker. The TTL bounds `rank_time`. Backward joins only.
    pub rank_time: Option<Expr>,
    /// Emit one row per run of left rows with equal keys and time (the first), as
    /// `ROW_NUMBER() OVER (PARTITION BY keys, time) = 1` does; set by the ROW_NUMBER rewrite.
    pub distinct_spine: bool,
    /// Emit every right row tied with the winner on time and tie-breaker, one output row
    /// each, as `RANK() OVER (... ORDER BY time DESC[, tie-breaker DESC]) = 1` keeps; set by
    /// the rewrite. Not combined with `rank_time` or `distinct_spine`.
    pub keep_ties: bool,
    pub schema: DFSchemaRef,
}

impl AsOfJoin {
    /// Validate and build the node. `ttl` is the literal the user wrote (`None` for none).
    #[expect(clippy::too_many_arguments)]
    pub fn try_new(
        left: Arc<LogicalPlan>,
        right: Arc<LogicalPlan>,
        on: Vec<(Expr, Expr)>,
        left_time: Expr,
        right_time: Expr,
        op: MatchOp,
        ttl: Option<ScalarValue>,
        tie_breaker: Option<Expr>,
    ) -> Result<Self> {
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
        let ttl = match ttl {
            Some(value) => domain.ttl_from_scalar(&value)?,
            None => None,
        };
        if let Some(tie) = &tie_breaker {
            let tie_type = tie.get_type(right_schema.as_ref())?;
            if !tie_type.is_integer()
                && !matches!(
                    tie_type,
                    DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
                )
            {
                return plan_err!(
                    "the tie-breaker {tie} must be a TIMESTAMP, DATE or integer column, found {tie_type}"
                );
            }
        }
        let schema = Arc::new(build_join_schema(
            left_schema,
            right_schema,
            &JoinType::Left,
        )?);
        Ok(Self {
            left,
            right,
            on,
            left_time,
            right_time,
            op,
            domain,
            ttl,
            tie_breaker,
            rank_time: None,
            distinct_spine: false,
            keep_ties: false,
            schema,
        })
    }

    pub fn with_distinct_spine(mut self) -> Self {
        self.distinct_spine = true;
        self
    }

    pub fn with_keep_ties(mut self) -> Self {
        self.keep_ties = true;
        self
    }

    /// Rank visible rows by `rank_time` (see the field); `right_time` must already be the
    /// visibility time.
    pub fn with_rank_time(mut self, rank_time: Expr) -> Result<Self> {
        if !self.op.is_backward() {
            return plan_err!(
                "filtering by created timestamp needs a backward join (the latest row at or before the spine time)"
            );
        }
        let right_schema = self.right.schema();
        let right_type = self.right_time.get_type(right_schema.as_ref())?;
        let rank_type = rank_time.get_type(right_schema.as_ref())?;
        // One type, so the operator reads both in the join's time domain.
        self.rank_time = Some(if rank_type == right_type {
            rank_time
        } else {
            cast(rank_time, right_type)
        });
        Ok(self)
    }

    /// Wrap into a `LogicalPlan`.
    pub fn into_plan(self) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(self),
        })
    }

    fn right_exprs(&self) -> impl Iterator<Item = &Expr> {
        self.on
            .iter()
            .map(|(_, r)| r)
            .chain(std::iter::once(&self.right_time))
            .chain(self.tie_breaker.iter())
            .chain(self.rank_time.iter())
    }
}

/// Cast a key pair to the type both compare in, or explain why they cannot be compared.
fn coerce_key_pair(
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
    let coerce = |e: Expr, t: &DataType| {
        if *t == common {
            e
        } else {
            cast(e, common.clone())
        }
    };
    Ok((coerce(left, &lt), coerce(right, &rt)))
}

impl PartialOrd for AsOfJoin {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        // The schema is derived from the inputs, so it takes no part in ordering.
        (
            &self.left,
            &self.right,
            &self.on,
            &self.left_time,
            &self.right_time,
            &self.op,
            &self.domain,
            &self.ttl,
            &self.tie_breaker,
            &self.rank_time,
            &self.distinct_spine,
            &self.keep_ties,
        )
            .partial_cmp(&(
                &other.left,
                &other.right,
                &other.on,
                &other.left_time,
                &other.right_time,
                &other.op,
                &other.domain,
                &other.ttl,
                &other.tie_breaker,
                &other.rank_time,
                &other.distinct_spine,
                &other.keep_ties,
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

    /// Left keys, left time, right keys, right time, then the tie-breaker and rank time if
    /// any.
    fn expressions(&self) -> Vec<Expr> {
        self.on
            .iter()
            .map(|(l, _)| l.clone())
            .chain(std::iter::once(self.left_time.clone()))
            .chain(self.right_exprs().cloned())
            .collect()
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
        write!(f, "AsOfJoin: on=[")?;
        for (i, (l, r)) in self.on.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{l} = {r}")?;
        }
        write!(
            f,
            "], match=[{} {} {}]",
            self.left_time, self.op, self.right_time
        )?;
        if let Some(ttl) = self.ttl {
            write!(f, ", ttl={}", DisplayTtl(self.domain, ttl))?;
        }
        if let Some(tie) = &self.tie_breaker {
            write!(f, ", tie_breaker=[{tie} DESC]")?;
        }
        if let Some(rank) = &self.rank_time {
            write!(f, ", latest_visible_by=[{rank}]")?;
        }
        if self.distinct_spine {
            write!(f, ", distinct_spine")?;
        }
        if self.keep_ties {
            write!(f, ", keep_ties")?;
        }
        Ok(())
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        let [left, right]: [LogicalPlan; 2] = inputs
            .try_into()
            .map_err(|_| internal_datafusion_err!("AsOfJoin has two inputs"))?;
        let n = self.on.len();
        let expected = 2 * n
            + 2
            + usize::from(self.tie_breaker.is_some())
            + usize::from(self.rank_time.is_some());
        if exprs.len() != expected {
            return internal_err!(
                "AsOfJoin expects {expected} expressions, got {}",
                exprs.len()
            );
        }
        let mut exprs = exprs.into_iter();
        let left_keys: Vec<Expr> = exprs.by_ref().take(n).collect();
        let left_time = exprs.next().expect("length checked");
        let right_keys: Vec<Expr> = exprs.by_ref().take(n).collect();
        let right_time = exprs.next().expect("length checked");
        let tie_breaker = self.tie_breaker.as_ref().and_then(|_| exprs.next());
        let rank_time = self.rank_time.as_ref().and_then(|_| exprs.next());
        let schema = Arc::new(build_join_schema(
            left.schema(),
            right.schema(),
            &JoinType::Left,
        )?);
        Ok(Self {
            left: Arc::new(left),
            right: Arc::new(right),
            on: left_keys.into_iter().zip(right_keys).collect(),
            left_time,
            right_time,
            op: self.op,
            domain: self.domain,
            ttl: self.ttl,
            tie_breaker,
            rank_time,
            distinct_spine: self.distinct_spine,
            keep_ties: self.keep_ties,
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
