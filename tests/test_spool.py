"""BatchSpool and the format writers: rows go to disk as they come and come back in order,
measured for formats that need the whole stream first; memory stays flat."""

from __future__ import annotations

import csv
import datetime as dt
import threading
import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pytest

from target_core.columns import Column, ColumnType
from target_core.formats import CsvWriter, SpooledWriter
from target_core.spool import BatchSpool, conform

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("score", pa.float64()),
                    ("ok", pa.bool_()), ("at", pa.timestamp("us"))])


def _batch(rows: Sequence[tuple], schema: pa.Schema = SCHEMA) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [pa.array(v, f.type) for f, v in zip(schema, zip(*rows, strict=True), strict=True)],
        schema=schema)


def test_batches_round_trip_in_order_and_are_measured(tmp_path: Path) -> None:
    rows = [(i, f"näme {i}", None if i % 3 else 1.5, True, dt.datetime(2024, 1, 1, 0, 0, i % 60))
            for i in range(5000)]
    with BatchSpool(tmp_path / "s", SCHEMA) as spool:
        for start in range(0, 5000, 1000):
            spool.write(_batch(rows[start:start + 1000]))
        assert spool.rows == 5000 and spool.size > 0
        assert spool.string_widths == [0, len("näme 4999".encode()), 0, 0, 0]
        batches = list(spool.batches())
        assert [b.num_rows for b in batches] == [1000] * 5
        assert [tuple(r.values()) for b in batches for r in b.to_pylist()] == rows
        segments = spool.segments
    assert segments and not any(p.exists() for p in segments)  # discarded on exit


def test_a_schema_change_starts_a_segment_and_conform_pads_and_retypes(tmp_path: Path) -> None:
    first = pa.schema([("a", pa.string()), ("n", pa.float64())])
    later = pa.schema([("a", pa.string()), ("n", pa.string()), ("c", pa.string())])
    spool = BatchSpool(tmp_path / "s", first)
    spool.write(_batch([("a", 1.5)], first))
    spool.change_schema(later)
    spool.write(_batch([("b", "x", "ccc")], later))
    assert spool.string_widths == [1, 1, 3] and len(spool.segments) == 2
    seen = [conform(b, spool.schema, lambda array, field: array.cast(field.type))
            for b in spool.batches()]
    assert [r for b in seen for r in b.to_pylist()] == [
        {"a": "a", "n": "1.5", "c": None}, {"a": "b", "n": "x", "c": "ccc"}]
    spool.discard()
    with pytest.raises(ValueError, match="added at the end"):
        BatchSpool(tmp_path / "t", later).change_schema(first)


def test_spool_memory_does_not_grow_with_rows(tmp_path: Path) -> None:
    batch = _batch([(1, "x" * 200, 2.5, None, dt.datetime(2024, 1, 1))] * 1000)
    spool = BatchSpool(tmp_path / "s", SCHEMA)
    tracemalloc.start()
    pool = pa.default_memory_pool()
    try:
        for _ in range(200):  # 200k rows, ~45 MB of values
            spool.write(batch)
        _, peak = tracemalloc.get_traced_memory()
        assert pool.bytes_allocated() < 8 * 1024 * 1024
        assert spool.size < 10 * 1024 * 1024, "LZ4 compresses the spool"
        assert sum(b.num_rows for b in spool.batches()) == 200_000
    finally:
        tracemalloc.stop()
        spool.discard()
    assert peak < 4 * 1024 * 1024


def test_the_next_batch_is_read_ahead_on_a_thread_and_a_caller_may_stop_early(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spool = BatchSpool(tmp_path / "s", SCHEMA)
    for start in range(0, 50, 10):
        spool.write(_batch([(i, str(i), None, None, None) for i in range(start, start + 10)]))
    readers: list[str] = []
    real_open = pa.ipc.open_stream

    def open_stream(source: pa.NativeFile) -> pa.ipc.RecordBatchStreamReader:
        readers.append(threading.current_thread().name)
        return real_open(source)

    monkeypatch.setattr(pa.ipc, "open_stream", open_stream)
    threads_before = threading.active_count()
    batches = spool.batches()
    first = next(batches)
    assert readers and readers[0].startswith("spool-read"), "read on the caller's thread"
    assert first.column(0).to_pylist() == list(range(10))
    assert [b.column(0)[0].as_py() for b in batches] == [10, 20, 30, 40]
    early = spool.batches()
    next(early)
    early.close()  # a writer that failed: no thread is left behind
    assert threading.active_count() == threads_before
    spool.discard()


def test_writing_after_close_is_refused(tmp_path: Path) -> None:
    spool = BatchSpool(tmp_path / "s", SCHEMA)
    spool.close()
    with pytest.raises(ValueError):
        spool.write(_batch([(1, "a", 1.0, True, None)]))
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

    def arrow_schema(self, columns: Sequence[Column]) -> pa.Schema:
        return pa.schema([(c.name, pa.string()) for c in columns])

    def write_file(self, path: Path, columns: Sequence[Column], spool: BatchSpool) -> None:
        with path.open("w") as out:
            out.write(f"{spool.rows} {spool.string_widths}\n")
            for batch in spool.batches():
                batch = conform(batch, spool.schema)
                out.writelines(f"{list(row.values())}\n" for row in batch.to_pylist())


def test_a_spooled_writer_knows_count_and_widths_before_writing(tmp_path: Path) -> None:
    writer = _LinesWriter(tmp_path / "a.txt", _columns("a"))
    writer.write_rows([("x",), ("yyyy",)])
    writer.extend(_columns("a", "b"))
    writer.write_rows([("é", "zz")])
    path = writer.finish()
    assert path.read_text().splitlines() == [
        "3 [4, 2]", "['x', None]", "['yyyy', None]", "['é', 'zz']"]
    assert not any(p.exists() for p in writer.spool.segments)
