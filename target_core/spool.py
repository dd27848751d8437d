"""Disk-backed Arrow record batches, for formats that need a whole stream before they can
write a byte.

SPSS files carry the row count and each string variable's width in their header, so a
stream's rows are first kept here and measured, then read back in the same batches to write
the real file (`formats.SpooledWriter`). Memory stays flat whatever the stream's length.

Everything per value happens in Arrow's C code, not in Python: the writer hands over each
batch already as a `pyarrow.RecordBatch` (one C call per column builds it), the widths are
`pyarrow.compute` kernels, and on disk a spool is Arrow IPC streams with LZ4-compressed
buffers (Arrow releases the GIL while it compresses and writes). Reading back yields the
batches as written, ready for a writer that takes Arrow (readstat-arrow).

A SCHEMA change mid-stream (`change_schema`) starts a new IPC stream ("segment") with the
new schema, since one IPC stream has one schema; `conform` makes an earlier segment's batch
look like the last schema (added columns null, retyped columns converted).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import pyarrow as pa
import pyarrow.compute as pc

IPC_OPTIONS = pa.ipc.IpcWriteOptions(compression="lz4")
"""LZ4 frames per buffer: a spool of the benchmark's stream is a third of its Arrow size,
and compressing costs less than writing the difference."""

Retype = Callable[[pa.Array, pa.Field], pa.Array]
"""An earlier batch's column -> its values as `field` (the last schema's) has them."""


def string_widths(batch: pa.RecordBatch) -> list[int]:
    """Per column, the longest string value in UTF-8 bytes (0: not a string column, or no
    value)."""
    widths = []
    for column in batch.columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            widths.append(pc.max(pc.binary_length(column)).as_py() or 0)
        else:
            widths.append(0)
    return widths


def conform(batch: pa.RecordBatch, schema: pa.Schema, retype: Retype | None = None) -> \
        pa.RecordBatch:
    """A batch written under an earlier schema, as `schema` has it: columns added since are
    null; a column whose type changed goes through `retype(array, field)` (default: Arrow's
    cast to the field's type)."""
    if batch.schema.equals(schema, check_metadata=False):
        return batch
    if batch.num_columns > len(schema):
        raise ValueError("a spool's columns can only be added at the end")
    arrays = []
    for i, field in enumerate(schema):
        if i >= batch.num_columns:
            arrays.append(pa.nulls(batch.num_rows, field.type))
            continue
        array = batch.column(i)
        if not array.type.equals(field.type):
            array = retype(array, field) if retype else pc.cast(array, field.type)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


class BatchSpool:
    """Record batches appended to disk, counted and measured, then read back once in order."""

    def __init__(self, path: Path | str, schema: pa.Schema) -> None:
        self.path = Path(path)
        self.schema = schema
        """The schema of the batches written from now on (the last one wins)."""
        self.rows = 0
        self.string_widths = [0] * len(schema)
        """Per column: the longest string value seen, in UTF-8 bytes (0: none seen)."""
        self.segments: list[Path] = []
        """One IPC stream file per schema the batches had, in order."""
        self._sink: pa.OSFile | None = None
        self._writer: pa.ipc.RecordBatchStreamWriter | None = None
        self._closed_bytes = 0
        self._closed = False

    @property
    def size(self) -> int:
        """Bytes on disk."""
        return self._closed_bytes + (self._sink.tell() if self._sink is not None else 0)

    def write(self, batch: pa.RecordBatch) -> None:
        """One batch with the current `schema`."""
        if self._closed:
            raise ValueError("the spool is closed for writing")
        if batch.num_rows == 0:
            return
        if self._writer is None:
            segment = self.path.with_name(f"{self.path.name}.{len(self.segments) + 1}")
            self._sink = pa.OSFile(str(segment), "wb")
            self.segments.append(segment)
            self._writer = pa.ipc.new_stream(self._sink, self.schema, options=IPC_OPTIONS)
        self._writer.write_batch(batch)
        self.rows += batch.num_rows
        self.string_widths = [max(a, b) for a, b in
                              zip(self.string_widths, string_widths(batch), strict=True)]

    def change_schema(self, schema: pa.Schema) -> None:
        """Batches from now on have `schema`: the current columns (a type may change), then
        new ones at the end. Widths measure what was written: the values a changed column
        held before are for the caller to measure once converted (see `conform`)."""
        if len(schema) < len(self.schema):
            raise ValueError("a spool's columns can only be added at the end")
        self._end_segment()
        self.string_widths += [0] * (len(schema) - len(self.schema))
        self.schema = schema

    def _end_segment(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._sink is not None:
            self._closed_bytes += self._sink.tell()
            self._sink.close()
            self._sink = None

    def close(self) -> None:
        self._end_segment()
        self._closed = True

    def batches(self) -> Iterator[pa.RecordBatch]:
        """The batches as written, each with the schema it was written with (see `conform`).

        The next batch is read on a second thread while the caller uses this one: Arrow
        reads and decompresses it without the GIL, beside a writer that holds it (ReadStat's
        row loop). Two batches are in memory at most."""
        self.close()
        stored = self._stored_batches()
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="spool-read") as reader:
                coming = reader.submit(next, stored, None)
                while (batch := coming.result()) is not None:
                    coming = reader.submit(next, stored, None)
                    yield batch
        finally:  # also when the caller stops early: the segment file is closed now
            stored.close()

    def _stored_batches(self) -> Iterator[pa.RecordBatch]:
        for segment in self.segments:
            with pa.OSFile(str(segment), "rb") as source:
                yield from pa.ipc.open_stream(source)

    def discard(self) -> None:
        self.close()
        for segment in self.segments:
            segment.unlink(missing_ok=True)

    def __enter__(self) -> BatchSpool:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.discard()
