"""A stream -> one DataInsider warehouse table: schema via `ingestion/csv/schema`, rows as
positional `ingestion/batch` calls (or `ingestion/csv` where the batch route would drop them).

Column mapping (neutral type from `target_core.columns` -> DataInsider `class_name`):

| neutral        | class_name   | values sent                                         |
|----------------|--------------|-----------------------------------------------------|
| integer        | `int64`      | numbers                                             |
| number         | `double`     | numbers                                             |
| boolean        | `bool`       | `true` / `false`                                    |
| date           | `date`       | `YYYY-MM-DD` (column `input_formats: [yyyy-MM-dd]`) |
| datetime       | `datetime64` | `YYYY-MM-DD HH:MM:SS.mmmZ` (`timezone: UTC`)        |
| json           | `string`     | JSON text of the object or array                    |
| text, time     | `string`     | strings (other values as JSON text)                 |

Every column keeps the property name as its `display_name`; its `name` is the property
name normalised the way DataInsider normalises it (Vietnamese marks dropped, runs of
anything but ASCII letters and digits -> `_`), so what is sent is what is stored.

The first batch of each schema version prepares the table: schema registered (the table
and database are created, new columns added), stored columns read back. Rows go out in
the stored order; a stored type that differs from the schema's stops the run before any
row is sent. `ingestion/batch` drops a whole row for a null in a non-string column (even
a nullable one) and writes a null string as `""`, so a batch holding any null goes to
`ingestion/csv`, which writes NULL (and, its one loss, reads an empty string as NULL too).
Every answer's counts are checked against the rows sent.

Rows are tuples of converted values. The packer thread picks each batch's route and builds
its request bodies a column at a time (C-level string work, not a Python step per value),
cutting a body over the request limit in pieces; the sender only sends and checks.

Lake mode (`LakeLoad`, on the core's file path): a stream's rows become Parquet files
(`target_core.formats.ParquetWriter`), uploaded into one file sync of the stream's lake
directory: started at the first file (`FullSync` for overwrite, `IncrementalSync` for
append), ended after the last one. Only the end confirms the rows (a FullSync's files
replace the directory then); a failed or interrupted run never ends its sync.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from target_core import conversions
from target_core.budget import BatchBudget
from target_core.columns import Column, ColumnType
from target_core.errors import ApiError, ConfigError, PayloadTooLarge, TargetError
from target_core.filesink import FileLoad, FinishedFile
from target_core.formats import FormatWriter
from target_core.http import MultipartFile
from target_core.rows import Converter
from target_core.sink import Acknowledged, CoreSink, SinkParts
from target_core.startup import import_pyarrow
from target_datainsider.client import PLATFORM, SYNC_TYPES, DataInsiderClient, LakeClient
from target_datainsider.names import normalize_name

CLASS_NAMES: dict[ColumnType, str] = {
    ColumnType.INTEGER: "int64",
    ColumnType.NUMBER: "double",
    ColumnType.BOOLEAN: "bool",
    ColumnType.DATE: "date",
    ColumnType.DATETIME: "datetime64",
    ColumnType.JSON: "string",
    ColumnType.TEXT: "string",
    ColumnType.TIME: "string",
}
DATETIME_FORMAT = "yyyy-MM-dd HH:mm:ss.SSSXXX"
"""With its zone designator, so neither route reads the time in the server's own zone."""
DATE_FORMAT = "yyyy-MM-dd"
MAX_REQUEST_BYTES = 5 * 1024 * 1024
"""DataInsider's request limit (Finatra's default `maxRequestSize`)."""
REQUEST_BYTES = 4 * 1024 * 1024
"""What a batch's request aims at (bytes as sent): room below the limit for a batch whose
rows are larger than the ones before it."""

_FRACTION = re.compile(r"\.([0-9]+)")
_parse_datetime = dt.datetime.fromisoformat
_UTC_ENDS = frozenset({"Z", "+00:00"})


def utc_datetime_ms_text(value: Any) -> str | None:
    """`YYYY-MM-DD HH:MM:SS.mmmZ`, UTC: DateTime64(3) keeps milliseconds; the `Z` makes the
    instant independent of the zone the server parses in (the CSV route uses its own).

    The shapes taps write most (`YYYY-MM-DDTHH:MM:SS` then `Z` or `+00:00`, with or without
    a fraction of a second) are checked by `datetime.fromisoformat` and cut by slicing; any
    other value, and any value that fails the check, takes `exact_datetime_ms_text`."""
    try:
        if (value[4] == value[7] == "-" and value[10] == "T"
                and value[13] == value[16] == ":"):
            end = value[19:]
            if end in _UTC_ENDS:
                _parse_datetime(value)  # the calendar check: raises for 2024-02-30
                return value[:10] + " " + value[11:19] + ".000Z"
            if end[0] == "." and (end[-1] == "Z" or end[-6:] == "+00:00"):
                fraction = end[1:-1] if end[-1] == "Z" else end[1:-6]
                if fraction.isdigit() and fraction.isascii():
                    _parse_datetime(value)
                    return value[:10] + " " + value[11:19] + "." + (fraction + "00")[:3] + "Z"
    except (TypeError, IndexError, ValueError):
        pass  # not a string of that shape, or not a valid one: the exact path decides
    return exact_datetime_ms_text(value)


def exact_datetime_ms_text(value: Any) -> str | None:
    """`utc_datetime_ms_text` for any value: parsed, shifted to UTC, errors named."""
    if value is None:
        return None
    seconds = conversions.utc_datetime_text(value)
    if type(value) is str:
        fraction = _FRACTION.match(value, 19)
        digits = fraction.group(1)[:3] if fraction else ""
    else:  # a datetime from a stream map
        digits = f"{value.microsecond // 1000:03d}"
    return f"{seconds}.{digits:0<3}Z"


def _boolean(value: Any) -> Any:
    if value is None or type(value) is bool:
        return value
    raise ValueError("must be a boolean")


@dataclass
class TableLoad:
    """One stream's load into one table during this run (shared by its sink versions)."""

    stream: str
    database: str
    table: str
    replace: bool
    truncated: bool = False
    batches: int = 0
    rows: int = 0
    csv_batches: int = 0

    @property
    def qualified(self) -> str:
        return f"{self.database}.{self.table}"


@dataclass(frozen=True)
class Layout:
    """Where each stored column's value comes from in one of our rows."""

    positions: tuple[int | None, ...]
    """Per stored (insertable) column: the index in our row, or None (a column we lack)."""
    identity: bool
    """Our rows are already in stored order and complete."""

    @property
    def complete(self) -> bool:
        """Every stored column gets a value from our rows."""
        return None not in self.positions


def stored_layout(load: TableLoad, ours: list[dict[str, Any]],
                  stored: list[dict[str, Any]]) -> Layout:
    """Match our columns to the stored ones by name; refuse a changed type."""
    index = {column["name"]: i for i, column in enumerate(ours)}
    positions: list[int | None] = []
    for column in stored:
        default = column.get("default_expression") or {}
        if isinstance(default, dict) and default.get("default_type") == "MATERIALIZED":
            continue  # computed by the server, not part of an insert
        name = column.get("name")
        mine = index.get(name)  # type: ignore[arg-type]
        if mine is not None and column.get("class_name") != ours[mine]["class_name"]:
            raise TargetError(
                f"stream '{load.stream}': column '{name}' of {PLATFORM} table "
                f"{load.qualified} is stored as {column.get('class_name')}, but the schema "
                f"makes it {ours[mine]['class_name']}; {PLATFORM} never changes a column's "
                "type: change the column in DataInsider, or load into another table "
                "(table_map)"
            )
        positions.append(mine)
    missing = set(index) - {column.get("name") for column in stored}
    if missing:
        raise TargetError(f"stream '{load.stream}': {PLATFORM} table {load.qualified} has no "
                          f"column {', '.join(sorted(missing))} after the schema was sent")
    identity = positions == list(range(len(ours)))
    return Layout(tuple(positions), identity)


# -- a batch's rows as request bodies, built a column at a time --------------------------------
#
# Rows are tuples of converted values (ints, `Raw` numbers, booleans, text, None; JSON
# columns as their JSON text in UTF-8 bytes). The positional JSON of the batch route is one
# msgspec call for the batch. The CSV route's `data` is built column by column with C-level
# string and list operations (a join, a replace or two and a split per column; then one
# join of every cell, each cell ending in its `,` or line end), not value by value in
# Python, and each cell is made already escaped as the inside of a JSON string: the body
# is its pieces joined, with no pass over the whole text to escape it (the packer holds the
# GIL the reader needs; this is most of its work). Where a column holds what these
# shortcuts do not cover, `exact_csv_text` (value by value) writes the batch.

_dumps = conversions.dumps
_encode_text = msgspec.json.encode
_SEP = "\x1f"
"""Joins a column's text while its quotes are doubled and it is escaped in one pass each (a
column holding this character itself is quoted value by value instead)."""
_BYTES_SEP = b"\x1f"
_ESCAPED_SEP = b"\\u001f"
"""`_SEP` inside a JSON string, as msgspec writes it."""
_QUOTE = b'\\"'
"""A `"` of the CSV text, escaped."""
LINE_END = b"\\n"
"""A CSV line end, escaped."""
_EMPTY_FOR_NULL = {None: ""}.get
_EMPTY_BYTES_FOR_NULL = {None: b""}.get
_BOOLEAN_CELLS = {end: {True: b"true" + end, False: b"false" + end, None: end}.get
                  for end in (b",", LINE_END)}
_NUMBER_TYPES = frozenset({int, msgspec.Raw, type(None)})
_BOOLEAN_TYPES = frozenset({bool, type(None)})
_JSON_TYPES = frozenset({bytes, type(None)})
_CSV_PIECE_ROWS = 2048
"""Rows whose CSV text is built at a time: the cells of a whole batch never exist at once."""


def escaped(text: str) -> bytes:
    """Text as the inside of a JSON string."""
    return _encode_text(text)[1:-1]


def json_bytes(value: Any) -> bytes | None:
    """A JSON column's value as its compact JSON text, numbers exactly as sent: kept as
    msgspec's bytes (`json_cells` escapes them as bytes; no text object per value)."""
    if value is None:
        return None
    return _dumps(value)


def number_cells(values: Sequence[Any], end: bytes) -> list[bytes]:
    """Integers and `Raw` numbers -> their exact text, null -> empty: the column's JSON
    text, cut at its commas (number text holds neither a comma nor `null`, nor anything
    JSON escapes)."""
    if not set(map(type, values)) <= _NUMBER_TYPES:
        raise TypeError("not a number column")
    text = _dumps(values)[1:-1]
    if None in values:
        text = text.replace(b"null", b"")
    return (text.replace(b",", end + _BYTES_SEP) + end).split(_BYTES_SEP)


def boolean_cells(values: Sequence[Any], end: bytes) -> list[bytes]:
    """`true` / `false`, null -> empty."""
    if not set(map(type, values)) <= _BOOLEAN_TYPES:
        raise TypeError("not a boolean column")
    return list(map(_BOOLEAN_CELLS[end], values))


def _escaped_column(values: Sequence[Any], *, quotes_doubled: bool = False) -> bytes:
    """Text values joined by `_SEP` (null -> ""; each `"` doubled if asked), escaped; each
    `_SEP` is one `_ESCAPED_SEP` (ValueError if a value holds one, or its escaped text)."""
    if None in values:
        values = list(map(_EMPTY_FOR_NULL, values, values))
    joined = _SEP.join(values)  # TypeError for a value that is not text
    text = escaped(joined.replace('"', '""') if quotes_doubled else joined)
    if text.count(_ESCAPED_SEP) != len(values) - 1:
        raise ValueError("the separator is in the text")
    return text


def plain_cells(values: Sequence[Any], end: bytes) -> list[bytes]:
    """Text that never needs quotes (the dates and date-times the converters write)."""
    text = _escaped_column(values)
    return (text.replace(_ESCAPED_SEP, end + _BYTES_SEP) + end).split(_BYTES_SEP)


def _quoted(text: bytes, sep: bytes, values: Sequence[Any], empty: Any, end: bytes
            ) -> list[bytes]:
    """Cells of escaped text whose values are joined by `sep` and whose `"` are doubled
    already: each in quotes; an empty value (`empty`) -> an empty cell."""
    cells = (_QUOTE + text.replace(sep, _QUOTE + end + _BYTES_SEP + _QUOTE)
             + _QUOTE + end).split(_BYTES_SEP)
    if None in values or empty in values:
        blank = {_QUOTE + _QUOTE + end: end}.get
        cells = list(map(blank, cells, cells))
    return cells


def quoted_cells(values: Sequence[Any], end: bytes) -> list[bytes]:
    """Text -> cells in quotes, quotes inside doubled (quoted, a value keeps its leading and
    trailing spaces whatever the parser trims); null and "" -> an empty cell (the CSV route
    reads both as NULL, as it reads what the csv module writes for them)."""
    text = _escaped_column(values, quotes_doubled=True)
    return _quoted(text, _ESCAPED_SEP, values, "", end)


def json_cells(values: Sequence[Any], end: bytes) -> list[bytes]:
    """JSON text (`json_bytes`) -> cells in quotes, as `quoted_cells`: its bytes escaped
    directly (JSON text holds no raw control character, so only `\\` and `"` need it)."""
    if not set(map(type, values)) <= _JSON_TYPES:
        raise TypeError("not a JSON column")
    joined = _BYTES_SEP.join(map(_EMPTY_BYTES_FOR_NULL, values, values) if None in values
                             else values)
    if joined.count(_BYTES_SEP) != len(values) - 1:
        raise ValueError("the separator is in the text")
    text = joined.replace(b"\\", b"\\\\").replace(b'"', _QUOTE + _QUOTE)
    return _quoted(text, _BYTES_SEP, values, b"", end)


CellMaker = Callable[[Sequence[Any], bytes], list[bytes]]
_CELLS: dict[ColumnType, CellMaker] = {
    ColumnType.INTEGER: number_cells,
    ColumnType.NUMBER: number_cells,
    ColumnType.BOOLEAN: boolean_cells,
    ColumnType.DATE: plain_cells,
    ColumnType.DATETIME: plain_cells,
    ColumnType.JSON: json_cells,
}


def csv_data(rows: Sequence[tuple], makers: Sequence[CellMaker],
             positions: Sequence[int | None]) -> bytes:
    """The rows as CSV lines, values in stored order (`positions`; None: an empty cell),
    escaped as the inside of a JSON string (a piece of `ingestion/csv`'s `data`)."""
    columns = list(zip(*rows, strict=True))
    ends = [b","] * (len(positions) - 1) + [LINE_END]
    try:
        cells = [[end] * len(rows) if i is None else makers[i](columns[i], end)
                 for i, end in zip(positions, ends, strict=True)]
    except (TypeError, ValueError):  # a value the shortcuts do not cover
        return escaped(exact_csv_text(rows, positions))
    if len(cells) == 1:  # an empty line would be no row at all
        cells = [[cell if cell != LINE_END else _QUOTE + _QUOTE + LINE_END
                  for cell in cells[0]]]
    width = len(cells)
    interleaved: list[bytes] = [b""] * (len(rows) * width)
    for position, column in enumerate(cells):  # row by row: no tuple per row
        interleaved[position::width] = column
    return b"".join(interleaved)


def exact_csv_text(rows: Sequence[tuple], positions: Sequence[int | None]) -> str:
    """`csv_data` value by value, as text: what a batch takes where the shortcuts do not
    apply (and the reference they are tested against). Text is always quoted: a line end
    in a value, `\r` included, stays inside its cell."""
    lines = [",".join([_csv_cell(None if i is None else row[i]) for i in positions])
             for row in rows]
    if len(positions) == 1:
        lines = [line or '""' for line in lines]
    return "".join(line + "\n" for line in lines)


def _csv_cell(value: Any) -> str:
    """One value as a CSV cell; a number with a fraction keeps its digits (`Raw`)."""
    kind = type(value)
    if value is None or (kind is str and not value):
        return ""
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return str(value)
    if kind is msgspec.Raw:
        return bytes(value).decode()
    if kind is bytes:  # JSON text (`json_bytes`)
        value = value.decode()
    text = value if type(value) is str else conversions.text(value)
    return '"' + text.replace('"', '""') + '"'


def batch_records(rows: Sequence[tuple], layout: Layout | None,
                  json_columns: Sequence[int] = ()) -> bytes:
    """The rows as the JSON list of positional records, in stored order (rows of a table
    with columns we lack never come here: they go as CSV). The values of `json_columns`
    (JSON text as bytes, `json_bytes`) go as strings."""
    reordered = layout is not None and not layout.identity
    if reordered or json_columns:
        columns = list(zip(*rows, strict=True))
        for i in json_columns:
            columns[i] = list(map(_json_string, columns[i]))
        order = layout.positions if reordered else range(len(columns))  # type: ignore[union-attr]
        rows = list(zip(*[columns[i] for i in order], strict=True))  # type: ignore[index]
    return _dumps(rows)


def _json_string(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


NAME = re.compile(r"[A-Za-z0-9_]+\Z")  # DataInsider's `\w+` for database and table names


class TableRegistry:
    """Which table each stream of the run loads into. Shared by the stream's sinks (one per
    schema version) and the target's closing summary."""

    def __init__(self, config: Mapping[str, Any], logger: logging.Logger) -> None:
        self.config = config
        self.logger = logger
        self.loads: dict[str, TableLoad] = {}

    def load_for(self, stream: str) -> TableLoad:
        """The stream's table for this run: mapped, or the stream's name in `database`."""
        if stream in self.loads:
            return self.loads[stream]
        config = self.config
        mapped = (config.get("table_map") or {}).get(stream)
        database, _, table = (mapped or "").rpartition(".")
        database = database or config.get("database")
        table = table or normalize_name(stream)
        if not NAME.match(table):
            raise ConfigError(f"stream '{stream}' gives no usable table name: map it with "
                              f'table_map ({{"{stream}": "<database>.<table>"}})')
        if not database:
            raise ConfigError(
                f"no database for stream '{stream}': set database (the default), or "
                f'table_map ({{"{stream}": "<database>.<table>"}})'
            )
        replace = config["load_method"] == "overwrite"
        other = next((s for s, load in self.loads.items()
                      if (load.database, load.table) == (database, table)), None)
        if replace and other is not None:
            raise ConfigError(
                f"streams '{other}' and '{stream}' are both mapped to table "
                f"{database}.{table}: with load_method overwrite each would replace the "
                "other's rows; map them to different tables"
            )
        load = self.loads[stream] = TableLoad(stream, database, table, replace)
        self.logger.info("Stream '%s' -> %s table %s (%s)", stream, PLATFORM, load.qualified,
                         "overwrite" if replace else "append")
        return load


class LineCount(Protocol):
    line_number: int


class _NoLines:
    line_number = 0


_NO_LINES = _NoLines()


@dataclass(frozen=True)
class DataInsiderParts(SinkParts):
    """What a DataInsider sink is handed by the target."""

    client: DataInsiderClient
    tables: TableRegistry
    budget: BatchBudget = field(kw_only=True)  # type: ignore[assignment]
    """Always set: batches are sized by request bytes (the stream's own, see `new_budget`)."""
    keys_as_primary_keys: bool = True
    """`key_properties_as: primary_keys`: keys become primary keys and order-bys."""
    input_lines: LineCount = field(default_factory=lambda: _NO_LINES)
    """The input reader: its `line_number` (the line being read) names a dropped row's
    batch by its lines. An attribute read per record, not a call."""


def new_budget() -> BatchBudget:
    """A stream's request budget: `REQUEST_BYTES` per call. Rows are tuples, so it learns
    bytes sent per value. Until a batch is measured it assumes 4096 bytes a value: the
    first batch is measured after ~1000 values (`CoreSink` packs a sample then), so a
    stream of wide rows never buffers thousands of them before its size is known."""
    return BatchBudget(REQUEST_BYTES, first_ratio=4096.0)


@dataclass(frozen=True)
class Call:
    """One ingestion call, ready to send: its body as sent, and the rows it carries."""

    rows: int
    csv: bool
    """`ingestion/csv` (the rows hold a null, or the table has columns we lack)."""
    body: bytes


class _Records(msgspec.Struct):
    records: list[msgspec.Raw]


class _CsvData(msgspec.Struct):
    data: str


_decode_records = msgspec.json.Decoder(_Records).decode
"""The records of an `ingestion/batch` body, each as its JSON text (digits untouched)."""
_decode_csv = msgspec.json.Decoder(_CsvData).decode


@dataclass(frozen=True)
class PackedBatch:
    """A batch as the bodies of its calls: all the sender needs (the rows are let go)."""

    calls: list[Call]
    layout: Layout | None
    """The stored layout the bodies follow (None: our own order, the layout not yet known)."""
    lines: tuple[int, int]
    """The batch's first and last input lines."""
    rows: Sequence[tuple] | None
    """Kept only while the layout is not known (a sink's first batch): the sender builds
    the calls again if the stored order is not ours."""

    def follows(self, layout: Layout) -> bool:
        return self.layout is layout or (self.layout is None and layout.identity)


class DataInsiderSink(CoreSink):
    """Batches of rows -> `ingestion/batch` (or `ingestion/csv`) calls into one table.

    Rows are tuples of converted values. The packer thread turns a batch into request
    bodies (`prepare_batch`): the route is picked with one C-level look for a null, the body
    is built a column at a time, and a body over the request limit is cut in pieces there,
    before anything is sent. The sender only sends, and checks each answer."""

    parts: DataInsiderParts
    rows_as_tuples = True
    send_needs_rows = False
    max_batch_bytes = 500_000
    """Values per batch at most (rows are tuples): a memory bound. The request budget
    (`REQUEST_BYTES` as sent) and `batch_size_rows` end batches first on most streams."""

    def sanitise_name(self, name: str) -> str:
        return normalize_name(name)

    def setup(self) -> None:
        super().setup()
        parts = self.parts
        self.load = parts.tables.load_for(self.stream_name)
        self.use_keys = parts.keys_as_primary_keys and any(c.is_key for c in self.columns)
        self.di_columns = [self._definition(c) for c in self.columns]
        self.cell_makers = [_CELLS.get(c.type, quoted_cells) for c in self.columns]
        self.json_columns = [i for i, c in enumerate(self.columns) if c.type is ColumnType.JSON]
        self.layout: Layout | None = None  # known from the first batch on (sender thread)
        self.input_lines = parts.input_lines
        self.first_line = self.last_line = 0
        self._batch_lines: dict[int, tuple[int, int]] = {}

    def _definition(self, column: Column) -> dict[str, Any]:
        class_name = CLASS_NAMES[column.type]
        definition: dict[str, Any] = {
            "class_name": class_name, "name": column.name, "display_name": column.source,
            "is_nullable": not (self.use_keys and column.is_key),
        }
        if class_name == "datetime64":
            definition.update(timezone="UTC", input_formats=[DATETIME_FORMAT])
        elif class_name == "date":
            definition["input_formats"] = [DATE_FORMAT]
        return definition

    def converter_for(self, column: Column) -> Converter | None:
        validated = self.validate_schema
        kind = column.type
        if kind is ColumnType.DATETIME:
            return utc_datetime_ms_text
        if kind is ColumnType.DATE:
            return conversions.date_text
        if kind is ColumnType.JSON:
            return json_bytes
        if kind in (ColumnType.INTEGER, ColumnType.NUMBER):
            return None if validated else conversions.number
        if kind is ColumnType.BOOLEAN:
            return None if validated else _boolean
        if kind is ColumnType.TEXT and validated and column.json_types == ("string",):
            return None
        return conversions.text

    def table_schema(self) -> dict[str, Any]:
        keys = [c.name for c in self.columns if c.is_key] if self.use_keys else []
        return {
            "name": self.load.table, "db_name": self.load.database, "organization_id": 0,
            "display_name": self.stream_name, "columns": self.di_columns,
            "table_type": "replacing" if keys else "default",
            "primary_keys": keys, "order_bys": keys,
        }

    # -- input lines of each batch (for errors about dropped rows) -------------------------

    def add(self, record: dict) -> bool:
        line = self.input_lines.line_number
        if not self.rows:
            self.first_line = line
        self.last_line = line
        return super().add(record)

    def process_record(self, record: dict, context: dict | None) -> None:
        line = self.input_lines.line_number
        if not self.rows:
            self.first_line = line
        self.last_line = line
        super().process_record(record, context)

    def process_batch(self, context: dict) -> None:
        if self.rows:
            self._batch_lines[id(self.rows)] = (self.first_line, self.last_line)
        super().process_batch(context)

    # -- request bodies (packer thread) ----------------------------------------------------

    def prepare_batch(self, rows: list[tuple]) -> PackedBatch:
        """The batch's calls, for the stored layout when it is known already (else for our
        own order; the sender builds them again in the rare case that differs)."""
        layout = self.layout
        calls = self._calls(rows, layout)
        self.parts.budget.measured(len(rows) * len(self.columns),
                                   sum(len(call.body) for call in calls))
        lines = self._batch_lines.pop(id(rows), (0, 0))
        return PackedBatch(calls, layout, lines, rows if layout is None else None)

    def _calls(self, rows: Sequence[tuple], layout: Layout | None) -> list[Call]:
        """One call for the rows, or several where its body would pass the request limit
        (or the size a 413 taught)."""
        call = self._call(rows, layout)
        budget = self.parts.budget
        limit = MAX_REQUEST_BYTES if budget.refused_at is None else budget.ceiling
        if len(call.body) <= limit or len(rows) == 1:
            return [call]
        pieces = -(-len(call.body) // min(REQUEST_BYTES, limit))  # at least 2
        step = -(-len(rows) // pieces)
        return [piece for start in range(0, len(rows), step)
                for piece in self._calls(rows[start:start + step], layout)]

    def _call(self, rows: Sequence[tuple], layout: Layout | None) -> Call:
        client, load = self.parts.client, self.load
        if (layout is not None and not layout.complete) or \
                None in itertools.chain.from_iterable(rows):
            positions = layout.positions if layout is not None else range(len(self.columns))
            pieces = (csv_data(rows[start:start + _CSV_PIECE_ROWS], self.cell_makers, positions)
                      for start in range(0, len(rows), _CSV_PIECE_ROWS))
            return Call(len(rows), True, client.csv_body(load.database, load.table, pieces))
        records = batch_records(rows, layout, self.json_columns)
        return Call(len(rows), False, client.batch_body(load.database, load.table, records))

    def _halves(self, call: Call) -> tuple[Call, Call]:
        """A refused call's rows as two calls, taken back out of its body (the rows were let
        go once packed): whole records moved as they are, or the CSV records read back and
        written again (every cell then quoted: the CSV route reads the same text)."""
        client, load = self.parts.client, self.load
        half = call.rows // 2
        if call.csv:
            records = list(csv.reader(io.StringIO(_decode_csv(call.body).data), strict=True))
            texts = [escaped(exact_csv_text(part, range(len(part[0]))))
                     for part in (records[:half], records[half:])]
            return (Call(half, True, client.csv_body(load.database, load.table, texts[:1])),
                    Call(call.rows - half, True,
                         client.csv_body(load.database, load.table, texts[1:])))
        raws = _decode_records(call.body).records
        bodies = [client.batch_body(load.database, load.table, b"[" + b",".join(part) + b"]")
                  for part in (raws[:half], raws[half:])]
        return Call(half, False, bodies[0]), Call(call.rows - half, False, bodies[1])

    # -- upload (sender thread) ------------------------------------------------------------

    def send_batch(self, rows: None, packed: PackedBatch) -> None:
        layout = self.layout or self._prepare_table()
        calls = packed.calls
        if not packed.follows(layout):  # packed before the layout was known
            calls = self._calls(packed.rows, layout)  # type: ignore[arg-type]
        load = self.load
        if load.replace and not load.truncated:
            self.parts.client.truncate(load.database, load.table)
            load.truncated = True
            self.logger.info("Stream '%s': %s table %s truncated (load_method overwrite)",
                             self.stream_name, PLATFORM, load.qualified)
        for call in calls:
            self._deliver(call, packed.lines)

    def _prepare_table(self) -> Layout:
        client, load = self.parts.client, self.load
        client.register_schema(self.table_schema())
        stored = client.table(load.database, load.table)["columns"]
        self.layout = stored_layout(load, self.di_columns, stored)
        self.logger.info("Stream '%s' -> %s table %s: %d columns stored, %d of them from "
                         "this schema", self.stream_name, PLATFORM, load.qualified,
                         len(self.layout.positions),
                         sum(p is not None for p in self.layout.positions))
        return self.layout

    def _deliver(self, call: Call, lines: tuple[int, int]) -> None:
        if call.rows > 1 and self.parts.budget.known_too_large(len(call.body)):
            # packed before a 413 taught the limit: split now instead of being refused
            first, second = self._halves(call)
            self._deliver(first, lines)
            self._deliver(second, lines)
            return
        try:
            self._insert(call, lines)
        except PayloadTooLarge:
            if call.rows == 1:
                raise ApiError(f"stream '{self.stream_name}': a single row (input line "
                               f"{lines[0]}) is larger than {PLATFORM} accepts (HTTP 413)",
                               413) from None
            self.parts.budget.refused(len(call.body))  # later batches aim lower
            first, second = self._halves(call)
            self.logger.warning("Stream '%s': %s refused %d rows as too large (HTTP 413); "
                                "sending them as two batches of %d and %d", self.stream_name,
                                PLATFORM, call.rows, first.rows, second.rows)
            self._deliver(first, lines)
            self._deliver(second, lines)

    def _insert(self, call: Call, lines: tuple[int, int]) -> None:
        client, load = self.parts.client, self.load
        sent = call.rows
        if call.csv:
            if load.csv_batches == 0:
                self.logger.info("Stream '%s': batches with nulls go to ingestion/csv, which "
                                 "writes NULL (ingestion/batch drops a row with a null in a "
                                 "non-string column, and writes a null string as \"\")",
                                 self.stream_name)
            inserted = client.insert_csv(load.database, load.table, call.body)
            if inserted != sent:
                raise self._dropped(sent - inserted, sent, lines,
                                    f"ingestion/csv inserted {inserted}")
            load.csv_batches += 1
        else:
            counts = client.insert_batch(load.database, load.table, call.body)
            dropped = max(counts.invalid + counts.skipped + counts.failed,
                          sent - counts.inserted)
            if dropped:
                raise self._dropped(dropped, sent, lines,
                                    f"{counts.invalid} invalid, {counts.skipped} skipped, "
                                    f"{counts.failed} failed")
        load.batches += 1
        load.rows += sent

    def _dropped(self, count: int, sent: int, lines: tuple[int, int], detail: str) -> ApiError:
        # Acknowledging the batch would move STATE past rows that are not in the table.
        return ApiError(f"stream '{self.stream_name}': {PLATFORM} dropped {count} of {sent} "
                        f"rows of the batch from input lines {lines[0]}-{lines[1]} "
                        f"({detail}) in table {self.load.qualified}; stopping before any "
                        "later STATE", 200)


# -- lake mode --------------------------------------------------------------------------------

MAX_LAKE_FILE_BYTES = 48 * 1024 * 1024
"""A stream's Parquet data is cut into files of about this size (one batch more at most).
The lake server's request limit is unknown; its web UI uploads users' files through the
same route, so files are not held to the schema service's 5 MB (see docs/datainsider.md)."""


def lake_directory(stream: str, config: Mapping[str, Any]) -> str:
    """The stream's lake directory: `lake_path_map`, else `<lake_path_prefix>/<stream>`."""
    mapped = (config.get("lake_path_map") or {}).get(stream)
    if mapped:
        return mapped.rstrip("/") or "/"
    name = normalize_name(stream)
    if not name:
        raise ConfigError(f"stream '{stream}' gives no usable lake directory name: map it "
                          f'with lake_path_map ({{"{stream}": "/data/<dir>"}})')
    return f"{config['lake_path_prefix'].rstrip('/')}/{name}"


def parquet_writer() -> type[FormatWriter]:
    """`target_core.parquet.ParquetWriter`, imported on first use: pyarrow's Parquet support
    costs ~35 MB of memory, which warehouse mode never pays."""
    import_pyarrow()
    from target_core.parquet import ParquetWriter

    return ParquetWriter


class LakeLoad(FileLoad):
    """One stream's Parquet files in one file sync of its lake directory (sender thread)."""

    max_file_bytes = MAX_LAKE_FILE_BYTES

    def __init__(self, stream: str, directory: str, replace: bool, client: LakeClient,
                 logger: logging.Logger, acknowledged: Acknowledged | None = None) -> None:
        super().__init__(stream)
        self.writer_class = parquet_writer()  # type: ignore[misc]
        self.directory = directory
        self.replace = replace
        self.client = client
        self.logger = logger
        self.acknowledged = acknowledged
        self.sync_id: int | None = None
        self._started = 0.0
        self._stem = normalize_name(stream)[:60] or "stream"

    def sanitise_name(self, name: str) -> str:
        return normalize_name(name)  # the names warehouse mode gives the same stream

    def upload(self, file: FinishedFile) -> None:
        if self.sync_id is None:  # at the first file: a stream with no records syncs nothing
            moment = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
            self._started = time.monotonic()
            self.sync_id = self.client.start_sync(
                f"target-datainsider {self.stream} {moment} UTC", self.directory, self.replace)
            self.logger.info("Stream '%s': %s file sync %d started (%s) for lake directory %s",
                             self.stream, PLATFORM, self.sync_id, SYNC_TYPES[self.replace],
                             self.directory)
        # IncrementalSync: a name no other run or stream uses (the sync id is the server's).
        # FullSync: the same names in every run. The server stages a FullSync's files in
        # /tmp<path> and never clears that directory, so a killed FullSync leaves its files
        # there for the next one to publish; a resumed run puts the same names and replaces
        # them (see docs/datainsider.md).
        number = f"{file.number:04d}{file.suffix}"
        name = f"{self._stem}-{number}" if self.replace else f"{self._stem}-{self.sync_id}-{number}"
        self.client.upload(self.directory, self.sync_id,
                           MultipartFile("file", file.path, name, file.media_type))

    def commit(self, files: Sequence[FinishedFile]) -> None:
        assert self.sync_id is not None, "commit comes after the stream's uploads"
        self.client.end_sync(self.sync_id)
        rows = sum(f.rows for f in files)
        self.logger.info("Stream '%s': %s file sync %d ended: %d rows in %d Parquet file(s) "
                         "%s lake directory %s", self.stream, PLATFORM, self.sync_id, rows,
                         len(files), "now make up" if self.replace else "added to",
                         self.directory)
        if self.acknowledged is not None:
            self.acknowledged(self.stream, 1, rows, time.monotonic() - self._started)
