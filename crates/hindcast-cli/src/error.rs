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
