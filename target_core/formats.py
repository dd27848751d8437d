"""Format writers: rows in column order -> one file on disk, for the whole-file platforms.

A `FileSink` (see `filesink.py`) hands batches of rows to a writer on the *packer* thread,
as Python values already converted for the format (no JSON text per row). One writer makes
one file; a platform picks the writer class for a stream in its `FileLoad`.

How a format plugs in (CSV here, Parquet in `parquet.py`; SPSS comes with its platform):

- `suffix` / `media_type`: what the file is called and sent as.
- `converter_for(column)`: the values the format wants for a neutral column type
  (CSV: text for booleans; a format with typed columns keeps numbers and booleans).
- `write_rows(rows)`: a batch of rows, each a tuple with one value per column of
  `self.columns`, in order. Called many times; must not hold the batch afterwards.
- `extend(columns)`: a SCHEMA change mid-stream. `columns` is the new full list: the
  current columns first, in order (a column whose type changed comes back as TEXT), then
  the new ones. Rows already written have fewer values: they read as null in the new
  columns. Return False when the format cannot change its columns inside a file: the
  stream's current file is then finished and a new one started (only platforms that take
  several files per stream allow that).
- `size`: bytes on disk so far (read after each batch, for the platform's size limit).
- `finish()`: complete the file and return its path. `discard()`: remove what exists.

Formats that need the whole stream before the first byte (SPSS writes the row count and
every string's width in its header) subclass `SpooledWriter`: each batch of rows becomes
one Arrow record batch (`record_batch`), a `spool.BatchSpool` keeps it on disk and measures
both, and `write_file` builds the real file from the spool's batches.
"""

from __future__ import annotations

import abc
import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from target_core import conversions
from target_core.columns import Column, ColumnType
from target_core.rows import Converter

if TYPE_CHECKING:  # pyarrow is loaded only by formats that spool (target_core.spool)
    import pyarrow as pa

    from target_core.spool import BatchSpool

Row = Sequence[Any]

NEUTRAL_CONVERTERS: dict[ColumnType, Converter] = {
    ColumnType.INTEGER: conversions.number_text,
    ColumnType.NUMBER: conversions.number_text,
    ColumnType.DATETIME: conversions.utc_datetime_text,
    ColumnType.DATE: conversions.date_text,
    ColumnType.JSON: conversions.json_text,
    ColumnType.TEXT: conversions.text,
    ColumnType.TIME: conversions.text,
}
"""Default values per neutral type: numbers as their exact text, booleans stay booleans,
date-times are `YYYY-MM-DD HH:MM:SS` UTC text, dates `YYYY-MM-DD`, objects JSON text."""


class FormatWriter(abc.ABC):
    """One file of one stream, written batch by batch on the packer thread."""

    suffix: ClassVar[str] = ""
    media_type: ClassVar[str] = "application/octet-stream"

    def __init__(self, path: Path, columns: Sequence[Column]) -> None:
        self.path = Path(path)
        self.columns: list[Column] = list(columns)
        self.rows = 0
        """Rows written so far."""

    @classmethod
    def converter_for(cls, column: Column) -> Converter | None:
        """The conversion of a column's values for this format (None: as they are)."""
        return NEUTRAL_CONVERTERS.get(column.type)

    @abc.abstractmethod
    def write_rows(self, rows: Sequence[Row]) -> None:
        """Append rows, each with one value per column of `self.columns`."""

    def extend(self, columns: Sequence[Column]) -> bool:
        """The stream's columns changed (see the module docstring); False: start a new file."""
        self.columns = list(columns)
        return True

    @property
    @abc.abstractmethod
    def size(self) -> int:
        """Bytes on disk so far."""

    @abc.abstractmethod
    def finish(self) -> Path:
        """Complete the file; returns its path. No rows may follow."""

    def discard(self) -> None:
        """Remove the file (a failed or interrupted run); safe to call twice."""
        self.path.unlink(missing_ok=True)


class CsvWriter(FormatWriter):
    """UTF-8 CSV with a header row; nulls are empty fields, booleans `true` / `false`.

    Rows go straight to the file (the csv module's C loop). When columns are added
    mid-stream, `finish` rewrites the file once with the full header, padding the earlier
    rows with empty fields (only streams whose SCHEMA changed pay for that).
    """

    suffix = ".csv"
    media_type = "text/csv"

    def __init__(
        self,
        path: Path,
        columns: Sequence[Column],
        *,
        delimiter: str = ",",
        quoting: int = csv.QUOTE_MINIMAL,
        lineterminator: str = "\n",
    ) -> None:
        super().__init__(path, columns)
        self._format = {"delimiter": delimiter, "quoting": quoting,
                        "lineterminator": lineterminator}
        self._file: io.TextIOWrapper | None = self.path.open("w", encoding="utf-8", newline="")
        self._csv = csv.writer(self._file, **self._format)
        self._csv.writerow([c.name for c in self.columns])
        self._header_width = len(self.columns)

    @classmethod
    def converter_for(cls, column: Column) -> Converter | None:
        if column.type is ColumnType.BOOLEAN:
            return conversions.boolean_text
        return super().converter_for(column)

    def write_rows(self, rows: Sequence[Row]) -> None:
        self._csv.writerows(rows)
        self.rows += len(rows)

    @property
    def size(self) -> int:
        if self._file is None:
            return self.path.stat().st_size
        self._file.flush()
        return self._file.buffer.tell()

    def finish(self) -> Path:
        if self._file is not None:
            self._file.close()
            self._file = None
            if len(self.columns) != self._header_width:
                self._rewrite_with_full_header()
        return self.path

    def _rewrite_with_full_header(self) -> None:
        width = len(self.columns)
        wider = self.path.with_name(self.path.name + ".wide")
        with self.path.open(encoding="utf-8", newline="") as old, \
                wider.open("w", encoding="utf-8", newline="") as new:
            reader = csv.reader(old, delimiter=self._format["delimiter"])
            writer = csv.writer(new, **self._format)
            next(reader)  # the old header
            writer.writerow([c.name for c in self.columns])
            for row in reader:
                writer.writerow(row + [""] * (width - len(row)))
        os.replace(wider, self.path)
        self._header_width = width

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().discard()


class SpooledWriter(FormatWriter):
    """A format that needs the whole stream first: rows go to a `BatchSpool` as Arrow
    record batches, then `write_file` writes the real file from it in batches (bounded
    memory).

    The spool counts the rows and measures each string column's longest value in UTF-8
    bytes (`spool.rows`, `spool.string_widths`): what an SPSS header needs before any data.
    A subclass says which Arrow type each column is spooled as (`arrow_schema`) and may
    build the columns itself (`record_batch`; by default `pyarrow.array` per column, one C
    call each, no Python work per value).
    """

    def __init__(self, path: Path, columns: Sequence[Column]) -> None:
        super().__init__(path, columns)
        from target_core.spool import BatchSpool

        self.spool: BatchSpool = BatchSpool(self.path.with_name(self.path.name + ".spool"),
                                            self.arrow_schema(self.columns))

    @abc.abstractmethod
    def arrow_schema(self, columns: Sequence[Column]) -> pa.Schema:
        """The Arrow field each column's converted values are spooled as."""

    def record_batch(self, rows: Sequence[Row]) -> pa.RecordBatch:
        """Rows (one value per column of `self.columns`) as one batch of `spool.schema`."""
        import pyarrow as pa

        schema = self.spool.schema
        return pa.RecordBatch.from_arrays(
            [pa.array(values, field.type)
             for field, values in zip(schema, zip(*rows, strict=True), strict=True)],
            schema=schema)

    def write_rows(self, rows: Sequence[Row]) -> None:
        if rows:
            self.spool.write(self.record_batch(rows))
            self.rows += len(rows)

    def extend(self, columns: Sequence[Column]) -> bool:
        self.spool.change_schema(self.arrow_schema(columns))
        return super().extend(columns)

    @property
    def size(self) -> int:
        return self.spool.size

    def finish(self) -> Path:
        self.spool.close()
        try:
            self.write_file(self.path, self.columns, self.spool)
        finally:
            self.spool.discard()
        return self.path

    @abc.abstractmethod
    def write_file(self, path: Path, columns: Sequence[Column], spool: BatchSpool) -> None:
        """Write the real file from `spool.batches()` (each batch with the schema it was
        spooled with: `target_core.spool.conform` brings it to the last one)."""

    def discard(self) -> None:
        self.spool.discard()
        super().discard()
