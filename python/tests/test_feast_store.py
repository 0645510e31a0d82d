"""The rest of the offline store interface, on a copy of the example Feast repository:
an entity query in SQL, retrieval without entity rows (a date range), pulling all rows,
writing a batch, saving a dataset, and the errors."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from feast import FeatureStore
from feast.infra.offline_stores.file_source import SavedDatasetFileStorage

import hindcast
from test_feast_example import _copy

SPENDING = "user_spending_stats:avg_transaction_amount"


@pytest.fixture()
def store(tmp_path):
    repo = _copy(tmp_path, "hindcast.feast.HindcastOfflineStore")
    import sys

    sys.path.insert(0, str(repo))
    sys.modules.pop("features", None)
    import features

    sys.path.pop(0)
    fs = FeatureStore(repo_path=str(repo))
    fs.apply([features.user, features.spending_source, features.activity_source,
              features.user_spending_stats, features.user_activity, features.churn_model])
    fs.example_data = features.DATA
    return fs


def _sorted(frame):
    frame = frame.copy()
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame.sort_values(["user_id", "event_timestamp"]).reset_index(drop=True)


def test_an_entity_query_in_sql_reads_the_sources_by_name(store):
    sql = ("SELECT DISTINCT user_id, TIMESTAMP '2025-02-01 00:00:00' AS event_timestamp "
           "FROM user_spending_stats_source")
    from_sql = store.get_historical_features(entity_df=sql, features=[SPENDING]).to_df()
    users = pq.read_table(store.example_data / "user_spending_stats.parquet",
                          columns=["user_id"]).to_pandas()["user_id"].unique()
    frame = pd.DataFrame({"user_id": users,
                          "event_timestamp": pd.Timestamp("2025-02-01", tz="UTC")})
    from_frame = store.get_historical_features(entity_df=frame, features=[SPENDING]).to_df()
    assert len(from_sql) == len(users) == 500
    pd.testing.assert_frame_equal(_sorted(from_sql), _sorted(from_frame), check_dtype=False)


def test_retrieval_without_entity_rows_is_each_entity_at_the_range_end(store):
    end = datetime(2025, 2, 1, tzinfo=timezone.utc)
    start = end - timedelta(days=3)
    frame = store.get_historical_features(features=[SPENDING], start_date=start,
                                          end_date=end).to_df()
    rows = pq.read_table(store.example_data / "user_spending_stats.parquet").to_pandas()
    in_range = rows[(rows.event_timestamp >= start.replace(tzinfo=None))
                    & (rows.event_timestamp <= end.replace(tzinfo=None))]
    assert sorted(frame["user_id"]) == sorted(in_range["user_id"].unique())
    assert (pd.to_datetime(frame["event_timestamp"], utc=True) == end).all()
    # Each entity's value is its latest row at or before the end (within the 90-day TTL),
    # the latest created among rows of the same event time.
    latest = (rows[rows.event_timestamp <= end.replace(tzinfo=None)]
              .sort_values(["event_timestamp", "created_timestamp"])
              .groupby("user_id").tail(1).set_index("user_id")["avg_transaction_amount"])
    got = frame.set_index("user_id")["avg_transaction_amount"]
    assert (got == latest.loc[got.index]).all()


def test_pull_all_from_table_or_query(store):
    view = store.get_feature_view("user_activity")
    start = datetime(2025, 1, 10, tzinfo=timezone.utc)
    end = datetime(2025, 1, 12, tzinfo=timezone.utc)
    job = store._get_provider().offline_store.pull_all_from_table_or_query(
        config=store.config, data_source=view.batch_source, join_key_columns=["user_id"],
        feature_name_columns=["session_count_7d"], timestamp_field="ts",
        start_date=start, end_date=end)
    got = job.to_df().sort_values(["user_id", "ts"]).reset_index(drop=True)
    rows = pq.read_table(store.example_data / "user_activity.parquet").to_pandas()
    want = rows[(rows.ts >= start.replace(tzinfo=None)) & (rows.ts <= end.replace(tzinfo=None))]
    want = want[["user_id", "session_count_7d", "ts"]].sort_values(["user_id", "ts"])
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True), check_dtype=False)


def test_write_to_offline_store_appends_and_is_read_back(store):
    columns = pq.read_schema(store.example_data / "user_activity.parquet").names
    batch = pd.DataFrame({
        "user_id": [999_999],
        "ts": [pd.Timestamp("2025-03-01 12:00:00")],
        "last_login_days_ago": [1],
        "session_count_7d": [77],
    })[columns]
    before = pq.read_table(store.example_data / "user_activity.parquet").num_rows
    store.write_to_offline_store("user_activity", batch)
    assert pq.read_table(store.example_data / "user_activity.parquet").num_rows == before + 1
    frame = pd.DataFrame({"user_id": [999_999],
                          "event_timestamp": [pd.Timestamp("2025-03-02", tz="UTC")]})
    got = store.get_historical_features(
        entity_df=frame, features=["user_activity:session_count_7d"]).to_df()
    assert got["session_count_7d"].tolist() == [77]
    # Columns out of order: an error that says which, and nothing written.
    with pytest.raises(ValueError, match="in this exact order"):
        store.write_to_offline_store("user_activity", batch[list(reversed(columns))],
                                    reorder_columns=False)
    assert pq.read_table(store.example_data / "user_activity.parquet").num_rows == before + 1
    assert not [p for p in Path(store.example_data).iterdir() if p.name.startswith(".hindcast-tmp")]


def test_a_training_set_is_saved_once(store, tmp_path):
    labels = pd.read_parquet(store.example_data / "labels.parquet")
    job = store.get_historical_features(entity_df=labels,
                                        features=store.get_feature_service("churn_model"))
    target = tmp_path / "saved.parquet"
    job.persist(SavedDatasetFileStorage(path=str(target)))
    assert pq.read_table(target).num_rows == 2000
    from feast.errors import SavedDatasetLocationAlreadyExists

    with pytest.raises(SavedDatasetLocationAlreadyExists):
        job.persist(SavedDatasetFileStorage(path=str(target)))
    job.persist(SavedDatasetFileStorage(path=str(target)), allow_overwrite=True)
    assert job.metadata.min_event_timestamp <= job.metadata.max_event_timestamp
    assert job.metadata.keys == ["user_id"]


def test_a_missing_entity_column_is_an_error_that_names_it(store):
    frame = pd.DataFrame({"customer": [1000],
                          "event_timestamp": [pd.Timestamp("2025-02-01", tz="UTC")]})
    with pytest.raises(hindcast.PlanningError, match="the spine has no column user_id"):
        store.get_historical_features(entity_df=frame, features=[SPENDING]).to_df()


def _with_store_options(store, options: str) -> FeatureStore:
    """The store's repository with these lines added under `offline_store:`."""
    repo = Path(store.repo_path)
    config = repo / "feature_store.yaml"
    text = config.read_text()
    line = "  type: hindcast.feast.HindcastOfflineStore\n"
    assert line in text
    config.write_text(text.replace(line, line + options))
    return FeatureStore(repo_path=str(repo))


def test_workers_and_settings_in_the_store_config(store, workers):
    """`workers:` and `settings:` under `offline_store:` run retrievals on the workers, with
    the same answer; a worker that is not there fails the retrieval, named."""
    entity = pd.DataFrame({"user_id": [1000, 1001, 1002, 4242],
                           "event_timestamp": pd.to_datetime(["2025-02-01"] * 4, utc=True)})
    features = [SPENDING, "user_activity:session_count_7d"]
    local = store.get_historical_features(entity_df=entity, features=features).to_df()
    listed = "".join(f"    - {w}\n" for w in workers)
    settings = "  settings:\n    distributed.file_scan_config_bytes_per_partition: '1'\n"
    cluster = _with_store_options(store, "  workers:\n" + listed + settings)
    distributed = cluster.get_historical_features(entity_df=entity, features=features).to_df()
    pd.testing.assert_frame_equal(_sorted(distributed), _sorted(local), check_dtype=False)

    config = Path(store.repo_path) / "feature_store.yaml"
    config.write_text(config.read_text().replace(f"    - {workers[0]}\n", "    - 127.0.0.1:1\n"))
    missing = FeatureStore(repo_path=str(store.repo_path))
    with pytest.raises(hindcast.ExecutionError, match="127.0.0.1:1"):
        missing.get_historical_features(entity_df=entity, features=features).to_df()
