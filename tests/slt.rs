//! Runs `sql/*.slt` against a hindcast session, once per configuration in [`CONFIGS`], so
//! every expected answer is checked across batch and partition boundaries, with and
//! without a memory limit (under which a large enough table spills in the sorts). A record
//! that holds on one path only can be marked `onlyif unlimited` or `onlyif memory_limit`;
//! DataFusion's `SortExec` under the join is `SET hindcast.key_time_sort = false`.
//!
//! Two more configurations run every plan through hindcast's codec first
//! (`hindcast::distributed`): each statement's physical plan, or the plan an `EXPLAIN`
//! shows, is encoded, decoded and must print the same `EXPLAIN`; then the decoded plan is
//! the one executed, so every expected answer (and `EXPLAIN ANALYZE`'s pruning figures,
//! which need the decoded join to still narrow its scan) checks the decoding too.
//!
//! `HINDCAST_COMPLETE=1 cargo test slt::` rewrites the expected output of every file from
//! the engine's answers (review the diff before committing it).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Float64Type};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{ExecutionPlan, collect, displayable};
use hindcast::Hindcast;
use hindcast::distributed::{decode_plan, encode_plan};
use hindcast::physical::AsOfJoinExec;
use sqllogictest::{AsyncDB, ColumnType, DBOutput, default_validator, strict_column_validator};

use crate::common::{cluster_session, repo_root, session, start_workers};

/// How a configuration runs each statement.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// In this process, as planned.
    Local,
    /// In this process, the plan encoded and decoded first.
    Decoded,
    /// On three workers in this process, behind a coordinator that splits every scan
    /// across them (`onlyif distributed`; the worker gets the memory limit).
    Cluster,
}

/// `(batch_size, target_partitions, memory limit, mode)`.
const CONFIGS: [(usize, usize, Option<usize>, Mode); 10] = [
    (8192, 4, None, Mode::Local),
    (8192, 1, None, Mode::Local),
    (1, 1, None, Mode::Local),
    (1, 4, None, Mode::Local),
    (8192, 4, Some(MEMORY_LIMIT), Mode::Local),
    (1, 2, Some(MEMORY_LIMIT), Mode::Local),
    (8192, 4, None, Mode::Decoded),
    (1, 2, Some(MEMORY_LIMIT), Mode::Decoded),
    (8192, 4, None, Mode::Cluster),
    (2, 3, Some(MEMORY_LIMIT), Mode::Cluster),
];

/// Files run in this process only: Delta tables read by deltalake-core's scan can neither
/// be decoded nor run on workers.
const IN_PROCESS_ONLY: [&str; 1] = ["features_delta"];

/// Enough for the small tables of most files; `asof_sort.slt`'s larger one spills.
pub const MEMORY_LIMIT: usize = 32 * 1024 * 1024;

/// The label `onlyif` / `skipif` records name for a configuration's execution path.
fn path_label(memory_limit: Option<usize>, mode: Mode) -> &'static str {
    match (mode, memory_limit) {
        (Mode::Cluster, _) => "distributed",
        (_, None) => "unlimited",
        (_, Some(_)) => "memory_limit",
    }
}

struct HindcastDb {
    hc: Hindcast,
    /// Execute each plan after encoding and decoding it.
    decoded: bool,
}

/// `plan` encoded and decoded, checked to print the same `EXPLAIN`.
fn round_trip(
    plan: &Arc<dyn ExecutionPlan>,
    context: &TaskContext,
) -> Result<Arc<dyn ExecutionPlan>> {
    let decoded = decode_plan(&encode_plan(plan)?, context)?;
    if !same_plan(plan, &decoded) {
        return Err(DataFusionError::Internal(format!(
            "a plan changed through the codec:\n{}\nbecame\n{}",
            displayable(plan.as_ref()).indent(true),
            displayable(decoded.as_ref()).indent(true)
        )));
    }
    Ok(decoded)
}

/// What a join's narrowing is, which `EXPLAIN` does not show: its spine bounds, whether it
/// uses their key sets and a partition filter, and whether its time and key filters are
/// the ones in its right input's scan.
fn narrowing(plan: &Arc<dyn ExecutionPlan>) -> Option<String> {
    let join = plan.downcast_ref::<AsOfJoinExec>()?;
    let Some(narrowing) = join.narrowing() else {
        return Some("none".into());
    };
    // Both filters must be the scan's: the time range's and the key sets'.
    let ids = [
        narrowing.time_filter.expression_id(),
        narrowing.key_filter.expression_id(),
    ];
    let mut found = [false; 2];
    let mut plans = vec![Arc::clone(join.right())];
    while let Some(node) = plans.pop() {
        let _ = node.apply_expressions(&mut |expr| {
            expr.apply(|e| {
                for (id, found) in ids.iter().zip(&mut found) {
                    *found |= e.expression_id().is_some() && e.expression_id() == *id;
                }
                Ok(TreeNodeRecursion::Continue)
            })
        });
        if let Some(source) = node.downcast_ref::<DataSourceExec>()
            && let Some(config) = source.data_source().downcast_ref::<FileScanConfig>()
            && let Some(filter) = config.file_source().filter()
        {
            let _ = filter.apply(|e| {
                for (id, found) in ids.iter().zip(&mut found) {
                    *found |= e.expression_id().is_some() && e.expression_id() == *id;
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
        plans.extend(node.children().into_iter().cloned());
    }
    let shared = found[0] && (narrowing.right_keys.is_empty() || found[1]);
    Some(format!(
        "bounds {}, key sets {}, partition filter {}, filter shared with the scan {shared}",
        narrowing.bounds.id(),
        narrowing.right_keys.len(),
        narrowing.partition_filter.is_some(),
    ))
}

/// Whether two plans print the same `EXPLAIN`, node by node, but for two things DataFusion's
/// own protobuf does to its own nodes: a Parquet scan's `sort_order_for_reorder` (a hint to
/// read row groups in order) is not encoded, and a decoded `UnionExec` puts a projection
/// over each input whose fields differ from the union's (`UnionExec::try_new`).
fn same_plan(plan: &Arc<dyn ExecutionPlan>, decoded: &Arc<dyn ExecutionPlan>) -> bool {
    fn line(plan: &Arc<dyn ExecutionPlan>) -> String {
        let text = displayable(plan.as_ref()).one_line().to_string();
        match text.find(", sort_order_for_reorder=[") {
            Some(start) => {
                let end = text[start..]
                    .find(']')
                    .map_or(text.len(), |e| start + e + 1);
                format!("{}{}", &text[..start], &text[end..])
            }
            None => text,
        }
    }
    if line(plan) != line(decoded) || narrowing(plan) != narrowing(decoded) {
        return false;
    }
    let is_union = plan.downcast_ref::<UnionExec>().is_some();
    let (children, decoded_children) = (plan.children(), decoded.children());
    children.len() == decoded_children.len()
        && children
            .into_iter()
            .zip(decoded_children)
            .all(|(child, decoded)| {
                same_plan(child, decoded)
                    || (is_union
                        && decoded.downcast_ref::<ProjectionExec>().is_some()
                        && same_plan(child, decoded.children()[0]))
            })
}

#[async_trait]
impl AsyncDB for HindcastDb {
    type Error = DataFusionError;
    type ColumnType = SltType;

    /// Files under the repository are named `$REPO/...` in `.slt` files (with `control
    /// substitution on`), and printed the same way, so expected output does not depend on
    /// where the repository is checked out.
    async fn run(&mut self, sql: &str) -> Result<DBOutput<SltType>> {
        let df = self.hc.sql(sql).await?;
        let task_ctx = Arc::new(df.task_ctx());
        if self.decoded
            && let LogicalPlan::Explain(explain) = df.logical_plan()
        {
            let state = df.clone().into_parts().0;
            round_trip(&state.create_physical_plan(&explain.plan).await?, &task_ctx)?;
        }
        let mut plan = df.create_physical_plan().await?;
        if self.decoded {
            plan = round_trip(&plan, &task_ctx)?;
        }
        let schema = plan.schema();
        let batches = collect(plan, task_ctx).await?;
        let types = schema
            .fields()
            .iter()
            .map(|f| SltType::of(f))
            .collect::<Vec<_>>();
        let root = repo_root().to_string_lossy().into_owned();
        let rows = rows_of(&batches)?
            .into_iter()
            .map(|row| row.into_iter().map(|v| v.replace(&root, "$REPO")).collect())
            .collect::<Vec<Vec<String>>>();
        if rows.is_empty() && types.is_empty() {
            Ok(DBOutput::StatementComplete(0))
        } else {
            Ok(DBOutput::Rows { types, rows })
        }
    }

    fn engine_name(&self) -> &str {
        "hindcast"
    }

    async fn sleep(duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    async fn shutdown(&mut self) {}
}

/// A result column's type letter, as DataFusion's own `.slt` files spell them.
#[derive(Debug, PartialEq, Eq, Clone)]
enum SltType {
    Boolean,
    Date,
    Integer,
    Float,
    Text,
    Timestamp,
    Other,
}

impl SltType {
    fn of(field: &Field) -> Self {
        let mut data_type = field.data_type();
        if let DataType::Dictionary(_, values) = data_type {
            data_type = values;
        }
        match data_type {
            DataType::Boolean => Self::Boolean,
            t if t.is_integer() => Self::Integer,
            t if t.is_floating() || t.is_decimal() => Self::Float,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Self::Text,
            DataType::Date32 | DataType::Date64 | DataType::Time32(_) | DataType::Time64(_) => {
                Self::Date
            }
            DataType::Timestamp(_, _) => Self::Timestamp,
            _ => Self::Other,
        }
    }
}

impl ColumnType for SltType {
    fn from_char(value: char) -> Option<Self> {
        Some(match value {
            'B' => Self::Boolean,
            'D' => Self::Date,
            'I' => Self::Integer,
            'P' => Self::Timestamp,
            'R' => Self::Float,
            'T' => Self::Text,
            _ => Self::Other,
        })
    }

    fn to_char(&self) -> char {
        match self {
            Self::Boolean => 'B',
            Self::Date => 'D',
            Self::Integer => 'I',
            Self::Timestamp => 'P',
            Self::Float => 'R',
            Self::Text => 'T',
            Self::Other => '?',
        }
    }
}

/// The rows of a result as `.slt` text, in the conventions of DataFusion's own `.slt`
/// files: `NULL`, `(empty)` for an empty string, numbers rounded to 12 decimals without
/// trailing zeros, and a cell of several lines (a plan) as one row per line, numbered, with
/// its indentation as dashes (sqllogictest ignores leading spaces).
fn rows_of(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>> {
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            let mut cells = batch
                .columns()
                .iter()
                .map(|column| cell(column, row))
                .collect::<Result<Vec<_>>>()?;
            let last = cells.pop().unwrap_or_default();
            if last.contains('\n') {
                rows.push(cells);
                for (i, line) in last.split('\n').enumerate() {
                    let text = line.trim_start();
                    let dashes = "-".repeat(line.len() - text.len());
                    rows.push(vec![format!("{:02}){dashes}{text}", i + 1)]);
                }
            } else {
                cells.push(last);
                rows.push(cells);
            }
        }
    }
    Ok(rows)
}

fn cell(column: &ArrayRef, row: usize) -> Result<String> {
    if column.is_null(row) {
        return Ok("NULL".into());
    }
    Ok(match column.data_type() {
        DataType::Dictionary(_, _) => {
            let dictionary = column.as_any_dictionary();
            cell(dictionary.values(), dictionary.normalized_keys()[row])?
        }
        DataType::Float64 => float(column.as_primitive::<Float64Type>().value(row)),
        DataType::Float32 => float(column.as_primitive::<Float32Type>().value(row) as f64),
        data_type => {
            let text = ArrayFormatter::try_new(column, &FormatOptions::default())?
                .value(row)
                .to_string();
            match data_type {
                t if t.is_decimal() => trim_zeros(text),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View if text.is_empty() => {
                    "(empty)".into()
                }
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                    text.trim_end_matches('\n').replace('\0', "\\0")
                }
                _ => text,
            }
        }
    })
}

fn float(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let shortest = value.to_string();
    let fraction_digits = shortest.split_once('.').map_or(0, |(_, f)| f.len());
    let text = if fraction_digits > 12 {
        trim_zeros(format!("{value:.12}"))
    } else {
        shortest
    };
    if text == "-0" { "0".into() } else { text }
}

/// `1.2300` -> `1.23`, `4.000` -> `4`.
fn trim_zeros(text: String) -> String {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// Whitespace at the end of a line is not significant.
#[allow(clippy::ptr_arg)] // sqllogictest's `Normalizer` signature
fn trim_end(s: &String) -> String {
    s.trim_end().to_string()
}

fn slt_path(name: &str) -> PathBuf {
    repo_root().join("sql").join(format!("{name}.slt"))
}

async fn run_file(name: &str) {
    let path = slt_path(name);
    if std::env::var_os("HINDCAST_COMPLETE").is_some() {
        let mut runner = sqllogictest::Runner::new(|| async {
            Ok(HindcastDb {
                hc: session(8192, 4, None),
                decoded: false,
            })
        });
        runner.set_var("REPO".into(), repo_root().to_string_lossy().into_owned());
        runner.add_label(path_label(None, Mode::Local));
        runner
            .update_test_file(
                &path,
                " ",
                default_validator,
                trim_end,
                strict_column_validator,
            )
            .await
            .unwrap_or_else(|e| panic!("completing {}: {e}", path.display()));
        return;
    }
    for (batch_size, partitions, memory_limit, mode) in CONFIGS {
        if mode != Mode::Local && IN_PROCESS_ONLY.contains(&name) {
            continue;
        }
        let workers = match mode {
            Mode::Cluster => start_workers(3, memory_limit).await,
            _ => vec![],
        };
        let mut runner = sqllogictest::Runner::new(|| {
            let workers = workers.clone();
            async move {
                let hc = match mode {
                    Mode::Cluster => cluster_session(batch_size, partitions, &workers).await,
                    _ => session(batch_size, partitions, memory_limit),
                };
                Ok(HindcastDb {
                    hc,
                    decoded: mode == Mode::Decoded,
                })
            }
        });
        runner.add_label(path_label(memory_limit, mode));
        runner.with_column_validator(strict_column_validator);
        runner.with_normalizer(trim_end);
        runner.set_var("REPO".into(), repo_root().to_string_lossy().into_owned());
        runner.with_validator(default_validator);
        if let Err(e) = runner.run_file_async(&path).await {
            panic!(
                "{} failed with batch_size={batch_size}, target_partitions={partitions}, memory_limit={memory_limit:?}, mode={mode:?}:\n{e}",
                path.display()
            );
        }
    }
}

macro_rules! slt_files {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                run_file(stringify!($name)).await;
            }
        )*

        /// Every file under `sql/` must be listed above, so none is silently skipped.
        #[test]
        fn every_slt_file_is_run() {
            let listed = [$(stringify!($name)),*];
            for entry in std::fs::read_dir(repo_root().join("sql")).expect("sql/") {
                let path = entry.expect("entry").path();
                if path.extension().is_some_and(|e| e == "slt") {
                    let stem = path.file_stem().unwrap().to_string_lossy().to_string();
                    assert!(listed.contains(&stem.as_str()), "{stem}.slt is not listed in tests/slt.rs");
                }
            }
        }
    };
}

slt_files!(
    features_aggregate,
    features_aggregate_created,
    features_delta,
    asof_basic,
    asof_operators,
    asof_ttl,
    asof_ties,
    asof_nulls,
    asof_duplicates,
    asof_types,
    asof_empty,
    asof_chained,
    asof_errors,
    asof_duckdb,
    asof_nearest,
    asof_explain,
    asof_sort,
    features_ddl,
    features_temporal,
    features_pruning,
    features_retrieval,
    rewrite_row_number,
);
