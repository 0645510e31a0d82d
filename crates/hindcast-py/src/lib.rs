//! `hindcast._hindcast`: the native half of the Python package. The Python half
//! (`python/hindcast/`) wraps it with the documented API; this module only moves data and
//! calls across.
//!
//! - Data crosses as Arrow through the PyCapsule interface (`pyo3-arrow`), in and out; a
//!   result streams batch by batch (`__arrow_c_stream__`), so one larger than memory can be
//!   consumed.
//! - Every query runs on one Tokio runtime with the GIL released; the waiting thread wakes
//!   every 100 ms to let Python deliver signals, and on `KeyboardInterrupt` drops the query,
//!   which cancels it (and removes a `COPY`'s temporary output).
//! - Errors become `hindcast.PlanningError` or `hindcast.ExecutionError` (both
//!   `hindcast.Error`) with hindcast's one-line message; nothing panics across the boundary.

mod result;
mod session;

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use datafusion::common::DataFusionError;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

pyo3::create_exception!(hindcast, Error, PyException, "Any error hindcast reports.");
pyo3::create_exception!(
    hindcast,
    PlanningError,
    Error,
    "The statement is wrong: SQL that does not parse or plan, an unknown table or column, a \
     bad feature view definition."
);
pyo3::create_exception!(
    hindcast,
    ExecutionError,
    Error,
    "The statement failed while running: unreadable files, exhausted memory, I/O."
);

/// The runtime every query runs on, started on first use.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a Tokio runtime starts")
    })
}

/// Run `future` to completion with the GIL released, checking for signals every 100 ms. On
/// a signal's exception (`KeyboardInterrupt`) the future is dropped, which cancels it.
fn wait<T: Send>(py: Python<'_>, future: impl Future<Output = T> + Send) -> PyResult<T> {
    let mut future = std::pin::pin!(future);
    loop {
        let step = py.detach(|| {
            runtime().block_on(async {
                tokio::time::timeout(Duration::from_millis(100), future.as_mut()).await
            })
        });
        match step {
            Ok(value) => return Ok(value),
            Err(_elapsed) => py.check_signals()?,
        }
    }
}

/// A DataFusion error as the Python exception of its kind.
fn to_py_err(e: DataFusionError) -> PyErr {
    let message = hindcast::error_message(&e);
    match e.find_root() {
        DataFusionError::Plan(_)
        | DataFusionError::SQL(..)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_)
        | DataFusionError::Configuration(_) => PlanningError::new_err(message),
        _ => ExecutionError::new_err(message),
    }
}

/// `Result<T, DataFusionError>` to `PyResult<T>`.
trait IntoPy<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for datafusion::common::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py_err)
    }
}

/// A table name no user table has (what `join_asof` registers its inputs under).
#[pyfunction]
fn temporary_name(prefix: &str) -> String {
    session::temporary_name(prefix)
}

/// `512M`, `2G` or bytes, as the shell's `-m` takes them.
#[pyfunction]
fn parse_memory_limit(text: &str) -> PyResult<usize> {
    hindcast::parse_memory_limit(text).map_err(PlanningError::new_err)
}

#[pymodule]
fn _hindcast(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("PlanningError", py.get_type::<PlanningError>())?;
    m.add("ExecutionError", py.get_type::<ExecutionError>())?;
    m.add_class::<session::Session>()?;
    m.add_class::<result::QueryResult>()?;
    m.add_function(wrap_pyfunction!(parse_memory_limit, m)?)?;
    m.add_function(wrap_pyfunction!(temporary_name, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
