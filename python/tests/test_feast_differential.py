"""hindcast's Feast offline store against Feast's own DuckDB store, through Feast's
`FeatureStore.get_historical_features`, on random feature repositories: TTL or none (zero
included), backfills that tie on event time with later created timestamps, composite
entities, duplicate and unmatched entity rows, NULL keys, entity times naive or in several
time zones, feature times in different units and zones, field mappings, join key maps,
full feature names and `filter_by_created_timestamp`. Every case's answer must equal
DuckDB's row by row.

Exact ties (two feature rows with the same keys, event time and created time) are not
generated: Feast's stores pick one of them arbitrarily, and hindcast by a fixed rule.

`HINDCAST_FEAST_CASES` sets the number of cases (default 200); `HINDCAST_FEAST_SEED` reruns
one.
"""

import os
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, List, Optional

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource, ValueType
from feast.repo_config import RepoConfig
from feast.types import Float64, Int64, String

CASES = int(os.environ.get("HINDCAST_FEAST_CASES", "200"))
BASE = datetime(2025, 1, 1)
ZONES = [None, "UTC", "America/New_York", "Asia/Kolkata"]


@dataclass
class ViewSpec:
    name: str
    keys: List[str]  # feature-table key columns: "user" (int) and maybe "region" (str)
    ttl: Optional[timedelta]
    created: bool
    unit: str  # of the feature table's timestamps
    zone: Optional[str]
    mapped_feature: bool  # the source names its feature column differently
    join_key_map: Optional[Dict[str, str]]  # feature key -> entity column
    index: int = 0
    rows: List[dict] = field(default_factory=list)

    def features(self) -> List[str]:
        """Named per view, so that without full feature names they do not collide."""
        return [f"f{self.index}_value", f"f{self.index}_label"]


@dataclass
class Case:
    seed: int
    views: List[ViewSpec]
    entity: pd.DataFrame
    full_feature_names: bool
    filter_by_created: bool

    def refs(self) -> List[str]:
        return [f"{v.name}:{f}" for v in self.views for f in v.features()]


def _instant(rng: random.Random, days: int) -> datetime:
    return BASE + timedelta(seconds=rng.randrange(days * 86400))


def make_case(seed: int) -> Case:
    rng = random.Random(seed)
    days = rng.choice([3, 20, 60])
    users = rng.randint(1, 8)
    regions = ["eu", "us"]
    views = []
    for v in range(rng.randint(1, 3)):
        keys = ["user"] if rng.random() < 0.7 else ["user", "region"]
        # (Feast's DuckDB store fails on a TTL of days and seconds, such as 47 hours: ibis
        # cannot make one interval of it. Those are left out; hindcast takes any.)
        ttl = rng.choice([None, timedelta(0), timedelta(hours=rng.randint(1, 23)),
                          timedelta(days=rng.randint(1, 30))])
        spec = ViewSpec(
            name=f"c{seed}_v{v}", keys=keys, ttl=ttl, created=rng.random() < 0.7,
            unit=rng.choice(["us", "ns", "ms"]), zone=rng.choice([None, "UTC"]),
            mapped_feature=rng.random() < 0.3,
            join_key_map={"user": "customer"} if rng.random() < 0.15 else None,
            index=v,
        )
        seen = set()
        for i in range(rng.randint(0, 80)):
            key = (rng.randrange(users), rng.choice(regions))
            event = _instant(rng, days)
            if spec.created:
                # Backfills and corrections: created later than the event, sometimes a
                # second row at the same event time created later still.
                created = event + timedelta(seconds=rng.choice([0, 60, 3600, 86400 * 3]))
                identity = (key, event, created)
            else:
                created = None
                identity = (key, event)
            if not spec.keys[1:]:
                identity = (key[0],) + identity[1:]
            if identity in seen:
                continue
            seen.add(identity)
            spec.rows.append(dict(user=key[0], region=key[1], event=event, created=created,
                                  value=float(seed * 1000 + v * 100 + i), label=f"r{i}"))
            if spec.created and rng.random() < 0.2:
                later = created + timedelta(seconds=rng.choice([1, 7200]))
                identity = identity[:-1] + (later,)
                if identity not in seen:
                    seen.add(identity)
                    spec.rows.append(dict(user=key[0], region=key[1], event=event,
                                          created=later, value=float(-seed - i), label=f"fix{i}"))
        views.append(spec)

    zone = rng.choice(ZONES)
    rows = []
    for i in range(rng.randint(1, 40)):
        user = rng.randrange(users + 2)  # a few users without features
        rows.append(dict(row_id=i, user=user, region=rng.choice(regions + [None]),
                         event_timestamp=_instant(rng, days + 5)))
        if rng.random() < 0.1:  # duplicate entity rows are kept
            rows.append(dict(rows[-1], row_id=i + 1000))
    entity = pd.DataFrame(rows)
    entity["customer"] = entity["user"]
    if rng.random() < 0.2:
        entity.loc[entity.index[:2], "user"] = None  # NULL keys never match
        entity["user"] = entity["user"].astype("Int64")
    ts = entity["event_timestamp"]
    if zone is not None:
        entity["event_timestamp"] = ts.dt.tz_localize("UTC").dt.tz_convert(zone)
    return Case(seed, views, entity, rng.random() < 0.5, rng.random() < 0.3)


def _write_source(spec: ViewSpec, path: Path) -> FileSource:
    def times(values):
        series = pd.Series(pd.to_datetime(values)).astype(f"datetime64[{spec.unit}]")
        return series.dt.tz_localize(spec.zone) if spec.zone else series

    value, label = spec.features()
    feature_column = "src_value" if spec.mapped_feature else value
    columns = {
        "user": pa.array([r["user"] for r in spec.rows], pa.int64()),
        "region": pa.array([r["region"] for r in spec.rows], pa.string()),
        "event_ts": pa.Array.from_pandas(times([r["event"] for r in spec.rows])),
        feature_column: pa.array([r["value"] for r in spec.rows], pa.float64()),
        label: pa.array([r["label"] for r in spec.rows], pa.string()),
    }
    if spec.created:
        columns["created_ts"] = pa.Array.from_pandas(times([r["created"] for r in spec.rows]))
    if not spec.rows:
        columns["event_ts"] = pa.array([], pa.timestamp(spec.unit, tz=spec.zone))
        if spec.created:
            columns["created_ts"] = pa.array([], pa.timestamp(spec.unit, tz=spec.zone))
    pq.write_table(pa.table(columns), path)
    return FileSource(
        name=f"{spec.name}_source", path=str(path), timestamp_field="event_ts",
        created_timestamp_column="created_ts" if spec.created else "",
        field_mapping={"src_value": value} if spec.mapped_feature else None,
    )


def _objects(case: Case, directory: Path):
    objects, views = [], []
    for spec in case.views:
        entities = [Entity(name=f"{spec.name}_{k}", join_keys=[k],
                           value_type=ValueType.INT64 if k == "user" else ValueType.STRING)
                    for k in spec.keys]
        source = _write_source(spec, directory / f"{spec.name}.parquet")
        schema = [Field(name=k, dtype=Int64 if k == "user" else String) for k in spec.keys]
        value, label = spec.features()
        schema += [Field(name=value, dtype=Float64), Field(name=label, dtype=String)]
        view = FeatureView(name=spec.name, entities=entities, ttl=spec.ttl, schema=schema,
                           source=source)
        objects += entities + [source, view]
        views.append(view)
    service = None
    if any(spec.join_key_map for spec in case.views):
        projections = []
        for spec, view in zip(case.views, views):
            projection = view[spec.features()]
            if spec.join_key_map:
                projection = projection.with_join_key_map(spec.join_key_map)
            projections.append(projection)
        service = FeatureService(name=f"c{case.seed}_service", features=projections)
        objects.append(service)
    return objects, service


def _store(directory: Path, offline_type: str) -> FeatureStore:
    config = RepoConfig(
        project="differential",
        provider="local",
        registry=str(directory / "registry.db"),
        online_store={"type": "sqlite", "path": str(directory / f"online_{offline_type}.db")},
        offline_store={"type": offline_type},
        entity_key_serialization_version=3,
        repo_path=str(directory),
    )
    return FeatureStore(config=config)


def _answer(store: FeatureStore, case: Case, service) -> pd.DataFrame:
    job = store.get_historical_features(
        entity_df=case.entity.copy(),
        features=store.get_feature_service(service.name) if service else case.refs(),
        full_feature_names=case.full_feature_names,
        filter_by_created_timestamp=case.filter_by_created,
    )
    frame = job.to_df()
    frame = frame.sort_values("row_id").reset_index(drop=True)
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    return frame


def _seeds():
    if "HINDCAST_FEAST_SEED" in os.environ:
        return [int(os.environ["HINDCAST_FEAST_SEED"])]
    return list(range(CASES))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    directory = tmp_path_factory.mktemp("feast_differential")
    cases = [make_case(seed) for seed in _seeds()]
    services = {}
    objects = []
    for case in cases:
        case_objects, service = _objects(case, directory)
        objects += case_objects
        services[case.seed] = service
    duckdb_store = _store(directory, "duckdb")
    duckdb_store.apply(objects)
    hindcast_store = _store(directory, "hindcast.feast.HindcastOfflineStore")
    return cases, services, duckdb_store, hindcast_store


def test_hindcast_store_equals_feast_duckdb_store_on_random_repositories(stores):
    cases, services, duckdb_store, hindcast_store = stores
    differences = []
    for case in cases:
        service = services[case.seed]
        expected = _answer(duckdb_store, case, service)
        actual = _answer(hindcast_store, case, service)
        try:
            assert list(actual.columns) == list(expected.columns)
            pd.testing.assert_frame_equal(actual, expected, check_dtype=False)
        except AssertionError as e:
            differences.append(
                f"seed {case.seed} (HINDCAST_FEAST_SEED={case.seed}): {e}\n"
                f"expected:\n{expected}\nactual:\n{actual}")
    assert not differences, f"{len(differences)} of {len(cases)} cases differ:\n\n" + "\n\n".join(
        differences[:3])
    print(f"feast differential: {len(cases)} cases, 0 differences")
