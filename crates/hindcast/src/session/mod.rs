//! [`Hindcast`]: a DataFusion session with the point-in-time join installed.
//!
//! - [`ddl`]: running the feature-store statements;
//! - [`repository`]: loading a feature repository (a directory of `.sql` files);
//! - [`options`]: hindcast's session options (`SET hindcast.*`);
//! - [`copy`]: `COPY ... TO` written atomically;
//! - [`insert`]: `INSERT INTO` a Parquet feature view, as new files moved into place;
//! - [`manifest`]: a training set's `_hindcast.json`, `validate` and `reproduce`.

mod copy;
mod ddl;
mod insert;
pub mod manifest;
mod options;
mod repository;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::config::ConfigOptions;
use datafusion::common::{DataFusionError, Result, plan_datafusion_err};
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, Statement as LogicalStatement};
use datafusion::physical_plan::metrics::MetricType;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::prelude::{
    CsvReadOptions, DataFrame, ParquetReadOptions, SessionConfig, SessionContext,
};
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::dialect::{Dialect, dialect_from_str};

use crate::delta::{DELTA, DeltaTableFactory};
use crate::features::{self, FeatureRegistry};
use crate::logical::{PruneWindowAggregates, PushDownAsOfFilter, RewriteRowNumberAsOf};
use crate::physical::{HindcastExtensionPlanner, UseKeyTimeSort};
use crate::sql::{
    HindcastDialect, HindcastRelationPlanner, HindcastStatement, parse_statements,
    prepare_statement,
};
use crate::{distributed, runtime};
use datafusion::optimizer::{Optimizer, OptimizerRule};
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;

pub use copy::crash_point;
use copy::{RemoteOutput, TempOutput};
use ddl::{execute_ddl, resolve_location};
pub use options::{HindcastOptions, WorkerList, parse_memory_limit};

/// A DataFusion [`SessionContext`] that understands hindcast's SQL.
///
/// ```no_run
/// # async fn demo() -> datafusion::common::Result<()> {
/// let hc = hindcast::Hindcast::new();
/// hc.register_parquet("labels", "labels.parquet").await?;
/// hc.register_parquet("stats", "stats.parquet").await?;
/// hc.sql("SELECT * FROM labels l ASOF JOIN stats s \
///         MATCH_CONDITION (l.ts >= s.ts) ON l.user_id = s.user_id")
///     .await?
///     .show()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Hindcast {
    ctx: SessionContext,
    registry: FeatureRegistry,
}

impl Default for Hindcast {
    fn default() -> Self {
        Self::new()
    }
}

impl Hindcast {
    /// A session with DataFusion's default configuration and runtime.
    pub fn new() -> Self {
        let runtime = runtime::runtime_env(None)
            .expect("a runtime without a memory limit or disk settings always builds");
        Self::new_with_config_rt(Self::default_config(None), runtime)
    }

    /// DataFusion's configuration with hindcast's defaults (see [`runtime::default_config`]).
    pub fn default_config(memory_limit: Option<usize>) -> SessionConfig {
        runtime::default_config(memory_limit)
    }

    /// A session with the given configuration and runtime (memory pool, disk manager).
    pub fn new_with_config_rt(config: SessionConfig, runtime: Arc<RuntimeEnv>) -> Self {
        Self::build(config, runtime)
    }

    /// Queries are planned here and run on the workers of `hindcast.workers`, if any
    /// (`distributed`).
    fn build(mut config: SessionConfig, runtime: Arc<RuntimeEnv>) -> Self {
        let registry = FeatureRegistry::default();
        if config
            .options()
            .extensions
            .get::<HindcastOptions>()
            .is_none()
        {
            config
                .options_mut()
                .extensions
                .insert(HindcastOptions::default());
        }
        // The ROW_NUMBER rewrite sees the plan as written, before DataFusion's rules reshape
        // the join and the window it looks for.
        let mut rules: Vec<Arc<dyn OptimizerRule + Send + Sync>> = vec![Arc::new(
            RewriteRowNumberAsOf::new(HindcastOptions::rewrite_row_number),
        )];
        rules.extend(Optimizer::new().rules);
        rules.push(Arc::new(PushDownAsOfFilter));
        rules.push(Arc::new(PruneWindowAggregates));
        // Last, once DataFusion has placed the sorts: the ones under ASOF joins become
        // hindcast's own (physical/key_time_sort), unless `hindcast.key_time_sort` is off.
        let mut physical_rules = PhysicalOptimizer::new().rules;
        physical_rules.push(Arc::new(UseKeyTimeSort::new(
            HindcastOptions::key_time_sort,
        )));
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_table_factory(DELTA.to_string(), Arc::new(DeltaTableFactory))
            .with_query_planner(Arc::new(HindcastQueryPlanner))
            .with_relation_planners(vec![Arc::new(HindcastRelationPlanner::new(
                registry.clone(),
            ))])
            .with_optimizer_rules(rules)
            .with_physical_optimizer_rules(physical_rules);
        let state = distributed::coordinate(state, HindcastOptions::workers).build();
        Self {
            ctx: SessionContext::new_with_state(state),
            registry,
        }
    }

    /// A session as the shell and the Python package open one: hindcast's defaults
    /// ([`Self::default_config`]), the information schema, `EXPLAIN ANALYZE` at summary level
    /// (rows, bytes, time and pruning; `SET datafusion.explain.analyze_level = dev` shows
    /// every metric), and within `memory_limit` bytes if given.
    pub fn with_defaults(memory_limit: Option<usize>) -> Result<Self> {
        Self::builder().memory_limit(memory_limit).build()
    }

    /// A session to configure: its memory limit, and the workers it runs queries on.
    pub fn builder() -> HindcastBuilder {
        HindcastBuilder::default()
    }

    /// A session with the feature repository in `dir` loaded (see [`Self::load_repository`]).
    pub async fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let hc = Self::new();
        hc.load_repository(dir).await?;
        Ok(hc)
    }

    /// Run every `.sql` file of a feature repository: its feature views, services and
    /// tables. Relative `LOCATION`s resolve against `dir`.
    pub async fn load_repository(&self, dir: impl AsRef<Path>) -> Result<()> {
        repository::load_repository(self, dir.as_ref()).await
    }

    /// Run this session's queries on these workers from now on, as `SET hindcast.workers`
    /// does (an empty list: in this process).
    pub fn set_workers(&self, workers: WorkerList) {
        let state = self.ctx.state_ref();
        let mut state = state.write();
        set_workers(state.config_mut().options_mut(), workers);
    }

    /// The session's feature services.
    pub fn registry(&self) -> &FeatureRegistry {
        &self.registry
    }

    /// A session whose queries stay within `limit` bytes of memory, spilling to disk (in
    /// the operating system's temporary directory) past it.
    pub fn with_memory_limit(mut config: SessionConfig, limit: usize) -> Result<Self> {
        runtime::share_spill_reservations(&mut config, limit);
        Ok(Self::new_with_config_rt(
            config,
            runtime::runtime_env(Some(limit))?,
        ))
    }

    /// The underlying DataFusion context, for everything hindcast does not wrap.
    pub fn session_context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Plan one SQL statement. Like [`SessionContext::sql`], DDL and `SET` run at once and
    /// queries run when the returned `DataFrame` is collected.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        let mut statements = self.parse_sql(sql)?;
        if statements.len() != 1 {
            return Err(plan_datafusion_err!(
                "expected exactly one SQL statement, found {}",
                statements.len()
            ));
        }
        self.execute_statement(statements.remove(0)).await
    }

    /// Parse a string holding any number of `;`-separated statements.
    pub fn parse_sql(&self, sql: &str) -> Result<Vec<HindcastStatement>> {
        Ok(self
            .parse_sql_with_lines(sql)?
            .into_iter()
            .map(|(statement, _)| statement)
            .collect())
    }

    /// Like [`Self::parse_sql`], with the line each statement starts on.
    pub fn parse_sql_with_lines(&self, sql: &str) -> Result<Vec<(HindcastStatement, u64)>> {
        let recursion_limit = self
            .ctx
            .state()
            .config()
            .options()
            .sql_parser
            .recursion_limit
            .get();
        parse_statements(sql, self.dialect()?.as_ref(), recursion_limit)
    }

    /// The session's SQL dialect; the default (generic) one is extended with
    /// `FOR SYSTEM_TIME AS OF` (see [`HindcastDialect`]).
    fn dialect(&self) -> Result<Box<dyn Dialect>> {
        let state = self.ctx.state();
        let name = state.config().options().sql_parser.dialect.to_string();
        if name.eq_ignore_ascii_case("generic") {
            return Ok(Box::new(HindcastDialect::default()));
        }
        dialect_from_str(&name)
            .ok_or_else(|| plan_datafusion_err!("unsupported SQL dialect: {name}"))
    }

    /// Plan a parsed statement (see [`Self::sql`]).
    pub async fn execute_statement(&self, statement: HindcastStatement) -> Result<DataFrame> {
        self.execute_statement_in(statement, None).await
    }

    /// Plan a parsed statement whose relative `LOCATION`s resolve against `base`.
    pub(crate) async fn execute_statement_in(
        &self,
        statement: HindcastStatement,
        base: Option<&Path>,
    ) -> Result<DataFrame> {
        if let Some(frame) = execute_ddl(&self.ctx, &self.registry, &statement, base).await? {
            return Ok(frame);
        }
        let HindcastStatement::DataFusion(mut statement) = statement else {
            unreachable!("execute_ddl runs every feature-store statement")
        };
        if let (Some(base), Statement::CreateExternalTable(create)) = (base, &mut statement) {
            for location in &mut create.locations {
                *location = resolve_location(location, Some(base));
            }
        }
        // A training set's manifest records the COPY as written, before the rewrite.
        let written = match &statement {
            Statement::CopyTo(copy) => manifest::wanted(copy),
            _ => None,
        };
        // Its definition as a training set's manifest records it.
        let definition = match &statement {
            Statement::CreateExternalTable(create) => Some(manifest::external_table_sql(create)),
            _ => None,
        };
        prepare_statement(&mut statement, &self.registry);
        if let Statement::CopyTo(copy) = &mut statement
            && let Some(mut output) = TempOutput::for_target(&copy.target)
        {
            if written.is_some() {
                manifest::claim_target(&mut output, &copy.target)?;
            }
            copy.target = output.temp_target();
            let tables = match written {
                Some(_) => manifest::referenced_tables(&self.ctx, &statement).await?,
                None => vec![],
            };
            let plan = self.ctx.state().statement_to_plan(statement).await?;
            let mut recorder = written
                .map(|sql| manifest::Recorder::new(sql, tables, &plan, &self.registry))
                .transpose()?;
            let frame = self.ctx.execute_logical_plan(plan).await?;
            let task = Arc::new(frame.task_ctx());
            let physical = frame.create_physical_plan().await?;
            if let Some(recorder) = &mut recorder {
                recorder.read_sources(self).await?;
            }
            let batches = collect(Arc::clone(&physical), task).await?;
            if let Some(recorder) = recorder {
                let dir = output.temp_dir();
                std::fs::create_dir_all(dir).map_err(|e| {
                    DataFusionError::from(e).context(format!("cannot create {}", dir.display()))
                })?;
                let manifest = recorder.finish(&physical, dir).await?;
                manifest::write(&manifest, dir)?;
            }
            output.commit(wrote_rows(&batches))?;
            self.forget_file_listings();
            return self.ctx.read_batches(batches);
        }
        if let Statement::CopyTo(copy) = &mut statement
            && let Some(output) = RemoteOutput::for_target(&copy.target, &self.ctx.runtime_env())?
        {
            copy.target = output.temp_target();
            let written = async {
                let plan = self.ctx.state().statement_to_plan(statement).await?;
                self.ctx.execute_logical_plan(plan).await?.collect().await
            };
            return match written.await {
                Ok(batches) => {
                    output.commit().await?;
                    self.forget_file_listings();
                    self.ctx.read_batches(batches)
                }
                Err(e) => {
                    output.abort().await;
                    Err(e)
                }
            };
        }
        let mut plan = self.ctx.state().statement_to_plan(statement).await?;
        if let (LogicalPlan::Ddl(DdlStatement::CreateExternalTable(create)), Some(definition)) =
            (&mut plan, definition)
        {
            create.definition = Some(definition);
        }
        if let Some(insert) = insert::into_parquet_view(&plan)? {
            let frame = self.ctx.execute_logical_plan(insert.copy).await?;
            let batches = frame.collect().await?;
            insert.output.commit(wrote_rows(&batches))?;
            self.forget_file_listings();
            return self.ctx.read_batches(batches);
        }
        let sets_workers = matches!(&plan, LogicalPlan::Statement(LogicalStatement::SetVariable(set))
            if set.variable.eq_ignore_ascii_case("hindcast.workers"));
        let frame = self.ctx.execute_logical_plan(plan).await?;
        if sets_workers {
            let state = self.ctx.state_ref();
            let mut state = state.write();
            let options = state.config_mut().options_mut();
            let has_workers = !HindcastOptions::workers(options).is_empty();
            distributed::follow_workers(options, has_workers);
        }
        Ok(frame)
    }

    /// Files were moved into place: a runtime that caches file listings (hindcast's own
    /// does not, `runtime.rs`; one handed to [`Self::new_with_config_rt`] may) would not
    /// show them to the next query.
    fn forget_file_listings(&self) {
        if let Some(cache) = self.ctx.runtime_env().cache_manager.get_list_files_cache() {
            cache.clear();
        }
    }

    /// Feast's `get_historical_features`: for every row of `spine`, the requested features
    /// (`view:feature` references or feature service names) as of the spine's time column.
    pub async fn historical_features(
        &self,
        spine: DataFrame,
        refs: &[&str],
        options: RetrievalOptions,
    ) -> Result<DataFrame> {
        let RetrievalOptions {
            full_feature_names,
            filter_by_created_timestamp,
        } = options;
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!("__hc_spine_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.ctx.register_table(name.as_str(), spine.into_view())?;
        let refs: Vec<String> = refs
            .iter()
            .map(|r| format!("'{}'", r.replace('\'', "''")))
            .collect();
        let sql = format!(
            "SELECT * FROM historical_features('{name}', {}, full_feature_names => {full_feature_names}, \
             filter_by_created_timestamp => {filter_by_created_timestamp})",
            refs.join(", ")
        );
        let result = self.sql(&sql).await;
        self.ctx.deregister_table(name.as_str())?;
        result
    }

    /// Register a Parquet file or directory as a table.
    pub async fn register_parquet(&self, name: &str, path: &str) -> Result<()> {
        self.ctx
            .register_parquet(name, path, ParquetReadOptions::default())
            .await
    }

    /// Register a CSV file or directory (with a header row) as a table.
    pub async fn register_csv(&self, name: &str, path: &str) -> Result<()> {
        self.ctx
            .register_csv(name, path, CsvReadOptions::default())
            .await
    }

    /// Register in-memory Arrow batches (all of one schema) as a table, e.g. a spine.
    pub fn register_batches(&self, name: &str, batches: Vec<RecordBatch>) -> Result<()> {
        let Some(first) = batches.first() else {
            return Err(plan_datafusion_err!(
                "register_batches needs at least one batch to know the schema of {name}"
            ));
        };
        let table = MemTable::try_new(first.schema(), vec![batches])?;
        self.ctx.register_table(name, Arc::new(table))?;
        Ok(())
    }
}

/// DataFusion's physical planner plus hindcast's extension planner.
#[derive(Debug)]
struct HindcastQueryPlanner;

#[async_trait]
impl QueryPlanner for HindcastQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(HindcastExtensionPlanner)])
            .create_physical_plan(logical_plan, session)
            .await
    }
}

/// `workers` as the session's `hindcast.workers`, and the optimizer settings that go with
/// them.
fn set_workers(options: &mut ConfigOptions, workers: WorkerList) {
    distributed::follow_workers(options, !workers.urls().is_empty());
    let extensions = &mut options.extensions;
    match extensions.get_mut::<HindcastOptions>() {
        Some(options) => options.workers = workers,
        None => extensions.insert(HindcastOptions {
            workers,
            ..Default::default()
        }),
    }
}

/// Configures a [`Hindcast`] session ([`Hindcast::builder`]).
#[derive(Debug, Default)]
pub struct HindcastBuilder {
    config: Option<SessionConfig>,
    memory_limit: Option<usize>,
    workers: Option<Vec<String>>,
}

impl HindcastBuilder {
    /// Start from this configuration instead of hindcast's defaults.
    pub fn config(mut self, config: SessionConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// Keep this process's queries within `limit` bytes, spilling to disk past it.
    pub fn memory_limit(mut self, limit: Option<usize>) -> Self {
        self.memory_limit = limit;
        self
    }

    /// Run queries on these `hindcast worker`s (`host:port` or `http://host:port`): this
    /// session plans, they execute (`docs/distributed.md`). The same as `SET
    /// hindcast.workers`; none: run here.
    pub fn workers<S: Into<String>>(mut self, workers: impl IntoIterator<Item = S>) -> Self {
        self.workers = Some(workers.into_iter().map(Into::into).collect());
        self
    }

    /// The session. Without [`Self::config`], as the shell and the Python package open
    /// one: hindcast's defaults ([`Hindcast::default_config`]), the information schema,
    /// `EXPLAIN ANALYZE` at summary level (rows, bytes, time and pruning; `SET
    /// datafusion.explain.analyze_level = dev` shows every metric).
    pub fn build(self) -> Result<Hindcast> {
        let mut config = match self.config {
            Some(config) => config,
            None => {
                let mut config =
                    runtime::default_config(self.memory_limit).with_information_schema(true);
                config.options_mut().explain.analyze_level = MetricType::Summary;
                config
            }
        };
        if let Some(limit) = self.memory_limit {
            runtime::share_spill_reservations(&mut config, limit);
        }
        if let Some(workers) = self.workers {
            set_workers(config.options_mut(), WorkerList::parse(workers)?);
        }
        let runtime = runtime::runtime_env(self.memory_limit)?;
        Ok(Hindcast::build(config, runtime))
    }
}

/// Whether a `COPY`'s or `INSERT`'s result (DataFusion's one `count` row) says rows were
/// written.
fn wrote_rows(batches: &[RecordBatch]) -> bool {
    use datafusion::arrow::array::{Array, UInt64Array};
    batches.iter().any(|batch| {
        batch
            .columns()
            .first()
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
            .is_some_and(|counts| counts.iter().any(|n| n.unwrap_or(0) > 0))
    })
}

/// An error as one readable line, as the shell and the Python package show it: DataFusion
/// nests causes over several lines (`caused by`) and shows a parser error with `Debug`.
pub fn error_message(e: &DataFusionError) -> String {
    use datafusion::parquet::errors::ParquetError;
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
        DataFusionError::Context(context, inner) => format!("{context}: {}", error_message(inner)),
        DataFusionError::ResourcesExhausted(message) => format!(
            "Resources exhausted: {message}. The memory limit is shared by the session's running \
             queries: raise it (hindcast -m, memory_limit=...), or run fewer queries at once"
        ),
        DataFusionError::Shared(inner) => error_message(inner),
        DataFusionError::Diagnostic(_, inner) => error_message(inner),
        DataFusionError::External(inner) => external_message(inner.as_ref())
            .unwrap_or_else(|| e.to_string().lines().collect::<Vec<_>>().join(" ")),
        DataFusionError::ParquetError(inner) => match inner.as_ref() {
            ParquetError::External(inner) => external_message(inner.as_ref())
                .unwrap_or_else(|| format!("Parquet error: {}", inner)),
            // Each layer adds its prefix: "Parquet error: Parquet error: ...".
            _ => format!(
                "Parquet error: {}",
                inner.to_string().replace("Parquet error: ", "")
            ),
        },
        _ => e.to_string().lines().collect::<Vec<_>>().join(" "),
    }
}

/// The message of an error DataFusion carries as an opaque one, where it is hindcast's or
/// DataFusion's own.
fn external_message(e: &(dyn std::error::Error + Send + Sync + 'static)) -> Option<String> {
    if let Some(bad) = e.downcast_ref::<features::BadFile>() {
        return Some(bad.to_string());
    }
    e.downcast_ref::<DataFusionError>().map(error_message)
}

/// Options of [`Hindcast::historical_features`], as in Feast.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetrievalOptions {
    /// Name feature columns `view__feature` instead of `feature`.
    pub full_feature_names: bool,
    /// Use a feature row for a spine row only once its created timestamp, too, is at or
    /// before the spine time (views without a created timestamp are unaffected).
    pub filter_by_created_timestamp: bool,
}
