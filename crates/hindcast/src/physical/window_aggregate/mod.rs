//! The window aggregation operator: features aggregated over each spine row's trailing
//! windows, beside the ASOF join and sharing its key partitioning, sort and narrowing.
//!
//! - [`exec`]: [`WindowAggregateExec`], what it requires of its inputs (co-partitioned by
//!   key; the spine sorted by key then time, the events by key, time, then tie order);
//! - [`stream`]: the per-partition merge with an add pointer and a remove pointer per
//!   window length;
//! - [`events`]: the event batches the windows still reach;
//! - [`accumulator`]: each aggregate's state under adds and removes, and its results.
//!
//! The sorts below are DataFusion's `SortExec`s, which account their memory to the pool
//! and spill; the operator holds the events its longest window reaches, per partition.

mod accumulator;
mod events;
mod exec;
mod stream;

pub use exec::WindowAggregateExec;
