"""Which SPSS writer for DataTile: readstat-arrow in batches, or pyreadstat's whole data frame.

    .venv/bin/python bench/spss_writers.py --rows 200000 2000000 --pandas-python /path/python

A realistic 10-column table (strings of 1- to 4-byte UTF-8 characters, doubles, integers,
booleans as 0/1 with value labels, dates over years 1-9999, UTC date-times with
microseconds, JSON text, nulls everywhere) goes through the path the target takes:

- ``readstat-arrow``: records converted (``target_datatile.variables``) and handed in
  chunks of ``--chunk`` rows to the target's writer (``target_datatile.spss.SpssWriter``),
  which spools them as Arrow batches (``target_core.spool.BatchSpool`` counts and measures)
  and then writes the file from the spool with readstat-arrow.
- ``pyreadstat``: the same converted rows kept in memory, one pandas data frame, then
  ``pyreadstat.write_sav(compress=True)``. pyreadstat needs pandas (or polars) to write,
  which the project does not install: give a Python that has pandas, pyreadstat and
  readstat-arrow with ``--pandas-python`` (its run is skipped otherwise).

Each write runs in its own process (peak RSS from ``wait4``, the child alone). Then
``pyreadstat.read_sav`` reads each file back in chunks and every value is compared with the
generated one. Prints a markdown table; writes nothing into the repository.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from target_core.columns import columns_from_schema  # noqa: E402
from target_datatile import variables  # noqa: E402

SCHEMA = {
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": ["string", "null"]},
        "amount": {"type": ["number", "null"]},
        "quantity": {"type": ["integer", "null"]},
        "active": {"type": ["boolean", "null"]},
        "birthday": {"type": ["string", "null"], "format": "date"},
        "updated_at": {"type": ["string", "null"], "format": "date-time"},
        "note": {"type": ["string", "null"]},
        "tags": {"type": ["object", "null"]},
        "score": {"type": ["number", "null"]},
    }
}
COLUMNS = columns_from_schema(SCHEMA, ["id"], sanitise=variables.variable_name)
CONVERTERS = [variables.converter_for(column) for column in COLUMNS]
WORDS = ["alpha", "Zürich", "café", "Ærøskøbing", "Москва", "Ελλάδα", "東京都", "서울",
         "🙂", "naïve", "data", "x", "O'Brien", "São Paulo", "", "日本語テキスト"]
OFFSETS = ["Z", "+00:00", "+02:00", "-07:30", ""]
CHUNK_SEED = 1_000_003


def records(rows: int, chunk: int = 10_000) -> Iterator[dict[str, Any]]:
    """The same records every time (a seeded generator per chunk of rows)."""
    for start in range(0, rows, chunk):
        rng = random.Random(CHUNK_SEED + start)
        for i in range(start, min(rows, start + chunk)):
            year = rng.choice([1, 9999, 1582, 1900]) if i % 997 == 0 else rng.randint(1940, 2030)
            yield {
                "id": i,
                "name": None if rng.random() < 0.05 else " ".join(
                    rng.choice(WORDS) for _ in range(rng.randint(1, 6))),
                "amount": None if rng.random() < 0.05 else round(rng.uniform(-1e6, 1e6), 2),
                "quantity": None if rng.random() < 0.05 else rng.randint(-1000, 100_000),
                "active": rng.choice([True, False, None]),
                "birthday": None if rng.random() < 0.1 else f"{year:04d}-{rng.randint(1, 12):02d}-"
                f"{rng.randint(1, 28):02d}",
                "updated_at": None if rng.random() < 0.05 else (
                    f"{rng.randint(1990, 2030):04d}-{rng.randint(1, 12):02d}-"
                    f"{rng.randint(1, 28):02d}"
                    f"T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
                    f".{rng.randint(0, 999_999):06d}{rng.choice(OFFSETS)}"),
                "note": None if rng.random() < 0.2 else "".join(
                    rng.choice(WORDS) + " " for _ in range(rng.randint(0, 30))),
                "tags": None if rng.random() < 0.3 else {"k": rng.randint(0, 9), "l": ["a", "ü"]},
                "score": None if rng.random() < 0.05 else rng.random() * 10 ** rng.randint(-3, 9),
            }


def rows_of(count: int) -> Iterator[list[Any]]:
    for record in records(count):
        yield [convert(record[c.source]) for convert, c in zip(CONVERTERS, COLUMNS, strict=True)]


# the two writers (each run in a child process) -------------------------------------------
def write_readstat_arrow(count: int, out: Path, chunk: int,
                         compression: str = "zlib") -> dict[str, Any]:
    """The target's own writer (`SpssWriter` / `SavWriter`, a core `SpooledWriter`): rows
    spooled in batches of `chunk` (counted and measured), then the file from the spool."""
    from target_datatile.spss import SavWriter, SpssWriter

    started = time.monotonic()
    writer = (SpssWriter if compression == "zlib" else SavWriter)(out, COLUMNS)
    writer.compression = compression  # type: ignore[misc]  # "none" too, for comparison
    batch: list[list[Any]] = []
    for row in rows_of(count):
        batch.append(row)
        if len(batch) == chunk:
            writer.write_rows(batch)
            batch = []
    writer.write_rows(batch)
    spooled = time.monotonic()
    writer.finish()
    done = time.monotonic()
    return {"spool_s": spooled - started, "write_s": done - spooled}


def write_pyreadstat(count: int, out: Path, chunk: int) -> dict[str, Any]:
    import pandas as pd
    import pyreadstat

    started = time.monotonic()
    names = [c.name for c in COLUMNS]
    frame = pd.DataFrame(list(rows_of(count)), columns=names)
    for variable in variables.spss_variables(COLUMNS):  # the same values the target writes
        if variable.kind == "date":
            frame[variable.name] = [dt.date.fromisoformat(v) if isinstance(v, str) else None
                                    for v in frame[variable.name]]
        elif variable.kind == "datetime":
            frame[variable.name] = [dt.datetime.fromisoformat(v) if isinstance(v, str) else None
                                    for v in frame[variable.name]]
    built = time.monotonic()
    spss = variables.spss_variables(COLUMNS)
    pyreadstat.write_sav(
        frame, str(out), compress=True,
        column_labels={v.name: v.label for v in spss},
        variable_value_labels={v.name: dict(v.value_labels) for v in spss if v.value_labels},
        variable_format={v.name: v.format for v in spss if v.format},
        variable_measure={v.name: v.measure for v in spss},
    )
    return {"spool_s": built - started, "write_s": time.monotonic() - built}


def write_readstat_arrow_sav(count: int, out: Path, chunk: int) -> dict[str, Any]:
    """.sav with SPSS's bytecode compression, which ReadStat streams (the .zsav is the same
    bytecode, compressed in zlib blocks on the way to disk by `target_datatile.zsav`)."""
    return write_readstat_arrow(count, out, chunk, compression="rows")


WRITERS = {"readstat-arrow": write_readstat_arrow, "readstat-arrow-sav": write_readstat_arrow_sav,
           "pyreadstat": write_pyreadstat}


# checking a file with pyreadstat -----------------------------------------------------------
def _expected(value: Any, kind: str) -> Any:
    if kind == "string":  # SPSS pads strings with blanks: trailing spaces do not come back
        return (value or "").rstrip(" ")
    if kind == "date":
        return None if value is None else dt.date.fromisoformat(value)
    if kind == "datetime":
        return None if value is None else dt.datetime.fromisoformat(value)
    return None if value is None else float(value)


def _same(got: Any, want: Any, kind: str) -> bool:
    if want is None:
        return got is None or (isinstance(got, float) and math.isnan(got))
    if kind == "datetime":  # seconds in a double: the last microsecond digits round
        return abs((got - want).total_seconds()) <= 0.0001
    return got == want


def verify(path: Path, count: int, chunk: int = 200_000) -> str:
    import pyreadstat

    spss = variables.spss_variables(COLUMNS)
    _, meta = pyreadstat.read_sav(str(path), metadataonly=True, output_format="dict")
    problems = []
    if meta.number_rows != count:
        problems.append(f"rows {meta.number_rows}")
    for v in spss:
        if meta.column_names_to_labels.get(v.name) != v.label:
            problems.append(f"label of {v.name}")
        if v.value_labels and meta.variable_value_labels.get(v.name) != {
            float(k): t for k, t in v.value_labels}:
            problems.append(f"value labels of {v.name}")
    widths = {v.name: 0 for v in spss if v.is_string}
    expected_rows = rows_of(count)
    checked = 0
    for data, _ in pyreadstat.read_file_in_chunks(pyreadstat.read_sav, str(path),
                                                  chunksize=chunk, output_format="dict"):
        columns = [data[v.name] for v in spss]
        for got_row in zip(*columns, strict=True):
            want_row = next(expected_rows)
            for v, got, want in zip(spss, got_row, want_row, strict=True):
                if isinstance(want, bytes):  # JSON text, as msgspec's UTF-8 bytes
                    want = want.decode()
                if v.is_string and want:
                    widths[v.name] = max(widths[v.name], len(want.encode()))
                if not _same(got, _expected(want, v.kind), v.kind):
                    problems.append(f"row {checked} {v.name}: {got!r} != {want!r}")
                    if len(problems) > 5:
                        return "; ".join(problems)
            checked += 1
    for name, width in widths.items():
        declared = meta.original_variable_types[name]
        if declared != f"A{max(width, 1)}":
            problems.append(f"{name} declared {declared}, widest value {width} bytes")
    if checked != count:
        problems.append(f"read {checked} rows")
    return "; ".join(problems) or f"all {checked} rows x {len(spss)} values, labels, widths ok"


def run_child(python: str, library: str, count: int, out: Path, chunk: int) -> dict[str, Any]:
    started = time.monotonic()
    child = subprocess.Popen([python, __file__, "--child", library, "--rows", str(count),
                              "--out", str(out), "--chunk", str(chunk)],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"{library} at {count} rows failed (status {status})")
    phases = json.loads(output)
    return {"wall_s": time.monotonic() - started, "peak_rss_mb": usage.ru_maxrss / 1024,
            "size_mb": out.stat().st_size / 1e6, **phases}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[200_000])
    parser.add_argument("--chunk", type=int, default=10_000)
    parser.add_argument("--pandas-python", help="a Python with pandas + pyreadstat")
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--only", nargs="+", choices=list(WRITERS), help="these writers only")
    parser.add_argument("--child")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(WRITERS[args.child](args.rows[0], args.out, args.chunk)))
        return
    subjects = [("readstat-arrow", sys.executable), ("readstat-arrow-sav", sys.executable)]
    if args.pandas_python:
        subjects.append(("pyreadstat", args.pandas_python))
    if args.only:
        subjects = [subject for subject in subjects if subject[0] in args.only]
    print("| writer | rows | wall s | spool/build s | write s | peak RSS MB | file MB "
          "| read back |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory(prefix="spss-bench-") as tmp:
        for count in args.rows:
            for library, python in subjects:
                suffix = ".sav" if library.endswith("-sav") else ".zsav"
                out = Path(tmp) / f"{library}-{count}{suffix}"
                result = run_child(python, library, count, out, args.chunk)
                checked = "not checked" if args.no_verify else verify(out, count)
                print(f"| {library} | {count:,} | {result['wall_s']:.1f} | {result['spool_s']:.1f}"
                      f" | {result['write_s']:.1f} | {result['peak_rss_mb']:.0f}"
                      f" | {result['size_mb']:.1f} | {checked} |", flush=True)
                out.unlink()


if __name__ == "__main__":
    main()
