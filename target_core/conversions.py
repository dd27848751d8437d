"""Record values -> the plain JSON values platforms accept, one function per neutral type.

Each function takes the decoded JSON value (or None) and returns a str, number or None.
They raise `ValueError` for a value that cannot be expressed; the row builder turns that
into an error naming the stream, line and field.

Date-times stay strings: the common `...Z` / `...+00:00` shapes are checked by
`datetime.fromisoformat` (the same rule the SDK applies) and then cut with string slicing;
only other offsets go through a `datetime` conversion to UTC.
"""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import msgspec
import orjson

_UTC = dt.timezone.utc
_parse_datetime = dt.datetime.fromisoformat


def _unknown(value: Any) -> Any:
    raise TypeError(f"cannot express a {type(value).__name__} as JSON")


# msgspec, not orjson, for values that stay in memory: orjson's bytes keep a ~4 KiB
# allocation each (measured: 50k rows of 140 bytes held 211 MB with orjson, 24 MB here).
dumps = msgspec.json.Encoder(enc_hook=_unknown, decimal_format="number").encode
"""Compact JSON bytes; Decimal, date, time and datetime included."""


def _plain(value: Any) -> Any:
    """What orjson leaves to its caller (values a stream map may produce)."""
    if isinstance(value, decimal.Decimal):
        return float(value)
    return _unknown(value)


def json_text(value: Any) -> str | None:
    """Objects and arrays (or anything) as compact JSON text.

    orjson here: its bytes live only until `.decode()`, and it is twice as fast as
    msgspec on small objects."""
    if value is None:
        return None
    return orjson.dumps(value, default=_plain).decode()


def text(value: Any) -> str | None:
    """Strings unchanged; any other value as its JSON text (`true`, `12.5`, `{"a":1}`)."""
    if value is None or type(value) is str:
        return value
    return json_text(value)


def _parse(value: Any) -> dt.datetime:
    if isinstance(value, dt.datetime):  # a stream map may hand over datetime objects
        return value
    if type(value) is not str:
        raise ValueError("must be a date-time string")
    try:
        return _parse_datetime(value[:-1] + "+00:00" if value[-1:] in "Zz" else value)
    except ValueError:
        raise ValueError("is not a valid ISO 8601 date-time") from None


def utc_datetime_text(value: Any) -> str | None:
    """`YYYY-MM-DD HH:MM:SS` in UTC (naive values are taken as UTC); fractions dropped."""
    if value is None:
        return None
    try:  # the common case in one call: a UTC or naive ISO string (Python 3.11+ reads Z)
        parsed = _parse_datetime(value)
    except (TypeError, ValueError):
        parsed = _parse(value)
    if parsed.tzinfo is not None and parsed.utcoffset():
        try:
            parsed = parsed.astimezone(_UTC)
        except OverflowError:
            raise ValueError("is out of the representable date range (years 1-9999)") from None
    elif type(value) is str and len(value) >= 19 and value[13:14] == value[16:17] == ":" \
            and value[4:5] == value[7:8] == "-":
        return f"{value[:10]} {value[11:19]}"  # already UTC and YYYY-MM-DDTHH:MM:SS: slice
    # isoformat, not strftime: %Y does not pad years below 1000 ("201-12-31")
    return parsed.replace(tzinfo=None).isoformat(" ", "seconds")


def date_text(value: Any) -> str | None:
    """`YYYY-MM-DD`; a full date-time keeps its (UTC) date."""
    if value is None:
        return None
    if type(value) is str and len(value) == 10:
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError:
            raise ValueError("is not a valid ISO 8601 date") from None
    return utc_datetime_text(value)[:10]  # type: ignore[index]


def boolean_text(value: Any) -> str | None:
    """`true` / `false`, for platforms without a boolean type."""
    if value is None:
        return None
    if type(value) is not bool:
        raise ValueError("must be a boolean")
    return "true" if value else "false"


def number(value: Any) -> Any:
    """Numbers unchanged (booleans are not numbers, as in JSON Schema)."""
    if value is None or type(value) in (int, float):
        return value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("must be a number")
    return value
