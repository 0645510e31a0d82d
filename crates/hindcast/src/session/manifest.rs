//! A training set's manifest, `_hindcast.json`: what `COPY (...) TO 'dir/' STORED AS
//! PARQUET` wrote, from what, and whether it leaks. Written inside the temporary directory
//! the `COPY` is moved from (`copy.rs`), so a dataset and its manifest appear together.
//!
//! - [`Recorder`]: the sources a query read (definitions, Delta versions, Parquet files),
//!   which output columns carry features, and the point-in-time joins' figures;
//! - [`Dataset`]: row count, per-column nulls, an order-free checksum and each file's hash,
//!   computed from the written files (at write time, and again by [`validate`]);
//! - [`validate`], [`reproduce`]: `hindcast validate` and `hindcast reproduce`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::utils::quote_identifier;
use datafusion::common::{DataFusionError, Result, exec_datafusion_err, plan_err};
use datafusion::datasource::listing::{ListingTable, ListingTableUrl};
use datafusion::datasource::{ViewTable, source_as_provider};
use datafusion::logical_expr::{Expr, JoinType, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricValue;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use datafusion::sql::parser::{
    CopyToSource, CopyToStatement, CreateExternalTable, Statement as DFStatement,
};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use super::Hindcast;
use super::copy::TempOutput;
use super::ddl::absolute_location;
use crate::delta::{DELTA, DeltaSource};
use crate::features::{FeatureRegistry, FeatureSource, FeatureViewTable};
use crate::logical::{AsOfJoin, WindowAggregateJoin};
use crate::physical::{TickRange, widen};
use crate::sql::{FeatureViewSource, HindcastStatement, quoted};
use crate::storage::is_credential;
use crate::time::{DisplayTtl, TimeDomain};

/// The manifest's file name, next to the data files.
pub const MANIFEST: &str = "_hindcast.json";

/// What `_hindcast.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub hindcast_version: String,
    /// When the `COPY` finished (UTC).
    pub created_at: String,
    /// The `COPY` statement, as hindcast reads it back (`reproduce` runs it).
    pub sql: String,
    /// Every table and view the query read, each after the ones it reads.
    pub sources: Vec<Source>,
    /// `CREATE FEATURE SERVICE` statements of the services the query named.
    pub services: Vec<String>,
    pub rows: u64,
    pub columns: Vec<ColumnStats>,
    /// Over the rows in any order: see [`Dataset::checksum`].
    pub checksum: String,
    pub files: Vec<DataFile>,
    pub point_in_time: PointInTime,
}

/// One table or view a training set was computed from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Source {
    pub name: String,
    pub kind: SourceKind,
    /// SQL that creates it in a new session; `None` when it was built in code.
    pub definition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The Delta version the query read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_version: Option<u64>,
    /// A file table's paths and file extension, as its scan lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub table_paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_extension: Option<String>,
    /// A file table's files when the query read them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<SourceFile>>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// Parquet, CSV or JSON files (a listing table or a feature view over one).
    Files,
    Delta,
    /// A view over other sources (`CREATE VIEW`, a feature view `AS SELECT`).
    View,
    /// Rows the program registered (in memory, or a provider hindcast cannot describe).
    Other,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceFile {
    pub path: String,
    pub size: u64,
    pub modified: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ColumnStats {
    pub name: String,
    pub data_type: String,
    pub nulls: u64,
    pub null_fraction: f64,
    /// Whether its values come from the feature side of a point-in-time join.
    pub feature: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DataFile {
    /// Relative to the dataset's directory.
    pub path: String,
    pub size: u64,
    pub blake3: String,
}

/// The point-in-time joins' figures, measured by the joins as they ran. An aggregation
/// view's join counts as one: its matched rows are those with an event in the longest
/// window, and a row's feature event time is the newest event aggregated for it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PointInTime {
    pub joins: usize,
    pub matched_rows: u64,
    /// Matched rows whose feature row's event time is after the spine row's: leakage.
    pub future_matches: u64,
    /// The largest (feature event time - spine time) over matched rows; `None` when nothing
    /// matched or the joins ran on workers (which do not send it back).
    pub max_feature_lead: Option<String>,
    pub spine_time_min: Option<String>,
    pub spine_time_max: Option<String>,
}

/// The `COPY` as the manifest records it, if it writes one: a Parquet dataset into a
/// local directory.
pub(super) fn wanted(copy: &CopyToStatement) -> Option<String> {
    is_training_set(copy).then(|| copy_sql(copy))
}

/// Not a `PARTITIONED BY` one: DataFusion reads a file at the top of a hive-partitioned
/// directory as a file without partitions, and refuses the mix.
fn is_training_set(copy: &CopyToStatement) -> bool {
    if !copy.partitioned_by.is_empty() {
        return false;
    }
    let parquet = copy
        .stored_as
        .as_deref()
        .is_some_and(|f| f.eq_ignore_ascii_case("parquet"));
    let target = &copy.target;
    parquet && target.ends_with('/') && (!target.contains("://") || target.starts_with("file://"))
}

/// What a query read and how its output relates to it, gathered from its plans.
pub(super) struct Recorder {
    sql: String,
    tables: Vec<(String, Arc<dyn TableProvider>)>,
    sources: Vec<Source>,
    services: Vec<String>,
    features: Vec<bool>,
}

impl Recorder {
    /// From the `COPY` as written (`sql`, before hindcast rewrites it), the tables it
    /// names ([`referenced_tables`]) and its logical plan.
    pub fn new(
        sql: String,
        tables: Vec<(String, Arc<dyn TableProvider>)>,
        plan: &LogicalPlan,
        registry: &FeatureRegistry,
    ) -> Result<Self> {
        // The services named in a string (a `historical_features` argument) whose views
        // are all among the sources.
        let services = registry
            .services()
            .into_iter()
            .filter(|s| sql.contains(&quoted(&s.name)))
            .filter(|s| {
                s.views.iter().all(|(view, _)| {
                    tables
                        .iter()
                        .any(|(name, _)| *name == quote_identifier(view))
                })
            })
            .map(|s| service_definition(&s))
            .collect();
        let input = match plan {
            LogicalPlan::Copy(copy) => copy.input.as_ref(),
            other => other,
        };
        Ok(Self {
            sql,
            tables,
            sources: vec![],
            services,
            features: feature_columns(input),
        })
    }

    /// Once the query is planned (its scans have picked their Delta versions and listed
    /// their files) and before it runs: what each source is.
    pub async fn read_sources(&mut self, hc: &Hindcast) -> Result<()> {
        for (name, provider) in &self.tables {
            self.sources
                .push(describe_source(hc, name, provider.as_ref()).await?);
        }
        Ok(())
    }

    /// The manifest of the dataset written to `dir` by `executed`, the plan that ran.
    pub async fn finish(self, executed: &Arc<dyn ExecutionPlan>, dir: &Path) -> Result<Manifest> {
        let point_in_time = point_in_time(executed).await?;
        let dataset = Dataset::read(dir).await?;
        let columns = dataset
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| ColumnStats {
                feature: self.features.get(i).copied().unwrap_or(false),
                ..c.clone()
            })
            .collect();
        Ok(Manifest {
            hindcast_version: env!("CARGO_PKG_VERSION").to_string(),
            created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            sql: self.sql,
            sources: self.sources,
            services: self.services,
            rows: dataset.rows,
            columns,
            checksum: dataset.checksum,
            files: dataset.files,
            point_in_time,
        })
    }
}

/// Make the `COPY`'s target ready for a training set: nothing there, or a training set
/// written before, which the new one replaces whole (only when the directory holds nothing
/// but that set's files and manifest: anything else there is the user's, and no manifest
/// could describe it).
pub(super) fn claim_target(output: &mut TempOutput, target: &str) -> Result<()> {
    if !output.target_has_files() {
        return Ok(());
    }
    let refuse = |why: &str| {
        plan_err!(
            "COPY TO '{target}' writes a training set with its manifest ({MANIFEST}), and {why}: write to a new or empty directory"
        )
    };
    let Some(dir) = output.target_dir() else {
        return refuse("that path is a file");
    };
    let Ok(previous) = read(dir) else {
        return refuse("that directory already has files");
    };
    let mut found = vec![];
    files_under(dir, dir, false, &mut found)?;
    if found
        .iter()
        .any(|f| !previous.files.iter().any(|p| p.path == f.path))
    {
        return refuse("that directory holds files besides the training set written there before");
    }
    output.replace_target();
    Ok(())
}

/// Write `manifest` into `dir`.
pub(super) fn write(manifest: &Manifest, dir: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(manifest)
        .map_err(|e| exec_datafusion_err!("cannot write the manifest: {e}"))?;
    let path = dir.join(MANIFEST);
    std::fs::write(&path, json + "\n")
        .map_err(|e| DataFusionError::from(e).context(format!("cannot write {}", path.display())))
}

/// The manifest in `dir`.
pub fn read(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        exec_datafusion_err!(
            "{} has no readable {MANIFEST} ({e}): is it a training set written by COPY (...) TO '{}/' STORED AS PARQUET?",
            dir.display(),
            dir.display()
        )
    })?;
    serde_json::from_str(&text)
        .map_err(|e| exec_datafusion_err!("{} is not a hindcast manifest: {e}", path.display()))
}

/// Every table and view `statement` names, each after the tables it reads (DataFusion
/// plans a view as its query, so the plan alone no longer names it). A view over another
/// view records the tables underneath, not the inner view.
pub(super) async fn referenced_tables(
    ctx: &SessionContext,
    statement: &DFStatement,
) -> Result<Vec<(String, Arc<dyn TableProvider>)>> {
    let mut tables = vec![];
    for reference in ctx.state().resolve_table_references(statement)? {
        // A CTE's name, or a table function's hidden argument: nothing in the catalog.
        let Ok(provider) = ctx.table_provider(reference.clone()).await else {
            continue;
        };
        add_table(reference.to_quoted_string(), provider, &mut tables)?;
    }
    Ok(tables)
}

fn add_table(
    name: String,
    provider: Arc<dyn TableProvider>,
    tables: &mut Vec<(String, Arc<dyn TableProvider>)>,
) -> Result<()> {
    if tables.iter().any(|(n, _)| *n == name) {
        return Ok(());
    }
    if let Some(plan) = provider.get_logical_plan() {
        plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                let inner = source_as_provider(&scan.source)?;
                add_table(scan.table_name.to_quoted_string(), inner, tables)?;
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
    }
    tables.push((name, provider));
    Ok(())
}

async fn describe_source(
    hc: &Hindcast,
    name: &str,
    provider: &dyn TableProvider,
) -> Result<Source> {
    let mut source = Source {
        name: name.to_string(),
        kind: SourceKind::Other,
        definition: None,
        location: None,
        delta_version: None,
        table_paths: vec![],
        file_extension: None,
        files: None,
    };
    let table = match provider.downcast_ref::<FeatureViewTable>() {
        // Built in code: nothing to recreate it from.
        Some(view) if view.view().definition.is_none() => return Ok(source),
        Some(view) => {
            source.definition = view.view().definition.clone();
            if let FeatureSource::Query(_) = view.view().source {
                source.kind = SourceKind::View;
                return Ok(source);
            }
            view.source().as_ref()
        }
        None => provider,
    };
    if let Some(delta) = DeltaSource::of(table) {
        source.kind = SourceKind::Delta;
        source.location = Some(absolute_location(delta.location()));
        source.delta_version = Some(delta.scanned_version());
        if source.definition.is_none() {
            source.definition = Some(format!(
                "CREATE EXTERNAL TABLE {name} STORED AS {DELTA} LOCATION {}",
                quoted(&absolute_location(delta.location()))
            ));
        }
    } else if let Some(listing) = table.downcast_ref::<ListingTable>() {
        source.kind = SourceKind::Files;
        let paths = listing.table_paths();
        source.location = Some(
            paths
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        );
        source.table_paths = paths.iter().map(|p| p.as_str().to_string()).collect();
        source.file_extension = Some(listing.options().file_extension.clone());
        source.files = Some(list_files(hc, listing).await?);
        if source.definition.is_none() {
            // A table registered in code has no definition; one over a single path is
            // described by it.
            source.definition = match (listing.get_table_definition(), paths.as_slice()) {
                (Some(definition), _) => Some(definition.to_string()),
                (None, [path]) => Some(format!(
                    "CREATE EXTERNAL TABLE {name} STORED AS {} LOCATION {}",
                    listing.options().format.get_ext().to_uppercase(),
                    quoted(path.as_str())
                )),
                (None, _) => None,
            };
        }
    } else if let Some(view) = table.downcast_ref::<ViewTable>() {
        source.kind = SourceKind::View;
        if source.definition.is_none() {
            source.definition = view.definition().cloned();
        }
    }
    Ok(source)
}

/// `create` as SQL that creates the table again from any directory: every clause kept,
/// locations absolute, credentials left out. (DataFusion's own rendering, which it keeps as
/// a listing table's definition, drops the columns, partitions and options.)
pub(super) fn external_table_sql(create: &CreateExternalTable) -> String {
    let mut sql = format!("CREATE EXTERNAL TABLE {}", create.name);
    if !create.columns.is_empty() {
        let columns: Vec<String> = create.columns.iter().map(|c| c.to_string()).collect();
        sql += &format!(" ({})", columns.join(", "));
    }
    sql += &format!(" STORED AS {}", create.file_type);
    if !create.table_partition_cols.is_empty() {
        sql += &format!(
            " PARTITIONED BY ({})",
            create.table_partition_cols.join(", ")
        );
    }
    if !create.order_exprs.is_empty() {
        let orders: Vec<String> = create
            .order_exprs
            .iter()
            .map(|o| {
                let exprs: Vec<String> = o.iter().map(|e| e.to_string()).collect();
                format!("({})", exprs.join(", "))
            })
            .collect();
        sql += &format!(" WITH ORDER {}", orders.join(" WITH ORDER "));
    }
    let locations: Vec<String> = create
        .locations
        .iter()
        .map(|l| quoted(&absolute_location(l)))
        .collect();
    match locations.as_slice() {
        [one] => sql += &format!(" LOCATION {one}"),
        many => sql += &format!(" LOCATION ({})", many.join(", ")),
    }
    let options: Vec<String> = create
        .options
        .iter()
        .filter(|(k, _)| !is_credential(k))
        .map(|(k, v)| format!("{} {v}", quoted(k)))
        .collect();
    if !options.is_empty() {
        sql += &format!(" OPTIONS ({})", options.join(", "));
    }
    sql
}

/// `copy` as SQL this parser reads back (DataFusion's rendering leaves the target
/// unquoted).
fn copy_sql(copy: &CopyToStatement) -> String {
    let source = match &copy.source {
        CopyToSource::Relation(name) => name.to_string(),
        CopyToSource::Query(query) => format!("({query})"),
    };
    let mut sql = format!("COPY {source} TO {}", quoted(&copy.target));
    if let Some(format) = &copy.stored_as {
        sql += &format!(" STORED AS {format}");
    }
    if !copy.partitioned_by.is_empty() {
        sql += &format!(" PARTITIONED BY ({})", copy.partitioned_by.join(", "));
    }
    if !copy.options.is_empty() {
        let options: Vec<String> = copy
            .options
            .iter()
            .map(|(k, v)| format!("{} {v}", quoted(k)))
            .collect();
        sql += &format!(" OPTIONS ({})", options.join(", "));
    }
    sql
}

fn service_definition(service: &crate::features::FeatureService) -> String {
    let views: Vec<String> = service
        .views
        .iter()
        .map(|(view, features)| match features {
            None => format!("{} (*)", quote_identifier(view)),
            Some(features) => {
                let features: Vec<String> = features
                    .iter()
                    .map(|f| quote_identifier(f).into_owned())
                    .collect();
                format!("{} ({})", quote_identifier(view), features.join(", "))
            }
        })
        .collect();
    format!(
        "CREATE FEATURE SERVICE {} AS {}",
        quote_identifier(&service.name),
        views.join(", ")
    )
}

/// The files of a listing table, as its scan lists them.
async fn list_files(hc: &Hindcast, table: &ListingTable) -> Result<Vec<SourceFile>> {
    let state = hc.session_context().state();
    let extension = &table.options().file_extension;
    let mut files = vec![];
    for url in table.table_paths() {
        let store = state.runtime_env().object_store(url)?;
        let listed: Vec<_> = url
            .list_all_files(&state, store.as_ref(), extension)
            .await?
            .try_collect()
            .await?;
        files.extend(listed.into_iter().map(|meta| source_file(url, meta)));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// For each output column of `plan`, whether its values come from the feature (right) side
/// of a point-in-time join, followed through projections, filters, sorts, joins and
/// aggregates; anything else counts as not a feature.
fn feature_columns(plan: &LogicalPlan) -> Vec<bool> {
    let width = plan.schema().fields().len();
    let from_input = |input: &LogicalPlan, exprs: &[&Expr]| -> Vec<bool> {
        let flags = feature_columns(input);
        exprs
            .iter()
            .map(|e| {
                e.column_refs().iter().any(|c| {
                    input
                        .schema()
                        .index_of_column(c)
                        .is_ok_and(|i| flags.get(i).copied().unwrap_or(false))
                })
            })
            .collect()
    };
    let flags = match plan {
        LogicalPlan::Extension(ext) => {
            let node = ext.node.as_any();
            // The spine's columns, then the join's own: the feature row's or the aggregates.
            let (left, added) = if let Some(join) = node.downcast_ref::<AsOfJoin>() {
                (join.left.as_ref(), join.right.schema().fields().len())
            } else if let Some(join) = node.downcast_ref::<WindowAggregateJoin>() {
                (join.left.as_ref(), join.options.aggregates.len())
            } else {
                return vec![false; width];
            };
            let mut flags = feature_columns(left);
            flags.resize(left.schema().fields().len(), false);
            flags.extend(std::iter::repeat_n(true, added));
            flags
        }
        LogicalPlan::Projection(p) => from_input(&p.input, &p.expr.iter().collect::<Vec<_>>()),
        LogicalPlan::Aggregate(a) => {
            let exprs: Vec<&Expr> = a.group_expr.iter().chain(&a.aggr_expr).collect();
            from_input(&a.input, &exprs)
        }
        LogicalPlan::Window(w) => {
            let mut flags = feature_columns(&w.input);
            flags.extend(from_input(
                &w.input,
                &w.window_expr.iter().collect::<Vec<_>>(),
            ));
            flags
        }
        LogicalPlan::Join(j) => match j.join_type {
            JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => {
                feature_columns(&j.left)
            }
            JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => {
                feature_columns(&j.right)
            }
            _ => {
                let mut flags = feature_columns(&j.left);
                flags.extend(feature_columns(&j.right));
                flags
            }
        },
        LogicalPlan::Filter(_)
        | LogicalPlan::Sort(_)
        | LogicalPlan::Limit(_)
        | LogicalPlan::SubqueryAlias(_)
        | LogicalPlan::Distinct(_)
        | LogicalPlan::Repartition(_) => feature_columns(plan.inputs()[0]),
        _ => vec![false; width],
    };
    if flags.len() == width {
        flags
    } else {
        vec![false; width]
    }
}

/// The point-in-time joins' figures from the plan that ran (and, for stages that ran on
/// workers, the metrics they sent back).
async fn point_in_time(executed: &Arc<dyn ExecutionPlan>) -> Result<PointInTime> {
    let plans = crate::distributed::with_worker_metrics(executed).await?;
    let mut figures = PointInTime::default();
    let nanos = TimeDomain::Instant(datafusion::arrow::datatypes::TimeUnit::Nanosecond);
    // Each range in one domain; a join in another (integer times among instants) is left
    // out of it.
    let mut spine: Option<(TimeDomain, Option<(i64, i64)>)> = None;
    let mut lead: Option<(TimeDomain, Option<(i64, i64)>)> = None;
    for plan in &plans {
        plan.apply(|node| {
            if node.name() == "DistributedExec" {
                return Ok(TreeNodeRecursion::Jump);
            }
            if !matches!(node.name(), "AsOfJoinExec" | "WindowAggregateExec") {
                return Ok(TreeNodeRecursion::Continue);
            }
            figures.joins += 1;
            let Some(metrics) = node.metrics() else {
                return Ok(TreeNodeRecursion::Continue);
            };
            for metric in metrics.iter() {
                match metric.value() {
                    MetricValue::Count { name, count } if name == "matched_rows" => {
                        figures.matched_rows += count.value() as u64;
                    }
                    MetricValue::Count { name, count } if name == "future_matches" => {
                        figures.future_matches += count.value() as u64;
                    }
                    MetricValue::Custom { name, value } => {
                        let Some(range) = value.as_any().downcast_ref::<TickRange>() else {
                            continue;
                        };
                        let Some((lo, hi)) = range.range() else {
                            continue;
                        };
                        // Joins over instants in different units compare in nanoseconds.
                        let (domain, lo, hi) = match range.domain() {
                            instant @ TimeDomain::Instant(_) => {
                                let n = instant.nanos_per_tick();
                                (nanos, lo.saturating_mul(n), hi.saturating_mul(n))
                            }
                            integer => (integer, lo, hi),
                        };
                        let into = match name.as_ref() {
                            "spine_times" => &mut spine,
                            "feature_lead" => &mut lead,
                            _ => continue,
                        };
                        let (into_domain, into_range) = into.get_or_insert((domain, None));
                        if *into_domain == domain {
                            widen(into_range, lo, hi);
                        }
                    }
                    _ => {}
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
    }
    if let Some((domain, Some((lo, hi)))) = spine {
        figures.spine_time_min = Some(domain.display(lo));
        figures.spine_time_max = Some(domain.display(hi));
    }
    if let Some((domain, Some((_, hi)))) = lead {
        figures.max_feature_lead = Some(DisplayTtl(domain, hi).to_string());
    }
    Ok(figures)
}

/// A written dataset as read back from its files.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub rows: u64,
    /// Each column's name, type and nulls (`feature` unset).
    pub columns: Vec<ColumnStats>,
    /// `rows:hex`, the hex being the wrapping sum of the first 128 bits of each row's
    /// BLAKE3 hash in Arrow's row format: the same for the same rows in any order and
    /// any split into files.
    pub checksum: String,
    pub files: Vec<DataFile>,
}

impl Dataset {
    /// Read every Parquet file under `dir` (not the manifest).
    pub async fn read(dir: &Path) -> Result<Self> {
        // Hashing reads every byte: off the runtime's worker threads.
        let root = dir.to_path_buf();
        let mut files = tokio::task::spawn_blocking(move || {
            let mut files = vec![];
            files_under(&root, &root, true, &mut files).map(|()| files)
        })
        .await
        .map_err(|e| exec_datafusion_err!("hashing the training set's files failed: {e}"))??;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        // A plain session: the dataset is local, whatever the writing session's workers.
        let ctx = SessionContext::new();
        let mut location = dir.to_string_lossy().into_owned();
        if !location.ends_with('/') {
            location.push('/');
        }
        let frame = if files.iter().any(|f| f.path.ends_with(".parquet")) {
            Some(
                ctx.read_parquet(location.as_str(), ParquetReadOptions::default())
                    .await?,
            )
        } else {
            None
        };
        let mut rows = 0u64;
        let mut columns: Vec<ColumnStats> = vec![];
        let mut sum = 0u128;
        if let Some(frame) = frame {
            let schema = frame.schema().as_arrow().clone();
            columns = schema
                .fields()
                .iter()
                .map(|f| ColumnStats {
                    name: f.name().clone(),
                    data_type: f.data_type().to_string(),
                    nulls: 0,
                    null_fraction: 0.0,
                    feature: false,
                })
                .collect();
            let converter = RowConverter::new(
                schema
                    .fields()
                    .iter()
                    .map(|f| SortField::new(f.data_type().clone()))
                    .collect(),
            )
            .map_err(|e| {
                DataFusionError::from(e).context("cannot checksum the training set's columns")
            })?;
            let mut stream = frame.execute_stream().await?;
            while let Some(batch) = stream.try_next().await? {
                rows += batch.num_rows() as u64;
                sum = sum.wrapping_add(row_sum(&converter, &batch)?);
                for (column, array) in columns.iter_mut().zip(batch.columns()) {
                    column.nulls += array.logical_null_count() as u64;
                }
            }
            for column in &mut columns {
                column.null_fraction = if rows == 0 {
                    0.0
                } else {
                    column.nulls as f64 / rows as f64
                };
            }
        }
        Ok(Self {
            rows,
            columns,
            checksum: format!("{rows}:{sum:032x}"),
            files,
        })
    }
}

fn row_sum(converter: &RowConverter, batch: &RecordBatch) -> Result<u128> {
    let rows = converter.convert_columns(batch.columns())?;
    let mut sum = 0u128;
    for row in rows.iter() {
        let hash = blake3::hash(row.as_ref());
        let bytes: [u8; 16] = hash.as_bytes()[..16].try_into().expect("32 bytes");
        sum = sum.wrapping_add(u128::from_le_bytes(bytes));
    }
    Ok(sum)
}

/// Every file under `dir` but the manifest, with its size and (if `hash`) its BLAKE3 hash.
fn files_under(root: &Path, dir: &Path, hash: bool, files: &mut Vec<DataFile>) -> Result<()> {
    let context = |path: &Path| {
        let path = path.display().to_string();
        move |e: std::io::Error| DataFusionError::from(e).context(format!("cannot read {path}"))
    };
    for entry in std::fs::read_dir(dir).map_err(context(dir))? {
        let path = entry.map_err(context(dir))?.path();
        if path.is_dir() {
            files_under(root, &path, hash, files)?;
            continue;
        }
        let relative = path.strip_prefix(root).unwrap_or(&path);
        if relative == Path::new(MANIFEST) {
            continue;
        }
        let blake3 = if hash {
            let mut hasher = blake3::Hasher::new();
            let file = std::fs::File::open(&path).map_err(context(&path))?;
            hasher.update_reader(file).map_err(context(&path))?;
            hasher.finalize().to_hex().to_string()
        } else {
            String::new()
        };
        files.push(DataFile {
            path: relative.to_string_lossy().into_owned(),
            size: std::fs::metadata(&path).map_err(context(&path))?.len(),
            blake3,
        });
    }
    Ok(())
}

/// One finding of [`validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub passed: bool,
    pub what: String,
}

/// `hindcast validate`: the dataset in `dir` against its manifest (its files, rows, nulls
/// and checksum), the leakage the joins measured, each feature's null fraction against
/// `max_null_fraction`, and whether its Parquet sources are still the files it read.
pub async fn validate(dir: &Path, max_null_fraction: f64) -> Result<Vec<Check>> {
    let manifest = read(dir)?;
    let dataset = Dataset::read(dir).await?;
    let mut checks = vec![];
    let mut check = |passed: bool, what: String| checks.push(Check { passed, what });

    let recorded: BTreeMap<&str, &DataFile> = manifest
        .files
        .iter()
        .map(|f| (f.path.as_str(), f))
        .collect();
    let found: BTreeMap<&str, &DataFile> =
        dataset.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut files_ok = true;
    for (path, file) in &recorded {
        match found.get(path) {
            None => {
                files_ok = false;
                check(false, format!("file {path} is missing"));
            }
            Some(now) if now.blake3 != file.blake3 || now.size != file.size => {
                files_ok = false;
                check(false, format!("file {path} changed since it was written"));
            }
            Some(_) => {}
        }
    }
    for path in found.keys().filter(|p| !recorded.contains_key(*p)) {
        files_ok = false;
        check(false, format!("file {path} is not in the manifest"));
    }
    if files_ok {
        check(true, format!("{} files as written", recorded.len()));
    }
    let version = env!("CARGO_PKG_VERSION");
    if manifest.hindcast_version != version {
        // The checksum hashes rows in Arrow's row format, which may change between versions.
        check(
            dataset.rows == manifest.rows,
            format!(
                "{} rows (recorded {}); checksum not compared: written by hindcast {}, this is {version}",
                dataset.rows, manifest.rows, manifest.hindcast_version
            ),
        );
    } else if dataset.rows == manifest.rows && dataset.checksum == manifest.checksum {
        check(
            true,
            format!("{} rows, checksum {}", dataset.rows, dataset.checksum),
        );
    } else {
        check(
            false,
            format!(
                "the data differs from the manifest: {} rows, checksum {} (recorded: {} rows, {})",
                dataset.rows, dataset.checksum, manifest.rows, manifest.checksum
            ),
        );
    }

    let pit = &manifest.point_in_time;
    let lead = pit.max_feature_lead.as_deref().unwrap_or("not measured");
    if pit.joins == 0 {
        check(
            true,
            "no point-in-time join: nothing to check for leakage".to_string(),
        );
    } else if pit.future_matches > 0 {
        check(
            false,
            format!(
                "leakage: {} of {} matched rows took a feature row from after their spine time (largest lead {lead})",
                pit.future_matches, pit.matched_rows
            ),
        );
    } else {
        check(
            true,
            format!(
                "no leakage: {} joins, {} matched rows, every feature at or before its spine time (largest lead {lead})",
                pit.joins, pit.matched_rows
            ),
        );
    }

    for column in manifest.columns.iter().filter(|c| c.feature) {
        let nulls = dataset
            .columns
            .iter()
            .find(|c| c.name == column.name)
            .map_or(column.null_fraction, |c| c.null_fraction);
        check(
            nulls <= max_null_fraction,
            format!(
                "feature {}: null fraction {nulls:.4} {} {max_null_fraction}",
                column.name,
                if nulls <= max_null_fraction {
                    "<="
                } else {
                    ">"
                }
            ),
        );
    }

    for source in manifest.sources.iter().filter(|s| s.files.is_some()) {
        match source_state(source).await? {
            SourceState::Unchanged => check(
                true,
                format!("source {}: its files are unchanged", source.name),
            ),
            SourceState::NotChecked => check(
                true,
                format!(
                    "source {}: on object storage, not listed again",
                    source.name
                ),
            ),
            SourceState::Changed(change) => check(
                false,
                format!(
                    "source {}: {change} since the training set was written, so it cannot be reproduced",
                    source.name
                ),
            ),
        }
    }
    Ok(checks)
}

/// How a file source compares with what the training set read.
enum SourceState {
    Unchanged,
    /// Its files are on object storage, which is not listed again here.
    NotChecked,
    Changed(String),
}

/// Its files listed again as its scan lists them (DataFusion's listing, local paths only):
/// a recorded file gone or changed (size, modification time), or one added.
async fn source_state(source: &Source) -> Result<SourceState> {
    let (Some(recorded), Some(extension)) = (&source.files, &source.file_extension) else {
        return Ok(SourceState::Unchanged);
    };
    let ctx = SessionContext::new();
    let state = ctx.state();
    let mut now = vec![];
    for path in &source.table_paths {
        let url = ListingTableUrl::parse(path)?;
        if url.scheme() != "file" {
            return Ok(SourceState::NotChecked);
        }
        let store = state.runtime_env().object_store(&url)?;
        let listed: Vec<_> = url
            .list_all_files(&state, store.as_ref(), extension)
            .await?
            .try_collect()
            .await?;
        now.extend(listed.into_iter().map(|meta| source_file(&url, meta)));
    }
    for file in recorded {
        match now.iter().find(|f| f.path == file.path) {
            None => return Ok(SourceState::Changed(format!("{} is gone", file.path))),
            Some(f) if f.size != file.size || f.modified != file.modified => {
                return Ok(SourceState::Changed(format!("{} changed", file.path)));
            }
            Some(_) => {}
        }
    }
    Ok(
        match now
            .iter()
            .find(|f| !recorded.iter().any(|r| r.path == f.path))
        {
            Some(added) => SourceState::Changed(format!("{} was added", added.path)),
            None => SourceState::Unchanged,
        },
    )
}

fn source_file(url: &ListingTableUrl, meta: object_store::ObjectMeta) -> SourceFile {
    SourceFile {
        path: format!("{}{}", url.object_store().as_str(), meta.location),
        size: meta.size,
        modified: meta
            .last_modified
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        e_tag: meta.e_tag,
    }
}

/// What [`reproduce`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Reproduction {
    pub rows: u64,
    pub checksum: String,
    pub recorded: String,
}

impl Reproduction {
    pub fn matches(&self) -> bool {
        self.checksum == self.recorded
    }
}

/// `hindcast reproduce`: run the recorded `COPY` again in `hc` (a new session) into `out`,
/// over the recorded sources (each Delta table at the version it was read at), and compare
/// the checksums. Refuses sources that cannot be read again as they were.
pub async fn reproduce(hc: &Hindcast, dir: &Path, out: &str) -> Result<Reproduction> {
    let manifest = read(dir)?;
    for source in &manifest.sources {
        let Some(definition) = &source.definition else {
            return plan_err!(
                "the training set read {}, which was built in code (not by SQL), so it cannot be re-run: register it from files and write the training set again",
                source.name
            );
        };
        if let SourceState::Changed(change) = source_state(source).await? {
            return plan_err!(
                "source {}: {change} since the training set was written, so reproducing it would read other data (a Delta table pinned by version keeps every version)",
                source.name
            );
        }
        let mut statements = hc.parse_sql(definition)?;
        if let Some(version) = source.delta_version {
            statements.iter_mut().for_each(|s| pin_delta(s, version));
        }
        for statement in statements {
            hc.execute_statement(statement).await?;
        }
    }
    for service in &manifest.services {
        hc.sql(service).await?;
    }
    let mut statements = hc.parse_sql(&manifest.sql)?;
    let [HindcastStatement::DataFusion(DFStatement::CopyTo(copy))] = statements.as_mut_slice()
    else {
        return plan_err!(
            "the manifest's sql is not one COPY statement: {}",
            manifest.sql
        );
    };
    let local = out.strip_prefix("file://").unwrap_or(out);
    if local.contains("://") {
        return plan_err!(
            "reproduce writes to a local directory, not {out}: the manifest it checks is written only there"
        );
    }
    copy.target = format!("{}/", local.trim_end_matches('/'));
    let out_dir = PathBuf::from(copy.target.trim_end_matches('/'));
    let statement = statements.remove(0);
    hc.execute_statement(statement).await?.collect().await?;
    let written = read(&out_dir)?;
    Ok(Reproduction {
        rows: written.rows,
        checksum: written.checksum,
        recorded: manifest.checksum,
    })
}

/// A Delta table's or view's definition read at `version`.
fn pin_delta(statement: &mut HindcastStatement, version: u64) {
    let pin = |options: &mut Vec<(String, String)>| {
        options.retain(|(k, _)| {
            let k = k.to_lowercase();
            let k = k.strip_prefix("format.").unwrap_or(&k);
            k != "version" && k != "timestamp"
        });
        options.push(("version".to_string(), version.to_string()));
    };
    match statement {
        HindcastStatement::CreateFeatureView(create) => {
            if let FeatureViewSource::Files {
                format, options, ..
            } = &mut create.source
                && format == DELTA
            {
                pin(options);
            }
        }
        HindcastStatement::DataFusion(DFStatement::CreateExternalTable(create))
            if create.file_type.eq_ignore_ascii_case(DELTA) =>
        {
            let mut options: Vec<(String, String)> = create
                .options
                .iter()
                .map(|(k, v)| (k.clone(), value_string(v)))
                .collect();
            pin(&mut options);
            create.options = options
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        datafusion::sql::sqlparser::ast::Value::SingleQuotedString(v),
                    )
                })
                .collect();
        }
        _ => {}
    }
}

fn value_string(value: &datafusion::sql::sqlparser::ast::Value) -> String {
    use datafusion::sql::sqlparser::ast::Value;
    match value {
        Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
        other => other.to_string(),
    }
}
