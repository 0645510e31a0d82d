//! A feature repository: a directory of `.sql` files with definitions, kept in git like code.

use std::path::{Path, PathBuf};

use datafusion::common::{DataFusionError, Result, plan_err};

use super::Hindcast;
use crate::sql::HindcastStatement;

/// Run every statement of every `.sql` file under `dir` (sorted by path, subdirectories
/// included) with relative `LOCATION`s resolved against `dir`.
///
/// Statements run in file order; one that fails is retried after the others, so a
/// definition may refer to one in a later file. What still fails once no statement makes
/// progress is reported with its file and line.
pub async fn load_repository(hc: &Hindcast, dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return plan_err!("feature repository {} is not a directory", dir.display());
    }
    let mut files = vec![];
    collect_sql_files(dir, &mut files)?;
    files.sort();

    let mut pending: Vec<(String, u64, HindcastStatement)> = vec![];
    for file in &files {
        let shown = file.strip_prefix(dir).unwrap_or(file).display().to_string();
        let sql = std::fs::read_to_string(file).map_err(|e| io_error(e, "read", file))?;
        let statements = hc
            .parse_sql_with_lines(&sql)
            .map_err(|e| e.context(shown.clone()))?;
        pending.extend(
            statements
                .into_iter()
                .map(|(statement, line)| (shown.clone(), line, statement)),
        );
    }

    loop {
        let before = pending.len();
        let mut failed = vec![];
        let mut first_error = None;
        for (file, line, statement) in pending {
            if let Err(e) = hc.execute_statement_in(statement.clone(), Some(dir)).await {
                first_error.get_or_insert_with(|| e.context(format!("{file}:{line}")));
                failed.push((file, line, statement));
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        if failed.len() == before {
            return Err(first_error.expect("a statement failed"));
        }
        pending = failed;
    }
}

fn collect_sql_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_error(e, "list", dir))?;
    for entry in entries {
        let path = entry.map_err(|e| io_error(e, "list", dir))?.path();
        if path.is_dir() {
            collect_sql_files(&path, files)?;
        } else if path.extension().is_some_and(|e| e == "sql") {
            files.push(path);
        }
    }
    Ok(())
}

/// An I/O error, kept as one, with what was being done to which path.
fn io_error(e: std::io::Error, doing: &str, path: &Path) -> DataFusionError {
    DataFusionError::from(e).context(format!("cannot {doing} {}", path.display()))
}
