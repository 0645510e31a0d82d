"""The example's entities, sources, feature views and feature service: the same features
as ../feature_repo/*.sql, declared the Feast way."""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

# Absolute paths: Feast's own stores read a relative path against the working directory.
DATA = Path(__file__).resolve().parent.parent / "feature_repo" / "data"

user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)

spending_source = FileSource(
    name="user_spending_stats_source",
    path=str(DATA / "user_spending_stats.parquet"),
    timestamp_field="event_timestamp",
    created_timestamp_column="created_timestamp",
)

activity_source = FileSource(
    name="user_activity_source",
    path=str(DATA / "user_activity.parquet"),
    timestamp_field="ts",
)

# A daily batch job's output; some rows were re-computed later (same event time, later
# created time), and the later computation wins.
user_spending_stats = FeatureView(
    name="user_spending_stats",
    entities=[user],
    ttl=timedelta(days=90),
    schema=[
        Field(name="avg_transaction_amount", dtype=Float64),
        Field(name="transaction_count_30d", dtype=Int64),
        Field(name="total_spend_90d", dtype=Float64),
        Field(name="avg_days_between_purchases", dtype=Float64),
        Field(name="preferred_category", dtype=String),
    ],
    source=spending_source,
)

# Activity older than a week says nothing about the user today.
user_activity = FeatureView(
    name="user_activity",
    entities=[user],
    ttl=timedelta(days=7),
    schema=[
        Field(name="last_login_days_ago", dtype=Int64),
        Field(name="session_count_7d", dtype=Int64),
    ],
    source=activity_source,
)

churn_model = FeatureService(
    name="churn_model",
    features=[
        user_spending_stats[["avg_transaction_amount", "total_spend_90d", "preferred_category"]],
        user_activity[["session_count_7d"]],
    ],
)
