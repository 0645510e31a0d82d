//! DuckDB's and ClickHouse's ASOF joins, `l ASOF [LEFT] JOIN r ON ... | USING (...)` (and
//! ClickHouse's `LEFT ASOF JOIN`), on top of sqlparser, which knows only Snowflake's
//! `ASOF JOIN r MATCH_CONDITION (...)`.
//!
//! A step on the tokens, before sqlparser reads them: each such join becomes
//! `ASOF JOIN r MATCH_CONDITION (<marker>) ON ...`, the marker saying which form it was
//! written in ([`OnForm`]). [`super::asof_join`] then reads the `ON` or `USING` clause by
//! DuckDB's rules. The marker is an ordinary identifier, so a statement printed back
//! (a view's definition) parses to the same join.
//!
//! Only the join's own keywords are read here; where the table factor ends is found by
//! skipping parentheses, so a subquery or a table function on the right is no problem.

use std::collections::BTreeMap;

use datafusion::common::{Result, plan_err};
use datafusion::sql::sqlparser::ast::Expr as SQLExpr;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan};

/// How an ASOF join without `MATCH_CONDITION` was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnForm {
    /// `ASOF JOIN ... ON`: DuckDB's inner join, unmatched left rows dropped.
    Inner,
    /// `ASOF LEFT JOIN ... ON` (or `LEFT ASOF JOIN`): every left row kept.
    Left,
}

const INNER_MARKER: &str = "__hc_asof_on_inner";
const LEFT_MARKER: &str = "__hc_asof_on_left";

impl OnForm {
    /// The form a parsed `MATCH_CONDITION` marks, if it is a marker.
    pub fn of(match_condition: &SQLExpr) -> Option<OnForm> {
        match match_condition {
            SQLExpr::Identifier(ident) if ident.value == INNER_MARKER => Some(OnForm::Inner),
            SQLExpr::Identifier(ident) if ident.value == LEFT_MARKER => Some(OnForm::Left),
            _ => None,
        }
    }

    fn marker(self) -> &'static str {
        match self {
            OnForm::Inner => INNER_MARKER,
            OnForm::Left => LEFT_MARKER,
        }
    }
}

/// Rewrite every ASOF join written with `ON`/`USING` (and no `MATCH_CONDITION`) into the
/// form sqlparser parses, with its marker.
pub fn rewrite_asof_on(tokens: Vec<TokenWithSpan>) -> Result<Vec<TokenWithSpan>> {
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len() + 4);
    // Where a marker goes (before the join's ON or USING), found when its ASOF is read; the
    // tokens in between are read on, since a subquery there may hold ASOF joins too.
    let mut markers: BTreeMap<usize, OnForm> = BTreeMap::new();
    let mut i = 0;
    while i < tokens.len() {
        if let Some(form) = markers.remove(&i) {
            let span = tokens[i].span;
            for token in [
                Token::make_keyword("MATCH_CONDITION"),
                Token::LParen,
                Token::make_word(form.marker(), None),
                Token::RParen,
            ] {
                out.push(TokenWithSpan::new(token, span));
            }
        }
        let Some((form, join_end)) = asof_join_at(&tokens, i)? else {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        };
        let span = tokens[i].span;
        out.push(TokenWithSpan::new(Token::make_keyword("ASOF"), span));
        out.push(TokenWithSpan::new(Token::make_keyword("JOIN"), span));
        match relation_end(&tokens, join_end) {
            // Snowflake's form: LEFT changes nothing, the join already keeps every left row.
            End::MatchCondition => {}
            End::Constraint(at) => {
                markers.insert(at, form);
            }
            End::Other(at) => {
                let found = match tokens.get(at) {
                    Some(t) if t.token != Token::EOF => format!("{} at {}", t.token, self::at(t)),
                    _ => "the end of the statement".into(),
                };
                return plan_err!(
                    "ASOF JOIN at {} needs its conditions: MATCH_CONDITION (l.ts >= r.ts) [ON ...], \
                     or DuckDB's ON l.k = r.k AND l.ts >= r.ts, or USING (k, ts); found {found}",
                    self::at(&tokens[i])
                );
            }
        }
        i = join_end;
    }
    Ok(out)
}

/// At `i`, `ASOF [LEFT [OUTER]] JOIN` or `LEFT [OUTER] ASOF JOIN`: its form and the index
/// after `JOIN`. An ASOF join of a kind hindcast does not have is an error.
fn asof_join_at(tokens: &[TokenWithSpan], i: usize) -> Result<Option<(OnForm, usize)>> {
    if !matches!(tokens[i].token, Token::Word(_)) {
        return Ok(None);
    }
    let words = next_words(tokens, i, 4);
    let keywords: Vec<Keyword> = words.iter().map(|(k, _)| *k).collect();
    let after = |n: usize| words[n - 1].1 + 1;
    use Keyword::{ASOF, FULL, INNER, JOIN, LEFT, OUTER, RIGHT};
    Ok(match keywords.as_slice() {
        [ASOF, JOIN, ..] => Some((OnForm::Inner, after(2))),
        [ASOF, LEFT, JOIN, ..] | [LEFT, ASOF, JOIN, ..] => Some((OnForm::Left, after(3))),
        [ASOF, LEFT, OUTER, JOIN] | [LEFT, OUTER, ASOF, JOIN] => Some((OnForm::Left, after(4))),
        [ASOF, kind @ (RIGHT | FULL | INNER), ..]
        | [kind @ (RIGHT | FULL | INNER), ASOF, ..]
        | [kind @ (RIGHT | FULL), OUTER, ASOF, ..] => {
            let at = at(&tokens[i]);
            return match kind {
                INNER => plan_err!(
                    "INNER with ASOF at {at}: write ASOF JOIN ... ON (DuckDB's inner ASOF join), \
                     or ASOF LEFT JOIN to keep every left row"
                ),
                _ => plan_err!(
                    "ASOF {kind:?} JOIN at {at} is not supported: an ASOF join keeps the rows of \
                     its left side; put the side whose rows you want first and use ASOF LEFT JOIN"
                ),
            };
        }
        _ => None,
    })
}

/// The keywords of the next `n` tokens from `i` that are not whitespace, with their
/// indices; a token that is not an unquoted keyword reads as `NoKeyword`.
fn next_words(tokens: &[TokenWithSpan], mut i: usize, n: usize) -> Vec<(Keyword, usize)> {
    let mut words = vec![];
    while i < tokens.len() && words.len() < n {
        match &tokens[i].token {
            Token::Whitespace(_) => {}
            Token::Word(w) if w.quote_style.is_none() => words.push((w.keyword, i)),
            _ => words.push((Keyword::NoKeyword, i)),
        }
        i += 1;
    }
    words
}

enum End {
    MatchCondition,
    /// `ON` or `USING`.
    Constraint(usize),
    /// Anything else that ends a join: the next join, a clause, a closing parenthesis.
    Other(usize),
}

/// Where the table factor starting at `i` ends, and what follows it.
fn relation_end(tokens: &[TokenWithSpan], mut i: usize) -> End {
    use Keyword::*;
    let mut depth = 0usize;
    while i < tokens.len() {
        match &tokens[i].token {
            Token::LParen => depth += 1,
            Token::RParen if depth == 0 => return End::Other(i),
            Token::RParen => depth -= 1,
            Token::Comma | Token::SemiColon | Token::EOF if depth == 0 => return End::Other(i),
            Token::Word(w) if depth == 0 && w.quote_style.is_none() => match w.keyword {
                MATCH_CONDITION => return End::MatchCondition,
                ON | USING => return End::Constraint(i),
                JOIN | INNER | LEFT | RIGHT | FULL | CROSS | NATURAL | ASOF | OUTER | SEMI
                | ANTI | LATERAL | APPLY | PIVOT | UNPIVOT | WHERE | GROUP | ORDER | LIMIT
                | OFFSET | HAVING | QUALIFY | WINDOW | UNION | EXCEPT | INTERSECT | FETCH => {
                    return End::Other(i);
                }
                _ => {}
            },
            _ => {}
        }
        i += 1;
    }
    End::Other(i)
}

/// `line L column C`, for errors.
fn at(token: &TokenWithSpan) -> String {
    let start = token.span.start;
    format!("line {} column {}", start.line, start.column)
}
