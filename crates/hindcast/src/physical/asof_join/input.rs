//! How rows enter the merge: a batch, or a stretch of a sorted partition, with the join's
//! expressions evaluated on it ([`JoinArrays`]).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::compute::take;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_expr::PhysicalExprRef;
use datafusion::physical_expr::expressions::Column;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::logical::AsOfJoinOptions;
use crate::physical::key_time_sort::{Sorted, SortedPartition};
use crate::time::TimeDomain;

/// The right input of the merge.
pub(crate) enum RightInput {
    /// Batches sorted by `(keys, time)`.
    Batches(SendableRecordBatchStream),
    /// One sorted partition, not yet gathered where it is in memory: see [`Source::Rows`].
    Unmaterialized(BoxFuture<'static, Result<Sorted>>),
}

/// Where the output columns of some rows are.
pub(super) enum Source {
    Batch(RecordBatch),
    /// Late materialization: the sorted partition's rows from sorted position `start` on.
    /// The merge reads only the join columns, in sorted order; every other column is
    /// gathered for the winning rows alone, when output. A feature table has many more
    /// rows than win, so this saves gathering each feature column of every row.
    Rows {
        partition: Arc<SortedPartition>,
        start: usize,
    },
}

impl Source {
    /// Column `c` and the position in it of row `row`.
    pub fn cell(&self, c: usize, row: usize) -> (&ArrayRef, usize) {
        match self {
            Source::Batch(batch) => (batch.column(c), row),
            Source::Rows { partition, start } => partition.cell(c, start + row),
        }
    }
}

/// The join's expressions on one side: keys, time and, on the right, the tie-breaker and
/// rank time.
#[derive(Clone)]
pub(super) struct JoinExprs {
    keys: Vec<PhysicalExprRef>,
    time: PhysicalExprRef,
    tie: Option<PhysicalExprRef>,
    rank: Option<PhysicalExprRef>,
}

impl JoinExprs {
    pub fn left(options: &AsOfJoinOptions<PhysicalExprRef>) -> Self {
        Self {
            keys: options.left_keys().cloned().collect(),
            time: Arc::clone(&options.left_time),
            tie: None,
            rank: None,
        }
    }

    pub fn right(options: &AsOfJoinOptions<PhysicalExprRef>) -> Self {
        Self {
            keys: options.right_keys().cloned().collect(),
            time: Arc::clone(&options.right_time),
            tie: options.tie_breaker.clone(),
            rank: options.rank_time().cloned(),
        }
    }

    pub fn evaluate(&self, batch: &RecordBatch) -> Result<JoinArrays> {
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

/// [`JoinExprs`] evaluated on some rows.
pub(super) struct JoinArrays {
    pub keys: Vec<ArrayRef>,
    pub time: ArrayRef,
    pub tie: Option<TieColumn>,
    pub rank: Option<ArrayRef>,
}

/// The tie-breaker of some right rows.
pub(super) enum TieColumn {
    /// One value per row.
    Rows(ArrayRef),
    /// A sorted partition's rows from sorted position `start` on: see [`PartitionTie`].
    Partition(Arc<PartitionTie>, usize),
}

/// The tie-breaker of all of a sorted partition's rows, comparable, in the order of its
/// column. It is read only where two rows tie on keys and time, which is rare: gathering
/// it into sorted order for every row (as the keys and time are) was wasted work.
pub(super) struct PartitionTie {
    partition: Arc<SortedPartition>,
    values: Int64Array,
    /// Whether `values` are in sorted order (the tie-breaker is a sort column).
    in_order: bool,
}

impl PartitionTie {
    /// The value of the row at sorted position `i`, `None` for NULL.
    pub fn value(&self, i: usize) -> Option<i64> {
        let i = match self.in_order {
            true => i,
            false => self.partition.input_row(i),
        };
        self.values.is_valid(i).then(|| self.values.value(i))
    }
}

/// Tie-breaker values as `i64`, comparable within one column: the domain a column shares
/// with itself.
pub(super) fn tie_values(array: &ArrayRef) -> Result<Int64Array> {
    let data_type = array.data_type();
    match TimeDomain::common(data_type, data_type) {
        Some(domain) => domain.to_i64(array),
        None => internal_err!("tie-breaker of type {data_type} passed planning"),
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

/// The right rows as the merge reads them, a batch at a time (`batch_size` rows of a
/// sorted partition), with their join arrays.
pub(super) fn right_rows(
    input: RightInput,
    exprs: JoinExprs,
    batch_size: usize,
) -> BoxStream<'static, Result<(Source, JoinArrays)>> {
    match input {
        RightInput::Batches(batches) => batch_rows(batches, exprs),
        RightInput::Unmaterialized(sorted) => futures::stream::once(sorted)
            .and_then(move |sorted| {
                let exprs = exprs.clone();
                async move {
                    let sorted = match sorted {
                        Sorted::InMemory(sorted) => Arc::new(sorted),
                        // Merged from spilled runs: every column is gathered already.
                        Sorted::Merged(batches) => return Ok(batch_rows(batches, exprs)),
                    };
                    let columns = PartitionArrays::new(&exprs, &sorted)?;
                    let starts = (0..sorted.num_rows()).step_by(batch_size);
                    Ok(futures::stream::iter(starts)
                        .map(move |start| {
                            let len = batch_size.min(sorted.num_rows() - start);
                            let arrays = columns.get(&sorted, start, len)?;
                            let partition = Arc::clone(&sorted);
                            Ok((Source::Rows { partition, start }, arrays))
                        })
                        .boxed())
                }
            })
            .try_flatten()
            .boxed(),
    }
}

/// Sorted batches as the merge reads them, with their join arrays.
fn batch_rows(
    batches: SendableRecordBatchStream,
    exprs: JoinExprs,
) -> BoxStream<'static, Result<(Source, JoinArrays)>> {
    batches
        .try_filter(|b| futures::future::ready(b.num_rows() > 0))
        .map(move |batch| {
            let batch = batch?;
            let arrays = exprs.evaluate(&batch)?;
            Ok((Source::Batch(batch), arrays))
        })
        .boxed()
}
