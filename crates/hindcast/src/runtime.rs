//! What a process runs queries with: hindcast's configuration defaults, and a runtime with
//! hindcast's object stores (`storage`) and, if given, a memory limit. The session and a
//! distributed worker both start from these, so a worker runs a plan as the session that
//! planned it would.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionConfig;

use crate::storage::runtime_env_builder;

/// DataFusion's configuration with hindcast's defaults. Without a memory limit: 64Ki-row
/// batches and two partitions per core. Under a limit, DataFusion's own defaults (8Ki rows,
/// a partition per core), which leave each sort room to spill, and each sort's reservation
/// for merging its spill files a share of the limit.
///
/// Why: with larger batches every operator has fewer to handle (and DataFusion's sorts
/// fewer runs to merge), and with more partitions than cores each sort is smaller and the
/// scan of one partition overlaps the sort of another (`docs/benchmarks.md`). Under a
/// small memory limit a 64Ki-row batch is a good part of a sort's share of memory, and
/// the sort fails instead of spilling.
pub fn default_config(memory_limit: Option<usize>) -> SessionConfig {
    let mut config = if memory_limit.is_some() {
        SessionConfig::new()
    } else {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        SessionConfig::new()
            .with_batch_size(64 * 1024)
            .with_target_partitions(2 * cores)
    };
    // Parquet evaluates pushed-down filters while decoding, so the spine's key set and
    // time range skip rows before their other columns are decoded: it halved a tiny
    // spine's query against a large table and did not slow the large workloads
    // (`docs/benchmarks.md`).
    config.options_mut().execution.parquet.pushdown_filters = true;
    // Table statistics are read from every file's footer when a query is planned (and when
    // a table is created), before the spine's bounds can prune a file: a view over 730
    // daily partitions opened all of them for a one-day spine. The joins do not use them;
    // each file's own statistics still prune its row groups when it is opened.
    config.options_mut().execution.collect_statistics = false;
    if let Some(limit) = memory_limit {
        share_spill_reservations(&mut config, limit);
    }
    config
}

/// Every sort below a join reserves memory up front to merge its spill files; at
/// DataFusion's default (10 MB each) two sorts per partition would alone exceed a small
/// limit, so each gets a share of it instead.
pub fn share_spill_reservations(config: &mut SessionConfig, limit: usize) {
    let sorts = 2 * config.target_partitions().max(1);
    let share = (limit / (4 * sorts)).clamp(64 * 1024, 10 * 1024 * 1024);
    config.options_mut().execution.sort_spill_reservation_bytes = share;
}

/// A runtime with hindcast's object stores, within `memory_limit` bytes if given (spilling
/// to the operating system's temporary directory past it).
pub fn runtime_env(memory_limit: Option<usize>) -> Result<Arc<RuntimeEnv>> {
    // DataFusion keeps a table's file listing for the session's lifetime; a feature view's
    // directory gains files from `INSERT` and from the jobs that write it, and a query must
    // see the rows there are when it runs, so each query lists (as DuckDB and Feast do).
    let builder = runtime_env_builder()
        .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0));
    match memory_limit {
        // A fair pool splits memory between the sorts feeding each join partition, so all
        // of them spill in turn instead of the first one starving the others.
        Some(limit) => builder.with_memory_pool(Arc::new(FairSpillPool::new(limit))),
        None => builder,
    }
    .build_arc()
}
