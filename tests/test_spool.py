"""RowSpool and the format writers: rows go to disk as they come and come back in order,
measured for formats that need the whole stream first; memory stays flat."""

from __future__ import annotations

import csv
import datetime as dt
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import pytest

from target_core.columns import Column, ColumnType
from target_core.formats import CsvWriter, SpooledWriter
from target_core.spool import RowSpool


def test_rows_round_trip_in_batches_and_are_measured(tmp_path: Path) -> None:
    rows = [(i, f"näme {i}", None if i % 3 else 1.5, True, dt.datetime(2024, 1, 1, 0, 0, i % 60))
            for i in range(5000)]
    with RowSpool(tmp_path / "s", 5) as spool:
        for start in range(0, 5000, 1000):
            spool.write(rows[start:start + 1000])
        assert spool.rows == 5000
        assert spool.string_widths == [0, len("näme 4999".encode()), 0, 0, 0]
        batches = list(spool.batches())
        assert [len(b) for b in batches] == [1000] * 5
        assert [tuple(r) for b in batches for r in b] == rows
        path = spool.path
    assert not path.exists()  # discarded on exit


def test_a_widened_spool_pads_earlier_rows(tmp_path: Path) -> None:
    spool = RowSpool(tmp_path / "s", 1)
    spool.write([("a",)])
    spool.widen(3)
    spool.write([("b", "ccc", None)])
    assert spool.string_widths == [1, 3, 0]
    assert [r for b in spool.batches() for r in b] == [["a", None, None], ["b", "ccc", None]]
    spool.discard()


def test_spool_memory_does_not_grow_with_rows(tmp_path: Path) -> None:
    batch = [(1, "x" * 200, 2.5, None, "2024-01-01 00:00:00")] * 1000
    spool = RowSpool(tmp_path / "s", 5)
    tracemalloc.start()
    try:
        for _ in range(200):  # 200k rows, ~45 MB of values
            spool.write(batch)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        spool.discard()
    assert peak < 4 * 1024 * 1024


def test_writing_after_close_is_refused(tmp_path: Path) -> None:
    spool = RowSpool(tmp_path / "s", 1)
    spool.close()
    with pytest.raises(ValueError):
        spool.write([(1,)])
    spool.discard()


def _columns(*names: str, kind: ColumnType = ColumnType.TEXT) -> list[Column]:
    return [Column(n, n, kind, True, False) for n in names]


def _read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


def test_csv_writer_writes_header_and_rows(tmp_path: Path) -> None:
    writer = CsvWriter(tmp_path / "a.csv", _columns("id", "name"))
    writer.write_rows([(1, "x,y"), (2, None), (3, 'say "hi"\nthere')])
    assert writer.size > 0 and writer.rows == 3
    path = writer.finish()
    assert _read_csv(path) == [["id", "name"], ["1", "x,y"], ["2", ""],
                               ["3", 'say "hi"\nthere']]


def test_csv_writer_with_added_columns_rewrites_once_with_the_union(tmp_path: Path) -> None:
    writer = CsvWriter(tmp_path / "a.csv", _columns("id", "name"))
    writer.write_rows([(1, "a\nb")])
    assert writer.extend(_columns("id", "name", "extra"))
    writer.write_rows([(2, "b", "e")])
    assert _read_csv(writer.finish()) == [["id", "name", "extra"], ["1", "a\nb", ""],
                                          ["2", "b", "e"]]


def test_csv_booleans_are_words() -> None:
    convert = CsvWriter.converter_for(Column("b", "b", ColumnType.BOOLEAN, True, False))
    assert convert is not None and (convert(True), convert(False), convert(None)) == (
        "true", "false", None)


class _LinesWriter(SpooledWriter):
    """A toy whole-stream format: a header line with row count and widths, then rows."""

    suffix = ".txt"

    def write_file(self, path: Path, columns: Sequence[Column], spool: RowSpool) -> None:
        with path.open("w") as out:
            out.write(f"{spool.rows} {spool.string_widths}\n")
            for batch in spool.batches():
                out.writelines(f"{row}\n" for row in batch)


def test_a_spooled_writer_knows_count_and_widths_before_writing(tmp_path: Path) -> None:
    writer = _LinesWriter(tmp_path / "a.txt", _columns("a"))
    writer.write_rows([("x",), ("yyyy",)])
    writer.extend(_columns("a", "b"))
    writer.write_rows([("é", "zz")])
    path = writer.finish()
    assert path.read_text().splitlines() == [
        "3 [4, 2]", "['x', None]", "['yyyy', None]", "['é', 'zz']"]
    assert not writer.spool.path.exists()
