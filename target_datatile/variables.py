"""DataTile's rules for SPSS variables: names, labels, types, and the values each type takes.

The rules come from DataTile's best-practice article (``/work/shared/apis/datatile.md``):

- a variable name has Latin letters, digits and ``# _ . @`` only, starts with a letter, is
  at most 64 bytes, and is no SPSS reserved word; names stay unique (SPSS compares them
  case-insensitively), also after they are cut to 64 bytes;
- the original field name is kept as the variable label (DataTile cuts labels at 1024
  characters; an SPSS file holds 256 bytes of label, so the shorter of both is kept).

Types (neutral type from ``target_core.columns`` -> SPSS variable):

| neutral        | SPSS                         | value written                          |
|----------------|------------------------------|----------------------------------------|
| integer        | numeric, ``F20.0``, scale    | the number (a double: exact to 2**53)  |
| number         | numeric, ``F8.2``, scale     | the number (a double)                  |
| boolean        | numeric, ``F1.0``, nominal, value labels 0 ``false`` / 1 ``true`` | 0 / 1 |
| date           | numeric, ``DATE11``          | the date                               |
| datetime       | numeric, ``DATETIME23.3``    | the instant in UTC (seconds in a double) |
| json           | string                       | compact JSON text of the object/array  |
| text, time     | string                       | the text (other JSON values as JSON text) |

A null is system-missing in a numeric variable and an empty string in a string variable
(SPSS has no missing string). A string variable is as wide as its longest value in UTF-8
bytes, measured while spooling (the core's ``BatchSpool``).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from target_core import conversions
from target_core.columns import Column, ColumnType, columns_from_schema, unique_names

MAX_NAME_BYTES = 64
MAX_LABEL_CHARS = 1024  # DataTile's own cut
MAX_LABEL_BYTES = 256  # what a .sav variable label holds
MAX_STRING_BYTES = 32_767  # SPSS's widest string variable
RESERVED_WORDS = frozenset(
    {"ALL", "AND", "BY", "EQ", "GE", "GT", "LE", "LT", "NE", "NOT", "OR", "TO", "WITH"}
)
BOOLEAN_LABELS = ((0, "false"), (1, "true"))

_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9#_.@]+")
_VALID_NAME = re.compile(r"[A-Za-z][A-Za-z0-9#_.@]{0,63}\Z")


# names -------------------------------------------------------------------------------------
def variable_name(field: str) -> str:
    """One field name as a valid SPSS variable name (not yet made unique).

    Accents are folded (``café`` -> ``cafe``), every run of other characters becomes ``_``,
    a name that does not start with a letter gets a ``v`` in front (``2nd`` -> ``v2nd``), a
    trailing period is dropped (SPSS warns about it), a reserved word gets a ``_`` after it,
    and the result is cut to 64 bytes.
    """
    folded = unicodedata.normalize("NFKD", field).encode("ascii", "ignore").decode()
    name = _NOT_ALLOWED.sub("_", folded).strip("_.")
    if not name[:1].isalpha():
        name = f"v{name}" if name else "v"
    name = name[:MAX_NAME_BYTES].rstrip(".")
    if name.upper() in RESERVED_WORDS:
        name = f"{name}_"
    return name


def is_valid_name(name: str) -> bool:
    """What DataTile and SPSS accept: the checks :func:`variable_name` guarantees."""
    return (
        _VALID_NAME.match(name) is not None
        and not name.endswith(".")
        and name.upper() not in RESERVED_WORDS
    )


def unique_variable_names(fields: Iterable[str]) -> list[str]:
    """Valid names for the fields, in order, unique case-insensitively.

    A name already taken gets ``_2``, ``_3``... and is cut first so that the suffix still
    fits in 64 bytes (the core's rule, ``target_core.columns.unique_names``, with DataTile's
    limit). The first field keeps the plain name, so the result depends only on the fields
    and their order (the same schema always gives the same names).
    """
    return unique_names(fields, variable_name, MAX_NAME_BYTES)


def datatile_columns(schema: dict[str, Any], key_properties: Iterable[str] = ()) -> list[Column]:
    """The stream's columns (``target_core.columns``) named by DataTile's rules."""
    return columns_from_schema(schema, key_properties, variable_name, MAX_NAME_BYTES)


def variable_label(field: str) -> str:
    """The original field name, cut at 1024 characters and then to 256 UTF-8 bytes
    (never inside a character)."""
    text = field[:MAX_LABEL_CHARS]
    encoded = text.encode()
    if len(encoded) <= MAX_LABEL_BYTES:
        return text
    return encoded[:MAX_LABEL_BYTES].decode("utf-8", "ignore")


# types -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpssVariable:
    """How one column is declared in the .sav header."""

    name: str
    label: str
    kind: str
    """``numeric``, ``string``, ``date`` or ``datetime`` (the last two are numeric in SPSS)."""
    format: str | None
    measure: str
    value_labels: tuple[tuple[int, str], ...] = ()

    @property
    def is_string(self) -> bool:
        return self.kind == "string"


_NUMERIC = {
    ColumnType.INTEGER: ("numeric", "F20.0", "scale", ()),
    ColumnType.NUMBER: ("numeric", None, "scale", ()),
    ColumnType.BOOLEAN: ("numeric", "F1.0", "nominal", BOOLEAN_LABELS),
    ColumnType.DATE: ("date", "DATE11", "scale", ()),
    ColumnType.DATETIME: ("datetime", "DATETIME23.3", "scale", ()),
}


def spss_variable(column: Column) -> SpssVariable:
    """The SPSS declaration of one column (its name is already sanitised and unique)."""
    kind, fmt, measure, labels = _NUMERIC.get(column.type, ("string", None, "nominal", ()))
    return SpssVariable(column.name, variable_label(column.source), kind, fmt, measure, labels)


def spss_variables(columns: Sequence[Column]) -> list[SpssVariable]:
    return [spss_variable(column) for column in columns]


def is_string_column(column: Column) -> bool:
    return column.type not in _NUMERIC


# values ------------------------------------------------------------------------------------
Converter = Callable[[Any], Any]
Raw = conversions.Raw
_UTC = dt.UTC
_LAST_INSTANT = "9999-12-31T23:59:59.999000"
_SHORT_TEXT = MAX_STRING_BYTES // 4
"""Characters a text may have without being measured: each is at most 4 UTF-8 bytes."""
_fromisoformat = dt.datetime.fromisoformat
_isinf = math.isinf
_dumps = conversions.dumps
_decode_float = msgspec.json.Decoder(float).decode
_EXACT_INT = 2**53
"""Integers up to this size are exact as doubles (and Arrow converts them without a word)."""


_TOO_LARGE = "is too large for an SPSS numeric variable (a double)"


def spss_number(value: Any) -> float | int | None:
    """A double (``conversions.number_float``: the reader's exact numbers, Raw, become
    floats here and only here): every SPSS numeric is a double, so an integer above 2**53
    loses its last digits, and a number beyond a double's range is refused.

    The reader's two kinds of number (Raw text, int) are converted inline (an integer a
    double holds exactly is left for Arrow to convert); anything else (None, a stream
    map's float or Decimal, a wrong type) goes through ``number_float``."""
    kind = type(value)
    if kind is Raw:
        try:
            number = _decode_float(value)  # the JSON text, parsed in C (4x float(value))
        except msgspec.ValidationError:  # beyond a double: "Number out of range"
            raise ValueError(_TOO_LARGE) from None
    elif kind is int:
        if -_EXACT_INT <= value <= _EXACT_INT:
            return value  # Arrow makes it the same double in C
        try:
            number = float(value)
        except OverflowError:
            raise ValueError(_TOO_LARGE) from None
    elif value is None:
        return None
    else:
        try:
            number = conversions.number_float(value)
        except OverflowError:
            raise ValueError(_TOO_LARGE) from None
        if number is None:
            return None
    if _isinf(number):
        raise ValueError(_TOO_LARGE)
    return number


def spss_boolean(value: Any) -> bool | None:
    """0 / 1, labelled ``false`` / ``true`` in the file."""
    if value is None:
        return None
    if type(value) is not bool:
        raise ValueError("must be a boolean")
    return value  # Arrow writes it as 0 / 1 to the numeric variable


def exact_spss_datetime(value: Any) -> str | None:
    """``YYYY-MM-DDTHH:MM:SS.ffffff`` in UTC (naive values are taken as UTC), for any
    date-time :func:`target_core.conversions.parse_datetime` reads (and a stream map's
    datetime objects); what :func:`spss_datetime` does for the shapes it does not slice.

    The writer reads this form in one vectorised cast. SPSS keeps seconds in a double, so
    the last microsecond digits round (about 2 us near today, 30 us near year 9999); an
    instant in the last millisecond of year 9999 is written as its first microsecond,
    because rounding would carry it into year 10000, which no reader accepts.
    """
    if value is None:
        return None
    parsed = conversions.parse_datetime(value)
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(_UTC).replace(tzinfo=None)
        except OverflowError:
            raise ValueError("is out of the representable date range (years 1-9999)") from None
    text = parsed.isoformat(timespec="microseconds")
    return _LAST_INSTANT if text > _LAST_INSTANT else text


def spss_datetime(value: Any) -> str | None:
    """A date-time as UTC text without an offset (see :func:`exact_spss_datetime`).

    The text is checked by ``datetime.fromisoformat`` (it raises for a month 13 or a 30
    February, as the exact path does). A naive one is returned as it is, a UTC one without
    its ``Z`` / ``+00:00``: Arrow reads that text in C, to the same microsecond as the
    exact path's text (``spss.temporal_array``; a shape Arrow does not read, such as a
    week date, is converted there by the exact path). Any other offset, and year 9999 (its
    last millisecond is clamped), take the exact path here.
    """
    if value is None:
        return None
    try:
        parsed = _fromisoformat(value)
    except (TypeError, ValueError):
        return exact_spss_datetime(value)
    if value < "9999":
        zone = parsed.tzinfo
        if zone is None:
            return value
        if zone is _UTC:
            if value[-6:] == "+00:00":
                return value[:-6]
            if value[-1] == "Z":
                return value[:-1]
    return exact_spss_datetime(parsed)


def _fits(text: str | None) -> str | None:
    """The text as an SPSS string holds it: NUL characters dropped (ReadStat writes C
    strings: a NUL would silently cut the value there), at most 32,767 UTF-8 bytes."""
    if text is None:
        return None
    if "\x00" in text:
        text = text.replace("\x00", "")
    # a character is at most 4 UTF-8 bytes: only long texts need encoding to be measured
    if len(text) > _SHORT_TEXT:
        size = len(text.encode())
        if size > MAX_STRING_BYTES:
            raise ValueError(_too_long(size))
    return text


def _too_long(size: int) -> str:
    return (f"is {size} bytes of text; an SPSS string variable holds at most "
            f"{MAX_STRING_BYTES} bytes")


def spss_text(value: Any) -> str | None:
    """Text (other JSON values as JSON text), refused over SPSS's 32,767 bytes: the row
    encoder turns the refusal into an error naming the stream, line and field. A short
    string without NUL (the common case) is returned as it is, unmeasured."""
    if type(value) is str and len(value) <= _SHORT_TEXT and "\x00" not in value:
        return value
    return _fits(conversions.text(value))


def spss_json(value: Any) -> bytes | None:
    """Objects and arrays as compact JSON text, within SPSS's 32,767 bytes. The UTF-8
    bytes as msgspec makes them (Arrow takes them for a string column as they are); JSON
    text holds no NUL (it is escaped as ``\\u0000``)."""
    if value is None:
        return None
    data = _dumps(value)
    if len(data) > MAX_STRING_BYTES:
        raise ValueError(_too_long(len(data)))
    return data


_CONVERTERS: dict[ColumnType, Converter] = {
    ColumnType.INTEGER: spss_number,
    ColumnType.NUMBER: spss_number,
    ColumnType.BOOLEAN: spss_boolean,
    ColumnType.DATE: conversions.date_text,
    ColumnType.DATETIME: spss_datetime,
    ColumnType.JSON: spss_json,
    ColumnType.TEXT: spss_text,
    ColumnType.TIME: spss_text,
}


def converter_for(column: Column) -> Converter:
    """Record value -> the value :func:`~target_datatile.spss.spss_record_batch` spools."""
    return _CONVERTERS[column.type]
