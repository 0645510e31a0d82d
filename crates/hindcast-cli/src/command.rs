//! The shell's `\\` meta-commands.

use std::path::PathBuf;

use datafusion::arrow::array::AsArray;
use datafusion::common::{DataFusionError, Result, plan_err};
use hindcast::Hindcast;

use crate::args::Format;
use crate::exec::{run_cancellable, run_sql};
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
pub enum Flow {
    Continue,
    Quit,
}

pub async fn meta(hc: &Hindcast, printer: &mut Printer, command: &str) -> Result<Flow> {
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
                return plan_err!(
                    "no table, feature view or feature service is named {object}: \\d lists them"
                );
            }
            run_sql(hc, printer, &format!("DESCRIBE {object}")).await?
        }
        ("dv", []) => run_sql(hc, printer, "SHOW FEATURE VIEWS").await?,
        ("ds", []) => run_sql(hc, printer, "SHOW FEATURE SERVICES").await?,
        ("i", [file]) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| DataFusionError::from(e).context(format!("cannot read {file}")))?;
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
