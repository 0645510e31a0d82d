//! The pure parts of the key-time sort: a stable radix sort of row numbers by key, and the
//! per-key sort of nearly sorted times. No plans, no memory pool: testable on plain
//! vectors (`tests/sort_helpers.rs`).

use datafusion::arrow::array::builder::NullBufferBuilder;
use datafusion::arrow::array::{Array, ArrayRef, Int64Array};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;

use super::{CHUNK_BITS, CHUNK_ROWS};
use crate::time::TimeDomain;

/// [`key_time_order`]'s result: the order, and the key and time (as `i64` in their own
/// order, see `ordered`) in that order.
pub(super) struct KeyTimeOrder {
    pub order: Vec<u32>,
    pub keys: Int64Array,
    pub times: Int64Array,
}

/// A column as `i64` in its own order: the domain it shares with itself (instants in their
/// unit, integers as they are); `None` for other types. UInt64 beyond i64::MAX would not
/// convert.
pub(super) fn ordered(array: &ArrayRef) -> Result<Option<Int64Array>> {
    let data_type = array.data_type();
    match TimeDomain::common(data_type, data_type) {
        Some(domain) if *data_type != DataType::UInt64 => domain.to_i64(array).map(Some),
        _ => Ok(None),
    }
}

/// The order of the rows for one integer key and an integer-backed time (timestamps,
/// dates, integers), or `None` when the columns do not fit that shape.
///
/// Two steps, both cheap for the usual input, a feature log written in time order:
/// 1. a stable radix sort of the row numbers by key, which needs as many passes as the
///    key's range has 11-bit digits (two for 100k users) and keeps each key's rows in
///    their input order;
/// 2. a stable sort of each key's rows by time, which finds them already in order (or
///    nearly: a late correction) and costs one look at each.
///
/// A NULL key sorts first (as key 0, the others from 1), a NULL time first within its key
/// (as 0; a time equal to `i64::MIN` would tie with it, so then `None`).
pub(super) fn key_time_order(columns: &[Vec<ArrayRef>]) -> Result<Option<KeyTimeOrder>> {
    let [key_chunks, time_chunks] = columns else {
        return Ok(None);
    };
    let mut keys = Vec::with_capacity(key_chunks.len());
    let mut times = Vec::with_capacity(time_chunks.len());
    for (key, time) in key_chunks.iter().zip(time_chunks) {
        let (Some(key), Some(time)) = (ordered(key)?, ordered(time)?) else {
            return Ok(None);
        };
        keys.push(key);
        times.push(time);
    }
    let rows: usize = keys.iter().map(|k| k.len()).sum();
    if u32::try_from(rows).is_err() {
        return Ok(None);
    }
    let (key_min, key_max) = keys
        .iter()
        .filter_map(min_max)
        .fold((i64::MAX, i64::MIN), |(lo, hi), (l, h)| {
            (lo.min(l), hi.max(h))
        });
    let (key_min, key_max) = if key_min > key_max {
        (0, 0)
    } else {
        (key_min, key_max)
    };
    // Key ranks from 1 (0 is NULL); ranges past 32 bits take the general path.
    let Ok(key_range) = u32::try_from(key_max as i128 - key_min as i128 + 1) else {
        return Ok(None);
    };
    let has_min = |time: &Int64Array| match time.nulls() {
        None => time.values().contains(&i64::MIN),
        Some(nulls) => nulls.valid_indices().any(|i| time.value(i) == i64::MIN),
    };
    if times.iter().any(has_min) {
        return Ok(None);
    }
    // Each row as (key rank << 32 | row code): the radix passes read the key from the
    // element they move, not from a rank array in row order, so no pass reads at random.
    // (Carrying the time along too doubles the bytes each pass moves, which measured slower
    // than looking each time up once, after the passes.)
    let mut packed: Vec<u64> = Vec::with_capacity(rows);
    for (chunk, key) in keys.iter().enumerate() {
        let base = (chunk as u64) << CHUNK_BITS;
        packed.extend((0..key.len()).map(|i| {
            let rank = match key.is_null(i) {
                true => 0,
                false => (key.value(i) as i128 - key_min as i128 + 1) as u64,
            };
            (rank << 32) | base | i as u64
        }));
    }
    // The radix sort's spare buffer receives the times in key order: the one read at random
    // per row, in a loop of its own, so the processor overlaps the cache misses (done key by
    // key in the loop below, this read was most of the sort's time). A NULL time is 0,
    // below every flipped value (i64::MIN is out).
    let mut sorted_times = radix_sort_by_rank(&mut packed, bits(key_range as u128));
    let time_values: Vec<&[i64]> = times.iter().map(|t| t.values().as_ref()).collect();
    let time_nulls: Vec<Option<&NullBuffer>> = times.iter().map(|t| t.nulls()).collect();
    let any_null_time = time_nulls.iter().any(Option::is_some);
    for (t, &e) in sorted_times.iter_mut().zip(&packed) {
        let (chunk, row) = (
            (e as u32 >> CHUNK_BITS) as usize,
            e as usize & (CHUNK_ROWS - 1),
        );
        let valid = !any_null_time || time_nulls[chunk].is_none_or(|n| n.is_valid(row));
        *t = if valid {
            flip(time_values[chunk][row])
        } else {
            0
        };
    }
    // Each key's rows are usually in time order already; otherwise they are sorted, in
    // place.
    let mut order: Vec<u32> = Vec::with_capacity(rows);
    let mut sorted_keys: Vec<i64> = Vec::with_capacity(rows);
    let (mut group, mut main, mut late) = (vec![], vec![], vec![]);
    let mut start = 0;
    for run in packed.chunk_by(|a, b| a >> 32 == b >> 32) {
        let run_times = &mut sorted_times[start..start + run.len()];
        start += run.len();
        if run_times.is_sorted() {
            order.extend(run.iter().map(|&e| e as u32));
        } else {
            group.clear();
            group.extend(run_times.iter().zip(run).map(|(&t, &e)| (t, e as u32)));
            sort_nearly_sorted(&mut group, &mut main, &mut late);
            for (slot, &(t, row)) in run_times.iter_mut().zip(&group) {
                *slot = t;
                order.push(row);
            }
        }
        let key = (key_min as i128 + (run[0] >> 32) as i128 - 1) as i64;
        sorted_keys.extend(std::iter::repeat_n(key, run.len()));
    }
    drop(packed);
    // NULL keys have rank 0, so they are the first rows.
    let key_nulls: usize = keys.iter().map(|k| k.null_count()).sum();
    let key_nulls = (key_nulls > 0).then(|| {
        let mut nulls = NullBufferBuilder::new(rows);
        nulls.append_n_nulls(key_nulls);
        nulls.append_n_non_nulls(rows - key_nulls);
        nulls.finish()
    });
    let time_nulls =
        any_null_time.then(|| NullBuffer::from_iter(sorted_times.iter().map(|&t| t != 0)));
    // In place: the same allocation, now as i64.
    let sorted_times: Vec<i64> = sorted_times
        .into_iter()
        .map(|t| (t ^ (1 << 63)) as i64)
        .collect();
    Ok(Some(KeyTimeOrder {
        order,
        keys: Int64Array::new(sorted_keys.into(), key_nulls.flatten()),
        times: Int64Array::new(sorted_times.into(), time_nulls),
    }))
}

/// A stable sort by time of a key's rows, which are usually nearly in order: a late
/// correction or backfill sits after rows with later times, up to 30 days of them (for a
/// busy entity, tens of thousands of rows, so insertion sort is out).
/// The rows that keep up with the running maximum stay in order (`main`); the few others
/// (`late`) are sorted and merged in. A row of `main` comes before every row of `late` with
/// the same time (once the maximum passes a time, every later row with that time is late),
/// so taking `main` first on ties keeps the sort stable. O(n + k log k) for k late rows,
/// where a standard sort of every such run costs O(n log n).
pub fn sort_nearly_sorted(
    group: &mut [(u64, u32)],
    main: &mut Vec<(u64, u32)>,
    late: &mut Vec<(u64, u32)>,
) {
    main.clear();
    late.clear();
    let mut max = 0;
    for &e in group.iter() {
        if e.0 >= max {
            max = e.0;
            main.push(e);
        } else {
            late.push(e);
        }
    }
    late.sort_by_key(|&(t, _)| t);
    let (mut m, mut l) = (0, 0);
    for slot in group.iter_mut() {
        if l == late.len() || (m < main.len() && main[m].0 <= late[l].0) {
            *slot = main[m];
            m += 1;
        } else {
            *slot = late[l];
            l += 1;
        }
    }
}

/// The smallest and largest non-NULL value, in one pass; `None` when all are NULL.
fn min_max(values: &Int64Array) -> Option<(i64, i64)> {
    let fold = |(lo, hi): (i64, i64), v: i64| (lo.min(v), hi.max(v));
    let (lo, hi) = match values.nulls() {
        None => values
            .values()
            .iter()
            .copied()
            .fold((i64::MAX, i64::MIN), fold),
        Some(nulls) => nulls
            .valid_indices()
            .map(|i| values.value(i))
            .fold((i64::MAX, i64::MIN), fold),
    };
    (lo <= hi).then_some((lo, hi))
}

/// Bits needed to hold `v`.
fn bits(v: u128) -> u32 {
    128 - v.leading_zeros()
}

/// Stable least-significant-digit radix sort of `(rank << 32 | row)` elements by rank, 11
/// bits a pass (a 2048-entry histogram stays in L1). One read of the input counts every
/// pass's digits; passes where every row has the same digit are skipped. Returns the spare
/// buffer (as long as `packed`, its contents unspecified) for the caller to reuse.
pub fn radix_sort_by_rank(packed: &mut Vec<u64>, bits: u32) -> Vec<u64> {
    const DIGIT: u32 = 11;
    const MASK: u64 = (1 << DIGIT) - 1;
    let passes = bits.div_ceil(DIGIT) as usize;
    let digit = |e: u64, pass: usize| (((e >> 32) >> (pass as u32 * DIGIT)) & MASK) as usize;
    let mut counts = vec![[0usize; 1 << DIGIT]; passes];
    for &e in packed.iter() {
        for (pass, c) in counts.iter_mut().enumerate() {
            c[digit(e, pass)] += 1;
        }
    }
    let mut scratch = vec![0u64; packed.len()];
    for (pass, c) in counts.iter_mut().enumerate() {
        if c.contains(&packed.len()) {
            continue;
        }
        let mut next = 0;
        for slot in c.iter_mut() {
            let n = *slot;
            *slot = next;
            next += n;
        }
        for &e in packed.iter() {
            let d = digit(e, pass);
            scratch[c[d]] = e;
            c[d] += 1;
        }
        std::mem::swap(packed, &mut scratch);
    }
    scratch
}

/// A signed value as an unsigned one of the same order.
fn flip(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}
