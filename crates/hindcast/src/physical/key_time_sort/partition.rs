//! [`SortedPartition`]: one partition's rows and the order that sorts them by
//! `(keys, time)`, gathered only as a parent asks.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, Int64Array, RecordBatch, UInt32Array, new_empty_array, new_null_array,
};
use datafusion::arrow::compute::{
    SortColumn, SortOptions, cast, concat, concat_batches, interleave, lexsort_to_indices, take,
};
use datafusion::arrow::datatypes::{DataType, Date32Type, SchemaRef};
use datafusion::common::{Result, exec_err};
use datafusion::execution::memory_pool::MemoryReservation;
use datafusion::physical_expr::PhysicalExprRef;
use datafusion::physical_expr::expressions::Column;

use super::radix::key_time_order;
use super::{CHUNK_BITS, CHUNK_ROWS};

/// A partition's rows and the order that sorts them.
///
/// The rows stay in the chunks they arrived in (at most [`CHUNK_ROWS`] rows each), not
/// concatenated: concatenating copied every column once more and faulted in as much new
/// memory again. The sort's key and time columns are produced in sorted order on the way
/// (gathering them again would read at random); the chunks keep the other columns.
pub struct SortedPartition {
    schema: SchemaRef,
    /// Where each column of `schema` is.
    columns: Vec<Located>,
    /// The input, in order, projected to the columns in chunks.
    chunks: Vec<RecordBatch>,
    /// The input row number of each chunk's first row.
    chunk_starts: Vec<usize>,
    /// The rows' codes (`chunk << 16 | row`), in sorted order.
    order: UInt32Array,
    /// The memory of the rows, accounted until they are dropped.
    _reservation: Option<MemoryReservation>,
}

/// Where a column of a [`SortedPartition`] is.
enum Located {
    /// Whole, in sorted order (the sort produced it).
    Sorted(ArrayRef),
    /// This column of every chunk, in input order.
    Chunks(usize),
}

impl SortedPartition {
    /// The partition's rows (`batches`) sorted by `exprs` ascending, NULLs first.
    pub(super) fn sort(
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
        exprs: &[PhysicalExprRef],
    ) -> Result<Self> {
        sort_order(schema, batches, exprs)
    }

    /// `chunks` (each at most `CHUNK_ROWS` rows) sorted by `order`; `sorted[c]` is column
    /// `c` in sorted order where the sort produced it.
    fn new(
        schema: SchemaRef,
        chunks: Vec<RecordBatch>,
        mut sorted: Vec<Option<ArrayRef>>,
        order: UInt32Array,
    ) -> Result<Self> {
        sorted.resize(schema.fields().len(), None);
        let kept: Vec<usize> = (0..sorted.len()).filter(|&c| sorted[c].is_none()).collect();
        let mut next_chunk_column = 0..;
        let columns = sorted
            .into_iter()
            .map(|s| match s {
                Some(array) => Located::Sorted(array),
                None => Located::Chunks(next_chunk_column.next().expect("unbounded")),
            })
            .collect();
        let chunks = chunks
            .iter()
            .map(|chunk| Ok(chunk.project(&kept)?))
            .collect::<Result<Vec<_>>>()?;
        let chunk_starts = chunks
            .iter()
            .scan(0, |start, chunk| {
                let this = *start;
                *start += chunk.num_rows();
                Some(this)
            })
            .collect();
        Ok(Self {
            schema,
            columns,
            chunks,
            chunk_starts,
            order,
            _reservation: None,
        })
    }

    /// Keep `reservation` (the rows' memory) until the rows are dropped.
    pub(super) fn hold(&mut self, reservation: MemoryReservation) {
        self._reservation = Some(reservation);
    }

    /// The memory the sort added to the rows: the order and the columns it produced.
    pub(super) fn sort_memory(&self) -> usize {
        let sorted: usize = self
            .columns
            .iter()
            .map(|c| match c {
                Located::Sorted(array) => array.get_array_memory_size(),
                Located::Chunks(_) => 0,
            })
            .sum();
        sorted + self.order.get_array_memory_size()
    }

    pub fn num_rows(&self) -> usize {
        self.order.len()
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Chunk and row of the row at sorted position `i`.
    fn locate(&self, i: usize) -> (usize, usize) {
        let code = self.order.value(i) as usize;
        (code >> CHUNK_BITS, code & (CHUNK_ROWS - 1))
    }

    /// Column `c` and the position in it of the row at sorted position `i`.
    pub fn cell(&self, c: usize, i: usize) -> (&ArrayRef, usize) {
        match &self.columns[c] {
            Located::Sorted(array) => (array, i),
            Located::Chunks(column) => {
                let (chunk, row) = self.locate(i);
                (self.chunks[chunk].column(*column), row)
            }
        }
    }

    /// Every column at the sorted positions `positions` (NULL where a position is NULL).
    pub fn take_columns(&self, positions: &UInt32Array) -> Result<Vec<ArrayRef>> {
        let indices = self.interleave_indices(positions.iter().map(|p| p.map(|i| i as usize)));
        (0..self.schema.fields().len())
            .map(|c| match &self.columns[c] {
                Located::Sorted(array) => Ok(take(array.as_ref(), positions, None)?),
                Located::Chunks(column) => self.interleave_column(c, *column, &indices),
            })
            .collect()
    }

    /// Column `c` of the sorted rows `start..start + len`.
    pub fn column(&self, c: usize, start: usize, len: usize) -> Result<ArrayRef> {
        match &self.columns[c] {
            Located::Sorted(array) => Ok(array.slice(start, len)),
            Located::Chunks(column) => {
                let indices = self.interleave_indices((start..start + len).map(Some));
                self.interleave_column(c, *column, &indices)
            }
        }
    }

    /// The sorted rows `start..start + len`.
    pub fn batch(&self, start: usize, len: usize) -> Result<RecordBatch> {
        // The rows' chunk positions are found once for all columns.
        let indices = self.interleave_indices((start..start + len).map(Some));
        let columns = (0..self.schema.fields().len())
            .map(|c| match &self.columns[c] {
                Located::Sorted(array) => Ok(array.slice(start, len)),
                Located::Chunks(column) => self.interleave_column(c, *column, &indices),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema(), columns)?)
    }

    /// `interleave` indices of the rows at sorted positions `positions` into
    /// [`Self::interleave_column`]'s sources: source 0 is a NULL row (for `None`), source
    /// `1 + k` chunk `k`.
    fn interleave_indices(
        &self,
        positions: impl Iterator<Item = Option<usize>>,
    ) -> Vec<(usize, usize)> {
        positions
            .map(|p| match p {
                Some(i) => {
                    let (chunk, row) = self.locate(i);
                    (1 + chunk, row)
                }
                None => (0, 0),
            })
            .collect()
    }

    /// Column `c` of the schema, column `column` of the chunks, gathered at `indices`.
    fn interleave_column(
        &self,
        c: usize,
        column: usize,
        indices: &[(usize, usize)],
    ) -> Result<ArrayRef> {
        let null = new_null_array(self.schema.field(c).data_type(), 1);
        let mut sources: Vec<&dyn Array> = vec![null.as_ref()];
        sources.extend(self.chunk_arrays(column));
        Ok(interleave(&sources, indices)?)
    }

    /// Column `column` of each chunk, in input order.
    fn chunk_arrays(&self, column: usize) -> Vec<&dyn Array> {
        self.chunks
            .iter()
            .map(|chunk| chunk.column(column).as_ref())
            .collect()
    }

    /// Whether column `c` is in sorted order (see [`Self::whole_column`]).
    pub fn in_order(&self, c: usize) -> bool {
        matches!(self.columns[c], Located::Sorted(_))
    }

    /// Column `c` whole: in sorted order if [`Self::in_order`], else in input order.
    pub fn whole_column(&self, c: usize) -> Result<ArrayRef> {
        match &self.columns[c] {
            Located::Sorted(array) => Ok(Arc::clone(array)),
            Located::Chunks(column) => {
                let arrays = self.chunk_arrays(*column);
                match arrays.as_slice() {
                    [] => Ok(new_empty_array(self.schema.field(c).data_type())),
                    _ => Ok(concat(&arrays)?),
                }
            }
        }
    }

    /// All rows in input order, for expressions over several columns; the sorted columns
    /// are put back (a scatter), so call it only when an expression needs it.
    pub fn input_order(&self) -> Result<RecordBatch> {
        let mut inverse = vec![0u32; self.num_rows()];
        for i in 0..self.num_rows() {
            inverse[self.input_row(i)] = i as u32;
        }
        let inverse = UInt32Array::from(inverse);
        let columns = (0..self.schema.fields().len())
            .map(|c| match &self.columns[c] {
                Located::Sorted(array) => Ok(take(array.as_ref(), &inverse, None)?),
                Located::Chunks(_) => self.whole_column(c),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema(), columns)?)
    }

    /// The input row number of the row at sorted position `i`.
    pub fn input_row(&self, i: usize) -> usize {
        let (chunk, row) = self.locate(i);
        self.chunk_starts[chunk] + row
    }

    /// The input row numbers of the sorted rows `start..start + len`.
    pub fn input_rows(&self, start: usize, len: usize) -> UInt32Array {
        (start..start + len)
            .map(|i| self.input_row(i) as u32)
            .collect()
    }
}

/// The partition's rows and the order of its rows by `exprs` ascending, NULLs first.
fn sort_order(
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    exprs: &[PhysicalExprRef],
) -> Result<SortedPartition> {
    let mut chunks: Vec<RecordBatch> = vec![];
    for batch in batches {
        for start in (0..batch.num_rows()).step_by(CHUNK_ROWS) {
            chunks.push(batch.slice(start, CHUNK_ROWS.min(batch.num_rows() - start)));
        }
    }
    // Chunk numbers take the 16 bits above the row's (`u32` codes); very many small
    // batches (tests use one-row batches) are concatenated first (see `general_order`).
    if chunks.len() > CHUNK_ROWS {
        let all = concat_batches(&schema, &chunks)?;
        if u32::try_from(all.num_rows()).is_err() {
            return exec_err!(
                "a partition of {} rows is more than the sort's 2^32; raise \
                 datafusion.execution.target_partitions so that each partition holds fewer",
                all.num_rows()
            );
        }
        drop(chunks);
        let chunks: Vec<RecordBatch> = (0..all.num_rows())
            .step_by(CHUNK_ROWS)
            .map(|start| all.slice(start, CHUNK_ROWS.min(all.num_rows() - start)))
            .collect();
        let columns = evaluate(exprs, &chunks)?;
        return general_order(schema, chunks, exprs, columns);
    }
    let columns = evaluate(exprs, &chunks)?;
    let Some(sorted) = key_time_order(&columns)? else {
        return general_order(schema, chunks, exprs, columns);
    };
    drop(columns);
    // The sorted key and time stand in for their columns when the expressions are plain
    // columns, so the partition holds no more than its rows.
    let mut sorted_columns = vec![None; schema.fields().len()];
    for (expr, values) in exprs.iter().zip([sorted.keys, sorted.times]) {
        if let Some(column) = expr.downcast_ref::<Column>() {
            let c = column.index();
            let data_type = schema.field(c).data_type();
            sorted_columns[c] = Some(restore(values, data_type)?);
        }
    }
    let order = UInt32Array::from(sorted.order);
    SortedPartition::new(schema, chunks, sorted_columns, order)
}

/// Each of `exprs` evaluated on each chunk.
fn evaluate(exprs: &[PhysicalExprRef], chunks: &[RecordBatch]) -> Result<Vec<Vec<ArrayRef>>> {
    exprs
        .iter()
        .map(|e| {
            chunks
                .iter()
                .map(|c| e.evaluate(c)?.into_array(c.num_rows()))
                .collect()
        })
        .collect()
}

/// The general path: any key types, any number of keys, at most [`CHUNK_ROWS`] chunks,
/// with `columns` the sort expressions evaluated on each chunk ([`evaluate`]). Only the
/// sort columns are concatenated (for Arrow's `lexsort`); the rows stay in their chunks,
/// as on the radix path, so the sort needs no second copy of the payload.
fn general_order(
    schema: SchemaRef,
    chunks: Vec<RecordBatch>,
    exprs: &[PhysicalExprRef],
    columns: Vec<Vec<ArrayRef>>,
) -> Result<SortedPartition> {
    let sort_columns = exprs
        .iter()
        .zip(columns)
        .map(|(e, arrays)| {
            let refs: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
            let values = match refs.as_slice() {
                [] => new_empty_array(&e.data_type(&schema)?),
                _ => concat(&refs)?,
            };
            Ok(SortColumn {
                values,
                options: Some(SortOptions {
                    descending: false,
                    nulls_first: true,
                }),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let indices = lexsort_to_indices(&sort_columns, None)?;
    drop(sort_columns);
    // Input row number to code: each chunk's rows in turn.
    let codes: Vec<u32> = chunks
        .iter()
        .enumerate()
        .flat_map(|(chunk, c)| {
            (0..c.num_rows() as u32).map(move |row| (chunk as u32) << CHUNK_BITS | row)
        })
        .collect();
    let order: UInt32Array = indices
        .values()
        .iter()
        .map(|&i| codes[i as usize])
        .collect();
    SortedPartition::new(schema, chunks, vec![], order)
}

/// The inverse of `radix::ordered`: `values` back in the column's type.
fn restore(values: Int64Array, data_type: &DataType) -> Result<ArrayRef> {
    Ok(match data_type {
        // `ordered` counts a date in seconds.
        DataType::Date32 => Arc::new(values.unary::<_, Date32Type>(|s| (s / 86_400) as i32)),
        _ => cast(&values, data_type)?,
    })
}
