//! Micro-benchmark of the ASOF operator alone: pre-built, pre-sorted Arrow batches in
//! memory, no Parquet decoding, so a change to the merge loop (`physical/asof_join/`) can
//! be measured by itself.
//!
//! `cargo bench -p hindcast --bench asof_operator [-- LEFT_ROWS RIGHT_ROWS KEYS]`
//! (default 1M left rows, 10M right rows, 100k keys). Three plans are timed:
//! - `operator`: one partition, inputs declared sorted on (key, time), so the plan is the
//!   join over two memory scans and nothing else (checked before timing);
//! - `KeyTimeSort + operator`: the rows in time order (as a feature log is written) on 4
//!   partitions, so they are repartitioned by key and sorted first, by hindcast's sort;
//! - `SortExec + operator`: the same with DataFusion's `SortExec` (what hindcast uses
//!   under a memory limit; a finite pool of 1 TB here, so nothing spills).
//!
//! The right side carries five feature columns (four numbers and a string), as a feature
//! table does, and the query reads them all: how much of them the plans copy is part of
//! what is measured. Each prints the median of 5 runs after one warm-up, and the answer it
//! checked: the number of matched rows and the sum of the winners' `v` (each right row's
//! position in (key, time) order) equal those computed here by a second, independent pass.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::Result;
use datafusion::datasource::MemTable;
use datafusion::execution::memory_pool::GreedyMemoryPool;
use datafusion::logical_expr::{SortExpr, col};
use datafusion::prelude::SessionConfig;
use hindcast::Hindcast;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BATCH: usize = 8192;
const CATEGORIES: [&str; 5] = ["groceries", "travel", "electronics", "books", "fashion"];
const TTL_MICROS: i64 = 90 * 86_400_000_000;

#[tokio::main]
async fn main() -> Result<()> {
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let left_rows = numbers.first().copied().unwrap_or(1_000_000);
    let right_rows = numbers.get(1).copied().unwrap_or(10_000_000);
    let keys = numbers.get(2).copied().unwrap_or(100_000) as i64;

    let span = 730 * 86_400_000_000i64;
    let left = sorted_rows(left_rows, keys, span, 1);
    let right = sorted_rows(right_rows, keys, span, 2);
    let expected = matched_by_brute_merge(&left, &right);

    let plans = [
        ("operator", 1, true, false),
        ("KeyTimeSort + operator", 4, false, false),
        ("SortExec + operator", 4, false, true),
    ];
    for (name, partitions, sorted, finite_pool) in plans {
        let hc = session(partitions, finite_pool);
        register(&hc, "l", &left, partitions, sorted)?;
        register(&hc, "r", &right, partitions, sorted)?;
        let sql = "SELECT count(r.v) AS matched, sum(r.v) AS v, sum(r.a), sum(r.b), sum(r.c), \
                   count(r.cat) FROM l ASOF JOIN r \
                   MATCH_CONDITION (l.ts >= r.ts AND l.ts - r.ts <= INTERVAL '90 days') \
                   ON l.k = r.k";
        if sorted {
            let plan = hc.sql(&format!("EXPLAIN {sql}")).await?.collect().await?;
            let text = datafusion::arrow::util::pretty::pretty_format_batches(&plan)?.to_string();
            assert!(
                !text.contains("SortExec"),
                "the operator-only plan sorts:\n{text}"
            );
        }
        let mut times = vec![];
        for run in 0..6 {
            let start = Instant::now();
            let batches = hc.sql(sql).await?.collect().await?;
            let elapsed = start.elapsed().as_secs_f64();
            let matched = batches[0]
                .column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("count is Int64")
                .value(0) as usize;
            let v_sum = batches[0]
                .column(1)
                .as_any()
                .downcast_ref::<Float64Array>()
                .expect("sum of a Float64 is Float64")
                .value(0);
            assert_eq!((matched, v_sum), expected, "{name}: wrong answer");
            if run > 0 {
                times.push(elapsed);
            }
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "{name:>22}: {median:.3} s median of 5 ({:.1} M right rows/s), {left_rows} x {right_rows} rows, \
             {keys} keys, {partitions} partition(s), matched {}",
            right_rows as f64 / median / 1e6,
            expected.0
        );
    }
    Ok(())
}

/// (key, time) pairs in (key, time) order, with a value column; times unique per key.
struct Rows {
    keys: Vec<i64>,
    times: Vec<i64>,
}

fn sorted_rows(n: usize, keys: i64, span: i64, seed: u64) -> Rows {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut pairs: Vec<(i64, i64)> = (0..n as u64)
        .map(|i| {
            let h: u64 = rng.random();
            let key = (h % keys as u64) as i64;
            // Unique times (distinct i) so no tie decides the answer.
            let time = ((h >> 20) as i64 % (span / n as i64)) * n as i64 + i as i64;
            (key, time)
        })
        .collect();
    pairs.sort_unstable();
    Rows {
        keys: pairs.iter().map(|p| p.0).collect(),
        times: pairs.iter().map(|p| p.1).collect(),
    }
}

/// Left rows with a right row of the same key at or before them, within the TTL, and the
/// sum of those right rows' positions: a plain merge over the sorted vectors, independent
/// of the operator.
fn matched_by_brute_merge(left: &Rows, right: &Rows) -> (usize, f64) {
    let mut j = 0;
    let mut matched = 0;
    let mut positions = 0.0;
    for (&k, &t) in left.keys.iter().zip(&left.times) {
        while j < right.keys.len() && (right.keys[j], right.times[j]) <= (k, t) {
            j += 1;
        }
        if j > 0 && right.keys[j - 1] == k && t - right.times[j - 1] <= TTL_MICROS {
            matched += 1;
            positions += (j - 1) as f64;
        }
    }
    (matched, positions)
}

fn session(partitions: usize, finite_pool: bool) -> Hindcast {
    let mut config = SessionConfig::new()
        .with_target_partitions(partitions)
        .with_batch_size(BATCH);
    // No bounds pushdown: its SpineBoundsExec needs a sort above it to see the whole spine
    // before the feature side opens, and in memory there is nothing to prune.
    config
        .options_mut()
        .optimizer
        .enable_join_dynamic_filter_pushdown = false;
    let mut runtime = hindcast::storage::runtime_env_builder();
    if finite_pool {
        runtime = runtime.with_memory_pool(Arc::new(GreedyMemoryPool::new(1 << 40)));
    }
    let runtime = runtime.build_arc().expect("runtime");
    Hindcast::new_with_config_rt(config, runtime)
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("v", DataType::Float64, false),
        Field::new("a", DataType::Int64, false),
        Field::new("b", DataType::Float64, false),
        Field::new("c", DataType::Int64, false),
        Field::new("cat", DataType::Utf8, false),
    ]))
}

fn register(hc: &Hindcast, name: &str, rows: &Rows, partitions: usize, sorted: bool) -> Result<()> {
    let schema = schema();
    let batches: Vec<RecordBatch> = (0..rows.keys.len())
        .step_by(BATCH)
        .map(|start| {
            let end = (start + BATCH).min(rows.keys.len());
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from(rows.keys[start..end].to_vec())),
                    Arc::new(TimestampMicrosecondArray::from(
                        rows.times[start..end].to_vec(),
                    )),
                    Arc::new(Float64Array::from_iter_values(
                        (start..end).map(|i| i as f64),
                    )),
                    Arc::new(Int64Array::from_iter_values(
                        (start..end).map(|i| i as i64 % 90),
                    )),
                    Arc::new(Float64Array::from_iter_values(
                        (start..end).map(|i| (i % 1000) as f64 * 0.5),
                    )),
                    Arc::new(Int64Array::from_iter_values(
                        (start..end).map(|i| i as i64 * 7),
                    )),
                    Arc::new(StringArray::from_iter_values(
                        (start..end).map(|i| CATEGORIES[i % CATEGORIES.len()]),
                    )),
                ],
            )
        })
        .collect::<std::result::Result<_, _>>()?;
    // Sorted: one partition holding the batches in (key, time) order. Unsorted: in time
    // order, round-robin over partitions, so the plan must repartition and sort.
    let batches = if sorted {
        batches
    } else {
        let all = datafusion::arrow::compute::concat_batches(&schema, &batches)?;
        let order = datafusion::arrow::compute::sort_to_indices(all.column(1), None, None)?;
        let all = datafusion::arrow::compute::take_record_batch(&all, &order)?;
        (0..all.num_rows())
            .step_by(BATCH)
            .map(|start| all.slice(start, BATCH.min(all.num_rows() - start)))
            .collect()
    };
    let mut parts = vec![vec![]; partitions];
    for (i, batch) in batches.into_iter().enumerate() {
        parts[i % partitions].push(batch);
    }
    let mut table = MemTable::try_new(schema, parts)?;
    if sorted {
        table = table.with_sort_order(vec![vec![
            SortExpr::new(col("k"), true, false),
            SortExpr::new(col("ts"), true, false),
        ]]);
    }
    hc.session_context().register_table(name, Arc::new(table))?;
    Ok(())
}
