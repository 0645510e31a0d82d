//! [`KeyTimeSortExec`]: the sort under an ASOF join.
//!
//! Why not DataFusion's `SortExec`: it sorts each incoming batch and then merges the sorted
//! runs through its row format, comparing rows a pair at a time and copying every column
//! at each step. The join's inputs are usually sorted by one integer key and a timestamp,
//! and usually arrive in time order (feature logs are written that way). Then a stable
//! radix sort of row numbers by key (two passes for 100k keys) leaves each key's rows in
//! time order already, a per-key check confirms it in one look, and the sorted key and
//! time columns come out on the way; the other columns stay where they are until a parent
//! gathers them (all of them for the spine, only the winners' for the ASOF join's feature
//! side). `docs/benchmarks.md` has what it saves.
//!
//! What it keeps from `SortExec`: the same output (every input row, ordered by the same
//! expressions, ascending, NULLs first), the same properties, the memory accounting and
//! spilling. Each batch is kept only once the pool grants its memory and the sort's scratch
//! for its rows; when it does not, the batches held are sorted as one run and written to
//! disk through DataFusion's `SpillManager`, and at the end the runs are merged back by
//! DataFusion's multi-level merge (in as many passes as the pool allows). A partition that
//! fits is never written and is read late by the join; a spilled one reaches the join as
//! whole batches, as from a `SortExec`. Several keys, keys that are not integers or instants, key ranges
//! wider than 32 bits, and a time equal to `i64::MIN` (which would tie with NULL) take a
//! general path: Arrow's `lexsort` over the sort columns. Partitions of very many small
//! batches (over 64Ki of them, see [`CHUNK_BITS`]) are concatenated first; under a memory
//! limit a run ends at 64Ki chunks instead, since the concatenation is not reserved.
//!
//! - [`exec`]: the plan node;
//! - [`partition`]: [`SortedPartition`], the sorted rows as the join reads them;
//! - [`radix`]: the sorting itself, pure functions.

mod exec;
mod partition;
pub mod radix;

pub use exec::{KeyTimeSortExec, Sorted};
pub use partition::SortedPartition;

/// Rows per chunk of a [`SortedPartition`]: a row is coded as `chunk << 16 | row`.
const CHUNK_BITS: u32 = 16;
const CHUNK_ROWS: usize = 1 << CHUNK_BITS;
