//! Running statements: one after another, each printed as it finishes, with a progress
//! line for long ones and `Ctrl-C` to cancel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::common::Result;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::{ExecutionPlan, collect};
use hindcast::Hindcast;

use crate::print::Printer;

/// Run SQL until it finishes or Ctrl-C is pressed. Cancelling drops the query's future,
/// which stops its operators and removes a `COPY`'s temporary output.
pub async fn run_cancellable(hc: &Hindcast, printer: &Printer, sql: &str) -> Result<()> {
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
