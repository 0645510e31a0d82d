"""Every ASOF form against its home engine: DuckDB's `ASOF [LEFT] JOIN ... ON | USING`
against DuckDB on the example data; `nearest` and `Session.join_asof` against pandas'
`merge_asof` and Polars' `join_asof` on random sorted inputs."""

import warnings
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pytest

import hindcast

DATA = Path(__file__).resolve().parents[2] / "examples" / "feature_repo" / "data"


@pytest.fixture(scope="module")
def engines():
    hc = hindcast.connect()
    db = duckdb.connect()
    for name, file in [("labels", "labels.parquet"), ("activity", "user_activity.parquet")]:
        hc.register_parquet(name, DATA / file)
        db.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{DATA / file}')")
    return hc, db


def rows(table):
    return sorted(tuple(r.values()) for r in table.to_pylist())


COLUMNS = "l.user_id, l.event_timestamp, l.label, a.ts, a.session_count_7d, a.last_login_days_ago"
DUCKDB_QUERIES = [
    f"SELECT {COLUMNS} FROM labels l ASOF JOIN activity a "
    "ON l.user_id = a.user_id AND l.event_timestamp >= a.ts",
    f"SELECT {COLUMNS} FROM labels l ASOF LEFT JOIN activity a "
    "ON l.user_id = a.user_id AND l.event_timestamp >= a.ts",
    f"SELECT {COLUMNS} FROM labels l ASOF LEFT JOIN activity a "
    "ON a.user_id = l.user_id AND a.ts < l.event_timestamp",
    f"SELECT {COLUMNS} FROM labels l ASOF JOIN activity a "
    "ON l.user_id = a.user_id AND l.event_timestamp <= a.ts",
    f"SELECT {COLUMNS} FROM labels l ASOF LEFT JOIN activity a "
    "ON l.user_id = a.user_id AND a.ts > l.event_timestamp",
    "SELECT * FROM (SELECT user_id, event_timestamp AS ts, label FROM labels) l "
    "ASOF LEFT JOIN activity USING (user_id, ts)",
    "SELECT * FROM (SELECT user_id, event_timestamp AS ts, label FROM labels) l "
    "ASOF JOIN activity USING (user_id, ts)",
]


@pytest.mark.parametrize("query", DUCKDB_QUERIES)
def test_duckdb_syntax_gives_duckdbs_answer(engines, query):
    hc, db = engines
    expected = rows(db.sql(query).fetch_arrow_table())
    actual = rows(hc.sql(query).to_arrow())
    assert len(actual) == len(expected) and actual == expected
    # Not a vacuous comparison: the joins match rows and (LEFT) keep unmatched ones.
    assert any(r[-1] is not None for r in actual)


def test_clickhouse_left_asof_join_is_duckdbs_asof_left_join(engines):
    hc, db = engines
    duck = DUCKDB_QUERIES[1]
    clickhouse = duck.replace("ASOF LEFT JOIN", "LEFT ASOF JOIN")
    assert rows(hc.sql(clickhouse).to_arrow()) == rows(db.sql(duck).fetch_arrow_table())


def test_inner_and_left_differ_by_the_unmatched_rows(engines):
    hc, _ = engines
    # Forward: labels after a user's last activity have no match.
    forward = DUCKDB_QUERIES[3]
    inner = hc.sql(forward).to_arrow().num_rows
    left = hc.sql(forward.replace("ASOF JOIN", "ASOF LEFT JOIN")).to_arrow().num_rows
    assert left == 2000 and 0 < inner < left


@pytest.mark.parametrize("direction", ["backward", "forward", "nearest"])
def test_join_asof_and_nearest_on_the_example_data(engines, direction):
    """The labels against the users' activity, as pandas and Polars answer, through
    `join_asof` and through the SQL form."""
    hc, _ = engines
    labels = pd.read_parquet(DATA / "labels.parquet").sort_values("event_timestamp",
                                                                   kind="stable")
    activity = pd.read_parquet(DATA / "user_activity.parquet").sort_values("ts", kind="stable")
    labels = labels.reset_index(drop=True)
    activity = activity.reset_index(drop=True)
    tolerance = pd.Timedelta("3 days")
    expected = pd.merge_asof(labels, activity, left_on="event_timestamp", right_on="ts",
                             by="user_id", direction=direction, tolerance=tolerance)
    actual = hc.join_asof(labels, activity, left_on="event_timestamp", right_on="ts",
                          by="user_id", direction=direction, tolerance=tolerance).to_pandas()
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False)
    assert 0 < expected["ts"].notna().sum() < len(expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        polars = pl.from_pandas(labels).join_asof(
            pl.from_pandas(activity), left_on="event_timestamp", right_on="ts", by="user_id",
            strategy=direction, tolerance=timedelta(days=3))
    assert hc.join_asof(pl.from_pandas(labels), pl.from_pandas(activity),
                        left_on="event_timestamp", right_on="ts", by="user_id",
                        strategy=direction, tolerance=timedelta(days=3)).to_polars().equals(polars)
    if direction == "nearest":
        sql = hc.sql(
            "SELECT l.user_id, l.event_timestamp, a.ts FROM labels l ASOF JOIN activity a "
            "MATCH_CONDITION (nearest(l.event_timestamp, a.ts) "
            "AND abs(l.event_timestamp - a.ts) <= INTERVAL '3 days') ON l.user_id = a.user_id"
        ).to_pandas().sort_values(["user_id", "event_timestamp"]).reset_index(drop=True)
        by_key = expected[["user_id", "event_timestamp", "ts"]] \
            .sort_values(["user_id", "event_timestamp"]).reset_index(drop=True)
        pd.testing.assert_frame_equal(sql, by_key, check_dtype=False)


def random_frames(seed, unique_right=False, no_ties=False):
    """Left and right sorted by `t`, with keys `k`, ids, and values. `no_ties`: left times
    are 0 mod 4 and right times 1 mod 4, so no right row is at a left row's time and no two
    are at equal distances from one."""
    rng = np.random.default_rng(seed)
    n_left, n_right = int(rng.integers(1, 60)), int(rng.integers(1, 120))
    span = int(rng.integers(5, 200))
    left_t = rng.integers(0, span, n_left)
    right_t = rng.integers(0, span, n_right)
    if no_ties:
        left_t, right_t = left_t * 4, right_t * 4 + 1
    right = pd.DataFrame({"k": rng.integers(0, 3, n_right), "t": right_t,
                          "v": rng.integers(0, 1000, n_right)})
    if unique_right:
        right = right.drop_duplicates(["k", "t"])
    right = right.sort_values("t", kind="stable").reset_index(drop=True)
    left = pd.DataFrame({"t": np.sort(left_t), "k": rng.integers(0, 3, n_left),
                         "id": np.arange(n_left)})
    return left, right


CASES = [(d, exact, tol) for d in ["backward", "forward", "nearest"]
         for exact in [True, False] for tol in [None, 0, 7]]


@pytest.mark.parametrize("direction,exact,tolerance", CASES)
def test_join_asof_matches_pandas_merge_asof(direction, exact, tolerance):
    hc = hindcast.connect()
    for seed in range(12):
        # pandas takes the first of tied rows after the left row, hindcast the last (as
        # Polars does): nearest is compared where right rows do not tie on (k, t).
        left, right = random_frames(seed, unique_right=direction == "nearest")
        expected = pd.merge_asof(left, right, on="t", by="k", direction=direction,
                                 allow_exact_matches=exact, tolerance=tolerance)
        actual = hc.join_asof(left, right, on="t", by="k", direction=direction,
                              allow_exact_matches=exact, tolerance=tolerance).to_pandas()
        pd.testing.assert_frame_equal(actual, expected, check_dtype=False)


@pytest.mark.parametrize("direction,exact,tolerance", CASES)
def test_join_asof_matches_polars_join_asof(direction, exact, tolerance):
    hc = hindcast.connect()
    for seed in range(12):
        # At equal distance Polars takes the later row, pandas and hindcast the earlier.
        left, right = random_frames(100 + seed, no_ties=direction == "nearest")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Polars cannot check sortedness within groups
            expected = pl.from_pandas(left).join_asof(
                pl.from_pandas(right), on="t", by="k", strategy=direction,
                allow_exact_matches=exact, tolerance=tolerance)
        actual = hc.join_asof(pl.from_pandas(left), pl.from_pandas(right), on="t", by="k",
                              strategy=direction, allow_exact_matches=exact,
                              tolerance=tolerance).to_polars()
        assert actual.columns == expected.columns
        assert actual.rows() == expected.rows()


def test_join_asof_needs_no_sorted_input_and_keeps_the_left_order():
    hc = hindcast.connect()
    for seed in range(5):
        # Right rows unique on (k, t): with ties the answer depends on their order.
        left, right = random_frames(200 + seed, unique_right=True)
        expected = pd.merge_asof(left, right, on="t", by="k")
        shuffled_left = left.sample(frac=1, random_state=seed).reset_index(drop=True)
        shuffled_right = right.sample(frac=1, random_state=seed + 1)
        actual = hc.join_asof(shuffled_left, shuffled_right, on="t", by="k").to_pandas()
        assert actual["id"].tolist() == shuffled_left["id"].tolist()
        actual = actual.sort_values("id").reset_index(drop=True)
        pd.testing.assert_frame_equal(actual, expected, check_dtype=False)


def test_join_asof_on_timestamps_with_a_duration_tolerance():
    hc = hindcast.connect()
    base = pd.Timestamp("2025-01-01")
    left = pd.DataFrame({"when": [base + pd.Timedelta(minutes=m) for m in [0, 30, 90, 200]],
                         "user": ["a", "a", "b", "b"]})
    right = pd.DataFrame({"at": [base + pd.Timedelta(minutes=m) for m in [-5, 20, 100, 150]],
                          "user": ["a", "a", "b", "b"], "score": [1.0, 2.0, 3.0, 4.0]})
    for tolerance in ["15min", pd.Timedelta("15min"), timedelta(minutes=15),
                      np.timedelta64(15, "m")]:
        actual = hc.join_asof(left, right, left_on="when", right_on="at", by="user",
                              direction="nearest", tolerance=tolerance).to_pandas()
        expected = pd.merge_asof(left, right, left_on="when", right_on="at", by="user",
                                 direction="nearest", tolerance=pd.Timedelta("15min"))
        pd.testing.assert_frame_equal(actual, expected, check_dtype=False)
    assert actual["score"].tolist()[:3] == [1.0, 2.0, 3.0]


def test_join_asof_names_clashing_columns_with_suffixes():
    hc = hindcast.connect()
    left = pd.DataFrame({"t": [1, 5], "k": [1, 1], "v": [10, 50]})
    right = pd.DataFrame({"t": [0, 4], "k": [1, 1], "v": [0, 4]})
    actual = hc.join_asof(left, right, on="t", by="k").to_pandas()
    expected = pd.merge_asof(left, right, on="t", by="k")
    assert list(actual.columns) == list(expected.columns) == ["t", "k", "v_x", "v_y"]
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False)
    # The same names given as left_on/right_on and left_by/right_by are one column each.
    actual = hc.join_asof(left, right, left_on="t", right_on="t", left_by="k", right_by="k")
    expected = pd.merge_asof(left, right, left_on="t", right_on="t", left_by="k", right_by="k")
    assert list(expected.columns) == ["t", "k", "v_x", "v_y"]
    pd.testing.assert_frame_equal(actual.to_pandas(), expected, check_dtype=False)
    # Other names are kept apart, the right's time included.
    renamed = right.rename(columns={"t": "rt", "k": "rk"})
    actual = hc.join_asof(left, renamed, left_on="t", right_on="rt", left_by="k", right_by="rk",
                          tolerance=np.int64(3))
    expected = pd.merge_asof(left, renamed, left_on="t", right_on="rt", left_by="k",
                             right_by="rk", tolerance=np.int64(3))
    assert list(expected.columns) == ["t", "k", "v_x", "rt", "rk", "v_y"]
    pd.testing.assert_frame_equal(actual.to_pandas(), expected, check_dtype=False)


@pytest.mark.parametrize("kwargs,message", [
    ({"on": "t", "direction": "closest"}, "direction must be one of backward, forward, nearest"),
    ({"on": "t", "direction": "forward", "strategy": "backward"}, "not both"),
    ({}, "join_asof needs on, or left_on and right_on"),
    ({"on": "nope"}, "left has no column 'nope'"),
    ({"on": "t", "by": "k", "left_by": "k"}, "give by, or left_by and right_by, not both"),
    ({"on": "t", "tolerance": -1}, "tolerance must not be negative"),
    ({"on": "t", "tolerance": "soon"}, "is not a duration"),
    ({"on": "t", "tolerance": pd.Timedelta("1h")}, "the time columns are integers"),
])
def test_join_asof_errors(kwargs, message):
    hc = hindcast.connect()
    left = pd.DataFrame({"t": [1], "k": [1]})
    right = pd.DataFrame({"t": [1], "k": [1], "v": [1]})
    with pytest.raises(hindcast.PlanningError, match=message):
        hc.join_asof(left, right, **kwargs).to_arrow()
