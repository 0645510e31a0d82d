//! Aggregation feature views against a brute-force reference of their semantics
//! (docs/semantics.md, "Windowed aggregations") on seeded random inputs: one or two keys,
//! NULL keys, times and values, events exactly on both window edges, ties on time, several
//! window lengths (zero included), a `CREATED` column (ordering ties) and Feast's
//! `filter_by_created_timestamp` (events created after the spine time, or never, left out).
//! Each case runs under several batch sizes and partition
//! counts (and, larger, under a memory limit that makes the sorts spill), and must give the same
//! answer, bit for bit, every time; a sum and a count are also checked against the ANSI
//! `UNION ALL` + `RANGE` window formulation run by hindcast itself.
//!
//! `HINDCAST_FUZZ_SEED=<seed>` reruns one case.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, TimestampMillisecondArray, TimestampSecondArray,
};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::physical_plan::{ExecutionPlan, collect};
use hindcast::Hindcast;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::{batch, session};
use crate::differential::table;

/// The aggregates every case computes: `(sql, name)`; `{w}` is the case's window for it.
const AGGREGATES: [&str; 12] = [
    "count(*)",
    "count(amount)",
    "sum(qty)",
    "sum(amount)",
    "avg(amount)",
    "avg(qty)",
    "min(amount)",
    "max(cat)",
    "count(DISTINCT cat)",
    "last(cat)",
    "stddev(amount)",
    "var_pop(qty)",
];

#[derive(Debug, Clone)]
struct Event {
    k: Option<i64>,
    g: Option<&'static str>,
    ts: Option<i64>,
    /// Microseconds (a finer unit than the spine's and the events' times, some on the half
    /// second), mostly after `ts`.
    created: Option<i64>,
    amount: Option<f64>,
    qty: Option<i64>,
    cat: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct Spine {
    k: Option<i64>,
    g: Option<&'static str>,
    /// Seconds; stored as milliseconds (the events' time is in seconds).
    ts: Option<i64>,
}

#[derive(Debug)]
struct Case {
    seed: u64,
    two_keys: bool,
    /// The view has `CREATED created`; and with `filter`, only created events count.
    has_created: bool,
    filter: bool,
    windows: Vec<i64>,
    spine: Vec<Spine>,
    events: Vec<Event>,
}

const GROUPS: [&str; 2] = ["x", "y"];
const CATS: [&str; 4] = ["a", "b", "c", "d"];

fn maybe<T>(rng: &mut StdRng, null_rate: f64, value: impl FnOnce(&mut StdRng) -> T) -> Option<T> {
    let value = value(rng);
    (!rng.random_bool(null_rate)).then_some(value)
}

impl Case {
    fn random(seed: u64, max_rows: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let keys = rng.random_range(1..6);
        let span = rng.random_range(1..80);
        let two_keys = rng.random_bool(0.4);
        let has_created = rng.random_bool(0.6);
        let filter = has_created && rng.random_bool(0.6);
        let windows = (0..AGGREGATES.len())
            .map(|_| [0, 1, 3, 10, 40][rng.random_range(0..5)])
            .collect();
        let n_events = rng.random_range(0..max_rows);
        let n_spine = rng.random_range(0..max_rows);
        let mut events: Vec<Event> = (0..n_events)
            .map(|_| Event {
                k: maybe(&mut rng, 0.05, |r| r.random_range(0..keys)),
                g: maybe(&mut rng, 0.05, |r| GROUPS[r.random_range(0..2)]),
                ts: maybe(&mut rng, 0.05, |r| r.random_range(0..span)),
                created: maybe(&mut rng, 0.05, |r| r.random_range(0..span + 20) * 1_000_000),
                amount: maybe(&mut rng, 0.2, |r| r.random_range(-20..40) as f64 / 4.0),
                qty: maybe(&mut rng, 0.2, |r| r.random_range(-5..1000)),
                cat: maybe(&mut rng, 0.2, |r| CATS[r.random_range(0..4)]),
            })
            .collect();
        // Mostly in time order, as event tables are written.
        if rng.random_bool(0.5) {
            events.sort_by_key(|e| e.ts);
        }
        let spine = (0..n_spine)
            .map(|_| Spine {
                k: maybe(&mut rng, 0.05, |r| r.random_range(0..keys + 1)),
                g: maybe(&mut rng, 0.05, |r| GROUPS[r.random_range(0..2)]),
                ts: maybe(&mut rng, 0.05, |r| r.random_range(0..span + 10)),
            })
            .collect();
        // Created mostly after the event time, by up to 20 seconds, some before it; a
        // third half a second later still.
        for e in &mut events {
            if let (Some(ts), Some(created)) = (e.ts, e.created.as_mut()) {
                if rng.random_bool(0.7) {
                    *created = (ts + rng.random_range(0..20)) * 1_000_000;
                }
                if rng.random_bool(0.3) {
                    *created += 500_000;
                }
            }
        }
        Self {
            seed,
            two_keys,
            has_created,
            filter,
            windows,
            spine,
            events,
        }
    }

    fn spine_batch(&self) -> RecordBatch {
        let s = &self.spine;
        batch(vec![
            (
                "lid",
                Arc::new(Int64Array::from_iter_values(0..s.len() as i64)) as ArrayRef,
            ),
            ("k", Arc::new(Int64Array::from_iter(s.iter().map(|r| r.k)))),
            ("g", Arc::new(StringArray::from_iter(s.iter().map(|r| r.g)))),
            (
                "ts",
                Arc::new(TimestampMillisecondArray::from_iter(
                    s.iter().map(|r| r.ts.map(|t| t * 1000)),
                )),
            ),
        ])
    }

    fn events_batch(&self) -> RecordBatch {
        let e = &self.events;
        batch(vec![
            (
                "k",
                Arc::new(Int64Array::from_iter(e.iter().map(|r| r.k))) as ArrayRef,
            ),
            ("g", Arc::new(StringArray::from_iter(e.iter().map(|r| r.g)))),
            (
                "ts",
                Arc::new(TimestampSecondArray::from_iter(e.iter().map(|r| r.ts))),
            ),
            (
                "created",
                Arc::new(TimestampMicrosecondArray::from_iter(
                    e.iter().map(|r| r.created),
                )),
            ),
            (
                "amount",
                Arc::new(Float64Array::from_iter(e.iter().map(|r| r.amount))),
            ),
            (
                "qty",
                Arc::new(Int64Array::from_iter(e.iter().map(|r| r.qty))),
            ),
            (
                "cat",
                Arc::new(StringArray::from_iter(e.iter().map(|r| r.cat))),
            ),
        ])
    }

    fn entity(&self) -> &'static str {
        if self.two_keys { "k, g" } else { "k" }
    }

    fn view_sql(&self) -> String {
        let aggregates: Vec<String> = AGGREGATES
            .iter()
            .zip(&self.windows)
            .enumerate()
            .map(|(i, (a, w))| format!("{a} OVER INTERVAL '{w} seconds' AS a{i}"))
            .collect();
        let created = if self.has_created {
            " CREATED created"
        } else {
            ""
        };
        format!(
            "CREATE OR REPLACE FEATURE VIEW v ENTITY ({}) TIMESTAMP ts{created} AGGREGATE ({}) AS SELECT * FROM r",
            self.entity(),
            aggregates.join(", ")
        )
    }

    fn join_sql(&self) -> String {
        let on = match self.two_keys {
            true => "v.k = l.k AND v.g = l.g",
            false => "v.k = l.k",
        };
        if self.filter {
            let names: Vec<String> = (0..AGGREGATES.len()).map(|i| format!("a{i}")).collect();
            let refs: Vec<String> = names.iter().map(|n| format!("'v:{n}'")).collect();
            return format!(
                "SELECT lid, {} FROM historical_features('l', {}, filter_by_created_timestamp => true)",
                names.join(", "),
                refs.join(", ")
            );
        }
        let columns: Vec<String> = (0..AGGREGATES.len()).map(|i| format!("v.a{i}")).collect();
        format!(
            "SELECT l.lid, {} FROM l LEFT JOIN v FOR SYSTEM_TIME AS OF l.ts AS v ON {on}",
            columns.join(", ")
        )
    }

    /// Each spine row's answers as text, by `lid`.
    fn reference(&self) -> Vec<Vec<String>> {
        self.spine
            .iter()
            .map(|s| {
                (0..AGGREGATES.len())
                    .map(|i| {
                        let w = self.windows[i];
                        let window: Vec<&Event> = match (s.k, s.g, s.ts) {
                            (Some(k), g, Some(t)) if g.is_some() || !self.two_keys => self
                                .events
                                .iter()
                                .filter(|e| {
                                    e.k == Some(k)
                                        && (!self.two_keys || e.g == g)
                                        && e.ts.is_some_and(|ts| t - w <= ts && ts <= t)
                                        && (!self.filter
                                            || e.created.is_some_and(|c| c <= t * 1_000_000))
                                })
                                .collect(),
                            _ => vec![],
                        };
                        aggregate(AGGREGATES[i], &window, self.has_created)
                    })
                    .collect()
            })
            .collect()
    }
}

/// Events in tie order: time, then the created time if the view has one, then amount,
/// qty, cat (NULLs first), as the operator sorts.
fn tie_order(a: &Event, b: &Event, has_created: bool) -> Ordering {
    let created = match has_created {
        true => a.created.cmp(&b.created),
        false => Ordering::Equal,
    };
    a.ts.cmp(&b.ts)
        .then(created)
        .then(a.amount.partial_cmp(&b.amount).expect("no NaN"))
        .then(a.qty.cmp(&b.qty))
        .then(a.cat.cmp(&b.cat))
}

fn float(v: f64) -> String {
    format!("{v:.9}")
}

fn aggregate(sql: &str, window: &[&Event], has_created: bool) -> String {
    let amounts: Vec<f64> = window.iter().filter_map(|e| e.amount).collect();
    let qtys: Vec<i64> = window.iter().filter_map(|e| e.qty).collect();
    let cats: Vec<&str> = window.iter().filter_map(|e| e.cat).collect();
    let null = "NULL".to_string();
    let or_null = |empty: bool, v: String| if empty { null.clone() } else { v };
    match sql {
        "count(*)" => window.len().to_string(),
        "count(amount)" => amounts.len().to_string(),
        "sum(qty)" => or_null(qtys.is_empty(), qtys.iter().sum::<i64>().to_string()),
        "sum(amount)" => or_null(amounts.is_empty(), float(amounts.iter().sum())),
        "avg(amount)" => or_null(
            amounts.is_empty(),
            float(amounts.iter().sum::<f64>() / amounts.len() as f64),
        ),
        "avg(qty)" => or_null(
            qtys.is_empty(),
            float(qtys.iter().sum::<i64>() as f64 / qtys.len() as f64),
        ),
        "min(amount)" => or_null(
            amounts.is_empty(),
            float(amounts.iter().cloned().fold(f64::INFINITY, f64::min)),
        ),
        "max(cat)" => cats.iter().max().map_or(null, |c| c.to_string()),
        "count(DISTINCT cat)" => cats.iter().collect::<HashSet<_>>().len().to_string(),
        "last(cat)" => window
            .iter()
            .filter(|e| e.cat.is_some())
            .max_by(|a, b| tie_order(a, b, has_created))
            .map_or(null, |e| e.cat.expect("filtered").to_string()),
        "stddev(amount)" => {
            if amounts.len() < 2 {
                return null;
            }
            let n = amounts.len() as f64;
            let mean = amounts.iter().sum::<f64>() / n;
            let m2: f64 = amounts.iter().map(|x| (x - mean) * (x - mean)).sum();
            float((m2 / (n - 1.0)).sqrt())
        }
        "var_pop(qty)" => {
            if qtys.is_empty() {
                return null;
            }
            let n = qtys.len() as f64;
            let mean = qtys.iter().sum::<i64>() as f64 / n;
            let m2: f64 = qtys
                .iter()
                .map(|&x| (x as f64 - mean) * (x as f64 - mean))
                .sum();
            float(m2 / n)
        }
        other => panic!("no reference for {other}"),
    }
}

/// Equal cells; floats within a relative 1e-7 (a running variance, unlike the reference's
/// two-pass one, carries rounding from the events that left its window).
fn same_cells(want: &[String], got: &[String]) -> bool {
    want.len() == got.len()
        && want.iter().zip(got).all(|(a, b)| {
            a == b
                || match (a.parse::<f64>(), b.parse::<f64>()) {
                    (Ok(x), Ok(y)) => (x - y).abs() <= 1e-7 * x.abs().max(y.abs()).max(1.0),
                    _ => false,
                }
        })
}

/// The join's rows by `lid`: the raw batches' values (for the bit-for-bit comparison) and
/// as text with floats to 9 decimals (for the reference).
async fn run(
    hc: &Hindcast,
    case: &Case,
    size: usize,
    partitions: usize,
) -> (Vec<Vec<String>>, Arc<dyn ExecutionPlan>) {
    let ctx = hc.session_context();
    ctx.register_table("l", table(&case.spine_batch(), size, partitions))
        .expect("register l");
    ctx.register_table("r", table(&case.events_batch(), size, partitions))
        .expect("register r");
    hc.sql(&case.view_sql())
        .await
        .unwrap_or_else(|e| panic!("seed {}: {}: {e}", case.seed, case.view_sql()))
        .collect()
        .await
        .expect("create view");
    let sql = case.join_sql();
    let frame = hc
        .sql(&sql)
        .await
        .unwrap_or_else(|e| panic!("seed {}: planning {sql}: {e}", case.seed));
    let task_ctx = Arc::new(frame.task_ctx());
    let plan = frame.create_physical_plan().await.expect("physical plan");
    let batches = collect(Arc::clone(&plan), task_ctx)
        .await
        .unwrap_or_else(|e| panic!("seed {}: running {sql}: {e}", case.seed));
    let mut rows: Vec<(i64, Vec<String>)> = vec![];
    for b in &batches {
        let lid = b.column(0).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let cells = (1..b.num_columns())
                .map(|c| {
                    let column = b.column(c);
                    if column.is_null(i) {
                        "NULL".to_string()
                    } else if let Some(f) = column.as_primitive_opt::<Float64Type>() {
                        format!("{:?}", f.value(i))
                    } else {
                        array_value_to_string(column, i).expect("cell")
                    }
                })
                .collect();
            rows.push((lid.value(i), cells));
        }
    }
    rows.sort_by_key(|(lid, _)| *lid);
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        (0..case.spine.len() as i64).collect::<Vec<_>>(),
        "seed {}: one output row per spine row",
        case.seed
    );
    (rows.into_iter().map(|(_, cells)| cells).collect(), plan)
}

/// Exact cells (floats in full) as the reference writes them (floats to 9 decimals,
/// which the reference's own summation order can reach).
fn rounded(rows: &[Vec<String>]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|row| {
            row.iter()
                .map(|cell| match cell.parse::<f64>() {
                    Ok(v) if cell.contains('.') || cell.contains('e') || cell == "NaN" => float(v),
                    _ => cell.clone(),
                })
                .collect()
        })
        .collect()
}

/// The same sum and count by the ANSI formulation: the spine's rows and the events in one
/// table, a `RANGE` window per key, the spine's rows kept.
async fn range_window(hc: &Hindcast, case: &Case, w: i64) -> Vec<(i64, String, i64)> {
    let keys = match case.two_keys {
        true => "k, g",
        false => "k",
    };
    let valid = match case.two_keys {
        true => "k IS NOT NULL AND g IS NOT NULL AND ts IS NOT NULL",
        false => "k IS NOT NULL AND ts IS NOT NULL",
    };
    let window = format!(
        "PARTITION BY {keys} ORDER BY ts RANGE BETWEEN INTERVAL '{w} seconds' PRECEDING AND CURRENT ROW"
    );
    let sql = format!(
        "SELECT lid, s, c FROM (
           SELECT lid, sum(amount) OVER ({window}) AS s, count(amount) OVER ({window}) AS c
           FROM (SELECT lid, {keys}, CAST(ts AS TIMESTAMP) AS ts, CAST(NULL AS DOUBLE) AS amount FROM l WHERE {valid}
                 UNION ALL
                 SELECT CAST(NULL AS BIGINT), {keys}, CAST(ts AS TIMESTAMP), amount FROM r WHERE {valid}))
         WHERE lid IS NOT NULL ORDER BY lid"
    );
    let batches = hc
        .sql(&sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut rows = vec![];
    for b in &batches {
        let lid = b.column(0).as_primitive::<Int64Type>();
        let s = b.column(1).as_primitive::<Float64Type>();
        let c = b.column(2).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            let sum = match s.is_null(i) {
                true => "NULL".to_string(),
                false => float(s.value(i)),
            };
            rows.push((lid.value(i), sum, c.value(i)));
        }
    }
    rows
}

fn seeds(count: u64, base: u64) -> Vec<u64> {
    match std::env::var("HINDCAST_FUZZ_SEED") {
        Ok(seed) => vec![seed.parse().expect("a number")],
        Err(_) => (base..base + count).collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_aggregates_match_reference_on_random_inputs() {
    let configs: [(usize, usize, Option<usize>); 5] = [
        (1, 1, None),
        (3, 4, None),
        (50, 1, None),
        (50, 4, None),
        (64, 2, Some(64 * 1024 * 1024)),
    ];
    let cases = seeds(40, 5_000);
    let mut filtered = 0;
    for &seed in &cases {
        let case = Case::random(seed, 150);
        filtered += usize::from(case.filter);
        let expected = case.reference();
        let mut first: Option<Vec<Vec<String>>> = None;
        for (size, partitions, limit) in configs {
            let hc = session(size, partitions, limit);
            let (actual, _) = run(&hc, &case, size, partitions).await;
            let config = format!("batch size {size}, {partitions} partitions, limit {limit:?}");
            let shown = rounded(&actual);
            for (lid, (want, got)) in expected.iter().zip(&shown).enumerate() {
                assert!(
                    same_cells(want, got),
                    "seed {seed}, {config}, lid {lid}: expected {want:?}, got {got:?} ({:?}): aggregates {AGGREGATES:?} over windows {:?}\nview: {}",
                    case.spine[lid],
                    case.windows,
                    case.view_sql()
                );
            }
            match &first {
                None => first = Some(actual),
                Some(first) => assert_eq!(
                    first, &actual,
                    "seed {seed}, {config}: not the same bits as the first configuration"
                ),
            }
            // The ANSI formulation knows no created filter.
            if size == 50 && partitions == 4 && !case.filter {
                // sum(amount) is aggregate 3, count(amount) aggregate 1: the same window is
                // needed for one formulation, so take aggregate 3's.
                let w = case.windows[3];
                let ansi = range_window(&hc, &case, w).await;
                let answers = first.as_ref().expect("set");
                for (lid, sum, _) in &ansi {
                    let ours = &rounded(answers)[*lid as usize][3];
                    assert_eq!(
                        ours, sum,
                        "seed {seed}, lid {lid}: sum over RANGE window {w}s"
                    );
                }
                // Every valid spine row is there, and the count agrees where windows do.
                if case.windows[1] == w {
                    for (lid, _, count) in &ansi {
                        assert_eq!(answers[*lid as usize][1], count.to_string(), "seed {seed}");
                    }
                }
            }
        }
    }
    eprintln!(
        "window aggregates: {} cases ({filtered} filtered by created time) x {} configurations, 0 mismatches",
        cases.len(),
        configs.len()
    );
}

/// Larger cases under a memory limit small enough that the sorts below the operator spill:
/// the same bits as without a limit (whose answers the test above checks against the
/// reference).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_aggregates_are_the_same_while_spilling() {
    let cases = seeds(6, 6_000);
    let mut spilled = 0;
    for &seed in &cases {
        let case = Case::random(seed, 20_000);
        let (unlimited, _) = run(&session(8192, 2, None), &case, 8192, 2).await;
        let hc = session(64, 2, Some(2 * 1024 * 1024));
        let (limited, plan) = run(&hc, &case, 64, 2).await;
        assert_eq!(unlimited, limited, "seed {seed}: under a 2 MiB limit");
        if crate::out_of_core::spilled_bytes(&plan) > 0 {
            spilled += 1;
        }
    }
    eprintln!(
        "window aggregates (spilling): {spilled} of {} cases spilled, 0 mismatches",
        cases.len()
    );
    assert!(
        spilled * 2 >= cases.len(),
        "only {spilled} of {} cases spilled: the limit no longer forces spilling",
        cases.len()
    );
}
