"""A faithful emulator of the DataInsider (Rocket.BI) API
(``/work/shared/apis/datainsider.md``: the warehouse routes of the server's HEAD and the
Data Lake file sync of v1.4.19, its section 7 checklist).

Served by ``target-sandbox serve`` under ``/datainsider/api``, so a target configured with
``api_url = http://127.0.0.1:PORT/datainsider/api`` runs its real HTTP path with no account.

What it reproduces, as read in the open-source server:

- the error envelope ``{"code", "reason", "message"}`` and its odd codes: a duplicate
  database is 404 ``db_existed``, a duplicate table 400, an unknown database 500, an unknown
  table 404 ``table_not_found``, malformed JSON 400 ``invalaid_json_format`` (sic);
- keys: ``api_key`` in the query string or JSON body. None: 401 ``not_authenticated``;
  unknown: 404 with Finatra's ``{"errors": [...]}``; a key that may only view: 403
  ``insufficient_permission`` on every write;
- ``ingestion/csv/schema`` creates the database and the table, and on an existing table only
  adds the columns whose names are missing (a changed type is left as it is);
- ``ingestion/batch``: positional values in stored column order; a short row is skipped, a
  value that does not coerce, or a null in any non-string column (nullable or not, unless
  the column has a ``default_value``), drops the whole row; HTTP 200 with the counters;
- ``ingestion/csv``: CSV text; missing trailing cells and empty cells (strings too) are NULL,
  a cell that does not convert falls back to the column's default or NULL, a row of NULLs
  only is dropped; ``{"succeed", "row_inserted"}``;
- ``DELETE ingestion/<db>/<tbl>`` truncates (``true`` even for a missing table);
- requests over 5 MB (Finatra's default ``maxRequestSize``) get 413.
Dates (batch): a JSON integer is epoch milliseconds; a string is tried against each of the
column's ``input_formats`` (Java ``SimpleDateFormat`` patterns, parsed from the start of the
text) or, when it has none, ``yyyy-MM-dd HH:mm:ss``, in the column's time zone (UTC by
default). CSV reads dates with the first input format only.
Numbers are stored as the text they arrived with (a ``double`` column of the real server
keeps a Float64, 15-17 significant digits: see docs/datainsider.md), so a test sees exactly
what a target sent.
Speed: both ingestion routes work a column at a time. Where a whole column has the shape
targets send (JSON strings, integers, numbers without exponent, ``true``/``false``,
``yyyy-MM-dd HH:mm:ss.SSSZ`` date-times), one regex over the column's values and a few
C-level calls check and convert it; any other column (or, for the batch route, any record
of another length) goes value by value through the same rules (``coerce``, ``csv_value``).
The CSV route keeps its converted columns as they are (a column of what targets send as one
JSON text). Bodies with no fractional number are read by orjson, the others by msgspec
(numbers as ``Decimal``); the cyclic collector is held off while a batch is parsed.
The tests check that both ways store the same rows, and read bodies alike.

Data Lake file sync (v1.4.19 ``IngestionController`` + ``ApiKeyFilter``, and the vendor's
"File upload" page for the lake's upload route):

- ``ingestion/file/sync/start`` ``{name, path, api_key, sync_type}`` -> ``{"sync_id"}``;
  ``ingestion/file/sync/end`` ``{sync_id, api_key}`` -> ``{"success": true}``. The key
  (query or JSON body, checked before the body is bound) is one server-wide key, here the
  same ``di-sandbox-key``: missing or wrong, 400 ``bad_request``. A ``sync_type`` other than
  ``FullSync`` / ``IncrementalSync``: 500 ``No value found for '<x>'``; an unknown sync id:
  400 ``sync info for id <id> not found``; ending twice: 400 ``job is already ended``.
- ``lake/file/upload?path=&sync_id=`` (multipart field ``file``): an IncrementalSync's
  file lands in the sync's directory at once; a FullSync's is staged in ``/tmp<path>``
  and on sync end the old directory moves to the trash (``/user/root/.Trash<path>``) and the
  staged one takes its place (nothing staged: 500 ``move full sync files failed: ``). As
  in the server, nothing ever clears ``/tmp<path>``: files a killed FullSync staged are
  published by the next FullSync of that path. The upload answers ``{"code": 0, "msg":
  null}``; an unknown or ended sync, a missing ``file`` part or a file that is not
  Parquet answer HTTP 200 with a non-zero ``code`` (the lake's codes; its HTTP statuses
  are unknown). Every upload is read back with pyarrow (rows, columns) and gets a history
  row.
- ``ingestion/file/sync/list`` and ``history`` (``from``, ``size``; no key; missing
  parameters mean ``limit 0``, so ``[]``).

What the emulator assumes where the source is silent: the body of a 413 (our envelope,
reason ``request_too_large``), strict (not lenient) calendar dates, a server in UTC (the CSV
route parses dates in the JVM's zone), a CSV that does not parse is refused whole (the
server's parser skips a malformed row); the lake server's upload: no key, no 5 MB limit
(only the sandbox's own body limit), the sync's ``path`` decides the directory (the
``path`` parameter is recorded only), a file of the same name in the directory is
replaced, a file that is not Parquet is refused (the real lake would keep any file).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import decimal
import functools
import gc
import hmac
import io
import math
import operator
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from target_core.sandbox.emulator import ApiError, Reply, Request, Routes
from target_core.sandbox.store import Store
from target_datainsider.names import normalize_name

SANDBOX_API_KEY = "di-sandbox-key"
SANDBOX_READONLY_KEY = "di-sandbox-readonly-key"
"""A key that may view databases but not create or edit them (403 on writes)."""
MAX_REQUEST_BYTES = 5 * 1024 * 1024
ORGANIZATION_ID = 0
DEFAULT_DATE_FORMAT = "yyyy-MM-dd HH:mm:ss"
_META_VERSION = 1

REASONS = {400: "bad_request", 401: "not_authenticated", 403: "insufficient_permission",
           404: "not_found", 405: "bad_request", 409: "already_existed",
           413: "request_too_large", 429: "too_many_requests", 500: "internal_error"}
INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1), "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1),
    "uint8": (0, 2**8 - 1), "uint16": (0, 2**16 - 1), "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
}
DATE_CLASSES = frozenset({"date", "datetime", "datetime64"})
CLASS_NAMES = frozenset({"bool", "float", "double", "string", "array", "nested",
                         *INT_RANGES, *DATE_CLASSES})
_WORD = re.compile(r"\w+\Z", re.ASCII)
_decode_exact = msgspec.json.Decoder(float_hook=decimal.Decimal).decode
"""JSON with every number that has a fraction as a `Decimal`: the digits as received."""
_encode_exact = msgspec.json.Encoder(decimal_format="number").encode
FILE_SYNC_TYPES = ("FullSync", "IncrementalSync")
STAGING_ROOT = "/tmp"
TRASH_ROOT = "/user/root/.Trash"


class DIError(ApiError):
    """An error answer in DataInsider's envelope, with its `reason`."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(status, message)
        self.reason = reason


class _UnknownKey(Exception):
    """Finatra's NotFoundException: its own body shape, not the envelope."""


class Invalid(ValueError):
    """A value the column parser refuses."""


# dates --------------------------------------------------------------------------------------
_FORMAT_TOKENS = [("yyyy", "y", r"\d{1,4}"), ("MM", "M", r"\d{1,2}"), ("dd", "d", r"\d{1,2}"),
                  ("HH", "H", r"\d{1,2}"), ("mm", "m", r"\d{1,2}"), ("ss", "s", r"\d{1,2}"),
                  ("SSS", "S", r"\d+"), ("XXX", "z", r"Z|[+-]\d{2}:\d{2}")]
_format_cache: dict[str, re.Pattern[str] | None] = {}


def _compile_format(pattern: str) -> re.Pattern[str] | None:
    """A regex for the subset of SimpleDateFormat the emulator knows (None: unknown letters)."""
    if pattern in _format_cache:
        return _format_cache[pattern]
    out, i = [], 0
    while i < len(pattern):
        for token, group, regex in _FORMAT_TOKENS:
            if pattern.startswith(token, i):
                out.append(f"(?P<{group}>{regex})")
                i += len(token)
                break
        else:
            char = pattern[i]
            if char == "'":
                end = pattern.find("'", i + 1)
                if end < 0:
                    out = []
                    break
                out.append(re.escape(pattern[i + 1:end]))
                i = end + 1
            elif char.isalpha():
                out = []
                break
            else:
                out.append(re.escape(char))
                i += 1
    compiled = re.compile("".join(out)) if out else None
    _format_cache[pattern] = compiled
    return compiled


def _zone(column: dict[str, Any]) -> dt.tzinfo:
    name = column.get("timezone")
    if not name:
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def _with_pattern(pattern: str, text: str, zone: dt.tzinfo) -> dt.datetime | None:
    """`SimpleDateFormat(pattern).parse(text)`: from the start of the text, the rest ignored."""
    regex = _compile_format(pattern)
    match = regex.match(text) if regex else None
    if match is None:
        return None
    parts = match.groupdict()
    try:
        offset = parts.get("z")
        if offset == "Z":  # an ISO 8601 zone in the text wins over the pattern's zone
            zone = dt.UTC
        elif offset:
            minutes = (int(offset[1:3]) * 60 + int(offset[4:6])) * (
                -1 if offset[0] == "-" else 1)
            zone = dt.timezone(dt.timedelta(minutes=minutes))
        moment = dt.datetime(int(parts.get("y") or 1970), int(parts.get("M") or 1),
                             int(parts.get("d") or 1), int(parts.get("H") or 0),
                             int(parts.get("m") or 0), int(parts.get("s") or 0), tzinfo=zone)
        milliseconds = int(parts.get("S") or 0)
        if milliseconds:
            moment += dt.timedelta(milliseconds=milliseconds)
    except (ValueError, OverflowError):
        return None
    return moment if zone is dt.UTC else moment.astimezone(dt.UTC)


def parse_moment(column: dict[str, Any], value: Any) -> dt.datetime:
    """A date/datetime value of ingestion/batch -> an aware UTC datetime: a JSON integer is
    epoch ms; a string is read with the first of `input_formats` that parses it or, only when
    there are none, with `yyyy-MM-dd HH:mm:ss` (`DateTimeColumnParser`)."""
    if type(value) is int:
        try:
            return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=value)
        except OverflowError:  # past what a date can hold: an invalid field, not a 500
            raise Invalid("not a date") from None
    if type(value) is not str:
        raise Invalid("not a date")
    zone = _zone_of(column)
    for pattern in column.get("input_formats") or [DEFAULT_DATE_FORMAT]:
        moment = _with_pattern(pattern, value, zone)
        if moment is not None:
            return moment
    raise Invalid("no date format matches")


def csv_value(column: dict[str, Any], cell: str | None) -> Any:
    """One CSV cell as `CsvReader.toRecord` stores it: what does not convert falls back to
    the column's default_value, or NULL (dates: always NULL). Dates are read with the first
    input format only (none: NULL), in the server's time zone (assumed UTC)."""
    if cell is None:
        return None
    kind, text, default = column["class_name"], cell.strip(), column.get("default_value")
    try:
        if kind == "string":
            return cell if cell else default
        if kind in ("int32", "int64"):
            return coerce(column, int(text))
        if kind in ("float", "double"):
            return _finite(decimal.Decimal(text))
        if kind == "bool":
            if text.lower() not in ("true", "false"):
                return default
            return text.lower() == "true"
    except (Invalid, ValueError, ArithmeticError):  # Decimal's InvalidOperation included
        return default
    if kind in DATE_CLASSES:
        formats = column.get("input_formats") or []
        digits = sum(map(str.isdigit, text))
        if not formats or (kind != "date" and (len(text) > 30 or digits < 5)):
            return None
        moment = _with_pattern(formats[0], text, dt.UTC)
        return None if moment is None else _date_text(kind, moment)
    return text


def csv_converter(column: dict[str, Any]) -> Callable[[str | None], Any]:
    """`csv_value` for one column, its type looked at once (the same results, cheaper per
    cell): each type has its own converter with `csv_value`'s rules."""
    kind = column["class_name"]
    if kind in DATE_CLASSES:
        formats = column.get("input_formats") or []
        if not formats:
            return lambda cell: None
        return functools.partial(_csv_date, kind, formats[0])
    default = column.get("default_value")
    if kind in ("int32", "int64"):  # as in `csv_value`: other integer types stay text
        return functools.partial(_csv_int, column, default)
    if kind in ("float", "double"):
        return functools.partial(_csv_double, default)
    if kind != "string":
        return functools.partial(csv_value, column)
    return _StringCells(default)


class _StringCells:
    """A string cell of `csv_value`: "" -> the column's default, None stays None, any other
    text as it is."""

    def __init__(self, default: Any) -> None:
        self._default = default

    def __call__(self, cell: str | None) -> Any:
        return self._default if cell == "" else cell

    def column(self, cells: Sequence[str | None]) -> list[Any]:
        """The column's cells at once: its empty cells found by `list.index` (a C-level
        length check per cell; a dict lookup would hash every cell)."""
        values = list(cells)
        at = 0
        try:
            while True:
                at = values.index("", at)
                values[at] = self._default
                at += 1
        except ValueError:  # no empty cell left
            return values


def _csv_int(column: dict[str, Any], default: Any, cell: str | None) -> Any:
    """An integer cell of `csv_value`."""
    if cell is None:
        return None
    try:
        return coerce(column, int(cell.strip()))
    except (Invalid, ValueError, ArithmeticError):
        return default


def _csv_double(default: Any, cell: str | None) -> Any:
    """A float or double cell of `csv_value`."""
    if cell is None:
        return None
    try:
        return _finite(decimal.Decimal(cell.strip()))
    except (Invalid, ValueError, ArithmeticError):
        return default


def _csv_date(kind: str, pattern: str, cell: str | None) -> str | None:
    """A date cell of `csv_value` (the column's first input format, UTC)."""
    if cell is None:
        return None
    text = cell.strip()
    if kind != "date" and (len(text) > 30 or sum(map(str.isdigit, text)) < 5):
        return None
    moment = _with_pattern(pattern, text, dt.UTC)
    return None if moment is None else _date_text(kind, moment)


def _date_text(class_name: str, moment: dt.datetime) -> str:
    naive = moment.replace(tzinfo=None)  # isoformat: 4-digit years below 1000 too
    if class_name == "date":
        return naive.date().isoformat()
    if class_name == "datetime":
        return naive.isoformat(" ", "seconds")
    return naive.isoformat(" ", "milliseconds")


# values -------------------------------------------------------------------------------------
def coerce(column: dict[str, Any], value: Any) -> Any:
    """One value as `ColumnParser` stores it; raises `Invalid` where it gives up."""
    kind = column["class_name"]
    if value is None:
        default = column.get("default_value")
        if kind == "string":
            return default if isinstance(default, str) else ""
        if default is None:
            raise Invalid("null")  # Option(null): invalid even for a nullable column
        value = default
    if kind in INT_RANGES:
        if type(value) is bool:
            number = int(value)
        elif type(value) is int:
            number = value
        elif type(value) in (float, decimal.Decimal):
            number = int(value)  # narrowed, as the server's toInt does
        else:
            try:
                number = int(str(value))
            except ValueError:
                raise Invalid("not an integer") from None
        low, high = INT_RANGES[kind]
        if not low <= number <= high:
            raise Invalid("out of range")
        return number
    if kind in ("float", "double"):
        if type(value) is bool:
            return float(value)
        if type(value) in (int, decimal.Decimal):
            return _finite(value)  # kept as received: the stored text is what was sent
        try:
            return float(value)
        except (TypeError, ValueError):
            raise Invalid("not a number") from None
    if kind == "bool":
        if type(value) is bool:
            return value
        if type(value) in (int, float, decimal.Decimal):
            return value > 0
        if type(value) is str and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise Invalid("not a boolean")
    if kind == "string":
        return value if type(value) is str else _encode_exact(value).decode()
    if kind in DATE_CLASSES:
        return _date_text(kind, parse_moment(column, value))
    if kind == "array" and not isinstance(value, list):
        raise Invalid("not an array")
    return value


INVALID = object()
"""What `coerce_column` puts in place of a value `coerce` refuses."""
_DECIMAL_OR_INT = frozenset({int, decimal.Decimal})


def _coerce_or_invalid(column: dict[str, Any], value: Any) -> Any:
    try:
        return coerce(column, value)
    except Invalid:
        return INVALID


def _all_finite(values: list[Any]) -> bool:
    try:
        return all(map(math.isfinite, map(float, values)))
    except (OverflowError, ValueError, decimal.InvalidOperation):
        return False


def coerce_column(column: dict[str, Any], values: list[Any]) -> list[Any]:
    """`coerce` over one column's values (INVALID where it refuses one). Where every value
    already is what `coerce` would keep unchanged (text in a string column, integers in
    range, finite numbers in a double, booleans), one C-level pass checks it: same result."""
    kind = column["class_name"]
    types = set(map(type, values))
    if kind == "string" and types <= {str}:
        return values
    if kind == "bool" and types <= {bool}:
        return values
    if kind in INT_RANGES and types <= {int}:
        low, high = INT_RANGES[kind]
        if not values or (low <= min(values) and max(values) <= high):
            return values
    if kind in ("float", "double") and types <= _DECIMAL_OR_INT and _all_finite(values):
        return values
    if kind in DATE_CLASSES and types <= {str}:  # `parse_moment`, its zone looked up once
        patterns = column.get("input_formats") or [DEFAULT_DATE_FORMAT]
        canonical = canonical_dates(kind, patterns[0], values)
        if canonical is not None:
            return canonical
        return list(map(functools.partial(_date_or_invalid, kind, _zone_of(column), patterns),
                        values))
    return [_coerce_or_invalid(column, value) for value in values]


def _zone_of(column: dict[str, Any]) -> dt.tzinfo:
    return dt.UTC if column["class_name"] == "date" else _zone(column)


def _date_or_invalid(kind: str, zone: dt.tzinfo, patterns: list[str], text: str) -> Any:
    """A text value of a date column as `coerce` stores it, or INVALID."""
    for pattern in patterns:
        moment = _with_pattern(pattern, text, zone)
        if moment is not None:
            return _date_text(kind, moment)
    return INVALID


# whole-column fast paths ----------------------------------------------------------------------
# The ingestion routes take 10,000-row batches. Where a whole column has the shape a target
# sends (canonical numbers, `true`/`false`, date-times already in the column's format), one
# C-level pass (a regex over the column's cells joined by line breaks, `map`) checks and
# converts it, with the same result as the cell-by-cell rules above; anything else, or any
# doubt, goes the exact way. tests/test_datainsider_sandbox.py checks that both agree.
_YMD = r"[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
_HMS = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"


def _lines_of(cell: str) -> re.Pattern[str]:
    """A regex for a column of cells of one shape, joined by line breaks."""
    return re.compile(f"(?:{cell})(?:\n(?:{cell}))*")


_CANONICAL_DATES: dict[tuple[str, str], tuple[re.Pattern[str], int]] = {
    # (class_name, first input format): (the column's shape, the characters stored).
    # The text ends in `Z` (UTC whatever the column's zone): stored as it is, cut short.
    ("datetime64", "yyyy-MM-dd HH:mm:ss.SSSXXX"):
        (_lines_of(f"{_YMD} {_HMS}\\.[0-9]{{3}}Z"), len("yyyy-MM-dd HH:mm:ss.SSS")),
    ("datetime", "yyyy-MM-dd HH:mm:ss.SSSXXX"):
        (_lines_of(f"{_YMD} {_HMS}\\.[0-9]{{3}}Z"), len("yyyy-MM-dd HH:mm:ss")),
    ("date", "yyyy-MM-dd"): (_lines_of(_YMD), len("yyyy-MM-dd")),
}
_DAY = operator.itemgetter(slice(0, 10))


def _one_per_line(texts: Sequence[str], joined: str) -> bool:
    return joined.count("\n") == len(texts) - 1


def canonical_dates(kind: str, pattern: str, texts: Sequence[Any]) -> list[str] | None:
    """The stored text of date cells already in the canonical shape of `pattern`, read
    from UTC (`2024-01-02 03:04:05.678Z` -> `2024-01-02 03:04:05.678`); None if the
    shape is another or any cell differs (the regex checks the ranges of months, hours,
    minutes and seconds, `date.fromisoformat` the days of each month and year 0)."""
    kept = _canonical_shape(kind, pattern, texts)
    if kept is None:
        return None
    return list(map(operator.itemgetter(slice(0, kept)), texts))


def _canonical_shape(kind: str, pattern: str, texts: Sequence[Any],
                     joined: str | None = None) -> int | None:
    """How many characters of each cell are stored, when all have the canonical shape of
    `pattern` (see `canonical_dates`); else None. `joined`: the texts joined by line ends,
    already checked one per line (`_one_per_line`) by the caller."""
    shape = _CANONICAL_DATES.get((kind, pattern))
    if shape is None or not texts:
        return None
    regex, kept = shape
    if joined is None:
        try:
            joined = "\n".join(texts)
        except TypeError:  # a value that is no text
            return None
        if not _one_per_line(texts, joined):
            return None
    if regex.fullmatch(joined) is None:
        return None
    try:
        for day in set(map(_DAY, texts)):
            dt.date.fromisoformat(day)
    except ValueError:
        return None
    return kept


_INTEGER_CELLS = _lines_of("-?[0-9]{1,20}")
"""Longer integers are out of every integer type's range (and of `int`'s digit limit)."""
_JSON_INT64_CELLS = _lines_of("-?(?:0|[1-9][0-9]{0,17})")
"""Integers as JSON writes them, in an int64's range (at most 18 digits)."""
_NUMBER_CELLS = _lines_of("-?[0-9]+(?:\\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
_JSON_NUMBER_CELLS = _lines_of("-?(?:0|[1-9][0-9]{0,299})(?:\\.[0-9]+)?")
"""Numbers as JSON writes them, finite in a double (no exponent, at most 300 digits before
the point): stored as the text that came (`Raw`), as the batch route stores them."""
_BOOLEAN_CELLS = {"true": True, "false": False}


def _csv_integers(column: dict[str, Any], cells: list[str]) -> list[Any] | None:
    joined = "\n".join(cells)
    if not _one_per_line(cells, joined):
        return None
    if column["class_name"] == "int64" and _JSON_INT64_CELLS.fullmatch(joined):
        return list(map(msgspec.Raw, cells))
    if _INTEGER_CELLS.fullmatch(joined) is None:
        return None
    values = list(map(int, cells))
    low, high = INT_RANGES[column["class_name"]]
    return values if low <= min(values) and max(values) <= high else None


def _csv_numbers(column: dict[str, Any], cells: list[str]) -> list[Any] | None:
    joined = "\n".join(cells)
    if not _one_per_line(cells, joined):
        return None
    if _JSON_NUMBER_CELLS.fullmatch(joined):
        return list(map(msgspec.Raw, cells))
    if _NUMBER_CELLS.fullmatch(joined) is None:
        return None
    values = list(map(decimal.Decimal, cells))
    return values if _all_finite(values) else None


def _csv_booleans(column: dict[str, Any], cells: list[str]) -> list[Any] | None:
    values = list(map(_BOOLEAN_CELLS.get, cells))
    return None if None in values else values


def _csv_dates(column: dict[str, Any], cells: list[str]) -> list[Any] | None:
    formats = column.get("input_formats") or []
    return canonical_dates(column["class_name"], formats[0], cells) if formats else None


_CSV_COLUMNS: dict[str, Callable[[dict[str, Any], list[str]], list[Any] | None]] = {
    "int32": _csv_integers, "int64": _csv_integers, "float": _csv_numbers,
    "double": _csv_numbers, "bool": _csv_booleans, "date": _csv_dates,
    "datetime": _csv_dates, "datetime64": _csv_dates,
}


def csv_column(column: dict[str, Any], cells: Sequence[str | None]) -> list[Any]:
    """`csv_value` over one column's cells. The cells that are not empty go through the
    column's fast path when it has one and it decides them all; missing and empty cells get
    what `csv_value` gives them. Otherwise, cell by cell."""
    exact = csv_converter(column)
    if isinstance(exact, _StringCells):
        return exact.column(cells)
    fast = _CSV_COLUMNS.get(column["class_name"])
    if fast is not None:
        present = [cell for cell in cells if cell]
        values = fast(column, present) if present else None
        if values is not None:
            if len(present) == len(cells):
                return values
            gaps = {None: exact(None), "": exact("")}
            filled = iter(values)
            return [next(filled) if cell else gaps[cell] for cell in cells]
    return list(map(exact, cells))


def csv_column_json(column: dict[str, Any], cells: Sequence[str | None]
                    ) -> list[Any] | msgspec.Raw:
    """`csv_column` as it is stored: where every cell is present and already what the
    column stores (JSON integers in an int64, JSON numbers in a double, canonical
    `datetime64` and `date` text), the column's JSON array as one `Raw` (no object per
    cell, written as it is); otherwise `csv_column`'s values."""
    kind = column["class_name"]
    if kind not in _WHOLE_COLUMNS or not cells or not all(cells):  # a missing/empty cell
        return csv_column(column, cells)
    joined = "\n".join(cells)  # type: ignore[arg-type]
    if not _one_per_line(cells, joined):  # type: ignore[arg-type]
        return csv_column(column, cells)
    whole = _WHOLE_COLUMNS[kind]
    if whole is None:  # dates: stored as the cells' text (no character JSON escapes)
        formats = column.get("input_formats") or []
        kept = _canonical_shape(kind, formats[0], cells, joined) if formats else None
        if kept != len(cells[0]) - (kind == "datetime64"):  # type: ignore[arg-type]
            return csv_column(column, cells)
        if kind == "datetime64":  # the `Z` that ends each cell cut
            joined = joined[:-1].replace("Z\n", "\n")
        return msgspec.Raw(('["' + joined.replace("\n", '","') + '"]').encode())
    if whole.fullmatch(joined) is None:
        return csv_column(column, cells)
    return msgspec.Raw(("[" + joined.replace("\n", ",") + "]").encode())


_WHOLE_COLUMNS: dict[str, re.Pattern[str] | None] = {
    "int64": _JSON_INT64_CELLS, "float": _JSON_NUMBER_CELLS, "double": _JSON_NUMBER_CELLS,
    "datetime64": None, "date": None,
}
"""The column types `csv_column_json` may store whole: their cells' regex (dates: the
canonical shapes of `_CANONICAL_DATES`)."""


# `ingestion/batch` with every record complete: each column's values as JSON text (`Raw`)
_INTEGER_VALUES = re.compile(rb"-?[0-9]{1,19}(?:\n-?[0-9]{1,19})*")
"""In a 64-bit integer (longer ones: the exact way)."""
_NUMBER_VALUES = re.compile(rb"-?[0-9]{1,300}(?:\.[0-9]+)?(?:\n-?[0-9]{1,300}(?:\.[0-9]+)?)*")
"""Finite in a double (no exponent, at most 300 digits before the point)."""
_BOOLEAN_VALUES = re.compile(rb"(?:true|false)(?:\n(?:true|false))*")
_decode_records = msgspec.json.Decoder(list[list[msgspec.Raw]]).decode
_decode_integers = msgspec.json.Decoder(list[int]).decode
_decode_texts = msgspec.json.Decoder(list[str]).decode
_decode_raw_list = msgspec.json.Decoder(list[msgspec.Raw]).decode


def _raw_column(column: dict[str, Any], values: Sequence[msgspec.Raw]
                ) -> Sequence[msgspec.Raw] | None:
    """`coerce_column` for one column of JSON texts: `values` itself where every value is
    kept as it came (text in a string column, integers in range, finite numbers without an
    exponent, booleans), the new values where each is a canonical date-time, else None."""
    kind = column["class_name"]
    joined = b"\n".join(values)
    if joined.count(b"\n") != len(values) - 1:  # a value spread over lines: no shape here
        return None
    if kind == "string":  # JSON text has no raw line break: each line is one value
        kept = joined[:1] == b'"' and joined.count(b'\n"') == len(values) - 1
    elif kind == "bool":
        kept = _BOOLEAN_VALUES.fullmatch(joined) is not None
    elif kind in ("float", "double"):
        kept = _NUMBER_VALUES.fullmatch(joined) is not None
    elif kind in INT_RANGES:
        kept = _INTEGER_VALUES.fullmatch(joined) is not None
        if kept:
            numbers = _decode_integers(b"[" + joined.replace(b"\n", b",") + b"]")
            low, high = INT_RANGES[kind]
            kept = low <= min(numbers) and max(numbers) <= high
    elif kind in DATE_CLASSES and joined[:1] == b'"':
        try:
            texts = _decode_texts(b"[" + joined.replace(b"\n", b",") + b"]")
        except msgspec.ValidationError:
            return None
        patterns = column.get("input_formats") or [DEFAULT_DATE_FORMAT]
        dates = canonical_dates(kind, patterns[0], texts)
        return None if dates is None else _decode_raw_list(_encode_exact(dates))
    else:
        kept = False
    return values if kept else None


def batch_rows(columns: list[dict[str, Any]], records: list[list[Any]]
               ) -> tuple[list[list[Any]], int, int, int]:
    """What `ingestion/batch` stores of decoded records, value by value: (rows, invalid
    records, invalid fields, skipped records)."""
    width = len(columns)
    complete = [record for record in records if len(record) >= width]
    skipped = len(records) - len(complete)
    # column by column: a column whose values all pass one C-level check is kept as
    # it is; the others go through `coerce` value by value, an invalid one as INVALID
    converted = [coerce_column(column, list(values))
                 for column, values in zip(columns, zip(*complete, strict=False),
                                           strict=False)]
    rows: list[list[Any]] = []
    invalid = invalid_fields = 0
    for row in zip(*converted, strict=True) if complete and width else ([] for _ in complete):
        bad = row.count(INVALID)
        if bad:
            invalid += 1
            invalid_fields += bad
            continue
        rows.append(list(row))
    return rows, invalid, invalid_fields, skipped


def batch_rows_fast(columns: list[dict[str, Any]], records: list[list[msgspec.Raw]]
                    ) -> list[list[msgspec.Raw]] | None:
    """The rows `ingestion/batch` stores, when every record has exactly one value per
    column and every column passes `_raw_column` (then none is invalid or skipped); None:
    the exact way decides."""
    width = len(columns)
    if not records or not width or set(map(len, records)) != {width}:
        return None
    for position, (column, values) in enumerate(
            zip(columns, zip(*records, strict=True), strict=True)):
        stored = _raw_column(column, values)
        if stored is None:
            return None
        if stored is not values:
            for record, value in zip(records, stored, strict=True):
                record[position] = value
    return records


def _finite(number: Any) -> Any:
    """A number a Float64 column can hold, as received; else `Invalid` (or a CSV fallback)."""
    try:
        if abs(float(number)) == float("inf"):
            raise Invalid("out of a double's range")
    except (OverflowError, decimal.InvalidOperation):
        raise Invalid("out of a double's range") from None
    if isinstance(number, decimal.Decimal) and not number.is_finite():
        raise Invalid("not a finite number")
    return number


def _zero(column: dict[str, Any]) -> Any:
    """What an old row shows in a column added after it (ClickHouse's type default)."""
    if column.get("is_nullable"):
        return None
    kind = column["class_name"]
    return {"string": "", "bool": False, "float": 0.0, "double": 0.0, "array": [],
            "date": "1970-01-01", "datetime": "1970-01-01 00:00:00",
            "datetime64": "1970-01-01 00:00:00.000"}.get(kind, 0)


# request bodies -----------------------------------------------------------------------------
def _required(body: dict[str, Any], name: str, kind: type | tuple[type, ...] = str) -> Any:
    value = body.get(name)
    if value is None:
        raise DIError(400, "invalid_param", f"{name}: field is required")
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise DIError(400, "invalid_param", f"{name}: invalid type")
    return value


def parse_column(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise DIError(400, "invalid_param", f"{where}: must be an object")
    kind = raw.get("class_name")
    if kind not in CLASS_NAMES:
        raise DIError(400, "invalid_param", f"{where}.class_name: missing or unknown type id "
                                            f"{kind!r}")
    name = _required(raw, "name")
    display = _required(raw, "display_name")
    column: dict[str, Any] = {"class_name": kind, "name": name, "display_name": display,
                              "is_nullable": bool(raw.get("is_nullable", False)),
                              "is_encrypted": bool(raw.get("is_encrypted", False))}
    for key in ("description", "default_value", "default_expression", "timezone"):
        if raw.get(key) is not None:
            value = raw[key]
            column[key] = float(value) if isinstance(value, decimal.Decimal) else value
    if kind in DATE_CLASSES:
        formats = raw.get("input_formats") or []
        if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
            raise DIError(400, "invalid_param", f"{where}.input_formats: must be strings")
        column["input_formats"] = formats
        if kind != "date":
            column["input_as_timestamp"] = bool(raw.get("input_as_timestamp", False))
    if kind == "array":
        column["column"] = parse_column(raw.get("column"), f"{where}.column")
    if kind == "nested":
        nested = _required(raw, "nested_columns", list)
        column["nested_columns"] = [parse_column(c, f"{where}.nested_columns[{i}]")
                                    for i, c in enumerate(nested)]
    return column


def _insertable(table: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for c in table["columns"]
            if (c.get("default_expression") or {}).get("default_type") != "MATERIALIZED"]


# the catalog --------------------------------------------------------------------------------
class _CollectorPause:
    """Holds off the cyclic garbage collector while an ingestion call builds its ~100k
    short-lived objects (a list per CSV row, tuples per column; no cycles among them):
    its passes over them cost a quarter of parsing a 10k-row batch. Counted, since the
    server's threads may serve requests at once: it runs again when the last one ends
    (unless it was off before the first)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 0
        self._was_enabled = False

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._holders == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0 and self._was_enabled:
                    gc.enable()


collector_paused = _CollectorPause()


def _now_ms() -> int:
    return int(time.time() * 1000)


def stored_rows(line: dict[str, Any]) -> Iterable[Sequence[Any]]:
    """The rows of one stored insert line: kept as rows (the batch route) or a column at a
    time (the CSV route, `values`: see `WarehouseCatalog.insert_columns`)."""
    return line["rows"] if "rows" in line else zip(*line["values"], strict=True)


class WarehouseCatalog:
    """Databases and tables: metadata in ``meta.json``, each table's rows in its own file
    (one JSON line per insert: the stored column names and the rows, as coerced; the CSV
    route's as ``values``, column by column)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        with store.lock:
            meta = store.read_meta()
            self._meta: dict[str, Any] = meta if meta is not None else self._fresh()
            for database in self._meta["databases"].values():
                for table in database["tables"].values():
                    store.trim_rows(table["file"], table["rows_bytes"])

    @staticmethod
    def _fresh() -> dict[str, Any]:
        return {"version": _META_VERSION, "databases": {}, "next_file": 1}

    def _save(self) -> None:
        self._store.write_meta(self._meta)

    @property
    def databases(self) -> dict[str, dict[str, Any]]:
        return self._meta["databases"]

    def database(self, name: str) -> dict[str, Any]:
        database = self.databases.get(name)
        if database is None:  # HEAD: a require() in the metadata storage
            raise DIError(500, "internal_error",
                          f"requirement failed: Not found db with name {name} in org "
                          f"{ORGANIZATION_ID}")
        return database

    def table(self, db: str, name: str) -> dict[str, Any]:
        database = self.database(db)
        table = database["tables"].get(name)
        if table is None:
            raise DIError(404, "table_not_found", f"the table {name} was not found in "
                                                   f"{database['display_name']} database")
        return table

    def create_database(self, name: str, *, exist_ok: bool) -> dict[str, Any]:
        with self._store.lock:
            if name in self.databases:
                if exist_ok:
                    return self.databases[name]
                raise DIError(404, "db_existed",
                              "The database already existed for this organization.")
            now = _now_ms()
            self.databases[name] = {"name": name, "display_name": name, "creator_id": "root",
                                    "created_time": now, "updated_time": now, "tables": {}}
            self._save()
            return self.databases[name]

    def create_table(self, db: str, schema: dict[str, Any], *, merge: bool) -> dict[str, Any]:
        """A new table; with `merge`, an existing one gains the columns it lacks."""
        with self._store.lock:
            database = self.database(db)
            name = schema["name"]
            existing = database["tables"].get(name)
            if existing is not None:
                if not merge:
                    raise DIError(400, "bad_request", f"table {name} already exist in db {db}")
                known = {column["name"] for column in existing["columns"]}
                existing["columns"] += [c for c in schema["columns"] if c["name"] not in known]
                self._save()
                return existing
            names = {column["name"] for column in schema["columns"]}
            for key in (*schema["primary_keys"], *schema["order_bys"]):
                if key not in names:
                    raise DIError(500, "db_execute_error",
                                  f"Missing columns: '{key}' while processing query: CREATE "
                                  f"TABLE {db}.{name}")
            table = {**schema, "db_name": db, "file": f"t{self._meta['next_file']}",
                     "row_count": 0, "rows_bytes": 0, "batch_calls": 0, "csv_calls": 0,
                     "truncates": 0}
            self._meta["next_file"] += 1
            database["tables"][name] = table
            self._save()
            return table

    def insert(self, table: dict[str, Any], rows: Sequence[Sequence[Any]], route: str
               ) -> None:
        self._append(table, "rows", rows, len(rows), route)

    def insert_columns(self, table: dict[str, Any], values: Sequence[Sequence[Any]],
                       count: int, route: str) -> None:
        """`insert` of `count` rows given a column at a time (the stored columns' values,
        in order): kept that way, each read transposes them back (`rows`)."""
        self._append(table, "values", values, count, route)

    def _append(self, table: dict[str, Any], key: str, data: Sequence[Any], count: int,
                route: str) -> None:
        """One line of `count` rows (`data` under `key`: "rows" or "values"), and the call
        counted for its route."""
        with self._store.lock:
            if count:
                names = [column["name"] for column in _insertable(table)]
                line = _encode_exact({"columns": names, key: data})
                table["rows_bytes"] = self._store.append_line(table["file"], line)
                table["row_count"] += count
            table[f"{route}_calls"] += 1
            self._save()

    def truncate(self, table: dict[str, Any]) -> None:
        with self._store.lock:
            self._store.truncate_rows(table["file"])
            table["row_count"] = table["rows_bytes"] = 0
            table["truncates"] += 1
            self._save()

    def drop_table(self, db: str, name: str) -> None:
        with self._store.lock:
            table = self.database(db)["tables"].pop(name, None)
            if table is not None:
                self._store.truncate_rows(table["file"])
            self._save()

    def drop_database(self, db: str) -> None:
        with self._store.lock:
            for name in list(self.database(db)["tables"]):
                self.drop_table(db, name)
            del self.databases[db]
            self._save()

    def rows(self, table: dict[str, Any], limit: int | None) -> list[dict[str, Any]]:
        columns = table["columns"]

        def as_objects(batch: dict[str, Any]) -> list[dict[str, Any]]:
            out = []
            for row in stored_rows(batch):
                stored = dict(zip(batch["columns"], row, strict=True))
                out.append({c["name"]: stored[c["name"]] if c["name"] in stored else _zero(c)
                            for c in columns})
            return out

        return self._store.read_rows(table["file"], limit, as_objects)

    def snapshot(self, max_rows: int | None) -> dict[str, Any]:
        with self._store.lock:
            shown: dict[str, Any] = {}
            for db, database in self.databases.items():
                tables = {}
                for name, table in database["tables"].items():
                    tables[name] = {
                        "display_name": table["display_name"],
                        "table_type": table.get("table_type", "default"),
                        "primary_keys": table["primary_keys"],
                        "order_bys": table["order_bys"],
                        "columns": table["columns"],
                        "row_count": table["row_count"],
                        "batch_calls": table["batch_calls"],
                        "csv_calls": table["csv_calls"],
                        "truncates": table["truncates"],
                        "rows": self.rows(table, max_rows),
                    }
                shown[db] = {"display_name": database["display_name"], "tables": tables}
            return {"databases": shown}

    def reset(self) -> None:
        with self._store.lock:
            self._store.wipe()
            self._meta = self._fresh()


def table_schema_json(table: dict[str, Any]) -> dict[str, Any]:
    """A stored table as the API shows it (TableSchema)."""
    return {"name": table["name"], "db_name": table["db_name"],
            "organization_id": ORGANIZATION_ID, "display_name": table["display_name"],
            "columns": table["columns"], "table_type": table.get("table_type", "default"),
            "primary_keys": table["primary_keys"], "partition_by": table["partition_by"],
            "order_bys": table["order_bys"], "expression_columns": [],
            "calculated_columns": []}


def database_json(database: dict[str, Any], *, with_tables: bool) -> dict[str, Any]:
    shown = {k: database[k] for k in ("name", "display_name", "creator_id", "created_time",
                                      "updated_time")}
    shown["organization_id"] = ORGANIZATION_ID
    if with_tables:
        shown["tables"] = [table_schema_json(t) for t in database["tables"].values()]
    return shown


# the Data Lake and its file sync (v1.4.19) ---------------------------------------------------
def _arrow_values(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """A Parquet column as JSON values: dates and instants as text (any year, exact)."""
    if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type) \
            or pa.types.is_time(column.type):
        return column.cast(pa.string()).to_pylist()
    if pa.types.is_decimal(column.type):
        return [None if v is None else str(v) for v in column.to_pylist()]
    return column.to_pylist()


def parquet_rows(path: Path, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """The rows of a Parquet file as objects, batch by batch (never the whole file)."""
    if limit is not None and limit <= 0:
        return
    shown = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
        columns = [_arrow_values(batch.column(i)) for i in range(batch.num_columns)]
        for values in zip(*columns, strict=True):
            yield dict(zip(batch.schema.names, values, strict=True))
            shown += 1
            if limit is not None and shown >= limit:
                return


class DataLake:
    """Lake directories (name -> Parquet file) and the file syncs that fill them, in a
    store of their own (``datainsider/lake``): ``meta.json`` and the kept files."""

    def __init__(self, store: Store) -> None:
        self.store = store
        with store.lock:
            self.meta: dict[str, Any] = store.read_meta() or self._fresh()

    @staticmethod
    def _fresh() -> dict[str, Any]:
        return {"syncs": {}, "history": [], "directories": {}, "next_sync": 1,
                "next_history": 1, "next_file": 1}

    def _save(self) -> None:
        self.store.write_meta(self.meta)

    def start(self, name: str, path: str, sync_type: str) -> int:
        if sync_type not in FILE_SYNC_TYPES:  # SyncType.withName: a NoSuchElementException
            raise DIError(500, "internal_error", f"No value found for '{sync_type}'")
        with self.store.lock:
            sync_id = self.meta["next_sync"]
            self.meta["next_sync"] += 1
            self.meta["syncs"][str(sync_id)] = {
                "org_id": ORGANIZATION_ID, "sync_id": sync_id, "name": name, "path": path,
                "sync_type": sync_type, "sync_status": "Syncing", "start_time": _now_ms(),
                "end_time": 0, "total_files": 0, "num_failed": 0}
            self._save()
            return sync_id

    def _open_sync(self, sync_id: int) -> dict[str, Any]:
        sync = self.meta["syncs"].get(str(sync_id))
        if sync is None:
            raise DIError(400, "bad_request", f"sync info for id {sync_id} not found")
        if sync["end_time"] != 0:
            raise DIError(400, "bad_request", "job is already ended")
        return sync

    def upload(self, sync_id: int, file_name: str, part: Path, size: int) -> None:
        """Verify the sync, keep the file in its directory, record its history row."""
        with self.store.lock:
            sync = self._open_sync(sync_id)
            history = {"org_id": ORGANIZATION_ID, "history_id": self.meta["next_history"],
                       "sync_id": sync_id, "file_name": file_name, "start_time": _now_ms(),
                       "end_time": 0, "sync_status": "Syncing", "message": ""}
            self.meta["next_history"] += 1
            self.meta["history"].append(history)
            sync["total_files"] += 1
            try:
                metadata = pq.ParquetFile(part).metadata
                schema = pq.read_schema(part)
            except (pa.ArrowException, OSError) as exc:
                history.update(end_time=_now_ms(), sync_status="Failed",
                               message=f"not a Parquet file: {exc}")
                sync["num_failed"] += 1
                self._save()
                raise LakeRefusal(4, f"{file_name} is not a Parquet file") from None
            directory = sync["path"] if sync["sync_type"] == "IncrementalSync" \
                else STAGING_ROOT + sync["path"]
            files = self.meta["directories"].setdefault(directory, {})
            if file_name in files:  # the same name again replaces the file
                self.store.file_path(files[file_name]["stored"]).unlink(missing_ok=True)
            stored = f"lake-{self.meta['next_file']}.parquet"
            self.meta["next_file"] += 1
            self.store.keep_file(stored, part)
            files[file_name] = {"stored": stored, "rows": metadata.num_rows, "bytes": size,
                                "sync_id": sync_id,
                                "columns": {f.name: str(f.type) for f in schema}}
            history.update(end_time=_now_ms(), sync_status="Finished")
            self._save()

    def end(self, sync_id: int) -> bool:
        with self.store.lock:
            sync = self._open_sync(sync_id)
            if sync["sync_type"] == "FullSync":  # the staged directory replaces the old one
                directories, path = self.meta["directories"], sync["path"]
                self._remove(TRASH_ROOT + path)
                directories[TRASH_ROOT + path] = directories.pop(path, {})
                if STAGING_ROOT + path not in directories:  # nothing staged: the move fails
                    self._save()
                    raise DIError(500, "internal_error", "move full sync files failed: ")
                directories[path] = directories.pop(STAGING_ROOT + path)
            sync.update(sync_status="Finished", end_time=_now_ms())
            self._save()
            return True

    def _remove(self, directory: str) -> None:
        for file in self.meta["directories"].pop(directory, {}).values():
            self.store.file_path(file["stored"]).unlink(missing_ok=True)

    def page(self, kind: str, offset: int, size: int) -> list[dict[str, Any]]:
        """`select * ... limit size offset from` (no ORDER BY: here, insertion order)."""
        with self.store.lock:
            rows = list(self.meta["syncs"].values()) if kind == "list" else self.meta["history"]
            return [dict(row) for row in rows[max(offset, 0):max(offset, 0) + max(size, 0)]]

    def file_path(self, stored: str) -> Path:
        return self.store.file_path(stored)

    def snapshot(self, max_rows: int | None) -> dict[str, Any]:
        with self.store.lock:
            shown = {}
            for directory, files in sorted(self.meta["directories"].items()):
                rows: list[dict[str, Any]] = []
                for name, file in files.items():
                    left = None if max_rows is None else max_rows - len(rows)
                    rows += [{"_file": name, **row} for row in
                             parquet_rows(self.file_path(file["stored"]), left)]
                shown[directory] = {
                    "files": [{"name": name, **file} for name, file in files.items()],
                    "row_count": sum(file["rows"] for file in files.values()),
                    "rows": rows,
                }
            return {"directories": shown, "syncs": list(self.meta["syncs"].values()),
                    "history_rows": len(self.meta["history"])}

    def reset(self) -> None:
        with self.store.lock:
            self.store.wipe()
            self.meta = self._fresh()


class LakeRefusal(Exception):
    """An answer of the lake server: HTTP 200 with a non-zero `code`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# the API ------------------------------------------------------------------------------------
Handler = Callable[[Request, dict[str, Any], list[str]], Reply]


class _Route(NamedTuple):
    method: str
    pattern: tuple[str, ...]
    """Path segments; `*` matches one."""
    needs_edit: bool
    """Needs the edit permission."""
    handler: Handler
    ingests: frozenset[str] | None = None
    """An ingestion route: the body fields it reads as JSON text, and the collector is held
    off while it runs (`collector_paused`); None for the other routes."""


_decode_fields = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode
RECORDS_AS_TEXT = frozenset({"records"})
"""The batch route's records stay their JSON text (`msgspec.Raw`): `batch_rows_fast` reads
them column by column, and they are decoded value by value only where it cannot decide."""


def _decode_body(body: bytes, as_text: frozenset[str]) -> Any:
    """The JSON body as `_decode_exact` reads it, but for the fields named in `as_text`."""
    if not as_text:
        return decode_plain(body)
    try:
        fields = _decode_fields(body)
    except msgspec.ValidationError:  # JSON, but no object
        return _decode_exact(body)
    return {name: value if name in as_text else _decode_exact(value)
            for name, value in fields.items()}


def decode_plain(body: bytes) -> Any:
    """`_decode_exact(body)`, by orjson where that reads the same: JSON with no number
    that has a fraction or an exponent (orjson makes those floats, not `Decimal`s). JSON
    orjson refuses (integers past 64 bits, lone surrogates, bad JSON) goes to msgspec,
    whose answer, or error, is the route's. orjson reads the text of a CSV body's `data`
    in ~60% of msgspec's time."""
    try:
        parsed = orjson.loads(body)
    except ValueError:  # orjson.JSONDecodeError
        return _decode_exact(body)
    return parsed if not _holds_float(parsed) else _decode_exact(body)


def _holds_float(value: Any) -> bool:
    """Whether a float is anywhere in `value` (walked with a stack: JSON may nest deeper
    than Python's recursion limit)."""
    stack = [value]
    while stack:
        value = stack.pop()
        kind = type(value)
        if kind is float:
            return True
        if kind is dict:
            stack.extend(value.values())
        elif kind is list:
            stack.extend(value)
    return False


def _body_and_key(request: Request, as_text: frozenset[str] = frozenset()
                  ) -> tuple[Any, str | None]:
    """The JSON body (numbers with a fraction as `Decimal`, the fields of `as_text` as
    their text; None if not JSON) and the `api_key` from the query string or, else, the
    body (`getQueryOrBodyParam`)."""
    parsed: Any = None
    if request.body:
        try:
            parsed = _decode_body(request.body, as_text)
        except msgspec.DecodeError:
            parsed = None
    key = request.query.get("api_key")
    if not key and isinstance(parsed, dict) and isinstance(parsed.get("api_key"), str):
        key = parsed["api_key"]
    return parsed, key


class DataInsiderEmulator:
    """The warehouse and file sync routes under ``/datainsider/api`` (key
    :data:`SANDBOX_API_KEY`, also the file sync's one key)."""

    name: ClassVar[str] = "datainsider"
    prefix: ClassVar[str] = "/datainsider/api"

    def __init__(self, store: Store) -> None:
        self.catalog = WarehouseCatalog(store)
        self.lake = DataLake(Store(store.root / "lake"))
        self._lake_routes = Routes()
        self._lake_routes.add("POST", "/ingestion/file/sync/start", self._start_sync)
        self._lake_routes.add("POST", "/ingestion/file/sync/end", self._end_sync)
        self._lake_routes.add("GET", "/ingestion/file/sync/list", self._sync_page)
        self._lake_routes.add("GET", "/ingestion/file/sync/history", self._sync_page)
        self._lake_routes.add("POST", "/lake/file/upload", self._upload)
        self._routes = [
            _Route("GET", ("databases",), False, self._list_databases),
            _Route("POST", ("databases",), True, self._create_database),
            _Route("GET", ("databases", "*"), False, self._get_database),
            _Route("DELETE", ("databases", "*"), True, self._delete_database),
            _Route("POST", ("databases", "*", "tables"), True, self._create_table),
            _Route("GET", ("databases", "*", "tables", "*"), False, self._get_table),
            _Route("DELETE", ("databases", "*", "tables", "*"), True, self._delete_table),
            _Route("POST", ("ingestion", "csv", "schema"), True, self._register_schema),
            _Route("POST", ("ingestion", "batch"), True, self._ingest_batch, RECORDS_AS_TEXT),
            _Route("POST", ("ingestion", "csv"), True, self._ingest_csv, frozenset()),
            _Route("DELETE", ("ingestion", "*", "*"), True, self._truncate),
        ]

    def handle(self, request: Request) -> Reply:
        try:
            if request.path.startswith(("/ingestion/file/sync/", "/lake/")):
                if request.path.startswith("/ingestion/") \
                        and len(request.body) > MAX_REQUEST_BYTES:
                    raise DIError(413, REASONS[413],
                                  f"request body exceeds {MAX_REQUEST_BYTES} bytes")
                return self._lake_routes.dispatch(request)
            if len(request.body) > MAX_REQUEST_BYTES:
                raise DIError(413, REASONS[413],
                              f"request body exceeds {MAX_REQUEST_BYTES} bytes")
            route, params = self._route(request)
            if route.ingests is None:
                return route.handler(request, self._authenticate(request, route.needs_edit),
                                     params)
            with collector_paused():
                body = self._authenticate(request, route.needs_edit, route.ingests)
                return route.handler(request, body, params)
        except _UnknownKey as exc:
            return Reply(404, {"errors": [str(exc)]})
        except DIError as exc:
            return Reply(exc.status, self._envelope(exc.status, exc.reason, exc.message))
        except ApiError as exc:
            return Reply(exc.status, self.error_body(exc.status, exc.message), exc.headers)

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return self._envelope(status, REASONS.get(status, "internal_error"), message)

    @staticmethod
    def _envelope(status: int, reason: str, message: str) -> dict[str, Any]:
        return {"code": status, "reason": reason, "message": message}

    def snapshot(self, max_rows: int | None = None) -> dict[str, Any]:
        return {**self.catalog.snapshot(max_rows), "lake": self.lake.snapshot(max_rows)}

    def reset(self) -> None:
        self.catalog.reset()
        self.lake.reset()

    # file sync (v1.4.19) and the lake's upload --------------------------------------------
    @staticmethod
    def _file_sync_body(request: Request) -> dict[str, Any]:
        """`ApiKeyFilter` (the one server-wide key, before the body is bound), then the
        body as Finatra binds it (JSON content type only)."""
        parsed, key = _body_and_key(request)
        if not key:
            raise DIError(400, "bad_request", "the field `api_key` is missing or empty.")
        if not hmac.compare_digest(key.encode(), SANDBOX_API_KEY.encode()):
            raise DIError(400, "bad_request", "invalid api key")
        if not (request.header("Content-Type") or "").startswith("application/json"):
            return {}
        if not isinstance(parsed, dict):
            raise DIError(400, "invalaid_json_format", "request body is not a JSON object")
        return parsed

    def _start_sync(self, request: Request) -> Reply:
        body = self._file_sync_body(request)
        name, path, _, sync_type = (_required(body, field) for field in
                                    ("name", "path", "api_key", "sync_type"))
        return Reply(200, {"sync_id": self.lake.start(name, path, sync_type)})

    def _end_sync(self, request: Request) -> Reply:
        body = self._file_sync_body(request)
        sync_id = _required(body, "sync_id", int)
        _required(body, "api_key")
        return Reply(200, {"success": self.lake.end(sync_id)})

    def _sync_page(self, request: Request) -> Reply:
        def number(name: str) -> int:  # finagle's getIntParam: missing or bad -> 0
            try:
                return int(request.query.get(name, "0"))
            except ValueError:
                return 0

        kind = request.path.rsplit("/", 1)[-1]
        return Reply(200, self.lake.page(kind, number("from"), number("size")))

    def _upload(self, request: Request) -> Reply:
        try:
            try:
                sync_id = int(request.query.get("sync_id", ""))
            except ValueError:
                raise LakeRefusal(4, "sync_id is required") from None
            form = request.multipart(self.lake.store.root / "incoming")
            part = form.files.get("file")
            if part is None:
                raise LakeRefusal(4, "multipart field 'file' is required")
            name = part.file_name or ""
            if not name or "/" in name or name in (".", ".."):
                raise LakeRefusal(4, f"invalid file name {name!r}")
            try:
                self.lake.upload(sync_id, name, part.path, part.size)
            except DIError as exc:  # Verify over Thrift: unknown or ended sync
                raise LakeRefusal(9 if "not found" in exc.message else 1, exc.message) from None
            finally:
                part.path.unlink(missing_ok=True)
        except LakeRefusal as refusal:
            return Reply(200, {"code": refusal.code, "msg": refusal.message})
        return Reply(200, {"code": 0, "msg": None})

    # routing and auth ---------------------------------------------------------------------
    def _route(self, request: Request) -> tuple[_Route, list[str]]:
        segments = [s for s in request.path.split("/") if s]
        methods = []
        for route in self._routes:
            pattern = route.pattern
            if len(pattern) != len(segments) or not all(
                    p in ("*", s) for p, s in zip(pattern, segments, strict=True)):
                continue
            if route.method == request.method.upper():
                params = [s for p, s in zip(pattern, segments, strict=True) if p == "*"]
                return route, params
            methods.append(route.method)
        if methods:
            raise DIError(405, "bad_request", f"method {request.method} not allowed")
        raise DIError(404, "not_found", f"route {request.path} not found")

    @staticmethod
    def _authenticate(request: Request, needs_edit: bool,
                      as_text: frozenset[str] = frozenset()) -> dict[str, Any]:
        """The key from the query or the JSON body (read whatever the content type); the
        body as the route binds it (only with an application/json content type)."""
        parsed, key = _body_and_key(request, as_text)
        if not key:
            raise DIError(401, "not_authenticated", "the session is expired or invalid.")
        if hmac.compare_digest(key.encode(), SANDBOX_API_KEY.encode()):
            pass
        elif hmac.compare_digest(key.encode(), SANDBOX_READONLY_KEY.encode()):
            if needs_edit:
                raise DIError(403, "insufficient_permission",
                              "You do not have permissions to perform this action!")
        else:
            raise _UnknownKey(f"not found api key: {key}")
        if request.method.upper() in ("GET", "DELETE"):
            return {}
        content_type = request.header("Content-Type") or ""
        if not content_type.startswith("application/json"):
            return {}  # Finatra binds nothing: required fields count as missing
        if parsed is None:
            raise DIError(400, "invalaid_json_format", "request body is not valid JSON")
        if not isinstance(parsed, dict):
            raise DIError(400, "invalaid_json_format", "request body must be a JSON object")
        return parsed

    # schema routes ------------------------------------------------------------------------
    def _list_databases(self, request: Request, body: dict, params: list[str]) -> Reply:
        return Reply(200, [database_json(d, with_tables=False)
                           for d in self.catalog.databases.values()])

    def _create_database(self, request: Request, body: dict, params: list[str]) -> Reply:
        name = _required(body, "name")
        if not _WORD.match(name):
            raise DIError(400, "invalid_param", "name: must match \\w+")
        database = self.catalog.create_database(name, exist_ok=False)
        return Reply(200, database_json(database, with_tables=True))

    def _get_database(self, request: Request, body: dict, params: list[str]) -> Reply:
        return Reply(200, database_json(self.catalog.database(params[0]), with_tables=True))

    def _delete_database(self, request: Request, body: dict, params: list[str]) -> Reply:
        self.catalog.drop_database(params[0])
        return Reply(200, True)

    def _create_table(self, request: Request, body: dict, params: list[str]) -> Reply:
        db = params[0]
        name = _required(body, "tbl_name")
        columns = _required(body, "columns", list)
        if not _WORD.match(name) or not columns:
            raise DIError(400, "invalid_param", "tbl_name or columns: invalid")
        self.catalog.database(db)  # the DDL fails on a missing database
        schema = {"name": name, "display_name": name, "table_type": "default",
                  "columns": [parse_column(c, f"columns[{i}]") for i, c in enumerate(columns)],
                  "primary_keys": list(body.get("primary_keys") or []), "partition_by": [],
                  "order_bys": list(body.get("order_bys") or [])}
        table = self.catalog.create_table(db, schema, merge=False)
        return Reply(200, table_schema_json(table))

    def _get_table(self, request: Request, body: dict, params: list[str]) -> Reply:
        return Reply(200, table_schema_json(self.catalog.table(*params)))

    def _delete_table(self, request: Request, body: dict, params: list[str]) -> Reply:
        self.catalog.drop_table(*params)
        return Reply(200, True)

    def _register_schema(self, request: Request, body: dict, params: list[str]) -> Reply:
        raw = _required(body, "schema", dict)
        for field in ("name", "db_name", "display_name"):
            _required(raw, field)
        _required(raw, "organization_id", int)
        columns = _required(raw, "columns", list)
        parsed = [parse_column(c, f"schema.columns[{i}]") for i, c in enumerate(columns)]
        for column in parsed:
            column["name"] = normalize_name(column["name"])
        table_type = raw.get("table_type") or "default"
        schema = {
            "name": normalize_name(raw["name"]), "display_name": raw["display_name"],
            "table_type": table_type, "columns": parsed,
            "primary_keys": [normalize_name(k) for k in raw.get("primary_keys") or []],
            "partition_by": list(raw.get("partition_by") or []),
            "order_bys": [normalize_name(k) for k in raw.get("order_bys") or []],
        }
        db = normalize_name(raw["db_name"])
        self.catalog.create_database(db, exist_ok=True)
        self.catalog.create_table(db, schema, merge=True)
        # the answer is the normalised request schema, not a re-read of the stored table
        return Reply(200, table_schema_json({**schema, "db_name": db}))

    # ingestion routes ---------------------------------------------------------------------
    def _ingest_batch(self, request: Request, body: dict, params: list[str]) -> Reply:
        db, name = _required(body, "db_name"), _required(body, "tbl_name")
        if isinstance(body.get("records"), msgspec.Raw):  # left as text (RECORDS_AS_TEXT)
            answer = self._ingest_batch_fast(db, name, body["records"])
            if answer is not None:
                return answer
            body["records"] = _decode_exact(body["records"])
        records = _required(body, "records", list)
        table = self.catalog.table(db, name)
        columns = _insertable(table)
        if not all(isinstance(record, list) for record in records):
            raise DIError(400, "invalaid_json_format", "records: each record is an array")
        rows, invalid, invalid_fields, skipped = batch_rows(columns, records)
        return self._inserted_batch(table, rows, len(records), invalid, invalid_fields,
                                    skipped)

    def _ingest_batch_fast(self, db: str, name: str, text: msgspec.Raw) -> Reply | None:
        """`batch_rows_fast` on the records' text; None: the exact way decides (the same
        answer, errors included)."""
        try:
            records = _decode_records(text)
        except msgspec.ValidationError:  # not a list of lists
            return None
        table = self.catalog.table(db, name)
        rows = batch_rows_fast(_insertable(table), records)
        return None if rows is None else self._inserted_batch(table, rows, len(rows), 0, 0, 0)

    def _inserted_batch(self, table: dict[str, Any], rows: list[list[Any]], total: int,
                        invalid: int, invalid_fields: int, skipped: int) -> Reply:
        self.catalog.insert(table, rows, "batch")
        return Reply(200, {"total_records": total, "total_invalid_records": invalid,
                           "total_invalid_fields": invalid_fields,
                           "total_skipped_records": skipped,
                           "total_inserted_records": len(rows), "total_failed_records": 0})

    def _ingest_csv(self, request: Request, body: dict, params: list[str]) -> Reply:
        db, name = _required(body, "db_name"), _required(body, "tbl_name")
        data = _required(body, "data")
        setting = body.get("csv_setting") or {}
        delimiter = setting.get("delimiter", ",") if isinstance(setting, dict) else ","
        if not isinstance(delimiter, str) or len(delimiter) != 1:
            raise DIError(400, "bad_request", "unable to parse the file with current config, "
                                              "the delimiter must be one character")
        table = self.catalog.table(db, name)
        columns = _insertable(table)
        try:  # the header is not skipped, whatever include_header says
            parsed = list(csv.reader(io.StringIO(data), delimiter=delimiter, quotechar='"',
                                     strict=True))
        except csv.Error:
            raise DIError(400, "bad_request", "unable to parse the file with current config, "
                                              "please try again with another config") from None
        width = len(columns)
        if parsed and min(map(len, parsed)) < width:  # missing trailing cells: NULL
            parsed = [cells if len(cells) >= width else [*cells, *[None] * (width - len(cells))]
                      for cells in parsed]
        # column by column: each column converted at once (`csv_column_json`), not per
        # cell, and stored that way (no transposition back to rows; a column of `Raw`
        # JSON holds no null)
        converted = [csv_column_json(column, cells)
                     for column, cells in zip(columns, zip(*parsed, strict=False),
                                              strict=False)]
        count = len(parsed) if width else 0
        if width and all(type(values) is list and None in values for values in converted):
            kept = [i for i, row in enumerate(zip(*converted, strict=True))
                    if row.count(None) != width]  # rows of nulls only are dropped
            if len(kept) < count:
                converted = [[values[i] for i in kept] for values in converted]
                count = len(kept)
        self.catalog.insert_columns(table, converted, count, "csv")
        return Reply(200, {"succeed": True, "row_inserted": count})

    def _truncate(self, request: Request, body: dict, params: list[str]) -> Reply:
        database = self.catalog.databases.get(params[0])
        table = database["tables"].get(params[1]) if database else None
        if table is not None:
            self.catalog.truncate(table)
        return Reply(200, True)
