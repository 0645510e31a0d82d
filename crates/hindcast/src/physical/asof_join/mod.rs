//! The point-in-time (ASOF) join operator.
//!
//! - [`exec`]: [`AsOfJoinExec`], the `ExecutionPlan`: what it requires of its inputs
//!   (co-partitioned by key, sorted by key then time) and what it promises downstream.
//! - [`stream`]: the per-partition merge, a state machine over the two sorted inputs;
//! - [`input`]: how right rows arrive (batches, or a sorted partition read late);
//! - [`keyed`]: rows with their join columns in comparable form;
//! - [`right_buffer`]: the right rows held, the cursor, the memory reservation;
//! - [`output`]: the decided rows not yet emitted, and emitting them;
//! - [`metrics`]: what `EXPLAIN ANALYZE` shows.
//!
//! The operator itself buffers only a few right batches per partition. The sorts below it
//! are hindcast's `KeyTimeSortExec` (`physical::key_time_sort`, DataFusion's `SortExec`
//! with `hindcast.key_time_sort` off): they account their memory to the pool and spill
//! sorted runs to disk, so a feature table larger than memory is sorted out of core and
//! merged in one pass. The spine's bounds narrow the right side (`physical::spine_bounds`).

mod exec;
mod input;
pub(crate) mod keyed;
mod metrics;
mod output;
mod right_buffer;
mod stream;

pub use exec::AsOfJoinExec;
pub(crate) use exec::with_session_batch_size;
pub(crate) use metrics::tick_range;
pub use metrics::{TickRange, widen};
pub use stream::MAX_PINNED_RIGHT_BATCHES;
