//! The per-partition merge of [`super::AsOfJoinExec`].
//!
//! Both inputs arrive sorted by `(keys, time)` ascending, NULLs first. The stream walks the
//! left rows in that order with one cursor into the right rows, which only moves forward:
//!
//! - **backward** (`>=`, `>`): the cursor passes every right row at or before the left row
//!   (strictly before for `>`); the last valid row passed, if its keys equal the left row's,
//!   is the winner. Rows tied on `(keys, time)` are contiguous, so the winner of a tie is
//!   folded in as the cursor passes them.
//! - **forward** (`<=`, `<`): the cursor passes every right row before the left row; the
//!   group of rows tied on `(keys, time)` at the cursor holds the winner. The group is
//!   scanned ahead of the cursor (memoised in [`Group`]) without moving it, because the next
//!   left row may need the same group.
//! - **nearest**: the cursor moves as for `>=`, and the two rows on either side of the left
//!   row compete: the candidate passed (for `nearest ... AND l.ts <> r.ts`, the one before
//!   it when the candidate is at exactly the left row's time, kept as `prior`), and the tie
//!   group at the cursor. The closer one wins; at equal distance the earlier one.
//!
//! Among tied rows the larger tie-breaker (created timestamp) wins, then the row whose
//! columns compare larger left to right, so the winner never depends on the order in which
//! tied rows arrive, and with it on batch sizes, partitioning or spilling. With `keep_ties`
//! (the `RANK() = 1` rewrite) every row tied with the winner on time and tie-breaker is
//! output instead, one row each.
//!
//! A left row or right row with a NULL key or time never matches.
//!
//! ```text
//!          ┌────────────── left batch merged: emit ───────────────┐
//!          ▼                                                      │
//!      PullLeft ──── batch ────> Merging ─────────────────────────┘
//!          │                      │   ▲
//!        (end)        needs more  │   │  right batch,
//!          ▼          right rows  ▼   │  or right input ended
//!        Done                   PullRight
//! ```
//!
//! Memory: the current left batch and the right batches between the oldest row the output
//! still references and the cursor ([`RightBuffer`]). When a left batch spans many right
//! batches the pending output ([`PendingOutput`]) is emitted early so those batches can be
//! released.

use std::cmp::Ordering;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::Result;
use datafusion::execution::memory_pool::{MemoryPool, MemoryReservation};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use datafusion::physical_expr::PhysicalExprRef;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use super::input::{JoinArrays, JoinExprs, RightInput, Source, right_rows};
use super::keyed::{KeyFormat, Keyed};
use super::metrics::{AsOfJoinMetrics, widen};
use super::output::PendingOutput;
use super::right_buffer::{At, RightBuffer, RowRef};
use crate::logical::{AsOfJoinOptions, MatchOp};
use crate::physical::spine_bounds::Narrowing;

/// When the output pending for one left batch references more right batches than this,
/// it is emitted early so they can be released: a spine that is sparse against its
/// features would otherwise pin most of the right input in memory.
pub const MAX_PINNED_RIGHT_BATCHES: usize = 8;

/// The group of right rows tied on `(keys, time)` starting at the cursor (forward joins).
#[derive(Debug, Clone, Copy)]
struct Group {
    start: RowRef,
    /// Next row to look at.
    scan: RowRef,
    /// Winner among the rows scanned so far.
    best: RowRef,
}

/// Whether a seek got where it was going.
enum Seek {
    Done,
    /// The right rows buffered so far are not enough to decide.
    NeedRight,
}

/// The winner of the tie group at the cursor (forward joins), if it can be decided yet.
enum Resolved {
    Winner(RowRef),
    NeedRight,
}

/// Why the merge stopped.
enum Step {
    /// The right rows buffered so far are not enough to decide the next left row; the
    /// batch, if any, is output emitted early to release right batches.
    NeedRight(Option<RecordBatch>),
    /// The current left batch is finished; this is the rest of its output.
    LeftDone(RecordBatch),
}

enum State {
    PullLeft,
    Merging,
    PullRight,
    Done,
}

/// Where the stream's output goes and what it reads, besides the options.
pub(crate) struct JoinStreamConfig {
    pub schema: SchemaRef,
    pub right_schema: SchemaRef,
    /// Rows per batch gathered from a sorted partition.
    pub batch_size: usize,
    /// The pool the join's reservation draws on.
    pub pool: Arc<dyn MemoryPool>,
}

pub(super) struct AsOfJoinStream {
    options: AsOfJoinOptions<PhysicalExprRef>,
    schema: SchemaRef,
    left_input: SendableRecordBatchStream,
    left_exprs: JoinExprs,
    /// Right rows with their join columns.
    right_input: BoxStream<'static, Result<(Source, JoinArrays)>>,
    state: State,
    key_format: KeyFormat,

    left: Option<Keyed>,
    /// Next left row to decide.
    left_row: usize,
    output: PendingOutput,
    right: RightBuffer,
    /// Backward and nearest joins: the winner among the rows the cursor has passed.
    candidate: Option<RowRef>,
    /// Backward and nearest joins: the first row of the candidate's tie group.
    candidate_start: Option<RowRef>,
    /// Nearest joins: the winner of the tie group before the candidate's.
    prior: Option<RowRef>,
    /// Forward and nearest joins: the tie group at the cursor, as far as it has been scanned.
    group: Option<Group>,

    metrics: AsOfJoinMetrics,
    /// `spine_times` and `feature_lead` of the left batch being merged, added to the
    /// metrics once it is done (a lock per batch, not per row).
    spine_times: Option<(i64, i64)>,
    feature_lead: Option<(i64, i64)>,
    /// Until the right side's filters are set.
    narrowing: Option<Arc<Narrowing>>,
}

impl AsOfJoinStream {
    pub fn try_new(
        options: AsOfJoinOptions<PhysicalExprRef>,
        config: JoinStreamConfig,
        left_input: SendableRecordBatchStream,
        right_input: RightInput,
        reservation: MemoryReservation,
        metrics: AsOfJoinMetrics,
        narrowing: Option<Arc<Narrowing>>,
    ) -> Result<Self> {
        let JoinStreamConfig {
            schema,
            right_schema,
            batch_size,
            pool,
        } = config;
        let left_types = options
            .left_keys()
            .map(|k| k.data_type(&left_input.schema()))
            .collect::<Result<Vec<_>>>()?;
        let right_types = options
            .right_keys()
            .map(|k| k.data_type(&right_schema))
            .collect::<Result<Vec<_>>>()?;
        let key_format = KeyFormat::new(&left_types, &right_types)?;
        let output = PendingOutput::new(
            Arc::clone(&schema),
            &right_schema,
            options.keep_ties(),
            options.distinct_spine(),
            options.inner,
        );
        let right = RightBuffer::new(
            reservation,
            pool,
            metrics.peak_mem_used.clone(),
            right_schema.fields().len(),
        );
        Ok(Self {
            left_exprs: JoinExprs::left(&options),
            right_input: right_rows(right_input, JoinExprs::right(&options), batch_size),
            options,
            schema,
            left_input,
            state: State::PullLeft,
            key_format,
            left: None,
            left_row: 0,
            output,
            right,
            candidate: None,
            candidate_start: None,
            prior: None,
            group: None,
            metrics,
            spine_times: None,
            feature_lead: None,
            narrowing,
        })
    }

    fn left(&self) -> &Keyed {
        self.left.as_ref().expect("merging a left batch")
    }

    /// Compare the keys of right row `r` with left row `i`.
    fn cmp_keys(&self, r: RowRef, i: usize) -> Ordering {
        match (&self.right.row(r).keys, &self.left().keys) {
            (Some(rk), Some(lk)) => rk.cmp(r.row, lk, i),
            _ => Ordering::Equal,
        }
    }

    /// Move the cursor past every right row before left row `i`: for backward joins those
    /// at or before its time (strictly before for `>`), folding each into the candidate; for
    /// forward joins those before its time (at or before for `<`); for nearest joins those at
    /// or before its time, folding each into the candidate.
    fn seek(&mut self, i: usize) -> Seek {
        let left_time = self.left().time(i);
        let op = self.options.op;
        let folds = op.looks_back();
        let passes_equal_time = op.is_nearest() || op.is_backward() != op.is_strict();
        loop {
            let r = match self.right.at_cursor() {
                At::Row(r) => r,
                At::End => return Seek::Done,
                At::NeedMore => return Seek::NeedRight,
            };
            let batch = self.right.row(r);
            if batch.valid(r.row) {
                let passes = match self.cmp_keys(r, i) {
                    Ordering::Less => true,
                    Ordering::Greater => false,
                    Ordering::Equal => {
                        let t = batch.time(r.row);
                        t < left_time || (passes_equal_time && t == left_time)
                    }
                };
                if !passes {
                    return Seek::Done;
                }
                if folds {
                    self.fold_candidate(r);
                }
            }
            self.right.cursor.row += 1;
            if op.looks_forward() {
                self.group = None;
            }
        }
    }

    /// Backward joins: right row `r`, just passed, into the running winner.
    fn fold_candidate(&mut self, r: RowRef) {
        let ranked = self.options.rank_time().is_some();
        self.candidate = Some(match self.candidate {
            Some(c) if ranked && self.right.same_keys(c, r) => self.right.higher_rank(c, r),
            Some(c) if self.right.same_group(c, r) => self.right.better(c, r),
            _ => {
                self.candidate_start = Some(r);
                // The group before, if it is of the same keys (else it can never win).
                self.prior = self.candidate.filter(|c| self.right.same_keys(*c, r));
                r
            }
        });
    }

    /// Forward joins: the winner of the tie group at the cursor (which must be valid).
    fn resolve_group(&mut self) -> Resolved {
        let cursor = self.right.cursor;
        let mut group = self.group.unwrap_or(Group {
            start: cursor,
            scan: cursor.next(),
            best: cursor,
        });
        let resolved = loop {
            match self.right.at(group.scan) {
                At::Row(r) => {
                    group.scan = r;
                    if !self.right.row(r).valid(r.row) || !self.right.same_group(group.start, r) {
                        break Resolved::Winner(group.best);
                    }
                    group.best = self.right.better(group.best, r);
                    group.scan = r.next();
                }
                At::End => break Resolved::Winner(group.best),
                At::NeedMore => break Resolved::NeedRight,
            }
        };
        self.group = Some(group);
        resolved
    }

    /// The nearest right row for left row `i` on the side the join looks, before the TTL.
    fn nearest(&mut self, i: usize) -> Option<Resolved> {
        if let Seek::NeedRight = self.seek(i) {
            return Some(Resolved::NeedRight);
        }
        let op = self.options.op;
        let before = if op.looks_back() {
            self.before(i)
        } else {
            None
        };
        if op.is_backward() {
            return before.map(Resolved::Winner);
        }
        let after = match self.right.at_cursor() {
            At::Row(r) if self.cmp_keys(r, i) == Ordering::Equal => match self.resolve_group() {
                Resolved::Winner(w) => Some(w),
                Resolved::NeedRight => return Some(Resolved::NeedRight),
            },
            At::Row(_) | At::End => None,
            At::NeedMore => return Some(Resolved::NeedRight),
        };
        let winner = match (before, after) {
            (Some(b), Some(a)) => {
                let t = self.left().time(i) as i128;
                let time = |r: RowRef| self.right.row(r).time(r.row) as i128;
                // Equal distances go to the earlier row, as in pandas.
                if t - time(b) <= time(a) - t { b } else { a }
            }
            (b, a) => b.or(a)?,
        };
        Some(Resolved::Winner(winner))
    }

    /// Backward and nearest joins: the winner among the right rows the cursor has passed
    /// for left row `i` (for an exclusive nearest join, not at exactly its time).
    fn before(&self, i: usize) -> Option<RowRef> {
        let mut c = self.candidate?;
        if self.options.op == MatchOp::NearestExclusive
            && self.right.row(c).time(c.row) == self.left().time(i)
        {
            c = self.prior?;
        }
        (self.cmp_keys(c, i) == Ordering::Equal).then_some(c)
    }

    /// Decide left rows until the left batch is done or more right rows are needed.
    fn merge(&mut self) -> Result<Step> {
        let num_rows = self.left().num_rows();
        while self.left_row < num_rows {
            let i = self.left_row;
            if self.options.distinct_spine() {
                let left = self.left.as_ref().expect("merging a left batch");
                self.output.mark_repeat(left, i);
            }
            if !self.left().valid(i) {
                self.output.push(i, None);
                self.left_row += 1;
                continue;
            }
            let left_time = self.left().time(i);
            widen(&mut self.spine_times, left_time, left_time);
            let found = match self.nearest(i) {
                Some(Resolved::NeedRight) => return self.need_right(),
                Some(Resolved::Winner(r)) => Some(r),
                None => None,
            };
            let pick = found.filter(|w| {
                let distance = (left_time as i128 - self.right.event_time(*w) as i128).abs();
                let fresh = self.options.ttl.is_none_or(|ttl| distance <= ttl as i128);
                if !fresh {
                    self.metrics.expired_by_ttl.add(1);
                }
                fresh
            });
            if let Some(best) = pick {
                self.metrics.matched_rows.add(1);
                let lead = self.right.event_time(best).saturating_sub(left_time);
                widen(&mut self.feature_lead, lead, lead);
                if lead > 0 {
                    self.metrics.future_matches.add(1);
                }
            }
            match pick {
                Some(best) if self.options.keep_ties() => {
                    for tied in self.tied_with(best) {
                        self.output.push(i, Some(tied));
                    }
                }
                _ => self.output.push(i, pick),
            }
            self.left_row += 1;
        }
        self.metrics.spine_times.include(self.spine_times.take());
        self.metrics.feature_lead.include(self.feature_lead.take());
        let output = self.emit()?;
        self.release_right(false);
        Ok(Step::LeftDone(output))
    }

    /// `keep_ties`: the rows of `best`'s tie group (the candidate's for backward joins, the
    /// group at the cursor for forward ones) with its tie-breaker value, in order.
    fn tied_with(&self, best: RowRef) -> Vec<RowRef> {
        let (from, to) = match (self.options.op.is_backward(), self.group) {
            (true, _) => (self.candidate_start.unwrap_or(best), self.right.cursor),
            (false, Some(group)) => (group.start, group.scan),
            (false, None) => (best, best),
        };
        let tie = |r: RowRef| self.right.row(r).tie(r.row).flatten();
        let mut tied = vec![];
        let mut r = from;
        while r < to {
            let At::Row(at) = self.right.at(r) else {
                break;
            };
            if at >= to {
                break;
            }
            if self.right.row(at).valid(at.row)
                && self.right.same_group(best, at)
                && tie(at) == tie(best)
            {
                tied.push(at);
            }
            r = at.next();
        }
        if tied.is_empty() {
            tied.push(best);
        }
        tied
    }

    fn emit(&mut self) -> Result<RecordBatch> {
        let left = self.left.as_ref().expect("merging a left batch");
        self.output.emit(left, self.left_row, &self.right)
    }

    /// Ask for more right input, first releasing right batches nothing needs any more:
    /// when the pending output pins many of them, or when the memory pool runs short, it is
    /// emitted first.
    fn need_right(&mut self) -> Result<Step> {
        let pinned = self
            .output
            .first_pinned()
            .map(|p| self.needed_from().saturating_sub(p));
        let flush = match pinned {
            // Under a short pool, only when the flush frees room for the next batches.
            Some(n) if n >= MAX_PINNED_RIGHT_BATCHES || (n >= 2 && self.right.pool_is_short()) => {
                Some(self.emit()?)
            }
            _ => None,
        };
        self.release_right(true);
        Ok(Step::NeedRight(flush))
    }

    /// The oldest right batch the merge state (not the pending output) still uses.
    fn needed_from(&self) -> usize {
        let mut from = self.right.cursor.batch;
        if let Some(c) = self.candidate {
            from = from.min(c.batch);
        }
        if self.options.op == MatchOp::NearestExclusive
            && let Some(p) = self.prior
        {
            from = from.min(p.batch);
        }
        if self.options.keep_ties()
            && let Some(c) = self.candidate_start
        {
            from = from.min(c.batch);
        }
        if let Some(g) = self.group {
            from = from.min(g.start.batch);
        }
        from
    }

    /// Drop right batches older than anything the merge state and pending output use.
    fn release_right(&mut self, keep_pinned: bool) {
        let mut keep_from = self.needed_from();
        if keep_pinned && let Some(p) = self.output.first_pinned() {
            keep_from = keep_from.min(p);
        }
        self.right.release_before(keep_from);
    }

    fn start_left(&mut self, batch: RecordBatch) -> Result<()> {
        self.metrics.left_rows.add(batch.num_rows());
        let arrays = self.left_exprs.evaluate(&batch)?;
        let keyed = self
            .key_format
            .keyed(Source::Batch(batch), arrays, self.options.domain)?;
        self.right.hold_left(keyed.memory_size())?;
        let previous = self.left.replace(keyed);
        self.output.begin_batch(previous.as_ref());
        self.left_row = 0;
        Ok(())
    }

    fn push_right(&mut self, source: Source, arrays: JoinArrays) -> Result<()> {
        let keyed = self.key_format.keyed(source, arrays, self.options.domain)?;
        self.metrics.right_rows.add(keyed.num_rows());
        self.right.push(keyed)
    }

    fn poll_next_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<RecordBatch>>> {
        loop {
            match self.state {
                State::PullLeft => match ready!(self.left_input.poll_next_unpin(cx)) {
                    Some(Ok(batch)) if batch.num_rows() == 0 => {}
                    Some(Ok(batch)) => {
                        let elapsed = self.metrics.baseline.elapsed_compute().clone();
                        let _timer = elapsed.timer();
                        self.start_left(batch)?;
                        self.state = State::Merging;
                    }
                    Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                    None => {
                        self.state = State::Done;
                        self.left = None;
                        self.right.free();
                        return Poll::Ready(None);
                    }
                },
                State::Merging => {
                    let elapsed = self.metrics.baseline.elapsed_compute().clone();
                    let _timer = elapsed.timer();
                    match self.merge()? {
                        Step::NeedRight(flush) => {
                            self.state = State::PullRight;
                            if let Some(batch) = flush
                                && batch.num_rows() > 0
                            {
                                return Poll::Ready(Some(Ok(batch)));
                            }
                        }
                        Step::LeftDone(batch) => {
                            self.state = State::PullLeft;
                            if batch.num_rows() > 0 {
                                return Poll::Ready(Some(Ok(batch)));
                            }
                        }
                    }
                }
                State::PullRight => {
                    // The right side is about to be read: give its scan the spine's bounds
                    // (once they are set, there is nothing more to do here).
                    if let Some(narrowing) = &self.narrowing
                        && narrowing.publish_if_ready()?
                    {
                        self.narrowing = None;
                    }
                    match ready!(self.right_input.poll_next_unpin(cx)) {
                        Some(Ok((source, arrays))) => {
                            let elapsed = self.metrics.baseline.elapsed_compute().clone();
                            let _timer = elapsed.timer();
                            self.push_right(source, arrays)?;
                            self.state = State::Merging;
                        }
                        Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                        None => {
                            self.right.finish();
                            self.state = State::Merging;
                        }
                    }
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

impl Stream for AsOfJoinStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let poll = self.poll_next_inner(cx);
        if let Poll::Ready(Some(Err(_))) = &poll {
            self.state = State::Done;
        }
        self.metrics.baseline.record_poll(poll)
    }
}

impl RecordBatchStream for AsOfJoinStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}
