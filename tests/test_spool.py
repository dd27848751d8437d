"""RowSpool: rows go to disk as they come and come back in order; memory stays flat."""

from __future__ import annotations

import csv
import tracemalloc
from pathlib import Path

import pytest

from target_core.conversions import dumps
from target_core.spool import RowSpool


def test_rows_round_trip_in_order_and_as_csv(tmp_path: Path) -> None:
    rows = [[i, f"näme {i}", None if i % 3 else 1.5, '{"a":[1]}'] for i in range(5000)]
    with RowSpool(tmp_path) as spool:
        for row in rows:
            spool.write(dumps(row))
        assert spool.rows == 5000
        assert list(spool.read_rows()) == rows
        out = spool.write_csv(tmp_path / "out.csv", ["id", "name", "value", "json"])
        with out.open(encoding="utf-8", newline="") as f:
            parsed = list(csv.reader(f))
        assert parsed[0] == ["id", "name", "value", "json"]
        assert parsed[1] == ["0", "näme 0", "1.5", '{"a":[1]}']
        assert parsed[2] == ["1", "näme 1", "", '{"a":[1]}']
        assert len(parsed) == 5001
        path = spool.path
    assert not path.exists()  # discarded on exit


def test_memory_does_not_grow_with_rows(tmp_path: Path) -> None:
    row = dumps([1, "x" * 200, 2.5, None, "2024-01-01 00:00:00"])
    spool = RowSpool(tmp_path)
    tracemalloc.start()
    try:
        for _ in range(200_000):  # ~45 MB of rows
            spool.write(row)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        spool.discard()
    assert peak < 2 * 1024 * 1024


def test_writing_after_close_is_refused(tmp_path: Path) -> None:
    spool = RowSpool(tmp_path)
    spool.close()
    with pytest.raises(ValueError):
        spool.write(b"[1]")
    spool.discard()
