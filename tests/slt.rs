//! Runs `sql/*.slt` against a hindcast session, once per configuration in [`CONFIGS`], so
//! every expected answer is checked across batch and partition boundaries.
//!
//! `HINDCAST_COMPLETE=1 cargo test slt::` rewrites the expected output of every file from
//! the engine's answers (review the diff before committing it).

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use datafusion::physical_plan::collect;
use datafusion_sqllogictest::{
    DFColumnType, DFOutput, DFSqlLogicTestError, convert_batches, convert_schema_to_types,
    df_value_validator, value_normalizer,
};
use hindcast::Hindcast;
use sqllogictest::{AsyncDB, DBOutput, strict_column_validator};

use crate::common::{repo_root, session};

/// `(batch_size, target_partitions)`.
const CONFIGS: [(usize, usize); 4] = [(8192, 4), (8192, 1), (1, 1), (1, 4)];

struct HindcastDb {
    hc: Hindcast,
}

#[async_trait]
impl AsyncDB for HindcastDb {
    type Error = DFSqlLogicTestError;
    type ColumnType = DFColumnType;

    /// Files under the repository are named `$REPO/...` in `.slt` files (with `control
    /// substitution on`), and printed the same way, so expected output does not depend on
    /// where the repository is checked out.
    async fn run(&mut self, sql: &str) -> Result<DFOutput, Self::Error> {
        let df = self.hc.sql(sql).await?;
        let task_ctx = std::sync::Arc::new(df.task_ctx());
        let plan = df.create_physical_plan().await?;
        let schema = plan.schema();
        let batches = collect(plan, task_ctx).await?;
        let types = convert_schema_to_types(schema.fields());
        let root = repo_root().to_string_lossy().into_owned();
        let rows = convert_batches(&schema, batches, false)?
            .into_iter()
            .map(|row| row.into_iter().map(|v| v.replace(&root, "$REPO")).collect())
            .collect::<Vec<Vec<String>>>();
        if rows.is_empty() && types.is_empty() {
            Ok(DBOutput::StatementComplete(0))
        } else {
            Ok(DBOutput::Rows { types, rows })
        }
    }

    fn engine_name(&self) -> &str {
        "hindcast"
    }

    async fn sleep(duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    async fn shutdown(&mut self) {}
}

fn slt_path(name: &str) -> PathBuf {
    repo_root().join("sql").join(format!("{name}.slt"))
}

async fn run_file(name: &str) {
    let path = slt_path(name);
    if std::env::var_os("HINDCAST_COMPLETE").is_some() {
        let mut runner = sqllogictest::Runner::new(|| async {
            Ok(HindcastDb {
                hc: session(8192, 4, None),
            })
        });
        runner.set_var("REPO".into(), repo_root().to_string_lossy().into_owned());
        runner
            .update_test_file(
                &path,
                " ",
                df_value_validator,
                value_normalizer,
                strict_column_validator,
            )
            .await
            .unwrap_or_else(|e| panic!("completing {}: {e}", path.display()));
        return;
    }
    for (batch_size, partitions) in CONFIGS {
        let mut runner = sqllogictest::Runner::new(|| async move {
            Ok(HindcastDb {
                hc: session(batch_size, partitions, None),
            })
        });
        runner.with_column_validator(strict_column_validator);
        runner.with_normalizer(value_normalizer);
        runner.set_var("REPO".into(), repo_root().to_string_lossy().into_owned());
        runner.with_validator(df_value_validator);
        if let Err(e) = runner.run_file_async(&path).await {
            panic!(
                "{} failed with batch_size={batch_size}, target_partitions={partitions}:\n{e}",
                path.display()
            );
        }
    }
}

macro_rules! slt_files {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                run_file(stringify!($name)).await;
            }
        )*

        /// Every file under `sql/` must be listed above, so none is silently skipped.
        #[test]
        fn every_slt_file_is_run() {
            let listed = [$(stringify!($name)),*];
            for entry in std::fs::read_dir(repo_root().join("sql")).expect("sql/") {
                let path = entry.expect("entry").path();
                if path.extension().is_some_and(|e| e == "slt") {
                    let stem = path.file_stem().unwrap().to_string_lossy().to_string();
                    assert!(listed.contains(&stem.as_str()), "{stem}.slt is not listed in tests/slt.rs");
                }
            }
        }
    };
}

slt_files!(
    asof_basic,
    asof_operators,
    asof_ttl,
    asof_ties,
    asof_nulls,
    asof_duplicates,
    asof_types,
    asof_empty,
    asof_chained,
    asof_errors,
    asof_explain,
    asof_sort,
    features_ddl,
    features_temporal,
    features_pruning,
    features_retrieval,
    rewrite_row_number,
);
