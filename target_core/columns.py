"""A stream's JSON Schema -> neutral columns that each platform maps to its own types.

One rule set for all four targets, so that the same tap lands the same way everywhere:

| JSON Schema property                          | neutral type |
|-----------------------------------------------|--------------|
| integer                                       | integer      |
| number, or integer together with number       | number       |
| boolean                                       | boolean      |
| string with format date-time / date / time    | datetime / date / time |
| string (any other format)                     | text         |
| anyOf string branches with different formats, or one without | text |
| object, array                                 | json (JSON text) |
| several types (e.g. string or integer), or none | text (non-strings as JSON text) |

`null` in `type` (or a `{"type": "null"}` branch of `anyOf`/`oneOf`) makes a column
nullable and never changes its type. Names are made safe by a platform-supplied rule;
two properties that become the same name get `_2`, `_3`... so no column is lost.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class ColumnType(enum.StrEnum):
    TEXT = "text"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    TIME = "time"
    JSON = "json"


@dataclass(frozen=True)
class Column:
    """One destination column, in the order of the stream's schema properties."""

    name: str
    """The name the platform gets (sanitised, unique within the stream)."""
    source: str
    """The record key it comes from (the schema property name)."""
    type: ColumnType
    nullable: bool
    is_key: bool
    json_types: tuple[str, ...] = ()
    """The non-null JSON types the schema allows (empty: any)."""


_FORMATS = {"date-time": ColumnType.DATETIME, "date": ColumnType.DATE, "time": ColumnType.TIME}
_SIMPLE = {
    "integer": ColumnType.INTEGER,
    "number": ColumnType.NUMBER,
    "boolean": ColumnType.BOOLEAN,
    "object": ColumnType.JSON,
    "array": ColumnType.JSON,
}


def _branches(prop: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The property itself, or its anyOf / oneOf alternatives."""
    for key in ("anyOf", "oneOf"):
        if isinstance(prop.get(key), list):
            return [b for b in prop[key] if isinstance(b, Mapping)]
    return [prop]


def column_type(prop: Mapping[str, Any]) -> tuple[ColumnType, bool, tuple[str, ...]]:
    """(neutral type, nullable, non-null JSON types) of one schema property."""
    types: list[str] = []
    formats: set[str | None] = set()  # per string branch; None: a plain string
    for branch in _branches(prop):
        declared = branch.get("type")
        names = [declared] if isinstance(declared, str) else list(declared or [])
        if not names:  # no type: an object if it has properties, else any value at all
            names = ["object"] if "properties" in branch else ["any"]
        types += names
        if "string" in names:
            fmt = branch.get("format")
            formats.add(fmt if fmt in _FORMATS else None)
    nullable = "null" in types or "any" in types
    kinds = tuple(dict.fromkeys(t for t in types if t != "null"))
    if kinds == ("string",):
        # anyOf [date-time, plain string]: a plain string is valid, so the column is text
        only = formats.pop() if len(formats) == 1 else None
        kind = _FORMATS[only] if only else ColumnType.TEXT
    elif sorted(kinds) == ["integer", "number"]:
        kind = ColumnType.NUMBER
    elif len(kinds) == 1 and kinds[0] in _SIMPLE:
        kind = _SIMPLE[kinds[0]]
    else:
        kind = ColumnType.TEXT
    return kind, nullable, kinds


def numbered(base: str, n: int, max_bytes: int | None = None) -> str:
    """`base` with the suffix `_n` (n > 1), cut first so the result fits in `max_bytes`
    UTF-8 bytes (never inside a character)."""
    if n == 1:
        return base
    suffix = f"_{n}"
    if max_bytes is not None:
        room = max_bytes - len(suffix)
        base = base.encode()[:room].decode("utf-8", "ignore")
    return base + suffix


def unique_names(
    names: Iterable[str], sanitise: Callable[[str], str], max_bytes: int | None = None
) -> list[str]:
    """Sanitised names with collisions resolved by a numeric suffix (case-insensitively).

    With `max_bytes` (a platform's name limit), a suffixed name is cut before its suffix so
    it still fits: `sanitise` must already return names within the limit."""
    used: set[str] = set()
    result = []
    for raw in names:
        base = sanitise(raw) or "column"
        name, n = base, 1
        while name.lower() in used:
            n += 1
            name = numbered(base, n, max_bytes)
        used.add(name.lower())
        result.append(name)
    return result


_UNSAFE = re.compile(r"[^0-9A-Za-z_]+")


def identifier(name: str) -> str:
    """A conservative identifier: ASCII letters, digits and `_`, not starting with a digit.

    Accents are folded first (`café` -> `cafe`), so names stay readable.
    """
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    safe = _UNSAFE.sub("_", folded).strip("_")
    return f"_{safe}" if safe[:1].isdigit() else safe


def columns_from_schema(
    schema: Mapping[str, Any],
    key_properties: Iterable[str] = (),
    sanitise: Callable[[str], str] = identifier,
    max_name_bytes: int | None = None,
) -> list[Column]:
    """The stream's columns, in schema order (names unique within `max_name_bytes`)."""
    properties: Mapping[str, Any] = schema.get("properties") or {}
    keys = set(key_properties)
    names = unique_names(properties, sanitise, max_name_bytes)
    columns = []
    for name, (source, prop) in zip(names, properties.items(), strict=False):
        kind, nullable, kinds = column_type(prop if isinstance(prop, Mapping) else {})
        columns.append(Column(name, source, kind, nullable, source in keys, kinds))
    return columns
