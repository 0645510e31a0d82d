#!/usr/bin/env python3
"""Feast's `get_historical_features(...).to_df()` on workload S (1M entity rows x 10M
feature rows, one view, TTL 90 days), with hindcast's offline store, Feast's DuckDB store
and Feast's default file store, against the same query in the hindcast CLI.

    benches/feast_bench.sh [--reps 3] [--peer-timeout 1200] [--file-timeout 600]

Each store runs in a process of its own, in a scratch directory (where DuckDB spills):
Feast's imports and `apply` first (not timed as the call), one call (timed), then for
hindcast `--reps` more calls in the now warm process (their median is the "warm call";
Feast's own stores take minutes a call here and make one). The whole process's wall time
and peak RSS are reported too. Every
answer (rows, matched values, their sum) is checked against the CLI's; the file store's
is reported and not compared (it is known to lose and mis-resolve entity rows), and its
failure is reported rather than ending the run.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pit_bench  # noqa: E402

FEATURE = "avg_transaction_amount"


def worker(store_type: str, data: str, reps: int) -> None:
    """Run in the measured process: set up a Feast repository over `data`, then call."""
    from datetime import timedelta

    import pandas as pd
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, ValueType
    from feast.repo_config import RepoConfig
    from feast.types import Float64

    directory = os.getcwd()
    store = FeatureStore(config=RepoConfig(
        project="bench", provider="local", registry=os.path.join(directory, "registry.db"),
        online_store={"type": "sqlite", "path": os.path.join(directory, "online.db")},
        offline_store={"type": store_type}, entity_key_serialization_version=3,
        repo_path=directory))
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    source = FileSource(name="spending", path=f"{data}/user_spending_stats.parquet",
                        timestamp_field="event_timestamp",
                        created_timestamp_column="created_timestamp")
    view = FeatureView(name="user_spending_stats", entities=[user], ttl=timedelta(days=90),
                       schema=[Field(name=FEATURE, dtype=Float64)], source=source)
    store.apply([user, source, view])
    labels = pd.read_parquet(f"{data}/labels.parquet")

    def call():
        started = time.perf_counter()
        frame = store.get_historical_features(
            entity_df=labels, features=[f"user_spending_stats:{FEATURE}"]).to_df()
        return time.perf_counter() - started, frame

    first, frame = call()
    warm = [call()[0] for _ in range(reps)]
    values = frame[FEATURE]
    answer = [len(frame), int(values.notna().sum()), float(values.sum())]
    print(json.dumps(dict(first=first, warm=statistics.median(warm) if warm else None,
                          answer=answer)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hindcast", help="the hindcast CLI binary")
    parser.add_argument("--data", default=os.path.expanduser("~/.cache/hindcast-bench-data"))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--peer-timeout", type=float, default=1200,
                        help="seconds after which Feast's DuckDB store is stopped")
    parser.add_argument("--file-timeout", type=float, default=600,
                        help="seconds after which Feast's file store is stopped")
    parser.add_argument("--memory-limit", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=2, metavar=("STORE", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.reps)
        return
    if not args.hindcast:
        parser.error("--hindcast BINARY is required")

    workload = pit_bench.WORKLOADS["S"]
    data = pit_bench.generate(args, "S", workload)
    # The CLI: the same point-in-time join, as pit_bench runs it (median of reps + 1).
    cli = pit_bench.hindcast_command(args, data, workload, pit_bench.hindcast_temporal(workload))
    cli_runs = [pit_bench.run_measured(cli) for _ in range(args.reps + 1)][1:]
    cli_answer = json.loads("[" + cli_runs[-1][2] + "]")
    cli_wall = statistics.median(w for w, _, _ in cli_runs)
    cli_rss = max(r for _, r, _ in cli_runs)
    rows = [("hindcast CLI (same query)", cli_wall, None, cli_wall, cli_rss, cli_answer, True)]

    # Feast's stores take minutes a call here: one call each, stopped after the timeout.
    stores = [("Feast + hindcast store", "hindcast.feast.HindcastOfflineStore", None, args.reps),
              ("Feast + DuckDB store", "duckdb", args.peer_timeout, 0),
              ("Feast + file store (default)", "file", args.file_timeout, 0)]
    for label, store_type, timeout, reps in stores:
        command = [sys.executable, "-W", "ignore", os.path.abspath(__file__), "--worker", store_type, data,
                   "--reps", str(reps)]
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="feast_bench_") as scratch:
            try:
                wall, rss, line = pit_bench.run_measured(command, timeout, cwd=scratch)
            except SystemExit as failure:  # run_measured exits with the store's stderr
                if store_type != "file":
                    raise
                error = str(failure.code).strip().splitlines()[-1]
                print(f"{label}: failed: {error}", file=sys.stderr, flush=True)
                rows.append((f"{label} (failed: {error[:80]})", None, None,
                             time.perf_counter() - started, None, None, False))
                continue
        print(f"{label}: {wall:.1f} s, {rss:.0f} MiB, {line}", file=sys.stderr, flush=True)
        if line is None:
            rows.append((f"{label} (stopped)", None, None, wall, rss, None, False))
            continue
        result = json.loads(line)
        checked = store_type != "file"
        if checked and (result["answer"][:2] != cli_answer[:2]
                        or abs(result["answer"][2] - cli_answer[2]) > 1e-6 * abs(cli_answer[2])):
            sys.exit(f"{label}: answer {result['answer']} differs from the CLI's {cli_answer}")
        rows.append((label, result["first"], result["warm"], wall, rss, result["answer"], checked))

    print(f"\nFeast get_historical_features(...).to_df() on workload S: {workload['title']}")
    print(f"CLI answer (rows, matched, sum): {cli_answer}\n")
    print("| engine | call (s) | warm call (s) | process (s) | peak RSS (MiB) | warm call / CLI | answer |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for label, first, warm, wall, rss, answer, checked in rows:
        fmt = lambda x: "" if x is None else f"{x:.2f}"  # noqa: E731
        ratio = "" if warm is None else f"{warm / cli_wall:.2f}"
        note = "checked" if checked else ("not compared: " + str(answer) if answer else "")
        rss = "" if rss is None else f"{rss:.0f}"
        print(f"| {label} | {fmt(first)} | {fmt(warm)} | {fmt(wall)} | {rss} | {ratio} | {note} |")


if __name__ == "__main__":
    main()
