//! [`RightBuffer`]: the right rows the merge holds, its cursor into them, and the join's
//! memory reservation.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::sync::Arc;

use datafusion::arrow::array::make_comparator;
use datafusion::arrow::compute::SortOptions;
use datafusion::common::Result;
use datafusion::execution::memory_pool::{MemoryLimit, MemoryPool, MemoryReservation};
use datafusion::physical_plan::metrics::Gauge;

use super::keyed::Keyed;

/// Position of a right row: batch number since the stream started, and row in that batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct RowRef {
    pub batch: usize,
    pub row: usize,
}

impl RowRef {
    pub fn next(self) -> Self {
        RowRef {
            batch: self.batch,
            row: self.row + 1,
        }
    }
}

/// What is at a position of the buffer.
pub(super) enum At {
    /// A buffered row (the position moved past exhausted batches).
    Row(RowRef),
    /// Past the last right row: the input has ended.
    End,
    /// Past the buffered rows, and the input has more.
    NeedMore,
}

/// The right batches from the oldest one the merge or its pending output still reads to the
/// newest, with the cursor. The one reservation of the join is here: it counts these
/// batches with their join arrays, and the left batch being merged.
pub(super) struct RightBuffer {
    batches: VecDeque<Keyed>,
    /// Batch number of `batches[0]`.
    base: usize,
    done: bool,
    /// The merge's cursor: it only moves forward.
    pub cursor: RowRef,
    /// Columns of the right input (the exact-tie rule compares them).
    columns: usize,
    reservation: MemoryReservation,
    /// The pool `reservation` draws on, to tell when it runs short.
    pool: Arc<dyn MemoryPool>,
    left_bytes: usize,
    /// The largest right batch so far: what the next one may need.
    largest: usize,
    peak: Gauge,
}

impl RightBuffer {
    pub fn new(
        reservation: MemoryReservation,
        pool: Arc<dyn MemoryPool>,
        peak: Gauge,
        columns: usize,
    ) -> Self {
        Self {
            batches: VecDeque::new(),
            base: 0,
            done: false,
            cursor: RowRef { batch: 0, row: 0 },
            columns,
            reservation,
            pool,
            left_bytes: 0,
            largest: 0,
            peak,
        }
    }

    pub fn batch(&self, batch: usize) -> Option<&Keyed> {
        batch
            .checked_sub(self.base)
            .and_then(|i| self.batches.get(i))
    }

    pub fn row(&self, r: RowRef) -> &Keyed {
        self.batch(r.batch)
            .expect("a referenced right batch is still buffered")
    }

    pub fn push(&mut self, batch: Keyed) -> Result<()> {
        let bytes = batch.memory_size();
        self.grow(bytes)?;
        self.largest = self.largest.max(bytes);
        self.batches.push_back(batch);
        Ok(())
    }

    /// Whether the memory pool has less room left than two more right batches need: then
    /// the merge emits what it can early, so the batches its output pins are released.
    pub fn pool_is_short(&self) -> bool {
        match self.pool.memory_limit() {
            MemoryLimit::Finite(limit) => {
                limit.saturating_sub(self.pool.reserved()) < 2 * self.largest
            }
            MemoryLimit::Infinite | MemoryLimit::Unknown => false,
        }
    }

    /// The right input has ended.
    pub fn finish(&mut self) {
        self.done = true;
    }

    /// Account the left batch being merged (replacing the previous one's bytes).
    pub fn hold_left(&mut self, bytes: usize) -> Result<()> {
        self.reservation.shrink(self.left_bytes);
        self.left_bytes = 0;
        self.grow(bytes)?;
        self.left_bytes = bytes;
        Ok(())
    }

    fn grow(&mut self, bytes: usize) -> Result<()> {
        self.reservation.try_grow(bytes)?;
        self.peak.set_max(self.reservation.size());
        Ok(())
    }

    /// Free everything: the join has ended.
    pub fn free(&mut self) {
        self.batches.clear();
        self.left_bytes = 0;
        self.reservation.free();
    }

    /// `r`, moved past exhausted batches.
    pub fn at(&self, mut r: RowRef) -> At {
        loop {
            let Some(batch) = self.batch(r.batch) else {
                return if self.done { At::End } else { At::NeedMore };
            };
            if r.row < batch.num_rows() {
                return At::Row(r);
            }
            r = RowRef {
                batch: r.batch + 1,
                row: 0,
            };
        }
    }

    /// The cursor's row, moving the cursor past exhausted batches.
    pub fn at_cursor(&mut self) -> At {
        let at = self.at(self.cursor);
        if let At::Row(r) = at {
            self.cursor = r;
        }
        at
    }

    /// Drop the batches before batch number `keep_from`.
    pub fn release_before(&mut self, keep_from: usize) {
        while self.base < keep_from {
            let Some(batch) = self.batches.pop_front() else {
                break;
            };
            self.reservation.shrink(batch.memory_size());
            self.base += 1;
        }
    }

    /// Whether two right rows are tied on keys and time.
    pub fn same_group(&self, a: RowRef, b: RowRef) -> bool {
        self.row(a).time(a.row) == self.row(b).time(b.row) && self.same_keys(a, b)
    }

    /// Whether two right rows have equal keys.
    pub fn same_keys(&self, a: RowRef, b: RowRef) -> bool {
        match (&self.row(a).keys, &self.row(b).keys) {
            (Some(ka), Some(kb)) => ka.cmp(a.row, kb, b.row).is_eq(),
            _ => true,
        }
    }

    /// The time the TTL and the ranking use: the rank time if the join has one.
    pub fn event_time(&self, r: RowRef) -> i64 {
        let batch = self.row(r);
        match &batch.rank {
            Some(rank) => rank.value(r.row),
            None => batch.time(r.row),
        }
    }

    /// With a rank time: the winner of two visible rows with equal keys, by rank time, then
    /// as [`Self::better`] breaks ties. (Rows arrive in visibility order, so the latest to
    /// arrive is not necessarily the latest event: the candidate is a running best.)
    pub fn higher_rank(&self, a: RowRef, b: RowRef) -> RowRef {
        match self.event_time(a).cmp(&self.event_time(b)) {
            Ordering::Less => b,
            Ordering::Greater => a,
            Ordering::Equal => self.better(a, b),
        }
    }

    /// The winner of two right rows tied on keys and time: the larger tie-breaker, then the
    /// row whose columns compare larger left to right, so the winner never depends on the
    /// order in which tied rows arrive.
    pub fn better(&self, a: RowRef, b: RowRef) -> RowRef {
        let (ba, bb) = (self.row(a), self.row(b));
        if let (Some(va), Some(vb)) = (ba.tie(a.row), bb.tie(b.row)) {
            match va.cmp(&vb) {
                Ordering::Less => return b,
                Ordering::Greater => return a,
                Ordering::Equal => {}
            }
        }
        for c in 0..self.columns {
            let ((ca, ra), (cb, rb)) = (ba.source.cell(c, a.row), bb.source.cell(c, b.row));
            let Ok(cmp) = make_comparator(ca.as_ref(), cb.as_ref(), SortOptions::default()) else {
                // Types without an order (e.g. maps) cannot break ties.
                continue;
            };
            match cmp(ra, rb) {
                Ordering::Less => return b,
                Ordering::Greater => return a,
                Ordering::Equal => {}
            }
        }
        a
    }
}
