//! A join whose right side is several times the memory limit: it must spill (in the sorts
//! feeding the operator) and still give the exact answer.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use datafusion::datasource::MemTable;
use datafusion::physical_plan::{ExecutionPlan, collect};

use crate::common::session;

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

fn right_side() -> MemTable {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("t", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
        Field::new("payload", DataType::Utf8, false),
    ]));
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
    let spilled = spilled_bytes(&plan);
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
