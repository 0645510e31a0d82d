//! Eight ASOF joins at once through one `Hindcast` session whose memory pool is smaller
//! than what they hold together: each completes (spilling) with the answer it gives alone,
//! or fails with a resources error that names the pool; none waits forever.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::common::DataFusionError;
use datafusion::physical_plan::collect;

use crate::common::session;
use crate::out_of_core::right_sort_spilled_bytes;

const QUERIES: usize = 8;
const LIMIT: usize = 48 << 20;

/// Query `i`: the labels against the feature rows with `k % 8 <> i`, so each has its own
/// answer (its TTL too); about 22 MB of feature rows each.
fn query(i: usize) -> String {
    format!(
        "SELECT count(*), count(r.v), sum(length(r.v)), sum(r.t) FROM l \
         ASOF JOIN (SELECT * FROM r WHERE k % {QUERIES} <> {i}) r \
           MATCH_CONDITION (l.t >= r.t AND l.t - r.t <= {ttl}) ON l.k = r.k",
        ttl = 10 + 10 * i
    )
}

/// Query `i`'s answer as a table, and the bytes its feature side's sort spilled.
async fn run(hc: &hindcast::Hindcast, i: usize) -> Result<(String, usize), DataFusionError> {
    let frame = hc.sql(&query(i)).await?;
    let task = Arc::new(frame.task_ctx());
    let plan = frame.create_physical_plan().await?;
    let batches = collect(Arc::clone(&plan), task).await?;
    let table = pretty_format_batches(&batches)?.to_string();
    Ok((table, right_sort_spilled_bytes(&plan)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_queries_share_one_pool_and_each_completes_or_names_the_limit() {
    let hc = session(8192, 2, Some(LIMIT));
    for sql in [
        "CREATE TABLE r AS SELECT i % 400 AS k, (i / 400) * 100 AS t, \
           'v' || CAST(i AS VARCHAR) AS v, repeat('x', 100) AS pad \
         FROM generate_series(0, 199999) AS s(i)",
        "CREATE TABLE l AS SELECT i % 400 AS k, (i * 37) % 50000 AS t \
         FROM generate_series(0, 19999) AS s(i)",
    ] {
        crate::common::collect(&hc, sql).await;
    }
    let mut alone = vec![];
    for i in 0..QUERIES {
        alone.push(run(&hc, i).await.expect("runs alone").0);
    }
    let distinct: std::collections::HashSet<&String> = alone.iter().collect();
    assert_eq!(distinct.len(), QUERIES, "two queries give the same answer");

    let tasks: Vec<_> = (0..QUERIES)
        .map(|i| {
            let hc = hc.clone();
            tokio::spawn(async move { run(&hc, i).await })
        })
        .collect();
    let all = futures::future::join_all(tasks);
    let results = tokio::time::timeout(Duration::from_secs(300), all)
        .await
        .expect("eight concurrent queries finished within 300 s (no deadlock)");

    let (mut completed, mut refused, mut spilled) = (0, 0, 0);
    for (i, result) in results.into_iter().enumerate() {
        match result.expect("the task did not panic") {
            Ok((table, bytes)) => {
                assert_eq!(table, alone[i], "query {i} together differs from alone");
                completed += 1;
                spilled += bytes;
            }
            Err(e) => {
                let message = hindcast::error_message(&e);
                assert!(
                    matches!(e.find_root(), DataFusionError::ResourcesExhausted(_))
                        && message.contains("fair(pool_size: 48.0 MB)")
                        && message.contains("raise it"),
                    "query {i} failed, not for memory: {message}"
                );
                println!("query {i}: {message}");
                refused += 1;
            }
        }
    }
    println!("{completed} completed, {refused} refused memory, {spilled} bytes spilled");
    assert!(
        completed >= QUERIES / 2,
        "only {completed} of {QUERIES} completed"
    );
    assert!(
        spilled > 0,
        "the pool was large enough for all eight: nothing spilled"
    );
}
