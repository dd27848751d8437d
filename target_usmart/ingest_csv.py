"""One stream's rows -> one CSV file that uSmart ingests with every value intact.

uSmart's publication rules (``/work/shared/apis/usmart.md``, "Data rules") and what this
writer does about each:

- **Column types come from the first data row.** The first row written is the one with
  the fewest nulls among the first 1,000 (ties: the earliest); the others keep their order.
- **A blank row ends the ingest.** Never written: a record whose values are all null still
  writes its delimiters (`,,`), an empty string is a quoted `""`, and a one-column null is
  `""` too (the only one-field null that is not a blank line; in a one-column file a null
  and an empty string therefore read back alike).
- **Dates as ISO 8601.** Date-times `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, in UTC, the instant
  kept; dates `YYYY-MM-DD`.
- **Numbers like `0.8`, never `.8`**, and never in exponent notation. Numbers arrive as the
  reader decoded them (`msgspec.Raw`, the tap's own digits, made positional by the reader;
  integers as `int`) and are written as they are: `0.80` stays `0.80`. A float or `Decimal`
  (from a stream map) is made positional (`conversions.number`): a float with the shortest
  digits that read back as the same double, a `Decimal` with all of its digits; `1e-07`
  becomes `0.0000001`.
- **Numeric-looking strings lose their leading zeros unless quoted.** Every text cell is
  quoted (uSmart reads a quoted cell as text, whatever it holds), so no string can be taken
  for a number, boolean, date or null; numbers, booleans, dates and date-times never are.

Nested values (objects, arrays) are written as compact JSON text, quoted like text.

Where the work happens: the converters (`IngestCsvWriter.converter_for`, one per column
type) run on the reader thread inside the sink's generated row encoder, where a bad value is
reported with its stream, line and field. Each turns a value into its finished CSV field,
quoting decided and done (`""` is a null). The writer, on the packer thread, then only
joins: one `"\\r\\n".join(map(",".join, rows))` per batch, no Python per row or cell. That
split is the speed: the csv module spent ~2.5 us per row in C re-scanning every field, on
the one core all Python threads share (measured: 200k bench rows 0.63 s in `writerows`,
0.17 s joined).

A SCHEMA that changes mid-stream (:meth:`IngestCsvWriter.extend`) gives one file with
the union of the columns: rows written before a column appeared get an empty cell for it.
Memory stays flat: at most the 1,000 sample rows are held, everything else is on disk.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import msgspec

from target_core.columns import Column, ColumnType
from target_core.conversions import date_text, dumps, number_text, parse_datetime
from target_core.formats import FormatWriter

CONTENT_TYPE = "text/csv"
FIRST_ROW_SAMPLE = 1000
"""Rows among which the most complete one is written first (uSmart infers types from it)."""

_UTC = dt.UTC
_Raw = msgspec.Raw
_fromisoformat = dt.datetime.fromisoformat
_LINE_END = "\r\n"  # RFC 4180
_QUOTE, _TWO_QUOTES, _QUOTES_AROUND = '"', '""', (b'"', b'"')
NULL = ""
"""The cell of a null: an empty unquoted field (an empty string is a quoted `""`)."""


# -- date-times ----------------------------------------------------------------------------------


def _extended_form(value: str) -> bool:
    """`YYYY-MM-DDTHH:MM:SS...`: the extended calendar form (a parser may also read week
    dates, basic forms or a space separator, which are rewritten, not kept)."""
    return value[4:17:3] == "--T::"


def iso_datetime(value: Any) -> str | None:
    """ISO 8601 in UTC, `YYYY-MM-DDTHH:MM:SS[.fraction]Z`; naive values are taken as UTC.

    The exact path: any offset, any shape `datetime.fromisoformat` reads, `datetime`
    objects. A value already in the extended form with `Z` is kept as the tap sent it (all
    of its fraction digits)."""
    if value is None:
        return None
    parsed = parse_datetime(value)
    if type(value) is str and value[-1:] == "Z" and _extended_form(value):
        return value
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(_UTC).replace(tzinfo=None)
        except OverflowError:
            raise ValueError("is out of the representable date range (years 1-9999)") from None
    return parsed.isoformat() + "Z"


def datetime_cell(value: Any) -> str:
    """`iso_datetime` as a cell, with a fast path for the shapes taps send most: UTC as
    `...Z` (kept), or `+00:00` with no fraction or six digits not all zero (what Python's
    `isoformat` writes), where replacing the offset by `Z` gives exactly what the exact
    path would (tests/test_usmart_cells.py checks both agree on any value).
    The value is still read by `fromisoformat` (a bad date is refused either way, with the
    same error, by the exact path); measured 0.5 us a value instead of 2.4 us."""
    if type(value) is str and value[4:17:3] == "--T::":  # _extended_form, inlined
        size = len(value)
        if value[-1:] == "Z":
            fast = value
        elif value[-6:] == "+00:00" and (size == 25 or (
                size == 32 and value[19] == "." and value[20:26] != "000000")):
            fast = value[:-6] + "Z"
        else:
            fast = None
        if fast is not None:
            try:
                _fromisoformat(value)
            except ValueError:
                pass  # the exact path raises the error that names the problem
            else:
                return fast
    return iso_datetime(value) or NULL


def date_cell(value: Any) -> str:
    return date_text(value) or NULL


# -- the other cells -------------------------------------------------------------------------------


def number_cell(value: Any) -> str:
    """`0.8`, never `.8` nor `8e-01`: the tap's digits (positional already: the reader
    rewrites exponents as it decodes, `conversions.exact_number`), ints as they are;
    floats and Decimals (stream maps) made positional; anything else refused."""
    kind = type(value)
    if kind is _Raw:
        return str(value, "ascii")
    if kind is int:
        return str(value)
    return number_text(value) or NULL  # ValueError: must be a (finite) number


def boolean_cell(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return text_cell(value)


def text_cell(value: Any) -> str:
    """Quoted, always: uSmart reads a quoted cell as text (`"0012"` keeps its zeros,
    `"true"` stays a string); a non-string (several-typed columns) as its JSON text."""
    if type(value) is str:
        return f'"{value.replace(_QUOTE, _TWO_QUOTES)}"'
    return json_cell(value)  # None -> NULL


def json_cell(value: Any) -> str:
    """Objects and arrays as compact JSON text (numbers with their digits), quoted like
    text; a string is taken to be JSON text already."""
    if value is None:
        return NULL
    if type(value) is str:
        return text_cell(value)
    # quoted as bytes, then decoded once: the cheapest order (measured, ~0.6 us a value)
    return dumps(value).replace(b'"', b'""').join(_QUOTES_AROUND).decode()


_CONVERTERS: dict[ColumnType, Callable[[Any], str]] = {
    ColumnType.TEXT: text_cell,
    ColumnType.TIME: text_cell,
    ColumnType.JSON: json_cell,
    ColumnType.INTEGER: number_cell,
    ColumnType.NUMBER: number_cell,
    ColumnType.BOOLEAN: boolean_cell,
    ColumnType.DATE: date_cell,
    ColumnType.DATETIME: datetime_cell,
}


def _placer(positions: Sequence[int], width: int) -> Callable[[Sequence[str]], list[str]]:
    """Cells of a schema whose columns are not the file's first ones, in file order."""

    def place(row: Sequence[str]) -> list[str]:
        cells = [NULL] * width
        for position, cell in zip(positions, row, strict=True):
            cells[position] = cell
        return cells

    return place


class IngestCsvWriter(FormatWriter):
    """Writes one stream's rows to `path` as a CSV following uSmart's ingest rules.

    A `FormatWriter` (`target_core/formats.py`): `converter_for(column)` (the sink's
    conversions: values -> finished cells), `write_rows(rows)` with one cell per column of
    `self.columns`, `extend(columns)` on a SCHEMA change, `size`, `finish()` -> the file's
    path, `discard()`. One packer thread per file: not thread-safe.
    """

    suffix = ".csv"
    media_type = CONTENT_TYPE

    def __init__(
        self,
        path: Path | str,
        columns: Sequence[Column],
        *,
        sample_size: int = FIRST_ROW_SAMPLE,
    ) -> None:
        super().__init__(Path(path), columns)  # self.columns: those `write_rows` takes now
        self._sample_size = sample_size
        self._sample: list[Sequence[str]] | None = []
        self._sample_bytes = 0
        self._names: list[str] = []
        self._segments: list[tuple[Path, int]] = []  # (file, width) in write order
        self._segment_rows = 0
        self._file: TextIO | None = None
        self._place = self._add_columns(columns)
        self._open_segment()

    @classmethod
    def converter_for(cls, column: Column) -> Callable[[Any], str]:
        """A value -> its finished CSV field (quoted where uSmart needs it, `""` for null),
        on the reader thread, where a bad value is reported with its stream, line and
        field. Every column type has one: the writer only joins cells."""
        return _CONVERTERS[column.type]

    # -- columns ----------------------------------------------------------------------------

    @property
    def header(self) -> list[str]:
        """The file's columns so far: the union of every schema's, in order of appearance."""
        return list(self._names)

    def extend(self, columns: Sequence[Column]) -> bool:
        """Rows from now on come with these columns; new ones join the file's union (rows
        written before read as null in them). Always True: a CSV takes any change."""
        width = len(self._names)
        self.columns = list(columns)
        self._place = self._add_columns(columns)
        if len(self._names) > width:
            if self._segment_rows == 0:  # nothing but (maybe) a header in it: start it again
                self._segments.pop()
            self._open_segment()  # rows already on disk are padded by finish()
        return True

    def _add_columns(self, columns: Sequence[Column]
                     ) -> Callable[[Sequence[str]], list[str]] | None:
        """The new columns join the union; None when rows are in file order already (the
        core's sink always encodes for the union so far: its new columns come last)."""
        known = {name: index for index, name in enumerate(self._names)}
        positions = []
        for column in columns:
            if column.name not in known:
                known[column.name] = len(self._names)
                self._names.append(column.name)
            positions.append(known[column.name])
        if positions == list(range(len(self._names))):
            return None
        return _placer(positions, len(self._names))

    # -- rows -------------------------------------------------------------------------------

    def write_rows(self, rows: Sequence[Sequence[str]]) -> None:
        if self._place is not None:
            rows = [self._place(row) for row in rows]
        self.rows += len(rows)
        sample = self._sample
        if sample is not None:
            held = rows[:self._sample_size - len(sample)]
            sample.extend(held)
            # about its bytes in the file, so size limits count the held rows too
            self._sample_bytes += sum(map(len, map(",".join, held))) + 2 * len(held)
            if len(sample) < self._sample_size:
                return
            self._flush_sample()
            rows = rows[len(held):]
        self._write(rows)

    def _flush_sample(self) -> None:
        """The most complete row first (uSmart types the columns from it), then the rest;
        rows held from before a SCHEMA change are padded to the file's width."""
        sample, self._sample = self._sample or [], None
        if not sample:
            return
        width = len(self._names)
        rows = [row if len(row) == width else (*row, *[NULL] * (width - len(row)))
                for row in sample]
        nulls = [row.count(NULL) for row in rows]
        first = nulls.index(min(nulls))
        self._write([rows[first], *rows[:first], *rows[first + 1:]])

    def _write(self, rows: Sequence[Sequence[str]]) -> None:
        """Finished cells -> lines, in C: one join per batch."""
        if not rows:
            return
        assert self._file is not None
        self._segment_rows += len(rows)
        if len(self._names) == 1:  # a lone empty field would be a blank line
            text = _LINE_END.join([row[0] or '""' for row in rows])
        else:
            text = _LINE_END.join(map(",".join, rows))
        self._file.write(text + _LINE_END)

    # -- files ------------------------------------------------------------------------------

    def _open_segment(self) -> None:
        if self._file is not None:
            self._file.close()
        number = len(self._segments)
        path = self.path if number == 0 else self.path.with_name(f"{self.path.name}.{number}")
        self._segments.append((path, len(self._names)))
        self._segment_rows = 0
        self._file = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed in finish()
        if number == 0:
            csv.writer(self._file, lineterminator=_LINE_END).writerow(self._names)

    @property
    def size(self) -> int:
        """Bytes on disk so far, plus about those of the first-row sample while it is
        held (it reaches the disk when it is full, or at `finish`)."""
        if self._file is not None:
            self._file.flush()
        held = self._sample_bytes if self._sample is not None else 0
        return held + sum(path.stat().st_size for path, _ in self._segments if path.exists())

    def finish(self) -> Path:
        """Finish the file (header with every column) and return its path."""
        if self._sample is not None:
            self._flush_sample()
        if self._file is not None:
            self._file.close()
            self._file = None
        if len(self._segments) > 1:
            self._join_segments()
        return self.path

    def discard(self) -> None:
        """Remove every file written (a failed or interrupted stream leaves nothing)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        for path, _ in self._segments:
            path.unlink(missing_ok=True)
        self.path.with_name(self.path.name + ".tmp").unlink(missing_ok=True)

    def _join_segments(self) -> None:
        """Header of the union, then each segment with its short records padded."""
        width = len(self._names)
        joined = self.path.with_name(self.path.name + ".tmp")
        with open(joined, "w", encoding="utf-8", newline="") as out:
            csv.writer(out, lineterminator=_LINE_END).writerow(self._names)
            for number, (path, segment_width) in enumerate(self._segments):
                with open(path, encoding="utf-8", newline="") as segment:
                    records = _records(segment)
                    if number == 0:
                        next(records, None)  # its header: the first columns only
                    _copy_padded(records, out, "," * (width - segment_width))
        os.replace(joined, self.path)
        for path, _ in self._segments[1:]:
            path.unlink(missing_ok=True)
        self._segments = [(self.path, width)]


def _records(lines: Iterable[str]) -> Iterable[str]:
    """Whole CSV records (a quoted field may hold line breaks): a record ends at a line end
    outside quotes, i.e. once its count of `"` is even (doubled quotes count twice)."""
    pending: list[str] = []
    quotes = 0
    for line in lines:
        pending.append(line)
        quotes += line.count('"')
        if quotes % 2 == 0 and line.endswith(_LINE_END):
            yield "".join(pending)
            pending, quotes = [], 0
    if pending:
        yield "".join(pending)


def _copy_padded(records: Iterable[str], out: TextIO, padding: str) -> None:
    if not padding:
        for record in records:
            out.write(record)
        return
    cut = len(_LINE_END)
    for record in records:
        out.write(record[:-cut] + padding + _LINE_END)
