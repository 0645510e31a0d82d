"""The example Feast repository (examples/feast_repo) as a user runs it, with hindcast as
the offline store and, changing only the `type:` line, with Feast's DuckDB store: the
training-set script, and `feast materialize` into the SQLite online store, which must hold
the same values either way."""

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from feast import FeatureStore

REPO = Path(__file__).resolve().parents[2]
FEAST = Path(sys.executable).with_name("feast")


def _copy(tmp_path: Path, offline_type: str) -> Path:
    """The example repository and its data, with the offline store's type set."""
    root = tmp_path / offline_type.replace(".", "_")
    shutil.copytree(REPO / "examples" / "feast_repo", root / "feast_repo",
                    ignore=shutil.ignore_patterns("data"))
    shutil.copytree(REPO / "examples" / "feature_repo", root / "feature_repo")
    config = root / "feast_repo" / "feature_store.yaml"
    text = config.read_text()
    assert "type: hindcast.feast.HindcastOfflineStore" in text
    config.write_text(text.replace("type: hindcast.feast.HindcastOfflineStore",
                                   f"type: {offline_type}"))
    return root / "feast_repo"


def _feast(repo: Path, *args: str) -> str:
    done = subprocess.run([str(FEAST), "-c", str(repo), *args], capture_output=True, text=True)
    assert done.returncode == 0, f"feast {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_training_set_script_prints_a_training_set(tmp_path):
    repo = _copy(tmp_path, "hindcast.feast.HindcastOfflineStore")
    done = subprocess.run([sys.executable, str(repo / "build_training_set.py")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "2000 training rows from 2000 labels" in done.stdout
    assert "avg_transaction_amount" in done.stdout


def _online_values(repo: Path) -> pd.DataFrame:
    store = FeatureStore(repo_path=str(repo))
    users = [{"user_id": u} for u in range(1000, 1500)]
    features = ["user_spending_stats:avg_transaction_amount",
                "user_spending_stats:preferred_category",
                "user_activity:session_count_7d"]
    return pd.DataFrame(store.get_online_features(features=features, entity_rows=users).to_dict())


def test_materialize_fills_the_online_store_as_feasts_duckdb_store_does(tmp_path):
    answers = []
    for offline_type in ["hindcast.feast.HindcastOfflineStore", "duckdb"]:
        repo = _copy(tmp_path, offline_type)
        _feast(repo, "apply")
        _feast(repo, "materialize", "2025-01-01T00:00:00", "2025-03-05T00:00:00")
        answers.append(_online_values(repo))
    hindcast_values, duckdb_values = answers
    assert hindcast_values["avg_transaction_amount"].notna().sum() > 400
    pd.testing.assert_frame_equal(hindcast_values, duckdb_values)
