//! A feature view: a table of feature rows over time, plus what a point-in-time join needs to
//! know about it (entity keys, event time, created time, TTL).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Fields, SchemaRef, TimeUnit};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Result, ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, LogicalPlan, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use super::TimePartitioning;
use super::files::checked_scans;
use crate::delta::DELTA;
use crate::time::TimeDomain;

/// The definition of a feature view, as `DESCRIBE` and the planner see it.
#[derive(Debug, Clone)]
pub struct FeatureView {
    pub name: String,
    pub entities: Vec<String>,
    pub timestamp: String,
    pub created: Option<String>,
    /// An interval, as written; read it with [`FeatureView::ttl`], which follows Feast in
    /// reading zero as no TTL.
    pub ttl: Option<ScalarValue>,
    pub source: FeatureSource,
    /// An aggregation view's features, computed from its events at each spine row's time;
    /// empty for a view whose rows are the features.
    pub aggregates: Vec<Aggregation>,
    /// The statement that defined the view, as SQL that recreates it anywhere (its location
    /// absolute, no credentials), which a training set's manifest records; `None` for a
    /// view built in code.
    pub definition: Option<String>,
}

#[derive(Debug, Clone)]
pub enum FeatureSource {
    Files {
        format: String,
        location: String,
        partitions: Vec<String>,
    },
    Query(String),
}

impl fmt::Display for FeatureSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeatureSource::Files {
                format, location, ..
            } => write!(f, "{format} '{location}'"),
            FeatureSource::Query(sql) => write!(f, "AS {sql}"),
        }
    }
}

impl FeatureView {
    /// How the view's hive partitions follow its event time, if they do (see
    /// `docs/features.md`): such partitions are skipped when a join's spine cannot reach them.
    pub fn time_partitioning(&self) -> Option<TimePartitioning> {
        match &self.source {
            FeatureSource::Files { partitions, .. } => TimePartitioning::detect(partitions),
            FeatureSource::Query(_) => None,
        }
    }

    /// The TTL a join applies: `None` when the view has none, or a zero one (as in Feast:
    /// zero means no TTL here, whereas a zero bound in SQL means the same instant).
    pub fn ttl(&self) -> Option<&ScalarValue> {
        let zero = |ttl: &ScalarValue| {
            TimeDomain::Instant(TimeUnit::Nanosecond)
                .ttl_from_scalar(ttl)
                .is_ok_and(|ticks| ticks == 0)
        };
        self.ttl.as_ref().filter(|ttl| !zero(ttl))
    }

    /// The features: an aggregation view's aggregates, or else every column but keys, times
    /// and partition columns.
    pub fn features(&self, schema: &SchemaRef) -> Vec<String> {
        if !self.aggregates.is_empty() {
            return self.aggregates.iter().map(|a| a.name.clone()).collect();
        }
        let partitions = match &self.source {
            FeatureSource::Files { partitions, .. } => partitions.as_slice(),
            FeatureSource::Query(_) => &[],
        };
        schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|name| {
                !self.entities.contains(name)
                    && *name != self.timestamp
                    && Some(name) != self.created.as_ref()
                    && !partitions.contains(name)
            })
            .collect()
    }

    /// Check the definition against the source's schema.
    pub fn validate(&self, schema: &SchemaRef) -> Result<()> {
        let column = |name: &str, role: &str| match schema.field_with_name(name) {
            Ok(field) => Ok(field.data_type().clone()),
            Err(_) => plan_err!(
                "feature view {}: its {role} column {name} is not in the source, whose columns are: {}",
                self.name,
                column_list(schema.fields())
            ),
        };
        for entity in &self.entities {
            column(entity, "ENTITY")?;
        }
        let time = column(&self.timestamp, "TIMESTAMP")?;
        let Some(domain) = TimeDomain::common(&time, &time) else {
            return plan_err!(
                "feature view {}: TIMESTAMP column {} is {time}; it must be a timestamp, a date or an integer",
                self.name,
                self.timestamp
            );
        };
        if let Some(created) = &self.created {
            // The join breaks ties on it as it does on a time: compared as an instant or an
            // integer. Checked here, so the view fails when defined, not on first use.
            let created_type = column(created, "CREATED")?;
            if TimeDomain::common(&created_type, &created_type).is_none() {
                return plan_err!(
                    "feature view {}: CREATED column {created} is {created_type}; it must be a timestamp, a date or an integer",
                    self.name
                );
            }
        }
        if let Some(ttl) = &self.ttl {
            domain
                .ttl_from_scalar(ttl)
                .map_err(|e| e.context(format!("feature view {}", self.name)))?;
        }
        for (i, aggregate) in self.aggregates.iter().enumerate() {
            let context = |e: datafusion::error::DataFusionError| {
                e.context(format!("feature view {}: {aggregate}", self.name))
            };
            let argument = match &aggregate.argument {
                Some(name) => Some(column(name, "aggregated")?),
                None => None,
            };
            aggregate
                .function
                .output_type(argument.as_ref())
                .map_err(context)?;
            domain
                .ttl_from_scalar(&aggregate.window)
                .map_err(|e| context(e.context("its window")))?;
            if self.aggregates[..i]
                .iter()
                .any(|a| a.name == aggregate.name)
            {
                return plan_err!(
                    "feature view {}: two aggregates are named {}; give each its own AS name",
                    self.name,
                    aggregate.name
                );
            }
        }
        Ok(())
    }
}

/// An aggregation feature view's feature: `function(argument) OVER window AS name`, computed
/// for each spine row over the entity's events in `[t - window, t]` (see
/// `docs/semantics.md`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub struct Aggregation {
    pub function: AggregateFunction,
    /// The event column aggregated; `None` for `count(*)`.
    pub argument: Option<String>,
    /// An interval, as written.
    pub window: ScalarValue,
    pub name: String,
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let call = self.function.call(self.argument.as_deref());
        write!(f, "{call} OVER {} AS {}", self.window, self.name)
    }
}

/// The aggregates an aggregation view computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd)]
pub enum AggregateFunction {
    /// `count(*)`: every event, whatever its values.
    CountRows,
    Count,
    CountDistinct,
    Sum,
    Avg,
    Min,
    Max,
    /// The latest event's non-NULL value.
    Last,
    StddevSamp,
    StddevPop,
    VarSamp,
    VarPop,
}

/// The names `AGGREGATE (...)` accepts, for messages.
pub const AGGREGATE_NAMES: &str = "count(*), count, count(DISTINCT ...), sum, avg, min, max, last, stddev (stddev_samp), stddev_pop, variance (var_samp), var_pop";

impl AggregateFunction {
    /// The function `name(DISTINCT? argument)` names, or why there is none.
    pub fn parse(name: &str, distinct: bool, star: bool) -> Result<Self> {
        use AggregateFunction::*;
        let function = match name.to_lowercase().as_str() {
            "count" if star && !distinct => CountRows,
            "count" if distinct => CountDistinct,
            "count" => Count,
            "sum" => Sum,
            "avg" | "mean" => Avg,
            "min" => Min,
            "max" => Max,
            "last" | "last_value" => Last,
            "stddev" | "stddev_samp" => StddevSamp,
            "stddev_pop" => StddevPop,
            "variance" | "var" | "var_samp" => VarSamp,
            "var_pop" => VarPop,
            other => {
                return plan_err!(
                    "unknown aggregate {other}: an aggregation view computes {AGGREGATE_NAMES}"
                );
            }
        };
        if distinct && function != CountDistinct {
            return plan_err!("DISTINCT applies to count only, not to {name}");
        }
        if star && function != CountRows {
            return plan_err!("{name}(*) is not an aggregate: only count takes *");
        }
        Ok(function)
    }

    /// Counts are never NULL (an empty window counts 0); the others are NULL when empty.
    pub fn nullable(&self) -> bool {
        use AggregateFunction::*;
        !matches!(self, CountRows | Count | CountDistinct)
    }

    /// The call as SQL over `argument` (`None` for `*`): `count(DISTINCT merchant)`.
    pub fn call(&self, argument: Option<&str>) -> String {
        let distinct = match self {
            AggregateFunction::CountDistinct => "DISTINCT ",
            _ => "",
        };
        format!("{}({distinct}{})", self.sql_name(), argument.unwrap_or("*"))
    }

    pub fn sql_name(&self) -> &'static str {
        use AggregateFunction::*;
        match self {
            CountRows | Count | CountDistinct => "count",
            Sum => "sum",
            Avg => "avg",
            Min => "min",
            Max => "max",
            Last => "last",
            StddevSamp => "stddev",
            StddevPop => "stddev_pop",
            VarSamp => "variance",
            VarPop => "var_pop",
        }
    }

    /// The type of the aggregate over an argument of type `argument` (`None` for `*`), or
    /// why it cannot be computed over it.
    pub fn output_type(&self, argument: Option<&DataType>) -> Result<DataType> {
        use AggregateFunction::*;
        let Some(argument) = argument else {
            return Ok(DataType::Int64);
        };
        let numeric = argument.is_integer() || argument.is_floating();
        Ok(match self {
            CountRows | Count => DataType::Int64,
            CountDistinct | Min | Max
                if RowConverter::new(vec![SortField::new(argument.clone())]).is_err() =>
            {
                return plan_err!(
                    "{}() cannot compare values of type {argument}",
                    self.sql_name()
                );
            }
            CountDistinct => DataType::Int64,
            Min | Max | Last => argument.clone(),
            Sum if argument.is_integer() => DataType::Int64,
            Sum | Avg | StddevSamp | StddevPop | VarSamp | VarPop if numeric => DataType::Float64,
            _ => {
                return plan_err!(
                    "{}() needs an integer or floating-point column, not {argument}: cast it in an AS SELECT view",
                    self.sql_name()
                );
            }
        })
    }
}

/// `a, b, c`: the names of `fields`, for messages.
pub(crate) fn column_list(fields: &Fields) -> String {
    fields
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table a feature view is registered as: it reads like its source (a plain `SELECT`
/// returns every row ever written), and carries the definition so `FOR SYSTEM_TIME AS OF`
/// and `historical_features` can find it by downcasting.
#[derive(Debug)]
pub struct FeatureViewTable {
    view: FeatureView,
    source: Arc<dyn TableProvider>,
}

impl FeatureViewTable {
    pub fn try_new(view: FeatureView, source: Arc<dyn TableProvider>) -> Result<Self> {
        view.validate(&source.schema())?;
        Ok(Self { view, source })
    }

    pub fn view(&self) -> &FeatureView {
        &self.view
    }

    /// The table the view reads.
    pub fn source(&self) -> &Arc<dyn TableProvider> {
        &self.source
    }

    /// The definition, if `provider` is a feature view.
    pub fn of(provider: &dyn TableProvider) -> Option<&FeatureView> {
        provider
            .downcast_ref::<FeatureViewTable>()
            .map(FeatureViewTable::view)
    }
}

#[async_trait]
impl TableProvider for FeatureViewTable {
    fn schema(&self) -> SchemaRef {
        self.source.schema()
    }

    fn table_type(&self) -> TableType {
        self.source.table_type()
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.source.get_table_definition()
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        self.source.get_logical_plan()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.source.scan(state, projection, filters, limit).await?;
        match &self.view.source {
            FeatureSource::Files {
                format, location, ..
            } if format == "PARQUET" => checked_scans(&self.view.name, location, plan),
            _ => Ok(plan),
        }
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.source.supports_filters_pushdown(filters)
    }

    /// Rows appended to the view's table, where its format can take them atomically (a
    /// Delta table: one commit).
    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match &self.view.source {
            FeatureSource::Query(_) => plan_err!(
                "feature view {} is defined AS SELECT: insert into the tables it reads instead",
                self.view.name
            ),
            FeatureSource::Files { format, .. } if format == DELTA => {
                self.source.insert_into(state, input, insert_op).await
            }
            // Parquet views are written by the session (`session/insert.rs`), which moves
            // whole files into place; reaching here is a CSV view.
            FeatureSource::Files { format, .. } => plan_err!(
                "feature view {} reads {format} files, which take no INSERT: write new files to its location instead",
                self.view.name
            ),
        }
    }
}
