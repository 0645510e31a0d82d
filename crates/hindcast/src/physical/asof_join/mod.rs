//! The point-in-time (ASOF) join operator.
//!
//! - [`exec`]: [`AsOfJoinExec`], the `ExecutionPlan`: what it requires of its inputs
//!   (co-partitioned by key, sorted by key then time) and what it promises downstream.
//! - [`stream`]: the per-partition merge, a state machine over the two sorted inputs.
//! - [`metrics`]: what `EXPLAIN ANALYZE` shows.
//! - [`bounds`]: the spine's time range, pushed into the right side's scan.
//! - [`sort`]: [`KeyTimeSortExec`], the sort of the join's inputs when memory is unlimited.
//!
//! The operator itself buffers only a few right batches per partition. The sorts below it
//! are hindcast's [`KeyTimeSortExec`] without a memory limit, and DataFusion's `SortExec`s
//! under one: those account their memory to the pool and spill to disk, so a feature
//! table larger than memory is sorted out of core and merged in one pass.

mod bounds;
mod exec;
mod metrics;
mod sort;
mod stream;

pub use bounds::{Narrowing, PartitionFilter, SpineBounds, SpineBoundsExec, TimePartitioning};
pub use exec::AsOfJoinExec;
pub use sort::{KeyTimeSortExec, UseKeyTimeSort};
