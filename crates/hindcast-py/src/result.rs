//! `QueryResult`: a planned query, run when it is read.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StructArray};
use datafusion::arrow::datatypes::{Field, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::DataFrame;
use futures::StreamExt;
use hindcast::Hindcast;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;
use pyo3_arrow::PyTable;
use pyo3_arrow::ffi::{ArrayIterator, to_stream_pycapsule};

use crate::session::temporary_name;
use crate::{IntoPy, wait};

#[pyclass(module = "hindcast._hindcast", frozen)]
pub struct QueryResult {
    hc: Hindcast,
    df: DataFrame,
}

impl QueryResult {
    pub fn new(hc: Hindcast, df: DataFrame) -> Self {
        Self { hc, df }
    }

    fn stream(&self, py: Python<'_>) -> PyResult<SendableRecordBatchStream> {
        let df = self.df.clone();
        wait(py, df.execute_stream())?.py_err()
    }
}

/// The batches of a running query, for Python to pull one at a time (`__arrow_c_stream__`).
/// Each pull waits for the next batch as [`wait`] does: GIL released, signals checked.
struct Batches {
    stream: SendableRecordBatchStream,
}

impl Iterator for Batches {
    type Item = Result<ArrayRef, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        let next = Python::attach(|py| wait(py, self.stream.next()));
        let batch = match next {
            Ok(batch) => batch?,
            // A KeyboardInterrupt while waiting: the stream ends with an error, and Python
            // raises the interrupt when it next checks signals.
            Err(e) => return Some(Err(ArrowError::ExternalError(Box::new(e)))),
        };
        Some(
            batch
                .map(|b| Arc::new(StructArray::from(b)) as ArrayRef)
                .map_err(|e| ArrowError::ExternalError(Box::new(e))),
        )
    }
}

#[pymethods]
impl QueryResult {
    /// Run the query and return all of it as Arrow (a `pyarrow.Table` on the Python side).
    fn to_arrow_table<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut stream = self.stream(py)?;
        let schema = stream.schema();
        let batches: Vec<RecordBatch> = wait(py, async move {
            let mut batches = vec![];
            while let Some(batch) = stream.next().await {
                batches.push(batch?);
            }
            Ok::<_, datafusion::common::DataFusionError>(batches)
        })?
        .py_err()?;
        PyTable::try_new(batches, schema)?.into_pyarrow(py)
    }

    /// The Arrow PyCapsule stream: the query runs as the consumer reads it.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyCapsule>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let stream = self.stream(py)?;
        let schema: SchemaRef = stream.schema();
        let field = Field::new_struct("", schema.fields().clone(), false)
            .with_metadata(schema.metadata().clone());
        let reader = ArrayIterator::new(Batches { stream }, Arc::new(field));
        Ok(to_stream_pycapsule(py, Box::new(reader), requested_schema)?)
    }

    /// The plan as text: logical and physical, or with `analyze` the physical plan run, with
    /// its metrics.
    #[pyo3(signature = (analyze=false, verbose=false))]
    fn explain(&self, py: Python<'_>, analyze: bool, verbose: bool) -> PyResult<String> {
        let df = self.df.clone();
        let batches = wait(
            py,
            async move { df.explain(verbose, analyze)?.collect().await },
        )?
        .py_err()?;
        let mut text = String::new();
        for batch in &batches {
            let plan_type = batch.column(0);
            let plan = batch.column(1);
            let formatter = |a: &ArrayRef, i| {
                datafusion::arrow::util::display::array_value_to_string(a, i).unwrap_or_default()
            };
            for i in 0..batch.num_rows() {
                text.push_str(&formatter(plan_type, i));
                text.push('\n');
                text.push_str(&formatter(plan, i));
                text.push('\n');
            }
        }
        Ok(text)
    }

    /// Write the result to `path` as Parquet, atomically (hindcast's `COPY`): a failed or
    /// cancelled write leaves nothing at `path`. A path ending in `/` is a directory.
    /// Returns the number of rows written.
    fn write_parquet(&self, py: Python<'_>, path: &str) -> PyResult<u64> {
        let name = temporary_name("result");
        let ctx = self.hc.session_context().clone();
        ctx.register_table(name.as_str(), self.df.clone().into_view())
            .py_err()?;
        let sql = format!(
            "COPY (SELECT * FROM {name}) TO '{}' STORED AS PARQUET",
            path.replace('\'', "''")
        );
        let hc = self.hc.clone();
        let written = wait(py, async move { hc.sql(&sql).await?.collect().await });
        ctx.deregister_table(name.as_str()).py_err()?;
        let batches = written?.py_err()?;
        let count = batches
            .first()
            .and_then(|b| {
                datafusion::arrow::compute::cast(
                    b.column(0),
                    &datafusion::arrow::datatypes::DataType::UInt64,
                )
                .ok()
            })
            .and_then(|c| {
                c.as_any()
                    .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                    .map(|a| a.value(0))
            })
            .unwrap_or(0);
        Ok(count)
    }

    /// The first rows, as the shell prints them.
    #[pyo3(signature = (limit=20))]
    fn show(&self, py: Python<'_>, limit: usize) -> PyResult<String> {
        let df = self.df.clone().limit(0, Some(limit)).py_err()?;
        let batches = wait(py, df.collect())?.py_err()?;
        Ok(pretty_format_batches(&batches).py_err_arrow()?.to_string())
    }

    /// Column names and types.
    fn schema_string(&self) -> String {
        self.df
            .schema()
            .fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

trait ArrowIntoPy<T> {
    fn py_err_arrow(self) -> PyResult<T>;
}

impl<T> ArrowIntoPy<T> for Result<T, ArrowError> {
    fn py_err_arrow(self) -> PyResult<T> {
        self.map_err(|e| crate::ExecutionError::new_err(e.to_string()))
    }
}
