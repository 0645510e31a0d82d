//! `INSERT INTO` a feature view over a directory of Parquet files: the rows become new
//! files under the view's directory, in its hive partitions, written first under a
//! temporary sibling directory and moved into place once all of them are written (the
//! `COPY` machinery of `copy`), so a reader never sees part of a file. A Delta view takes
//! rows through its table instead (one commit, `delta`).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::{Result, plan_err};
use datafusion::datasource::file_format::format_as_file_type;
use datafusion::datasource::file_format::parquet::ParquetFormatFactory;
use datafusion::logical_expr::dml::{CopyTo, InsertOp};
use datafusion::logical_expr::{DmlStatement, LogicalPlan, WriteOp};

use super::copy::TempOutput;
use crate::features::{FeatureSource, FeatureViewTable};

/// The writes of an `INSERT INTO` a Parquet feature view.
pub(super) struct ParquetInsert {
    /// Writes the rows under `output`'s temporary directory.
    pub copy: LogicalPlan,
    /// Moves them into the view's directory once written.
    pub output: TempOutput,
}

/// `plan` as writes into a Parquet feature view's directory, if it inserts into one.
pub(super) fn into_parquet_view(plan: &LogicalPlan) -> Result<Option<ParquetInsert>> {
    let LogicalPlan::Dml(DmlStatement {
        target,
        op: WriteOp::Insert(op),
        input,
        ..
    }) = plan
    else {
        return Ok(None);
    };
    let Ok(provider) = source_as_provider(target) else {
        return Ok(None);
    };
    let Some(table) = provider.downcast_ref::<FeatureViewTable>() else {
        return Ok(None);
    };
    let view = table.view();
    let FeatureSource::Files {
        format,
        location,
        partitions,
    } = &view.source
    else {
        return Ok(None);
    };
    if format != "PARQUET" {
        return Ok(None);
    }
    if *op != InsertOp::Append {
        return plan_err!(
            "feature view {} takes INSERT INTO (appending rows) only",
            view.name
        );
    }
    if !location.ends_with('/') {
        return plan_err!(
            "feature view {} reads one file ('{location}'): rows are added as new files, so give it a directory LOCATION ending in '/'",
            view.name
        );
    }
    let Some(output) = TempOutput::for_target(location) else {
        return plan_err!(
            "feature view {} is on object storage ('{location}'), where new Parquet files cannot be moved into place whole: insert into a local directory, or use a Delta table",
            view.name
        );
    };
    let copy = LogicalPlan::Copy(CopyTo::new(
        Arc::clone(input),
        output.temp_target(),
        partitions.clone(),
        format_as_file_type(Arc::new(ParquetFormatFactory::new())),
        HashMap::new(),
    ));
    Ok(Some(ParquetInsert { copy, output }))
}
