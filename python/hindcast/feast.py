"""A Feast offline store that runs point-in-time joins with hindcast.

In `feature_store.yaml`, change only the offline store's type::

    offline_store:
      type: hindcast.feast.HindcastOfflineStore
      # memory_limit: 4G    (optional: spill past this instead of running out of memory)

It reads Feast's standard `FileSource` (Parquet, a file or a directory, local or `s3://`
with the usual `AWS_*` variables), and follows Feast's semantics: a feature row counts for
an entity row when its keys match and its event timestamp is at or before the entity row's
(and, with a TTL, no more than the TTL before it); the latest such row wins, ties on event
time going to the latest created timestamp; `filter_by_created_timestamp` also drops rows
created after the entity row's time; field mappings, `with_join_key_map` projections and
full feature names apply; every entity row is kept, duplicates included; a time-zone-naive
entity timestamp is UTC. `docs/feast.md` has the details and how Feast's own stores differ.
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import pandas as pd
import pyarrow
import pyarrow.parquet
from pydantic import StrictStr

from feast.data_source import DataSource
from feast.errors import SavedDatasetLocationAlreadyExists
from feast.feature_view import DUMMY_ENTITY_ID, FeatureView
from feast.infra.offline_stores import offline_utils
from feast.infra.offline_stores.file_source import FileSource, SavedDatasetFileStorage
from feast.infra.offline_stores.offline_store import (
    OfflineStore,
    RetrievalJob,
    RetrievalMetadata,
)
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from feast.saved_dataset import SavedDatasetStorage
from feast.utils import compute_non_entity_date_range

import hindcast

__all__ = ["HindcastOfflineStore", "HindcastOfflineStoreConfig", "HindcastRetrievalJob"]

_ENTITY = "__hc_entity"
_ROW = "__hc_row"


class HindcastOfflineStoreConfig(FeastConfigBaseModel):
    """Configuration of the hindcast offline store."""

    type: StrictStr = "hindcast.feast.HindcastOfflineStore"
    """Offline store type selector."""

    memory_limit: Optional[StrictStr] = None
    """Keep each query within this much memory ('512M', '4G'), spilling to disk past it."""

    workers: Optional[List[StrictStr]] = None
    """Run each query on these `hindcast worker`s ('host:port'): this process plans, they
    execute (docs/distributed.md). None: in this process."""

    settings: Optional[Dict[StrictStr, StrictStr]] = None
    """Session settings, each run as `SET name = 'value'` before a query (as Feast's Spark
    store takes `spark_conf`), e.g. `distributed.file_scan_config_bytes_per_partition`."""


# ---------------------------------------------------------------- SQL text


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _utc(instant: datetime) -> datetime:
    """An instant as naive UTC; a naive one is UTC already (Feast's convention)."""
    if instant.tzinfo is not None:
        instant = instant.astimezone(timezone.utc).replace(tzinfo=None)
    return instant


def _timestamp(instant: datetime) -> str:
    return f"TIMESTAMP '{_utc(instant).isoformat(sep=' ')}'"


def _interval(ttl: timedelta) -> str:
    micros = ttl // timedelta(microseconds=1)
    return f"INTERVAL '{micros // 1_000_000} seconds {micros % 1_000_000} microseconds'"


def _naive_utc(column: str) -> str:
    """A timestamp column as naive UTC microseconds, whatever its unit and zone (a zoned
    timestamp's raw value is UTC), so it compares with `_timestamp` literals."""
    return f"arrow_cast({column}, 'Timestamp(Microsecond, None)')"


# ---------------------------------------------------------------- sources and views


def _session(config: RepoConfig) -> hindcast.Session:
    store = config.offline_store
    limit = getattr(store, "memory_limit", None)
    workers = getattr(store, "workers", None)
    session = hindcast.connect(memory_limit=limit, workers=workers)
    for name, value in (getattr(store, "settings", None) or {}).items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+", name):
            raise hindcast.PlanningError(
                f"offline_store.settings: {name!r} is not a setting name such as "
                f"distributed.file_scan_config_bytes_per_partition")
        if name.lower() == "hindcast.workers":
            raise hindcast.PlanningError(
                "offline_store.settings: list the workers under offline_store.workers, "
                "not as hindcast.workers")
        session.sql(f"SET {name} = {_string(value)}")
    return session


def _file_source(data_source: Optional[DataSource], what: str) -> FileSource:
    if not isinstance(data_source, FileSource):
        raise hindcast.PlanningError(
            f"{what}: the hindcast offline store reads FileSource (Parquet) sources; "
            f"this one is {type(data_source).__name__}"
        )
    if data_source.file_format is not None and type(data_source.file_format).__name__ != "ParquetFormat":
        raise hindcast.PlanningError(
            f"{what}: the hindcast offline store reads Parquet; this source is "
            f"{type(data_source.file_format).__name__}"
        )
    return data_source


def _location(config: RepoConfig, source: FileSource) -> str:
    path = FileSource.get_uri_for_file_path(repo_path=config.repo_path, uri=source.path)
    if "://" not in path and os.path.isdir(path) and not path.endswith("/"):
        path += "/"
    return path


def _register_source(session: hindcast.Session, config: RepoConfig, name: str,
                     source: FileSource) -> None:
    """The source's files as table `name`, its columns renamed by its field mapping."""
    raw = f"{name}__files"
    session.sql(
        f"CREATE EXTERNAL TABLE {_ident(raw)} STORED AS PARQUET LOCATION "
        f"{_string(_location(config, source))}"
    )
    mapping = dict(source.field_mapping or {})
    columns = session.sql(f"SELECT * FROM {_ident(raw)} LIMIT 0").to_arrow().schema.names
    select = ", ".join(
        f"{_ident(c)} AS {_ident(mapping[c])}" if c in mapping else _ident(c) for c in columns
    )
    session.sql(f"CREATE VIEW {_ident(name)} AS SELECT {select} FROM {_ident(raw)}")


def _define_view(session: hindcast.Session, config: RepoConfig, name: str,
                 fv: FeatureView, entities: List[str]) -> None:
    """Feature view `fv` as hindcast feature view `name`, joined on `entities` (its keys,
    or those its projection's join key map names: Feast joins on those alone)."""
    source = _file_source(fv.batch_source, f"feature view {fv.name}")
    table = f"{name}__source"
    _register_source(session, config, table, source)
    if not entities:
        raise hindcast.PlanningError(
            f"feature view {fv.name} has no entity: the hindcast offline store joins on "
            "entity keys"
        )
    clauses = [
        f"ENTITY ({', '.join(_ident(e) for e in entities)})",
        f"TIMESTAMP {_ident(source.timestamp_field)}",
    ]
    if source.created_timestamp_column:
        clauses.append(f"CREATED {_ident(source.created_timestamp_column)}")
    # Feast: no TTL, or a zero one, means rows of any age count.
    if fv.ttl:
        clauses.append(f"TTL {_interval(fv.ttl)}")
    session.sql(
        f"CREATE FEATURE VIEW {_ident(name)} {' '.join(clauses)} "
        f"AS SELECT * FROM {_ident(table)}"
    )


# ---------------------------------------------------------------- the retrieval job


@dataclass
class _Request:
    """One feature view's share of a retrieval."""

    name: str  # its hindcast name
    view: FeatureView
    features: List[str]
    output_names: List[str]
    # feature-table key -> entity-row column
    join_keys: Dict[str, str]


class HindcastRetrievalJob(RetrievalJob):
    """A retrieval that runs in hindcast when it is read."""

    def __init__(
        self,
        run: Callable[[], pyarrow.Table],
        full_feature_names: bool,
        on_demand_feature_views: Optional[List[OnDemandFeatureView]] = None,
        metadata: Optional[RetrievalMetadata] = None,
        sql: Optional[str] = None,
    ):
        super().__init__()
        self._run = run
        self._full_feature_names = full_feature_names
        self._on_demand_feature_views = on_demand_feature_views or []
        self._metadata = metadata
        self._sql = sql

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> List[OnDemandFeatureView]:
        return self._on_demand_feature_views

    def _to_arrow_internal(self, timeout: Optional[int] = None) -> pyarrow.Table:
        return self._run()

    def _to_df_internal(self, timeout: Optional[int] = None) -> pd.DataFrame:
        return self._run().to_pandas()

    def to_sql(self) -> str:
        if self._sql is None:
            raise NotImplementedError("this retrieval is not one SQL statement")
        return self._sql

    def persist(
        self,
        storage: SavedDatasetStorage,
        allow_overwrite: bool = False,
        timeout: Optional[int] = None,
    ):
        if not isinstance(storage, SavedDatasetFileStorage):
            raise hindcast.PlanningError(
                "the hindcast offline store saves datasets as files (SavedDatasetFileStorage)"
            )
        path = storage.file_options.uri
        if os.path.exists(path) and not allow_overwrite:
            raise SavedDatasetLocationAlreadyExists(location=path)
        # Through Feast's to_arrow, so on-demand features are part of what is saved.
        table = self.to_arrow(timeout=timeout)
        session = hindcast.connect()
        session.register("__hc_saved", table)
        session.sql("SELECT * FROM __hc_saved").write_parquet(path)

    @property
    def metadata(self) -> Optional[RetrievalMetadata]:
        return self._metadata

    def supports_remote_storage_export(self) -> bool:
        return False


# ---------------------------------------------------------------- entity rows


def _entity_table(entity_df: pd.DataFrame) -> Tuple[pyarrow.Table, str]:
    """The entity rows as Arrow, with Feast's reading of the event timestamp: the column
    `event_timestamp` or the only datetime column; strings parsed as UTC."""
    schema = dict(zip(entity_df.columns, entity_df.dtypes))
    ts = offline_utils.infer_event_timestamp_from_entity_df(entity_schema=schema)
    column = entity_df[ts].infer_objects()
    if pd.api.types.is_string_dtype(column) or pd.api.types.is_object_dtype(column):
        entity_df = entity_df.copy()
        entity_df[ts] = pd.to_datetime(column, utc=True)
    return pyarrow.Table.from_pandas(entity_df, preserve_index=False), ts


def _timestamp_range(table: pyarrow.Table, ts: str) -> Tuple[Optional[datetime], Optional[datetime]]:
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return None, None
    bounds = pc.min_max(table[ts]).as_py()
    return bounds["min"], bounds["max"]


def _requests(feature_views: List[FeatureView], feature_refs: List[str],
              full_feature_names: bool) -> List[_Request]:
    requests = []
    for i, fv in enumerate(feature_views):
        prefix = fv.projection.name_to_use()
        features = [r.split(":", 1)[1] for r in feature_refs if r.split(":", 1)[0] == prefix]
        if not features:
            continue
        base = fv.projection.name_alias or fv.name
        names = [f"{base}__{f}" if full_feature_names else f for f in features]
        keys = fv.projection.join_key_map or {
            e.name: e.name for e in fv.entity_columns if e.name != DUMMY_ENTITY_ID
        }
        requests.append(_Request(f"fv{i}", fv, features, names, dict(keys)))
    return requests


def _retrieve(config: RepoConfig, requests: List[_Request], entity: Union[pyarrow.Table, str],
              ts: Optional[str], full_feature_names: bool,
              filter_by_created_timestamp: bool) -> pyarrow.Table:
    """Run the point-in-time join: one `historical_features` call over the entity rows when
    every view's keys are the entity rows' columns of the same names (the usual case);
    else one call per view, on row numbers, joined back."""
    session = _session(config)
    for request in requests:
        _define_view(session, config, request.name, request.view, list(request.join_keys))
    if isinstance(entity, str):
        # The query reads the requested views' sources, by their names.
        for request in requests:
            source = request.view.batch_source
            if source.name and source.name not in session.tables():
                _register_source(session, config, source.name, source)
        session.sql(f"CREATE VIEW {_ENTITY} AS {entity}")
        entity_columns = session.sql(f"SELECT * FROM {_ENTITY} LIMIT 0").to_arrow().schema.names
    else:
        session.register(_ENTITY, entity)
        entity_columns = entity.schema.names

    same_names = all(k == v for r in requests for k, v in r.join_keys.items())
    if same_names:
        refs = [f"{r.name}:{f}" for r in requests for f in r.features]
        result = session.historical_features(
            f"SELECT * FROM {_ENTITY}", refs, full_feature_names=True,
            filter_by_created_timestamp=filter_by_created_timestamp,
        ).to_arrow()
        names = entity_columns + [n for r in requests for n in r.output_names]
        return result.rename_columns(names)

    # Per view, on row numbers: keys are renamed for each view as its projection says.
    session.sql(
        f"CREATE VIEW __hc_rows AS SELECT *, row_number() OVER () AS {_ROW} FROM {_ENTITY}"
    )
    session.register("__hc_numbered", session.sql("SELECT * FROM __hc_rows"))
    time = ts or _spine_time(session, "__hc_numbered")
    select = [f"e.{_ident(c)}" for c in entity_columns]
    joins = []
    for i, request in enumerate(requests):
        keys = ", ".join(
            f"{_ident(entity_col)} AS {_ident(view_key)}"
            for view_key, entity_col in request.join_keys.items()
        )
        spine = f"SELECT {_ROW}, {_ident(time)}, {keys} FROM __hc_numbered"
        refs = [f"{request.name}:{f}" for f in request.features]
        part = session.historical_features(
            spine, refs, full_feature_names=True,
            filter_by_created_timestamp=filter_by_created_timestamp,
        )
        session.register(f"__hc_part{i}", part)
        for feature, name in zip(request.features, request.output_names):
            select.append(f"p{i}.{_ident(request.name + '__' + feature)} AS {_ident(name)}")
        joins.append(f"LEFT JOIN __hc_part{i} p{i} ON p{i}.{_ROW} = e.{_ROW}")
    sql = f"SELECT {', '.join(select)} FROM __hc_numbered e {' '.join(joins)}"
    return session.sql(sql).to_arrow()


def _spine_time(session: hindcast.Session, table: str) -> str:
    schema = session.sql(f"SELECT * FROM {table} LIMIT 0").to_arrow().schema
    if "event_timestamp" in schema.names:
        return "event_timestamp"
    times = [f.name for f in schema if pyarrow.types.is_timestamp(f.type) or pyarrow.types.is_date(f.type)]
    if len(times) != 1:
        raise hindcast.PlanningError(
            "the entity rows need an event_timestamp column, or exactly one timestamp column"
        )
    return times[0]


# ---------------------------------------------------------------- the store


class HindcastOfflineStore(OfflineStore):
    """Feast's offline store interface over hindcast."""

    supports_filter_by_created_timestamp = True

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: List[FeatureView],
        feature_refs: List[str],
        entity_df: Optional[Union[pd.DataFrame, str]],
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        for fv in feature_views:
            _file_source(fv.batch_source, f"feature view {fv.name}")
        requests = _requests(feature_views, feature_refs, full_feature_names)
        odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)

        if entity_df is None:
            # Feast's entity-less retrieval: every entity with a feature row in the range,
            # at the range's end.
            start, end = compute_non_entity_date_range(
                feature_views, start_date=kwargs.get("start_date"), end_date=kwargs.get("end_date")
            )
            entity = _entities_in_range(config, requests, start, end)
            ts: Optional[str] = "event_timestamp"
            low, high = start, end
        elif isinstance(entity_df, str):
            entity, ts, low, high = entity_df, None, None, None
        elif isinstance(entity_df, pd.DataFrame):
            entity, ts = _entity_table(entity_df)
            low, high = _timestamp_range(entity, ts)
        else:
            raise hindcast.PlanningError(
                "entity_df must be a pandas DataFrame or a SQL query string, not "
                f"{type(entity_df).__name__}"
            )

        def run() -> pyarrow.Table:
            return _retrieve(config, requests, entity, ts, full_feature_names,
                             filter_by_created_timestamp)

        keys = sorted({c for r in requests for c in r.join_keys.values()})
        metadata = RetrievalMetadata(
            features=feature_refs, keys=keys, min_event_timestamp=low, max_event_timestamp=high,
        )
        return HindcastRetrievalJob(run, full_feature_names, odfvs, metadata)

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: List[str],
        feature_name_columns: List[str],
        timestamp_field: str,
        created_timestamp_column: Optional[str],
        start_date: datetime,
        end_date: datetime,
    ) -> RetrievalJob:
        source = _file_source(data_source, "materialize")
        order = [f"{_ident(timestamp_field)} DESC"]
        if created_timestamp_column:
            order.append(f"{_ident(created_timestamp_column)} DESC NULLS LAST")
        partition = ", ".join(_ident(k) for k in join_key_columns) or "1"
        inner = _pull_sql(join_key_columns, feature_name_columns, timestamp_field,
                          created_timestamp_column, start_date, end_date)
        sql = (
            f"SELECT * FROM ({inner}) WHERE true QUALIFY row_number() OVER "
            f"(PARTITION BY {partition} ORDER BY {', '.join(order)}) = 1"
        )
        return _source_job(config, source, sql)

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: List[str],
        feature_name_columns: List[str],
        timestamp_field: str,
        created_timestamp_column: Optional[str] = None,
        start_date: Optional[datetime] = None,
        end_date: Optional[datetime] = None,
    ) -> RetrievalJob:
        source = _file_source(data_source, "pull_all_from_table_or_query")
        sql = _pull_sql(join_key_columns, feature_name_columns, timestamp_field,
                        created_timestamp_column, start_date, end_date)
        return _source_job(config, source, sql)

    @staticmethod
    def offline_write_batch(
        config: RepoConfig,
        feature_view: FeatureView,
        table: pyarrow.Table,
        progress: Optional[Callable[[int], Any]],
    ):
        source = _file_source(feature_view.batch_source, f"feature view {feature_view.name}")
        schema, columns = offline_utils.get_pyarrow_schema_from_batch_source(config, source)
        if columns != table.column_names:
            raise ValueError(
                f"The input pyarrow table has schema {table.schema} with the incorrect columns "
                f"{table.column_names}. The schema is expected to be {schema} with the columns "
                f"(in this exact order) to be {columns}."
            )
        path = _location(config, source)
        if "://" in path:
            raise hindcast.PlanningError(
                "offline_write_batch writes local files only; this source is " + path
            )
        if path.endswith("/"):
            # A directory: a new file beside the others, renamed into place once written.
            target = os.path.join(path, f"part-{uuid.uuid4().hex}.parquet")
            existing = None
        else:
            target = path
            existing = pyarrow.parquet.read_table(path) if os.path.exists(path) else None
        if existing is not None:
            table = pyarrow.concat_tables([existing, table.cast(existing.schema)])
        temporary = os.path.join(os.path.dirname(target) or ".",
                                 f".hindcast-tmp-{uuid.uuid4().hex}.parquet")
        try:
            pyarrow.parquet.write_table(table, temporary)
            os.replace(temporary, target)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        if progress:
            progress(table.num_rows)


def _pull_sql(join_key_columns: List[str], feature_name_columns: List[str],
              timestamp_field: str, created_timestamp_column: Optional[str],
              start_date: Optional[datetime], end_date: Optional[datetime]) -> str:
    columns = join_key_columns + feature_name_columns + [timestamp_field]
    if created_timestamp_column:
        columns.append(created_timestamp_column)
    ts = _naive_utc(_ident(timestamp_field))
    conditions = ["true"]
    if start_date is not None:
        conditions.append(f"{ts} >= {_timestamp(start_date)}")
    if end_date is not None:
        conditions.append(f"{ts} <= {_timestamp(end_date)}")
    return (
        f"SELECT {', '.join(_ident(c) for c in dict.fromkeys(columns))} FROM __hc_source "
        f"WHERE {' AND '.join(conditions)}"
    )


def _source_job(config: RepoConfig, source: FileSource, sql: str) -> RetrievalJob:
    def run() -> pyarrow.Table:
        session = _session(config)
        _register_source(session, config, "__hc_source", source)
        return session.sql(sql).to_arrow()

    return HindcastRetrievalJob(run, full_feature_names=False, sql=sql)


def _entities_in_range(config: RepoConfig, requests: List[_Request], start: datetime,
                       end: datetime) -> pyarrow.Table:
    """Every entity key that has a feature row in [start, end] in one of the views, at
    `end`: the entity rows of Feast's retrieval without an entity DataFrame."""
    session = _session(config)
    frames = []
    for i, request in enumerate(requests):
        source = _file_source(request.view.batch_source, f"feature view {request.view.name}")
        _register_source(session, config, f"s{i}", source)
        keys = ", ".join(f"{_ident(k)} AS {_ident(v)}" for k, v in request.join_keys.items())
        ts = _naive_utc(_ident(source.timestamp_field))
        frames.append(
            f"SELECT DISTINCT {keys} FROM s{i} "
            f"WHERE {ts} >= {_timestamp(start)} AND {ts} <= {_timestamp(end)}"
        )
    sql = f"SELECT DISTINCT *, {_timestamp(end)} AS event_timestamp FROM ({' UNION ALL '.join(frames)})"
    return session.sql(sql).to_arrow()
