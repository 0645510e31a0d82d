//! Where a typed statement ends. Plain functions of text (no editor, no session), so the
//! integration tests compile this file in and test it directly.

/// The input without its leading blank and `--` comment lines: a comment alone is not
/// the start of a statement, and a meta-command may follow it.
pub fn without_leading_comments(input: &str) -> &str {
    let mut rest = input.trim();
    while rest.starts_with("--") {
        rest = rest.split_once('\n').map_or("", |(_, after)| after).trim();
    }
    rest
}

/// Whether `sql` ends with a `;` that is not inside a string, identifier or comment.
pub fn ends_statement(sql: &str) -> bool {
    let mut last_terminator = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                }
                last_terminator = false;
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            ';' => last_terminator = true,
            c if c.is_whitespace() => {}
            _ => last_terminator = false,
        }
    }
    last_terminator
}
