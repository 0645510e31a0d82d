#!/usr/bin/env python3
"""Workload W, first cut: windowed point-in-time aggregations.

For every label (user, time), six aggregates of the user's transactions over three
trailing windows (7, 30 and 90 days, both ends inclusive), computed by:
  - hindcast: an aggregation feature view joined FOR SYSTEM_TIME AS OF;
  - DuckDB: the ANSI formulation, labels and transactions in one UNION ALL with RANGE
    windows per user, the label rows kept.
Both write Parquet; the answers are compared row by row (floats to 1e-9 relative) and
the run fails on any difference. Times and peak RSS are per process, best of --reps.

Usage: window_bench.py --hindcast target/release/hindcast [--labels N] [--transactions M]
"""
import argparse
import os
import resource
import subprocess
import sys
import time

import duckdb

AGGREGATES = [
    # (hindcast, duckdb over the union, name)
    ("count(*) OVER INTERVAL '7 days'", "count(amount_or_null) OVER w7", "txn_count_7d"),
    ("sum(amount) OVER INTERVAL '30 days'", "sum(amount) OVER w30", "spend_30d"),
    ("avg(amount) OVER INTERVAL '30 days'", "avg(amount) OVER w30", "avg_amount_30d"),
    ("max(amount) OVER INTERVAL '7 days'", "max(amount) OVER w7", "max_amount_7d"),
    ("count(DISTINCT merchant) OVER INTERVAL '90 days'", "count(DISTINCT merchant) OVER w90", "merchants_90d"),
    ("last(category) OVER INTERVAL '90 days'", "last_value(category IGNORE NULLS) OVER w90", "last_category"),
]


def generate(data, labels, transactions, users):
    os.makedirs(data, exist_ok=True)
    tx = os.path.join(data, "transactions.parquet")
    lb = os.path.join(data, "labels.parquet")
    if os.path.exists(tx) and os.path.exists(lb):
        return tx, lb
    con = duckdb.connect()
    con.execute("SELECT setseed(0.42)")
    # Distinct seconds per transaction so ties on time (whose order differs between the
    # two formulations' last()) do not occur; two years of history.
    con.execute(f"""
        COPY (SELECT (hash(i) % {users})::BIGINT AS user_id,
                     TIMESTAMP '2024-01-01' + to_seconds((i * 7919) % (730 * 86400)) AS ts,
                     round(random() * 500, 2) AS amount,
                     'm' || (hash(i * 31) % 200)::VARCHAR AS merchant,
                     CASE WHEN random() < 0.1 THEN NULL ELSE 'c' || (hash(i * 17) % 12)::VARCHAR END AS category
              FROM range({transactions}) t(i)
              ORDER BY ts) TO '{tx}' (FORMAT PARQUET)""")
    con.execute(f"""
        COPY (SELECT i AS label_id, (hash(i * 13) % {users})::BIGINT AS user_id,
                     TIMESTAMP '2025-07-01' + to_seconds((hash(i * 101) % (180 * 86400))::BIGINT) AS ts
              FROM range({labels}) t(i)) TO '{lb}' (FORMAT PARQUET)""")
    return tx, lb


def run(command, reps):
    best, rss = None, None
    for _ in range(reps):
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"failed: {' '.join(command)[:200]}\n{proc.stderr[-2000:]}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        best = elapsed if best is None else min(best, elapsed)
        rss = max(rss or 0, after, before)
    return best


def peak_rss_mib(command):
    proc = subprocess.run(["/usr/bin/time", "-f", "%M"] + command, capture_output=True, text=True)
    return int(proc.stderr.strip().splitlines()[-1]) / 1024


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--hindcast", required=True)
    p.add_argument("--labels", type=int, default=100_000)
    p.add_argument("--transactions", type=int, default=5_000_000)
    p.add_argument("--users", type=int, default=50_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--data", default=os.path.expanduser("~/.cache/hindcast-window-bench"))
    args = p.parse_args()
    data = os.path.join(args.data, f"{args.labels}x{args.transactions}")
    tx, lb = generate(data, args.labels, args.transactions, args.users)
    out_h = os.path.join(data, "out_hindcast.parquet")
    out_d = os.path.join(data, "out_duckdb.parquet")

    aggs = ",\n  ".join(f"{h} AS {n}" for h, _, n in AGGREGATES)
    names = ", ".join(f"v.{n}" for _, _, n in AGGREGATES)
    hindcast_sql = f"""
CREATE FEATURE VIEW user_txn ENTITY (user_id) TIMESTAMP ts AGGREGATE (
  {aggs}) STORED AS PARQUET LOCATION '{tx}';
CREATE EXTERNAL TABLE labels STORED AS PARQUET LOCATION '{lb}';
COPY (SELECT l.label_id, {names} FROM labels l
      LEFT JOIN user_txn FOR SYSTEM_TIME AS OF l.ts AS v ON v.user_id = l.user_id)
  TO '{out_h}' STORED AS PARQUET;"""
    windows = "\n".join(
        f"  w{d} AS (PARTITION BY user_id ORDER BY ts RANGE BETWEEN INTERVAL {d} DAYS PRECEDING AND CURRENT ROW),"
        for d in (7, 30, 90)).rstrip(",")
    daggs = ",\n    ".join(f"{d} AS {n}" for _, d, n in AGGREGATES)
    duckdb_sql = f"""
COPY (
  SELECT label_id, {", ".join(n for _, _, n in AGGREGATES)} FROM (
    SELECT label_id, {daggs}
    FROM (SELECT label_id, user_id, ts, NULL::DOUBLE AS amount, NULL AS amount_or_null,
                 NULL::VARCHAR AS merchant, NULL::VARCHAR AS category FROM '{lb}'
          UNION ALL
          SELECT NULL, user_id, ts, amount, 1, merchant, category FROM '{tx}')
    WINDOW
{windows})
  WHERE label_id IS NOT NULL) TO '{out_d}' (FORMAT PARQUET);"""
    duck_script = os.path.join(data, "duckdb_query.py")
    with open(duck_script, "w") as f:
        f.write(f"import duckdb\nduckdb.connect().execute({duckdb_sql!r})\n")

    h_cmd = [args.hindcast, "-q", "-c", hindcast_sql]
    d_cmd = [sys.executable, duck_script]
    t_h = run(h_cmd, args.reps)
    t_d = run(d_cmd, args.reps)
    r_h = peak_rss_mib(h_cmd)
    r_d = peak_rss_mib(d_cmd)

    con = duckdb.connect()
    cols = [n for _, _, n in AGGREGATES]
    diff = " OR ".join(
        f"NOT (h.{c} IS NOT DISTINCT FROM d.{c} OR abs(h.{c} - d.{c}) <= 1e-9 * greatest(1, abs(d.{c})))"
        if c in ("spend_30d", "avg_amount_30d", "max_amount_7d") else f"h.{c} IS DISTINCT FROM d.{c}"
        for c in cols)
    rows_h, rows_d = (con.execute(f"SELECT count(*) FROM '{o}'").fetchone()[0] for o in (out_h, out_d))
    bad = con.execute(f"SELECT count(*) FROM '{out_h}' h FULL JOIN '{out_d}' d USING (label_id) WHERE h.label_id IS NULL OR d.label_id IS NULL OR {diff}").fetchone()[0]
    print(f"W ({args.labels} labels x {args.transactions} transactions, {args.users} users, 6 aggregates over 3 windows)")
    print(f"  hindcast: {t_h:.2f} s, peak RSS {r_h:.0f} MiB")
    print(f"  DuckDB (UNION ALL + RANGE windows): {t_d:.2f} s, peak RSS {r_d:.0f} MiB")
    print(f"  ratio hindcast/DuckDB: {t_h / t_d:.2f}x; rows {rows_h} and {rows_d}; {bad} differing rows")
    if bad or rows_h != rows_d or rows_h != args.labels:
        sys.exit("the answers differ")


if __name__ == "__main__":
    main()
