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
//! still references and the cursor. When a left batch spans many right batches the pending
//! output is emitted early so those batches can be released.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, UInt32Array, new_null_array,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::{
    SortOptions, filter_record_batch, interleave, take, take_record_batch,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream};
use datafusion::physical_expr::PhysicalExprRef;
use datafusion::physical_expr::expressions::Column;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};

use super::bounds::Narrowing;
use super::metrics::AsOfJoinMetrics;
use super::sort::SortedPartition;
use crate::logical::MatchOp;
use crate::time::TimeDomain;

/// When the output pending for one left batch references more right batches than this,
/// it is emitted early so they can be released: a spine that is sparse against its
/// features would otherwise pin most of the right input in memory.
const MAX_PINNED_RIGHT_BATCHES: usize = 8;

/// Everything the stream needs to know about the join.
pub(super) struct JoinSpec {
    pub schema: SchemaRef,
    pub right_schema: SchemaRef,
    /// Rows per batch gathered from a sorted partition.
    pub batch_size: usize,
    pub left_keys: Vec<PhysicalExprRef>,
    pub right_keys: Vec<PhysicalExprRef>,
    pub left_time: PhysicalExprRef,
    pub right_time: PhysicalExprRef,
    pub tie_breaker: Option<PhysicalExprRef>,
    /// See `AsOfJoin::rank_time`.
    pub rank_time: Option<PhysicalExprRef>,
    /// See `AsOfJoin::distinct_spine`.
    pub distinct_spine: bool,
    /// See `AsOfJoin::keep_ties`.
    pub keep_ties: bool,
    pub op: MatchOp,
    pub domain: TimeDomain,
    pub ttl: Option<i64>,
}

/// The join's expressions on one side: keys, time and, on the right, the tie-breaker and
/// rank time.
#[derive(Clone)]
struct JoinExprs {
    keys: Vec<PhysicalExprRef>,
    time: PhysicalExprRef,
    tie: Option<PhysicalExprRef>,
    rank: Option<PhysicalExprRef>,
}

/// [`JoinExprs`] evaluated on some rows.
struct JoinArrays {
    keys: Vec<ArrayRef>,
    time: ArrayRef,
    tie: Option<TieColumn>,
    rank: Option<ArrayRef>,
}

impl JoinExprs {
    fn evaluate(&self, batch: &RecordBatch) -> Result<JoinArrays> {
        let n = batch.num_rows();
        let eval = |e: &PhysicalExprRef| e.evaluate(batch)?.into_array(n);
        Ok(JoinArrays {
            keys: self.keys.iter().map(eval).collect::<Result<_>>()?,
            time: eval(&self.time)?,
            tie: self
                .tie
                .as_ref()
                .map(eval)
                .transpose()?
                .map(TieColumn::Rows),
            rank: self.rank.as_ref().map(eval).transpose()?,
        })
    }
}

/// The tie-breaker of some right rows.
enum TieColumn {
    /// One value per row.
    Rows(ArrayRef),
    /// A sorted partition's rows: see [`PartitionTie`].
    Partition(Arc<PartitionTie>, usize),
}

/// The tie-breaker of all of a sorted partition's rows, comparable, in the order of its
/// column. It is read only where two rows tie on keys and time, which is rare: gathering
/// it into sorted order for every row (as the keys and time are) was wasted work.
struct PartitionTie {
    partition: Arc<SortedPartition>,
    values: Int64Array,
    /// Whether `values` are in sorted order (the tie-breaker is a sort column).
    in_order: bool,
}

impl PartitionTie {
    /// The value of the row at sorted position `i`, `None` for NULL.
    fn value(&self, i: usize) -> Option<i64> {
        let i = match self.in_order {
            true => i,
            false => self.partition.input_row(i),
        };
        self.values.is_valid(i).then(|| self.values.value(i))
    }
}

/// One join expression over a sorted partition.
enum PartitionColumn {
    /// A plain column, read from the partition (the sort's key and time columns are there
    /// in sorted order already).
    Column(usize),
    /// Any other expression, evaluated once on all rows in input order.
    Evaluated(ArrayRef),
}

impl PartitionColumn {
    fn get(&self, partition: &SortedPartition, start: usize, len: usize) -> Result<ArrayRef> {
        match self {
            PartitionColumn::Column(c) => partition.column(*c, start, len),
            PartitionColumn::Evaluated(array) => {
                let rows = partition.input_rows(start, len);
                Ok(take(array.as_ref(), &rows, None)?)
            }
        }
    }
}

/// [`JoinExprs`] over a sorted partition, read in sorted order a batch at a time.
struct PartitionArrays {
    keys: Vec<PartitionColumn>,
    time: PartitionColumn,
    tie: Option<Arc<PartitionTie>>,
    rank: Option<PartitionColumn>,
}

impl PartitionArrays {
    fn new(exprs: &JoinExprs, partition: &Arc<SortedPartition>) -> Result<Self> {
        let mut input_order: Option<RecordBatch> = None;
        let mut column = |e: &PhysicalExprRef| -> Result<PartitionColumn> {
            if let Some(column) = e.downcast_ref::<Column>() {
                return Ok(PartitionColumn::Column(column.index()));
            }
            let rows = match &input_order {
                Some(rows) => rows,
                None => input_order.insert(partition.input_order()?),
            };
            let array = e.evaluate(rows)?.into_array(rows.num_rows())?;
            Ok(PartitionColumn::Evaluated(array))
        };
        Ok(PartitionArrays {
            keys: exprs.keys.iter().map(&mut column).collect::<Result<_>>()?,
            time: column(&exprs.time)?,
            tie: exprs
                .tie
                .as_ref()
                .map(|e| {
                    let (values, in_order) = match column(e)? {
                        PartitionColumn::Column(c) => {
                            (partition.whole_column(c)?, partition.in_order(c))
                        }
                        PartitionColumn::Evaluated(array) => (array, false),
                    };
                    Ok::<_, DataFusionError>(Arc::new(PartitionTie {
                        partition: Arc::clone(partition),
                        values: tie_values(&values)?,
                        in_order,
                    }))
                })
                .transpose()?,
            rank: exprs.rank.as_ref().map(&mut column).transpose()?,
        })
    }

    fn get(&self, partition: &SortedPartition, start: usize, len: usize) -> Result<JoinArrays> {
        let get = |c: &PartitionColumn| c.get(partition, start, len);
        Ok(JoinArrays {
            keys: self.keys.iter().map(get).collect::<Result<_>>()?,
            time: get(&self.time)?,
            tie: self
                .tie
                .as_ref()
                .map(|t| TieColumn::Partition(Arc::clone(t), start)),
            rank: self.rank.as_ref().map(get).transpose()?,
        })
    }
}

/// The right input of the merge.
pub(super) enum RightInput {
    /// Batches sorted by `(keys, time)`.
    Batches(SendableRecordBatchStream),
    /// One sorted, not yet gathered partition: see [`Source::Rows`].
    Unmaterialized(BoxFuture<'static, Result<SortedPartition>>),
}

/// Where the output columns of a [`Keyed`] batch's rows are.
enum Source {
    Batch(RecordBatch),
    /// Late materialization: the sorted partition's rows from sorted position `start` on.
    /// The merge reads only the join columns, in sorted order; every other column is
    /// gathered for the winning rows alone, when output. A feature table has many more
    /// rows than win (workload S: 10M rows, 1M winners), so this saves gathering each
    /// feature column of every row (sort and join on `benches/asof_operator.rs`: 1.21 s ->
    /// 0.79 s).
    Rows {
        partition: Arc<SortedPartition>,
        start: usize,
    },
}

impl Source {
    /// Column `c` and the position in it of row `row`.
    fn cell(&self, c: usize, row: usize) -> (&ArrayRef, usize) {
        match self {
            Source::Batch(batch) => (batch.column(c), row),
            Source::Rows { partition, start } => partition.cell(c, start + row),
        }
    }
}

/// How the stream makes keys comparable: the same for both sides, so the merge compares
/// like with like.
enum KeyFormat {
    None,
    /// One key of an integer-backed type (integers, timestamps, dates), the same on both
    /// sides: compared as `i64` in its own order, without Arrow's row format (whose encoding
    /// and byte comparisons were about 6% of workload M's time).
    Int(TimeDomain),
    /// Anything else: Arrow's row format, so multi-column keys compare as byte strings.
    Rows(RowConverter),
}

impl KeyFormat {
    fn new(left: &[DataType], right: &[DataType]) -> Result<Self> {
        if let ([l], [r]) = (left, right)
            && l == r
            && *l != DataType::UInt64
            && let Some(domain) = TimeDomain::common(l, r)
        {
            return Ok(KeyFormat::Int(domain));
        }
        if right.is_empty() {
            return Ok(KeyFormat::None);
        }
        let options = SortOptions {
            descending: false,
            nulls_first: true,
        };
        let fields = right
            .iter()
            .map(|t| SortField::new_with_options(t.clone(), options))
            .collect();
        Ok(KeyFormat::Rows(RowConverter::new(fields)?))
    }

    fn convert(&self, keys: &[ArrayRef]) -> Result<Option<Keys>> {
        Ok(match self {
            KeyFormat::None => None,
            KeyFormat::Int(domain) => Some(Keys::Int(domain.to_i64(&keys[0])?)),
            KeyFormat::Rows(converter) => Some(Keys::Rows(converter.convert_columns(keys)?)),
        })
    }
}

/// Join keys of a batch's rows in a comparable form, see [`KeyFormat`].
enum Keys {
    Int(Int64Array),
    Rows(Rows),
}

/// One row's keys, kept past its batch.
#[derive(PartialEq)]
enum OwnedKeys {
    Int(Option<i64>),
    Row(OwnedRow),
}

impl Keys {
    /// Row `i` of these keys against row `j` of `other`, NULLs first (the sort's order).
    fn cmp(&self, i: usize, other: &Keys, j: usize) -> Ordering {
        match (self, other) {
            (Keys::Int(a), Keys::Int(b)) => int_key(a, i).cmp(&int_key(b, j)),
            (Keys::Rows(a), Keys::Rows(b)) => a.row(i).cmp(&b.row(j)),
            _ => unreachable!("both sides' keys come from the stream's one KeyFormat"),
        }
    }

    fn owned(&self, i: usize) -> OwnedKeys {
        match self {
            Keys::Int(a) => OwnedKeys::Int(int_key(a, i)),
            Keys::Rows(rows) => OwnedKeys::Row(rows.row(i).owned()),
        }
    }

    fn size(&self) -> usize {
        match self {
            Keys::Int(a) => a.len() * size_of::<i64>(),
            Keys::Rows(rows) => rows.size(),
        }
    }
}

/// An integer key, `None` for NULL (which orders first, as in the sort).
fn int_key(keys: &Int64Array, i: usize) -> Option<i64> {
    keys.is_valid(i).then(|| keys.value(i))
}

/// The tie-breaker of a [`Keyed`] batch.
enum Tie {
    Rows(Int64Array),
    /// The rows of a partition from sorted position `start` on.
    Partition {
        tie: Arc<PartitionTie>,
        start: usize,
    },
}

/// Rows with their join columns evaluated once.
struct Keyed {
    source: Source,
    /// `None` without keys.
    keys: Option<Keys>,
    time: Int64Array,
    /// Right side only: the tie-breaker in a comparable form.
    tie: Option<Tie>,
    /// Right side only: the rank time (see `JoinSpec::rank_time`) in the time domain.
    rank: Option<Int64Array>,
    /// Rows with a NULL key or time are invalid: they never match.
    invalid: Option<NullBuffer>,
}

impl Keyed {
    fn valid(&self, row: usize) -> bool {
        self.invalid.as_ref().is_none_or(|n| n.is_valid(row))
    }

    fn num_rows(&self) -> usize {
        self.time.len()
    }

    /// The tie-breaker of row `row` (`None` for NULL); `None` for all rows without one.
    fn tie(&self, row: usize) -> Option<Option<i64>> {
        Some(match self.tie.as_ref()? {
            Tie::Rows(values) => values.is_valid(row).then(|| values.value(row)),
            Tie::Partition { tie, start } => tie.value(start + row),
        })
    }

    /// The rows' columns (left side), an error for rows of a sorted partition.
    fn batch(&self) -> Result<&RecordBatch> {
        match &self.source {
            Source::Batch(batch) => Ok(batch),
            Source::Rows { .. } => internal_err!("the ASOF join's left rows are batches"),
        }
    }

    /// The memory the merge holds for these rows: the batch, or the join columns (a sorted
    /// partition's rows are its sort's). Counted by length: the time may be a slice of the
    /// partition's column, whose buffer Arrow would report whole.
    fn memory_size(&self) -> usize {
        match &self.source {
            Source::Batch(batch) => batch.get_array_memory_size(),
            Source::Rows { .. } => {
                let tie = matches!(self.tie, Some(Tie::Rows(_)));
                let columns = 1 + tie as usize + self.rank.is_some() as usize;
                self.keys.as_ref().map_or(0, Keys::size)
                    + columns * self.num_rows() * size_of::<i64>()
            }
        }
    }
}

/// Position of a right row: batch number since the stream started, and row in that batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct RowRef {
    batch: usize,
    row: usize,
}

/// The group of right rows tied on `(keys, time)` starting at the cursor (forward joins).
#[derive(Debug, Clone, Copy)]
struct Group {
    start: RowRef,
    /// Next row to look at.
    scan: RowRef,
    /// Winner among the rows scanned so far.
    best: RowRef,
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

pub(super) struct AsOfJoinStream {
    spec: JoinSpec,
    left_input: SendableRecordBatchStream,
    left_exprs: JoinExprs,
    /// Right rows with their join columns.
    right_input: BoxStream<'static, Result<(Source, JoinArrays)>>,
    state: State,
    key_format: KeyFormat,
    /// One all-NULL row per right column: the source of unmatched rows' right columns.
    null_right: Vec<ArrayRef>,

    left: Option<Keyed>,
    /// Next left row to decide.
    left_row: usize,
    /// First left row not yet emitted.
    emit_from: usize,
    /// Winners of rows `emit_from..left_row`: one per row, or with `keep_ties` one per
    /// output row, for left row `pick_rows[i]` (kept with `keep_ties` only).
    picks: Vec<Option<RowRef>>,
    pick_rows: Vec<u32>,
    /// Distinct spine: which of rows `emit_from..left_row` repeat the row before them.
    repeats: Vec<bool>,
    /// Distinct spine: keys and time of the previous left batch's last row.
    last_left: Option<(Option<OwnedKeys>, Option<i64>)>,

    right: VecDeque<Keyed>,
    /// Batch number of `right[0]`.
    right_base: usize,
    right_done: bool,
    cursor: RowRef,
    /// Backward joins: the winner among the rows the cursor has passed.
    candidate: Option<RowRef>,
    /// Backward joins: the first row of the candidate's tie group.
    candidate_start: Option<RowRef>,
    /// Forward joins: the tie group at the cursor, as far as it has been scanned.
    group: Option<Group>,

    reservation: MemoryReservation,
    metrics: AsOfJoinMetrics,
    /// Until the right side's filters are set.
    narrowing: Option<Arc<Narrowing>>,
}

impl AsOfJoinStream {
    pub fn try_new(
        spec: JoinSpec,
        left_input: SendableRecordBatchStream,
        right_input: RightInput,
        reservation: MemoryReservation,
        metrics: AsOfJoinMetrics,
        narrowing: Option<Arc<Narrowing>>,
    ) -> Result<Self> {
        if spec.keep_ties && (spec.distinct_spine || spec.rank_time.is_some()) {
            return internal_err!("keep_ties is not combined with distinct_spine or a rank time");
        }
        let right_schema = Arc::clone(&spec.right_schema);
        let batch_size = spec.batch_size;
        let left_exprs = JoinExprs {
            keys: spec.left_keys.clone(),
            time: Arc::clone(&spec.left_time),
            tie: None,
            rank: None,
        };
        let right_exprs = JoinExprs {
            keys: spec.right_keys.clone(),
            time: Arc::clone(&spec.right_time),
            tie: spec.tie_breaker.clone(),
            rank: spec.rank_time.clone(),
        };
        let right_input = match right_input {
            RightInput::Batches(batches) => batches
                .try_filter(|b| futures::future::ready(b.num_rows() > 0))
                .map(move |batch| {
                    let batch = batch?;
                    let arrays = right_exprs.evaluate(&batch)?;
                    Ok((Source::Batch(batch), arrays))
                })
                .boxed(),
            RightInput::Unmaterialized(sorted) => futures::stream::once(sorted)
                .and_then(move |sorted| {
                    let sorted = Arc::new(sorted);
                    let columns = PartitionArrays::new(&right_exprs, &sorted);
                    async move {
                        let columns = columns?;
                        let starts = (0..sorted.num_rows()).step_by(batch_size);
                        Ok(futures::stream::iter(starts).map(move |start| {
                            let len = batch_size.min(sorted.num_rows() - start);
                            let arrays = columns.get(&sorted, start, len)?;
                            let partition = Arc::clone(&sorted);
                            Ok((Source::Rows { partition, start }, arrays))
                        }))
                    }
                })
                .try_flatten()
                .boxed(),
        };
        let left_types = spec
            .left_keys
            .iter()
            .map(|k| k.data_type(&left_input.schema()))
            .collect::<Result<Vec<_>>>()?;
        let right_types = spec
            .right_keys
            .iter()
            .map(|k| k.data_type(&right_schema))
            .collect::<Result<Vec<_>>>()?;
        let key_format = KeyFormat::new(&left_types, &right_types)?;
        let null_right = right_schema
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), 1))
            .collect();
        Ok(Self {
            spec,
            left_input,
            left_exprs,
            right_input,
            state: State::PullLeft,
            key_format,
            null_right,
            left: None,
            left_row: 0,
            emit_from: 0,
            picks: vec![],
            pick_rows: vec![],
            repeats: vec![],
            last_left: None,
            right: VecDeque::new(),
            right_base: 0,
            right_done: false,
            cursor: RowRef { batch: 0, row: 0 },
            candidate: None,
            candidate_start: None,
            group: None,
            reservation,
            metrics,
            narrowing,
        })
    }

    fn keyed(&self, source: Source, arrays: JoinArrays) -> Result<Keyed> {
        let time = self.spec.domain.to_i64(&arrays.time)?;
        let mut invalid = time.nulls().cloned();
        for k in &arrays.keys {
            invalid = NullBuffer::union(invalid.as_ref(), k.logical_nulls().as_ref());
        }
        let keys = self.key_format.convert(&arrays.keys)?;
        let tie = match arrays.tie {
            None => None,
            Some(TieColumn::Rows(array)) => Some(Tie::Rows(tie_values(&array)?)),
            Some(TieColumn::Partition(tie, start)) => Some(Tie::Partition { tie, start }),
        };
        let rank = match &arrays.rank {
            Some(array) => {
                let rank = self.spec.domain.to_i64(array)?;
                invalid = NullBuffer::union(invalid.as_ref(), rank.nulls());
                Some(rank)
            }
            None => None,
        };
        Ok(Keyed {
            source,
            keys,
            time,
            tie,
            rank,
            invalid,
        })
    }

    fn right_batch(&self, batch: usize) -> Option<&Keyed> {
        batch
            .checked_sub(self.right_base)
            .and_then(|i| self.right.get(i))
    }

    fn right_row(&self, r: RowRef) -> &Keyed {
        self.right_batch(r.batch)
            .expect("a referenced right batch is still buffered")
    }

    /// The cursor's row, moving the cursor over exhausted batches. `Err(())` when more right
    /// input is needed, `Ok(None)` when the right input is exhausted.
    fn cursor_row(&mut self) -> std::result::Result<Option<RowRef>, ()> {
        loop {
            let Some(batch) = self.right_batch(self.cursor.batch) else {
                return if self.right_done { Ok(None) } else { Err(()) };
            };
            if self.cursor.row < batch.num_rows() {
                return Ok(Some(self.cursor));
            }
            self.cursor = RowRef {
                batch: self.cursor.batch + 1,
                row: 0,
            };
        }
    }

    /// Compare the keys of right row `r` with left row `i`.
    fn cmp_keys(&self, r: RowRef, i: usize) -> Ordering {
        let left = self.left.as_ref().expect("merging a left batch");
        match (&self.right_row(r).keys, &left.keys) {
            (Some(rk), Some(lk)) => rk.cmp(r.row, lk, i),
            _ => Ordering::Equal,
        }
    }

    /// Whether two right rows are tied on keys and time.
    fn same_group(&self, a: RowRef, b: RowRef) -> bool {
        let (ba, bb) = (self.right_row(a), self.right_row(b));
        if ba.time.value(a.row) != bb.time.value(b.row) {
            return false;
        }
        match (&ba.keys, &bb.keys) {
            (Some(ka), Some(kb)) => ka.cmp(a.row, kb, b.row).is_eq(),
            _ => true,
        }
    }

    /// Whether two right rows have equal keys.
    fn same_keys(&self, a: RowRef, b: RowRef) -> bool {
        match (&self.right_row(a).keys, &self.right_row(b).keys) {
            (Some(ka), Some(kb)) => ka.cmp(a.row, kb, b.row).is_eq(),
            _ => true,
        }
    }

    /// The time the TTL and the ranking use: the rank time if the join has one.
    fn event_time(&self, r: RowRef) -> i64 {
        let batch = self.right_row(r);
        match &batch.rank {
            Some(rank) => rank.value(r.row),
            None => batch.time.value(r.row),
        }
    }

    /// With a rank time: the winner of two visible rows with equal keys, by rank time, then
    /// as `better` breaks ties. (Rows arrive in visibility order, so the latest to arrive is
    /// not necessarily the latest event: the candidate is a running best.)
    fn higher_rank(&self, a: RowRef, b: RowRef) -> Result<RowRef> {
        match self.event_time(a).cmp(&self.event_time(b)) {
            Ordering::Less => Ok(b),
            Ordering::Greater => Ok(a),
            Ordering::Equal => self.better(a, b),
        }
    }

    /// The winner of two right rows tied on keys and time.
    fn better(&self, a: RowRef, b: RowRef) -> Result<RowRef> {
        let (ba, bb) = (self.right_row(a), self.right_row(b));
        if let (Some(va), Some(vb)) = (ba.tie(a.row), bb.tie(b.row)) {
            match va.cmp(&vb) {
                Ordering::Less => return Ok(b),
                Ordering::Greater => return Ok(a),
                Ordering::Equal => {}
            }
        }
        // Exact tie: the row whose columns compare larger, left to right, wins.
        for c in 0..self.null_right.len() {
            let ((ca, ra), (cb, rb)) = (ba.source.cell(c, a.row), bb.source.cell(c, b.row));
            let Ok(cmp) = datafusion::arrow::array::make_comparator(
                ca.as_ref(),
                cb.as_ref(),
                SortOptions::default(),
            ) else {
                // Types without an order (e.g. maps) cannot break ties.
                continue;
            };
            match cmp(ra, rb) {
                Ordering::Less => return Ok(b),
                Ordering::Greater => return Ok(a),
                Ordering::Equal => {}
            }
        }
        Ok(a)
    }

    /// Backward joins: move the cursor past every right row at or before left row `i`.
    fn seek_backward(&mut self, i: usize) -> Result<std::result::Result<(), ()>> {
        let left = self.left.as_ref().expect("merging a left batch");
        let left_time = left.time.value(i);
        let strict = self.spec.op.is_strict();
        loop {
            let r = match self.cursor_row() {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(Ok(())),
                Err(()) => return Ok(Err(())),
            };
            let batch = self.right_row(r);
            if batch.valid(r.row) {
                let passes = match self.cmp_keys(r, i) {
                    Ordering::Less => true,
                    Ordering::Greater => false,
                    Ordering::Equal => {
                        let t = batch.time.value(r.row);
                        t < left_time || (!strict && t == left_time)
                    }
                };
                if !passes {
                    return Ok(Ok(()));
                }
                self.candidate = Some(match self.candidate {
                    Some(c) if self.spec.rank_time.is_some() && self.same_keys(c, r) => {
                        self.higher_rank(c, r)?
                    }
                    Some(c) if self.same_group(c, r) => self.better(c, r)?,
                    _ => {
                        self.candidate_start = Some(r);
                        r
                    }
                });
            }
            self.cursor.row += 1;
        }
    }

    /// Forward joins: move the cursor past every right row before left row `i`.
    fn seek_forward(&mut self, i: usize) -> std::result::Result<(), ()> {
        let left = self.left.as_ref().expect("merging a left batch");
        let left_time = left.time.value(i);
        let strict = self.spec.op.is_strict();
        loop {
            let Some(r) = self.cursor_row()? else {
                return Ok(());
            };
            let batch = self.right_row(r);
            if batch.valid(r.row) {
                let before = match self.cmp_keys(r, i) {
                    Ordering::Less => true,
                    Ordering::Greater => false,
                    Ordering::Equal => {
                        let t = batch.time.value(r.row);
                        t < left_time || (strict && t == left_time)
                    }
                };
                if !before {
                    return Ok(());
                }
            }
            self.cursor.row += 1;
            self.group = None;
        }
    }

    /// Forward joins: the winner of the tie group at the cursor (which must be valid).
    fn resolve_group(&mut self) -> Result<std::result::Result<RowRef, ()>> {
        let mut group = self.group.unwrap_or(Group {
            start: self.cursor,
            scan: RowRef {
                batch: self.cursor.batch,
                row: self.cursor.row + 1,
            },
            best: self.cursor,
        });
        let result = loop {
            let Some(batch) = self.right_batch(group.scan.batch) else {
                if self.right_done {
                    break Ok(group.best);
                }
                break Err(());
            };
            if group.scan.row >= batch.num_rows() {
                group.scan = RowRef {
                    batch: group.scan.batch + 1,
                    row: 0,
                };
                continue;
            }
            if !batch.valid(group.scan.row) || !self.same_group(group.start, group.scan) {
                break Ok(group.best);
            }
            group.best = self.better(group.best, group.scan)?;
            group.scan.row += 1;
        };
        self.group = Some(group);
        Ok(result)
    }

    /// Decide left rows until the left batch is done or more right rows are needed.
    fn merge(&mut self) -> Result<Step> {
        let num_rows = self.left.as_ref().expect("merging a left batch").num_rows();
        while self.left_row < num_rows {
            let i = self.left_row;
            if self.spec.distinct_spine {
                let repeats = self.repeats_previous(i);
                // `repeats` is pushed once per row, here; a row waiting for right input
                // comes back through this loop, so drop the entry of the earlier visit.
                self.repeats.truncate(i - self.emit_from);
                self.repeats.push(repeats);
            }
            let left = self.left.as_ref().expect("merging a left batch");
            if !left.valid(i) {
                self.push_pick(i, None);
                self.left_row += 1;
                continue;
            }
            let left_time = left.time.value(i);
            let found = if self.spec.op.is_backward() {
                if self.seek_backward(i)?.is_err() {
                    return self.need_right();
                }
                self.candidate
                    .filter(|c| self.cmp_keys(*c, i) == Ordering::Equal)
            } else {
                if self.seek_forward(i).is_err() {
                    return self.need_right();
                }
                match self.cursor_row() {
                    Ok(Some(r)) if self.cmp_keys(r, i) == Ordering::Equal => {
                        match self.resolve_group()? {
                            Ok(best) => Some(best),
                            Err(()) => return self.need_right(),
                        }
                    }
                    Ok(_) => None,
                    Err(()) => return self.need_right(),
                }
            };
            let pick = found.filter(|w| {
                let t = self.event_time(*w);
                let distance = (left_time as i128 - t as i128).abs();
                let fresh = self.spec.ttl.is_none_or(|ttl| distance <= ttl as i128);
                if !fresh {
                    self.metrics.expired_by_ttl.add(1);
                }
                fresh
            });
            if pick.is_some() {
                self.metrics.matched_rows.add(1);
            }
            match pick {
                Some(best) if self.spec.keep_ties => {
                    for tied in self.tied_with(best) {
                        self.push_pick(i, Some(tied));
                    }
                }
                _ => self.push_pick(i, pick),
            }
            self.left_row += 1;
        }
        let output = self.emit()?;
        self.release_right(false);
        Ok(Step::LeftDone(output))
    }

    /// Record `pick` as an output row of left row `i`.
    fn push_pick(&mut self, i: usize, pick: Option<RowRef>) {
        self.picks.push(pick);
        if self.spec.keep_ties {
            self.pick_rows.push(i as u32);
        }
    }

    /// `keep_ties`: the rows of `best`'s tie group (the candidate's for backward joins, the
    /// group at the cursor for forward ones) with its tie-breaker value, in order.
    fn tied_with(&self, best: RowRef) -> Vec<RowRef> {
        let (from, to) = match (self.spec.op.is_backward(), self.group) {
            (true, _) => (self.candidate_start.unwrap_or(best), self.cursor),
            (false, Some(group)) => (group.start, group.scan),
            (false, None) => (best, best),
        };
        let tie = |r: RowRef| self.right_row(r).tie(r.row).flatten();
        let mut tied = vec![];
        let mut r = from;
        while r < to {
            match self.right_batch(r.batch) {
                Some(batch) if r.row < batch.num_rows() => {
                    if batch.valid(r.row) && self.same_group(best, r) && tie(r) == tie(best) {
                        tied.push(r);
                    }
                    r.row += 1;
                }
                Some(_) => {
                    r = RowRef {
                        batch: r.batch + 1,
                        row: 0,
                    }
                }
                None => break,
            }
        }
        if tied.is_empty() {
            tied.push(best);
        }
        tied
    }

    /// Ask for more right input, first releasing right batches nothing needs any more.
    fn need_right(&mut self) -> Result<Step> {
        let pinned_from = self.picks.iter().flatten().next().map(|p| p.batch);
        let needed_from = self.needed_from();
        let flush = match pinned_from {
            Some(p) if needed_from.saturating_sub(p) >= MAX_PINNED_RIGHT_BATCHES => {
                Some(self.emit()?)
            }
            _ => None,
        };
        self.release_right(true);
        Ok(Step::NeedRight(flush))
    }

    /// The oldest right batch the merge state (not the pending output) still uses.
    fn needed_from(&self) -> usize {
        let mut from = self.cursor.batch;
        if let Some(c) = self.candidate {
            from = from.min(c.batch);
        }
        if self.spec.keep_ties
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
        if keep_pinned && let Some(p) = self.picks.iter().flatten().next() {
            keep_from = keep_from.min(p.batch);
        }
        while self.right_base < keep_from {
            let Some(batch) = self.right.pop_front() else {
                break;
            };
            self.reservation.shrink(batch.memory_size());
            self.right_base += 1;
        }
    }

    /// Distinct spine: whether left row `i` has the keys and time of the row before it
    /// (NULLs equal, as in `PARTITION BY`). The input is sorted by keys then time, so such
    /// rows are adjacent.
    fn repeats_previous(&self, i: usize) -> bool {
        let left = self.left.as_ref().expect("merging a left batch");
        let time = |row: usize| left.time.is_valid(row).then(|| left.time.value(row));
        if i > 0 {
            let same_keys = left
                .keys
                .as_ref()
                .is_none_or(|k| k.cmp(i, k, i - 1).is_eq());
            return same_keys && time(i) == time(i - 1);
        }
        match &self.last_left {
            Some((keys, last_time)) => {
                let same_keys = match (&left.keys, keys) {
                    (Some(k), Some(last)) => k.owned(0) == *last,
                    (None, None) => true,
                    _ => false,
                };
                same_keys && time(0) == *last_time
            }
            None => false,
        }
    }

    /// Output for left rows `emit_from..left_row`.
    fn emit(&mut self) -> Result<RecordBatch> {
        let left = self.left.as_ref().expect("merging a left batch");
        let n = self.left_row - self.emit_from;
        let mut columns: Vec<ArrayRef> = if self.spec.keep_ties {
            let pick_rows = UInt32Array::from(std::mem::take(&mut self.pick_rows));
            take_record_batch(left.batch()?, &pick_rows)?
                .columns()
                .to_vec()
        } else {
            left.batch()?.slice(self.emit_from, n).columns().to_vec()
        };
        columns.extend(self.right_columns()?);
        self.emit_from = self.left_row;
        self.picks.clear();
        let batch = RecordBatch::try_new(Arc::clone(&self.spec.schema), columns)?;
        // The entry of a row still waiting for right input stays for the next output.
        let waiting = self.repeats.split_off(n.min(self.repeats.len()));
        let repeats = std::mem::replace(&mut self.repeats, waiting);
        if !repeats.iter().any(|r| *r) {
            return Ok(batch);
        }
        let keep: BooleanArray = repeats.iter().map(|r| Some(!r)).collect();
        Ok(filter_record_batch(&batch, &keep)?)
    }

    /// The right columns of the pending output: the picks' rows, NULLs where none.
    fn right_columns(&self) -> Result<Vec<ArrayRef>> {
        let first_pick = self.picks.iter().flatten().next();
        if let Some(first) = first_pick
            && let Source::Rows { partition, .. } = &self.right_row(*first).source
        {
            // Late materialization: the winners' rows of the sorted partition.
            let positions = self
                .picks
                .iter()
                .map(|p| match p {
                    None => Ok(None),
                    Some(r) => match &self.right_row(*r).source {
                        Source::Rows { start, .. } => Ok(Some((start + r.row) as u32)),
                        Source::Batch(_) => internal_err!("right batches of two kinds"),
                    },
                })
                .collect::<Result<UInt32Array>>()?;
            return partition.take_columns(&positions);
        }

        // Source 0 is the NULL row; right batch b is source 1 + b - first.
        let first = self.picks.iter().flatten().next().map_or(0, |p| p.batch);
        let last = self.picks.iter().flatten().last().map_or(0, |p| p.batch);
        let indices: Vec<(usize, usize)> = self
            .picks
            .iter()
            .map(|p| match p {
                Some(r) => (1 + r.batch - first, r.row),
                None => (0, 0),
            })
            .collect();
        let mut columns = Vec::with_capacity(self.null_right.len());
        for (c, null) in self.null_right.iter().enumerate() {
            let mut sources: Vec<&dyn Array> = vec![null.as_ref()];
            if first_pick.is_some() {
                for b in first..=last {
                    sources.push(
                        self.right_row(RowRef { batch: b, row: 0 })
                            .source
                            .cell(c, 0)
                            .0,
                    );
                }
            }
            columns.push(interleave(&sources, &indices)?);
        }
        Ok(columns)
    }

    fn start_left(&mut self, batch: RecordBatch) -> Result<()> {
        self.metrics.left_rows.add(batch.num_rows());
        let arrays = self.left_exprs.evaluate(&batch)?;
        let keyed = self.keyed(Source::Batch(batch), arrays)?;
        if let Some(old) = self.left.replace(keyed) {
            self.reservation.shrink(old.memory_size());
            if self.spec.distinct_spine && old.num_rows() > 0 {
                let last = old.num_rows() - 1;
                let keys = old.keys.as_ref().map(|k| k.owned(last));
                let time = old.time.is_valid(last).then(|| old.time.value(last));
                self.last_left = Some((keys, time));
            }
        }
        let size = self.left.as_ref().expect("just set").memory_size();
        self.grow(size)?;
        self.left_row = 0;
        self.emit_from = 0;
        Ok(())
    }

    fn push_right(&mut self, source: Source, arrays: JoinArrays) -> Result<()> {
        let keyed = self.keyed(source, arrays)?;
        self.metrics.right_rows.add(keyed.num_rows());
        self.grow(keyed.memory_size())?;
        self.right.push_back(keyed);
        Ok(())
    }

    fn grow(&mut self, bytes: usize) -> Result<()> {
        self.reservation.try_grow(bytes)?;
        self.metrics.peak_mem_used.set_max(self.reservation.size());
        Ok(())
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
                        self.reservation.free();
                        return Poll::Ready(None);
                    }
                },
                State::Merging => {
                    let elapsed = self.metrics.baseline.elapsed_compute().clone();
                    let _timer = elapsed.timer();
                    match self.merge()? {
                        Step::NeedRight(flush) => {
                            self.state = State::PullRight;
                            if let Some(batch) = flush {
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
                            self.right_done = true;
                            self.state = State::Merging;
                        }
                    }
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}

/// Tie-breaker values as `i64`, comparable within one column: the domain a column shares
/// with itself.
fn tie_values(array: &ArrayRef) -> Result<Int64Array> {
    let data_type = array.data_type();
    match TimeDomain::common(data_type, data_type) {
        Some(domain) => domain.to_i64(array),
        None => internal_err!("tie-breaker of type {data_type} passed planning"),
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
        Arc::clone(&self.spec.schema)
    }
}
