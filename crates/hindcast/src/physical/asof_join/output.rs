//! [`PendingOutput`]: the decided left rows of the current left batch that are not yet
//! emitted, with their winners, and how they become an output batch.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array, new_null_array,
};
use datafusion::arrow::compute::{filter_record_batch, interleave, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{Result, internal_err};

use super::input::Source;
use super::keyed::{Keyed, OwnedKeys};
use super::right_buffer::{RightBuffer, RowRef};

pub(super) struct PendingOutput {
    schema: SchemaRef,
    /// One all-NULL row per right column: the source of unmatched rows' right columns.
    null_right: Vec<ArrayRef>,
    keep_ties: bool,
    distinct_spine: bool,
    /// Rows without a winner are dropped.
    inner: bool,
    /// First left row of the current batch not yet emitted.
    emit_from: usize,
    /// Winners of rows `emit_from..`: one per row, or with `keep_ties` one per output row,
    /// for left row `pick_rows[i]` (kept with `keep_ties` only).
    picks: Vec<Option<RowRef>>,
    pick_rows: Vec<u32>,
    /// Distinct spine: which of rows `emit_from..` repeat the row before them.
    repeats: Vec<bool>,
    /// Distinct spine: keys and time of the previous left batch's last row.
    last_left: Option<(Option<OwnedKeys>, Option<i64>)>,
}

impl PendingOutput {
    pub fn new(
        schema: SchemaRef,
        right_schema: &SchemaRef,
        keep_ties: bool,
        distinct_spine: bool,
        inner: bool,
    ) -> Self {
        Self {
            schema,
            null_right: right_schema
                .fields()
                .iter()
                .map(|f| new_null_array(f.data_type(), 1))
                .collect(),
            keep_ties,
            distinct_spine,
            inner,
            emit_from: 0,
            picks: vec![],
            pick_rows: vec![],
            repeats: vec![],
            last_left: None,
        }
    }

    /// A new left batch starts; `previous` is the one before it, if any.
    pub fn begin_batch(&mut self, previous: Option<&Keyed>) {
        if self.distinct_spine
            && let Some(old) = previous
            && old.num_rows() > 0
        {
            let last = old.num_rows() - 1;
            let keys = old.keys.as_ref().map(|k| k.owned(last));
            let time = old.time.is_valid(last).then(|| old.time.value(last));
            self.last_left = Some((keys, time));
        }
        self.emit_from = 0;
    }

    /// Distinct spine: note whether left row `i` repeats the row before it. Called on each
    /// visit of the row; a row waiting for right input comes back, so an earlier visit's
    /// entry is dropped.
    pub fn mark_repeat(&mut self, left: &Keyed, i: usize) {
        let repeats = self.repeats_previous(left, i);
        self.repeats.truncate(i - self.emit_from);
        self.repeats.push(repeats);
    }

    /// Whether left row `i` has the keys and time of the row before it (NULLs equal, as in
    /// `PARTITION BY`). The input is sorted by keys then time, so such rows are adjacent.
    fn repeats_previous(&self, left: &Keyed, i: usize) -> bool {
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

    /// Record `pick` as an output row of left row `i`.
    pub fn push(&mut self, i: usize, pick: Option<RowRef>) {
        self.picks.push(pick);
        if self.keep_ties {
            self.pick_rows.push(i as u32);
        }
    }

    /// The oldest right batch a pending winner is in. (Winners come in right order for
    /// backward and forward joins, not for nearest ones.)
    pub fn first_pinned(&self) -> Option<usize> {
        self.picks.iter().flatten().map(|p| p.batch).min()
    }

    /// The output for left rows `emit_from..upto` of `left`.
    pub fn emit(&mut self, left: &Keyed, upto: usize, right: &RightBuffer) -> Result<RecordBatch> {
        let n = upto - self.emit_from;
        let mut columns: Vec<ArrayRef> = if self.keep_ties {
            let pick_rows = UInt32Array::from(std::mem::take(&mut self.pick_rows));
            take_record_batch(left.batch()?, &pick_rows)?
                .columns()
                .to_vec()
        } else {
            left.batch()?.slice(self.emit_from, n).columns().to_vec()
        };
        columns.extend(self.right_columns(right)?);
        self.emit_from = upto;
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        // The entry of a row still waiting for right input stays for the next output.
        let waiting = self.repeats.split_off(n.min(self.repeats.len()));
        let repeats = std::mem::replace(&mut self.repeats, waiting);
        let unmatched = self.inner && self.picks.iter().any(Option::is_none);
        let keep: Option<BooleanArray> = (unmatched || repeats.iter().any(|r| *r)).then(|| {
            // One pick per output row, one repeat flag per left row (never both kinds of
            // rows: repeats are marked only without `keep_ties`).
            (0..batch.num_rows())
                .map(|i| {
                    let repeat = repeats.get(i).copied().unwrap_or(false);
                    Some(!repeat && (!self.inner || self.picks[i].is_some()))
                })
                .collect()
        });
        self.picks.clear();
        match keep {
            Some(keep) => Ok(filter_record_batch(&batch, &keep)?),
            None => Ok(batch),
        }
    }

    /// The right columns of the pending output: the picks' rows, NULLs where none.
    fn right_columns(&self, right: &RightBuffer) -> Result<Vec<ArrayRef>> {
        let first_pick = self.picks.iter().flatten().next();
        if let Some(first) = first_pick
            && let Source::Rows { partition, .. } = &right.row(*first).source
        {
            // Late materialization: the winners' rows of the sorted partition.
            let positions = self
                .picks
                .iter()
                .map(|p| match p {
                    None => Ok(None),
                    Some(r) => match &right.row(*r).source {
                        Source::Rows { start, .. } => Ok(Some((start + r.row) as u32)),
                        Source::Batch(_) => internal_err!("right batches of two kinds"),
                    },
                })
                .collect::<Result<UInt32Array>>()?;
            return partition.take_columns(&positions);
        }

        // Source 0 is the NULL row; right batch b is source 1 + b - first.
        let first = self.first_pinned().unwrap_or(0);
        let last = self
            .picks
            .iter()
            .flatten()
            .map(|p| p.batch)
            .max()
            .unwrap_or(0);
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
                    sources.push(right.row(RowRef { batch: b, row: 0 }).source.cell(c, 0).0);
                }
            }
            columns.push(interleave(&sources, &indices)?);
        }
        Ok(columns)
    }
}
