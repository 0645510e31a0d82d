//! [`Hindcast`]: a DataFusion session with the point-in-time join installed.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::{Result, plan_datafusion_err};
use datafusion::datasource::MemTable;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::prelude::{
    CsvReadOptions, DataFrame, ParquetReadOptions, SessionConfig, SessionContext,
};
use datafusion::sql::parser::{DFParserBuilder, Statement};
use datafusion::sql::sqlparser::dialect::dialect_from_str;

use crate::logical::PushDownAsOfFilter;
use crate::physical::HindcastExtensionPlanner;
use crate::sql::{AsOfRelationPlanner, prepare_statement};

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
}

impl Default for Hindcast {
    fn default() -> Self {
        Self::new()
    }
}

impl Hindcast {
    /// A session with DataFusion's default configuration and runtime.
    pub fn new() -> Self {
        Self::new_with_config_rt(SessionConfig::new(), Arc::new(RuntimeEnv::default()))
    }

    /// A session with the given configuration and runtime (memory pool, disk manager).
    pub fn new_with_config_rt(config: SessionConfig, runtime: Arc<RuntimeEnv>) -> Self {
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_query_planner(Arc::new(HindcastQueryPlanner))
            .with_relation_planners(vec![Arc::new(AsOfRelationPlanner)])
            .with_optimizer_rule(Arc::new(PushDownAsOfFilter))
            .build();
        Self {
            ctx: SessionContext::new_with_state(state),
        }
    }

    /// A session whose queries stay within `limit` bytes of memory, spilling to disk (in
    /// the operating system's temporary directory) past it.
    pub fn with_memory_limit(mut config: SessionConfig, limit: usize) -> Result<Self> {
        // Every sort below a join reserves memory up front to merge its spill files; at
        // DataFusion's default (10 MB each) two sorts per partition would alone exceed a
        // small limit, so each gets a share of it instead.
        let sorts = 2 * config.target_partitions().max(1);
        let share = (limit / (4 * sorts)).clamp(64 * 1024, 10 * 1024 * 1024);
        config.options_mut().execution.sort_spill_reservation_bytes = share;
        // A fair pool splits memory between the sorts feeding each join partition, so all
        // of them spill in turn instead of the first one starving the others.
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(FairSpillPool::new(limit)))
            .build_arc()?;
        Ok(Self::new_with_config_rt(config, runtime))
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
    pub fn parse_sql(&self, sql: &str) -> Result<Vec<Statement>> {
        let state = self.ctx.state();
        let options = &state.config().options().sql_parser;
        let dialect = dialect_from_str(options.dialect)
            .ok_or_else(|| plan_datafusion_err!("unsupported SQL dialect: {}", options.dialect))?;
        let statements = DFParserBuilder::new(sql)
            .with_dialect(dialect.as_ref())
            .with_recursion_limit(options.recursion_limit.get())
            .build()?
            .parse_statements()?;
        Ok(statements.into())
    }

    /// Plan a parsed statement (see [`Self::sql`]).
    pub async fn execute_statement(&self, mut statement: Statement) -> Result<DataFrame> {
        prepare_statement(&mut statement);
        let plan = self.ctx.state().statement_to_plan(statement).await?;
        self.ctx.execute_logical_plan(plan).await
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
