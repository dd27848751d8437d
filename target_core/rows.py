"""A record -> one row of JSON values in column order, as a generated function per stream.

The row builder is the innermost loop of every target: it runs once per record. Building
its source from the column list (`[g('id'), c1(g('name')), ...]`) removes the per-column
loop, lookups and branches, and encoding the row to JSON bytes right away means a batch is
a list of small byte strings, not thousands of live dicts (cheaper for the garbage
collector, and a batch can be split at any row when a platform says 413).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from target_core.conversions import dumps

Converter = Callable[[Any], Any]


class RowError(ValueError):
    """A value that its column's converter refused."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field '{field}' {problem}")
        self.field = field


def compile_row_encoder(
    sources: Sequence[str], converters: Sequence[Converter | None]
) -> Callable[[dict], bytes]:
    """`encode(record) -> b'[v1,v2,...]'`: each value converted, missing keys as null."""
    namespace: dict[str, Any] = {"dumps": dumps}
    items = []
    for i, (source, convert) in enumerate(zip(sources, converters, strict=False)):
        if convert is None:
            items.append(f"g({source!r})")
        else:
            namespace[f"c{i}"] = convert
            items.append(f"c{i}(g({source!r}))")
    code = "def encode(r):\n    g = r.get\n    return dumps([" + ", ".join(items) + "])\n"
    exec(compile(code, "<row-encoder>", "exec"), namespace)
    fast: Callable[[dict], bytes] = namespace["encode"]

    def encode(record: dict) -> bytes:
        try:
            return fast(record)
        except (ValueError, TypeError):
            _raise_for_field(record, sources, converters)
            raise

    return encode


def _raise_for_field(
    record: dict, sources: Sequence[str], converters: Sequence[Converter | None]
) -> None:
    """Slow path, only after a failure: find which field broke, for the error message."""
    for source, convert in zip(sources, converters, strict=False):
        value = record.get(source)
        try:
            dumps(convert(value) if convert else value)
        except (ValueError, TypeError) as exc:
            raise RowError(source, str(exc)) from None
