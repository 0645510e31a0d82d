"""Build the churn model's training set through Feast, with hindcast as the offline store.

    python examples/feast_repo/build_training_set.py

Registers the repository's definitions (as `feast apply` does), then asks Feast for the
point-in-time features of every labelled event and prints the first rows.
"""

from pathlib import Path

import pandas as pd
from feast import FeatureStore

import features

REPO = Path(__file__).resolve().parent


def main() -> None:
    (REPO / "data").mkdir(exist_ok=True)
    store = FeatureStore(repo_path=str(REPO))
    store.apply([
        features.user,
        features.spending_source,
        features.activity_source,
        features.user_spending_stats,
        features.user_activity,
        features.churn_model,
    ])
    labels = pd.read_parquet(features.DATA / "labels.parquet")
    training = store.get_historical_features(
        entity_df=labels,
        features=store.get_feature_service("churn_model"),
    ).to_df()
    training = training.sort_values(["user_id", "event_timestamp"]).reset_index(drop=True)
    print(f"{len(training)} training rows from {len(labels)} labels")
    print(training.head(10).to_string())


if __name__ == "__main__":
    main()
