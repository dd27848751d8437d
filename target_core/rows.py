"""A record -> one row of JSON values in column order, as a generated function per stream.

The row encoder is the innermost loop of every target: it runs once per record. Building
its source from the column list (`x0 = g('id')` ... `dumps([x0, c1(x1), ...])`) removes
the per-column loop, lookups and branches. With validation on, the schema's checks are
written into the same function, so a record is walked once, not twice. Encoding the row to
JSON bytes right away means a batch is a list of small byte strings, not thousands of live
dicts (cheaper for the garbage collector, and a batch can be split at any row on a 413).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from target_core.conversions import dumps
from target_core.validation import _ANNOTATIONS, CheckWriter, RecordProblem, Unsupported

Converter = Callable[[Any], Any]


class RowError(ValueError):
    """A value that its column's converter refused."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"field '{field}' {problem}")
        self.field = field


def compile_row_encoder(
    sources: Sequence[str],
    converters: Sequence[Converter | None],
    schema: dict | None = None,
    *,
    as_tuple: bool = False,
) -> tuple[Callable[[dict], Any], bool]:
    """`encode(record) -> b'[v1,v2,...]'`: values converted, missing keys as null.

    With `as_tuple`, the row is the tuple of converted values instead of its JSON text:
    what a format writer takes (no JSON text made, nor parsed again, per row).

    With a `schema`, the same function also validates the record (raising `RecordProblem`)
    and the second result is True; for a schema whose keywords the generated checks do not
    cover, the encoder does not validate and the second result is False. Each value is
    read from the record once and serves both the checks and the row.
    """
    writer = CheckWriter()
    namespace = writer.constants
    namespace.update(dumps=dumps, RecordProblem=RecordProblem,
                     explain=lambda record: _raise_for_field(record, sources, converters))
    properties = (schema or {}).get("properties") or {}
    required = (schema or {}).get("required") or []
    validates = schema is not None
    body: list[str] = []
    items = []
    try:
        if schema is not None:
            _check_record_level(schema)
        for key in required:
            if key not in sources:
                body += [f"        if {key!r} not in r:",
                         f"            _fail({key!r}, 'is a required property')"]
        for i, (source, convert) in enumerate(zip(sources, converters, strict=True)):
            value = f"x{i}"
            prop = properties.get(source, {})
            checks = writer.check(prop, value, source, 3) if validates else []
            if checks and source not in required and writer.allows_null(prop):
                # missing and null are the same here: no sentinel, one branch less
                body += [f"        {value} = g({source!r})", *_dedent(checks)]
            elif checks or source in required:
                body += [f"        {value} = g({source!r}, _M)", f"        if {value} is _M:"]
                if validates and source in required:
                    body.append(f"            _fail({source!r}, 'is a required property')")
                body += [f"            {value} = None"]
                if checks:
                    body += ["        else:", *checks]
            else:
                body.append(f"        {value} = g({source!r})")
            items.append(value if convert is None else f"c{i}({value})")
            if convert is not None:
                namespace[f"c{i}"] = convert
    except (Unsupported, RecursionError):
        return compile_row_encoder(sources, converters, None, as_tuple=as_tuple)[0], False
    row = ("(" + "".join(f"{item}, " for item in items) + ")" if as_tuple
           else "dumps([" + ", ".join(items) + "])")
    code = "\n".join([
        "def encode(r):",
        "    g = r.get",
        "    try:",
        *body,
        "        return " + row,
        "    except RecordProblem:",
        "        raise",
        "    except (ValueError, TypeError):",
        "        explain(r)  # names the field that broke",
        "        raise",
        "",
    ])
    try:
        exec(compile(code, "<row-encoder>", "exec"), namespace)
    except (SyntaxError, RecursionError):  # nesting deeper than Python's compiler allows
        if schema is None:
            raise
        return compile_row_encoder(sources, converters, None, as_tuple=as_tuple)[0], False
    return namespace["encode"], validates


def _dedent(lines: list[str]) -> list[str]:
    """Checks written for the `else:` branch (3 levels) moved to the function body (2)."""
    return [line[4:] for line in lines]


def _check_record_level(schema: dict) -> None:
    """The generated checks cover `properties` and `required` at the record level only."""
    extra = set(schema) - _ANNOTATIONS - {"type", "properties", "required"}
    if extra - {"additionalProperties"} or schema.get("additionalProperties", True) is not True:
        raise Unsupported(f"record-level {sorted(extra)}")
    if schema.get("type", "object") not in ("object", ["object"]):
        raise Unsupported("a record schema that is not an object")
    if not isinstance(schema.get("properties", {}), dict) or not isinstance(
            schema.get("required", []), list):
        raise Unsupported("properties or required of an unexpected shape")


def _raise_for_field(
    record: dict, sources: Sequence[str], converters: Sequence[Converter | None]
) -> None:
    """Slow path, only after a failure: find which field broke, for the error message."""
    for source, convert in zip(sources, converters, strict=True):
        value = record.get(source)
        try:
            dumps(convert(value) if convert else value)
        except (ValueError, TypeError) as exc:
            raise RowError(source, str(exc)) from None
