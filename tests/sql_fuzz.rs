//! Seeded random statements over hindcast's grammar, most of them broken on purpose: ASOF
//! joins in every form with random `MATCH_CONDITION` terms and keys, `FOR SYSTEM_TIME AS
//! OF`, the `ROW_NUMBER` form, feature DDL, `historical_features` arguments and session
//! options, then token-level mutations (a token dropped, repeated, swapped, replaced, the
//! statement cut short). Each is planned and run against small tables; none may panic,
//! hang, or fail with an internal error: a user's mistake is a parse or planning error
//! that names it.
//!
//! `HINDCAST_FUZZ_STATEMENTS` (default 10000) and `HINDCAST_FUZZ_SEED` change the run; a
//! failure prints the seed and the statement.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use datafusion::common::DataFusionError;
use futures::FutureExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use hindcast::Hindcast;

/// Statements per session: a fresh one then, so DDL the fuzzer ran (a view dropped or
/// replaced) does not make all later statements fail the same way.
const PER_SESSION: usize = 250;

/// The tables every statement may name: a label table `l`, a feature table `r`, feature
/// views over it (one plain, one aggregating) and a service.
const SETUP: &[&str] = &[
    "CREATE TABLE l AS SELECT * FROM (VALUES \
       (1, TIMESTAMP '2025-01-02 00:00:00', 10, 'a'), \
       (1, TIMESTAMP '2025-01-05 00:00:00', 11, 'b'), \
       (2, TIMESTAMP '2025-01-03 00:00:00', 12, NULL), \
       (NULL, TIMESTAMP '2025-01-04 00:00:00', 13, 'c'), \
       (3, NULL, 14, 'd')) AS t(k, t, n, s)",
    "CREATE TABLE r AS SELECT * FROM (VALUES \
       (1, TIMESTAMP '2025-01-01 00:00:00', TIMESTAMP '2025-01-01 00:00:00', 1.5, 'x'), \
       (1, TIMESTAMP '2025-01-01 00:00:00', TIMESTAMP '2025-01-02 00:00:00', 2.5, 'y'), \
       (1, TIMESTAMP '2025-01-04 00:00:00', NULL, 3.5, NULL), \
       (2, TIMESTAMP '2025-01-02 00:00:00', TIMESTAMP '2025-01-02 00:00:00', NULL, 'z'), \
       (NULL, TIMESTAMP '2025-01-01 00:00:00', NULL, 9.5, 'w')) AS t(k, t, created, v, s)",
    "CREATE FEATURE VIEW fv ENTITY (k) TIMESTAMP t CREATED created TTL INTERVAL '3 days' \
       AS SELECT * FROM r",
    "CREATE FEATURE VIEW av ENTITY (k) TIMESTAMP t \
       AGGREGATE (count(*) OVER INTERVAL '2 days' AS c2, sum(v) OVER INTERVAL '7 days' AS s7) \
       AS SELECT * FROM r",
    "CREATE FEATURE SERVICE svc AS fv (v, s), av (*)",
];

fn pick<'a, T: ?Sized>(rng: &mut StdRng, items: &[&'a T]) -> &'a T {
    items[rng.random_range(0..items.len())]
}

/// A value or expression where the grammar wants a time (or, broken, something else).
fn time(rng: &mut StdRng, side: &str) -> String {
    match rng.random_range(0..10) {
        0 => format!("{side}.t - INTERVAL '{} day'", rng.random_range(-2..3)),
        1 => "TIMESTAMP '2025-01-03 00:00:00'".to_string(),
        2 => format!(
            "{side}.{}",
            pick(rng, &["n", "v", "s", "k", "created", "nope"])
        ),
        3 => pick(
            rng,
            &["1", "NULL", "now()", "'2025-01-01'", "CAST(1 AS DATE)"],
        )
        .to_string(),
        _ => format!("{side}.t"),
    }
}

/// One `MATCH_CONDITION` term.
fn term(rng: &mut StdRng) -> String {
    let op = pick(rng, &[">=", ">", "<=", "<", "=", "<>"]);
    let interval = pick(
        rng,
        &[
            "INTERVAL '1 day'",
            "INTERVAL '-1 days'",
            "INTERVAL '0 days'",
            "2",
            "'x'",
            "NULL",
        ],
    );
    match rng.random_range(0..12) {
        0 => format!("l.t - r.t {} {interval}", pick(rng, &["<=", "<", ">="])),
        1 => format!("abs(l.t - r.t) <= {interval}"),
        2 => format!("r.t + {interval} >= l.t"),
        3 => format!(
            "latest_by({})",
            pick(rng, &["r.created", "r.v", "l.t", "", "r.created, r.v"])
        ),
        4 => format!("nearest({}, {})", time(rng, "l"), time(rng, "r")),
        5 => format!("nearest({})", time(rng, "l")),
        6 => format!("({} OR {})", term(rng), term(rng)),
        7 => format!("NOT {}", term(rng)),
        _ => format!("{} {op} {}", time(rng, "l"), time(rng, "r")),
    }
}

fn match_condition(rng: &mut StdRng) -> String {
    let terms: Vec<String> = (0..rng.random_range(1..4)).map(|_| term(rng)).collect();
    format!("MATCH_CONDITION ({})", terms.join(" AND "))
}

fn keys(rng: &mut StdRng) -> String {
    pick(
        rng,
        &[
            "ON l.k = r.k",
            "ON l.k = r.k",
            "ON r.k = l.k AND l.s = r.s",
            "ON l.k = r.v",
            "ON l.k > r.k",
            "ON l.k = r.k OR l.n = r.k",
            "ON TRUE",
            "USING (k)",
            "USING (s)",
            "USING (k, nope)",
            "",
        ],
    )
    .to_string()
}

/// The right side of a join: the table, a view, a subquery.
fn right(rng: &mut StdRng) -> String {
    pick(
        rng,
        &[
            "r",
            "r",
            "fv r",
            "(SELECT * FROM r WHERE v > 1) r",
            "(SELECT k, t, v FROM r) AS r",
            "l AS r",
            "av r",
        ],
    )
    .to_string()
}

fn projection(rng: &mut StdRng) -> String {
    pick(
        rng,
        &[
            "*",
            "l.k, l.t, r.v",
            "l.*, r.v, r.s",
            "count(*), sum(r.v)",
            "l.k, r.t, r.created",
            "r.*",
            "l.k, max(r.v)",
        ],
    )
    .to_string()
}

fn tail(rng: &mut StdRng) -> String {
    pick(
        rng,
        &[
            "",
            "",
            " ORDER BY 1",
            " WHERE l.k = 1",
            " WHERE r.v IS NULL",
            " GROUP BY l.k",
            " LIMIT 2",
            " ORDER BY l.t DESC NULLS FIRST LIMIT 1",
        ],
    )
    .to_string()
}

/// A join the grammar accepts, in one of its forms, so that mutations start from (and
/// the run executes) well-formed statements too.
fn valid_asof_query(rng: &mut StdRng) -> String {
    let right = pick(rng, &["r", "fv r", "(SELECT * FROM r WHERE v > 1) r"]);
    let op = pick(rng, &[">=", ">", "<=", "<"]);
    let keys = pick(
        rng,
        &["ON l.k = r.k", "USING (k)", "ON r.k = l.k AND l.s = r.s"],
    );
    let join = match rng.random_range(0..5) {
        0 => {
            let mut terms = vec![format!("l.t {op} r.t")];
            if op.starts_with('>') && rng.random_bool(0.5) {
                terms.push(format!(
                    "l.t - r.t <= INTERVAL '{} days'",
                    rng.random_range(0..4)
                ));
            }
            if rng.random_bool(0.5) {
                terms.push("latest_by(r.created)".to_string());
            }
            format!(
                "ASOF JOIN {right} MATCH_CONDITION ({}) {keys}",
                terms.join(" AND ")
            )
        }
        1 => format!(
            "ASOF JOIN {right} MATCH_CONDITION (nearest(l.t, r.t){}) {keys}",
            pick(
                rng,
                &[
                    "",
                    " AND l.t <> r.t",
                    " AND abs(l.t - r.t) <= INTERVAL '1 day'"
                ]
            )
        ),
        2 => format!(
            "{} {right} {}",
            pick(rng, &["ASOF JOIN", "ASOF LEFT JOIN", "LEFT ASOF JOIN"]),
            pick(
                rng,
                &[
                    "ON l.k = r.k AND l.t >= r.t",
                    "USING (k, t)",
                    "ON l.t > r.t AND r.k = l.k"
                ]
            )
        ),
        3 => format!(
            "LEFT JOIN {} FOR SYSTEM_TIME AS OF l.t AS r ON r.k = l.k",
            pick(rng, &["fv", "av"])
        ),
        _ => format!(
            "ASOF JOIN {right} MATCH_CONDITION (l.t {op} r.t) {keys} \
             ASOF JOIN r AS r2 MATCH_CONDITION (l.t >= r2.t) ON l.k = r2.k"
        ),
    };
    let projection = if join.contains("av AS r") {
        "l.k, l.t, r.c2, r.s7"
    } else {
        pick(
            rng,
            &["*", "l.k, l.t, r.v", "count(*), sum(r.v)", "l.k, r.t, r.s"],
        )
    };
    format!("SELECT {projection} FROM l {join}{}", tail(rng))
}

fn asof_query(rng: &mut StdRng) -> String {
    if rng.random_bool(0.5) {
        return valid_asof_query(rng);
    }
    let join = match rng.random_range(0..5) {
        // Snowflake's form.
        0 | 1 => format!(
            "ASOF JOIN {} {} {}",
            right(rng),
            match_condition(rng),
            keys(rng)
        ),
        // DuckDB's and ClickHouse's.
        2 => {
            let kind = pick(rng, &["ASOF JOIN", "ASOF LEFT JOIN", "LEFT ASOF JOIN"]);
            let on = match rng.random_range(0..4) {
                0 => format!("USING (k, {})", pick(rng, &["t", "n", "s"])),
                1 => format!("ON l.k = r.k AND {}", term(rng)),
                2 => format!("ON {}", term(rng)),
                _ => format!("ON l.k = r.k AND {} AND {}", term(rng), term(rng)),
            };
            format!("{kind} {} {on}", right(rng))
        }
        // The temporal join on a view.
        3 => format!(
            "LEFT JOIN {} FOR SYSTEM_TIME AS OF {} AS r {}",
            pick(rng, &["fv", "av", "r", "l", "(SELECT * FROM fv)"]),
            time(rng, "l"),
            keys(rng)
        ),
        // Two joins chained.
        _ => format!(
            "ASOF JOIN {} {} {} ASOF JOIN r AS r2 MATCH_CONDITION (l.t >= r2.t) ON l.k = r2.k",
            right(rng),
            match_condition(rng),
            keys(rng)
        ),
    };
    let left = pick(
        rng,
        &[
            "l",
            "l",
            "(SELECT * FROM l WHERE n > 10) l",
            "r AS l",
            "fv l",
        ],
    );
    format!("SELECT {} FROM {left} {join}{}", projection(rng), tail(rng))
}

fn row_number_query(rng: &mut StdRng) -> String {
    let bound = pick(
        rng,
        &[
            "",
            " AND r.t >= l.t - INTERVAL '2 days'",
            " AND r.t > l.t",
            " OR r.t IS NULL",
        ],
    );
    let order = pick(
        rng,
        &["r.t DESC", "r.t", "r.t DESC, r.created DESC", "r.v DESC"],
    );
    let partition = pick(rng, &["l.k, l.t", "l.k", "l.t, l.k", "l.n"]);
    let filter = pick(rng, &["rn = 1", "rn <= 1", "rn = 2", "rn = 1 AND v > 0"]);
    format!(
        "SELECT * FROM (SELECT l.k, l.t, r.v, ROW_NUMBER() OVER (PARTITION BY {partition} \
         ORDER BY {order}) AS rn FROM l LEFT JOIN r ON l.k = r.k AND r.t <= l.t{bound}) \
         WHERE {filter}"
    )
}

fn snapshot_query(rng: &mut StdRng) -> String {
    format!(
        "SELECT * FROM {} FOR SYSTEM_TIME AS OF {}",
        pick(rng, &["fv", "av", "r"]),
        pick(
            rng,
            &[
                "TIMESTAMP '2025-01-03 00:00:00'",
                "now()",
                "NULL",
                "'yesterday'",
                "1",
                "fv.t",
                "TIMESTAMP '2025-01-03' + INTERVAL '1 day'",
            ]
        )
    )
}

fn retrieval_query(rng: &mut StdRng) -> String {
    let spine = pick(
        rng,
        &[
            "'l'",
            "'SELECT k, t AS event_timestamp FROM l'",
            "'SELECT * FROM l WHERE'",
            "l",
            "1",
            "''",
        ],
    );
    let mut args = vec![spine.to_string()];
    for _ in 0..rng.random_range(0..4) {
        args.push(
            pick(
                rng,
                &[
                    "'svc'",
                    "'fv:v'",
                    "'fv:*'",
                    "'av:c2'",
                    "'fv:nope'",
                    "'nope:v'",
                    "'fv'",
                    "':'",
                    "full_feature_names => true",
                    "full_feature_names => 'yes'",
                    "filter_by_created_timestamp => false",
                    "exact => true",
                    "nope => 1",
                    "NULL",
                ],
            )
            .to_string(),
        );
    }
    format!("SELECT * FROM historical_features({})", args.join(", "))
}

fn ddl(rng: &mut StdRng) -> String {
    // New names only, so the fixture's views stay (mutations may still reach them).
    let name = format!("z{}", rng.random_range(0..4));
    match rng.random_range(0..6) {
        0 | 1 => {
            let mut clauses = vec![format!(
                "ENTITY ({})",
                pick(rng, &["k", "k, s", "nope", ""])
            )];
            clauses.push(format!(
                "TIMESTAMP {}",
                pick(rng, &["t", "created", "v", "s", "nope"])
            ));
            if rng.random_bool(0.4) {
                clauses.push(format!(
                    "CREATED {}",
                    pick(rng, &["created", "t", "v", "nope"])
                ));
            }
            if rng.random_bool(0.4) {
                clauses.push(format!(
                    "TTL {}",
                    pick(
                        rng,
                        &[
                            "INTERVAL '1 day'",
                            "INTERVAL '-1 day'",
                            "INTERVAL '0 days'",
                            "3",
                            "'x'",
                            "INTERVAL '1 month'"
                        ]
                    )
                ));
            }
            if rng.random_bool(0.3) {
                let aggregates: Vec<String> = (0..rng.random_range(0..3))
                    .map(|i| {
                        format!(
                            "{}({}) OVER {} AS a{i}",
                            pick(
                                rng,
                                &[
                                    "count",
                                    "sum",
                                    "avg",
                                    "min",
                                    "max",
                                    "last",
                                    "stddev_samp",
                                    "median",
                                    "count_distinct"
                                ]
                            ),
                            pick(rng, &["*", "v", "s", "t", "nope", "v + 1"]),
                            pick(
                                rng,
                                &[
                                    "INTERVAL '1 day'",
                                    "INTERVAL '0 days'",
                                    "INTERVAL '-1 day'",
                                    "3",
                                    "INTERVAL '1 month'"
                                ]
                            )
                        )
                    })
                    .collect();
                clauses.push(format!("AGGREGATE ({})", aggregates.join(", ")));
            }
            let source = match rng.random_range(0..4) {
                0 => format!(
                    "STORED AS {} {}LOCATION '{}'",
                    pick(rng, &["PARQUET", "CSV", "DELTA", "JSON", "ORC"]),
                    pick(rng, &["", "PARTITIONED BY (date) ", "PARTITIONED BY () "]),
                    pick(
                        rng,
                        &[
                            "/nonexistent/dir/",
                            "/nonexistent/file.parquet",
                            "",
                            "s3://"
                        ]
                    )
                ),
                _ => format!(
                    "AS {}",
                    pick(
                        rng,
                        &[
                            "SELECT * FROM r",
                            "SELECT k, t FROM r",
                            "SELECT * FROM missing",
                            "SELECT 1",
                            "VALUES (1)"
                        ]
                    )
                ),
            };
            clauses.push(source);
            format!(
                "CREATE {}FEATURE VIEW {name} {}",
                pick(rng, &["", "OR REPLACE ", "OR REPLACE "]),
                clauses.join(" ")
            )
        }
        2 => format!(
            "CREATE FEATURE SERVICE {name} AS {}",
            pick(
                rng,
                &[
                    "fv (v)",
                    "fv (*), av (c2)",
                    "fv (nope)",
                    "nope (*)",
                    "",
                    "fv ()",
                    "fv (v), fv (v)"
                ]
            )
        ),
        3 => format!(
            "DROP FEATURE {} {}{name}",
            pick(rng, &["VIEW", "SERVICE"]),
            pick(rng, &["", "IF EXISTS "])
        ),
        4 => pick(
            rng,
            &[
                "SHOW FEATURE VIEWS",
                "SHOW FEATURE SERVICES",
                "DESCRIBE fv",
                "DESCRIBE FEATURE VIEW fv",
                "DESCRIBE svc",
                "DESCRIBE nope",
            ],
        )
        .to_string(),
        _ => format!(
            "SET hindcast.{} = {}",
            pick(
                rng,
                &["key_time_sort", "rewrite_row_number", "nope", "workers"]
            ),
            pick(
                rng,
                &["true", "false", "'maybe'", "1", "''", "'a:b:c'", "NULL"]
            )
        ),
    }
}

fn statement(rng: &mut StdRng) -> String {
    let sql = match rng.random_range(0..10) {
        0..=3 => asof_query(rng),
        4 => row_number_query(rng),
        5 => snapshot_query(rng),
        6 => retrieval_query(rng),
        _ => ddl(rng),
    };
    if rng.random_bool(0.1) {
        format!("EXPLAIN {sql}")
    } else {
        sql
    }
}

/// Words the mutations put in: hindcast's keywords and the tokens around them.
const VOCABULARY: &[&str] = &[
    "ASOF",
    "JOIN",
    "LEFT",
    "MATCH_CONDITION",
    "ON",
    "USING",
    "FOR",
    "SYSTEM_TIME",
    "AS",
    "OF",
    "FEATURE",
    "VIEW",
    "SERVICE",
    "ENTITY",
    "TIMESTAMP",
    "CREATED",
    "TTL",
    "INTERVAL",
    "AGGREGATE",
    "OVER",
    "STORED",
    "LOCATION",
    "PARTITIONED",
    "BY",
    "SELECT",
    "FROM",
    "WHERE",
    "AND",
    "OR",
    "NOT",
    "(",
    ")",
    ",",
    "'",
    "''",
    ">=",
    "<",
    "=",
    "-",
    "NULL",
    "0",
    "-1",
    "99999999999999999999",
    "'1 day'",
    "latest_by",
    "nearest",
    "historical_features",
    "l.t",
    "r.t",
    "r.created",
    "fv",
    "av",
    "svc",
    "*",
    ";",
    "=>",
    "EXPLAIN",
    "ROW_NUMBER()",
];

/// `sql` split into words and single punctuation marks (quoted strings kept whole).
fn tokens(sql: &str) -> Vec<String> {
    let mut out = vec![];
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        let mut token = c.to_string();
        if c == '\'' {
            for d in chars.by_ref() {
                token.push(d);
                if d == '\'' {
                    break;
                }
            }
        } else if c.is_alphanumeric() || c == '_' || c == '.' {
            while let Some(&d) = chars.peek() {
                if !(d.is_alphanumeric() || d == '_' || d == '.') {
                    break;
                }
                token.push(d);
                chars.next();
            }
        }
        out.push(token);
    }
    out
}

fn mutate(rng: &mut StdRng, sql: &str) -> String {
    let mut tokens = tokens(sql);
    for _ in 0..rng.random_range(1..4) {
        if tokens.is_empty() {
            break;
        }
        let i = rng.random_range(0..tokens.len());
        match rng.random_range(0..5) {
            0 => {
                tokens.remove(i);
            }
            1 => tokens.insert(i, tokens[i].clone()),
            2 if i + 1 < tokens.len() => tokens.swap(i, i + 1),
            3 => tokens.truncate(i),
            _ => tokens[i] = pick(rng, VOCABULARY).to_string(),
        }
    }
    tokens.join(" ")
}

enum Outcome {
    Ran,
    /// A parse, planning or execution error for the user's mistake.
    Refused,
    /// A panic, a hang or an internal error.
    Problem(String),
}

async fn run(hc: &Hindcast, sql: &str) -> Outcome {
    let work = async {
        match hc.sql(sql).await {
            Ok(frame) => frame.collect().await.map(|_| ()),
            Err(e) => Err(e),
        }
    };
    let outcome = tokio::time::timeout(
        Duration::from_secs(20),
        AssertUnwindSafe(work).catch_unwind(),
    );
    match outcome.await {
        Err(_) => Outcome::Problem("no answer within 20 s".to_string()),
        Ok(Err(panic)) => Outcome::Problem(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
        Ok(Ok(Ok(()))) => Outcome::Ran,
        Ok(Ok(Err(e))) => {
            let message = hindcast::error_message(&e);
            let internal = matches!(e.find_root(), DataFusionError::Internal(_))
                || message.contains("Internal error")
                || message.contains("panicked")
                || message.trim().is_empty();
            if internal {
                Outcome::Problem(format!("internal error: {message}"))
            } else {
                Outcome::Refused
            }
        }
    }
}

async fn session() -> Hindcast {
    let hc = Hindcast::with_defaults(None).expect("session");
    for sql in SETUP {
        crate::common::collect(&hc, sql).await;
    }
    hc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_broken_statements_never_panic_or_fail_internally() {
    let count: usize = std::env::var("HINDCAST_FUZZ_STATEMENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let seed: u64 = std::env::var("HINDCAST_FUZZ_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_261_204);
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut failures, mut succeeded, mut refused, mut mutated) = (vec![], 0, 0, 0);
    let mut hc = session().await;
    for i in 0..count {
        if i > 0 && i % PER_SESSION == 0 {
            hc = session().await;
        }
        let mut sql = statement(&mut rng);
        if rng.random_bool(0.5) {
            sql = mutate(&mut rng, &sql);
            mutated += 1;
        }
        match run(&hc, &sql).await {
            Outcome::Ran => succeeded += 1,
            Outcome::Refused => refused += 1,
            Outcome::Problem(problem) => failures.push(format!("{problem}\n    {sql}")),
        }
    }
    println!(
        "{count} statements (seed {seed}, {mutated} mutated): {succeeded} ran, {} failed with a user-facing error, {} problems",
        refused,
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "seed {seed}: {} of {count} statements panicked, hung or failed internally; the first:\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The generator is not only producing errors.
    assert!(succeeded > count / 20, "only {succeeded} of {count} ran");
}
