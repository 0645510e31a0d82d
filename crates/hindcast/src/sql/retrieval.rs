//! `historical_features(spine, refs...)`: Feast's `get_historical_features` as a table function.
//!
//! ```sql
//! SELECT * FROM historical_features('labels', 'churn_model');
//! SELECT * FROM historical_features('SELECT * FROM labels WHERE ...',
//!     'user_spending_stats:avg_transaction_amount', 'user_activity:session_count_7d',
//!     full_feature_names => true);
//! ```
//! With `filter_by_created_timestamp => true` (Feast's option of that name), a feature row
//! only counts for a spine row once its created timestamp, too, is at or before the spine
//! time: a backfill written after the labelled event is not used for it.
//! The spine is a table name or a query. Each further argument is a `view:feature` reference
//! or the name of a feature service. One point-in-time join per view, at the spine's time
//! column, on the view's entity columns (which the spine must have under the same names).

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Column, DFSchema, Result, TableReference, plan_datafusion_err, plan_err};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::planner::RelationPlannerContext;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder, TableSource};
use datafusion::sql::sqlparser::ast::{
    Expr as SQLExpr, FunctionArg, FunctionArgExpr, Query, TableAlias, TableFactor,
    TableFunctionArgs, Value, VisitMut,
};

use super::NestAsOfJoins;
use super::dialect::HindcastDialect;
use super::parser::parse_query;
use crate::features::{FeatureRegistry, FeatureView, FeatureViewTable, column_list};
use crate::logical::{AsOfJoin, WindowAggregateJoin};

pub(super) const NAME: &str = "historical_features";

/// The argument [`declared_tables`] adds.
const HIDDEN: &str = "__hc_tables";

const SPINE: &str = "__hc_spine";
const FEATURES: &str = "__hc_features";

/// `__hc_tables => (SELECT 1 FROM (<spine>), view1, ...)` for a call with these arguments,
/// so that DataFusion loads those tables before planning (see `DeclareRetrievalTables`).
/// `None` when there is nothing to declare or the arguments are malformed (planning then
/// reports the problem).
pub(super) fn declared_tables(
    args: &[FunctionArg],
    registry: &FeatureRegistry,
) -> Option<FunctionArg> {
    let mut strings = args.iter().filter_map(|arg| match arg {
        FunctionArg::Unnamed(FunctionArgExpr::Expr(SQLExpr::Value(v))) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    });
    let spine = spine_sql(&strings.next()?);
    let mut from = vec![format!("({spine}) AS __hc_spine")];
    for r in strings {
        let views: Vec<String> = match r.split_once(':') {
            Some((view, _)) => vec![view.to_string()],
            None => registry
                .service(&r)
                .map(|s| s.views.into_iter().map(|(v, _)| v).collect())
                .unwrap_or_default(),
        };
        for view in views {
            if !view.is_empty() && !from.contains(&view) {
                from.push(view);
            }
        }
    }
    let sql = format!("SELECT 1 FROM {}", from.join(", "));
    let query = parse_query(&sql, &HindcastDialect::default()).ok()?;
    Some(FunctionArg::Named {
        name: HIDDEN.into(),
        arg: FunctionArgExpr::Expr(SQLExpr::Subquery(query)),
        operator: datafusion::sql::sqlparser::ast::FunctionArgOperator::RightArrow,
    })
}

/// The spine argument as a query: a table name becomes `SELECT * FROM name`.
fn spine_sql(spine: &str) -> String {
    let trimmed = spine.trim_start();
    let first_word = trimmed
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase();
    if matches!(first_word.as_str(), "SELECT" | "WITH" | "VALUES" | "FROM")
        || trimmed.starts_with('(')
    {
        spine.to_string()
    } else {
        format!("SELECT * FROM {spine}")
    }
}

/// One view's share of the request.
struct ViewRequest {
    view: FeatureView,
    reference: TableReference,
    source: Arc<dyn TableSource>,
    features: Vec<String>,
}

pub(super) fn plan_historical_features(
    args: TableFunctionArgs,
    registry: &FeatureRegistry,
    context: &mut dyn RelationPlannerContext,
) -> Result<LogicalPlan> {
    let mut strings = vec![];
    let mut full_feature_names = false;
    let mut filter_by_created = false;
    for arg in args.args {
        match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(SQLExpr::Value(value))) => {
                match value.value {
                    Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => strings.push(s),
                    other => return usage(&format!("found {other}")),
                }
            }
            FunctionArg::Named { name, .. } if name.value == HIDDEN => {}
            FunctionArg::Named { name, arg, .. }
            | FunctionArg::ExprNamed {
                name: SQLExpr::Identifier(name),
                arg,
                ..
            } => {
                let value = match arg {
                    FunctionArgExpr::Expr(SQLExpr::Value(v)) => match v.value {
                        Value::Boolean(b) => Some(b),
                        _ => None,
                    },
                    _ => None,
                };
                let Some(value) = value else {
                    return plan_err!("{NAME}: option {name} takes true or false");
                };
                match name.value.to_lowercase().as_str() {
                    "full_feature_names" => full_feature_names = value,
                    "filter_by_created_timestamp" => filter_by_created = value,
                    _ => {
                        return plan_err!(
                            "{NAME} has no option {name}; its options are full_feature_names and filter_by_created_timestamp (true or false)"
                        );
                    }
                }
            }
            other => return usage(&format!("found {other}")),
        }
    }
    let mut strings = strings.into_iter();
    let Some(spine_sql) = strings.next() else {
        return usage("no spine given");
    };
    let refs: Vec<String> = strings.collect();
    if refs.is_empty() {
        return usage("no features requested");
    }

    let spine = plan_spine(&spine_sql, context)?;
    let spine_time = spine_time_column(spine.schema())?;
    let requests = resolve_refs(&refs, registry, context)?;

    // Output names, checked for collisions before any planning work.
    let mut taken: HashSet<String> = spine
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let mut names = vec![];
    for request in &requests {
        let mut view_names = vec![];
        for feature in &request.features {
            let name = if full_feature_names {
                format!("{}__{feature}", request.view.name)
            } else {
                feature.clone()
            };
            if !taken.insert(name.clone()) {
                let hint = if full_feature_names {
                    ""
                } else {
                    "; pass full_feature_names => true to name features view__feature"
                };
                return plan_err!(
                    "{NAME}: the output would have two columns named {name} (feature {}:{feature} and a spine column or another feature){hint}",
                    request.view.name
                );
            }
            view_names.push(name);
        }
        names.push(view_names);
    }

    let mut plan = spine;
    for (request, names) in requests.into_iter().zip(names) {
        plan = join_view(plan, &spine_time, request, names, filter_by_created)?;
    }
    let unqualified: Vec<Expr> = plan
        .schema()
        .columns()
        .into_iter()
        .map(|c| {
            let name = c.name.clone();
            Expr::Column(c).alias(name)
        })
        .collect();
    LogicalPlanBuilder::from(plan).project(unqualified)?.build()
}

fn usage<T>(problem: &str) -> Result<T> {
    plan_err!(
        "{NAME}('<spine table or query>', '<view:feature or feature service>', ... [, full_feature_names => true] [, filter_by_created_timestamp => true]): {problem}"
    )
}

/// The spine as a relation qualified by `__hc_spine` (while joining, features are qualified by
/// `__hc_features`, so no name is ambiguous whatever the views' columns are called).
fn plan_spine(spine: &str, context: &mut dyn RelationPlannerContext) -> Result<LogicalPlan> {
    let sql = spine_sql(spine);
    let dialect = HindcastDialect::default();
    let mut query: Box<Query> = parse_query(&sql, &dialect)
        .map_err(|e| e.context(format!("{NAME}: cannot parse the spine {spine:?}")))?;
    let _ = query.visit(&mut NestAsOfJoins);
    let factor = TableFactor::Derived {
        lateral: false,
        subquery: query,
        alias: Some(TableAlias {
            explicit: true,
            name: SPINE.into(),
            columns: vec![],
            at: None,
        }),
        sample: None,
    };
    context.plan(factor)
}

/// `event_timestamp` if the spine has it, else its only time column.
fn spine_time_column(schema: &DFSchema) -> Result<Column> {
    if schema.has_column(&Column::new(Some(SPINE), "event_timestamp")) {
        return Ok(Column::new(Some(SPINE), "event_timestamp"));
    }
    let candidates: Vec<&str> = schema
        .fields()
        .iter()
        .filter(|f| {
            matches!(
                f.data_type(),
                DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
            )
        })
        .map(|f| f.name().as_str())
        .collect();
    match candidates.as_slice() {
        [only] => Ok(Column::new(Some(SPINE), *only)),
        [] => plan_err!(
            "{NAME}: the spine needs a time column: event_timestamp or exactly one timestamp column; its columns are {}",
            column_list(schema.fields())
        ),
        many => plan_err!(
            "{NAME}: the spine has several timestamp columns ({}) and none is named event_timestamp; \
             rename the one to join at, e.g. 'SELECT *, ts AS event_timestamp FROM ...'",
            many.join(", ")
        ),
    }
}

/// The spine's column names, for messages.
fn spine_columns(schema: &DFSchema) -> String {
    schema
        .iter()
        .filter(|(q, _)| q.is_some_and(|q| q.table() == SPINE))
        .map(|(_, f)| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Group the references by view, in order of first mention, without duplicates.
fn resolve_refs(
    refs: &[String],
    registry: &FeatureRegistry,
    context: &mut dyn RelationPlannerContext,
) -> Result<Vec<ViewRequest>> {
    let mut wanted: Vec<(String, Option<String>)> = vec![];
    for r in refs {
        if let Some((view, feature)) = r.split_once(':') {
            if view.is_empty() || feature.is_empty() || feature.contains(':') {
                return plan_err!(
                    "{NAME}: malformed feature reference {r:?}: write view:feature, e.g. 'user_spending_stats:avg_transaction_amount'"
                );
            }
            wanted.push((view.to_string(), Some(feature.to_string())));
        } else if let Some(service) = registry.service(r) {
            for (view, features) in service.views {
                match features {
                    None => wanted.push((view, None)),
                    Some(list) => wanted.extend(list.into_iter().map(|f| (view.clone(), Some(f)))),
                }
            }
        } else {
            return plan_err!(
                "{NAME}: {r:?} is neither a feature service nor a view:feature reference (SHOW FEATURE SERVICES lists the services)"
            );
        }
    }

    let mut requests: Vec<ViewRequest> = vec![];
    for (view_name, feature) in wanted {
        let reference = TableReference::from(view_name.as_str());
        let index = match requests.iter().position(|r| r.reference == reference) {
            Some(index) => index,
            None => {
                let source = context
                    .context_provider()
                    .get_table_source(reference.clone())
                    .map_err(|_| {
                        plan_datafusion_err!(
                            "{NAME}: unknown feature view {view_name} (SHOW FEATURE VIEWS lists them)"
                        )
                    })?;
                let provider = source_as_provider(&source)?;
                let Some(view) = FeatureViewTable::of(provider.as_ref()).cloned() else {
                    return plan_err!("{NAME}: {view_name} is a table, not a feature view");
                };
                requests.push(ViewRequest {
                    view,
                    reference: reference.clone(),
                    source,
                    features: vec![],
                });
                requests.len() - 1
            }
        };
        let request = &mut requests[index];
        let available = request.view.features(&request.source.schema());
        let features = match feature {
            None => available,
            Some(feature) => {
                if !available.contains(&feature) {
                    return plan_err!(
                        "{NAME}: feature view {} has no feature {feature}; its features are: {}",
                        request.view.name,
                        available.join(", ")
                    );
                }
                vec![feature]
            }
        };
        for feature in features {
            if !request.features.contains(&feature) {
                request.features.push(feature);
            }
        }
    }
    Ok(requests)
}

/// `plan` point-in-time joined with one view, keeping `plan`'s columns and adding the
/// requested features under their output `names`. With `filter_by_created`, a row of a view
/// with a created timestamp only counts once both its times have passed.
fn join_view(
    plan: LogicalPlan,
    spine_time: &Column,
    request: ViewRequest,
    names: Vec<String>,
    filter_by_created: bool,
) -> Result<LogicalPlan> {
    let ViewRequest {
        view,
        reference,
        source,
        features,
    } = request;
    let column = |name: &str| Expr::Column(Column::new(Some(reference.clone()), name));

    let mut right_columns: Vec<&str> = view.entities.iter().map(String::as_str).collect();
    right_columns.push(&view.timestamp);
    right_columns.extend(view.created.as_deref());
    if view.aggregates.is_empty() {
        right_columns.extend(features.iter().map(String::as_str));
    } else {
        for argument in view.aggregates.iter().filter_map(|a| a.argument.as_deref()) {
            if !right_columns.contains(&argument) {
                right_columns.push(argument);
            }
        }
    }
    let right = LogicalPlanBuilder::scan(reference.clone(), source, None)?
        .project(right_columns.iter().map(|c| column(c)))?
        .build()?;

    let mut on = vec![];
    for entity in &view.entities {
        let key = Column::new(Some(SPINE), entity);
        if !plan.schema().has_column(&key) {
            return plan_err!(
                "{NAME}: the spine has no column {entity}, the entity of feature view {}; the spine's columns are {}",
                view.name,
                spine_columns(plan.schema())
            );
        }
        on.push((Expr::Column(key), column(entity)));
    }
    let kept: Vec<Expr> = plan
        .schema()
        .columns()
        .into_iter()
        .map(Expr::Column)
        .collect();
    let spine_time = Expr::Column(spine_time.clone());
    let node = if view.aggregates.is_empty() {
        AsOfJoin::for_view(plan, right, on, spine_time, &view, filter_by_created)
            .map_err(|e| e.context(NAME))?
            .into_plan()
    } else {
        let wanted = Some(features.as_slice());
        WindowAggregateJoin::for_view(
            plan,
            right,
            on,
            spine_time,
            &view,
            wanted,
            filter_by_created,
        )
        .map_err(|e| e.context(NAME))?
        .into_plan()
    };
    let output = kept.into_iter().chain(
        features
            .iter()
            .zip(names)
            .map(|(feature, name)| column(feature).alias_qualified(Some(FEATURES), name)),
    );
    LogicalPlanBuilder::from(node).project(output)?.build()
}
