//! Memory: a join whose right side is several times the memory limit must spill (in the
//! sorts feeding the operator) and still give the exact answer; the operator's own memory
//! stays a few batches on a sparse spine, and what it reports counts its join arrays.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, Int32Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{SortExpr, col};
use datafusion::physical_plan::{ExecutionPlan, collect};
use hindcast::Hindcast;
use hindcast::physical::AsOfJoinExec;
use hindcast::physical::asof_join::MAX_PINNED_RIGHT_BATCHES;
use hindcast::physical::key_time_sort::KeyTimeSortExec;

use crate::common::{repo_root, session};

/// Total spilled bytes over every operator of an executed plan.
pub fn spilled_bytes(plan: &Arc<dyn ExecutionPlan>) -> usize {
    let own = plan.metrics().and_then(|m| m.spilled_bytes()).unwrap_or(0);
    own + plan
        .children()
        .into_iter()
        .map(spilled_bytes)
        .sum::<usize>()
}

const KEYS: i64 = 1_000;
/// Feature rows per key, at times 0, 10, 20, ...
const ROWS_PER_KEY: i64 = 600;

/// The feature value of key `k` at time `t`: what the answer must carry.
fn value(k: i64, t: i64) -> i64 {
    k * 1_000_000 + t
}

/// Feature rows: key, time, value and a payload that makes them wide.
fn feature_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("t", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
        Field::new("payload", DataType::Utf8, false),
    ]))
}

fn right_side() -> MemTable {
    let schema = feature_schema();
    let payload = "x".repeat(64);
    let mut batches = vec![];
    // Interleave keys so the input is far from sorted.
    for step in 0..ROWS_PER_KEY {
        let t = ((step * 7919) % ROWS_PER_KEY) * 10;
        let k: Int64Array = (0..KEYS).collect();
        let ts: Int64Array = (0..KEYS).map(|_| t).collect();
        let v: Int64Array = (0..KEYS).map(|k| value(k, t)).collect();
        let p: StringArray = (0..KEYS).map(|_| Some(payload.as_str())).collect();
        batches.push(
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(k), Arc::new(ts), Arc::new(v), Arc::new(p)],
            )
            .expect("batch"),
        );
    }
    MemTable::try_new(schema, vec![batches]).expect("mem table")
}

/// Left rows at 10j + 5 for every tenth j, so the winner is the row at 10j.
fn left_side() -> MemTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("t", DataType::Int64, false),
    ]));
    let (mut ks, mut ts) = (vec![], vec![]);
    for k in 0..KEYS {
        for j in (0..ROWS_PER_KEY).step_by(10) {
            ks.push(k);
            ts.push(j * 10 + 5);
        }
    }
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from(ks)),
            Arc::new(Int64Array::from(ts)),
        ],
    )
    .expect("batch");
    MemTable::try_new(schema, vec![vec![batch]]).expect("mem table")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn right_side_larger_than_memory_spills_and_is_exact() {
    let limit = 16 * 1024 * 1024;
    let hc = session(8192, 2, Some(limit));
    let ctx = hc.session_context();
    ctx.register_table("l", Arc::new(left_side())).expect("l");
    ctx.register_table("r", Arc::new(right_side())).expect("r");

    let df = hc
        .sql("SELECT l.k, l.t, r.t AS rt, r.v FROM l ASOF JOIN r MATCH_CONDITION (l.t >= r.t) ON l.k = r.k")
        .await
        .expect("plan");
    let task_ctx = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await.expect("physical plan");
    let batches = collect(Arc::clone(&plan), task_ctx)
        .await
        .expect("runs within the limit");

    let mut rows = 0;
    for b in &batches {
        let k = b.column(0).as_primitive::<Int64Type>();
        let t = b.column(1).as_primitive::<Int64Type>();
        let rt = b.column(2).as_primitive::<Int64Type>();
        let v = b.column(3).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let expected_t = t.value(i) - 5;
            assert_eq!(
                rt.value(i),
                expected_t,
                "key {} at {}",
                k.value(i),
                t.value(i)
            );
            assert_eq!(v.value(i), value(k.value(i), expected_t));
            rows += 1;
        }
    }
    assert_eq!(
        rows as i64,
        KEYS * ROWS_PER_KEY / 10,
        "one output row per left row"
    );
    let spilled = right_sort_spilled_bytes(&plan);
    let right_size = KEYS as usize * ROWS_PER_KEY as usize * (8 + 8 + 8 + 64);
    assert!(
        right_size > 3 * limit,
        "the right side must be several times the limit"
    );
    assert!(
        spilled > 0,
        "a right side of {right_size} bytes under a {limit}-byte limit must spill"
    );
}

/// Bytes the key-time sort under the right side of the plan's first ASOF join spilled (0
/// where that sort is not hindcast's).
pub fn right_sort_spilled_bytes(plan: &Arc<dyn ExecutionPlan>) -> usize {
    if let Some(join) = plan.downcast_ref::<AsOfJoinExec>() {
        let right = join.right();
        return match right.downcast_ref::<KeyTimeSortExec>() {
            Some(_) => right.metrics().and_then(|m| m.spilled_bytes()).unwrap_or(0),
            None => 0,
        };
    }
    plan.children()
        .into_iter()
        .map(right_sort_spilled_bytes)
        .max()
        .unwrap_or(0)
}

/// `sql/asof_sort.slt`'s larger table spills in the key-time sort at the slt's memory limit,
/// as the file says. The statements are read from the file, so the two cannot drift apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asof_sort_slts_larger_table_spills_at_its_memory_limit() {
    let text = std::fs::read_to_string(repo_root().join("sql/asof_sort.slt")).expect("slt");
    let statement = |start: &str| {
        let at = text
            .find(start)
            .unwrap_or_else(|| panic!("{start} in asof_sort.slt"));
        let end = text[at..].find(';').expect("a statement ends");
        text[at..at + end].to_string()
    };
    let hc = session(8192, 4, Some(crate::slt::MEMORY_LIMIT));
    for start in [
        "SET datafusion.execution.batch_size",
        "CREATE TABLE big_r AS",
        "CREATE TABLE big_l AS",
    ] {
        hc.sql(&statement(start))
            .await
            .expect("plan")
            .collect()
            .await
            .expect("run");
    }
    let df = hc
        .sql(&statement("SELECT count(*), count(r.v),"))
        .await
        .expect("plan");
    let task_ctx = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await.expect("physical plan");
    collect(Arc::clone(&plan), task_ctx).await.expect("runs");
    assert!(
        right_sort_spilled_bytes(&plan) > 0,
        "asof_sort.slt's big_r no longer spills at the slt's limit"
    );
}

/// The `peak_mem_used` the ASOF join of an executed plan reports (summed over partitions).
fn join_peak_memory(plan: &Arc<dyn ExecutionPlan>) -> usize {
    if plan.downcast_ref::<AsOfJoinExec>().is_some() {
        let metrics = plan.metrics().expect("the join has metrics");
        return metrics
            .sum_by_name("peak_mem_used")
            .expect("peak_mem_used")
            .as_usize();
    }
    plan.children().into_iter().map(join_peak_memory).sum()
}

/// One key's feature rows at times `0..rows`, `v = t`, with a 64-byte payload, in batches.
fn history(rows: i64, batch: usize) -> (Arc<Schema>, Vec<RecordBatch>) {
    let schema = feature_schema();
    let payload = "x".repeat(64);
    let batches = (0..rows)
        .step_by(batch)
        .map(|start| {
            let end = (start + batch as i64).min(rows);
            RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from_iter_values((start..end).map(|_| 1))),
                    Arc::new(Int64Array::from_iter_values(start..end)),
                    Arc::new(Int64Array::from_iter_values(start..end)),
                    Arc::new(StringArray::from_iter_values(
                        (start..end).map(|_| payload.as_str()),
                    )),
                ],
            )
            .expect("batch")
        })
        .collect();
    (schema, batches)
}

async fn run_join(hc: &Hindcast, sql: &str) -> (Vec<(i64, Option<i64>)>, Arc<dyn ExecutionPlan>) {
    let df = hc.sql(sql).await.expect("plan");
    let task_ctx = Arc::new(df.task_ctx());
    let plan = df.create_physical_plan().await.expect("physical plan");
    let batches = collect(Arc::clone(&plan), task_ctx).await.expect("runs");
    let mut rows = vec![];
    for b in &batches {
        let t = b.column(0).as_primitive::<Int64Type>();
        let v = b.column(1).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            rows.push((t.value(i), v.is_valid(i).then(|| v.value(i))));
        }
    }
    rows.sort();
    (rows, plan)
}

/// A sparse spine: two rows of one key, at the start and past the end of a long feature
/// history. The first row's winner is in the first right batch, and deciding the second
/// reads every right batch; the join emits the first row's output early, once it pins
/// `MAX_PINNED_RIGHT_BATCHES` batches, so the batches in between are released. Its peak
/// memory is then a few batches, not the history: on every sort path (hindcast's own sort
/// in memory and spilling, DataFusion's `SortExec`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_flush_bounds_the_joins_memory_on_a_sparse_spine() {
    const BATCH: usize = 1024;
    const ROWS: i64 = 400_000;
    let (schema, batches) = history(ROWS, BATCH);
    let history_bytes: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    let batch_bytes = batches[0].get_array_memory_size();
    let batch_count = batches.len();
    assert!(
        batch_count > 20 * MAX_PINNED_RIGHT_BATCHES,
        "a long history"
    );
    let right = MemTable::try_new(schema, vec![batches]).expect("mem table");
    let right = Arc::new(right);
    for (limit, key_time_sort) in [(None, true), (Some(4 << 20), true), (Some(1 << 30), false)] {
        let hc = session(BATCH, 1, limit);
        hc.sql(&format!("SET hindcast.key_time_sort = {key_time_sort}"))
            .await
            .expect("set");
        let ctx = hc.session_context();
        ctx.register_table("r", Arc::clone(&right) as _).expect("r");
        ctx.sql(&format!("CREATE TABLE l AS VALUES (1, 0), (1, {ROWS})"))
            .await
            .expect("l");
        let (rows, plan) = run_join(
            &hc,
            "SELECT l.column2, r.v FROM l ASOF JOIN r MATCH_CONDITION (l.column2 >= r.t) \
             ON l.column1 = r.k",
        )
        .await;
        assert_eq!(
            rows,
            vec![(0, Some(0)), (ROWS, Some(ROWS - 1))],
            "{limit:?}"
        );
        if limit == Some(4 << 20) {
            assert!(
                right_sort_spilled_bytes(&plan) > 0,
                "the history is larger than 4 MiB"
            );
        }
        let peak = join_peak_memory(&plan);
        // Held at once: the batches pinned before the flush, the cursor's and the left
        // batch; read late from a sorted partition a right batch is only its join arrays.
        let bound = (MAX_PINNED_RIGHT_BATCHES + 4) * (batch_bytes + BATCH * 16);
        assert!(
            peak <= bound && peak * 10 < history_bytes,
            "limit {limit:?}, key-time sort {key_time_sort}: the join held {peak} bytes at its peak, more than {bound} \
             ({} batches of {batch_bytes} bytes; the history is {history_bytes} bytes)",
            MAX_PINNED_RIGHT_BATCHES + 4
        );
    }
}

/// The join's reported memory counts the join arrays it makes (here the right times, Int32
/// widened to `i64`) next to the batches it holds, as DataFusion's sort-merge join counts its
/// own, and does not count twice an array that is the batch's own column (the Int64 key).
/// Inputs declared sorted, so the join reads the right batch as registered, of a known size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_joins_memory_counts_its_join_arrays() {
    const ROWS: i32 = 10_000;
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("t", DataType::Int32, false),
        Field::new("v", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values((0..ROWS).map(|_| 1))),
            Arc::new(Int32Array::from_iter_values(0..ROWS)),
            Arc::new(Int64Array::from_iter_values((0..ROWS).map(i64::from))),
        ],
    )
    .expect("batch");
    let batch_bytes = batch.get_array_memory_size();
    let sorted = |table: MemTable| {
        table.with_sort_order(vec![vec![
            SortExpr::new(col("k"), true, true),
            SortExpr::new(col("t"), true, true),
        ]])
    };
    let right = sorted(MemTable::try_new(schema, vec![vec![batch]]).expect("mem table"));
    let left_schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("t", DataType::Int64, false),
    ]));
    let left_batch = RecordBatch::try_new(
        Arc::clone(&left_schema),
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(Int64Array::from(vec![i64::from(ROWS)])),
        ],
    )
    .expect("batch");
    let left = sorted(MemTable::try_new(left_schema, vec![vec![left_batch]]).expect("l"));
    let hc = session(ROWS as usize, 1, Some(1 << 30));
    hc.sql("SET datafusion.optimizer.enable_join_dynamic_filter_pushdown = false")
        .await
        .expect("set");
    let ctx = hc.session_context();
    ctx.register_table("l", Arc::new(left)).expect("l");
    ctx.register_table("r", Arc::new(right)).expect("r");
    let (rows, plan) = run_join(
        &hc,
        // Every right column, so the join holds the batch as registered.
        "SELECT l.t, r.v, r.k, r.t FROM l ASOF JOIN r MATCH_CONDITION (l.t >= r.t) ON l.k = r.k",
    )
    .await;
    assert_eq!(rows, vec![(i64::from(ROWS), Some(i64::from(ROWS) - 1))]);
    let text = datafusion::physical_plan::displayable(plan.as_ref())
        .indent(false)
        .to_string();
    assert!(
        !text.contains("Sort"),
        "inputs declared sorted are not sorted again:\n{text}"
    );
    let peak = join_peak_memory(&plan);
    let widened_times = ROWS as usize * size_of::<i64>();
    let shared_keys = ROWS as usize * size_of::<i64>();
    assert!(
        peak >= batch_bytes + widened_times && peak < batch_bytes + widened_times + shared_keys,
        "the join reported {peak} bytes for a {batch_bytes}-byte batch, {widened_times} bytes of \
         widened times and (not to be counted again) {shared_keys} bytes of keys"
    );
}
