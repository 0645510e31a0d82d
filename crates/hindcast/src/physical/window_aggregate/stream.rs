//! [`WindowAggregateStream`]: the per-partition merge of the sorted spine and events.
//!
//! Both inputs are sorted by `(keys, time)`. For each spine row of key `k` at time `t`, an
//! add pointer moves every event of `k` with time `<= t` into every aggregate's state, and
//! one remove pointer per window length takes out, oldest first, the events older than
//! `t - window`. A new key starts the states afresh. So every event enters once and leaves
//! once per window length: O(spine + events) after the sort, all windows in one pass.
//!
//! When only created events count, an event the add pointer passes before it is created
//! waits in a heap by created time and enters at the first spine row it is created by, into
//! the windows whose remove pointer has not passed it yet; a remove pointer takes out only
//! events created by then. So each window holds exactly its events created by `t`, at the
//! cost of a heap operation per late event.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::Result;
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::physical_expr::PhysicalExprRef;
use datafusion::physical_plan::metrics::{BaselineMetrics, Count, Gauge};
use datafusion::physical_plan::{RecordBatchStream, SendableRecordBatchStream};
use futures::{Stream, StreamExt};

use super::accumulator::{Output, State};
use super::events::{EventColumns, Events, ValueForm, sliced_size};
use crate::logical::WindowAggregateOptions;
use crate::physical::asof_join::keyed::{KeyFormat, Keys, OwnedKeys};
use crate::physical::spine_bounds::Narrowing;
use crate::physical::{TickRange, widen};

/// Emit the spine rows decided so far once this many event batches are held, so a window
/// over dense events does not pin the whole partition while one spine batch is merged.
const MAX_HELD_EVENT_BATCHES: usize = 32;

/// What `EXPLAIN ANALYZE` shows, per partition.
#[derive(Debug, Clone)]
pub(super) struct WindowMetrics {
    pub baseline: BaselineMetrics,
    pub spine_rows: Count,
    pub events: Count,
    /// Events that entered a window (an event of a key no spine row has, or older than the
    /// first spine row's longest window, is passed over).
    pub events_added: Count,
    /// Spine rows whose longest window holds an event.
    pub matched_rows: Count,
    /// Of those, rows whose newest aggregated event is after the spine time: none, which is
    /// what a training set's leakage check relies on (as for the ASOF join).
    pub future_matches: Count,
    /// The spine rows' times (rows with keys and a time).
    pub spine_times: Arc<TickRange>,
    /// Over matched rows: the newest aggregated event's time minus the spine time.
    pub feature_lead: Arc<TickRange>,
    pub peak_mem_used: Gauge,
}

/// A spine batch being merged.
struct Spine {
    batch: RecordBatch,
    keys: Option<Keys>,
    time: Int64Array,
    invalid: Option<NullBuffer>,
    /// The next row to decide.
    next: usize,
    /// The first row not yet emitted.
    emitted: usize,
}

/// Where the merge is within the current spine row.
#[derive(Clone, Copy, PartialEq)]
enum Phase {
    /// The row is not started.
    Start,
    /// A new key: passing over the events of smaller keys.
    Skip,
    /// Adding the events of this key up to the row's time.
    Add,
}

enum Merge {
    PullLeft,
    Merging,
    PullRight,
    Done,
}

enum Step {
    NeedRight(Option<RecordBatch>),
    SpineDone(RecordBatch),
}

pub(super) struct WindowAggregateStream {
    options: WindowAggregateOptions<PhysicalExprRef>,
    schema: SchemaRef,
    left: SendableRecordBatchStream,
    right: SendableRecordBatchStream,
    key_format: KeyFormat,
    /// Per aggregate: its argument and how it is prepared.
    arguments: Vec<(Option<PhysicalExprRef>, ValueForm)>,
    functions: Vec<crate::features::AggregateFunction>,
    output_types: Vec<DataType>,
    /// Per aggregate: its state, its results not yet emitted, and its window's number.
    states: Vec<State>,
    outputs: Vec<Output>,
    window_of: Vec<usize>,
    /// Per window length: the length and the oldest event still in the window.
    windows: Vec<(i64, u64)>,
    events: Events,
    /// The next event to add, and the newest time among those added for the current key.
    add: u64,
    newest: Option<i64>,
    /// `spine_times` and `feature_lead` of the rows not yet emitted, added to the metrics
    /// on emitting (a lock per batch, not per row).
    spine_times: Option<(i64, i64)>,
    feature_lead: Option<(i64, i64)>,
    /// Events passed by the add pointer but not yet created, by created time then order.
    pending: BinaryHeap<Reverse<(i64, u64)>>,
    /// The key the states are for.
    key: Option<OwnedKeys>,
    spine: Option<Spine>,
    phase: Phase,
    state: Merge,
    reservation: MemoryReservation,
    metrics: WindowMetrics,
    narrowing: Option<Arc<Narrowing>>,
}

impl WindowAggregateStream {
    #[allow(clippy::too_many_arguments)]
    pub fn try_new(
        options: WindowAggregateOptions<PhysicalExprRef>,
        schema: SchemaRef,
        left: SendableRecordBatchStream,
        right: SendableRecordBatchStream,
        reservation: MemoryReservation,
        metrics: WindowMetrics,
        narrowing: Option<Arc<Narrowing>>,
    ) -> Result<Self> {
        let left_schema = left.schema();
        let right_schema = right.schema();
        let left_types = options
            .left_keys()
            .map(|k| k.data_type(&left_schema))
            .collect::<Result<Vec<_>>>()?;
        let right_types = options
            .right_keys()
            .map(|k| k.data_type(&right_schema))
            .collect::<Result<Vec<_>>>()?;
        let key_format = KeyFormat::new(&left_types, &right_types)?;
        let windows_list = options.windows();
        let mut arguments = vec![];
        let mut functions = vec![];
        let mut states = vec![];
        let mut outputs = vec![];
        let mut window_of = vec![];
        let mut output_types = vec![];
        let left_len = left_schema.fields().len();
        // Only with the created filter can an event enter after newer ones.
        let in_order = options.created.is_none();
        for (i, aggregate) in options.aggregates.iter().enumerate() {
            let argument_type = aggregate
                .argument
                .as_ref()
                .map(|a| a.data_type(&right_schema))
                .transpose()?;
            arguments.push((
                aggregate.argument.clone(),
                ValueForm::new(aggregate.function, argument_type.as_ref())?,
            ));
            functions.push(aggregate.function);
            states.push(State::new(
                aggregate.function,
                argument_type.as_ref(),
                in_order,
            ));
            outputs.push(Output::new(aggregate.function, argument_type.as_ref()));
            window_of.push(
                windows_list
                    .iter()
                    .position(|&w| w == aggregate.window)
                    .expect("every window is listed"),
            );
            output_types.push(schema.field(left_len + i).data_type().clone());
        }
        Ok(Self {
            windows: windows_list.into_iter().map(|w| (w, 0)).collect(),
            options,
            schema,
            left,
            right,
            key_format,
            arguments,
            functions,
            output_types,
            states,
            outputs,
            window_of,
            events: Events::new(),
            add: 0,
            newest: None,
            pending: BinaryHeap::new(),
            spine_times: None,
            feature_lead: None,
            key: None,
            spine: None,
            phase: Phase::Start,
            state: Merge::PullLeft,
            reservation,
            metrics,
            narrowing,
        })
    }

    fn set_spine(&mut self, batch: RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        let keys = self
            .options
            .left_keys()
            .map(|k| k.evaluate(&batch)?.into_array(rows))
            .collect::<Result<Vec<_>>>()?;
        let time = self.options.left_time.evaluate(&batch)?.into_array(rows)?;
        let time = self.options.domain.to_i64(&time)?;
        let mut invalid = time.nulls().cloned();
        for k in &keys {
            invalid = NullBuffer::union(invalid.as_ref(), k.logical_nulls().as_ref());
        }
        let keys = self.key_format.convert(&keys)?;
        self.metrics.spine_rows.add(rows);
        self.spine = Some(Spine {
            batch,
            keys,
            time,
            invalid,
            next: 0,
            emitted: 0,
        });
        self.account()
    }

    fn push_events(&mut self, batch: RecordBatch) -> Result<()> {
        self.metrics.events.add(batch.num_rows());
        let right_keys: Vec<PhysicalExprRef> = self.options.right_keys().cloned().collect();
        let columns = EventColumns {
            keys: &right_keys,
            time: &self.options.right_time,
            created: self.options.created.as_ref(),
            domain: self.options.domain,
            key_format: &self.key_format,
            arguments: &self.arguments,
        };
        self.events.push(&batch, &columns)?;
        self.account()
    }

    /// Resize the reservation to what the merge holds: the spine batch, the events'
    /// batches with their prepared columns, and the states.
    fn account(&mut self) -> Result<()> {
        let spine = self
            .spine
            .as_ref()
            .map_or(0, |s| sliced_size(&s.batch) + s.time.len() * 8);
        let events: usize = self.events.batches().map(|b| b.memory).sum();
        let states: usize = self.states.iter().map(State::memory).sum();
        let pending = self.pending.capacity() * std::mem::size_of::<Reverse<(i64, u64)>>();
        let total = spine + events + states + pending;
        self.reservation.try_resize(total)?;
        self.metrics.peak_mem_used.set_max(total);
        Ok(())
    }

    /// Decide spine rows until the current batch is done or more events are needed.
    fn merge(&mut self) -> Result<Step> {
        loop {
            let spine = self.spine.as_ref().expect("merging a spine batch");
            let row = spine.next;
            if row == spine.batch.num_rows() {
                let batch = self.emit()?;
                self.spine = None;
                return Ok(Step::SpineDone(batch));
            }
            let valid = spine.invalid.as_ref().is_none_or(|n| n.is_valid(row));
            if !valid {
                for (output, function) in self.outputs.iter_mut().zip(&self.functions) {
                    output.push_empty(*function);
                }
                self.spine.as_mut().expect("set").next += 1;
                continue;
            }
            let t = spine.time.value(row);
            if self.phase == Phase::Start {
                let same = match (&self.key, &spine.keys) {
                    (Some(key), Some(keys)) => key.is(keys, row),
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                self.phase = if same { Phase::Add } else { Phase::Skip };
            }
            if self.phase == Phase::Skip {
                // Events of smaller keys (and of NULL keys, which sort first) match no row.
                loop {
                    if self.add == self.events.end {
                        if self.events.finished {
                            break;
                        }
                        return self.need_events();
                    }
                    let (batch, event_row) = self.events.locate(self.add);
                    let smaller = !batch.valid(event_row)
                        || compare_keys(&batch.keys, event_row, &spine.keys, row).is_lt();
                    if !smaller {
                        break;
                    }
                    self.add += 1;
                }
                for state in &mut self.states {
                    state.reset();
                }
                for window in &mut self.windows {
                    window.1 = self.add;
                }
                self.newest = None;
                self.pending.clear();
                self.key = spine.keys.as_ref().map(|k| k.owned(row));
                self.phase = Phase::Add;
            }
            // Add this key's events up to time t.
            loop {
                if self.add == self.events.end {
                    if self.events.finished {
                        break;
                    }
                    return self.need_events();
                }
                let (batch, event_row) = self.events.locate(self.add);
                if !compare_keys(&batch.keys, event_row, &spine.keys, row).is_eq() {
                    break;
                }
                if batch.valid(event_row) {
                    let time = batch.time.value(event_row);
                    if time > t {
                        break;
                    }
                    if batch.created_by(event_row, t) {
                        for (i, state) in self.states.iter_mut().enumerate() {
                            state.add(&self.events, i, &batch.values[i], self.add, event_row);
                        }
                        self.newest = Some(self.newest.map_or(time, |n| n.max(time)));
                        self.metrics.events_added.add(1);
                    } else if let Some(created) =
                        batch.created.as_ref().filter(|c| c.is_valid(event_row))
                    {
                        self.pending
                            .push(Reverse((created.value(event_row), self.add)));
                    }
                }
                self.add += 1;
            }
            self.enter_created(t);
            // Take out what is older than each window.
            for (w, (length, oldest)) in self.windows.iter_mut().enumerate() {
                let from = t.saturating_sub(*length);
                while *oldest < self.add {
                    let (batch, event_row) = self.events.locate(*oldest);
                    let valid = batch.valid(event_row);
                    if valid && batch.time.value(event_row) >= from {
                        break;
                    }
                    // An event not yet created is in no window (and enters none this old).
                    if valid && batch.created_by(event_row, t) {
                        for (i, state) in self.states.iter_mut().enumerate() {
                            if self.window_of[i] == w {
                                state.remove(&batch.values[i], *oldest, event_row);
                            }
                        }
                    }
                    *oldest += 1;
                }
            }
            for (i, output) in self.outputs.iter_mut().enumerate() {
                let oldest = self.windows[self.window_of[i]].1;
                self.states[i].expire(oldest, self.add - oldest);
                output.push(self.functions[i], &self.states[i], oldest)?;
            }
            self.measure(t);
            self.phase = Phase::Start;
            self.spine.as_mut().expect("set").next += 1;
        }
    }

    /// The waiting events created by `t` enter the windows their remove pointers have not
    /// passed (a window whose pointer passed an event while it waited is too short for it).
    fn enter_created(&mut self, t: i64) {
        while let Some(&Reverse((created, event))) = self.pending.peek() {
            if created > t {
                break;
            }
            self.pending.pop();
            if self.windows.iter().all(|w| w.1 > event) {
                continue;
            }
            let (batch, row) = self.events.locate(event);
            for (i, state) in self.states.iter_mut().enumerate() {
                if self.windows[self.window_of[i]].1 <= event {
                    state.add(&self.events, i, &batch.values[i], event, row);
                }
            }
            let time = batch.time.value(row);
            self.newest = Some(self.newest.map_or(time, |n| n.max(time)));
            self.metrics.events_added.add(1);
        }
    }

    /// The leakage figures of a decided row at time `t`, measured on what the windows hold.
    fn measure(&mut self, t: i64) {
        widen(&mut self.spine_times, t, t);
        // The newest event entered is at or before t: the longest window holds an event if
        // and only if it holds that one.
        let reach = self.windows.last().map_or(0, |w| w.0);
        if let Some(newest) = self.newest.filter(|&n| n >= t.saturating_sub(reach)) {
            self.metrics.matched_rows.add(1);
            let lead = newest.saturating_sub(t);
            widen(&mut self.feature_lead, lead, lead);
            if lead > 0 {
                self.metrics.future_matches.add(1);
            }
        }
    }

    /// The merge needs the next event batch. Events no window reaches are let go first,
    /// once no decided row points into them, emitting the decided rows if many are held.
    fn need_events(&mut self) -> Result<Step> {
        let spine = self.spine.as_ref().expect("merging");
        if spine.next == spine.emitted {
            // Passing over smaller keys: the old windows are done with.
            let oldest = match self.phase {
                Phase::Skip => self.add,
                _ => self.oldest(),
            };
            self.events.drop_before(oldest);
            self.account()?;
        } else if self.events.len() >= MAX_HELD_EVENT_BATCHES {
            return Ok(Step::NeedRight(Some(self.emit()?)));
        }
        Ok(Step::NeedRight(None))
    }

    /// The oldest event a window holds.
    fn oldest(&self) -> u64 {
        self.windows
            .iter()
            .map(|w| w.1)
            .min()
            .unwrap_or(self.add)
            .min(self.add)
    }

    /// The decided rows of the spine batch not yet emitted, with their aggregates; then the
    /// event batches no window reaches are let go.
    fn emit(&mut self) -> Result<RecordBatch> {
        let spine = self.spine.as_mut().expect("merging");
        let (from, to) = (spine.emitted, spine.next);
        spine.emitted = to;
        let mut columns: Vec<ArrayRef> = spine.batch.slice(from, to - from).columns().to_vec();
        for (i, output) in self.outputs.iter_mut().enumerate() {
            columns.push(output.finish(&self.output_types[i], &self.events, i)?);
        }
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        self.metrics.spine_times.include(self.spine_times.take());
        self.metrics.feature_lead.include(self.feature_lead.take());
        self.events.drop_before(self.oldest());
        self.account()?;
        self.metrics.baseline.record_output(batch.num_rows());
        Ok(batch)
    }

    fn poll_next_inner(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<RecordBatch>>> {
        loop {
            match self.state {
                Merge::PullLeft => match ready!(self.left.poll_next_unpin(cx)) {
                    Some(Ok(batch)) => {
                        if batch.num_rows() > 0 {
                            self.set_spine(batch)?;
                            self.state = Merge::Merging;
                        }
                    }
                    Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                    None => {
                        self.state = Merge::Done;
                        self.reservation.free();
                    }
                },
                Merge::Merging => {
                    let elapsed = self.metrics.baseline.elapsed_compute().clone();
                    let _timer = elapsed.timer();
                    match self.merge()? {
                        Step::NeedRight(flush) => {
                            self.state = Merge::PullRight;
                            if let Some(batch) = flush {
                                return Poll::Ready(Some(Ok(batch)));
                            }
                        }
                        Step::SpineDone(batch) => {
                            self.state = Merge::PullLeft;
                            if batch.num_rows() > 0 {
                                return Poll::Ready(Some(Ok(batch)));
                            }
                        }
                    }
                }
                Merge::PullRight => {
                    // The events are about to be read: give their scan the spine's bounds.
                    if let Some(narrowing) = &self.narrowing
                        && narrowing.publish_if_ready()?
                    {
                        self.narrowing = None;
                    }
                    match ready!(self.right.poll_next_unpin(cx)) {
                        Some(Ok(batch)) => {
                            if batch.num_rows() > 0 {
                                self.push_events(batch)?;
                            }
                            self.state = Merge::Merging;
                        }
                        Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                        None => {
                            self.events.finished = true;
                            self.state = Merge::Merging;
                        }
                    }
                }
                Merge::Done => return Poll::Ready(None),
            }
        }
    }
}

/// An event's keys against a spine row's, in the sort's order (no keys: equal).
fn compare_keys(
    event_keys: &Option<Keys>,
    event_row: usize,
    spine_keys: &Option<Keys>,
    spine_row: usize,
) -> std::cmp::Ordering {
    match (event_keys, spine_keys) {
        (Some(e), Some(s)) => e.cmp(event_row, s, spine_row),
        _ => std::cmp::Ordering::Equal,
    }
}

impl Stream for WindowAggregateStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let poll = self.poll_next_inner(cx);
        if let Poll::Ready(Some(Err(_))) = &poll {
            self.state = Merge::Done;
        }
        self.metrics.baseline.record_poll(poll)
    }
}

impl RecordBatchStream for WindowAggregateStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}
