//! hindcast's one integration-test binary (one binary links DataFusion once).
//!
//! - `bad_files`: a Parquet feature view over a directory with broken, hidden, removed
//!   or drifted files (each an error naming the file, or the good files' answer);
//! - `slt`: the SQL behaviour in `sql/*.slt`, each file under several batch sizes and
//!   partition counts, through the plan codec and on a cluster;
//! - `delta`: Delta Lake tables and feature views, each pinned version against the rows
//!   its commits hold;
//! - `differential`: the operator against a brute-force reference on random inputs;
//! - `distributed`: queries on three workers in this process against one process, and
//!   the plan codec under a worker's memory limit;
//! - `feast_reference`: feature views against a brute-force Feast on random inputs;
//! - `out_of_core`: a join whose right side is larger than the memory limit, and the
//!   operator's own memory;
//! - `inserts`: `INSERT INTO` a Parquet feature view (new files moved into place);
//! - `training_sets`: a training set's manifest, `validate` and `reproduce`;
//! - `helpers`: pure helpers (the key-time sort's radix sort, the shell's statement end);
//! - `concurrency`: eight queries at once through one session sharing a memory pool;
//! - `crashes`: `COPY`, `INSERT INTO` and `hindcast generate` killed with SIGKILL at
//!   several points (the next write finishes or removes what they left);
//! - `cli`: the `hindcast` binary as a user runs it (worker processes included);
//! - `s3`: feature views on a local S3-compatible server (moto);
//! - `sql_fuzz`: seeded random and mutated statements over hindcast's grammar (no
//!   panic, hang or internal error);
//! - `snapshots`: the shell's output for `tests/snapshots/*.sql`;
//! - `shell`: the interactive shell in a terminal (tmux);
//! - `views`: feature views over changing directories (schema from the newest file);
//! - `window_aggregates`: aggregation views against a brute-force reference and the
//!   `RANGE`-window SQL on random inputs.

mod bad_files;
mod cli;
mod common;
mod concurrency;
mod crashes;
mod delta;
mod differential;
mod distributed;
mod feast_reference;
mod helpers;
mod inserts;
mod out_of_core;
mod s3;
mod shell;
mod slt;
mod snapshots;
mod sql_fuzz;
mod training_sets;
mod views;
mod window_aggregates;
