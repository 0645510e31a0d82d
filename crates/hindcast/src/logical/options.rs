//! [`AsOfJoinOptions`]: what an ASOF join computes, apart from its inputs.
//!
//! One type for the logical node ([`super::AsOfJoin`], expressions as [`Expr`]), the
//! operator and its stream (`crate::physical::AsOfJoinExec`, as `PhysicalExprRef`), so an
//! option is added, rebuilt, rendered in `EXPLAIN` and (later) encoded in one place.
//!
//! [`Expr`]: datafusion::logical_expr::Expr

use std::fmt;

use datafusion::common::{JoinSide, Result, internal_err, plan_err};
use datafusion::logical_expr::Operator;

use crate::time::{DisplayTtl, TimeDomain};

/// The match condition's comparison, read as `left_time <op> right_time`, or the nearest
/// row on either side.
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
    /// `nearest(l.ts, r.ts)`: the right row closest in time on either side; at equal
    /// distance the earlier one (pandas' `direction='nearest'`).
    Nearest,
    /// `nearest(l.ts, r.ts) AND l.ts <> r.ts`: the same among right rows not at exactly the
    /// left row's time (`allow_exact_matches=False`).
    NearestExclusive,
}

impl MatchOp {
    /// Backward joins look into the past of the left row only.
    pub fn is_backward(&self) -> bool {
        matches!(self, MatchOp::GtEq | MatchOp::Gt)
    }

    /// Whether a right row before the left row can win (backward and nearest joins).
    pub fn looks_back(&self) -> bool {
        !matches!(self, MatchOp::LtEq | MatchOp::Lt)
    }

    /// Whether a right row after the left row can win (forward and nearest joins).
    pub fn looks_forward(&self) -> bool {
        !self.is_backward()
    }

    pub fn is_nearest(&self) -> bool {
        matches!(self, MatchOp::Nearest | MatchOp::NearestExclusive)
    }

    /// Strict joins exclude right rows at exactly the left row's time.
    pub fn is_strict(&self) -> bool {
        matches!(self, MatchOp::Gt | MatchOp::Lt | MatchOp::NearestExclusive)
    }

    /// The same condition with its operands swapped (`a >= b` is `b <= a`).
    pub fn swap(&self) -> Self {
        match self {
            MatchOp::GtEq => MatchOp::LtEq,
            MatchOp::Gt => MatchOp::Lt,
            MatchOp::LtEq => MatchOp::GtEq,
            MatchOp::Lt => MatchOp::Gt,
            MatchOp::Nearest | MatchOp::NearestExclusive => *self,
        }
    }

    /// The condition in SQL over the two time expressions.
    pub fn sql(&self, left: impl fmt::Display, right: impl fmt::Display) -> String {
        match self {
            MatchOp::Nearest => format!("nearest({left}, {right})"),
            MatchOp::NearestExclusive => format!("nearest({left}, {right}) AND {left} <> {right}"),
            op => format!("{left} {op} {right}"),
        }
    }
}

impl TryFrom<Operator> for MatchOp {
    type Error = Operator;

    /// The four inequalities; any other operator is given back.
    fn try_from(op: Operator) -> std::result::Result<Self, Operator> {
        match op {
            Operator::GtEq => Ok(MatchOp::GtEq),
            Operator::Gt => Ok(MatchOp::Gt),
            Operator::LtEq => Ok(MatchOp::LtEq),
            Operator::Lt => Ok(MatchOp::Lt),
            other => Err(other),
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
            MatchOp::Nearest => "nearest",
            MatchOp::NearestExclusive => "nearest, exclusive",
        })
    }
}

/// Which rows the join outputs and how the winner is ranked. One enum, so the modes that do
/// not combine cannot be asked for together.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub enum JoinMode<E> {
    /// One output row per left row: its winner, or NULLs.
    Winner,
    /// One output row per run of left rows with equal keys and time (the first), as
    /// `ROW_NUMBER() OVER (PARTITION BY keys, time) = 1` keeps; set by the ROW_NUMBER rewrite.
    DistinctSpine,
    /// Every right row tied with the winner on time and tie-breaker, one output row each, as
    /// `RANK() OVER (... ORDER BY time DESC[, tie-breaker DESC]) = 1` keeps; set by the
    /// rewrite.
    KeepTies,
    /// Feast's `filter_by_created_timestamp`: the join's right time is the instant a row
    /// became visible (the later of its event and created times), and among the rows visible
    /// at a left row's time the winner is the one with the latest `rank_time` (its event
    /// time), then the tie-breaker. The TTL bounds `rank_time`. Backward joins only.
    LatestVisibleBy { rank_time: E },
}

/// Everything an ASOF join computes besides its two inputs, with expressions of type `E`.
/// See `docs/semantics.md`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct AsOfJoinOptions<E> {
    /// Equality keys `(left, right)`, of one type per pair.
    pub on: Vec<(E, E)>,
    pub left_time: E,
    pub right_time: E,
    pub op: MatchOp,
    /// The scale both time expressions are compared in.
    pub domain: TimeDomain,
    /// Inclusive bound on `|left_time - right_time|` in `domain` ticks; `None` is no bound
    /// (zero is a bound: the same instant only).
    pub ttl: Option<i64>,
    /// Right-side expression whose larger value wins among rows tied on time (Feast's
    /// created timestamp).
    pub tie_breaker: Option<E>,
    pub mode: JoinMode<E>,
    /// Left rows without a winner are dropped instead of kept with NULLs: DuckDB's inner
    /// `ASOF JOIN ... ON`, an inner `ROW_NUMBER` query.
    pub inner: bool,
}

impl<E> AsOfJoinOptions<E> {
    /// The options with every expression mapped by `f`, which is told the side it reads.
    /// Expressions are visited in the order of [`Self::exprs`].
    pub fn try_map<F>(
        &self,
        mut f: impl FnMut(JoinSide, &E) -> Result<F>,
    ) -> Result<AsOfJoinOptions<F>> {
        let mut side = |side: JoinSide, keys: Vec<&E>, time: &E| -> Result<(Vec<F>, F)> {
            let keys = keys
                .into_iter()
                .map(|k| f(side, k))
                .collect::<Result<_>>()?;
            Ok((keys, f(side, time)?))
        };
        let (left_keys, left_time) =
            side(JoinSide::Left, self.left_keys().collect(), &self.left_time)?;
        let (right_keys, right_time) = side(
            JoinSide::Right,
            self.right_keys().collect(),
            &self.right_time,
        )?;
        let tie_breaker = self
            .tie_breaker
            .as_ref()
            .map(|e| f(JoinSide::Right, e))
            .transpose()?;
        let mode = match &self.mode {
            JoinMode::Winner => JoinMode::Winner,
            JoinMode::DistinctSpine => JoinMode::DistinctSpine,
            JoinMode::KeepTies => JoinMode::KeepTies,
            JoinMode::LatestVisibleBy { rank_time } => JoinMode::LatestVisibleBy {
                rank_time: f(JoinSide::Right, rank_time)?,
            },
        };
        Ok(AsOfJoinOptions {
            on: left_keys.into_iter().zip(right_keys).collect(),
            left_time,
            right_time,
            op: self.op,
            domain: self.domain,
            ttl: self.ttl,
            tie_breaker,
            mode,
            inner: self.inner,
        })
    }

    /// Every expression: left keys, left time, right keys, right time, then the
    /// tie-breaker and rank time if any.
    pub fn exprs(&self) -> Vec<&E> {
        let mut exprs: Vec<&E> = self.on.iter().map(|(l, _)| l).collect();
        exprs.push(&self.left_time);
        exprs.extend(self.on.iter().map(|(_, r)| r));
        exprs.push(&self.right_time);
        exprs.extend(&self.tie_breaker);
        exprs.extend(self.rank_time());
        exprs
    }

    /// The same options over `exprs`, given in the order of [`Self::exprs`].
    pub fn with_exprs<F>(&self, exprs: Vec<F>) -> Result<AsOfJoinOptions<F>> {
        let expected = self.exprs().len();
        if exprs.len() != expected {
            return internal_err!(
                "an ASOF join has {expected} expressions, got {}",
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

    /// See [`JoinMode::LatestVisibleBy`].
    pub fn rank_time(&self) -> Option<&E> {
        match &self.mode {
            JoinMode::LatestVisibleBy { rank_time } => Some(rank_time),
            _ => None,
        }
    }

    pub fn keep_ties(&self) -> bool {
        matches!(self.mode, JoinMode::KeepTies)
    }

    pub fn distinct_spine(&self) -> bool {
        matches!(self.mode, JoinMode::DistinctSpine)
    }

    /// Check what the types cannot: a rank time needs a backward join, and keeping ties
    /// one direction (the tie group of the row on the side the join looks).
    pub fn validate(&self) -> Result<()> {
        if self.rank_time().is_some() && !self.op.is_backward() {
            return plan_err!(
                "filtering by created timestamp needs a backward join (the latest row at or before the spine time)"
            );
        }
        if self.keep_ties() && self.op.is_nearest() {
            return plan_err!("keeping tied rows needs a backward or forward join, not nearest");
        }
        Ok(())
    }
}

impl<E: fmt::Display> AsOfJoinOptions<E> {
    /// The options as `EXPLAIN` shows them, in both plans: `(name, value)`, or a bare name
    /// for a flag.
    pub fn attributes(&self) -> Vec<(&'static str, Option<String>)> {
        let on = self
            .on
            .iter()
            .map(|(l, r)| format!("{l} = {r}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut attributes = vec![
            ("on", Some(format!("[{on}]"))),
            (
                "match",
                Some(format!(
                    "[{}]",
                    self.op.sql(&self.left_time, &self.right_time)
                )),
            ),
        ];
        if let Some(ttl) = self.ttl {
            attributes.push(("ttl", Some(DisplayTtl(self.domain, ttl).to_string())));
        }
        if let Some(tie) = &self.tie_breaker {
            attributes.push(("tie_breaker", Some(format!("[{tie} DESC]"))));
        }
        if self.inner {
            attributes.push(("inner", None));
        }
        match &self.mode {
            JoinMode::Winner => {}
            JoinMode::DistinctSpine => attributes.push(("distinct_spine", None)),
            JoinMode::KeepTies => attributes.push(("keep_ties", None)),
            JoinMode::LatestVisibleBy { rank_time } => {
                attributes.push(("latest_visible_by", Some(format!("[{rank_time}]"))));
            }
        }
        attributes
    }
}

/// `name=value, flag, ...` on one line (`EXPLAIN`), or one per line (`EXPLAIN FORMAT TREE`).
pub fn fmt_attributes(
    f: &mut fmt::Formatter<'_>,
    attributes: &[(&'static str, Option<String>)],
    one_per_line: bool,
) -> fmt::Result {
    for (i, (name, value)) in attributes.iter().enumerate() {
        if !one_per_line && i > 0 {
            f.write_str(", ")?;
        }
        match value {
            Some(value) => write!(f, "{name}={value}")?,
            None => f.write_str(name)?,
        }
        if one_per_line {
            writeln!(f)?;
        }
    }
    Ok(())
}
