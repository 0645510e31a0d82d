#!/usr/bin/env python3
"""Workload W: windowed point-in-time aggregations.

For every label (user, time), six aggregates of the user's transactions over three
trailing windows (7, 30 and 90 days, both ends inclusive), computed by:
  - hindcast: an aggregation feature view joined FOR SYSTEM_TIME AS OF;
  - DuckDB: the ANSI formulation, labels and transactions in one UNION ALL with RANGE
    windows per user, the label rows kept;
  - Polars: the same union, sorted, with `rolling(period=..., group_by="user_id",
    closed="both")` per window length, the label rows kept. (A `join_asof` of the labels
    onto rolling aggregates of the transactions alone is not exact: it gives the window
    ending at the newest transaction, not at the label's time.)
Each writes Parquet; the answers are compared row by row (floats to 1e-9 relative) and
the run fails on any difference. Times and peak RSS are per process, best of --reps.

Usage: window_bench.py --hindcast target/release/hindcast [--labels N] [--transactions M]
       [--no-polars]
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


# The Polars formulation, as a script of its own (its time and RSS are its process's).
POLARS = """import polars as pl
tx = pl.scan_parquet({tx!r}).select(
    pl.lit(None, pl.Int64).alias("label_id"), "user_id", "ts", "amount", "merchant", "category",
    pl.lit(1, pl.Int32).alias("one"))
labels = pl.scan_parquet({lb!r}).select(
    "label_id", "user_id", "ts", pl.lit(None, pl.Float64).alias("amount"),
    pl.lit(None, pl.String).alias("merchant"), pl.lit(None, pl.String).alias("category"),
    pl.lit(None, pl.Int32).alias("one"))
union = pl.concat([labels, tx]).sort(["user_id", "ts"]).collect()

def rolling(period, *aggregates):
    # Windows by time, not by position: [ts - period, ts], events tied with a label at
    # its time included.
    return union.rolling(index_column="ts", period=period, group_by="user_id",
                         closed="both").agg(*aggregates).drop(["user_id", "ts"])

amounts = pl.col("amount").count()
w7 = rolling("7d", pl.col("one").count().alias("txn_count_7d"),
             pl.col("amount").max().alias("max_amount_7d"))
w30 = rolling("30d", pl.when(amounts > 0).then(pl.col("amount").sum()).alias("spend_30d"),
              pl.col("amount").mean().alias("avg_amount_30d"))
w90 = rolling("90d", pl.col("merchant").drop_nulls().n_unique().alias("merchants_90d"),
              pl.col("category").drop_nulls().last().alias("last_category"))
out = pl.concat([union.select("label_id"), w7, w30, w90], how="horizontal")
out.filter(pl.col("label_id").is_not_null()).write_parquet({out!r})
"""


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


def run(command, reps, timeout=None, optional=False):
    """Best wall time of `reps` runs. An `optional` engine that takes longer than `timeout`
    seconds or fails gives (None, why) instead of ending the run."""
    best, rss = None, None
    for _ in range(reps):
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None, f"did not finish in {timeout:.0f} s"
        elapsed = time.perf_counter() - start
        if proc.returncode != 0 and optional:
            killed = " (killed: out of memory?)" if proc.returncode == -9 else ""
            return None, f"failed after {elapsed:.0f} s with exit {proc.returncode}{killed}"
        if proc.returncode != 0:
            sys.exit(f"failed: {' '.join(command)[:200]}\n{proc.stderr[-2000:]}")
        after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        best = elapsed if best is None else min(best, elapsed)
        rss = max(rss or 0, after, before)
    return best, None


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
    p.add_argument("--no-polars", dest="polars", action="store_false")
    p.add_argument("--polars-timeout", type=float, default=1800,
                   help="seconds after which Polars' run is reported as not finished")
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
    out_p = os.path.join(data, "out_polars.parquet")
    polars_script = os.path.join(data, "polars_query.py")
    with open(polars_script, "w") as f:
        f.write(POLARS.format(tx=tx, lb=lb, out=out_p))

    h_cmd = [args.hindcast, "-q", "-c", hindcast_sql]
    d_cmd = [sys.executable, duck_script]
    p_cmd = [sys.executable, polars_script]
    t_h, _ = run(h_cmd, args.reps)
    t_d, _ = run(d_cmd, args.reps)
    r_h = peak_rss_mib(h_cmd)
    r_d = peak_rss_mib(d_cmd)
    t_p, why_p = run(p_cmd, args.reps, args.polars_timeout, optional=True) if args.polars else (None, None)
    r_p = peak_rss_mib(p_cmd) if t_p is not None else None

    con = duckdb.connect()
    cols = [n for _, _, n in AGGREGATES]
    diff = " OR ".join(
        f"NOT (h.{c} IS NOT DISTINCT FROM d.{c} OR abs(h.{c} - d.{c}) <= 1e-9 * greatest(1, abs(d.{c})))"
        if c in ("spend_30d", "avg_amount_30d", "max_amount_7d") else f"h.{c} IS DISTINCT FROM d.{c}"
        for c in cols)
    def differing(other):
        rows = con.execute(f"SELECT count(*) FROM '{other}'").fetchone()[0]
        bad = con.execute(f"SELECT count(*) FROM '{out_h}' h FULL JOIN '{other}' d USING (label_id) WHERE h.label_id IS NULL OR d.label_id IS NULL OR {diff}").fetchone()[0]
        return rows, bad

    rows_h = con.execute(f"SELECT count(*) FROM '{out_h}'").fetchone()[0]
    rows_d, bad_d = differing(out_d)
    print(f"W ({args.labels} labels x {args.transactions} transactions, {args.users} users, 6 aggregates over 3 windows)")
    print(f"  hindcast: {t_h:.2f} s, peak RSS {r_h:.0f} MiB")
    print(f"  DuckDB (UNION ALL + RANGE windows): {t_d:.2f} s, peak RSS {r_d:.0f} MiB; {bad_d} rows differ")
    failed = bad_d or rows_h != rows_d or rows_h != args.labels
    if t_p is not None:
        rows_p, bad_p = differing(out_p)
        print(f"  Polars (union + rolling per window): {t_p:.2f} s, peak RSS {r_p:.0f} MiB; {bad_p} rows differ")
        failed = failed or bad_p or rows_p != rows_h
    elif args.polars:
        print(f"  Polars (union + rolling per window): {why_p}")
    ratios = f"hindcast/DuckDB {t_h / t_d:.2f}x"
    if t_p is not None:
        ratios += f", hindcast/Polars {t_h / t_p:.2f}x"
    print(f"  ratios: {ratios}; rows {rows_h}")
    if failed:
        sys.exit("the answers differ")


if __name__ == "__main__":
    main()
