//! Errors as the shell shows them.

use datafusion::common::DataFusionError;

/// For a parse error that names a position ("at Line: 2, Column: 7"), that line of the
/// input with a caret under the column.
pub fn caret(sql: &str, e: &DataFusionError) -> Option<String> {
    let message = e.to_string();
    let number_after = |label: &str| -> Option<usize> {
        let start = message.rfind(label)? + label.len();
        let digits: String = message[start..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    let (line, column) = (number_after("Line: ")?, number_after("Column: ")?);
    let text = sql.lines().nth(line.checked_sub(1)?)?;
    let indent: String = text
        .chars()
        .take(column.saturating_sub(1))
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    Some(format!("  {text}\n  {indent}^"))
}

/// Errors as one readable line: DataFusion nests causes over several lines.
pub fn one_line(e: &DataFusionError) -> String {
    use datafusion::sql::sqlparser::parser::ParserError;
    match e {
        // DataFusion shows a parser error with `Debug` (`ParserError("...")`).
        DataFusionError::SQL(error, _) => match error.as_ref() {
            ParserError::ParserError(message) | ParserError::TokenizerError(message) => {
                format!("SQL error: {message}")
            }
            ParserError::RecursionLimitExceeded => {
                "SQL error: the statement nests too deeply".to_string()
            }
        },
        DataFusionError::Context(context, inner) => format!("{context}: {}", one_line(inner)),
        _ => e.to_string().lines().collect::<Vec<_>>().join(" "),
    }
}
