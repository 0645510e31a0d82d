//! Pure helpers tested on their own, against the obvious slow version, on random inputs:
//! the key-time sort's radix sort and nearly-sorted merge, and the shell's test for where a
//! typed statement ends.

use hindcast::physical::key_time_sort::radix::{radix_sort_by_rank, sort_nearly_sorted};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[path = "../crates/hindcast-cli/src/input.rs"]
mod input;

/// `(rank << 32 | row)` elements: the radix sort orders them by rank and keeps rows of one
/// rank in their input order (stable), as a stable sort by rank does.
#[test]
fn radix_sort_by_rank_is_a_stable_sort_by_rank() {
    let mut rng = StdRng::seed_from_u64(7);
    for case in 0..300 {
        let n = rng.random_range(0..2000);
        // Ranges of 1 bit to 32 bits: one pass, several, and passes skipped because every
        // element has the same digit.
        let bits = rng.random_range(1..=32u32);
        let max = (1u64 << bits) - 1;
        let few = rng.random_bool(0.3);
        let mut packed: Vec<u64> = (0..n as u64)
            .map(|row| {
                let rank = if few {
                    rng.random_range(0..4.min(max + 1))
                } else {
                    rng.random_range(0..=max)
                };
                (rank << 32) | row
            })
            .collect();
        let mut expected = packed.clone();
        expected.sort_by_key(|e| e >> 32);
        let spare = radix_sort_by_rank(&mut packed, bits);
        assert_eq!(packed, expected, "case {case}: {n} rows, {bits} bits");
        assert_eq!(spare.len(), packed.len(), "case {case}: the spare buffer");
    }
}

/// A stable sort by time of `(time, row)` pairs that are mostly in order, with late rows
/// (and ties among them), equals the standard library's stable sort.
#[test]
fn sort_nearly_sorted_equals_a_stable_sort() {
    let mut rng = StdRng::seed_from_u64(11);
    let (mut main, mut late) = (vec![], vec![]);
    for case in 0..500 {
        let n = rng.random_range(0..300);
        let late_rate = [0.0, 0.01, 0.2, 1.0][rng.random_range(0..4)];
        let mut time = 0u64;
        let mut group: Vec<(u64, u32)> = (0..n as u32)
            .map(|row| {
                time += rng.random_range(0..3);
                let t = if rng.random_bool(late_rate) {
                    rng.random_range(0..=time)
                } else {
                    time
                };
                (t, row)
            })
            .collect();
        let mut expected = group.clone();
        expected.sort_by_key(|&(t, _)| t);
        sort_nearly_sorted(&mut group, &mut main, &mut late);
        assert_eq!(
            group, expected,
            "case {case}: {n} rows, late rate {late_rate}"
        );
    }
}

/// The shell's multi-line input: a statement ends at a `;` outside strings, quoted
/// identifiers and `--` comments, with only blanks after it.
#[test]
fn ends_statement_reads_quotes_and_comments() {
    let cases = [
        ("SELECT 1;", true),
        ("SELECT 1", false),
        ("SELECT 1;  \n", true),
        ("SELECT ';'", false),
        ("SELECT ';';", true),
        ("SELECT \"a;\" FROM t", false),
        ("SELECT 1 -- done;", false),
        ("SELECT 1; -- a comment after the end", true),
        ("SELECT 1; SELECT", false),
        ("SELECT 'it''s';", true),
        ("SELECT 'unterminated;", false),
        ("", false),
        (";", true),
    ];
    for (sql, ends) in cases {
        assert_eq!(input::ends_statement(sql), ends, "{sql:?}");
    }
    assert_eq!(input::without_leading_comments("-- note\n  \\d"), "\\d");
    assert_eq!(input::without_leading_comments("-- only a comment"), "");
    assert_eq!(
        input::without_leading_comments("  SELECT 1; -- x"),
        "SELECT 1; -- x"
    );
}

/// Random statements built from pieces, against a direct reading of the rule.
#[test]
fn ends_statement_matches_a_reference_on_random_input() {
    let pieces = [
        "SELECT 1", ";", "'a;b'", "\"c;\"", "-- x;\n", " ", "\n", "x", "''",
    ];
    let mut rng = StdRng::seed_from_u64(3);
    for _ in 0..2000 {
        let n = rng.random_range(0..8);
        let sql: String = (0..n)
            .map(|_| pieces[rng.random_range(0..pieces.len())])
            .collect();
        assert_eq!(input::ends_statement(&sql), reference(&sql), "{sql:?}");
    }

    /// Strip strings, identifiers and comments, then look at the last non-blank character.
    fn reference(sql: &str) -> bool {
        let mut code = String::new();
        let mut rest = sql;
        while let Some(c) = rest.chars().next() {
            match c {
                '\'' | '"' => match rest[1..].find(c) {
                    Some(end) => {
                        code.push('x');
                        rest = &rest[end + 2..];
                    }
                    None => {
                        code.push('x');
                        rest = "";
                    }
                },
                '-' if rest.starts_with("--") => {
                    rest = rest.find('\n').map_or("", |end| &rest[end..]);
                }
                _ => {
                    code.push(c);
                    rest = &rest[c.len_utf8()..];
                }
            }
        }
        code.trim_end().ends_with(';')
    }
}

/// A feature view's definition as a manifest records it reads back as the same statement:
/// quoted names, every clause, options with quotes in them, and a query with an ASOF join.
#[test]
fn feature_view_definitions_read_back_as_written() {
    use hindcast::sql::{HindcastDialect, HindcastStatement, parse_statements};
    let parse = |sql: &str| -> String {
        let mut statements =
            parse_statements(sql, &HindcastDialect::default(), 50).expect("parses");
        let Some((HindcastStatement::CreateFeatureView(create), _)) = statements.pop() else {
            panic!("not a feature view: {sql}");
        };
        create.to_string()
    };
    for sql in [
        "CREATE FEATURE VIEW \"Stats\" ENTITY (user_id, \"Region\") TIMESTAMP ts CREATED created_at \
         TTL INTERVAL '90 days' STORED AS PARQUET PARTITIONED BY (year, month) \
         LOCATION '/data/it''s here/' OPTIONS ('format.has_header' 'true', 'aws.region' 'eu')",
        "CREATE FEATURE VIEW plan ENTITY (user_id) TIMESTAMP changed_at STORED AS DELTA \
         LOCATION 's3://bucket/plan/' OPTIONS ('version' '3')",
        "CREATE FEATURE VIEW recent ENTITY (k) TIMESTAMP ts AS SELECT l.k, l.ts, r.v FROM l \
         ASOF JOIN r MATCH_CONDITION (l.ts >= r.ts) ON l.k = r.k WHERE l.ts > TIMESTAMP '2025-01-01'",
    ] {
        let once = parse(sql);
        assert_eq!(parse(&once), once, "{sql}");
        for clause in ["ENTITY", "TIMESTAMP", "LOCATION", "AS", "TTL", "OPTIONS"] {
            assert_eq!(
                sql.contains(&format!(" {clause} ")),
                once.contains(&format!(" {clause} ")),
                "{clause} in {once}"
            );
        }
    }
}
