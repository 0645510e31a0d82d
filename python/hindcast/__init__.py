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

import numbers
import os
import sys
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

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
    """A pandas DataFrame through pyarrow, without its index (pandas 2.2 and later also
    export `__arrow_c_stream__`, which would add a non-default index as a column); anything
    else with `__arrow_c_stream__` or `__arrow_c_array__` as is."""
    pandas = sys.modules.get("pandas")
    if pandas is not None and isinstance(data, pandas.DataFrame):
        import pyarrow

        return pyarrow.Table.from_pandas(data, preserve_index=False)
    if hasattr(data, "__arrow_c_stream__") or hasattr(data, "__arrow_c_array__"):
        return data
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

    def join_asof(
        self,
        left: Any,
        right: Any,
        on: Optional[str] = None,
        *,
        left_on: Optional[str] = None,
        right_on: Optional[str] = None,
        by: Union[str, Sequence[str], None] = None,
        left_by: Union[str, Sequence[str], None] = None,
        right_by: Union[str, Sequence[str], None] = None,
        direction: Optional[str] = None,
        strategy: Optional[str] = None,
        tolerance: Any = None,
        allow_exact_matches: bool = True,
        suffixes: tuple[str, str] = ("_x", "_y"),
    ) -> Result:
        """pandas' `merge_asof` (Polars' `join_asof`): for every row of `left`, the row of
        `right` with equal `by` values that is nearest in `on`: the latest at or before it
        (`direction='backward'`), the earliest at or after it (`'forward'`), or the closer
        of the two, the earlier at equal distance (`'nearest'`). `strategy` is Polars' name
        for `direction`. `tolerance` bounds the distance (inclusive); without
        `allow_exact_matches` a right row at exactly the left row's time never matches.

        The inputs are DataFrames or Arrow data and need not be sorted. The result has
        `left`'s rows in `left`'s order, its columns, then `right`'s other columns (`on` and
        `by` once, as in pandas; clashing names get `suffixes`). Among right rows with equal
        `by` and `on`, the last one in `right` wins going backward and the first going
        forward, as in pandas; for `nearest`, the last one on either side (pandas takes the
        first of those after the left row, Polars the last). A NULL in `on` or `by` never
        matches (pandas refuses it)."""
        if direction is not None and strategy is not None and direction != strategy:
            raise PlanningError("give direction or strategy (its Polars name), not both")
        direction = direction or strategy or "backward"
        if direction not in _DIRECTIONS:
            raise PlanningError(
                f"direction must be one of {', '.join(_DIRECTIONS)}, not {direction!r}"
            )
        if on is not None and (left_on is not None or right_on is not None):
            raise PlanningError("give on, or left_on and right_on, not both")
        if on is not None:
            left_on = right_on = on
        if left_on is None or right_on is None:
            raise PlanningError("join_asof needs on, or left_on and right_on: the time columns")
        if by is not None and (left_by is not None or right_by is not None):
            raise PlanningError("give by, or left_by and right_by, not both")
        left_keys = _names(by if by is not None else left_by)
        right_keys = _names(by if by is not None else right_by)
        if len(left_keys) != len(right_keys):
            raise PlanningError("left_by and right_by must name as many columns each")

        position = "__hc_position"
        left_table = _with_positions(left, position)
        # The tie-breaker: the larger wins, so going forward the first row is the largest.
        right_table = _with_positions(right, position, reverse=direction == "forward")
        for name, table, columns in [("left", left_table, [left_on, *left_keys]),
                                     ("right", right_table, [right_on, *right_keys])]:
            for column in columns:
                if column not in table.column_names:
                    raise PlanningError(f"join_asof: {name} has no column {column!r}")

        lt, rt = f"l.{_ident(left_on)}", f"r.{_ident(right_on)}"
        exact = allow_exact_matches
        terms = {
            "backward": [f"{lt} {'>=' if exact else '>'} {rt}"],
            "forward": [f"{lt} {'<=' if exact else '<'} {rt}"],
            "nearest": [f"nearest({lt}, {rt})"] + ([] if exact else [f"{lt} <> {rt}"]),
        }[direction]
        if tolerance is not None:
            bound = _tolerance_sql(tolerance)
            terms.append({
                "backward": f"{lt} - {rt} <= {bound}",
                "forward": f"{rt} - {lt} <= {bound}",
                "nearest": f"abs({lt} - {rt}) <= {bound}",
            }[direction])
        terms.append(f"latest_by(r.{_ident(position)})")
        keys = [f"l.{_ident(a)} = r.{_ident(b)}" for a, b in zip(left_keys, right_keys)]

        # pandas' columns: the left's, then the right's but an `on` or `by` column paired with
        # a left column of the same name; any other name on both sides gets the suffixes.
        left_columns = [c for c in left_table.column_names if c != position]
        pairs = zip([left_on, *left_keys], [right_on, *right_keys])
        dropped = {r for l, r in pairs if l == r}
        right_columns = [c for c in right_table.column_names if c != position and c not in dropped]
        clash = set(left_columns) & set(right_columns)
        select = [f"l.{_ident(c)} AS {_ident(c + suffixes[0] if c in clash else c)}"
                  for c in left_columns]
        select += [f"r.{_ident(c)} AS {_ident(c + suffixes[1] if c in clash else c)}"
                   for c in right_columns]
        names = (_hindcast.temporary_name("join_asof_left"),
                 _hindcast.temporary_name("join_asof_right"))
        query = (
            f"SELECT {', '.join(select)} FROM {names[0]} AS l ASOF JOIN {names[1]} AS r "
            f"MATCH_CONDITION ({' AND '.join(terms)})"
            + (f" ON {' AND '.join(keys)}" if keys else "")
            + f" ORDER BY l.{_ident(position)}"
        )
        return Result(self._native.sql_with_tables(
            query, [(names[0], left_table), (names[1], right_table)]))


_DIRECTIONS = ("backward", "forward", "nearest")


def _ident(name: str) -> str:
    if not isinstance(name, str):
        raise PlanningError(f"join_asof takes column names as strings, not {name!r}")
    return '"' + name.replace('"', '""') + '"'


def _names(value: Union[str, Sequence[str], None]) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _tolerance_sql(tolerance: Any) -> str:
    """A tolerance as the SQL literal of the join's TTL: an int for integer times; for time
    columns a `datetime.timedelta` (`pandas.Timedelta` is one), a `numpy.timedelta64`, or a
    string pandas reads as one ('1h', '30s')."""
    import datetime

    # numpy.timedelta64 counts as an Integral; it is a duration.
    is_timedelta64 = type(tolerance).__name__ == "timedelta64"
    if (isinstance(tolerance, numbers.Integral) and not isinstance(tolerance, bool)
            and not is_timedelta64):
        tolerance = int(tolerance)
        if tolerance < 0:
            raise PlanningError(f"tolerance must not be negative, found {tolerance}")
        return str(tolerance)
    original = tolerance
    if isinstance(tolerance, str):
        try:
            import pandas

            tolerance = pandas.Timedelta(tolerance)
        except (ImportError, ValueError) as e:
            raise PlanningError(
                f"tolerance {original!r} is not a duration such as '1h' or '30s' ({e})"
            ) from None
    if hasattr(tolerance, "value") and isinstance(tolerance, datetime.timedelta):
        nanos = int(tolerance.value)  # pandas.Timedelta counts nanoseconds
    elif isinstance(tolerance, datetime.timedelta):
        micros = (tolerance.days * 86_400 + tolerance.seconds) * 1_000_000 + tolerance.microseconds
        nanos = micros * 1_000
    elif is_timedelta64:
        nanos = int(tolerance.astype("timedelta64[ns]").astype("int64"))
    else:
        raise PlanningError(
            "tolerance must be an int (integer times) or a duration (datetime.timedelta, "
            f"pandas.Timedelta, numpy.timedelta64, '1h'), not {type(original).__name__}"
        )
    if nanos < 0:
        raise PlanningError(f"tolerance must not be negative, found {original!r}")
    return f"INTERVAL '{nanos} nanoseconds'"


def _with_positions(data: Any, name: str, reverse: bool = False) -> "pyarrow.Table":
    import numpy
    import pyarrow

    table = data if isinstance(data, pyarrow.Table) else pyarrow.table(_arrow_input(data))
    if name in table.column_names:
        raise PlanningError(f"join_asof's inputs must not have a column named {name}")
    positions = numpy.arange(table.num_rows, dtype=numpy.int64)
    return table.append_column(name, pyarrow.array(-positions if reverse else positions))


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
