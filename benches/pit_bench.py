#!/usr/bin/env python3
"""Point-in-time join benchmark: hindcast against its peers, on the same Parquet files.

Workload S (the default sizes): 1M labels x 10M feature rows, 100k users, one feature
table, TTL 90 days. Engines: hindcast (ASOF JOIN, and seed 001's ROW_NUMBER SQL), DuckDB's
ASOF LEFT JOIN, Polars' join_asof, and optionally the ROW_NUMBER SQL with hindcast's rewrite
off and in stock DataFusion. Every engine computes the same three numbers over the point-in-time
join: rows (must equal the label count), matched rows and the sum of one feature column.
They must agree, or the run fails. Engines alternate within each repetition; the median
wall time and the peak RSS (the kernel's maxrss of each engine's process) are reported.

Run through benches/run.sh, which builds hindcast in release mode and installs the peers.
"""

import argparse
import math
import os
import statistics
import subprocess
import sys
import time

TTL_DAYS = 90


def generate(hindcast, data, labels, features, users):
    marker = os.path.join(data, f"done-v2-{labels}-{features}-{users}")
    if os.path.exists(marker):
        return
    os.makedirs(data, exist_ok=True)
    # Deterministic: multiplicative hashing of the row number, no random().
    # Feature times are unique (one row every 6 seconds over ~2 years), so no engine's
    # tie rule decides anything and all answers must match exactly.
    sql = f"""
    COPY (
      SELECT (value * 7919 + value / 1000) % {users} AS user_id,
             to_timestamp_micros((1704067200 + (value * 104729) % (730 * 86400)) * 1000000) AS ts,
             CAST(value % 2 AS INT) AS label
      FROM generate_series(0, {labels - 1})
    ) TO '{data}/labels.parquet' STORED AS PARQUET;
    COPY (
      SELECT (value * 104723 + value / 7) % {users} AS user_id,
             to_timestamp_micros((1704067200 + value * 6) * 1000000) AS ts,
             CAST((value * 7907) % 100000 AS DOUBLE) / 100.0 AS amount,
             CAST((value * 13) % 40 AS BIGINT) AS tx_count
      FROM generate_series(0, {features - 1})
    ) TO '{data}/features.parquet' STORED AS PARQUET;
    """
    subprocess.run([hindcast, "-q", "-c", sql], check=True, stdout=subprocess.DEVNULL)
    open(marker, "w").close()


ASOF_SQL = f"""
    SELECT count(*) AS rows_out, count(f.amount) AS matched, sum(f.amount) AS checksum
    FROM labels l ASOF JOIN features f
      MATCH_CONDITION (l.ts >= f.ts AND l.ts - f.ts <= INTERVAL '{TTL_DAYS} days')
      ON l.user_id = f.user_id;
"""

# Seed 001's hand-written point-in-time SQL. Label (user, time) pairs are unique here, so
# its one row per window partition is one row per label.
ROW_NUMBER_SQL = f"""
    WITH ranked AS (
      SELECT l.user_id, l.ts, f.amount,
             ROW_NUMBER() OVER (PARTITION BY l.user_id, l.ts ORDER BY f.ts DESC) AS rn
      FROM labels l LEFT JOIN features f
        ON l.user_id = f.user_id AND f.ts <= l.ts AND f.ts >= l.ts - INTERVAL '{TTL_DAYS} days')
    SELECT count(*) AS rows_out, count(amount) AS matched, sum(amount) AS checksum
    FROM ranked WHERE rn = 1;
"""


def hindcast_command(hindcast, data, memory_limit, query, settings=""):
    sql = f"""
    CREATE EXTERNAL TABLE labels STORED AS PARQUET LOCATION '{data}/labels.parquet';
    CREATE EXTERNAL TABLE features STORED AS PARQUET LOCATION '{data}/features.parquet';
    {settings}
    {query}
    """
    command = [hindcast, "-q", "--format", "csv", "-c", sql]
    if memory_limit:
        command += ["-m", memory_limit]
    return command


# DuckDB applies the TTL with a CASE on the matched row's time; `features` is the source.
S_FEATURES = "read_parquet('{data}/features.parquet')"
P_FEATURES = "read_parquet('{data}/features/*/*.parquet', hive_partitioning = true)"

DUCKDB = """
import duckdb, sys
data = sys.argv[1]
con = duckdb.connect()
row = con.execute(f'''
  SELECT count(*), count(amount), sum(amount) FROM (
    SELECT CASE WHEN f.ts >= l.ts - INTERVAL {ttl} DAY THEN f.amount END AS amount
    FROM read_parquet('{{data}}/labels.parquet') l
    ASOF LEFT JOIN {features} f
      ON l.user_id = f.user_id AND l.ts >= f.ts)
''').fetchone()
print("rows_out,matched,checksum")
print(",".join(str(v) for v in row))
"""


POLARS = """
import polars as pl, sys, warnings
# Both frames are sorted by time; Polars cannot verify it per `by` group and says so.
warnings.filterwarnings("ignore", message="Sortedness")
data = sys.argv[1]
labels = pl.read_parquet(f"{{data}}/labels.parquet").sort("ts")
features = pl.read_parquet(f"{{data}}/features.parquet").select("user_id", "ts", "amount").sort("ts")
joined = labels.join_asof(features, on="ts", by="user_id", strategy="backward",
                          tolerance="{ttl}d")
print("rows_out,matched,checksum")
print(f"{{joined.height}},{{joined['amount'].count()}},{{joined['amount'].sum()}}")
"""

# Stock DataFusion (the Python package, same engine version) on seed 001's SQL.
DATAFUSION = """
import datafusion, sys
data = sys.argv[1]
ctx = datafusion.SessionContext()
ctx.register_parquet("labels", f"{{data}}/labels.parquet")
ctx.register_parquet("features", f"{{data}}/features.parquet")
row = ctx.sql(sys.argv[2]).to_pylist()[0]
print("rows_out,matched,checksum")
print(f"{{row['rows_out']}},{{row['matched']}},{{row['checksum']}}")
"""


# Workload P: features in daily hive partitions over two years, a spine covering one month.
P_TTL_DAYS = 30
P_DAYS = 730
P_SPINE_START = 1740787200  # 2025-03-01


def generate_p(hindcast, data, labels, features, users):
    marker = os.path.join(data, f"done-p1-{labels}-{features}-{users}")
    if os.path.exists(marker):
        return
    os.makedirs(data, exist_ok=True)
    per_day = features // P_DAYS
    # Rows are written day by day, each day's rows in time order at distinct microseconds (so
    # no tie rule decides anything); `date` is the UTC date of `ts`, the convention
    # hindcast's partition pruning relies on.
    sql = f"""
    COPY (
      SELECT (value * 7919 + value / 1000) % {users} AS user_id,
             to_timestamp_micros((P_SPINE_START_ + (value * 104729) % (31 * 86400)) * 1000000) AS ts,
             CAST(value % 2 AS INT) AS label
      FROM generate_series(0, {labels - 1})
    ) TO '{data}/labels.parquet' STORED AS PARQUET;
    COPY (
      SELECT user_id, ts, amount, to_char(ts, '%Y-%m-%d') AS date FROM (
        SELECT (value * 104723 + value / 7) % {users} AS user_id,
               to_timestamp_micros(1704067200000000 + (value / {per_day}) * 86400000000
                                   + (value % {per_day}) * (86400000000 / {per_day})) AS ts,
               CAST((value * 7907) % 100000 AS DOUBLE) / 100.0 AS amount
        FROM generate_series(0, {per_day * P_DAYS - 1}))
    ) TO '{data}/features/' STORED AS PARQUET PARTITIONED BY (date);
    """.replace("P_SPINE_START_", str(P_SPINE_START))
    subprocess.run([hindcast, "-q", "-c", sql], check=True, stdout=subprocess.DEVNULL)
    open(marker, "w").close()


P_HINDCAST_SQL = f"""
    CREATE FEATURE VIEW features ENTITY (user_id) TIMESTAMP ts TTL INTERVAL '{P_TTL_DAYS} days'
      STORED AS PARQUET PARTITIONED BY (date) LOCATION 'DATA/features/';
    CREATE EXTERNAL TABLE labels STORED AS PARQUET LOCATION 'DATA/labels.parquet';
    SELECT count(*) AS rows_out, count(f.amount) AS matched, sum(f.amount) AS checksum
    FROM labels l LEFT JOIN features FOR SYSTEM_TIME AS OF l.ts AS f ON f.user_id = l.user_id;
"""

def run_measured(command):
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Read output fully before reaping so a large stdout cannot block the child.
    out = proc.stdout.read().decode()
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command[:2])} failed ({proc.returncode}):\n{err}")
    # ru_maxrss is in KiB on Linux.
    return wall, usage.ru_maxrss / 1024, out.strip().splitlines()[-1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hindcast", required=True)
    parser.add_argument("--workload", choices=["S", "P"], default="S",
                        help="S: one feature file; P: daily partitions, a one-month spine")
    parser.add_argument("--data", default=os.path.expanduser("~/.cache/hindcast-bench-data"))
    parser.add_argument("--labels", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--memory-limit", default=None, help="e.g. 64M, passed to hindcast -m")
    parser.add_argument("--stock-datafusion", action="store_true",
                        help="also run the ROW_NUMBER SQL in stock DataFusion (slow)")
    parser.add_argument("--row-number-off", action="store_true",
                        help="also run the ROW_NUMBER SQL with the rewrite rule off (slow)")
    args = parser.parse_args()

    if args.workload == "P":
        data = os.path.join(args.data, f"p-{args.labels}-{args.features}-{args.users}")
        generate_p(args.hindcast, data, args.labels, args.features, args.users)
        hindcast = [args.hindcast, "-q", "--format", "csv", "-c", P_HINDCAST_SQL.replace("DATA", data)]
        if args.memory_limit:
            hindcast += ["-m", args.memory_limit]
        engines = {
            "hindcast feature view (temporal join)": hindcast,
            "DuckDB ASOF LEFT JOIN": [sys.executable, "-c", DUCKDB.format(ttl=P_TTL_DAYS, features=P_FEATURES), data],
        }
        compare(engines, args, f"P: {args.labels:,} labels in one month x {args.features:,} feature "
                f"rows in {P_DAYS} daily partitions, {args.users:,} users, TTL {P_TTL_DAYS} days")
        return

    data = os.path.join(args.data, f"s-{args.labels}-{args.features}-{args.users}")
    generate(args.hindcast, data, args.labels, args.features, args.users)

    engines = {
        "hindcast ASOF JOIN": hindcast_command(args.hindcast, data, args.memory_limit, ASOF_SQL),
        "hindcast ROW_NUMBER SQL (rewritten)": hindcast_command(
            args.hindcast, data, args.memory_limit, ROW_NUMBER_SQL),
        "DuckDB ASOF LEFT JOIN": [sys.executable, "-c", DUCKDB.format(ttl=TTL_DAYS, features=S_FEATURES), data],
        "Polars join_asof": [sys.executable, "-c", POLARS.format(ttl=TTL_DAYS), data],
    }
    if args.stock_datafusion:
        engines["stock DataFusion, ROW_NUMBER SQL"] = [
            sys.executable, "-c", DATAFUSION.format(), data, ROW_NUMBER_SQL.strip().rstrip(";")]
    if args.row_number_off:
        engines["hindcast ROW_NUMBER SQL (rule off)"] = hindcast_command(
            args.hindcast, data, args.memory_limit, ROW_NUMBER_SQL,
            "SET hindcast.rewrite_row_number = false;")
    compare(engines, args, f"S: {args.labels:,} labels x {args.features:,} feature rows, "
            f"{args.users:,} users, TTL {TTL_DAYS} days")


def compare(engines, args, title):
    """Run every engine `args.reps` times, alternating; fail unless all answers agree."""
    results = {name: [] for name in engines}
    answers = {}
    for rep in range(args.reps):
        for name, command in engines.items():
            wall, rss, line = run_measured(command)
            results[name].append((wall, rss))
            answers.setdefault(name, line)
            print(f"rep {rep + 1} {name}: {wall:.2f} s, {rss:.0f} MiB, answer {line}", file=sys.stderr)

    # Every engine must produce the same answer.
    parsed = {name: line.split(",") for name, line in answers.items()}
    reference_name, reference = next(iter(parsed.items()))
    for name, (rows, matched, checksum) in parsed.items():
        if int(rows) != args.labels:
            sys.exit(f"{name} returned {rows} rows for {args.labels} labels")
        same = int(rows) == int(reference[0]) and int(matched) == int(reference[1]) and math.isclose(
            float(checksum), float(reference[2]), rel_tol=1e-9)
        if not same:
            sys.exit(f"answers differ: {reference_name} {reference} vs {name} {[rows, matched, checksum]}")

    first = next(iter(engines))
    base = statistics.median(w for w, _ in results[first])
    print(f"\n{title}, {args.reps} reps, median; answer {answers[first]}"
          f"{', hindcast -m ' + args.memory_limit if args.memory_limit else ''}\n")
    print("| engine | wall (s) | peak RSS (MiB) | time / hindcast |")
    print("|---|---:|---:|---:|")
    for name, runs in results.items():
        wall = statistics.median(w for w, _ in runs)
        rss = max(r for _, r in runs)
        print(f"| {name} | {wall:.2f} | {rss:.0f} | {wall / base:.2f} |")


if __name__ == "__main__":
    main()
