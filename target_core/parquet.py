"""The Parquet format writer (pyarrow), for whole-file platforms (DataInsider's lake mode).

Its own module, apart from `formats.py`, because importing pyarrow's Parquet support costs
about 35 MB of memory: only a run that writes Parquet imports it. Arrow uses the system
allocator (set in `target_core/__init__.py`).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from target_core import conversions
from target_core.columns import Column, ColumnType
from target_core.conversions import parse_datetime
from target_core.errors import TargetError
from target_core.formats import FormatWriter, Row
from target_core.rows import Converter

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_UTC = _EPOCH.replace(tzinfo=dt.UTC)
_EPOCH_DAY = dt.date(1970, 1, 1).toordinal()
_MICROSECOND = dt.timedelta(microseconds=1)


def _malloc_trim() -> object:
    """glibc's `malloc_trim(0)`, or a no-op where the C library has none (musl, macOS)."""
    with contextlib.suppress(OSError, AttributeError):
        trim = ctypes.CDLL(None).malloc_trim
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
        return lambda: trim(0)
    return lambda: 0


release_freed_memory = _malloc_trim()
"""Give the C heap's free pages back to the system. Each row group frees its Arrow arrays
and the batch's Python values, while the writer keeps the file's growing metadata (a few
kB per row group) allocated between them: glibc then cannot shrink its heap, and peak RSS
grew with the stream (lake mode in bench/run.py: 122 MB at 200k records, 135 MB at 2M).
Trimming after each row group keeps it flat; it costs well under a millisecond a call."""


def int64_value(value: Any) -> int | None:
    """An integer that fits Parquet's int64 (booleans are not integers, as in JSON Schema)."""
    if value is None or (type(value) is int and _INT64_MIN <= value <= _INT64_MAX):
        return value
    if type(value) is int:
        raise ValueError("is outside the 64-bit integer range of a Parquet int64 column")
    raise ValueError("must be an integer")


def double_value(value: Any) -> float | None:
    """A number as a double (`number_float`): what a double column keeps of it."""
    number = conversions.number_float(value)
    if number is not None and math.isinf(number):
        raise ValueError("is outside the range of a double")
    return number


def boolean_value(value: Any) -> bool | None:
    if value is None or type(value) is bool:
        return value
    raise ValueError("must be a boolean")


def epoch_days(value: Any) -> int | None:
    """A date as days since 1970-01-01 (Arrow `date32`), any year 1-9999."""
    text = conversions.date_text(value)
    return None if text is None else dt.date.fromisoformat(text).toordinal() - _EPOCH_DAY


def epoch_microseconds(value: Any) -> int | None:
    """A date-time as the instant's microseconds since 1970-01-01 UTC (Arrow
    `timestamp[us, UTC]`): exact at any year 1-9999 and any offset; naive means UTC."""
    if value is None:
        return None
    parsed = parse_datetime(value)  # a str, or a datetime from a stream map
    since = parsed - (_EPOCH if parsed.tzinfo is None else _EPOCH_UTC)
    return since // _MICROSECOND


PARQUET_TYPES: dict[ColumnType, pa.DataType] = {
    ColumnType.INTEGER: pa.int64(),
    ColumnType.NUMBER: pa.float64(),
    ColumnType.BOOLEAN: pa.bool_(),
    ColumnType.DATE: pa.date32(),
    ColumnType.DATETIME: pa.timestamp("us", tz="UTC"),
    ColumnType.TIME: pa.string(),
    ColumnType.JSON: pa.string(),
    ColumnType.TEXT: pa.string(),
}
PARQUET_CONVERTERS: dict[ColumnType, Converter] = {
    ColumnType.INTEGER: int64_value,
    ColumnType.NUMBER: double_value,
    ColumnType.BOOLEAN: boolean_value,
    ColumnType.DATE: epoch_days,
    ColumnType.DATETIME: epoch_microseconds,
    ColumnType.TIME: conversions.text,
    ColumnType.JSON: conversions.json_text,
    ColumnType.TEXT: conversions.text,
}
"""Values as Arrow builds its columns fastest: numbers, booleans, strings, and dates and
date-times as integers (days, microseconds) of the exact instant."""


def parquet_schema(columns: Sequence[Column]) -> pa.Schema:
    """One nullable field per column; the property it comes from in the field metadata."""
    return pa.schema([
        pa.field(c.name, PARQUET_TYPES[c.type], nullable=True,
                 metadata={b"singer_property": c.source.encode()})
        for c in columns
    ])


class ParquetWriter(FormatWriter):
    """A Parquet file written as it goes: each batch becomes one row group, on disk at once.

    Memory holds one batch (as Arrow arrays) at a time, whatever the stream's length, and
    `size` is the real file's length, so a platform's size limit is measured on what it
    gets. A Parquet file has one schema: a SCHEMA change mid-stream (`extend`) finishes the
    file and the stream goes on in a new one with the new columns.
    Types: integer int64, number double, boolean bool, date date32, date-time
    timestamp[us, UTC], everything else UTF-8 strings (objects and arrays as JSON text).
    """

    suffix = ".parquet"
    media_type = "application/vnd.apache.parquet"

    def __init__(self, path: Path, columns: Sequence[Column], *,
                 compression: str = "snappy") -> None:
        super().__init__(path, columns)
        self.schema = parquet_schema(self.columns)
        self._sink: pa.OSFile | None = pa.OSFile(str(self.path), "wb")
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
            self._sink, self.schema, compression=compression)

    @classmethod
    def converter_for(cls, column: Column) -> Converter | None:
        return PARQUET_CONVERTERS[column.type]

    def write_rows(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        assert self._writer is not None, "the file is finished"
        arrays = []
        for field, values in zip(self.schema, zip(*rows, strict=True), strict=True):
            try:
                arrays.append(pa.array(values, field.type))
            except (pa.ArrowException, OverflowError, TypeError, ValueError) as exc:
                raise TargetError(f"column '{field.name}' cannot be written to Parquet as "
                                  f"{field.type}: {type(exc).__name__}") from None
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))
        del arrays
        release_freed_memory()
        self.rows += len(rows)

    def extend(self, columns: Sequence[Column]) -> bool:
        return False  # one schema per file: the next rows start a new one

    @property
    def size(self) -> int:
        return self._sink.tell() if self._sink is not None else self.path.stat().st_size

    def finish(self) -> Path:
        self._close()
        return self.path

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def discard(self) -> None:
        with contextlib.suppress(OSError, pa.ArrowException):
            self._close()  # a half-written file is removed anyway
        super().discard()
