"""One stream's rows -> one CSV file that uSmart ingests with every value intact.

uSmart's publication rules (``/work/shared/apis/usmart.md``, "Data rules") and what this
writer does about each:

- **Column types come from the first data row.** The first row written is the one with
  the fewest nulls among the first 1,000 (ties: the earliest); the others keep their order.
- **A blank row ends the ingest.** Never written: a record whose values are all null still
  writes its delimiters (`,,`), an empty string is a quoted `""`, and a one-column null is
  `""` too (the csv module's rule for a lone empty field; in a one-column file a null and an
  empty string therefore read back alike).
- **Dates as ISO 8601.** Date-times are converted on the reader thread
  (`IngestCsvWriter.converter_for`): `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, in UTC, the instant kept.
- **Numbers like `0.8`, never `.8`**, and never in exponent notation. Numbers arrive as the
  reader decoded them (`msgspec.Raw`, the tap's own digits, already positional; integers as
  `int`) and are written as they are: `0.80` stays `0.80`. A float or `Decimal` (from a
  stream map) is made positional text on the reader thread (`conversions.number`);
  written directly, a float gets the shortest digits that read back as the same double
  (`repr`), a `Decimal` all of its digits; `1e-07` becomes `0.0000001`.
- **Numeric-looking strings lose their leading zeros unless quoted.** A text value that an
  unquoted reading would take for anything but that text (a number with an optional sign,
  leading zeros included; true/false/null; an ISO date; an empty string; leading or trailing
  spaces) is quoted.

Nested values (objects, arrays) are written as compact JSON text. Quoting is the stdlib csv
module's: `QUOTE_MINIMAL` for ordinary rows; a row holding a value that must be quoted goes
through a `QUOTE_NONNUMERIC` writer on the same file, where every other cell is wrapped so
that csv treats it as a number (quoted only if it holds a delimiter, quote or line break).

A SCHEMA that changes mid-stream (:meth:`IngestCsvWriter.extend`) gives one file with
the union of the columns: rows written before a column appeared get an empty cell for it.
Memory stays flat: at most the 1,000 sample rows are held, everything else is on disk.
"""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import msgspec

from target_core.columns import Column, ColumnType
from target_core.conversions import (
    date_text,
    json_text,
    number,
    parse_datetime,
    positional,
    text,
)
from target_core.formats import FormatWriter

CONTENT_TYPE = "text/csv"
FIRST_ROW_SAMPLE = 1000
"""Rows among which the most complete one is written first (uSmart infers types from it)."""

_UTC = dt.UTC
_Raw = msgspec.Raw
_LINE_END = "\r\n"  # RFC 4180; with "\r" in the terminator, csv also quotes a lone "\r"

# An unquoted cell that uSmart (or any type-inferring reader) could take for something other
# than this exact text. Empty strings are handled before the pattern.
_READS_AS_OTHER = re.compile(
    r"""
      \s.* | .*\s                                  # leading or trailing space: may be trimmed
    | [+-]? (\d+\.?\d* | \.\d+) ([eE][+-]?\d+)?    # a number, leading zeros included
    | (?i: true | false | null | nan | [+-]?inf(inity)? )
    | \d{4}-\d{2}-\d{2} ([T\ ]\d{2}:\d{2}.*)?      # an ISO date or date-time
    """,
    re.VERBOSE | re.DOTALL,
)
# the pattern can only match a text starting with one of these (or ending with a space)
_SUSPECT_START = frozenset("0123456789+-. \t\n\r\f\vtTfFnNiI")


class _Quoted(str):
    """A text cell that must be quoted whatever it holds."""

    __slots__ = ()


class _Bare:
    """A cell the QUOTE_NONNUMERIC writer leaves unquoted unless it holds a delimiter, quote
    or line break: csv counts any object with `__float__` as a number and writes `str()`."""

    __slots__ = ("text",)

    def __init__(self, value: Any) -> None:
        self.text = "" if value is None else str(value)

    def __str__(self) -> str:
        return self.text

    def __float__(self) -> float:
        raise TypeError("a CSV cell, not a number")  # never called: only its presence counts


# -- converters (reader thread: a bad value is reported with its stream, line and field) -------


def iso_datetime(value: Any) -> str | None:
    """ISO 8601 in UTC, `YYYY-MM-DDTHH:MM:SS[.fraction]Z`; naive values are taken as UTC.

    A value already in that form is kept as the tap sent it (all of its fraction digits)."""
    if value is None:
        return None
    parsed = parse_datetime(value)
    if type(value) is str and value[-1:] == "Z" and value[10:11] == "T":
        return value
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(_UTC).replace(tzinfo=None)
        except OverflowError:
            raise ValueError("is out of the representable date range (years 1-9999)") from None
    return parsed.isoformat() + "Z"


_CONVERTERS: dict[ColumnType, Callable[[Any], Any]] = {
    ColumnType.DATETIME: iso_datetime,
    ColumnType.DATE: date_text,
    ColumnType.INTEGER: number,
    ColumnType.NUMBER: number,
}


# -- cells (packer thread) ----------------------------------------------------------------------


def text_cell(value: Any) -> str:
    """A text value, quoted when an unquoted reading would turn it into something else."""
    if type(value) is not str:
        value = text(value)
    if not value or ((value[0] in _SUSPECT_START or value[-1].isspace())
                     and _READS_AS_OTHER.fullmatch(value)):
        return _Quoted(value)
    return value


def number_cell(value: Any) -> Any:
    """`0.8`, never `.8` nor `8e-01`; the tap's digits kept (a float's shortest repr)."""
    kind = type(value)
    if kind is _Raw:  # the reader's exact text; positional already, re-checked for safety
        digits = bytes(value).decode()
        if "e" in digits or "E" in digits or digits[:1] == "." or digits[:2] == "-.":
            return positional(decimal.Decimal(digits))
        return digits
    if kind is float:
        digits = repr(value)
        if "e" in digits:
            return format(decimal.Decimal(digits), "f")
        if not digits[-1].isdigit():
            raise ValueError(f"{digits} cannot be written: not a finite number")
        return digits
    if kind is int:
        return value
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} cannot be written: not a finite number")
        return format(value, "f")
    if kind is bool:
        return "true" if value else "false"
    return text_cell(value)


def boolean_cell(value: Any) -> Any:
    if type(value) is bool:
        return "true" if value else "false"
    return text_cell(value)


def date_cell(value: Any) -> Any:
    if type(value) is str:
        return value
    if isinstance(value, dt.datetime):
        return iso_datetime(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return text_cell(value)


def json_cell(value: Any) -> Any:
    """Objects and arrays as JSON text; a string is taken to be JSON text already."""
    return value if type(value) is str else json_text(value)


# Per column type, the expression that makes the cell of a value `{v}`: the common case (None,
# or a value already fine as it is) costs no call; anything else goes to the *_cell function.
_CELL_CODE: dict[ColumnType, str] = {
    ColumnType.INTEGER: "{v} if {v} is None or type({v}) is int else number_cell({v})",
    ColumnType.NUMBER: "None if {v} is None else number_cell({v})",
    ColumnType.TEXT: "{v} if {v} is None or (type({v}) is str and {v}"
                     " and {v}[0] not in SUSPECT_START and not {v}[-1].isspace())"
                     " else text_cell({v})",
    ColumnType.BOOLEAN: "{v} if {v} is None else ('true' if {v} is True else 'false')"
                        " if type({v}) is bool else boolean_cell({v})",
    ColumnType.DATE: "{v} if {v} is None or type({v}) is str else date_cell({v})",
    ColumnType.DATETIME: "{v} if {v} is None or type({v}) is str else date_cell({v})",
    ColumnType.JSON: "{v} if {v} is None or type({v}) is str else json_cell({v})",
}
_CELL_CODE[ColumnType.TIME] = _CELL_CODE[ColumnType.TEXT]
_CELL_NAMESPACE = {"number_cell": number_cell, "text_cell": text_cell,
                   "boolean_cell": boolean_cell, "date_cell": date_cell,
                   "json_cell": json_cell, "SUSPECT_START": _SUSPECT_START}


def compile_row_formatter(columns: Sequence[Column], positions: Sequence[int], width: int
                          ) -> Callable[[Sequence[Any]], list[Any]]:
    """`format(row) -> cells`: a function generated for one schema, the row's values
    turned into CSV cells and placed at their columns of the file (`width` cells, None where
    this schema has no column). One generated function instead of a loop over columns (as
    `target_core/rows.py` does): 10 columns, 213k -> 267k rows per CPU second, measured."""
    placed = ["None"] * width
    for index, (column, position) in enumerate(zip(columns, positions, strict=True)):
        placed[position] = "(" + _CELL_CODE[column.type].replace("{v}", f"v{index}") + ")"
    unpack = "".join(f"v{index}, " for index in range(len(columns))) + "= row"
    source = "\n    ".join(["def format(row):", unpack if columns else "len(row)",
                            f"return [{', '.join(placed)}]"])
    namespace = dict(_CELL_NAMESPACE)
    exec(compile(source, "<usmart-row-formatter>", "exec"), namespace)
    return namespace["format"]


class IngestCsvWriter(FormatWriter):
    """Writes one stream's rows to `path` as a CSV following uSmart's ingest rules.

    A `FormatWriter` (`target_core/formats.py`): `converter_for(column)` (the sink's
    conversions), `write_rows(rows)` with one value per column of `self.columns`,
    `extend(columns)` on a SCHEMA change, `size`, `finish()` -> the file's path,
    `discard()`. One packer thread per file: not thread-safe.
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
        self._sample: list[list[Any]] | None = []
        self._sample_bytes = 0
        self._names: list[str] = []
        self._segments: list[tuple[Path, int]] = []  # (file, width) in write order
        self._file: TextIO | None = None
        self._format_row = self._add_columns(columns)
        self._open_segment()

    @classmethod
    def converter_for(cls, column: Column) -> Callable[[Any], Any] | None:
        """What the sink converts on the reader thread, where a bad value can be reported
        with its stream, line and field: date-times to ISO 8601 UTC, dates, numbers checked
        (and kept as the reader's exact `Raw` text). The rest (number digits, booleans,
        nested values, quoting) is the writer's job on the packer thread."""
        return _CONVERTERS.get(column.type)

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
        self._format_row = self._add_columns(columns)
        if len(self._names) > width:
            if self._segment_rows == 0:  # nothing but (maybe) a header in it: start it again
                self._segments.pop()
            self._open_segment()  # rows already on disk are padded by finish()
        return True

    def _add_columns(self, columns: Sequence[Column]) -> Callable[[Sequence[Any]], list[Any]]:
        known = {name: index for index, name in enumerate(self._names)}
        positions = []
        for column in columns:
            if column.name not in known:
                known[column.name] = len(self._names)
                self._names.append(column.name)
            positions.append(known[column.name])
        return compile_row_formatter(columns, positions, len(self._names))

    # -- rows -------------------------------------------------------------------------------

    def write_rows(self, rows: Iterable[Sequence[Any]]) -> None:
        format_row, sample = self._format_row, self._sample
        for row in rows:
            cells = format_row(row)
            self.rows += 1
            if sample is not None:
                sample.append(cells)
                # about its bytes in the file, so size limits count the held rows too
                self._sample_bytes += len(cells) + sum(len(str(c)) for c in cells
                                                       if c is not None)
                if len(sample) >= self._sample_size:
                    self._flush_sample()
                    sample = None
            else:
                self._write(cells)

    def _flush_sample(self) -> None:
        """The most complete row first (uSmart types the columns from it), then the rest."""
        sample, self._sample = self._sample or [], None
        if not sample:
            return
        width = len(self._names)
        for cells in sample:
            cells.extend([None] * (width - len(cells)))
        nulls = [cells.count(None) for cells in sample]
        first = nulls.index(min(nulls))
        self._write(sample[first])
        for index, cells in enumerate(sample):
            if index != first:
                self._write(cells)

    def _write(self, cells: list[Any]) -> None:
        self._segment_rows += 1
        if _Quoted in map(type, cells):
            self._quoting.writerow(
                [cell if type(cell) is _Quoted else _Bare(cell) for cell in cells])
        else:
            self._minimal.writerow(cells)

    # -- files ------------------------------------------------------------------------------

    def _open_segment(self) -> None:
        if self._file is not None:
            self._file.close()
        number = len(self._segments)
        path = self.path if number == 0 else self.path.with_name(f"{self.path.name}.{number}")
        self._segments.append((path, len(self._names)))
        self._segment_rows = 0
        self._file = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed in finish()
        self._minimal = csv.writer(self._file, lineterminator=_LINE_END)
        self._quoting = csv.writer(self._file, lineterminator=_LINE_END,
                                   quoting=csv.QUOTE_NONNUMERIC)
        if number == 0:
            self._minimal.writerow(self._names)

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
