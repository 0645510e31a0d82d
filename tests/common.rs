//! Helpers shared by the test modules.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::prelude::SessionConfig;
use hindcast::Hindcast;
use std::path::PathBuf;
use std::process::Command;

/// The repository root (tests run from the CLI crate's directory).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root exists")
}

/// A copy of the example repository in `dir`, its entries linked, to add files to (its
/// `LOCATION`s resolve against `dir`, so its data is the example's).
pub fn link_example_repository(dir: &std::path::Path) {
    let example = repo_root().join("examples/feature_repo");
    for entry in std::fs::read_dir(&example).expect("example repository") {
        let path = entry.expect("entry").path();
        let link = dir.join(path.file_name().expect("name"));
        std::os::unix::fs::symlink(&path, link).expect("link");
    }
}

/// Run `sql` to the end, panicking with it on an error.
pub async fn collect(hc: &Hindcast, sql: &str) -> Vec<RecordBatch> {
    hc.sql(sql)
        .await
        .unwrap_or_else(|e| panic!("planning {sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("running {sql}: {e}"))
}

/// `sql`'s result as a table.
pub async fn shown(hc: &Hindcast, sql: &str) -> String {
    datafusion::arrow::util::pretty::pretty_format_batches(&collect(hc, sql).await)
        .expect("print")
        .to_string()
}

/// The error of `sql`, planning or running it, as the shell shows it.
pub async fn error(hc: &Hindcast, sql: &str) -> String {
    let result = match hc.sql(sql).await {
        Ok(frame) => frame.collect().await.map(|_| ()),
        Err(e) => Err(e),
    };
    hindcast::error_message(&result.expect_err(sql))
}

/// A session with the given batch size, partition count and optional memory limit.
pub fn session(batch_size: usize, partitions: usize, memory_limit: Option<usize>) -> Hindcast {
    let config = SessionConfig::new()
        .with_batch_size(batch_size)
        .with_target_partitions(partitions)
        .with_information_schema(true);
    match memory_limit {
        Some(limit) => Hindcast::with_memory_limit(config, limit).expect("session"),
        None => Hindcast::new_with_config_rt(config, Default::default()),
    }
}

/// A coordinator over `workers` (see [`start_workers`]) that distributes every query it
/// can: each Parquet scan's files are split across the workers however small they are.
pub async fn cluster_session(batch_size: usize, partitions: usize, workers: &[String]) -> Hindcast {
    let config = SessionConfig::new()
        .with_batch_size(batch_size)
        .with_target_partitions(partitions)
        .with_information_schema(true);
    let hc = Hindcast::builder()
        .config(config)
        .workers(workers.iter().cloned())
        .build()
        .expect("session");
    hc.sql("SET distributed.file_scan_config_bytes_per_partition = 1")
        .await
        .expect("set")
        .collect()
        .await
        .expect("set");
    hc
}

/// Start `n` hindcast workers in this process, on random loopback ports; their addresses.
pub async fn start_workers(n: usize, memory_limit: Option<usize>) -> Vec<String> {
    let mut addresses = vec![];
    for _ in 0..n {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        addresses.push(listener.local_addr().expect("address").to_string());
        tokio::spawn(hindcast::distributed::serve_worker(listener, memory_limit));
    }
    addresses
}

/// A batch of nullable columns, named in order.
pub fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let schema = Schema::new(
        columns
            .iter()
            .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .expect("valid batch")
}

/// `hindcast worker` processes on loopback, killed when dropped.
pub struct WorkerProcesses(Vec<std::process::Child>);

impl WorkerProcesses {
    /// Start `n` workers on ports the system picks, with exactly the `AWS_*` variables of
    /// `env` (none from the caller's); their addresses, as they print them.
    pub fn start(n: usize, env: &[(&str, &str)]) -> (Self, Vec<String>) {
        use std::io::{BufRead, BufReader};
        use std::process::Stdio;
        let mut children = Self(vec![]);
        let mut addresses = vec![];
        for _ in 0..n {
            let mut command = Command::new(env!("CARGO_BIN_EXE_hindcast"));
            for (key, _) in std::env::vars() {
                if key.starts_with("AWS_") {
                    command.env_remove(key);
                }
            }
            let mut child = command
                .envs(env.iter().copied())
                .args(["worker", "--listen", "127.0.0.1:0"])
                .stderr(Stdio::piped())
                .spawn()
                .expect("runs hindcast worker");
            let mut line = String::new();
            let stderr = child.stderr.take().expect("stderr");
            children.0.push(child);
            BufReader::new(stderr)
                .read_line(&mut line)
                .expect("reads the worker's first line");
            let address = line
                .trim()
                .strip_prefix("hindcast worker listening on ")
                .unwrap_or_else(|| panic!("the worker said {line:?}"));
            addresses.push(address.to_string());
        }
        (children, addresses)
    }
}

impl WorkerProcesses {
    pub fn signal(&self, worker: usize, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.0[worker].id().to_string()])
            .status()
            .expect("runs kill");
        assert!(status.success(), "kill {signal} failed");
    }
}

impl Drop for WorkerProcesses {
    fn drop(&mut self) {
        for i in 0..self.0.len() {
            // A stopped worker must be continued before it can die.
            let _ = Command::new("kill")
                .args(["-CONT", &self.0[i].id().to_string()])
                .status();
            let _ = self.0[i].kill();
            let _ = self.0[i].wait();
        }
    }
}
