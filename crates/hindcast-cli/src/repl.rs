//! The interactive shell: line editing with persistent history, statements over several
//! lines (ended by `;`), tab completion of keywords and names, `\` meta-commands, and
//! `Ctrl-C` that cancels the running query without leaving the shell.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::AsArray;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::{ExecutionPlan, collect};
use hindcast::Hindcast;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Editor, Helper, Highlighter, Hinter};

use crate::args::Format;
use crate::print::Printer;

const HELP: &str = concat!(
    "  \\q                  quit (also Ctrl-D, or Ctrl-C twice at an empty prompt)\n",
    "  \\?                  this help\n",
    "  \\d                  list tables and feature views\n",
    "  \\d NAME             describe a table, feature view or feature service\n",
    "  \\dv                 list feature views\n",
    "  \\ds                 list feature services\n",
    "  \\i FILE             run the statements in FILE\n",
    "  \\timing [on|off]    show how long each statement took\n",
    "  \\progress [on|off]  show progress of long queries on stderr (on for a terminal)\n",
    "  \\format FMT         output format: table, csv, tsv, json, ndjson (or \\pset format FMT)\n",
    "  \\maxrows N          most rows to show in table format (0 for all)\n",
    "  \\x                  expanded display: one column | value block per row (toggle)\n",
    "  \\o [FILE]           append results to FILE; without FILE, back to the terminal\n",
    "Statements end with ';' and may span lines. Ctrl-C cancels a running query.",
);

/// What the shell does after a line.
enum Flow {
    Continue,
    Quit,
}

pub async fn run(hc: &Hindcast, printer: &mut Printer) -> Result<()> {
    let mut editor: Editor<ShellHelper, FileHistory> =
        Editor::new().map_err(|e| DataFusionError::External(Box::new(e)))?;
    editor.set_helper(Some(ShellHelper {
        names: names(hc).await,
    }));
    let history = history_path();
    if let Some(path) = &history {
        // A missing history file is the first run, not an error.
        let _ = editor.load_history(path);
    }
    println!(
        "hindcast {}: type SQL ending with ';', \\? for help, \\q to quit.",
        env!("CARGO_PKG_VERSION")
    );
    let mut interrupted = false;
    loop {
        match editor.readline("hindcast> ") {
            Ok(line) => {
                interrupted = false;
                let text = without_leading_comments(&line);
                if text.is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(text);
                let flow = if let Some(command) = text.strip_prefix('\\') {
                    meta(hc, printer, command).await
                } else {
                    run_cancellable(hc, printer, text)
                        .await
                        .map(|()| Flow::Continue)
                };
                match flow {
                    Ok(Flow::Quit) => break,
                    Ok(Flow::Continue) => {}
                    Err(e) => {
                        eprintln!("Error: {}", one_line(&e));
                        if let Some(pointer) = caret(text, &e) {
                            eprintln!("{pointer}");
                        }
                    }
                }
                // DDL may have added or dropped names.
                if let Some(helper) = editor.helper_mut() {
                    helper.names = names(hc).await;
                }
            }
            Err(ReadlineError::Interrupted) => {
                if interrupted {
                    break;
                }
                interrupted = true;
                eprintln!("(Ctrl-C again at an empty prompt, Ctrl-D or \\q to quit)");
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(DataFusionError::External(Box::new(e))),
        }
    }
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = editor.save_history(path);
    }
    Ok(())
}

/// Run SQL until it finishes or Ctrl-C is pressed. Cancelling drops the query's future,
/// which stops its operators and removes a `COPY`'s temporary output.
async fn run_cancellable(hc: &Hindcast, printer: &Printer, sql: &str) -> Result<()> {
    tokio::select! {
        result = run_sql(hc, printer, sql) => result,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("Query cancelled.");
            Ok(())
        }
    }
}

pub async fn run_sql(hc: &Hindcast, printer: &Printer, sql: &str) -> Result<()> {
    for statement in hc.parse_sql(sql)? {
        let start = Instant::now();
        let df = hc.execute_statement(statement).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let task_ctx = Arc::new(df.task_ctx());
        let plan = df.create_physical_plan().await?;
        let progress = printer
            .progress
            .then(|| Progress::start(Arc::clone(&plan), start));
        let batches = collect(plan, task_ctx).await?;
        drop(progress);
        printer.print(&schema, &batches, start.elapsed())?;
    }
    Ok(())
}

/// A line on stderr that shows, after the first second, the time elapsed, the files the
/// plan's scans have finished (with a percentage: pruned files count as finished), and the
/// rows and bytes they have read so far, all from the plan's live metrics. Dropping it
/// (the query finished, failed or was cancelled) stops it and clears the line.
struct Progress {
    ticker: tokio::task::JoinHandle<()>,
    /// Whether the line is on screen; `None` once stopped. The lock makes "print a line"
    /// and "clear it for good" exclusive: the ticker may run on another thread.
    line: Arc<std::sync::Mutex<Option<bool>>>,
}

impl Progress {
    fn start(plan: Arc<dyn ExecutionPlan>, start: Instant) -> Self {
        let line = Arc::new(std::sync::Mutex::new(Some(false)));
        let ticker = {
            let line = Arc::clone(&line);
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(Duration::from_millis(250));
                loop {
                    interval.tick().await;
                    if start.elapsed() < Duration::from_secs(1) {
                        continue;
                    }
                    let mut line = line.lock().unwrap_or_else(|e| e.into_inner());
                    let Some(shown) = line.as_mut() else { return };
                    eprint!(
                        "\r\x1b[2K{:.1} s elapsed, {} (Ctrl-C cancels)",
                        start.elapsed().as_secs_f64(),
                        Scanned::of(&plan)
                    );
                    *shown = true;
                }
            })
        };
        Self { ticker, line }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        let mut line = self.line.lock().unwrap_or_else(|e| e.into_inner());
        if line.take() == Some(true) {
            eprint!("\r\x1b[2K");
        }
        self.ticker.abort();
    }
}

/// What the plan's leaves (its scans) have done so far.
#[derive(Debug, Default)]
struct Scanned {
    /// Files the scans will visit (0 when no leaf is a file scan).
    files: usize,
    /// Files finished: read to the end or pruned.
    files_done: usize,
    rows: usize,
    bytes: usize,
}

impl Scanned {
    fn of(plan: &Arc<dyn ExecutionPlan>) -> Self {
        let mut scanned = Self::default();
        scanned.add(plan);
        scanned
    }

    fn add(&mut self, plan: &Arc<dyn ExecutionPlan>) {
        let children = plan.children();
        if !children.is_empty() {
            children.into_iter().for_each(|child| self.add(child));
            return;
        }
        let metrics = plan.metrics();
        let sum = |name: &str| {
            metrics
                .as_ref()
                .and_then(|m| m.sum_by_name(name))
                .map_or(0, |v| v.as_usize())
        };
        self.rows += metrics.as_ref().and_then(|m| m.output_rows()).unwrap_or(0);
        self.bytes += sum("bytes_scanned");
        self.files_done += sum("files_processed");
        self.files += plan
            .downcast_ref::<DataSourceExec>()
            .and_then(|scan| scan.data_source().downcast_ref::<FileScanConfig>())
            .map_or(0, |config| config.file_groups.iter().map(|g| g.len()).sum());
    }
}

impl std::fmt::Display for Scanned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.files > 0 {
            let done = self.files_done.min(self.files);
            write!(
                f,
                "scanned {done} of {} files ({}%), ",
                self.files,
                100 * done / self.files
            )?;
        }
        write!(
            f,
            "{} rows, {:.1} MB read",
            self.rows,
            self.bytes as f64 / 1e6
        )
    }
}

async fn meta(hc: &Hindcast, printer: &mut Printer, command: &str) -> Result<Flow> {
    let mut words = command.split_whitespace();
    let name = words.next().unwrap_or_default();
    let rest: Vec<&str> = words.collect();
    match (name, rest.as_slice()) {
        ("q" | "quit", []) => return Ok(Flow::Quit),
        ("?" | "h" | "help", []) => println!("{HELP}"),
        ("d", []) => {
            // Feature views are tables to DataFusion's catalog; say which ones they are.
            let views = sql_literals(&single_column(hc, "SHOW FEATURE VIEWS").await?);
            let query = format!(
                "SELECT table_name AS name, \
                   CASE WHEN table_name IN ({views}) THEN 'feature view' \
                        WHEN table_type = 'VIEW' THEN 'view' ELSE 'table' END AS kind \
                 FROM information_schema.tables \
                 WHERE table_schema NOT IN ('information_schema') ORDER BY name"
            );
            run_sql(hc, printer, &query).await?
        }
        ("d", [object]) => {
            let tables =
                single_column(hc, "SELECT table_name FROM information_schema.tables").await?;
            let known = |name: &str| {
                tables.iter().any(|t| t == name) || hc.registry().service(name).is_some()
            };
            // DESCRIBE folds unquoted names to lower case, as SQL does.
            if !known(object) && !known(&object.to_lowercase()) {
                return Err(DataFusionError::Plan(format!(
                    "no table, feature view or feature service is named {object}: \\d lists them"
                )));
            }
            run_sql(hc, printer, &format!("DESCRIBE {object}")).await?
        }
        ("dv", []) => run_sql(hc, printer, "SHOW FEATURE VIEWS").await?,
        ("ds", []) => run_sql(hc, printer, "SHOW FEATURE SERVICES").await?,
        ("i", [file]) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| DataFusionError::Execution(format!("cannot read {file}: {e}")))?;
            run_cancellable(hc, printer, &text).await?
        }
        ("progress", []) => printer.progress = !printer.progress,
        ("progress", ["on"]) => printer.progress = true,
        ("progress", ["off"]) => printer.progress = false,
        ("timing", []) => printer.timing = !printer.timing,
        ("timing", ["on"]) => printer.timing = true,
        ("timing", ["off"]) => printer.timing = false,
        ("format", [format]) | ("pset", ["format", format]) => {
            printer.format = match format.to_ascii_lowercase().as_str() {
                "table" => Format::Table,
                "csv" => Format::Csv,
                "tsv" => Format::Tsv,
                "json" => Format::Json,
                "ndjson" => Format::Ndjson,
                other => {
                    eprintln!("Unknown format {other}: use table, csv, tsv, json or ndjson.");
                    return Ok(Flow::Continue);
                }
            }
        }
        ("x", []) => {
            printer.expanded = !printer.expanded;
            println!(
                "Expanded display is {}.",
                if printer.expanded { "on" } else { "off" }
            );
        }
        ("o", []) => printer.output = None,
        ("o", [file]) => printer.output = Some(PathBuf::from(file)),
        ("maxrows", [n]) => match n.parse() {
            Ok(n) => printer.maxrows = n,
            Err(_) => eprintln!("\\maxrows takes a number of rows, not {n}."),
        },
        _ => {
            eprintln!("Unknown command \\{command}: \\? lists the commands.");
            return Ok(Flow::Continue);
        }
    }
    let on_off = |on: bool| if on { "on" } else { "off" };
    match name {
        "timing" => println!("Timing is {}.", on_off(printer.timing)),
        "progress" => println!("Progress display is {}.", on_off(printer.progress)),
        _ => {}
    }
    Ok(Flow::Continue)
}

/// The first column of a query's result, as text.
async fn single_column(hc: &Hindcast, sql: &str) -> Result<Vec<String>> {
    let mut values = vec![];
    for batch in hc.sql(sql).await?.collect().await? {
        let column = datafusion::arrow::compute::cast(
            batch.column(0),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )?;
        values.extend(column.as_string::<i32>().iter().flatten().map(String::from));
    }
    Ok(values)
}

/// `'a', 'b'` (quotes doubled inside), or `NULL` for no values, for an `IN (...)` list.
fn sql_literals(values: &[String]) -> String {
    if values.is_empty() {
        return "NULL".to_string();
    }
    let quoted: Vec<String> = values
        .iter()
        .map(|v| format!("'{}'", v.replace('\'', "''")))
        .collect();
    quoted.join(", ")
}

/// "Loaded DIR: N feature views, M feature services."
pub async fn summary(hc: &Hindcast, repo: &std::path::Path) -> String {
    let views = match hc.sql("SHOW FEATURE VIEWS").await {
        Ok(df) => df.count().await.unwrap_or(0),
        Err(_) => 0,
    };
    let services = hc.registry().services().len();
    let plural = |n: usize, noun: &str| format!("{n} {noun}{}", if n == 1 { "" } else { "s" });
    format!(
        "Loaded {}: {}, {}.",
        repo.display(),
        plural(views, "feature view"),
        plural(services, "feature service")
    )
}

/// For a parse error that names a position ("at Line: 2, Column: 7"), that line of the
/// input with a caret under the column.
fn caret(sql: &str, e: &DataFusionError) -> Option<String> {
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

/// `$XDG_DATA_HOME/hindcast/history`, else `~/.local/share/hindcast/history`: the user's
/// data directory, not the working directory.
fn history_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("hindcast").join("history"))
}

/// Table, feature view, feature service and column names, for completion.
async fn names(hc: &Hindcast) -> Vec<String> {
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
struct ShellHelper {
    names: Vec<String>,
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

/// The input without its leading blank and `--` comment lines: a comment alone is not
/// the start of a statement, and a meta-command may follow it.
fn without_leading_comments(input: &str) -> &str {
    let mut rest = input.trim();
    while rest.starts_with("--") {
        rest = rest.split_once('\n').map_or("", |(_, after)| after).trim();
    }
    rest
}

/// Whether `sql` ends with a `;` that is not inside a string, identifier or comment.
fn ends_statement(sql: &str) -> bool {
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
