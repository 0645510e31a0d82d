//! [`Events`]: the right side's rows the windows still reach, in sorted order, each batch
//! with its columns in the forms the accumulators read.

use std::collections::VecDeque;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::Result;
use datafusion::physical_expr::PhysicalExprRef;

use crate::features::AggregateFunction;
use crate::physical::asof_join::keyed::{KeyFormat, Keys};
use crate::time::TimeDomain;

/// An aggregate's argument in the form its accumulator reads.
pub(super) enum Values {
    /// `count(*)`: no argument.
    None,
    /// The original column: its validity (count, last) and, for min, max and last, the
    /// values the output gathers.
    Column(ArrayRef),
    Int(Int64Array),
    Float(Float64Array),
    /// Arrow's row format (min, max, count distinct): compared and hashed as bytes.
    Rows(ArrayRef, Rows),
}

impl Values {
    pub fn is_valid(&self, row: usize) -> bool {
        match self {
            Values::None => true,
            Values::Column(a) | Values::Rows(a, _) => a.is_valid(row),
            Values::Int(a) => a.is_valid(row),
            Values::Float(a) => a.is_valid(row),
        }
    }

    /// The original column, for the output of min, max and last.
    pub fn column(&self) -> Option<&ArrayRef> {
        match self {
            Values::Column(a) | Values::Rows(a, _) => Some(a),
            _ => None,
        }
    }

    fn size(&self) -> usize {
        match self {
            // The column is the batch's (counted with it).
            Values::None | Values::Column(_) => 0,
            Values::Int(a) => a.len() * 8,
            Values::Float(a) => a.len() * 8,
            Values::Rows(_, rows) => rows.size(),
        }
    }
}

/// How one aggregate's argument is prepared.
pub(super) enum ValueForm {
    None,
    Column,
    Int,
    Float,
    Rows(RowConverter),
}

impl ValueForm {
    pub fn new(function: AggregateFunction, argument: Option<&DataType>) -> Result<Self> {
        use AggregateFunction::*;
        let Some(argument) = argument else {
            return Ok(ValueForm::None);
        };
        Ok(match function {
            CountRows => ValueForm::None,
            Count | Last => ValueForm::Column,
            Sum | Avg if argument.is_integer() => ValueForm::Int,
            Sum | Avg | StddevSamp | StddevPop | VarSamp | VarPop => ValueForm::Float,
            Min | Max | CountDistinct => {
                ValueForm::Rows(RowConverter::new(vec![SortField::new(argument.clone())])?)
            }
        })
    }

    fn prepare(&self, column: ArrayRef) -> Result<Values> {
        Ok(match self {
            ValueForm::None => Values::None,
            ValueForm::Column => Values::Column(column),
            ValueForm::Int => {
                let values = cast(&column, &DataType::Int64)?;
                Values::Int(
                    values
                        .as_any()
                        .downcast_ref::<Int64Array>()
                        .expect("cast")
                        .clone(),
                )
            }
            ValueForm::Float => {
                let values = cast(&column, &DataType::Float64)?;
                Values::Float(
                    values
                        .as_any()
                        .downcast_ref::<Float64Array>()
                        .expect("cast")
                        .clone(),
                )
            }
            ValueForm::Rows(converter) => {
                let rows = converter.convert_columns(std::slice::from_ref(&column))?;
                Values::Rows(column, rows)
            }
        })
    }
}

/// The bytes `batch`'s rows occupy. A sorted batch is often a slice of a larger one, whose
/// whole buffers `get_array_memory_size` would report for every slice, so a few held
/// slices would look like the whole sort's output and exhaust a memory limit.
pub(super) fn sliced_size(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| {
            c.to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| c.get_array_memory_size())
        })
        .sum()
}

/// One right batch and what the merge reads of it.
pub(super) struct EventBatch {
    /// Index of the batch's first row among all the partition's events.
    pub start: u64,
    pub keys: Option<Keys>,
    pub time: Int64Array,
    /// Rows with a NULL key or time: in no window.
    pub invalid: Option<NullBuffer>,
    /// The created times, when only created events count.
    pub created: Option<Int64Array>,
    /// One per aggregate.
    pub values: Vec<Values>,
    pub memory: usize,
}

impl EventBatch {
    pub fn valid(&self, row: usize) -> bool {
        self.invalid.as_ref().is_none_or(|n| n.is_valid(row))
    }

    pub fn len(&self) -> usize {
        self.time.len()
    }

    /// Whether the event of `row`, at or before `t`, has been created by `t`: always, unless
    /// only created events count.
    pub fn created_by(&self, row: usize, t: i64) -> bool {
        self.created
            .as_ref()
            .is_none_or(|c| c.is_valid(row) && c.value(row) <= t)
    }
}

/// The events of one partition from the oldest a window still reaches to the newest read.
/// Events are named by their index in the partition (`u64`), which never changes as batches
/// come and go.
pub(super) struct Events {
    batches: VecDeque<EventBatch>,
    /// Index one past the last event read.
    pub end: u64,
    /// The right input has no more rows.
    pub finished: bool,
}

/// Evaluates the right side's columns for [`Events::push`].
pub(super) struct EventColumns<'a> {
    pub keys: &'a [PhysicalExprRef],
    pub time: &'a PhysicalExprRef,
    pub created: Option<&'a PhysicalExprRef>,
    pub domain: TimeDomain,
    pub key_format: &'a KeyFormat,
    pub arguments: &'a [(Option<PhysicalExprRef>, ValueForm)],
}

impl Events {
    pub fn new() -> Self {
        Self {
            batches: VecDeque::new(),
            end: 0,
            finished: false,
        }
    }

    /// Add a right batch; returns the bytes it holds.
    pub fn push(&mut self, batch: &RecordBatch, columns: &EventColumns) -> Result<usize> {
        let keys = columns
            .keys
            .iter()
            .map(|k| k.evaluate(batch)?.into_array(batch.num_rows()))
            .collect::<Result<Vec<_>>>()?;
        let time = columns.time.evaluate(batch)?.into_array(batch.num_rows())?;
        let time = columns.domain.to_i64(&time)?;
        let mut invalid = time.nulls().cloned();
        for k in &keys {
            invalid = NullBuffer::union(invalid.as_ref(), k.logical_nulls().as_ref());
        }
        let values = columns
            .arguments
            .iter()
            .map(|(argument, form)| match argument {
                Some(argument) => {
                    form.prepare(argument.evaluate(batch)?.into_array(batch.num_rows())?)
                }
                None => Ok(Values::None),
            })
            .collect::<Result<Vec<_>>>()?;
        let created = columns
            .created
            .map(|c| {
                columns
                    .domain
                    .to_i64(&c.evaluate(batch)?.into_array(batch.num_rows())?)
            })
            .transpose()?;
        let keys = columns.key_format.convert(&keys)?;
        let memory = sliced_size(batch)
            + time.len() * 8
            + created.as_ref().map_or(0, |c| c.len() * 8)
            + keys.as_ref().map_or(0, Keys::size)
            + values.iter().map(Values::size).sum::<usize>();
        let rows = batch.num_rows() as u64;
        self.batches.push_back(EventBatch {
            start: self.end,
            keys,
            time,
            invalid,
            created,
            values,
            memory,
        });
        self.end += rows;
        Ok(memory)
    }

    /// The batch holding event `event` and the event's row in it.
    pub fn locate(&self, event: u64) -> (&EventBatch, usize) {
        let (position, row) = self.position(event);
        (&self.batches[position], row)
    }

    /// The position among the buffered batches of the one holding `event`, and its row.
    pub fn position(&self, event: u64) -> (usize, usize) {
        let position = self.batches.partition_point(|b| b.start <= event) - 1;
        let batch = &self.batches[position];
        (position, (event - batch.start) as usize)
    }

    pub fn batches(&self) -> impl Iterator<Item = &EventBatch> {
        self.batches.iter()
    }

    pub fn len(&self) -> usize {
        self.batches.len()
    }

    /// Drop the batches entirely before event `first`; returns the bytes freed.
    pub fn drop_before(&mut self, first: u64) -> usize {
        let mut freed = 0;
        while let Some(batch) = self.batches.front() {
            if batch.start + batch.len() as u64 > first {
                break;
            }
            freed += batch.memory;
            self.batches.pop_front();
        }
        freed
    }
}
