//! [`Keyed`]: rows with their join columns in the forms the merge compares: keys in one
//! [`KeyFormat`] for both sides, times (and rank times) as `i64` in the join's time domain,
//! the tie-breaker as `i64`.

use std::cmp::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{OwnedRow, RowConverter, Rows, SortField};
use datafusion::common::{Result, internal_err};

use super::input::{JoinArrays, PartitionTie, Source, TieColumn, tie_values};
use crate::time::TimeDomain;

/// How the stream makes keys comparable: the same for both sides, so the merge compares
/// like with like.
pub(crate) enum KeyFormat {
    None,
    /// One key of an integer-backed type (integers, timestamps, dates), the same on both
    /// sides: compared as `i64` in its own order, without the cost of Arrow's row format
    /// (an encoding per batch and a byte comparison per step).
    Int(TimeDomain),
    /// Anything else: Arrow's row format, so multi-column keys compare as byte strings.
    Rows(RowConverter),
}

impl KeyFormat {
    pub fn new(left: &[DataType], right: &[DataType]) -> Result<Self> {
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

    pub fn convert(&self, keys: &[ArrayRef]) -> Result<Option<Keys>> {
        Ok(match self {
            KeyFormat::None => None,
            KeyFormat::Int(domain) => Some(Keys::Int(domain.to_i64(&keys[0])?)),
            KeyFormat::Rows(converter) => Some(Keys::Rows(converter.convert_columns(keys)?)),
        })
    }

    /// `source`'s rows with their join arrays converted; times in `domain`.
    pub(super) fn keyed(
        &self,
        source: Source,
        arrays: JoinArrays,
        domain: TimeDomain,
    ) -> Result<Keyed> {
        let time = domain.to_i64(&arrays.time)?;
        let mut invalid = time.nulls().cloned();
        for k in &arrays.keys {
            invalid = NullBuffer::union(invalid.as_ref(), k.logical_nulls().as_ref());
        }
        let keys = self.convert(&arrays.keys)?;
        let tie = match arrays.tie {
            None => None,
            Some(TieColumn::Rows(array)) => Some(Tie::Rows(tie_values(&array)?)),
            Some(TieColumn::Partition(tie, start)) => Some(Tie::Partition { tie, start }),
        };
        let rank = match &arrays.rank {
            Some(array) => {
                let rank = domain.to_i64(array)?;
                invalid = NullBuffer::union(invalid.as_ref(), rank.nulls());
                Some(rank)
            }
            None => None,
        };
        let mut keyed = Keyed {
            source,
            keys,
            time,
            tie,
            rank,
            invalid,
            memory: 0,
        };
        keyed.memory = keyed.measure();
        Ok(keyed)
    }
}

/// Join keys of a batch's rows in a comparable form, see [`KeyFormat`].
pub(crate) enum Keys {
    Int(Int64Array),
    Rows(Rows),
}

/// One row's keys, kept past its batch.
#[derive(PartialEq)]
pub(crate) enum OwnedKeys {
    Int(Option<i64>),
    Row(OwnedRow),
}

impl Keys {
    /// Row `i` of these keys against row `j` of `other`, NULLs first (the sort's order).
    pub fn cmp(&self, i: usize, other: &Keys, j: usize) -> Ordering {
        match (self, other) {
            (Keys::Int(a), Keys::Int(b)) => int_key(a, i).cmp(&int_key(b, j)),
            (Keys::Rows(a), Keys::Rows(b)) => a.row(i).cmp(&b.row(j)),
            _ => unreachable!("both sides' keys come from the stream's one KeyFormat"),
        }
    }

    pub fn owned(&self, i: usize) -> OwnedKeys {
        match self {
            Keys::Int(a) => OwnedKeys::Int(int_key(a, i)),
            Keys::Rows(rows) => OwnedKeys::Row(rows.row(i).owned()),
        }
    }

    pub fn size(&self) -> usize {
        match self {
            Keys::Int(a) => a.len() * size_of::<i64>(),
            Keys::Rows(rows) => rows.size(),
        }
    }
}

impl OwnedKeys {
    /// Whether row `i` of `keys` has these keys.
    pub fn is(&self, keys: &Keys, i: usize) -> bool {
        match (self, keys) {
            (OwnedKeys::Int(key), Keys::Int(a)) => *key == int_key(a, i),
            (OwnedKeys::Row(key), Keys::Rows(rows)) => key.row() == rows.row(i),
            _ => false,
        }
    }
}

/// An integer key, `None` for NULL (which orders first, as in the sort).
fn int_key(keys: &Int64Array, i: usize) -> Option<i64> {
    keys.is_valid(i).then(|| keys.value(i))
}

/// The tie-breaker of a [`Keyed`] batch.
pub(super) enum Tie {
    Rows(Int64Array),
    /// The rows of a partition from sorted position `start` on.
    Partition {
        tie: Arc<PartitionTie>,
        start: usize,
    },
}

/// Rows with their join columns evaluated once.
pub(super) struct Keyed {
    pub source: Source,
    /// `None` without keys.
    pub keys: Option<Keys>,
    pub time: Int64Array,
    /// Right side only: the tie-breaker in a comparable form.
    pub tie: Option<Tie>,
    /// Right side only: the rank time (see `JoinMode::LatestVisibleBy`) in the time domain.
    pub rank: Option<Int64Array>,
    /// Rows with a NULL key or time are invalid: they never match.
    pub invalid: Option<NullBuffer>,
    /// See [`Keyed::memory_size`].
    memory: usize,
}

impl Keyed {
    pub fn valid(&self, row: usize) -> bool {
        self.invalid.as_ref().is_none_or(|n| n.is_valid(row))
    }

    pub fn num_rows(&self) -> usize {
        self.time.len()
    }

    /// The time of row `row` (meaningful where the row is valid).
    pub fn time(&self, row: usize) -> i64 {
        self.time.value(row)
    }

    /// The tie-breaker of row `row` (`None` for NULL); `None` for all rows without one.
    pub fn tie(&self, row: usize) -> Option<Option<i64>> {
        Some(match self.tie.as_ref()? {
            Tie::Rows(values) => values.is_valid(row).then(|| values.value(row)),
            Tie::Partition { tie, start } => tie.value(start + row),
        })
    }

    /// The rows' columns (left side), an error for rows of a sorted partition.
    pub fn batch(&self) -> Result<&RecordBatch> {
        match &self.source {
            Source::Batch(batch) => Ok(batch),
            Source::Rows { .. } => internal_err!("the ASOF join's left rows are batches"),
        }
    }

    /// The memory the merge holds for these rows: the batch (a sorted partition's rows are
    /// its sort's), plus the join arrays made from it (keys in their comparable form, times,
    /// tie-breaker, rank time), as DataFusion's sort-merge join counts its own. An `i64`
    /// array that is the batch's own column (an `Int64` key, a time already in the domain's
    /// unit) is not counted twice. Arrays are counted by length: a time may be a slice of
    /// the partition's column, whose buffer Arrow would report whole.
    pub fn memory_size(&self) -> usize {
        self.memory
    }

    fn measure(&self) -> usize {
        let batch = match &self.source {
            Source::Batch(batch) => Some(batch),
            Source::Rows { .. } => None,
        };
        // Whether `values` is one of the batch's column buffers, shared rather than copied.
        let in_batch = |values: &Int64Array| {
            batch.is_some_and(|batch| {
                batch.columns().iter().any(|column| {
                    column
                        .to_data()
                        .buffers()
                        .first()
                        .is_some_and(|buffer| buffer.ptr_eq(values.values().inner()))
                })
            })
        };
        let own = |values: &Int64Array| match in_batch(values) {
            true => 0,
            false => values.len() * size_of::<i64>(),
        };
        let keys = match &self.keys {
            Some(Keys::Int(values)) => own(values),
            Some(rows @ Keys::Rows(_)) => rows.size(),
            None => 0,
        };
        let tie = match &self.tie {
            Some(Tie::Rows(values)) => own(values),
            _ => 0,
        };
        batch.map_or(0, |b| b.get_array_memory_size())
            + keys
            + own(&self.time)
            + tie
            + self.rank.as_ref().map_or(0, own)
    }
}
