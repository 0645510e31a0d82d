"""Eight queries at once from eight Python threads through one session whose memory limit
is smaller than what they hold together: each gives the answer it gives alone, or raises
ExecutionError naming the pool; none hangs (tests/concurrency.rs does the same in Rust)."""

import threading
import time

import hindcast

QUERIES = 8


def query(i):
    # Each query leaves out another eighth of the feature rows, so each has its own answer.
    return (
        "SELECT count(*) AS n, count(r.v) AS matched, sum(length(r.v)) AS chars, "
        "sum(r.t) AS times FROM l "
        f"ASOF JOIN (SELECT * FROM r WHERE k % {QUERIES} <> {i}) r "
        f"MATCH_CONDITION (l.t >= r.t AND l.t - r.t <= {10 + 10 * i}) ON l.k = r.k"
    )


def test_eight_threads_share_one_session_and_its_memory_limit():
    hc = hindcast.connect(memory_limit="48M")
    hc.sql("CREATE TABLE r AS SELECT i % 400 AS k, (i / 400) * 100 AS t, "
           "'v' || CAST(i AS VARCHAR) AS v, repeat('x', 100) AS pad "
           "FROM generate_series(0, 199999) AS s(i)").to_arrow()
    hc.sql("CREATE TABLE l AS SELECT i % 400 AS k, (i * 37) % 50000 AS t "
           "FROM generate_series(0, 19999) AS s(i)").to_arrow()
    alone = [hc.sql(query(i)).to_arrow().to_pylist() for i in range(QUERIES)]
    assert len({str(a) for a in alone}) == QUERIES

    results = [None] * QUERIES
    spans = [None] * QUERIES

    def work(i):
        started = time.monotonic()
        try:
            results[i] = hc.sql(query(i)).to_arrow().to_pylist()
        except hindcast.ExecutionError as e:
            results[i] = e
        spans[i] = (started, time.monotonic())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(QUERIES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a query did not finish within 300 s"

    completed = 0
    for i, result in enumerate(results):
        if isinstance(result, Exception):
            message = str(result)
            assert "Resources exhausted" in message and "pool_size: 48.0 MB" in message, message
        else:
            assert result == alone[i], f"query {i} together differs from alone"
            completed += 1
    assert completed >= 2, f"only {completed} of {QUERIES} completed"
    # They ran at the same time (the GIL is released while a query runs).
    latest_start = max(s for s, _ in spans)
    earliest_end = min(e for _, e in spans)
    assert latest_start < earliest_end, "the queries ran one after another"
