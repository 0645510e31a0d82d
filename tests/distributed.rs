//! Distributed execution: hindcast workers on loopback in this process (see
//! `common::start_workers`), and a coordinator over them. The `.slt` files run on such a
//! cluster too (`slt`'s `Mode::Cluster`); `cli` runs worker processes.

use std::sync::Arc;

use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::{ExecutionPlan, collect, displayable};
use hindcast::distributed::{decode_plan, encode_plan};
use hindcast::physical::key_time_sort::KeyTimeSortExec;
use hindcast::{Hindcast, manifest};

use crate::common::collect as run;
use crate::common::{cluster_session, error, link_example_repository, repo_root, start_workers};

const TRAINING_SET: &str = "SELECT * FROM historical_features('SELECT user_id, event_timestamp, label FROM labels', \
     'user_spending_stats:avg_transaction_amount', 'user_spending_stats:transaction_count_30d', \
     'user_activity:session_count_7d') ORDER BY user_id, event_timestamp, label";

/// Queries whose answers depend on the TTL, a bound and the direction (the example data has
/// no ties on event time: tie-breaks and modes are checked through the codec by `slt`).
const QUERIES: [&str; 7] = [
    TRAINING_SET,
    // A short bound: most labels get nothing.
    "SELECT l.user_id, l.event_timestamp, f.avg_transaction_amount FROM labels l \
     ASOF JOIN user_spending_stats f MATCH_CONDITION (l.event_timestamp >= f.event_timestamp \
     AND l.event_timestamp - f.event_timestamp <= INTERVAL '2 days') ON l.user_id = f.user_id \
     ORDER BY 1, 2, 3",
    // Forward, strict.
    "SELECT l.user_id, l.event_timestamp, f.avg_transaction_amount, f.event_timestamp FROM labels l \
     ASOF JOIN user_spending_stats f MATCH_CONDITION (l.event_timestamp < f.event_timestamp) \
     ON l.user_id = f.user_id ORDER BY 1, 2, 3, 4",
    // Feast's filter_by_created_timestamp.
    "SELECT * FROM historical_features('labels', 'user_spending_stats:avg_transaction_amount', \
     filter_by_created_timestamp => true) ORDER BY user_id, event_timestamp, label",
    // The README's training set, with the Delta view's feature.
    "SELECT * FROM historical_features('labels', 'churn_model', 'user_plan:plan') \
     ORDER BY user_id, event_timestamp, label",
    // The aggregation view: every aggregate and window of it.
    "SELECT * FROM historical_features('labels', 'user_transactions:txn_count_30d', \
     'user_transactions:spend_90d', 'user_transactions:avg_amount_30d', \
     'user_transactions:max_amount_1d', 'user_transactions:merchants_7d', \
     'user_transactions:last_category') ORDER BY user_id, event_timestamp, label",
    // The Delta view, its partition column filtered.
    "SELECT l.user_id, l.event_timestamp, p.plan, p.month FROM labels l \
     LEFT JOIN user_plan FOR SYSTEM_TIME AS OF l.event_timestamp AS p ON p.user_id = l.user_id \
     WHERE p.month IS NULL OR p.month <> '2024-12' ORDER BY 1, 2, 3",
];

/// The example repository in a coordinator over three workers in this process, and in a
/// session of its own.
async fn example_sessions() -> (Hindcast, Hindcast) {
    let repo = repo_root().join("examples/feature_repo");
    let workers = start_workers(3, None).await;
    let hc = cluster_session(8192, 4, &workers).await;
    hc.load_repository(&repo).await.expect("repository");
    let local = Hindcast::with_defaults(None).expect("session");
    local.load_repository(&repo).await.expect("repository");
    (hc, local)
}

/// The example repository's queries on three workers: the same rows as in one process,
/// from plans cut into stages whose joins ran as three tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_queries_on_three_workers() {
    let (hc, local) = example_sessions().await;
    for query in QUERIES {
        let df = hc.sql(query).await.expect("plan");
        let context = Arc::new(df.task_ctx());
        let plan = df.create_physical_plan().await.expect("physical plan");
        let rows = collect(Arc::clone(&plan), context)
            .await
            .expect("distributed run");
        let expected = run(&local, query).await;
        assert_eq!(
            pretty_format_batches(&rows).expect("print").to_string(),
            pretty_format_batches(&expected).expect("print").to_string(),
            "{query}"
        );
        assert_cut_into_stages(&plan);
    }
}

/// `EXPLAIN` on a cluster shows the plan that runs: its stages and their tasks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_the_stages() {
    let workers = start_workers(3, None).await;
    let hc = cluster_session(8192, 4, &workers).await;
    hc.load_repository(repo_root().join("examples/feature_repo"))
        .await
        .expect("repository");
    let rows = run(&hc, &format!("EXPLAIN {TRAINING_SET}")).await;
    let text = pretty_format_batches(&rows).expect("print").to_string();
    assert!(text.contains("DistributedExec"), "{text}");
    assert!(text.contains("Stage 1 ── tasks=3"), "{text}");
    assert!(text.contains("AsOfJoinExec"), "{text}");
}

/// `EXPLAIN ANALYZE VERBOSE` on a cluster has each task's rows: the joins ran in three
/// tasks, one per worker (datafusion-distributed gives a stage's tasks to consecutive
/// workers of its list), every one of them joined a share of the spine, and the shares add
/// up to the whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_analyze_shows_every_workers_join_rows() {
    let workers = start_workers(3, None).await;
    let hc = cluster_session(8192, 4, &workers).await;
    hc.load_repository(repo_root().join("examples/feature_repo"))
        .await
        .expect("repository");
    let spine_rows: usize = run(&hc, "SELECT * FROM labels")
        .await
        .iter()
        .map(|b| b.num_rows())
        .sum();
    let rows = run(&hc, &format!("EXPLAIN ANALYZE VERBOSE {TRAINING_SET}")).await;
    let text = pretty_format_batches(&rows).expect("print").to_string();
    let per_task = text
        .split("Plan with Full Metrics")
        .nth(1)
        .unwrap_or_else(|| panic!("no per-task metrics:\n{text}"));
    let joins: Vec<Vec<usize>> = per_task
        .lines()
        .filter(|line| line.contains("AsOfJoinExec"))
        .map(|line| {
            let counts = line
                .split("output_rows={")
                .nth(1)
                .and_then(|rest| rest.split('}').next())
                .unwrap_or_else(|| panic!("no rows per task in {line}"));
            counts
                .split(", ")
                .map(|task| {
                    let (_, rows) = task.split_once(':').expect("task:rows");
                    rows.parse().unwrap_or_else(|_| panic!("rows in {task}"))
                })
                .collect()
        })
        .collect();
    assert_eq!(joins.len(), 2, "{per_task}");
    for tasks in joins {
        assert_eq!(tasks.len(), workers.len(), "{per_task}");
        assert!(tasks.iter().all(|&rows| rows > 0), "{tasks:?}");
        assert_eq!(tasks.iter().sum::<usize>(), spine_rows, "{tasks:?}");
    }
}

/// The workers can come from a repository's settings (`SET hindcast.workers` in one of its
/// files), and a session goes back to running in-process with an empty list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_from_a_repositorys_settings() {
    let workers = start_workers(3, None).await;
    let dir = tempfile::tempdir().expect("temp dir");
    link_example_repository(dir.path());
    let example = repo_root().join("examples/feature_repo");
    std::fs::write(
        dir.path().join("settings.sql"),
        format!(
            "SET hindcast.workers = '{}';\n\
             SET distributed.file_scan_config_bytes_per_partition = 1;\n",
            workers.join(",")
        ),
    )
    .expect("settings");
    let hc = Hindcast::open(dir.path()).await.expect("repository");
    let explain = |hc: Hindcast| async move {
        let rows = run(&hc, &format!("EXPLAIN {TRAINING_SET}")).await;
        pretty_format_batches(&rows).expect("print").to_string()
    };
    let text = explain(hc.clone()).await;
    assert!(text.contains("Stage 1 ── tasks=3"), "{text}");
    let local = Hindcast::open(&example).await.expect("repository");
    assert_eq!(
        pretty_format_batches(&run(&hc, TRAINING_SET).await)
            .expect("print")
            .to_string(),
        pretty_format_batches(&run(&local, TRAINING_SET).await)
            .expect("print")
            .to_string()
    );

    let error = hc
        .sql("SET hindcast.workers = 'host:port'")
        .await
        .expect_err("a bad address");
    assert!(
        error.to_string().contains("\"host:port\" is not host:port"),
        "{error}"
    );
    run(&hc, "SET hindcast.workers = ''").await;
    let text = explain(hc.clone()).await;
    assert!(!text.contains("DistributedExec"), "{text}");
    // In one process, a scalar subquery is DataFusion's again: one of many rows is an error
    // (datafusion-distributed plans such subqueries as joins, which do not check).
    let many_rows = "SELECT count(*) FROM labels WHERE user_id = (SELECT user_id FROM labels)";
    for session in [&hc, &local] {
        let error = session
            .sql(many_rows)
            .await
            .expect("plan")
            .collect()
            .await
            .expect_err("a scalar subquery of many rows");
        assert!(error.to_string().contains("more than one row"), "{error}");
    }
}

fn assert_cut_into_stages(plan: &Arc<dyn ExecutionPlan>) {
    // Under hindcast's `BoundsFirstExec`, if the plan has one.
    let mut node = plan;
    while node
        .downcast_ref::<datafusion_distributed::DistributedExec>()
        .is_none()
    {
        match node.children().first() {
            Some(child) => node = child,
            None => panic!(
                "not distributed:\n{}",
                displayable(plan.as_ref()).indent(true)
            ),
        }
    }
    let stages = datafusion_distributed::display_plan_ascii(node.as_ref(), false);
    let stage_count = stages.matches("───── Stage ").count();
    assert!(stage_count >= 2, "one stage only:\n{stages}");
    let join_stage = stages
        .split("───── Stage ")
        .find(|stage| stage.contains("AsOfJoinExec") || stage.contains("WindowAggregateExec"))
        .unwrap_or_else(|| panic!("no stage runs the joins:\n{stages}"));
    assert!(
        join_stage.contains("tasks=3"),
        "the joins did not run as 3 tasks:\n{stages}"
    );
}

/// A worker decodes the coordinator's key-time sorts as key-time sorts, with a memory limit
/// (under which they spill) or without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_keep_the_key_time_sort_with_or_without_a_memory_limit() {
    let hc = Hindcast::with_defaults(None).expect("session");
    hc.load_repository(repo_root().join("examples/feature_repo"))
        .await
        .expect("repository");
    let plan = hc
        .sql(TRAINING_SET)
        .await
        .expect("plan")
        .create_physical_plan()
        .await
        .expect("plan");
    let bytes = encode_plan(&plan).expect("encode");
    let count = |plan: &Arc<dyn ExecutionPlan>| {
        let (mut key_time, mut sorts) = (0, 0);
        let mut nodes = vec![Arc::clone(plan)];
        while let Some(node) = nodes.pop() {
            key_time += node.downcast_ref::<KeyTimeSortExec>().is_some() as usize;
            sorts += node.downcast_ref::<SortExec>().is_some() as usize;
            nodes.extend(node.children().into_iter().cloned());
        }
        (key_time, sorts)
    };
    let (key_time, sorts) = count(&plan);
    assert!(
        key_time >= 3,
        "the coordinator planned {key_time} key-time sorts"
    );

    let unlimited = TaskContext::default();
    assert_eq!(
        count(&decode_plan(&bytes, &unlimited).expect("decode")),
        (key_time, sorts)
    );

    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(FairSpillPool::new(64 << 20)))
        .build_arc()
        .expect("runtime");
    let limited = TaskContext::default().with_runtime(runtime);
    assert_eq!(
        count(&decode_plan(&bytes, &limited).expect("decode")),
        (key_time, sorts)
    );
}

/// The spine's bounds prune the feature scans on the workers as in one process: a spine of
/// one month against two years of monthly partitions reads one partition either way, for
/// an ASOF join (a 7-day TTL) and an aggregation view (a 7-day window) alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spine_bounds_prune_the_workers_scans() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = format!(
        "COPY (SELECT user_id, ts, CAST(user_id * 1000 + d AS DOUBLE) AS spend, \
               CAST(date_part('year', ts) AS INT) AS year, CAST(date_part('month', ts) AS INT) AS month \
             FROM (SELECT d, to_timestamp_seconds(1704110400 + d * 86400) AS ts \
                   FROM generate_series(0, 730) AS t(d)), \
                  (SELECT value AS user_id FROM generate_series(1, 20))) \
             TO '{}/monthly/' STORED AS PARQUET PARTITIONED BY (year, month)",
        dir.path().display()
    );
    let setup = [
        format!(
            "CREATE FEATURE VIEW monthly ENTITY (user_id) TIMESTAMP ts TTL INTERVAL '7 days' \
             STORED AS PARQUET PARTITIONED BY (year, month) LOCATION '{}/monthly/'",
            dir.path().display()
        ),
        format!(
            "CREATE FEATURE VIEW weekly ENTITY (user_id) TIMESTAMP ts \
             AGGREGATE (sum(spend) OVER INTERVAL '7 days' AS spend_7d, count(*) OVER INTERVAL '7 days' AS n_7d) \
             STORED AS PARQUET PARTITIONED BY (year, month) LOCATION '{}/monthly/'",
            dir.path().display()
        ),
        "CREATE TABLE march AS SELECT value % 20 + 1 AS user_id, \
           to_timestamp_seconds(1741564800 + (value % 20) * 86400) AS event_timestamp \
         FROM generate_series(1, 100)"
            .to_string(),
    ];
    // A label of user u at midnight of 2025-03-10 + (u - 1) days holds the 7 daily rows (at
    // noon) of days d = 427 + u ..= 433 + u since 2024-01-01, of spend 1000 u + d: a sum of
    // 7007 u + 3003; each of the 20 users has 5 labels.
    let queries = [
        (
            "SELECT count(*), count(m.spend), sum(m.spend) FROM march l \
             LEFT JOIN monthly FOR SYSTEM_TIME AS OF l.event_timestamp AS m ON m.user_id = l.user_id",
            "| 100      | 100            | 1094250.0    |",
        ),
        (
            "SELECT count(*), sum(w.n_7d), sum(w.spend_7d) FROM march l \
             LEFT JOIN weekly FOR SYSTEM_TIME AS OF l.event_timestamp AS w ON w.user_id = l.user_id",
            "| 100      | 700         | 7657650.0       |",
        ),
    ];
    let workers = start_workers(3, None).await;
    let cluster = cluster_session(8192, 4, &workers).await;
    let local = Hindcast::with_defaults(None).expect("session");
    run(&local, &data).await;
    for hc in [&local, &cluster] {
        for statement in &setup {
            run(hc, statement).await;
        }
    }
    for (query, answer_line) in queries {
        let mut figures = vec![];
        for hc in [&local, &cluster] {
            let answer = run(hc, query).await;
            assert_eq!(
                pretty_format_batches(&answer)
                    .expect("print")
                    .to_string()
                    .lines()
                    .nth(3),
                Some(answer_line),
                "{query}"
            );
            let explained = run(hc, &format!("EXPLAIN ANALYZE {query}")).await;
            let text = pretty_format_batches(&explained)
                .expect("print")
                .to_string();
            let pruned: Vec<String> = text
                .match_indices("files_ranges_pruned_statistics=")
                .map(|(i, _)| {
                    text[i..]
                        .split(" matched")
                        .next()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect();
            figures.push((pruned, text));
        }
        // `[total, matched]` file ranges of the feature scan (the spine's has no statistics
        // to prune by, and none are shown for it when nothing is pruned).
        let ranges = |figures: &[String]| -> Vec<[usize; 2]> {
            figures
                .iter()
                .map(|f| {
                    let numbers: Vec<usize> = f
                        .split(|c: char| !c.is_ascii_digit())
                        .filter_map(|n| n.parse().ok())
                        .collect();
                    [numbers[0], numbers[1]]
                })
                .collect()
        };
        let (local, cluster) = (&figures[0], &figures[1]);
        assert!(
            cluster.1.contains("DistributedExec"),
            "not distributed:\n{}",
            cluster.1
        );
        assert_eq!(
            ranges(&local.0),
            vec![[24, 1]],
            "single-node pruning changed: {query}\n{}",
            local.1
        );
        // The workers' tasks split each file into byte ranges: all but the one month's go.
        let distributed = ranges(&cluster.0);
        assert!(
            distributed.len() == 1
                && distributed[0][0] > 24
                && distributed[0][1] * 10 <= distributed[0][0],
            "the workers read {distributed:?} of the file ranges:\n{}",
            cluster.1
        );
    }
}

/// A Delta table that needs deltalake-core's own reader (here, column mapping), whose scan
/// has no codec, in a distributed query: a clear error saying to run it in one process, not
/// a failure deep in the codec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_table_needing_deltalakes_reader_is_refused_on_workers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hc = Hindcast::with_defaults(None).expect("session");
    let location = dir.path().join("t");
    run(
        &hc,
        &format!(
            "CREATE EXTERNAL TABLE t (user_id BIGINT, ts TIMESTAMP, v BIGINT) STORED AS DELTA \
             LOCATION '{}'",
            location.display()
        ),
    )
    .await;
    run(&hc, "INSERT INTO t SELECT value AS user_id, TIMESTAMP '2025-01-01 00:00:00' AS ts, value AS v FROM generate_series(1, 9)").await;
    crate::delta::commit_column_mapping(&location, 2);

    let workers = start_workers(3, None).await;
    let cluster = cluster_session(8192, 4, &workers).await;
    let create = format!(
        "CREATE FEATURE VIEW f ENTITY (user_id) TIMESTAMP ts STORED AS DELTA LOCATION '{}'",
        location.display()
    );
    run(&cluster, &create).await;
    let query = "SELECT count(*) AS n, sum(v) AS s FROM f";
    let message = error(&cluster, query).await;
    assert!(
        message.contains("a Delta table with deletion vectors, column mapping or another reader feature cannot be read by workers yet"),
        "{message}"
    );
    run(&cluster, "SET hindcast.workers = ''").await;
    let rows = run(&cluster, query).await;
    let text = pretty_format_batches(&rows).expect("print").to_string();
    assert!(text.contains("| 9 | 45 |"), "{text}");
}

/// The README's training set, its Delta view included, written by a coordinator: the same
/// rows, checksum and Delta version as in one process, valid, and the joins' counts from
/// the workers' metrics (the time figures, a custom metric, do not travel and are left
/// unset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_sets_manifest_counts_the_workers_joins() {
    let (hc, local) = example_sessions().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let copy = |out: &std::path::Path| {
        format!(
            "COPY (SELECT * FROM historical_features('labels', 'churn_model', 'user_plan:plan')) \
             TO '{}/' STORED AS PARQUET",
            out.display()
        )
    };
    run(&hc, &copy(&dir.path().join("cluster"))).await;
    run(&local, &copy(&dir.path().join("local"))).await;
    let cluster = manifest::read(&dir.path().join("cluster")).expect("manifest");
    let single = manifest::read(&dir.path().join("local")).expect("manifest");
    assert_eq!(cluster.checksum, single.checksum);
    let (c, s) = (&cluster.point_in_time, &single.point_in_time);
    assert_eq!(
        (c.joins, c.matched_rows, c.future_matches),
        (s.joins, s.matched_rows, 0)
    );
    assert_eq!(c.joins, 3);
    let delta_version = |m: &manifest::Manifest| {
        m.sources
            .iter()
            .find(|source| source.name == "user_plan")
            .and_then(|source| source.delta_version)
    };
    assert_eq!(delta_version(&cluster), Some(2));
    assert_eq!(delta_version(&single), Some(2));
    assert!(
        s.max_feature_lead.is_some() && s.spine_time_min.is_some(),
        "{s:?}"
    );
    assert_eq!((&c.max_feature_lead, &c.spine_time_min), (&None, &None));
    assert!(
        manifest::validate(&dir.path().join("cluster"), 1.0)
            .await
            .expect("validate")
            .iter()
            .all(|check| check.passed)
    );
}
