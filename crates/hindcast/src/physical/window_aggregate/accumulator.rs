//! [`State`]: one aggregate's state over the events in its window, which the merge changes
//! one event at a time: an event enters when the spine reaches its time and leaves, in the
//! same order, once it is older than the window. When only created events count, an event
//! may enter after newer ones (once created), so min and max keep a heap instead of the
//! deque that relies on that order; the other states do not depend on it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, new_null_array};
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err};

use super::events::{Events, Values};
use crate::features::AggregateFunction;

/// See the module documentation. Each variant is exact under removal or says how it is not.
pub(super) enum State {
    Count(i64),
    /// Integers summed in `i128`: removal is exact, and the sum cannot overflow on the way.
    IntSum {
        sum: i128,
        count: i64,
    },
    /// Floats summed with Neumaier's compensation, non-finite values counted apart (so a
    /// NaN or infinity that leaves the window leaves no trace). The events' order is total
    /// (`WindowAggregateOptions::tie_order`), so the rounding is the same on every run.
    FloatSum {
        sum: Compensated,
        count: i64,
        nan: i64,
        positive_infinity: i64,
        negative_infinity: i64,
    },
    /// Sums of the values and of their squares, both shifted by the first value to enter
    /// an empty window (so they measure the spread, not the magnitude) and compensated, so
    /// removal leaves no more than rounding; reset whenever the window empties.
    Moments {
        count: i64,
        non_finite: i64,
        shift: f64,
        sum: Compensated,
        squares: Compensated,
    },
    /// The candidates for the extreme, oldest first, each more extreme than every later one
    /// is not: the front is the answer, and an event leaving is at the front if it still
    /// counts.
    Extreme {
        deque: VecDeque<u64>,
        max: bool,
    },
    /// Min or max over events entering in any order: each entered value (row-format bytes)
    /// with its event, the extreme on top; events that left the window are dropped when
    /// they come to the top (see [`Self::expire`]).
    Ranked {
        heap: Ranking,
        bytes: usize,
    },
    /// How many events in the window hold each value, by its row-format bytes.
    Distinct {
        counts: HashMap<Box<[u8]>, u32>,
        bytes: usize,
    },
    /// The newest event with a value: in the window while the window's oldest event is not
    /// newer than it.
    Last(Option<u64>),
}

/// The heap of [`State::Ranked`], its top the largest or the smallest value.
pub(super) enum Ranking {
    Max(BinaryHeap<(Box<[u8]>, u64)>),
    Min(BinaryHeap<Reverse<(Box<[u8]>, u64)>>),
}

impl Ranking {
    fn top(&self) -> Option<(&[u8], u64)> {
        match self {
            Ranking::Max(heap) => heap.peek().map(|(v, e)| (v.as_ref(), *e)),
            Ranking::Min(heap) => heap.peek().map(|Reverse((v, e))| (v.as_ref(), *e)),
        }
    }

    fn pop(&mut self) {
        match self {
            Ranking::Max(heap) => drop(heap.pop()),
            Ranking::Min(heap) => drop(heap.pop()),
        }
    }

    fn push(&mut self, value: Box<[u8]>, event: u64) {
        match self {
            Ranking::Max(heap) => heap.push((value, event)),
            Ranking::Min(heap) => heap.push(Reverse((value, event))),
        }
    }

    fn clear(&mut self) {
        match self {
            Ranking::Max(heap) => heap.clear(),
            Ranking::Min(heap) => heap.clear(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Ranking::Max(heap) => heap.len(),
            Ranking::Min(heap) => heap.len(),
        }
    }

    /// Keep the entries of events from `oldest` on; returns the bytes they hold.
    fn retain_from(&mut self, oldest: u64) -> usize {
        let mut bytes = 0;
        let mut keep = |value: &[u8], event: u64| {
            let kept = event >= oldest;
            if kept {
                bytes += value.len() + RANKED_ENTRY;
            }
            kept
        };
        match self {
            Ranking::Max(heap) => heap.retain(|(v, e)| keep(v, *e)),
            Ranking::Min(heap) => heap.retain(|Reverse((v, e))| keep(v, *e)),
        }
        bytes
    }
}

impl State {
    /// `in_order` says whether events enter in their sorted order (see the module
    /// documentation).
    pub fn new(function: AggregateFunction, argument: Option<&DataType>, in_order: bool) -> Self {
        use AggregateFunction::*;
        match function {
            CountRows | Count => State::Count(0),
            Sum | Avg if argument.is_some_and(DataType::is_integer) => {
                State::IntSum { sum: 0, count: 0 }
            }
            Sum | Avg => State::FloatSum {
                sum: Compensated::default(),
                count: 0,
                nan: 0,
                positive_infinity: 0,
                negative_infinity: 0,
            },
            StddevSamp | StddevPop | VarSamp | VarPop => State::Moments {
                count: 0,
                non_finite: 0,
                shift: 0.0,
                sum: Compensated::default(),
                squares: Compensated::default(),
            },
            Min | Max if in_order => State::Extreme {
                deque: VecDeque::new(),
                max: function == Max,
            },
            Min => State::Ranked {
                heap: Ranking::Min(BinaryHeap::new()),
                bytes: 0,
            },
            Max => State::Ranked {
                heap: Ranking::Max(BinaryHeap::new()),
                bytes: 0,
            },
            CountDistinct => State::Distinct {
                counts: HashMap::new(),
                bytes: 0,
            },
            Last => State::Last(None),
        }
    }

    pub fn reset(&mut self) {
        match self {
            State::Count(n) => *n = 0,
            State::IntSum { sum, count } => (*sum, *count) = (0, 0),
            State::FloatSum {
                sum,
                count,
                nan,
                positive_infinity,
                negative_infinity,
            } => {
                *sum = Compensated::default();
                (*count, *nan, *positive_infinity, *negative_infinity) = (0, 0, 0, 0);
            }
            State::Moments {
                count,
                non_finite,
                shift,
                sum,
                squares,
            } => {
                (*count, *non_finite, *shift) = (0, 0, 0.0);
                (*sum, *squares) = (Compensated::default(), Compensated::default());
            }
            State::Extreme { deque, .. } => deque.clear(),
            State::Ranked { heap, bytes } => {
                heap.clear();
                *bytes = 0;
            }
            State::Distinct { counts, bytes } => {
                counts.clear();
                *bytes = 0;
            }
            State::Last(last) => *last = None,
        }
    }

    /// Event `event` (row `row` of its batch, whose values for aggregate number `aggregate`
    /// are `values`) enters the window.
    pub fn add(
        &mut self,
        events: &Events,
        aggregate: usize,
        values: &Values,
        event: u64,
        row: usize,
    ) {
        if !values.is_valid(row) {
            return;
        }
        match self {
            State::Count(n) => *n += 1,
            State::IntSum { sum, count } => {
                let Values::Int(v) = values else {
                    unreachable!()
                };
                *sum += v.value(row) as i128;
                *count += 1;
            }
            State::FloatSum { .. } => {
                let Values::Float(v) = values else {
                    unreachable!()
                };
                self.float_sum(v.value(row), 1);
            }
            State::Moments { .. } => {
                let Values::Float(v) = values else {
                    unreachable!()
                };
                self.moments(v.value(row), 1);
            }
            State::Extreme { deque, max } => {
                let Values::Rows(_, rows) = values else {
                    unreachable!()
                };
                let new = rows.row(row);
                // Drop the candidates the new event beats (or equals: it leaves later).
                while let Some(&back) = deque.back() {
                    let (batch, back_row) = events.locate(back);
                    let Values::Rows(_, back_rows) = &batch.values[aggregate] else {
                        unreachable!()
                    };
                    let old = back_rows.row(back_row);
                    let beaten = if *max { old <= new } else { old >= new };
                    if !beaten {
                        break;
                    }
                    deque.pop_back();
                }
                deque.push_back(event);
            }
            State::Ranked { heap, bytes } => {
                let Values::Rows(_, rows) = values else {
                    unreachable!()
                };
                let value: Box<[u8]> = rows.row(row).as_ref().into();
                *bytes += value.len() + RANKED_ENTRY;
                heap.push(value, event);
            }
            State::Distinct { counts, bytes } => {
                let Values::Rows(_, rows) = values else {
                    unreachable!()
                };
                let value = rows.row(row);
                match counts.get_mut(value.as_ref()) {
                    Some(n) => *n += 1,
                    None => {
                        *bytes += value.as_ref().len() + DISTINCT_ENTRY;
                        counts.insert(value.as_ref().into(), 1);
                    }
                }
            }
            // The newest, by the events' order, of those that entered.
            State::Last(last) => *last = Some(last.map_or(event, |l| l.max(event))),
        }
    }

    /// Event `event` leaves the window; it entered it with [`Self::add`].
    pub fn remove(&mut self, values: &Values, event: u64, row: usize) {
        if !values.is_valid(row) {
            return;
        }
        match self {
            State::Count(n) => *n -= 1,
            State::IntSum { sum, count } => {
                let Values::Int(v) = values else {
                    unreachable!()
                };
                *sum -= v.value(row) as i128;
                *count -= 1;
            }
            State::FloatSum { .. } => {
                let Values::Float(v) = values else {
                    unreachable!()
                };
                self.float_sum(-v.value(row), -1);
            }
            State::Moments { .. } => {
                let Values::Float(v) = values else {
                    unreachable!()
                };
                self.moments(v.value(row), -1);
            }
            State::Extreme { deque, .. } => {
                if deque.front() == Some(&event) {
                    deque.pop_front();
                }
            }
            // Left in the heap until it comes to the top (`Self::expire`).
            State::Ranked { .. } => {}
            State::Distinct { counts, bytes } => {
                let Values::Rows(_, rows) = values else {
                    unreachable!()
                };
                let value = rows.row(row);
                let n = counts.get_mut(value.as_ref()).expect("added before");
                *n -= 1;
                if *n == 0 {
                    counts.remove(value.as_ref());
                    *bytes -= value.as_ref().len() + DISTINCT_ENTRY;
                }
            }
            // Still the newest event with a value, if it is in the window at all
            // (see `Self::last`).
            State::Last(_) => {}
        }
    }

    /// Drop a heap's tops that left the window, whose oldest event is `oldest` and which
    /// spans `span` events. Entries below the top leave only when they come to it, so a
    /// heap grown past twice the span (a max over rising values, say) is also rebuilt from
    /// what is still in the window: its size stays bounded by the window's, amortized.
    pub fn expire(&mut self, oldest: u64, span: u64) {
        if let State::Ranked { heap, bytes } = self {
            if heap.len() as u64 > 2 * span + 32 {
                *bytes = heap.retain_from(oldest);
            }
            while let Some((value, event)) = heap.top() {
                if event >= oldest {
                    break;
                }
                *bytes -= value.len() + RANKED_ENTRY;
                heap.pop();
            }
        }
    }

    /// Add `x` (`count` is +1 entering, -1 leaving).
    fn float_sum(&mut self, x: f64, change: i64) {
        let State::FloatSum {
            sum,
            count,
            nan,
            positive_infinity,
            negative_infinity,
        } = self
        else {
            unreachable!()
        };
        *count += change;
        if x.is_nan() {
            *nan += change;
        } else if x == f64::INFINITY {
            // Removing +inf arrives as -inf: the sign of `change` says which count.
            *if change > 0 {
                positive_infinity
            } else {
                negative_infinity
            } += change;
        } else if x == f64::NEG_INFINITY {
            *if change > 0 {
                negative_infinity
            } else {
                positive_infinity
            } += change;
        } else if *count == 0 {
            *sum = Compensated::default();
        } else {
            sum.add(x);
        }
    }

    /// Add `x` to the moments (`change` is +1 entering, -1 leaving).
    fn moments(&mut self, x: f64, change: i64) {
        let State::Moments {
            count,
            non_finite,
            shift,
            sum,
            squares,
        } = self
        else {
            unreachable!()
        };
        *count += change;
        if !x.is_finite() {
            *non_finite += change;
            return;
        }
        if *count - *non_finite == 0 {
            (*sum, *squares) = (Compensated::default(), Compensated::default());
            return;
        }
        if change > 0 && *count - *non_finite == 1 {
            *shift = x;
        }
        let d = x - *shift;
        let sign = change as f64;
        sum.add(sign * d);
        squares.add(sign * d * d);
    }

    /// Bytes held beyond the events' batches.
    pub fn memory(&self) -> usize {
        match self {
            State::Extreme { deque, .. } => deque.capacity() * 8,
            State::Ranked { bytes, .. } => *bytes,
            State::Distinct { counts, bytes } => *bytes + counts.capacity() * 8,
            _ => 0,
        }
    }
}

/// A sum with Neumaier's compensation: the rounding of each addition is kept apart and
/// added back at the end, so adding and then removing a value leaves (almost) no trace.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Compensated {
    sum: f64,
    compensation: f64,
}

impl Compensated {
    fn add(&mut self, x: f64) {
        let t = self.sum + x;
        if self.sum.abs() >= x.abs() {
            self.compensation += (self.sum - t) + x;
        } else {
            self.compensation += (x - t) + self.sum;
        }
        self.sum = t;
    }

    fn value(&self) -> f64 {
        self.sum + self.compensation
    }
}

/// Bytes a distinct value's entry costs besides its own bytes.
const DISTINCT_ENTRY: usize = 24;

/// Bytes a ranked value's heap entry costs besides its own bytes.
const RANKED_ENTRY: usize = 24;

/// An aggregate's results for a run of spine rows, built as the merge decides them.
pub(super) enum Output {
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    /// The event whose value is the answer (min, max, last), gathered when emitted.
    Event(Vec<Option<u64>>),
}

impl Output {
    pub fn new(function: AggregateFunction, argument: Option<&DataType>) -> Self {
        use AggregateFunction::*;
        match function {
            CountRows | Count | CountDistinct => Output::Int(vec![]),
            Sum if argument.is_some_and(DataType::is_integer) => Output::Int(vec![]),
            Min | Max | Last => Output::Event(vec![]),
            _ => Output::Float(vec![]),
        }
    }

    /// Append the result for a spine row without events: 0 for counts, NULL otherwise.
    pub fn push_empty(&mut self, function: AggregateFunction) {
        use AggregateFunction::*;
        match self {
            Output::Int(v) => {
                v.push(matches!(function, CountRows | Count | CountDistinct).then_some(0))
            }
            Output::Float(v) => v.push(None),
            Output::Event(v) => v.push(None),
        }
    }

    /// Append `state`'s result; `oldest` is the window's oldest event.
    pub fn push(&mut self, function: AggregateFunction, state: &State, oldest: u64) -> Result<()> {
        use AggregateFunction::*;
        match (self, state) {
            (Output::Int(v), State::Count(n)) => v.push(Some(*n)),
            (Output::Int(v), State::Distinct { counts, .. }) => v.push(Some(counts.len() as i64)),
            (Output::Int(v), State::IntSum { sum, count }) => {
                if *count == 0 {
                    v.push(None);
                } else {
                    let Ok(sum) = i64::try_from(*sum) else {
                        return exec_err!(
                            "sum({sum}) overflows Int64: cast the column to DOUBLE in an AS SELECT view"
                        );
                    };
                    v.push(Some(sum));
                }
            }
            (Output::Float(v), State::IntSum { sum, count }) => {
                v.push((*count > 0).then(|| *sum as f64 / *count as f64));
            }
            (
                Output::Float(v),
                State::FloatSum {
                    sum,
                    count,
                    nan,
                    positive_infinity,
                    negative_infinity,
                },
            ) => {
                let total = if *nan > 0 || (*positive_infinity > 0 && *negative_infinity > 0) {
                    f64::NAN
                } else if *positive_infinity > 0 {
                    f64::INFINITY
                } else if *negative_infinity > 0 {
                    f64::NEG_INFINITY
                } else {
                    sum.value()
                };
                v.push(match (*count, function) {
                    (0, _) => None,
                    (n, Avg) => Some(total / n as f64),
                    _ => Some(total),
                });
            }
            (
                Output::Float(v),
                State::Moments {
                    count,
                    non_finite,
                    sum,
                    squares,
                    ..
                },
            ) => {
                let n = *count;
                let sample = matches!(function, StddevSamp | VarSamp);
                let result = if n == 0 || (sample && n == 1) {
                    None
                } else if *non_finite > 0 {
                    Some(f64::NAN)
                } else {
                    let divisor = if sample { n - 1 } else { n } as f64;
                    let (s1, s2) = (sum.value(), squares.value());
                    let variance = ((s2 - s1 * s1 / n as f64) / divisor).max(0.0);
                    Some(match function {
                        StddevSamp | StddevPop => variance.sqrt(),
                        _ => variance,
                    })
                };
                v.push(result);
            }
            (Output::Event(v), State::Extreme { deque, .. }) => v.push(deque.front().copied()),
            (Output::Event(v), State::Ranked { heap, .. }) => v.push(heap.top().map(|(_, e)| e)),
            (Output::Event(v), State::Last(last)) => v.push(last.filter(|&e| e >= oldest)),
            _ => unreachable!("an aggregate's state and output are made for its function"),
        }
        Ok(())
    }

    /// The results as an array of `data_type`, emptying the builder. Events are gathered
    /// from the column of aggregate number `aggregate` in `events`.
    pub fn finish(
        &mut self,
        data_type: &DataType,
        events: &Events,
        aggregate: usize,
    ) -> Result<ArrayRef> {
        Ok(match self {
            Output::Int(v) => Arc::new(Int64Array::from(std::mem::take(v))),
            Output::Float(v) => Arc::new(Float64Array::from(std::mem::take(v))),
            Output::Event(v) => {
                let null = new_null_array(data_type, 1);
                let mut arrays: Vec<&dyn Array> = vec![null.as_ref()];
                for batch in events.batches() {
                    let column = batch.values[aggregate]
                        .column()
                        .expect("min, max and last keep their column");
                    arrays.push(column.as_ref());
                }
                let indices: Vec<(usize, usize)> = std::mem::take(v)
                    .into_iter()
                    .map(|event| match event {
                        Some(event) => {
                            let (position, row) = events.position(event);
                            (position + 1, row)
                        }
                        None => (0, 0),
                    })
                    .collect();
                interleave(&arrays, &indices)?
            }
        })
    }
}
