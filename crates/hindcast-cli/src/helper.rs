//! The line editor's helper: completion of keywords and names, and multi-line input.

use datafusion::arrow::array::AsArray;
use hindcast::Hindcast;
use rustyline::completion::{Completer, Pair};
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper, Highlighter, Hinter};

use crate::input::{ends_statement, without_leading_comments};

/// Table, feature view, feature service and column names, for completion.
pub async fn names(hc: &Hindcast) -> Vec<String> {
    let mut names: Vec<String> = KEYWORDS.iter().map(|k| k.to_string()).collect();
    let query = "SELECT table_name, column_name FROM information_schema.columns \
                 WHERE table_schema NOT IN ('information_schema')";
    if let Ok(df) = hc.sql(query).await
        && let Ok(batches) = df.collect().await
    {
        for batch in batches {
            for column in batch.columns() {
                let values = column.as_string_opt::<i32>();
                if let Some(values) = values {
                    names.extend(values.iter().flatten().map(str::to_string));
                } else if let Some(values) = column.as_string_view_opt() {
                    names.extend(values.iter().flatten().map(str::to_string));
                }
            }
        }
    }
    names.extend(hc.registry().services().into_iter().map(|s| s.name));
    names.sort();
    names.dedup();
    names
}

const KEYWORDS: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "ORDER",
    "LIMIT",
    "JOIN",
    "LEFT",
    "ASOF",
    "MATCH_CONDITION",
    "ON",
    "USING",
    "AS",
    "OF",
    "FOR",
    "SYSTEM_TIME",
    "WITH",
    "CREATE",
    "FEATURE",
    "VIEW",
    "SERVICE",
    "ENTITY",
    "TIMESTAMP",
    "CREATED",
    "TTL",
    "INTERVAL",
    "STORED",
    "PARQUET",
    "CSV",
    "PARTITIONED",
    "LOCATION",
    "EXTERNAL",
    "TABLE",
    "DROP",
    "SHOW",
    "DESCRIBE",
    "EXPLAIN",
    "ANALYZE",
    "COPY",
    "TO",
    "AND",
    "OR",
    "NOT",
    "NULL",
    "historical_features",
    "latest_by",
];

/// Completion and multi-line input for the editor.
#[derive(Helper, Hinter, Highlighter)]
pub struct ShellHelper {
    pub names: Vec<String>,
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let start = line[..pos]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let word = &line[start..pos];
        if word.is_empty() {
            return Ok((start, vec![]));
        }
        let lower = word.to_lowercase();
        let candidates = self
            .names
            .iter()
            .filter(|n| n.to_lowercase().starts_with(&lower))
            .map(|n| {
                // Keywords follow the case the user types.
                let replacement = if n.chars().all(|c| c.is_uppercase() || c == '_')
                    && word.chars().all(|c| c.is_lowercase() || c == '_')
                {
                    n.to_lowercase()
                } else {
                    n.clone()
                };
                Pair {
                    display: n.clone(),
                    replacement,
                }
            })
            .collect();
        Ok((start, candidates))
    }
}

impl Validator for ShellHelper {
    /// A statement continues on the next line until it ends with `;` (outside quotes and
    /// comments); a meta-command is always one line.
    fn validate(&self, ctx: &mut ValidationContext) -> rustyline::Result<ValidationResult> {
        let input = without_leading_comments(ctx.input());
        if input.is_empty() || input.starts_with('\\') || ends_statement(input) {
            Ok(ValidationResult::Valid(None))
        } else {
            Ok(ValidationResult::Incomplete)
        }
    }
}
