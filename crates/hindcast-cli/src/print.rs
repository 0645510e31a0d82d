//! Printing results in the formats `--format` offers.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::arrow::util::pretty::pretty_format_batches_with_options;
use datafusion::common::{DataFusionError, Result};

use crate::args::Format;

pub struct Printer {
    pub format: Format,
    pub maxrows: usize,
    /// Only results: no row counts or timings.
    pub quiet: bool,
    /// Show how long each statement took (the shell's `\timing`).
    pub timing: bool,
    /// Tables as one `column | value` block per row (the shell's `\x`).
    pub expanded: bool,
    /// Append output to this file instead of standard output (the shell's `\o FILE`).
    pub output: Option<PathBuf>,
    /// A progress line on stderr during long queries (the shell's `\progress`); on when
    /// stderr is a terminal.
    pub progress: bool,
}

impl Printer {
    pub fn new(format: Format, maxrows: usize, quiet: bool) -> Self {
        Self {
            format,
            maxrows,
            quiet,
            timing: true,
            expanded: false,
            output: None,
            progress: std::io::stderr().is_terminal(),
        }
    }

    pub fn print(
        &self,
        schema: &SchemaRef,
        batches: &[RecordBatch],
        elapsed: Duration,
    ) -> Result<()> {
        // DDL and SET return no columns: nothing to show.
        if schema.fields().is_empty() {
            return Ok(());
        }
        let empty = [RecordBatch::new_empty(Arc::clone(schema))];
        let batches = if batches.is_empty() {
            &empty[..]
        } else {
            batches
        };
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        let mut out: Box<dyn Write> = match &self.output {
            Some(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        DataFusionError::from(e)
                            .context(format!("cannot write to {}", path.display()))
                    })?,
            ),
            None => Box::new(std::io::stdout().lock()),
        };
        let shown = match self.format {
            Format::Table if is_plan(schema) => plans(&mut out, batches)?,
            Format::Table if self.expanded => self.expanded(&mut out, batches, rows)?,
            Format::Table => self.table(&mut out, batches, rows)?,
            Format::Csv | Format::Tsv => {
                let delimiter = if self.format == Format::Csv {
                    b','
                } else {
                    b'\t'
                };
                let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                    .with_delimiter(delimiter)
                    .with_header(true)
                    .build(&mut out);
                for batch in batches {
                    writer.write(batch)?;
                }
                rows
            }
            Format::Json => {
                let mut writer = datafusion::arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, datafusion::arrow::json::writer::JsonArray>(&mut out);
                for batch in batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
                drop(writer);
                writeln!(out).map_err(DataFusionError::from)?;
                rows
            }
            Format::Ndjson => {
                let mut writer = datafusion::arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut out);
                for batch in batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
                rows
            }
        };
        if !self.quiet {
            let noun = if rows == 1 { "row" } else { "rows" };
            let note = if shown < rows {
                format!(" (first {shown} shown)")
            } else {
                String::new()
            };
            let took = if self.timing {
                format!(" Query took {:.3} seconds.", elapsed.as_secs_f64())
            } else {
                String::new()
            };
            writeln!(out, "{rows} {noun}{note} in set.{took}\n").map_err(DataFusionError::from)?;
        }
        Ok(())
    }

    /// One `column | value` block per row, as psql's `\x`; at most `maxrows` rows.
    fn expanded(
        &self,
        out: &mut impl Write,
        batches: &[RecordBatch],
        rows: usize,
    ) -> Result<usize> {
        let limit = if self.maxrows == 0 {
            rows
        } else {
            self.maxrows.min(rows)
        };
        let options = FormatOptions::default().with_null("NULL");
        let mut shown = 0;
        for batch in batches {
            let schema = batch.schema();
            let width = schema
                .fields()
                .iter()
                .map(|f| f.name().len())
                .max()
                .unwrap_or(0);
            let formatters = batch
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            for row in 0..batch.num_rows() {
                if shown == limit {
                    return Ok(shown);
                }
                shown += 1;
                writeln!(out, "-[ RECORD {shown} ]-").map_err(DataFusionError::from)?;
                for (field, formatter) in schema.fields().iter().zip(&formatters) {
                    writeln!(out, "{:width$} | {}", field.name(), formatter.value(row))
                        .map_err(DataFusionError::from)?;
                }
            }
        }
        Ok(shown)
    }

    /// Aligned table of at most `maxrows` rows; returns how many rows it showed.
    fn table(&self, out: &mut impl Write, batches: &[RecordBatch], rows: usize) -> Result<usize> {
        let limit = if self.maxrows == 0 {
            rows
        } else {
            self.maxrows.min(rows)
        };
        let mut kept = vec![];
        let mut left = limit;
        for batch in batches {
            if left == 0 && !kept.is_empty() {
                break;
            }

            let take = left.min(batch.num_rows());
            kept.push(batch.slice(0, take));
            left -= take;
        }
        let options = FormatOptions::default().with_null("NULL");
        let table = pretty_format_batches_with_options(&kept, &options)?;
        writeln!(out, "{table}").map_err(DataFusionError::from)?;
        Ok(limit)
    }
}

/// `EXPLAIN`'s result: `(plan_type, plan)` rows of text.
fn is_plan(schema: &SchemaRef) -> bool {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    names == ["plan_type", "plan"]
}

/// Plans as text under their type's name, without a table around them: a bordered table
/// pads every line to the longest one (a file list can be hundreds of characters), so one
/// long line would wrap the whole plan in the terminal. Long value lists (the spine's key
/// set in a dynamic filter has up to 1024) are abbreviated; `--format csv` keeps them whole.
fn plans(out: &mut impl Write, batches: &[RecordBatch]) -> Result<usize> {
    let options = FormatOptions::default().with_null("NULL");
    let mut shown = 0;
    for batch in batches {
        let kind = ArrayFormatter::try_new(batch.column(0).as_ref(), &options)?;
        let plan = ArrayFormatter::try_new(batch.column(1).as_ref(), &options)?;
        for row in 0..batch.num_rows() {
            shown += 1;
            writeln!(out, "{}", kind.value(row)).map_err(DataFusionError::from)?;
            for line in plan.value(row).to_string().lines() {
                writeln!(out, "  {}", abbreviate_lists(line)).map_err(DataFusionError::from)?;
            }
        }
    }
    Ok(shown)
}

/// Lists longer than this many items are shown as their first and last few.
const LIST_ITEMS_SHOWN: usize = 8;

/// `[1000, 1001, ..., 1499]` with more than [`LIST_ITEMS_SHOWN`] items becomes
/// `[1000, 1001, 1002, 1003, 1004, 1005, …, 1498, 1499 (500 items)]`. Only innermost
/// brackets holding plain values are touched, so the plan's structure and its settings and
/// metrics stay as they are.
fn abbreviate_lists(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    // Start (in `out`) of the innermost open bracket's content.
    let mut open: Option<usize> = None;
    for c in line.chars() {
        match c {
            '[' | '(' => {
                out.push(c);
                open = Some(out.len());
            }
            ']' | ')' => {
                if let Some(start) = open.take() {
                    let items: Vec<&str> = out[start..].split(", ").collect();
                    // Values only: a list of `name=value` settings or metrics stays whole.
                    if items.len() > LIST_ITEMS_SHOWN && !items.iter().any(|i| i.contains('=')) {
                        let head = items[..LIST_ITEMS_SHOWN - 2].join(", ");
                        let tail = items[items.len() - 2..].join(", ");
                        let abbreviated = format!("{head}, …, {tail} ({} items)", items.len());
                        out.truncate(start);
                        out.push_str(&abbreviated);
                    }
                }
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}
