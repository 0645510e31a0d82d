//! Running the feature-store DDL: `CREATE`/`DROP FEATURE VIEW|SERVICE`, `SHOW FEATURE ...`
//! and `DESCRIBE` of a view or service.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::common::{
    DFSchema, DataFusionError, Result, ScalarValue, TableReference, plan_datafusion_err, plan_err,
};
use datafusion::datasource::ViewTable;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::SessionState;
use datafusion::logical_expr::{CreateExternalTable, Expr};
use datafusion::prelude::{DataFrame, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::planner::{IdentNormalizer, object_name_to_table_reference};
use datafusion::sql::sqlparser::ast::{ObjectName, Statement as SQLStatement};
use futures::TryStreamExt;
use object_store::ObjectMeta;

use url::Url;

use crate::delta::{DELTA, DeltaSource};
use crate::features::{
    AggregateFunction, Aggregation, BadFile, FeatureRegistry, FeatureService, FeatureSource,
    FeatureView, FeatureViewTable, file_location, is_hidden, open_problem,
};
use crate::sql::{
    CreateFeatureService, CreateFeatureView, FeatureObject, FeatureViewSource, HindcastStatement,
    prepare_statement,
};
use crate::storage::{S3_OPTION_PREFIX, is_credential, s3_store};
use crate::time::{DisplayTtl, TimeDomain};

/// Run a feature-store statement. `base` is the directory relative `LOCATION`s resolve
/// against (the repository's, when loading one). Returns `None` for DataFusion's statements.
pub async fn execute_ddl(
    ctx: &SessionContext,
    registry: &FeatureRegistry,
    statement: &HindcastStatement,
    base: Option<&Path>,
) -> Result<Option<DataFrame>> {
    let frame = match statement {
        HindcastStatement::DataFusion(statement) => {
            return describe(ctx, registry, statement).await;
        }
        HindcastStatement::CreateFeatureView(create) => {
            create_view(ctx, registry, create, base).await?;
            ctx.read_empty()?
        }
        HindcastStatement::CreateFeatureService(create) => {
            create_service(ctx, registry, create).await?;
            ctx.read_empty()?
        }
        HindcastStatement::DropFeature {
            kind,
            name,
            if_exists,
        } => {
            drop(ctx, registry, *kind, name, *if_exists).await?;
            ctx.read_empty()?
        }
        HindcastStatement::ShowFeatures(FeatureObject::View) => show_views(ctx).await?,
        HindcastStatement::ShowFeatures(FeatureObject::Service) => show_services(ctx, registry)?,
    };
    Ok(Some(frame))
}

/// Whether the session lower-cases unquoted identifiers, as DataFusion's planner does.
fn normalizes_idents(ctx: &SessionContext) -> bool {
    ctx.state()
        .config()
        .options()
        .sql_parser
        .enable_ident_normalization
}

fn normalizer(ctx: &SessionContext) -> IdentNormalizer {
    IdentNormalizer::new(normalizes_idents(ctx))
}

fn table_reference(ctx: &SessionContext, name: &ObjectName) -> Result<TableReference> {
    object_name_to_table_reference(name.clone(), normalizes_idents(ctx))
}

/// The feature view registered as `name`, if there is one.
pub async fn lookup_view(ctx: &SessionContext, name: &TableReference) -> Option<FeatureView> {
    let provider = ctx.table_provider(name.clone()).await.ok()?;
    FeatureViewTable::of(provider.as_ref()).cloned()
}

async fn create_view(
    ctx: &SessionContext,
    registry: &FeatureRegistry,
    create: &CreateFeatureView,
    base: Option<&Path>,
) -> Result<()> {
    let reference = table_reference(ctx, &create.name)?;
    if let Ok(existing) = ctx.table_provider(reference.clone()).await {
        if create.if_not_exists {
            return Ok(());
        }
        if FeatureViewTable::of(existing.as_ref()).is_none() {
            return plan_err!(
                "{reference} is a table, not a feature view: drop it first or pick another name"
            );
        }
        if !create.or_replace {
            return plan_err!(
                "feature view {reference} already exists: use CREATE OR REPLACE FEATURE VIEW to replace it"
            );
        }
    }
    let normalizer = normalizer(ctx);
    let normalize =
        |ident: &datafusion::sql::sqlparser::ast::Ident| normalizer.normalize(ident.clone());
    let ttl = match &create.ttl {
        Some(expr) => ttl_value(ctx, &expr.to_string())?,
        None => None,
    };
    if create.ttl.is_some() && !create.aggregates.is_empty() {
        return plan_err!(
            "feature view {reference}: an aggregation view has a window per aggregate instead of a TTL: drop TTL"
        );
    }
    let aggregates = create
        .aggregates
        .iter()
        .map(|item| {
            let function = AggregateFunction::parse(
                &item.function.value,
                item.distinct,
                item.argument.is_none(),
            )?;
            let window = interval_value(
                ctx,
                &item.window.to_string(),
                "an aggregate's window",
                "count(*) OVER INTERVAL '30 days' AS n_30d",
            )?;
            Ok(Aggregation {
                function,
                argument: item.argument.as_ref().map(normalize),
                window,
                name: normalize(&item.name),
            })
        })
        .collect::<Result<Vec<_>>>()
        .map_err(|e| e.context(format!("feature view {reference}")))?;
    let state = ctx.state();
    let (source, provider): (FeatureSource, Arc<dyn TableProvider>) = match &create.source {
        FeatureViewSource::Files {
            format,
            location,
            partitions,
            options,
        } => {
            if format != "PARQUET" && format != "CSV" && format != DELTA {
                return plan_err!(
                    "feature view {reference}: STORED AS {format} is not supported; use PARQUET, CSV or DELTA"
                );
            }
            let location = resolve_location(location, base);
            let mut partitions: Vec<String> = partitions.iter().map(normalize).collect();
            if format == DELTA && !partitions.is_empty() {
                return plan_err!(
                    "feature view {reference}: a Delta table's partition columns come from its log: drop PARTITIONED BY"
                );
            }
            // DataFusion's option names are `format.<key>`; accept the short form too.
            let (s3_options, options): (HashMap<String, String>, HashMap<String, String>) = options
                .iter()
                .map(|(k, v)| {
                    let k = k.to_lowercase();
                    let k = if k.contains('.') {
                        k
                    } else {
                        format!("format.{k}")
                    };
                    (k, v.clone())
                })
                .partition(|(k, _)| k.starts_with(S3_OPTION_PREFIX));
            if !s3_options.is_empty() {
                let url = Url::parse(&location).ok().filter(|u| u.scheme() == "s3");
                let Some(url) = url else {
                    return plan_err!(
                        "feature view {reference}: aws.* options apply to s3:// locations only, not '{location}'"
                    );
                };
                ctx.register_object_store(&url, s3_store(&url, &s3_options)?);
            }
            let cannot_read = |e: DataFusionError| {
                if matches!(&e, DataFusionError::External(inner) if inner.is::<BadFile>()) {
                    return e;
                }
                let hint = if e.to_string().contains("403 Forbidden") {
                    " (access denied: check the credentials, from the AWS_* environment variables or the view's aws.* OPTIONS)"
                } else {
                    ""
                };
                e.context(format!(
                    "feature view {reference}: cannot read {format} files at '{location}'{hint}"
                ))
            };
            let parquet = match format.as_str() {
                "PARQUET" => {
                    parquet_view_table(&state, &reference, &location, &options, &partitions)
                        .await
                        .map_err(&cannot_read)?
                }
                _ => None,
            };
            let provider = match parquet {
                Some(table) => table,
                None => {
                    let command = CreateExternalTable::builder(
                        reference.clone(),
                        location.clone(),
                        format.clone(),
                        Arc::new(DFSchema::empty()),
                    )
                    .with_partition_cols(partitions.clone())
                    .with_options(options)
                    .build();
                    let factory = state.table_factories().get(format).ok_or_else(|| {
                        plan_datafusion_err!("no table factory for {format} files in this session")
                    })?;
                    factory
                        .create(&state, &command)
                        .await
                        .map_err(&cannot_read)?
                }
            };
            if let Some(delta) = DeltaSource::of(provider.as_ref()) {
                partitions = delta.partitions();
            }
            let source = FeatureSource::Files {
                format: format.clone(),
                location,
                partitions,
            };
            (source, provider)
        }
        FeatureViewSource::Query(query) => {
            let sql = query.to_string();
            let mut statement =
                DFStatement::Statement(Box::new(SQLStatement::Query(query.clone())));
            prepare_statement(&mut statement, registry);
            let plan = state.statement_to_plan(statement).await?;
            let provider = Arc::new(ViewTable::new(plan, Some(sql.clone())));
            (FeatureSource::Query(sql), provider)
        }
    };
    let view = FeatureView {
        name: reference.to_string(),
        entities: create.entities.iter().map(normalize).collect(),
        timestamp: normalize(&create.timestamp),
        created: create.created.as_ref().map(normalize),
        ttl,
        source,
        aggregates,
        definition: Some(definition(create, base)),
    };
    let table = FeatureViewTable::try_new(view, provider)?;
    ctx.deregister_table(reference.clone())?;
    ctx.register_table(reference, Arc::new(table))?;
    Ok(())
}

/// `create` as SQL that recreates the view from any directory: its location absolute and
/// its credentials left out (they come from the environment, as for any view).
fn definition(create: &CreateFeatureView, base: Option<&Path>) -> String {
    let mut create = create.clone();
    create.or_replace = false;
    create.if_not_exists = false;
    if let FeatureViewSource::Files {
        location, options, ..
    } = &mut create.source
    {
        *location = absolute_location(&resolve_location(location, base));
        options.retain(|(key, _)| !is_credential(key));
    }
    create.to_string()
}

/// A relative local path made absolute against the working directory, keeping a trailing
/// slash; URLs are left alone.
pub(crate) fn absolute_location(location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let Ok(path) = std::path::absolute(location) else {
        return location.to_string();
    };
    let mut path = path.to_string_lossy().into_owned();
    if location.ends_with('/') && !path.ends_with('/') {
        path.push('/');
    }
    path
}

/// A relative local path resolves against the repository directory; URLs and absolute
/// paths are left alone.
pub(crate) fn resolve_location(location: &str, base: Option<&Path>) -> String {
    match base {
        Some(base) if !location.contains("://") && Path::new(location).is_relative() => {
            let joined = base.join(location);
            let mut joined = joined.to_string_lossy().into_owned();
            // A trailing slash marks a directory for DataFusion's listing tables.
            if location.ends_with('/') && !joined.ends_with('/') {
                joined.push('/');
            }
            joined
        }
        _ => location.to_string(),
    }
}

/// The TTL as an interval; `None` for a zero TTL, which means none (as in Feast).
fn ttl_value(ctx: &SessionContext, sql: &str) -> Result<Option<ScalarValue>> {
    let value = interval_value(ctx, sql, "TTL", "TTL INTERVAL '90 days'")?;
    // A zero TTL means no TTL, as in Feast (in a MATCH_CONDITION, zero is a bound).
    match TimeDomain::Instant(TimeUnit::Nanosecond).ttl_from_scalar(&value)? {
        0 => Ok(None),
        _ => Ok(Some(value)),
    }
}

/// A constant interval (`what` names it in messages), checked for sign and months in the
/// finest domain; the view's own domain is checked when the view is validated.
fn interval_value(
    ctx: &SessionContext,
    sql: &str,
    what: &str,
    example: &str,
) -> Result<ScalarValue> {
    let not_constant =
        || plan_err!("{what} must be a constant interval, e.g. {example}; found {sql}");
    let expr = ctx.parse_sql_expr(sql, &DFSchema::empty())?;
    let value = match expr {
        Expr::Literal(value, _) => value,
        Expr::Negative(inner) => match *inner {
            Expr::Literal(value, _) => value.arithmetic_negate()?,
            _ => return not_constant(),
        },
        _ => return not_constant(),
    };
    if !matches!(
        value.data_type(),
        DataType::Interval(_) | DataType::Duration(_)
    ) {
        return plan_err!("{what} must be an interval, e.g. {example}; found {sql}");
    }
    TimeDomain::Instant(TimeUnit::Nanosecond)
        .ttl_from_scalar(&value)
        .map_err(|e| e.context(what.to_string()))?;
    Ok(value)
}

async fn create_service(
    ctx: &SessionContext,
    registry: &FeatureRegistry,
    create: &CreateFeatureService,
) -> Result<()> {
    let name = table_reference(ctx, &create.name)?.to_string();
    if registry.service(&name).is_some() {
        if create.if_not_exists {
            return Ok(());
        }
        if !create.or_replace {
            return plan_err!(
                "feature service {name} already exists: use CREATE OR REPLACE FEATURE SERVICE to replace it"
            );
        }
    }
    let normalizer = normalizer(ctx);
    let mut views = vec![];
    for (view_name, features) in &create.views {
        let reference = table_reference(ctx, view_name)?;
        let Some(view) = lookup_view(ctx, &reference).await else {
            return plan_err!(
                "feature service {name}: {reference} is not a feature view (SHOW FEATURE VIEWS lists them)"
            );
        };
        let features = match features {
            None => None,
            Some(list) => {
                let provider = ctx.table_provider(reference.clone()).await?;
                let available = view.features(&provider.schema());
                let list: Vec<String> = list
                    .iter()
                    .map(|f| normalizer.normalize(f.clone()))
                    .collect();
                for feature in &list {
                    if !available.contains(feature) {
                        return plan_err!(
                            "feature service {name}: feature view {reference} has no feature {feature}; its features are: {}",
                            available.join(", ")
                        );
                    }
                }
                Some(list)
            }
        };
        views.push((view.name.clone(), features));
    }
    registry.insert(FeatureService { name, views });
    Ok(())
}

async fn drop(
    ctx: &SessionContext,
    registry: &FeatureRegistry,
    kind: FeatureObject,
    name: &ObjectName,
    if_exists: bool,
) -> Result<()> {
    let reference = table_reference(ctx, name)?;
    let found = match kind {
        FeatureObject::View => {
            if lookup_view(ctx, &reference).await.is_some() {
                ctx.deregister_table(reference.clone())?;
                true
            } else {
                false
            }
        }
        FeatureObject::Service => registry.remove(&reference.to_string()).is_some(),
    };
    if !found && !if_exists {
        return plan_err!("{kind} {reference} does not exist");
    }
    Ok(())
}

/// Every feature view in every catalog and schema, in name order.
async fn all_views(ctx: &SessionContext) -> Result<Vec<(FeatureView, SchemaRef)>> {
    let mut views = vec![];
    for catalog_name in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            for table in schema.table_names() {
                if let Some(provider) = schema.table(&table).await?
                    && let Some(view) = FeatureViewTable::of(provider.as_ref())
                {
                    views.push((view.clone(), provider.schema()));
                }
            }
        }
    }
    views.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    Ok(views)
}

fn display_ttl(view: &FeatureView, schema: &SchemaRef) -> String {
    let Some(ttl) = view.ttl() else {
        return String::new();
    };
    let domain = schema
        .field_with_name(&view.timestamp)
        .ok()
        .and_then(|f| TimeDomain::common(f.data_type(), f.data_type()));
    match domain.map(|d| (d, d.ttl_from_scalar(ttl))) {
        Some((domain, Ok(bound))) => DisplayTtl(domain, bound).to_string(),
        _ => ttl.to_string(),
    }
}

fn string_table(
    ctx: &SessionContext,
    columns: &[&str],
    rows: Vec<Vec<String>>,
) -> Result<DataFrame> {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, false))
            .collect::<Vec<_>>(),
    ));
    let arrays = (0..columns.len())
        .map(|i| Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r[i]))) as _)
        .collect();
    ctx.read_batch(RecordBatch::try_new(schema, arrays)?)
}

async fn show_views(ctx: &SessionContext) -> Result<DataFrame> {
    let rows = all_views(ctx)
        .await?
        .into_iter()
        .map(|(view, schema)| {
            vec![
                view.name.clone(),
                view.entities.join(", "),
                view.timestamp.clone(),
                view.created.clone().unwrap_or_default(),
                display_ttl(&view, &schema),
                view.source.to_string(),
            ]
        })
        .collect();
    string_table(
        ctx,
        &["name", "entity", "timestamp", "created", "ttl", "source"],
        rows,
    )
}

fn show_services(ctx: &SessionContext, registry: &FeatureRegistry) -> Result<DataFrame> {
    let mut rows = vec![];
    for service in registry.services() {
        for (view, features) in &service.views {
            let features = match features {
                None => "*".to_string(),
                Some(list) => list.join(", "),
            };
            rows.push(vec![service.name.clone(), view.clone(), features]);
        }
    }
    string_table(ctx, &["name", "feature_view", "features"], rows)
}

/// `DESCRIBE name` for a feature view or service; `None` for anything else.
async fn describe(
    ctx: &SessionContext,
    registry: &FeatureRegistry,
    statement: &DFStatement,
) -> Result<Option<DataFrame>> {
    let DFStatement::Statement(statement) = statement else {
        return Ok(None);
    };
    let SQLStatement::ExplainTable {
        describe_alias,
        table_name,
        ..
    } = statement.as_ref()
    else {
        return Ok(None);
    };
    if !matches!(
        describe_alias,
        datafusion::sql::sqlparser::ast::DescribeAlias::Describe
            | datafusion::sql::sqlparser::ast::DescribeAlias::Desc
    ) {
        return Ok(None);
    }
    let reference = table_reference(ctx, table_name)?;
    if let Ok(provider) = ctx.table_provider(reference.clone()).await {
        let Some(view) = FeatureViewTable::of(provider.as_ref()) else {
            return Ok(None);
        };
        let schema = provider.schema();
        let mut partitions = match &view.source {
            FeatureSource::Files { partitions, .. } => partitions.join(", "),
            FeatureSource::Query(_) => String::new(),
        };
        if let Some(partitioning) = view.time_partitioning() {
            let columns = partitioning.columns().join(", ");
            partitions.push_str(&format!(
                " ({columns} follow {}: pruned by time)",
                view.timestamp
            ));
        }
        let mut rows = vec![
            vec!["name".into(), view.name.clone()],
            vec!["entity".into(), view.entities.join(", ")],
            vec!["timestamp".into(), view.timestamp.clone()],
            vec!["created".into(), view.created.clone().unwrap_or_default()],
            vec!["ttl".into(), display_ttl(view, &schema)],
            vec!["source".into(), view.source.to_string()],
            vec!["partitions".into(), partitions],
        ];
        if let Some(delta) = provider
            .downcast_ref::<FeatureViewTable>()
            .and_then(|table| DeltaSource::of(table.source().as_ref()))
        {
            let version = match delta.is_pinned() {
                true => format!("{} (pinned)", delta.version()),
                false => format!("{} (the newest)", delta.current_version().await?),
            };
            rows.push(vec!["delta version".into(), version]);
        }
        let features = view.features(&schema);
        let partition_columns = match &view.source {
            FeatureSource::Files { partitions, .. } => partitions.clone(),
            FeatureSource::Query(_) => vec![],
        };
        let time_type = schema
            .field_with_name(&view.timestamp)
            .map(|f| f.data_type().clone())
            .unwrap_or(DataType::Null);
        for field in schema.fields() {
            let name = field.name();
            let role = if view.entities.contains(name) {
                "entity"
            } else if *name == view.timestamp {
                "timestamp"
            } else if view.created.as_ref() == Some(name) {
                "created"
            } else if features.contains(name) {
                "feature"
            } else if !view.aggregates.is_empty() && !partition_columns.contains(name) {
                "event"
            } else {
                "partition"
            };
            let nullable = if field.is_nullable() { "" } else { " NOT NULL" };
            rows.push(vec![
                format!("column {name}"),
                format!("{}{nullable} ({role})", field.data_type()),
            ]);
        }
        for aggregate in &view.aggregates {
            let window = match TimeDomain::common(&time_type, &time_type) {
                Some(domain) => match domain.ttl_from_scalar(&aggregate.window) {
                    Ok(ticks) => DisplayTtl(domain, ticks).to_string(),
                    Err(_) => aggregate.window.to_string(),
                },
                None => aggregate.window.to_string(),
            };
            let call = aggregate.function.call(aggregate.argument.as_deref());
            rows.push(vec![
                format!("aggregate {}", aggregate.name),
                format!("{call} OVER {window}"),
            ]);
        }
        return string_table(ctx, &["property", "value"], rows).map(Some);
    }
    let Some(service) = registry.service(&reference.to_string()) else {
        return Ok(None);
    };
    let mut rows = vec![vec!["name".to_string(), service.name.clone()]];
    for (view, features) in &service.views {
        let features = match features {
            None => "*".to_string(),
            Some(list) => list.join(", "),
        };
        rows.push(vec![format!("view {view}"), features]);
    }
    string_table(ctx, &["property", "value"], rows).map(Some)
}

/// A Parquet view's table: DataFusion's listing table over the location's `.parquet`
/// files, its schema read from the newest of them, its partition columns typed as
/// DataFusion types them. `None` where no file has rows: DataFusion's table factory then
/// says what it finds.
///
/// Why one file's schema: given no schema, DataFusion's listing table reads every file's
/// footer to merge their schemas; two years of daily partitions are 730 footers, on S3 a
/// request each, at every session start. One file's schema is what Spark reads by
/// default. The newest file has the columns added last, and older files without one read
/// it as NULL (a column declared NOT NULL cannot be; the read names the file).
///
/// Why not DataFusion's table factory: it checks the partition directories of the first
/// ten files it lists, hidden ones included, so the `_SUCCESS` Spark writes at a table's
/// root fails `CREATE`. Here hidden files (`files::is_hidden`) are skipped, and every other
/// file must be under the declared partition directories: DataFusion's scan drops a file it
/// cannot read partition values for, which would silently leave out its rows.
async fn parquet_view_table(
    state: &SessionState,
    view: &impl std::fmt::Display,
    location: &str,
    options: &HashMap<String, String>,
    partitions: &[String],
) -> Result<Option<Arc<dyn TableProvider>>> {
    let url = ListingTableUrl::parse(location)?;
    let store = state.runtime_env().object_store(&url)?;
    let format = state
        .get_file_format_factory("parquet")
        .ok_or_else(|| plan_datafusion_err!("no Parquet format in this session"))?
        .create(state, options)?;
    // A directory's `.parquet` files, as DataFusion reads one it infers the schema of; a
    // file by its name, whatever it ends in.
    let extension = if url.is_collection() {
        format.get_ext()
    } else {
        String::new()
    };
    let files: Vec<ObjectMeta> = url
        .list_all_files(state, store.as_ref(), &extension)
        .await?
        .try_collect()
        .await?;
    let files: Vec<ObjectMeta> = files
        .into_iter()
        .filter(|f| !is_hidden(url.prefix(), &f.location))
        .collect();
    for file in &files {
        // As DataFusion reads partition values: the first directories below the location,
        // one `name=value` for each partition column in order (deeper ones are free).
        let parts: Vec<&str> = url
            .strip_prefix(&file.location)
            .into_iter()
            .flatten()
            .collect();
        let directories = parts.split_last().map_or(&[][..], |(_, dirs)| dirs);
        let in_partitions = directories.len() >= partitions.len()
            && partitions
                .iter()
                .zip(directories)
                .all(|(p, dir)| dir.split_once('=').is_some_and(|(key, _)| key == p));
        if !in_partitions {
            return Err(DataFusionError::External(Box::new(BadFile {
                view: view.to_string(),
                file: file_location(&url.object_store(), &file.location),
                problem: format!(
                    "it is not under the view's partition directories ({}), so no query would read its rows: move it under them, or remove it",
                    partitions
                        .iter()
                        .map(|p| format!("{p}=..."))
                        .collect::<Vec<_>>()
                        .join("/")
                ),
            })));
        }
    }
    let Some(newest) = files
        .into_iter()
        .filter(|f| f.size > 0)
        .max_by(|a, b| (a.last_modified, &a.location).cmp(&(b.last_modified, &b.location)))
    else {
        return Ok(None);
    };
    let file = file_location(&url.object_store(), &newest.location);
    let file_schema = format
        .infer_schema(state, &store, &[newest])
        .await
        .map_err(|e| {
            DataFusionError::External(Box::new(BadFile {
                view: view.to_string(),
                file,
                problem: format!(
                    "the view takes its schema from its newest file, this one, and {}",
                    open_problem(&e.to_string())
                ),
            }))
        })?;
    let fields: Vec<_> = file_schema
        .fields()
        .iter()
        .filter(|f| !partitions.contains(f.name()))
        .cloned()
        .collect();
    let file_schema = Arc::new(Schema::new_with_metadata(
        fields,
        file_schema.metadata().clone(),
    ));
    let partition_type = DataType::Dictionary(Box::new(DataType::UInt16), Box::new(DataType::Utf8));
    let listing = ListingOptions::new(format)
        .with_file_extension(extension)
        .with_table_partition_cols(
            partitions
                .iter()
                .map(|p| (p.clone(), partition_type.clone()))
                .collect(),
        );
    let config = ListingTableConfig::new(url)
        .with_listing_options(listing)
        .with_schema(file_schema);
    let table = ListingTable::try_new(config)?
        .with_cache(state.runtime_env().cache_manager.get_file_statistic_cache());
    Ok(Some(Arc::new(table)))
}
