#!/usr/bin/env python3
"""Point-in-time join benchmark: hindcast against DuckDB, Polars and stock DataFusion, on
the same Parquet files, written by `hindcast generate` (seeded, skewed users, corrections
that tie on time, backfills).

Workloads (issue 6):
  S  1M labels x 10M feature rows, one view, TTL 90 days
  M  10M labels x 100M rows over two views (60M spending, 40M activity)
  P  1M labels in one month x 100M rows in 730 daily partitions, TTL 30 days
  T  10 labels x the same 100M partitioned rows
  O  10M labels x 150M spending rows, all five features, hindcast under -m 2G

Every engine computes three numbers over the point-in-time join: rows (must equal the
label count), matched feature values and their sum. They must agree, or the run fails.
Engines alternate within each repetition; the median wall time and the peak RSS (the
kernel's maxrss of each engine's own process) are reported, with each engine's time as a
multiple of hindcast's (the first engine). The spending table has corrections: rows that
repeat a (user, time) with a later created time. Feast keeps the latest created; hindcast
does so through the view's CREATED column, and DuckDB and Polars drop the corrections
first, which their timings include.

Run through benches/run.sh, which builds hindcast in release mode and installs the peers.
"""

import argparse
import atexit
import json
import math
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import threading
import time

SPENDING = "user_spending_stats"
ACTIVITY = "user_activity"

WORKLOADS = {
    "S": dict(
        title="S: 1M labels x 10M feature rows, 1 view, TTL 90 days",
        generate="--labels 1000000 --spending-rows 10000000 --activity-rows 0 --users 100000 --layout file",
        views=[SPENDING], layout="file"),
    "M": dict(
        title="M: 10M labels x 100M feature rows (60M + 40M) over 2 views",
        generate="--labels 10000000 --spending-rows 60000000 --activity-rows 40000000 --users 1000000 --layout file",
        views=[SPENDING, ACTIVITY], layout="file"),
    "P": dict(
        title="P: 1M labels in one month x 100M rows in 730 daily partitions, TTL 30 days",
        generate="--labels 1000000 --spending-rows 0 --activity-rows 100000000 --users 100000 "
                 "--label-start 2025-03-01 --label-days 31 --layout hive",
        views=[ACTIVITY], layout="hive"),
    "T": dict(
        title="T: 10 labels x 100M rows in 730 daily partitions, TTL 30 days",
        generate="--labels 10 --spending-rows 0 --activity-rows 100000000 --users 100000 "
                 "--label-start 2025-03-01 --label-days 1 --layout hive",
        views=[ACTIVITY], layout="hive"),
    "O": dict(
        title="O: 10M labels x 150M spending rows, all 5 features, hindcast -m 2G",
        generate="--labels 10000000 --spending-rows 150000000 --activity-rows 0 --users 1000000 --layout hive",
        views=[SPENDING], layout="hive", all_features=True, memory_limit="2G"),
}

# Per view: time column, created column, TTL (days), the features the query reads.
VIEWS = {
    SPENDING: dict(time="event_timestamp", created="created_timestamp", ttl=90,
                   features=["avg_transaction_amount"],
                   all_features=["avg_transaction_amount", "transaction_count_30d", "total_spend_90d",
                                 "avg_days_between_purchases", "preferred_category"]),
    ACTIVITY: dict(time="ts", created=None, ttl=30, features=["session_count_7d"]),
}


def features_of(view, workload):
    spec = VIEWS[view]
    return spec["all_features"] if workload.get("all_features") and "all_features" in spec else spec["features"]


def numeric(feature):
    """Category strings are checked by their length."""
    return f"length({feature})" if feature.endswith("preferred_category") else feature


def source(data, view, layout):
    if layout == "delta":
        return f"{data}/delta/{view}/"
    return f"{data}/{view}.parquet" if layout == "file" else f"{data}/{view}/"


def delta_copy(data, workload):
    """The workload's hive-partitioned feature tables as Delta tables partitioned the same
    way, written once by delta-rs (the `deltalake` package) under data/delta/."""
    import pyarrow.dataset as ds
    from deltalake import write_deltalake
    for view in workload["views"]:
        target = source(data, view, "delta")
        if os.path.exists(os.path.join(target, "_delta_log")):
            continue
        dataset = ds.dataset(source(data, view, "hive"), format="parquet", partitioning="hive")
        write_deltalake(target, dataset.scanner().to_reader(), partition_by=["date"])


# ---------------------------------------------------------------- hindcast
def hindcast_ddl(data, workload, as_views=True):
    statements = [f"CREATE EXTERNAL TABLE labels STORED AS PARQUET LOCATION '{data}/labels.parquet';"]
    partitioned = "PARTITIONED BY (date)" if workload["layout"] == "hive" else ""
    stored = "DELTA" if workload["layout"] == "delta" else "PARQUET"
    for view in workload["views"]:
        spec = VIEWS[view]
        if as_views:
            created = f"CREATED {spec['created']}" if spec["created"] else ""
            statements.append(
                f"CREATE FEATURE VIEW {view} ENTITY (user_id) TIMESTAMP {spec['time']} {created} "
                f"TTL INTERVAL '{spec['ttl']} days' STORED AS {stored} {partitioned} "
                f"LOCATION '{source(data, view, workload['layout'])}';")
        else:
            statements.append(
                f"CREATE EXTERNAL TABLE {view} STORED AS PARQUET {partitioned} "
                f"LOCATION '{source(data, view, workload['layout'])}';")
    return "\n".join(statements)


def answer_select(columns):
    """rows_out, matched, checksum over the joined feature columns (aliases)."""
    matched = " + ".join(f"count({c})" for c in columns)
    checksum = " + ".join(f"coalesce(sum(CAST({numeric(c)} AS DOUBLE)), 0)" for c in columns)
    return f"count(*) AS rows_out, {matched} AS matched, {checksum} AS checksum"


def joined_columns(workload, alias_of):
    return [f"{alias_of[v]}.{f}" for v in workload["views"] for f in features_of(v, workload)]


def hindcast_temporal(workload):
    alias = {v: f"v{i}" for i, v in enumerate(workload["views"])}
    joins = "\n".join(
        f"LEFT JOIN {v} FOR SYSTEM_TIME AS OF l.event_timestamp AS {alias[v]} ON {alias[v]}.user_id = l.user_id"
        for v in workload["views"])
    return f"SELECT {answer_select(joined_columns(workload, alias))} FROM labels l\n{joins};"


def hindcast_asof(workload):
    alias = {v: f"v{i}" for i, v in enumerate(workload["views"])}
    joins = []
    for v in workload["views"]:
        spec, a = VIEWS[v], alias[v]
        latest = f" AND latest_by({a}.{spec['created']})" if spec["created"] else ""
        joins.append(
            f"ASOF JOIN {v} {a} MATCH_CONDITION (l.event_timestamp >= {a}.{spec['time']} AND "
            f"l.event_timestamp - {a}.{spec['time']} <= INTERVAL '{spec['ttl']} days'{latest}) "
            f"ON l.user_id = {a}.user_id")
    return f"SELECT {answer_select(joined_columns(workload, alias))} FROM labels l\n" + "\n".join(joins) + ";"


def row_number_sql(workload):
    """Seed 001's hand-written point-in-time SQL (one view)."""
    (view,) = workload["views"]
    spec = VIEWS[view]
    features = features_of(view, workload)
    order = f"f.{spec['time']} DESC" + (f", f.{spec['created']} DESC" if spec["created"] else "")
    return f"""
    WITH ranked AS (
      SELECT l.user_id, l.event_timestamp, {', '.join('f.' + c for c in features)},
             ROW_NUMBER() OVER (PARTITION BY l.user_id, l.event_timestamp ORDER BY {order}) AS rn
      FROM labels l LEFT JOIN {view} f
        ON l.user_id = f.user_id AND f.{spec['time']} <= l.event_timestamp
       AND f.{spec['time']} >= l.event_timestamp - INTERVAL '{spec['ttl']} days')
    SELECT {answer_select(features)} FROM ranked WHERE rn = 1;"""


def scan_floor(workload):
    """The same columns of the same files, summed (so every value is decoded, not answered
    from statistics): what reading them alone costs."""
    def total(column):
        if column in ("user_id",) or column.endswith("_count_30d") or column.endswith("_7d"):
            return f"sum({column})"
        if column.endswith("timestamp") or column == "ts":
            return f"sum(arrow_cast({column}, 'Int64'))"
        return f"sum(CAST({numeric(column)} AS DOUBLE))"
    parts = []
    for v in workload["views"]:
        spec = VIEWS[v]
        cols = ["user_id", spec["time"]] + ([spec["created"]] if spec["created"] else []) + features_of(v, workload)
        parts.append(f"(SELECT {', '.join(total(c) for c in cols)} FROM {v})")
    parts.append(f"(SELECT {total('user_id')}, {total('event_timestamp')} FROM labels)")
    return "SELECT * FROM " + " CROSS JOIN ".join(parts) + ";"


def hindcast_command(args, data, workload, query, as_views=True, settings="", binary=None,
                     workers=None):
    sql = "\n".join([hindcast_ddl(data, workload, as_views), settings, query])
    command = [binary or args.hindcast, "-q", "--format", "csv", "-c", sql]
    if workers:
        command += ["--workers", ",".join(workers)]
    limit = workload.get("memory_limit") or args.memory_limit
    if limit:
        command += ["-m", limit]
    return command


# ---------------------------------------------------------------- peers
def duckdb_source(data, view, layout, drop_corrections=True):
    if layout == "file":
        scan = f"read_parquet('{data}/{view}.parquet')"
    else:
        scan = f"read_parquet('{data}/{view}/*/*.parquet', hive_partitioning = true)"
    spec = VIEWS[view]
    if spec["created"] and drop_corrections:
        # DuckDB's ASOF join has no tie-break: drop the corrections first.
        scan = (f"(SELECT * FROM {scan} QUALIFY row_number() OVER "
                f"(PARTITION BY user_id, {spec['time']} ORDER BY {spec['created']} DESC) = 1)")
    return scan


def duckdb_program(data, workload, drop_corrections=True, memory_limit=None):
    alias = {v: f"v{i}" for i, v in enumerate(workload["views"])}
    cases, joins = [], []
    for v in workload["views"]:
        spec, a = VIEWS[v], alias[v]
        for f in features_of(v, workload):
            cases.append(f"CASE WHEN {a}.{spec['time']} >= l.event_timestamp - INTERVAL {spec['ttl']} DAY "
                         f"THEN {a}.{f} END AS {a}_{f}")
        joins.append(f"ASOF LEFT JOIN {duckdb_source(data, v, workload['layout'], drop_corrections)} {a} "
                     f"ON l.user_id = {a}.user_id AND l.event_timestamp >= {a}.{spec['time']}")
    columns = [f"{alias[v]}_{f}" for v in workload["views"] for f in features_of(v, workload)]
    query = (f"SELECT {answer_select(columns)} FROM (SELECT {', '.join(cases)} "
             f"FROM read_parquet('{data}/labels.parquet') l " + " ".join(joins) + ")")
    return f"""
import duckdb
con = duckdb.connect()
if {memory_limit!r}:
    con.execute("SET memory_limit = '{memory_limit}iB'")
row = con.execute({query!r}).fetchone()
print("rows_out,matched,checksum")
print(",".join(str(v) for v in row))
"""


def polars_program(data, workload):
    lines = ["import polars as pl, warnings",
             "# Frames are sorted by time; Polars cannot check it per `by` group and says so.",
             "warnings.filterwarnings('ignore', message='Sortedness')",
             f"out = pl.read_parquet('{data}/labels.parquet').sort('event_timestamp')",
             "columns = []"]
    for i, v in enumerate(workload["views"]):
        spec = VIEWS[v]
        path = f"{data}/{v}.parquet" if workload["layout"] == "file" else f"{data}/{v}/**/*.parquet"
        feats = features_of(v, workload)
        cols = ["user_id", spec["time"]] + ([spec["created"]] if spec["created"] else []) + feats
        lines.append(f"f = pl.read_parquet('{path}', columns={cols!r})")
        if spec["created"]:
            # No tie-break in join_asof: keep the latest created row per (user, time).
            lines.append(f"f = f.sort(['user_id', '{spec['time']}', '{spec['created']}'])"
                         f".unique(subset=['user_id', '{spec['time']}'], keep='last')")
        renamed = {c: f"v{i}_{c}" for c in feats}
        lines.append(f"f = f.select(['user_id', pl.col('{spec['time']}').alias('event_timestamp')] + "
                     f"[pl.col(c).alias(n) for c, n in {renamed!r}.items()]).sort('event_timestamp')")
        lines.append(f"out = out.join_asof(f, on='event_timestamp', by='user_id', strategy='backward', "
                     f"tolerance='{spec['ttl']}d')")
        lines.append(f"columns += {list(renamed.values())!r}")
    lines += [
        "matched = sum(out[c].count() for c in columns)",
        "checksum = sum((out[c].str.len_chars() if out[c].dtype == pl.String else out[c]).cast(pl.Float64).sum()"
        " for c in columns)",
        "print('rows_out,matched,checksum')",
        "print(f'{out.height},{matched},{checksum}')",
    ]
    return "\n".join(lines)


def datafusion_program(data, workload, sql):
    registrations = [f"ctx.register_parquet('labels', '{data}/labels.parquet')"]
    for v in workload["views"]:
        registrations.append(f"ctx.register_parquet('{v}', '{data}/{v}.parquet')")
    return "\n".join([
        "import datafusion",
        "ctx = datafusion.SessionContext()",
        *registrations,
        f"row = ctx.sql({sql.strip().rstrip(';')!r}).to_pylist()[0]",
        "print('rows_out,matched,checksum')",
        "print(f\"{row['rows_out']},{row['matched']},{row['checksum']}\")",
    ])


# ---------------------------------------------------------------- running
def generate(args, name, workload):
    data = os.path.join(args.data, f"gen-v2-{name.lower()}")
    marker = os.path.join(data, "done")
    if not os.path.exists(marker):
        subprocess.run([args.hindcast, "generate", "--out", data] + workload["generate"].split(), check=True)
        open(marker, "w").close()
    return data


def run_measured(command, timeout=None, cwd=None):
    """(wall seconds, peak RSS MiB, last output line); the line is None when the engine was
    stopped after `timeout` seconds."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd)
    killer = threading.Timer(timeout, proc.kill) if timeout else None
    if killer:
        killer.start()
    # Read output fully before reaping so a large stdout cannot block the child.
    out = proc.stdout.read().decode()
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if killer:
        killer.cancel()
        if wall >= timeout:
            return wall, usage.ru_maxrss / 1024, None
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{' '.join(command[:4])} failed ({code}):\n{err[-3000:]}")
    # ru_maxrss is in KiB on Linux.
    return wall, usage.ru_maxrss / 1024, out.strip().splitlines()[-1]


UNITS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9}


def metric(line, name):
    """The sum of a byte metric's values on one line of EXPLAIN ANALYZE (`1.5 MB`, `12 B`)."""
    return sum(float(n) * UNITS[u] for n, u in re.findall(name + r"=([\d.]+) ?([KMG]?)", line))


def explain_analyze(args, data, workload, workers=None):
    query = "EXPLAIN ANALYZE " + hindcast_temporal(workload)
    command = hindcast_command(args, data, workload, query, workers=workers)
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()


def pruning(args, data, workload, workers=None):
    """Bytes the feature scans read, from EXPLAIN ANALYZE, against the feature files' size.
    Distributed, a scan is a `DistributedLeafExec` whose tasks' files are listed below it."""
    lines = explain_analyze(args, data, workload, workers)
    read = 0.0
    for i, line in enumerate(lines):
        is_scan = "DataSourceExec" in line or "DistributedLeafExec" in line
        files = line if "DataSourceExec" in line else " ".join(lines[i + 1:i + 2])
        if is_scan and "labels.parquet" not in files and "bytes_scanned=" in line:
            read += metric(line, "bytes_scanned")
    total = 0
    for view in workload["views"]:
        root = source(data, view, workload["layout"])
        if os.path.isfile(root):
            total += os.path.getsize(root)
        for dirpath, _, files in os.walk(root):
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    return read, total


def shuffled(args, data, workload, workers):
    """(bytes the joins' inputs hold, as Arrow, in one process: what its hash repartitions
    pass on; bytes sent between processes distributed, compressed, and as Arrow)."""
    need = sum(metric(l, "output_bytes") for l in explain_analyze(args, data, workload)
               if "RepartitionExec: partitioning=Hash" in l)
    lines = explain_analyze(args, data, workload, workers)
    sent = sum(metric(l, "bytes_transferred") for l in lines if "NetworkShuffleExec" in l)
    arrived = sum(metric(l, "output_bytes") for l in lines if "NetworkShuffleExec" in l)
    return need, sent, arrived


def start_workers(args, n):
    """`n` hindcast workers on loopback (ports the system picks), stopped at exit; each
    gets --memory-limit. Their processes and addresses."""
    workers, addresses = [], []
    for _ in range(n):
        command = [args.hindcast, "worker", "--listen", "127.0.0.1:0"]
        if args.memory_limit:
            command += ["-m", args.memory_limit]
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        workers.append(proc)
        addresses.append(proc.stderr.readline().strip().rsplit(" ", 1)[-1])
    atexit.register(lambda: [w.kill() for w in workers])
    return workers, addresses


def peak_rss_mib(proc):
    with open(f"/proc/{proc.pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024


class Engine:
    """A command, whether its answer is compared, and whether it is slow: a slow engine
    (a plan that joins every label with every feature row in its window) runs once, in
    the first counted repetition, and is stopped after --slow-timeout seconds."""

    def __init__(self, command, checked=True, slow=False):
        self.command, self.checked, self.slow = command, checked, slow


def engines_for(args, name, workload, data):
    def hindcast(query, workload=workload, **kw):
        return hindcast_command(args, data, workload, query, **kw)

    engines = {"hindcast feature view (temporal join)": Engine(hindcast(hindcast_temporal(workload)))}
    if args.worker_addresses:
        engines[f"hindcast feature view, {len(args.worker_addresses)} workers"] = Engine(
            hindcast(hindcast_temporal(workload), workers=args.worker_addresses))
        if args.worker_settings:
            engines[f"hindcast feature view, {len(args.worker_addresses)} workers, "
                    f"{args.worker_settings}"] = Engine(
                hindcast(hindcast_temporal(workload), workers=args.worker_addresses,
                         settings=args.worker_settings))
    if args.delta and workload["layout"] == "hive":
        engines["hindcast feature view on Delta"] = Engine(
            hindcast(hindcast_temporal(workload), workload=dict(workload, layout="delta")))
    if args.baseline:
        # Another hindcast binary (e.g. the previous commit's) on the same query, to measure
        # a change in the same run.
        engines["hindcast baseline binary: feature view"] = Engine(
            hindcast(hindcast_temporal(workload), binary=args.baseline))
    if name in ("S", "M"):
        engines["hindcast ASOF JOIN"] = Engine(hindcast(hindcast_asof(workload), as_views=False))
    if name == "S":
        engines["hindcast ROW_NUMBER SQL (rewritten)"] = Engine(
            hindcast(row_number_sql(workload), as_views=False))
        if args.row_number_off:
            engines["hindcast ROW_NUMBER SQL (rule off)"] = Engine(hindcast(
                row_number_sql(workload), as_views=False,
                settings="SET hindcast.rewrite_row_number = false;"), slow=True)
    if workload.get("memory_limit"):
        # The same query on the plan it had before hindcast's own sort could spill.
        engines["hindcast feature view, hindcast.key_time_sort = false (SortExec)"] = Engine(
            hindcast(hindcast_temporal(workload), settings="SET hindcast.key_time_sort = false;"))
    engines["DuckDB ASOF LEFT JOIN"] = Engine([sys.executable, "-c", duckdb_program(data, workload)])
    if workload.get("memory_limit"):
        # Like for like: DuckDB within the memory limit hindcast is given.
        engines[f"DuckDB ASOF LEFT JOIN, memory_limit {workload['memory_limit']}iB"] = Engine(
            [sys.executable, "-c", duckdb_program(data, workload, memory_limit=workload["memory_limit"])])
    if any(VIEWS[v]["created"] for v in workload["views"]):
        # DuckDB's join alone: ties go to an arbitrary row, so the answer is not Feast's.
        engines["DuckDB ASOF LEFT JOIN, corrections kept"] = Engine(
            [sys.executable, "-c", duckdb_program(data, workload, drop_corrections=False)], checked=False)
    # Polars holds everything in memory: O (about 11 GB of features) is past this machine.
    if name in ("S", "M"):
        engines["Polars join_asof"] = Engine([sys.executable, "-c", polars_program(data, workload)])
    if name == "S" and args.stock_datafusion:
        engines["stock DataFusion 55, ROW_NUMBER SQL"] = Engine(
            [sys.executable, "-c", datafusion_program(data, workload, row_number_sql(workload))], slow=True)
    if name in ("S", "M", "O"):
        engines["hindcast scan only (floor)"] = Engine(
            hindcast(scan_floor(workload), as_views=False), checked=False)
    if args.hindcast_only:
        engines = {k: v for k, v in engines.items() if k.startswith("hindcast")}
    return engines


def compare(args, name, engines, labels, reps, warmup):
    """Run every engine once to warm up (not counted), then `reps` times, alternating;
    fail unless all answers agree."""
    results = {engine: [] for engine in engines}
    answers = {}
    names = list(engines)
    for rep in range(reps + warmup):
        counted = rep >= warmup
        # Each repetition starts with a different engine: the first process after another
        # engine's can run slower, and rotating spreads that over all of them.
        for engine in names[rep % len(names):] + names[:rep % len(names)]:
            e = engines[engine]
            if e.slow and rep != warmup:
                continue
            wall, rss, line = run_measured(e.command, args.slow_timeout if e.slow else None)
            answers.setdefault(engine, line)
            if counted:
                results[engine].append((wall, rss))
            print(f"{name} {'rep ' + str(rep + 1 - warmup) if counted else 'warm-up'} {engine}: "
                  f"{wall:.2f} s, {rss:.0f} MiB, answer {line or 'none: stopped'}", file=sys.stderr)

    checked = {e: answers[e].split(",") for e, engine in engines.items() if engine.checked and answers[e]}
    reference_name, reference = next(iter(checked.items()))
    for engine, (rows, matched, checksum) in checked.items():
        if int(rows) != labels:
            sys.exit(f"{engine} returned {rows} rows for {labels} labels")
        same = int(matched) == int(reference[1]) and math.isclose(
            float(checksum), float(reference[2]), rel_tol=1e-9)
        if not same:
            sys.exit(f"answers differ: {reference_name} {reference} vs {engine} {[rows, matched, checksum]}")
    return {engine: dict(wall=statistics.median(w for w, _ in runs), rss=max(r for _, r in runs),
                         checked=engines[engine].checked, stopped=answers[engine] is None)
            for engine, runs in results.items()}, answers[reference_name]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--hindcast", required=True)
    parser.add_argument("--baseline", default=None,
                        help="another hindcast binary run on the feature-view query too (before/after)")
    parser.add_argument("--workload", default="S",
                        help="comma-separated workloads among S, M, P, T, O (default S)")
    parser.add_argument("--data", default=os.path.expanduser("~/.cache/hindcast-bench-data"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1,
                        help="uncounted runs of every engine first (the first process after "
                             "another engine's is slower: page cache and kernel memory)")
    parser.add_argument("--memory-limit", default=None, help="e.g. 64M, passed to hindcast -m")
    parser.add_argument("--stock-datafusion", action="store_true",
                        help="S: also run the ROW_NUMBER SQL in stock DataFusion (slow)")
    parser.add_argument("--row-number-off", action="store_true",
                        help="S: also run the ROW_NUMBER SQL with the rewrite rule off (slow)")
    parser.add_argument("--slow-timeout", type=float, default=300,
                        help="seconds after which a slow engine (--row-number-off, --stock-datafusion) is stopped")
    parser.add_argument("--hindcast-only", action="store_true",
                        help="run hindcast's engines only (with --baseline: a quick before/after)")
    parser.add_argument("--json", help="append the results to this JSON-lines file")
    parser.add_argument("--workers", type=int, default=0,
                        help="also run the feature view on this many local `hindcast worker`s")
    parser.add_argument("--delta", action="store_true",
                        help="also run hive-partitioned workloads' feature views over the same "
                             "rows as Delta tables (written once by delta-rs)")
    parser.add_argument("--worker-settings", default="",
                        help="with --workers, also run it distributed after these statements, "
                             "e.g. \"SET distributed.compression = 'none';\"")
    args = parser.parse_args()
    worker_procs, args.worker_addresses = start_workers(args, args.workers) if args.workers else ([], [])

    for name in args.workload.split(","):
        workload = WORKLOADS[name]
        data = generate(args, name, workload)
        if args.delta and workload["layout"] == "hive":
            # In a child process: this one's peak memory would count in every engine forked
            # from it (ru_maxrss includes the forked image).
            converter = multiprocessing.Process(target=delta_copy, args=(data, workload))
            converter.start()
            converter.join()
            if converter.exitcode != 0:
                sys.exit("converting to Delta failed")
        labels = int(re.search(r"--labels (\d+)", workload["generate"]).group(1))
        reps = 1 if name == "O" else args.reps
        warmup = 0 if name == "O" else args.warmup
        results, answer = compare(args, name, engines_for(args, name, workload, data), labels, reps, warmup)
        note = ""
        if name in ("P", "T"):
            read, total = pruning(args, data, workload)
            note = f"; feature bytes read {read / 1e6:.1f} MB of {total / 1e6:.0f} MB ({100 * read / total:.1f}%)"
            if args.worker_addresses:
                read, _ = pruning(args, data, workload, args.worker_addresses)
                note += f"; distributed {read / 1e6:.1f} MB ({100 * read / total:.1f}%)"
            if args.delta:
                read, total = pruning(args, data, dict(workload, layout="delta"))
                note += (f"; on Delta {read / 1e6:.1f} MB of {total / 1e6:.0f} MB "
                         f"({100 * read / total:.1f}%)")
        if args.worker_addresses:
            need, sent, arrived = shuffled(args, data, workload, args.worker_addresses)
            note += (f"; the joins' inputs {need / 1e6:.1f} MB as Arrow in one process, "
                     f"shuffled {sent / 1e6:.1f} MB between processes (compressed), "
                     f"{arrived / 1e6:.1f} MB as Arrow ({arrived / need:.2f}x); "
                     f"worker peak RSS so far {', '.join(f'{peak_rss_mib(w):.0f}' for w in worker_procs)} MiB")
        base = next(iter(results.values()))["wall"]
        print(f"\n{workload['title']}; {reps} rep(s), median; answer {answer}{note}\n")
        print("| engine | wall (s) | peak RSS (MiB) | time / hindcast |")
        print("|---|---:|---:|---:|")
        for engine, r in results.items():
            mark = "" if r["checked"] else " (answer not compared)"
            if r["stopped"]:
                print(f"| {engine} (stopped) | > {r['wall']:.0f} | > {r['rss']:.0f} | > {r['wall'] / base:.0f} |")
            else:
                print(f"| {engine}{mark} | {r['wall']:.2f} | {r['rss']:.0f} | {r['wall'] / base:.2f} |")
        sys.stdout.flush()
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(dict(workload=name, title=workload["title"], answer=answer,
                                        note=note, results=results)) + "\n")


if __name__ == "__main__":
    main()
