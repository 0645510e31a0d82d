"""hindcast: exact point-in-time joins for training data, on Apache DataFusion.

For every row of a spine (labelled events), what did the feature tables say about that
entity at that instant, and not a moment later::

    import hindcast

    hc = hindcast.connect("examples/feature_repo")
    training = hc.historical_features(
        "SELECT user_id, event_timestamp, label FROM labels",
        ["user_spending_stats:avg_transaction_amount", "user_activity:session_count_7d"],
    ).to_pandas()

`connect` opens a session; `Session.sql` runs hindcast's SQL (ASOF JOIN ... MATCH_CONDITION,
LEFT JOIN view FOR SYSTEM_TIME AS OF, CREATE FEATURE VIEW, historical_features(...)) and
returns a `Result`, which runs when read: `to_arrow`, `to_pandas`, `to_polars`, or any Arrow
consumer through `__arrow_c_stream__`, batch by batch. `hindcast.feast.HindcastOfflineStore`
is a drop-in Feast offline store.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence, Union

from hindcast import _hindcast
from hindcast._hindcast import ExecutionError, PlanningError
from hindcast._hindcast import Error as Error

if TYPE_CHECKING:
    import pandas
    import polars
    import pyarrow

__version__: str = _hindcast.__version__

__all__ = [
    "connect",
    "Session",
    "Result",
    "Error",
    "PlanningError",
    "ExecutionError",
]


def _memory_limit(limit: Union[int, str, None]) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, str)):
        raise PlanningError(
            f"memory_limit takes bytes (an int) or a size such as '512M' or '2G', not {limit!r}"
        )
    if isinstance(limit, int):
        if limit <= 0:
            raise PlanningError(f"memory_limit must be positive, not {limit}")
        return limit
    return _hindcast.parse_memory_limit(limit)


def _arrow_input(data: Any) -> Any:
    """Anything with `__arrow_c_stream__` or `__arrow_c_array__` as is; a pandas DataFrame
    through pyarrow (without its index)."""
    if hasattr(data, "__arrow_c_stream__") or hasattr(data, "__arrow_c_array__"):
        return data
    try:
        import pandas
    except ImportError:  # pragma: no cover - pandas absent
        pandas = None
    if pandas is not None and isinstance(data, pandas.DataFrame):
        import pyarrow

        return pyarrow.Table.from_pandas(data, preserve_index=False)
    raise PlanningError(
        "expected a pandas or Polars DataFrame, a pyarrow Table or RecordBatchReader, or any "
        f"object with __arrow_c_stream__; got {type(data).__name__}"
    )


class Result:
    """A planned query. Nothing runs until it is read; each read runs it again."""

    def __init__(self, native: _hindcast.QueryResult):
        self._native = native

    def to_arrow(self) -> "pyarrow.Table":
        """Run the query and return its rows as a `pyarrow.Table`."""
        return self._native.to_arrow_table()

    def to_pandas(self) -> "pandas.DataFrame":
        """Run the query and return its rows as a pandas DataFrame."""
        return self.to_arrow().to_pandas()

    def to_polars(self) -> "polars.DataFrame":
        """Run the query and return its rows as a Polars DataFrame."""
        import polars

        return polars.from_arrow(self.to_arrow())

    def __arrow_c_stream__(self, requested_schema: object = None) -> object:
        """The Arrow PyCapsule stream: the query runs as the consumer reads it, batch by
        batch (`pyarrow.RecordBatchReader.from_stream(result)`), so a result larger than
        memory can be consumed."""
        return self._native.__arrow_c_stream__(requested_schema)

    def explain(self, analyze: bool = False, verbose: bool = False) -> str:
        """The plan as text; with `analyze`, the plan run, with its metrics."""
        return self._native.explain(analyze, verbose)

    def write_parquet(self, path: Union[str, os.PathLike]) -> int:
        """Write the rows to `path` as Parquet, atomically: a failed or cancelled write leaves
        nothing behind. A path ending in '/' is written as a directory. Returns the rows
        written."""
        return self._native.write_parquet(os.fspath(path))

    def show(self, limit: int = 20) -> None:
        """Print the first `limit` rows as a table."""
        print(self._native.show(limit))

    def __repr__(self) -> str:
        return f"hindcast.Result({self._native.schema_string()})"


class Session:
    """One hindcast session: tables, feature views and feature services, and queries over
    them. Open one with `hindcast.connect`."""

    def __init__(self, repo: Union[str, os.PathLike, None] = None,
                 memory_limit: Union[int, str, None] = None,
                 workers: Union[str, Sequence[str], None] = None):
        if isinstance(workers, str):
            workers = [workers]
        self._native = _hindcast.Session(
            None if repo is None else os.fspath(repo), _memory_limit(memory_limit),
            None if workers is None else list(workers),
        )

    def sql(self, query: str) -> Result:
        """Run `query`, one or more statements separated by ';'. Every statement but the
        last runs now; the last one's `Result` runs when read (DDL and SET run at once)."""
        return Result(self._native.sql(query))

    def register(self, name: str, data: Any) -> None:
        """Register `data` as table `name` (replacing one of that name): a pandas or Polars
        DataFrame, a pyarrow Table or RecordBatchReader, or anything with
        `__arrow_c_stream__`. The data is read into memory."""
        self._native.register(name, _arrow_input(data))

    def register_parquet(self, name: str, path: Union[str, os.PathLike]) -> None:
        """Register a Parquet file or directory (local or s3://) as table `name`."""
        self._native.register_parquet(name, os.fspath(path))

    def deregister(self, name: str) -> None:
        """Drop table `name`, if there is one."""
        self._native.deregister(name)

    def tables(self) -> list[str]:
        """The names of the session's tables and feature views."""
        return self._native.tables()

    def historical_features(
        self,
        entity_df: Any,
        features: Union[str, Sequence[str]],
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
    ) -> Result:
        """Feast's `get_historical_features`: for every row of `entity_df`, the requested
        features as of its time column (`event_timestamp`, or its only timestamp column).

        `entity_df` is a DataFrame or Arrow table, or a SQL query (or a table name).
        `features` is a list of `view:feature` references, or the name of a feature
        service. With `full_feature_names` features are named `view__feature`; with
        `filter_by_created_timestamp` a feature row counts only once its created timestamp
        too is at or before the entity row's time. Every entity row is kept, duplicates
        included."""
        refs = [features] if isinstance(features, str) else list(features)
        entity = entity_df if isinstance(entity_df, str) else _arrow_input(entity_df)
        return Result(self._native.historical_features(
            entity, refs, full_feature_names, filter_by_created_timestamp))


def connect(repo: Union[str, os.PathLike, None] = None,
            memory_limit: Union[int, str, None] = None,
            workers: Union[str, Sequence[str], None] = None) -> Session:
    """Open a session.

    `repo` is a feature repository: a directory of `.sql` files with feature views, feature
    services and tables, loaded in order. `memory_limit` (bytes, or '512M', '2G') keeps
    queries within that much memory, spilling to disk past it. `workers` ('host:port', a
    list of them, or one comma-separated string) runs queries on `hindcast worker`s: this
    process plans, they execute; it wins over a `SET hindcast.workers` in the repository.
    """
    return Session(repo, memory_limit, workers)
