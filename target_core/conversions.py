"""Record values -> the plain JSON values platforms accept, one function per neutral type.

Each function takes the decoded JSON value (or None) and returns a str, number or None.
They raise `ValueError` for a value that cannot be expressed; the row builder turns that
into an error naming the stream, line and field.

Numbers keep the tap's digits. The reader decodes every JSON number with a fraction or an
exponent as `msgspec.Raw`: the number's own text, written back byte for byte by the row
encoder (`123456789012345678.123456` stays that, where a float would give
`1.2345678901234568e17`). A number written with an exponent is rewritten to positional
form once, as it is read (`1e-7` -> `0.0000001`). Integers are Python ints: exact at any size.

Date-times stay strings: the common `...Z` / `...+00:00` shapes are checked by
`datetime.fromisoformat` (Python 3.11 rules, the same the SDK applies) and then cut with
string slicing; only other offsets go through a `datetime` conversion to UTC. Years are
always four digits (`0999-...`); a `date` given as a date-time keeps its local calendar date.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import msgspec

_UTC = dt.UTC
_parse_datetime = dt.datetime.fromisoformat
Raw = msgspec.Raw


def exact_number(text: str) -> msgspec.Raw:
    """The reader's `float_hook`: a JSON number with a fraction or exponent, as its text.

    Only a number with an exponent is rewritten (to positional form, exactly, through
    `Decimal`); everything else is kept byte for byte."""
    if "e" in text or "E" in text:
        return Raw(positional(decimal.Decimal(text)))
    return Raw(text)


def positional(value: decimal.Decimal) -> str:
    """A Decimal's digits without an exponent (`1E-7` -> `0.0000001`, `2.5E+3` -> `2500`)."""
    return format(value, "f")


def _map_numbers(value: Any, kinds: tuple[type, ...], convert: Any) -> Any:
    """`value` with every number of one of `kinds` converted, in nested values too."""
    kind = type(value)
    if kind in kinds:
        return convert(value)
    if kind is dict:
        return {k: _map_numbers(v, kinds, convert) for k, v in value.items()}
    if kind is list:
        return [_map_numbers(v, kinds, convert) for v in value]
    return value


def _raw_decimal(value: msgspec.Raw) -> decimal.Decimal:
    return decimal.Decimal(bytes(value).decode())


def _exact_raw(value: decimal.Decimal | float) -> msgspec.Raw:
    exact = value if type(value) is decimal.Decimal else decimal.Decimal(repr(value))
    if not exact.is_finite():
        raise ValueError("must be a finite number")
    return Raw(positional(exact))


def raw_to_decimal(value: Any) -> Any:
    """Raw numbers -> `Decimal`, in nested values too: what the SDK's own code expects (its
    readers make every non-integer number a Decimal). For the stream-map path only."""
    return _map_numbers(value, (Raw,), _raw_decimal)


def decimal_to_raw(value: Any) -> Any:
    """`Decimal` (and float) numbers -> Raw positional text, nested too: the inverse step
    after the SDK's path, so mapped records keep their digits without exponents."""
    return _map_numbers(value, (decimal.Decimal, float), _exact_raw)


def _unknown(value: Any) -> Any:
    raise TypeError(f"cannot express a {type(value).__name__} as JSON")


# msgspec, not orjson, for values that stay in memory: orjson's bytes keep a ~4 KiB
# allocation each (measured: 50k rows of 140 bytes held 211 MB with orjson, 24 MB here).
dumps = msgspec.json.Encoder(enc_hook=_unknown, decimal_format="number").encode
"""Compact JSON bytes; Decimal, date, time and datetime included."""


def json_text(value: Any) -> str | None:
    """Objects and arrays (or anything) as compact JSON text, numbers exactly as sent.

    msgspec writes Raw numbers and integers of any size as they are; on records with exact
    numbers it is twice as fast as orjson with a `default` hook for them (measured: 0.47 vs
    1.06 us for a small address object). Its bytes live only until `.decode()`."""
    if value is None:
        return None
    return dumps(value).decode()


def text(value: Any) -> str | None:
    """Strings unchanged; any other value as its JSON text (`true`, `12.5`, `{"a":1}`)."""
    if value is None or type(value) is str:
        return value
    return json_text(value)


def parse_datetime(value: Any) -> dt.datetime:
    """An ISO 8601 date-time string (or a datetime a stream map made) as a `datetime`;
    `ValueError` naming the problem, never the value."""
    if isinstance(value, dt.datetime):  # a stream map may hand over datetime objects
        return value
    if type(value) is not str:
        raise ValueError("must be a date-time string")
    try:
        return _parse_datetime(value[:-1] + "+00:00" if value[-1:] in "Zz" else value)
    except ValueError:
        raise ValueError("is not a valid ISO 8601 date-time") from None


def _text(parsed: dt.datetime) -> str:
    """`YYYY-MM-DD HH:MM:SS`, the year always with four digits (strftime gives `999`)."""
    return (f"{parsed.year:04d}-{parsed.month:02d}-{parsed.day:02d} "
            f"{parsed.hour:02d}:{parsed.minute:02d}:{parsed.second:02d}")


def utc_datetime_text(value: Any) -> str | None:
    """`YYYY-MM-DD HH:MM:SS` in UTC (naive values are taken as UTC); fractions dropped."""
    if value is None:
        return None
    try:  # the common case in one call: a UTC or naive ISO string (Python 3.11+ reads Z)
        parsed = _parse_datetime(value)
    except (TypeError, ValueError):
        parsed = parse_datetime(value)
    if parsed.utcoffset():
        try:
            return _text(parsed.astimezone(_UTC))
        except OverflowError:
            raise ValueError("is out of the representable date range (years 1-9999)") from None
    if type(value) is str and value[13:14] == value[16:17] == ":" \
            and value[4:5] == value[7:8] == "-":
        return f"{value[:10]} {value[11:19]}"  # already UTC and YYYY-MM-DDTHH:MM:SS: slice
    return _text(parsed)


def date_text(value: Any) -> str | None:
    """`YYYY-MM-DD`; a full date-time keeps its local calendar date (no shift to UTC: a
    date with an offset names the day where it was written)."""
    if value is None:
        return None
    if type(value) is str and len(value) == 10:
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError:
            raise ValueError("is not a valid ISO 8601 date") from None
    try:
        parsed = _parse_datetime(value)
    except (TypeError, ValueError):
        parsed = parse_datetime(value)
    return f"{parsed.year:04d}-{parsed.month:02d}-{parsed.day:02d}"


def boolean_text(value: Any) -> str | None:
    """`true` / `false`, for platforms without a boolean type."""
    if value is None:
        return None
    if type(value) is not bool:
        raise ValueError("must be a boolean")
    return "true" if value else "false"


def number(value: Any) -> Any:
    """Numbers with the tap's digits (booleans are not numbers, as in JSON Schema)."""
    kind = type(value)
    if value is None or kind is int or kind is Raw:
        return value
    if kind is float or kind is decimal.Decimal:  # from a stream map: positional text
        return decimal_to_raw(value)
    if isinstance(value, bool) or not isinstance(value, (int, float, decimal.Decimal)):
        raise ValueError("must be a number")
    return decimal_to_raw(value)


def number_text(value: Any) -> str | None:
    """A number as its exact text, for text formats (CSV): the tap's digits, positional."""
    value = number(value)
    if value is None:
        return None
    return bytes(value).decode() if type(value) is Raw else str(value)


def number_float(value: Any) -> float | None:
    """A number as a double, for formats that store numbers as doubles (Parquet `double`,
    SPSS numeric): the platform's own precision, nothing finer. Beyond a double's range:
    an infinity, for the format to refuse."""
    value = number(value)
    if value is None:
        return None
    if type(value) is not Raw:
        return float(value)
    try:
        return _decode_float(value)  # the JSON text, parsed in C (4x `float(bytes(...))`)
    except msgspec.ValidationError:  # "Number out of range"
        return float(bytes(value))


_decode_float = msgspec.json.Decoder(float).decode
