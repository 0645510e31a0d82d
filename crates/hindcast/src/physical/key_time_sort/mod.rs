//! [`KeyTimeSortExec`]: the sort under an ASOF join, when the session has no memory limit.
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
//! expressions, ascending, NULLs first), the same properties, and the memory accounting.
//! What it does not have is a spill path, so a session with a memory limit keeps the
//! `SortExec`s: the rule that swaps it in (`physical::optimizer::UseKeyTimeSort`) is only
//! installed without one. Several keys, keys that are not integers or instants, key ranges
//! wider than 32 bits, and a time equal to `i64::MIN` (which would tie with NULL) take a
//! general path: Arrow's `lexsort` over the partition. So do partitions of very many small
//! batches (over 64Ki of them, see [`CHUNK_BITS`]).
//!
//! - [`exec`]: the plan node;
//! - [`partition`]: [`SortedPartition`], the sorted rows as the join reads them;
//! - [`radix`]: the sorting itself, pure functions.

mod exec;
mod partition;
pub mod radix;

pub use exec::KeyTimeSortExec;
pub use partition::SortedPartition;

/// Rows per chunk of a [`SortedPartition`]: a row is coded as `chunk << 16 | row`.
const CHUNK_BITS: u32 = 16;
const CHUNK_ROWS: usize = 1 << CHUNK_BITS;
