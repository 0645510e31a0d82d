"""Delta tables across engines: one written by hindcast (`CREATE EXTERNAL TABLE ... STORED
AS DELTA`, `INSERT INTO`) read by the `deltalake` package, and one written by `deltalake`
read by hindcast at each version, as a table and as a feature view."""

from datetime import datetime, timedelta

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

import hindcast


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("user_id", "ascending"), ("ts", "ascending")])


def test_a_table_hindcast_writes_is_the_one_deltalake_reads(tmp_path):
    location = tmp_path / "events"
    hc = hindcast.connect()
    hc.sql(f"CREATE EXTERNAL TABLE events (user_id BIGINT, ts TIMESTAMP, date VARCHAR, "
           f"spend DOUBLE) STORED AS DELTA PARTITIONED BY (date) LOCATION '{location}'")
    for day in range(3):
        hc.sql(f"INSERT INTO events SELECT value AS user_id, "
               f"CAST(TIMESTAMP '2025-01-01 08:00:00' + INTERVAL '{day} days' AS TIMESTAMP) AS ts, "
               f"'2025-01-0{day + 1}' AS date, value * 1.5 + {day} AS spend "
               f"FROM generate_series(1, 5)").to_arrow()
    ours = hc.sql("SELECT user_id, ts, date, spend FROM events").to_arrow()
    theirs = DeltaTable(str(location))
    assert theirs.version() == 3
    assert theirs.metadata().partition_columns == ["date"]
    read = theirs.to_pyarrow_table().select(["user_id", "ts", "date", "spend"])
    assert len(read) == 15
    assert _sorted(read).to_pylist() == _sorted(ours.cast(read.schema)).to_pylist()
    # Version 1 holds the first INSERT only, for both.
    assert len(DeltaTable(str(location), version=1).to_pyarrow_table()) == 5


def test_hindcast_reads_each_version_deltalake_wrote(tmp_path):
    location = str(tmp_path / "stats")
    start = datetime(2025, 1, 1)
    batches = []
    for commit in range(3):
        rows = [(user, start + timedelta(days=commit * 3 + day, minutes=user), float(commit * 100 + user))
                for user in range(1, 6) for day in range(3)]
        batch = pa.table({
            "user_id": pa.array([r[0] for r in rows], pa.int64()),
            "ts": pa.array([r[1] for r in rows], pa.timestamp("us")),
            "spend": pa.array([r[2] for r in rows], pa.float64()),
        })
        write_deltalake(location, batch, mode="append")
        batches.append(batch)
    labels = pa.table({
        "user_id": pa.array([1, 2, 3, 4, 5, 1], pa.int64()),
        "event_timestamp": pa.array([start + timedelta(days=d) for d in (1, 4, 8, 9, 10, 2)],
                                    pa.timestamp("us")),
    })
    hc = hindcast.connect()
    hc.register("labels", labels)
    for version in range(3):
        hc.sql(f"CREATE OR REPLACE FEATURE VIEW stats ENTITY (user_id) TIMESTAMP ts "
               f"STORED AS DELTA LOCATION '{location}' OPTIONS ('version' '{version}')")
        hc.register("expected_rows", pa.concat_tables(batches[:version + 1]))
        hc.sql("CREATE OR REPLACE FEATURE VIEW expected ENTITY (user_id) TIMESTAMP ts "
               "AS SELECT * FROM expected_rows")
        got = hc.historical_features("labels", ["stats:spend"]).to_arrow()
        want = hc.historical_features("labels", ["expected:spend"]).to_arrow()
        key = [("user_id", "ascending"), ("event_timestamp", "ascending")]
        assert got.sort_by(key).column("spend").to_pylist() == \
            want.sort_by(key).column("spend").to_pylist(), version
    count = hc.sql(f"CREATE EXTERNAL TABLE t STORED AS DELTA LOCATION '{location}'; "
                   f"SELECT count(*) AS n FROM t").to_arrow()
    assert count.column("n").to_pylist() == [45]


def test_insert_refuses_a_table_with_a_check_constraint(tmp_path):
    """deltalake-core's DataFusion sink does not check constraints: hindcast refuses to
    write rather than write rows that break one."""
    location = str(tmp_path / "checked")
    write_deltalake(location, pa.table({"user_id": pa.array([1], pa.int64()),
                                        "spend": pa.array([1.0], pa.float64())}))
    DeltaTable(location).alter.add_constraint({"positive_spend": "spend > 0"})
    hc = hindcast.connect()
    hc.sql(f"CREATE EXTERNAL TABLE checked STORED AS DELTA LOCATION '{location}'")
    with pytest.raises(hindcast.PlanningError, match="CHECK constraint"):
        hc.sql("INSERT INTO checked SELECT 2, -5.0").to_arrow()
    assert DeltaTable(location).version() == 1
