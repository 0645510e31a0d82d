//! `Session`: one hindcast session (a DataFusion context with feature views).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::error::ArrowError;
use datafusion::datasource::MemTable;
use datafusion::prelude::DataFrame;
use hindcast::{Hindcast, RetrievalOptions, WorkerList};
use pyo3::prelude::*;
use pyo3_arrow::input::AnyRecordBatch;

use crate::result::QueryResult;
use crate::{IntoPy, wait};

#[pyclass(module = "hindcast._hindcast", frozen)]
pub struct Session {
    hc: Hindcast,
}

/// What `historical_features` takes as its entity rows.
#[derive(FromPyObject)]
pub enum EntityRows {
    /// A query (or a table name).
    Sql(String),
    /// Arrow data: anything with `__arrow_c_stream__` or `__arrow_c_array__`.
    Data(AnyRecordBatch),
}

/// Arrow data from Python, read whole. The GIL is held: the stream may be a Python object.
fn read_all(data: AnyRecordBatch) -> PyResult<MemTable> {
    let reader = data.into_reader()?;
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader
        .collect::<Result<_, ArrowError>>()
        .map_err(|e| crate::ExecutionError::new_err(format!("cannot read the data: {e}")))?;
    MemTable::try_new(schema, vec![batches]).py_err()
}

impl Session {
    pub fn hindcast(&self) -> &Hindcast {
        &self.hc
    }
}

#[pymethods]
impl Session {
    #[new]
    #[pyo3(signature = (repo=None, memory_limit=None, workers=None))]
    fn new(
        py: Python<'_>,
        repo: Option<String>,
        memory_limit: Option<usize>,
        workers: Option<Vec<String>>,
    ) -> PyResult<Self> {
        let hc = Hindcast::with_defaults(memory_limit).py_err()?;
        let workers = workers.map(WorkerList::parse).transpose().py_err()?;
        if let Some(repo) = repo {
            wait(py, hc.load_repository(&repo))?.py_err()?;
        }
        // After the repository, so the argument wins over a `SET hindcast.workers` in it.
        if let Some(workers) = workers {
            hc.set_workers(workers);
        }
        Ok(Self { hc })
    }

    /// Run `query` (statements separated by `;`): every statement but the last runs to
    /// completion now; the last one's result is returned, and runs when read (DDL and `SET`
    /// run at once).
    fn sql(&self, py: Python<'_>, query: &str) -> PyResult<QueryResult> {
        let mut statements = self.hc.parse_sql(query).py_err()?;
        let Some(last) = statements.pop() else {
            return Err(crate::PlanningError::new_err("no SQL statement given"));
        };
        for statement in statements {
            let hc = self.hc.clone();
            wait(py, async move {
                hc.execute_statement(statement).await?.collect().await
            })?
            .py_err()?;
        }
        let hc = self.hc.clone();
        let df = wait(py, async move { hc.execute_statement(last).await })?.py_err()?;
        Ok(QueryResult::new(self.hc.clone(), df))
    }

    /// Register Arrow data as table `name`, replacing a table of that name.
    fn register(&self, name: &str, data: AnyRecordBatch) -> PyResult<()> {
        let table = read_all(data)?;
        let ctx = self.hc.session_context();
        ctx.deregister_table(name).py_err()?;
        ctx.register_table(name, Arc::new(table)).py_err()?;
        Ok(())
    }

    /// Register a Parquet file or directory as table `name`, replacing a table of that name.
    fn register_parquet(&self, py: Python<'_>, name: &str, path: &str) -> PyResult<()> {
        self.hc.session_context().deregister_table(name).py_err()?;
        let hc = self.hc.clone();
        let (name, path) = (name.to_string(), path.to_string());
        wait(py, async move { hc.register_parquet(&name, &path).await })?.py_err()
    }

    /// Drop table `name` if there is one.
    fn deregister(&self, name: &str) -> PyResult<()> {
        self.hc.session_context().deregister_table(name).py_err()?;
        Ok(())
    }

    /// Feast's `get_historical_features`; see the Python wrapper.
    #[pyo3(signature = (entity_rows, features, full_feature_names=false, filter_by_created_timestamp=false))]
    fn historical_features(
        &self,
        py: Python<'_>,
        entity_rows: EntityRows,
        features: Vec<String>,
        full_feature_names: bool,
        filter_by_created_timestamp: bool,
    ) -> PyResult<QueryResult> {
        let spine: DataFrame = match entity_rows {
            EntityRows::Sql(sql) => {
                let hc = self.hc.clone();
                let sql = if sql.split_whitespace().count() == 1 {
                    format!("SELECT * FROM {sql}")
                } else {
                    sql
                };
                wait(py, async move { hc.sql(&sql).await })?.py_err()?
            }
            EntityRows::Data(data) => {
                let table = read_all(data)?;
                self.hc
                    .session_context()
                    .read_table(Arc::new(table))
                    .py_err()?
            }
        };
        let options = RetrievalOptions {
            full_feature_names,
            filter_by_created_timestamp,
        };
        let hc = self.hc.clone();
        let df = wait(py, async move {
            let refs: Vec<&str> = features.iter().map(String::as_str).collect();
            hc.historical_features(spine, &refs, options).await
        })?
        .py_err()?;
        Ok(QueryResult::new(self.hc.clone(), df))
    }

    /// Plan `query` (one statement) with `tables` registered under their names for the
    /// moment it takes: the plan holds the data, so the result runs after they are gone.
    /// What `join_asof` runs on.
    fn sql_with_tables(
        &self,
        py: Python<'_>,
        query: &str,
        tables: Vec<(String, AnyRecordBatch)>,
    ) -> PyResult<QueryResult> {
        let ctx = self.hc.session_context();
        let names: Vec<String> = tables.iter().map(|(name, _)| name.clone()).collect();
        let planned = (|| {
            for (name, data) in tables {
                let table = read_all(data)?;
                ctx.register_table(name.as_str(), Arc::new(table))
                    .py_err()?;
            }
            let hc = self.hc.clone();
            let query = query.to_string();
            wait(py, async move { hc.sql(&query).await })?.py_err()
        })();
        // The planning error, if any, is the one to report.
        let deregistered: PyResult<()> = names
            .iter()
            .try_for_each(|name| ctx.deregister_table(name.as_str()).map(|_| ()).py_err());
        let df = planned?;
        deregistered?;
        Ok(QueryResult::new(self.hc.clone(), df))
    }

    /// Names of the session's tables and feature views.
    fn tables(&self) -> Vec<String> {
        let ctx = self.hc.session_context();
        let mut names = vec![];
        for catalog in ctx.catalog_names() {
            let Some(catalog) = ctx.catalog(&catalog) else {
                continue;
            };
            for schema in catalog.schema_names() {
                if schema == "information_schema" {
                    continue;
                }
                if let Some(schema) = catalog.schema(&schema) {
                    names.extend(schema.table_names());
                }
            }
        }
        names.sort();
        names
    }
}

/// A name no user table has, for a result registered for a moment.
pub fn temporary_name(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "__hc_{prefix}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
