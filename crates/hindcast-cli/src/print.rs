//! Printing results in the formats `--format` offers.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::util::display::FormatOptions;
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
}

impl Printer {
    pub fn new(format: Format, maxrows: usize, quiet: bool) -> Self {
        Self {
            format,
            maxrows,
            quiet,
            timing: true,
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
        let mut out = std::io::stdout().lock();
        let shown = match self.format {
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
                let mut writer = datafusion::arrow::json::ArrayWriter::new(&mut out);
                for batch in batches {
                    writer.write(batch)?;
                }
                writer.finish()?;
                drop(writer);
                writeln!(out).map_err(DataFusionError::from)?;
                rows
            }
            Format::Ndjson => {
                let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut out);
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
