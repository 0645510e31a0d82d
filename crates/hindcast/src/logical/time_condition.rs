//! The one reader of point-in-time conditions: a time comparison between the two inputs,
//! plus an optional bound on the distance (the TTL), plus key equalities.
//!
//! Both `MATCH_CONDITION` (`crate::sql`) and the `ROW_NUMBER` rewrite ([`super::row_number`])
//! classify their AND-ed terms with [`Term::classify`] and keep what their grammar allows;
//! they differ only in what they do with the rest (an error, or leaving the query alone).

use std::collections::HashSet;

use datafusion::common::{Column, DFSchema, ScalarValue};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};

use super::MatchOp;

/// `left_time <op> right_time`, with an optional TTL as written (a literal).
#[derive(Debug, Clone, PartialEq)]
pub struct TimeCondition {
    /// Reads the left input only.
    pub left_time: Expr,
    pub op: MatchOp,
    /// Reads the right input only.
    pub right_time: Expr,
    pub ttl: Option<ScalarValue>,
}

/// A bound on how far apart two times may be: `later - earlier <= amount`, in one of its
/// spellings: `later - earlier <= c`, `later - c <= earlier`, `later <= earlier + c` (and
/// the same with the operands swapped, or `<` for a strict bound).
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    pub later: Expr,
    pub earlier: Expr,
    pub amount: ScalarValue,
    /// Written with `<` (or `>`): the grammar's TTL is inclusive.
    pub strict: bool,
    /// Written as a difference of the two times (`later - earlier <= c`), rather than one
    /// time shifted by the constant.
    pub difference: bool,
}

/// One AND-ed term of a join condition, as the point-in-time grammar reads it.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// An inequality between a left and a right expression, neither of them a time shifted
    /// by a constant (that is a [`Bound`]); its `ttl` is `None`.
    Compare(TimeCondition),
    Bound(Bound),
    /// `left = right`, a left and a right expression.
    KeyEquality(Expr, Expr),
    /// Anything else.
    Other,
}

impl Term {
    pub fn classify(expr: &Expr, left: &DFSchema, right: &DFSchema) -> Term {
        let Expr::BinaryExpr(BinaryExpr {
            left: a,
            op,
            right: b,
        }) = expr
        else {
            return Term::Other;
        };
        let (a, b) = (a.as_ref(), b.as_ref());
        // Operands in input order: `(left side, right side, swapped)`.
        let sides = if only_refs(a, left) && only_refs(b, right) {
            Some((a, b, false))
        } else if only_refs(a, right) && only_refs(b, left) {
            Some((b, a, true))
        } else {
            None
        };
        if *op == Operator::Eq {
            return match sides {
                Some((l, r, _)) => Term::KeyEquality(l.clone(), r.clone()),
                None => Term::Other,
            };
        }
        let Ok(match_op) = MatchOp::try_from(*op) else {
            return Term::Other;
        };
        if let Some(bound) = as_bound(a, match_op, b) {
            return Term::Bound(bound);
        }
        match sides {
            Some((l, r, swapped)) if !is_shifted(l) && !is_shifted(r) => {
                Term::Compare(TimeCondition {
                    left_time: l.clone(),
                    op: if swapped { match_op.swap() } else { match_op },
                    right_time: r.clone(),
                    ttl: None,
                })
            }
            _ => Term::Other,
        }
    }
}

impl TimeCondition {
    /// Whether `bound` limits the distance this comparison looks across: `left - right`
    /// for backward joins, `right - left` for forward ones.
    pub fn is_bounded_by(&self, bound: &Bound) -> bool {
        let (later, earlier) = if self.op.is_backward() {
            (&self.left_time, &self.right_time)
        } else {
            (&self.right_time, &self.left_time)
        };
        bound.later == *later && bound.earlier == *earlier
    }
}

/// `a op b` as a [`Bound`], if it is one.
fn as_bound(a: &Expr, op: MatchOp, b: &Expr) -> Option<Bound> {
    // As `small <= big` (or `<`).
    let (small, big) = if op.is_backward() { (b, a) } else { (a, b) };
    let strict = op.is_strict();
    let bound = |later: &Expr, earlier: &Expr, amount: ScalarValue, difference| Bound {
        later: later.clone(),
        earlier: earlier.clone(),
        amount,
        strict,
        difference,
    };
    if let Some((x, y)) = as_minus(small) {
        match (as_literal(x), as_literal(y), as_literal(big)) {
            // later - earlier <= c
            (None, None, Some(c)) => return Some(bound(x, y, c, true)),
            // later - c <= earlier
            (None, Some(c), None) => return Some(bound(x, big, c, false)),
            _ => {}
        }
    }
    // later <= earlier + c
    if as_literal(small).is_none()
        && let Some((y, c)) = as_plus_literal(big)
    {
        return Some(bound(small, y, c, false));
    }
    None
}

fn as_minus(expr: &Expr) -> Option<(&Expr, &Expr)> {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Minus,
            right,
        }) => Some((left, right)),
        _ => None,
    }
}

/// `x + c` or `c + x` with a literal `c`.
fn as_plus_literal(expr: &Expr) -> Option<(&Expr, ScalarValue)> {
    let Expr::BinaryExpr(BinaryExpr {
        left,
        op: Operator::Plus,
        right,
    }) = expr
    else {
        return None;
    };
    match (as_literal(left), as_literal(right)) {
        (None, Some(c)) => Some((left, c)),
        (Some(c), None) => Some((right, c)),
        _ => None,
    }
}

fn as_literal(expr: &Expr) -> Option<ScalarValue> {
    match expr {
        Expr::Literal(value, _) => Some(value.clone()),
        Expr::Negative(inner) => as_literal(inner)?.arithmetic_negate().ok(),
        _ => None,
    }
}

/// `x + c`, `c + x` or `x - c` with a literal `c`: a time shifted by a constant.
fn is_shifted(expr: &Expr) -> bool {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Plus | Operator::Minus,
            right,
        }) => as_literal(left).is_some() || as_literal(right).is_some(),
        _ => false,
    }
}

/// Whether `expr` is deterministic, reads at least one column, and only columns of `schema`.
pub fn only_refs(expr: &Expr, schema: &DFSchema) -> bool {
    let refs: HashSet<&Column> = expr.column_refs();
    !refs.is_empty() && !expr.is_volatile() && refs.iter().all(|c| schema.has_column(c))
}
