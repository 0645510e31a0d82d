"""Where Feast's default `file` (Dask) offline store differs from its DuckDB store, on the
random cases of test_feast_differential.py. Not a test (the file store is not what hindcast
is held to): a report for docs/feast.md.

    ~/.cache/hindcast-py-venv/bin/python python/tests/file_store_differences.py [CASES]

For every case it asks the DuckDB store, hindcast's store and the file store, and counts,
per store, the cases whose answer differs from DuckDB's and how: rows missing or added,
entity rows answered with another feature row, or the call failing.
"""

import sys
import tempfile
from collections import Counter
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_feast_differential import _answer, _objects, _store, make_case  # noqa: E402


def classify(expected: pd.DataFrame, actual: pd.DataFrame) -> str:
    if len(actual) != len(expected):
        return f"{'lost' if len(actual) < len(expected) else 'added'} entity rows"
    if list(actual.columns) != list(expected.columns):
        return "other columns"
    try:
        pd.testing.assert_frame_equal(actual, expected, check_dtype=False)
        return "same"
    except AssertionError:
        return "other feature values"


def main(cases: int) -> None:
    directory = Path(tempfile.mkdtemp(prefix="file_store_"))
    generated = [make_case(seed) for seed in range(cases)]
    objects, services = [], {}
    for case in generated:
        case_objects, service = _objects(case, directory)
        objects += case_objects
        services[case.seed] = service
    duckdb_store = _store(directory, "duckdb")
    duckdb_store.apply(objects)
    stores = {"hindcast": _store(directory, "hindcast.feast.HindcastOfflineStore"),
              "file": _store(directory, "file")}
    outcomes = {name: Counter() for name in stores}
    examples = {name: {} for name in stores}
    for case in generated:
        expected = _answer(duckdb_store, case, services[case.seed])
        for name, store in stores.items():
            try:
                outcome = classify(expected, _answer(store, case, services[case.seed]))
            except Exception as e:  # noqa: BLE001 - a failing store is an outcome
                outcome = f"fails: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
            outcomes[name][outcome] += 1
            examples[name].setdefault(outcome, case.seed)
    for name in stores:
        print(f"\n{name} store against Feast's DuckDB store, {cases} cases:")
        for outcome, count in outcomes[name].most_common():
            print(f"  {count:4d}  {outcome}  (e.g. seed {examples[name][outcome]})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
