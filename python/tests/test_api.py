"""The Python API as a user calls it: sessions, SQL, every input and output type, streaming
under a memory limit, errors, cancellation."""

import _thread
import os
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import hindcast

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "feature_repo"


@pytest.fixture()
def hc():
    return hindcast.connect(EXAMPLE)


def test_connect_loads_a_repository(hc):
    assert hc.tables() == ["labels", "user_activity", "user_plan", "user_spending_stats",
                           "user_transactions"]
    services = hc.sql("SHOW FEATURE SERVICES").to_arrow()
    assert set(services.column("name").to_pylist()) == {"churn_model"}


def test_sql_results_in_every_form(hc):
    query = "SELECT user_id, count(*) AS n FROM labels GROUP BY user_id ORDER BY user_id LIMIT 3"
    result = hc.sql(query)
    table = result.to_arrow()
    assert isinstance(table, pa.Table)
    assert table.column("user_id").to_pylist() == [1000, 1001, 1002]
    frame = result.to_pandas()
    assert isinstance(frame, pd.DataFrame) and list(frame["n"]) == [4, 4, 4]
    polars_frame = result.to_polars()
    assert isinstance(polars_frame, pl.DataFrame) and polars_frame["n"].to_list() == [4, 4, 4]
    # Any Arrow consumer, through the PyCapsule stream.
    streamed = pa.RecordBatchReader.from_stream(result).read_all()
    assert streamed.equals(table)
    assert pl.from_arrow(pa.table(result))["user_id"].to_list() == [1000, 1001, 1002]
    assert "user_id: Int64" in repr(result)


def test_ddl_runs_at_once_and_statements_chain(hc):
    result = hc.sql("CREATE TABLE t AS VALUES (1), (2); SELECT sum(column1) AS s FROM t")
    assert "t" in hc.tables()
    assert result.to_arrow().column("s").to_pylist() == [3]


def test_a_result_runs_again_on_each_read(hc):
    hc.sql("CREATE TABLE grows (x INT)")
    result = hc.sql("SELECT count(*) AS n FROM grows")
    assert result.to_arrow().column("n").to_pylist() == [0]
    hc.sql("INSERT INTO grows VALUES (1)").to_arrow()
    assert result.to_arrow().column("n").to_pylist() == [1]


def _events():
    return pd.DataFrame({
        "user_id": [1000, 1000, 1001, 4242],
        "event_timestamp": pd.to_datetime(
            ["2025-01-20", "2025-01-20", "2025-02-10", "2025-02-10"]),
        "label": [1, 1, 0, 1],
    })


@pytest.mark.parametrize("kind", ["pandas", "polars", "arrow_table", "record_batch_reader",
                                  "record_batch", "capsule_object"])
def test_register_every_input_type(hc, kind):
    events = _events()
    table = pa.Table.from_pandas(events, preserve_index=False)
    data = {
        "pandas": lambda: events,
        "polars": lambda: pl.from_pandas(events),
        "arrow_table": lambda: table,
        "record_batch_reader": lambda: pa.RecordBatchReader.from_batches(
            table.schema, table.to_batches(max_chunksize=1)),
        "record_batch": lambda: table.to_batches()[0],
        "capsule_object": lambda: _CapsuleOnly(table),
    }[kind]()
    hc.register("events", data)
    got = hc.sql("SELECT count(*) AS n, sum(label) AS s FROM events").to_arrow().to_pylist()
    assert got == [{"n": 4, "s": 3}]


class _CapsuleOnly:
    """An object that offers nothing but the Arrow PyCapsule stream."""

    def __init__(self, table):
        self._table = table

    def __arrow_c_stream__(self, requested_schema=None):
        return self._table.__arrow_c_stream__(requested_schema)


def test_register_replaces_and_rejects_other_objects(hc):
    hc.register("x", pa.table({"a": [1]}))
    hc.register("x", pa.table({"a": [1, 2]}))
    assert hc.sql("SELECT count(*) AS n FROM x").to_arrow().column("n").to_pylist() == [2]
    with pytest.raises(hindcast.PlanningError, match="expected a pandas or Polars DataFrame"):
        hc.register("y", [1, 2, 3])


def test_register_parquet(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), path)
    hc = hindcast.connect()
    hc.register_parquet("t", path)
    assert hc.sql("SELECT sum(a) AS s FROM t").to_arrow().column("s").to_pylist() == [6]


@pytest.mark.parametrize("entity", ["dataframe", "sql", "table_name"])
def test_historical_features_like_feast(hc, entity):
    hc.register("events", _events())
    rows = {"dataframe": _events(), "sql": "SELECT * FROM events", "table_name": "events"}[entity]
    result = hc.historical_features(
        rows, ["user_spending_stats:avg_transaction_amount", "user_activity:session_count_7d"])
    frame = result.to_pandas().sort_values(["user_id", "event_timestamp"])
    # Every entity row kept, duplicates included; unknown users get NULLs.
    assert len(frame) == 4
    assert list(frame.columns) == ["user_id", "event_timestamp", "label",
                                   "avg_transaction_amount", "session_count_7d"]
    assert frame["avg_transaction_amount"].iloc[0] == frame["avg_transaction_amount"].iloc[1]
    assert frame[frame.user_id == 4242]["avg_transaction_amount"].isna().all()
    # The same rows as the SQL form.
    sql = hc.sql(
        "SELECT * FROM historical_features('SELECT * FROM events', "
        "'user_spending_stats:avg_transaction_amount', 'user_activity:session_count_7d')"
    ).to_pandas().sort_values(["user_id", "event_timestamp"])
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), sql.reset_index(drop=True))


def test_historical_features_options(hc):
    hc.register("events", _events())
    full = hc.historical_features("events", "churn_model", full_feature_names=True).to_arrow()
    assert "user_spending_stats__avg_transaction_amount" in full.schema.names
    assert "user_activity__session_count_7d" in full.schema.names
    filtered = hc.historical_features(
        "events", ["user_spending_stats:avg_transaction_amount"],
        filter_by_created_timestamp=True).to_arrow()
    assert filtered.num_rows == 4


def test_an_aggregation_view_matches_pandas(hc):
    """The example's aggregation view against pandas over the raw transactions, window by
    window (both ends inclusive), for every label: the view used as Feast users would."""
    aggregates = ["txn_count_30d", "spend_90d", "avg_amount_30d", "max_amount_1d",
                  "merchants_7d", "last_category"]
    result = hc.historical_features(
        "labels", [f"user_transactions:{name}" for name in aggregates]).to_pandas()
    transactions = pq.read_table(EXAMPLE / "data" / "transactions").to_pandas()
    by_user = {user: rows.sort_values("ts") for user, rows in transactions.groupby("user_id")}
    empty = transactions.iloc[:0]
    day = timedelta(days=1)
    nonempty = 0
    for row in result.itertuples():
        events = by_user.get(row.user_id, empty)
        t = row.event_timestamp
        def window(days):
            return events[(events.ts >= t - days * day) & (events.ts <= t)]
        w30, w90, w1, w7 = window(30), window(90), window(1), window(7)
        nonempty += len(w30) > 0
        assert row.txn_count_30d == len(w30), row
        assert row.merchants_7d == w7.merchant.nunique(), row
        for got, expected in [(row.spend_90d, w90.amount.sum() if len(w90) else None),
                              (row.avg_amount_30d, w30.amount.mean() if len(w30) else None),
                              (row.max_amount_1d, w1.amount.max() if len(w1) else None)]:
            if expected is None:
                assert pd.isna(got), row
            else:
                assert got == pytest.approx(expected, rel=1e-12), row
        expected_last = w90.category.iloc[-1] if len(w90) else None
        assert (row.last_category if not pd.isna(row.last_category) else None) == expected_last, row
    assert len(result) == 2000 and nonempty > 1500


def test_naive_and_zoned_entity_times_are_the_same_instants(hc):
    naive = _events()
    zoned = naive.copy()
    zoned["event_timestamp"] = zoned["event_timestamp"].dt.tz_localize("UTC").dt.tz_convert(
        "America/New_York")
    refs = ["user_spending_stats:avg_transaction_amount"]
    def answer(rows):
        frame = hc.historical_features(rows, refs).to_pandas()
        frame["instant"] = pd.to_datetime(frame["event_timestamp"], utc=True)
        return frame.sort_values(["user_id", "instant"])["avg_transaction_amount"].tolist()

    assert answer(naive) == pytest.approx(answer(zoned), nan_ok=True)


def test_streams_a_result_of_many_batches_under_a_small_memory_limit():
    hc = hindcast.connect(memory_limit="64M")
    result = hc.sql(
        "SELECT value, value % 7 AS k FROM generate_series(1, 1500000) ORDER BY k, value")
    reader = pa.RecordBatchReader.from_stream(result)
    batches = rows = 0
    total = 0
    for batch in reader:
        batches += 1
        rows += batch.num_rows
        total += sum(batch.column(0).to_pylist()[:1])
    assert rows == 1_500_000
    assert batches > 100, "the result arrives batch by batch"


def test_explain(hc):
    plan = hc.sql(
        "SELECT * FROM labels l LEFT JOIN user_activity FOR SYSTEM_TIME AS OF l.event_timestamp a "
        "ON a.user_id = l.user_id").explain()
    assert "AsOfJoin" in plan and "AsOfJoinExec" in plan
    analyzed = hc.sql("SELECT count(*) FROM labels").explain(analyze=True)
    assert "output_rows" in analyzed


def test_write_parquet_is_atomic(hc, tmp_path):
    target = tmp_path / "training.parquet"
    written = hc.historical_features("labels", "churn_model").write_parquet(target)
    assert written == 2000
    assert pq.read_table(target).num_rows == 2000
    # A failing query leaves nothing at its target.
    failing = tmp_path / "failed.parquet"
    with pytest.raises(hindcast.ExecutionError):
        hc.sql("SELECT 1 / (value - value) AS boom FROM generate_series(1, 10)").write_parquet(failing)
    assert not failing.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["training.parquet"]


def test_errors_are_python_exceptions_of_their_kind(hc, tmp_path):
    with pytest.raises(hindcast.PlanningError, match="No field named nope"):
        hc.sql("SELECT nope FROM labels")
    with pytest.raises(hindcast.PlanningError, match="MATCH_CONDITION"):
        hc.sql("SELECT * FROM labels l ASOF JOIN labels r MATCH_CONDITION (l.user_id = r.user_id)")
    with pytest.raises(hindcast.PlanningError, match="Expected: an SQL statement, found: SELEC"):
        hc.sql("SELEC 1")
    assert issubclass(hindcast.PlanningError, hindcast.Error)
    assert issubclass(hindcast.ExecutionError, hindcast.Error)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"not parquet at all")
    with pytest.raises(hindcast.Error):
        hc.register_parquet("broken", broken)
        hc.sql("SELECT * FROM broken").to_arrow()
    with pytest.raises(hindcast.PlanningError, match="memory limit"):
        hindcast.connect(memory_limit="lots")
    with pytest.raises(hindcast.PlanningError, match="memory_limit must be positive"):
        hindcast.connect(memory_limit=0)
    with pytest.raises(hindcast.PlanningError, match="not a directory"):
        hindcast.connect(tmp_path / "missing")


def test_ctrl_c_cancels_a_running_query_within_a_second():
    hc = hindcast.connect()
    slow = hc.sql(
        "SELECT count(*) FROM generate_series(1, 2000000000) a WHERE a.value % 3 = 1")
    timer = threading.Timer(1.0, _thread.interrupt_main)
    started = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        slow.to_arrow()
    elapsed = time.monotonic() - started
    timer.cancel()
    assert elapsed < 2.5, f"cancelled after {elapsed:.1f} s"
    # The session still works.
    assert hc.sql("SELECT 1 AS one").to_arrow().column("one").to_pylist() == [1]


def test_the_gil_is_released_while_a_query_runs():
    hc = hindcast.connect()
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.monotonic())
            time.sleep(0.01)

    thread = threading.Thread(target=tick)
    thread.start()
    hc.sql("SELECT count(*) FROM generate_series(1, 30000000) a WHERE a.value % 3 = 1").to_arrow()
    stop.set()
    thread.join()
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert len(ticks) > 20 and max(gaps) < 0.5, f"{len(ticks)} ticks, longest gap {max(gaps):.2f} s"


def test_queries_run_on_workers(workers):
    """`connect(workers=...)`: this process plans, the workers run the plan's stages; the
    training set is the one a single process builds."""
    local = hindcast.connect(EXAMPLE)
    cluster = hindcast.connect(EXAMPLE, workers=workers)
    cluster.sql("SET distributed.file_scan_config_bytes_per_partition = 1")
    query = ("SELECT * FROM historical_features('labels', 'churn_model') "
             "ORDER BY user_id, event_timestamp, label")
    plan = "\n".join(cluster.sql(f"EXPLAIN {query}").to_pandas()["plan"])
    assert "Stage 1 ── tasks=3" in plan, plan
    expected = local.sql(query).to_arrow()
    assert len(expected) == 2000
    assert cluster.sql(query).to_arrow().equals(expected)
    # One comma-separated string works too; a bad address is refused at once.
    hindcast.connect(workers=",".join(workers))
    with pytest.raises(hindcast.PlanningError, match="is not host:port"):
        hindcast.connect(workers=["not an address"])


def test_a_pandas_index_is_not_a_column(hc):
    # pandas 2.2+ exports __arrow_c_stream__ with a non-default index as a column.
    shuffled = pd.DataFrame({"a": [3, 1, 2]}).sort_values("a")
    hc.register("shuffled", shuffled)
    assert hc.sql("SELECT * FROM shuffled").to_arrow().column_names == ["a"]
    entity = pd.DataFrame({"user_id": [1001, 1000],
                           "event_timestamp": pd.to_datetime(["2025-03-01", "2025-03-02"])})
    training = hc.historical_features(entity.sort_values("user_id"),
                                      ["user_activity:session_count_7d"]).to_arrow()
    assert training.column_names == ["user_id", "event_timestamp", "session_count_7d"]
