#!/usr/bin/env python3
"""nearest against backward in hindcast (the release CLI, one process per query, Parquet
read included), pandas merge_asof and Polars join_asof (read, sort and join), on
`hindcast generate --spending-rows 0 --layout file` output. Best of 3; every engine's
(rows, matched, sum of a feature) must agree, else the run says they differ.

    benches/nearest_bench.py DATA_DIR path/to/release/hindcast   (python with pandas, polars)
"""
import subprocess, sys, time, warnings
import pandas as pd, polars as pl
DATA, BIN = sys.argv[1], sys.argv[2]
L, A = f"{DATA}/labels.parquet", f"{DATA}/user_activity.parquet"
def hc(direction):
    cond = {"backward": "l.event_timestamp >= a.ts", "nearest": "nearest(l.event_timestamp, a.ts)"}[direction]
    sql = (f"CREATE EXTERNAL TABLE labels STORED AS PARQUET LOCATION '{L}'; "
           f"CREATE EXTERNAL TABLE activity STORED AS PARQUET LOCATION '{A}'; "
           f"SELECT count(*) AS n, count(a.ts) AS matched, sum(a.session_count_7d) AS s FROM labels l "
           f"ASOF JOIN activity a MATCH_CONDITION ({cond}) ON l.user_id = a.user_id")
    t = time.perf_counter()
    out = subprocess.run([BIN, "-q", "--format", "csv", "-c", sql], check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t, tuple(int(x) for x in out.strip().splitlines()[-1].split(","))
def pandas(direction):
    t = time.perf_counter()
    l = pd.read_parquet(L).sort_values("event_timestamp", kind="stable")
    a = pd.read_parquet(A, columns=["user_id", "ts", "session_count_7d"]).sort_values("ts", kind="stable")
    r = pd.merge_asof(l, a, left_on="event_timestamp", right_on="ts", by="user_id", direction=direction)
    return time.perf_counter() - t, (len(r), int(r.ts.notna().sum()), int(r.session_count_7d.sum()))
def polars(direction):
    t = time.perf_counter()
    l = pl.read_parquet(L).sort("event_timestamp")
    a = pl.read_parquet(A, columns=["user_id", "ts", "session_count_7d"]).sort("ts")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = l.join_asof(a, left_on="event_timestamp", right_on="ts", by="user_id", strategy=direction)
    return time.perf_counter() - t, (r.height, r["ts"].count(), int(r["session_count_7d"].sum()))
for direction in ["backward", "nearest"]:
    res = {}
    for name, f in [("hindcast", hc), ("pandas", pandas), ("polars", polars)]:
        best = min((f(direction) for _ in range(3)), key=lambda x: x[0])
        res[name] = best
        print(f"{direction:9s} {name:9s} {best[0]:7.2f} s  {best[1]}", flush=True)
    answers = {v[1] for v in res.values()}
    print(f"{direction}: answers {'agree' if len(answers) == 1 else 'DIFFER: ' + str(answers)}")
    if len(answers) != 1:
        sys.exit(1)
