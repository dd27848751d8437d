"""A compiled JSON Schema validator per stream, with messages that name fields, not values.

The SDK validates with `jsonschema`, which rebuilds validator objects while descending
into every record: ~80% of a stock target's time. fastjsonschema compiles the schema to
Python once. Compiled with `use_default=False` (never insert defaults into records) and
`use_formats=False` (the SDK does not check formats either; date-time columns are checked
when their values are converted, see `conversions`). Its messages (`data.age must be
integer`) carry the field path and the rule, never the offending value.
"""

from __future__ import annotations

import decimal
import functools
from collections.abc import Callable
from typing import Any

import fastjsonschema
import msgspec
import orjson
from singer_sdk.exceptions import InvalidJSONSchema, InvalidRecord
from singer_sdk.sinks.core import BaseJSONSchemaValidator


@functools.lru_cache(maxsize=256)
def _compile(schema_json: bytes) -> Callable[[Any], Any]:
    return fastjsonschema.compile(orjson.loads(schema_json), use_default=False, use_formats=False)


def describe(exc: fastjsonschema.JsonSchemaValueException) -> str:
    """`data.address.city must be string` -> `field 'address.city' must be string`."""
    path = ".".join(str(p) for p in (exc.path or [])[1:])
    name = exc.name or "data"
    rule = exc.message[len(name) + 1:] if exc.message.startswith(name + " ") else exc.message
    return f"field '{path}' {rule}" if path else f"record {rule}"


class RecordValidator(BaseJSONSchemaValidator):
    """The `Sink.get_validator` hook's answer: fastjsonschema, compiled once per schema."""

    def __init__(self, schema: dict) -> None:
        super().__init__(schema)
        try:
            self.check = _compile(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
        except fastjsonschema.JsonSchemaDefinitionException as exc:
            message = f"the stream's schema is not valid JSON Schema: {exc}"
            raise InvalidJSONSchema(message) from None

    def validate(self, record: dict) -> None:
        try:
            self.check(record)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise InvalidRecord(describe(exc), {}) from None


# -- generated checks ---------------------------------------------------------------------
#
# fastjsonschema still spends ~1/3 of the record path building key sets and calling
# isinstance per property. Records decoded from JSON hold exact types only, so a check
# written for one schema (`type(v) in {int}`) is exact and several times cheaper; a value
# of another type goes to `_type_ok`, which applies jsonschema's rules (bool is not a
# number, 1.0 is an integer). A number with a fraction arrives as `msgspec.Raw` (its exact
# text, see conversions.exact_number): the reader made it only from a JSON number, so its
# type alone proves "number"; bounds compare it as a Decimal. Schemas using keywords these
# checks do not cover fall back to fastjsonschema; tests/test_validation.py compares both on
# mutated records.

_Raw = msgspec.Raw
_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float, _Raw), "boolean": (bool,),
    "null": (type(None),), "object": (dict,), "array": (list,),
}
_NOT_CHECKED = {  # annotations and keywords that never reject a value (formats are off)
    "type", "properties", "required", "items", "anyOf", "additionalProperties",
    "title", "description", "default", "examples", "$comment", "$schema", "$id",
    "readOnly", "writeOnly", "deprecated", "format", "secret", "inclusion", "selected",
    "selected-by-default", "sql-datatype", "x-sql-datatype",
    "maxLength", "minLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
}
_ANNOTATIONS = {"title", "description", "default", "examples", "$comment", "$schema", "$id",
                "readOnly", "writeOnly", "deprecated", "format", "secret", "inclusion",
                "selected", "selected-by-default", "sql-datatype", "x-sql-datatype"}
_VALIDATION_KEYWORDS = {
    "enum", "const", "pattern", "multipleOf", "minItems", "maxItems", "uniqueItems",
    "contains", "minProperties", "maxProperties", "patternProperties", "propertyNames",
    "dependencies", "dependentRequired", "dependentSchemas", "if", "then", "else", "allOf",
    "oneOf", "not", "$ref", "$defs", "definitions", "prefixItems", "unevaluatedProperties",
    "unevaluatedItems", "additionalItems", "$dynamicRef", "$anchor",
}


class Unsupported(Exception):
    """The schema needs a keyword the generated checks do not implement."""


def _type_ok(value: Any, types: tuple[str, ...]) -> bool:
    """jsonschema's type rules, for values whose exact type was not in the fast set."""
    for name in types:
        if name in ("integer", "number") and isinstance(value, bool):
            continue
        if name == "integer" and isinstance(value, float) and value.is_integer():
            return True
        if name == "integer" and type(value) is _Raw:
            exact = _number(value)
            if exact == exact.to_integral_value():
                return True
        if isinstance(value, _PY_TYPES[name]):
            return True
    return False


def _number(value: Any) -> Any:
    """A value for a bounds comparison: Raw number text as an exact Decimal."""
    return decimal.Decimal(bytes(value).decode()) if type(value) is _Raw else value


def _fail(path: str, problem: str) -> None:
    raise RecordProblem(f"field '{path}' {problem}")


class RecordProblem(ValueError):
    """A record that breaks its schema (message names the field, never the value)."""


class CheckWriter:
    """Writes Python source that checks values against (a supported subset of) a schema."""

    def __init__(self) -> None:
        self.constants: dict[str, Any] = {"_type_ok": _type_ok, "_fail": _fail, "_M": object(),
                                          "_num": _number, "_Raw": _Raw}
        self._n = 0

    def name(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}{self._n}"

    def constant(self, value: Any) -> str:
        name = self.name("_k")
        self.constants[name] = value
        return name

    @staticmethod
    def types_of(node: dict) -> tuple[str, ...] | None:
        """The allowed JSON types, or None for any; anyOf only of plain typed branches."""
        if "anyOf" in node:
            if "type" in node or not isinstance(node["anyOf"], list):
                raise Unsupported("anyOf next to type")
            types: list[str] = []
            for branch in node["anyOf"]:
                # only branches that are a bare type: anything else needs a real validator
                if not isinstance(branch, dict) or set(branch) - _ANNOTATIONS != {"type"}:
                    raise Unsupported("anyOf branch with more than a type")
                declared = branch["type"]
                types += [declared] if isinstance(declared, str) else list(declared)
            return tuple(dict.fromkeys(types))
        declared = node.get("type")
        if declared is None:
            return None
        return (declared,) if isinstance(declared, str) else tuple(declared)

    def allows_null(self, node: Any) -> bool:
        """Whether the node's type check lets None through (then a missing key and a null
        may share one path)."""
        try:
            types = self.types_of(node) if isinstance(node, dict) else None
        except Unsupported:
            return False
        return types is not None and "null" in types

    def check(self, node: Any, var: str, path: str, indent: int) -> list[str]:
        """Lines checking `var` (present) against `node`."""
        if node is True or node == {}:
            return []
        if not isinstance(node, dict):
            raise Unsupported("boolean schema")
        if set(node) & _VALIDATION_KEYWORDS:
            raise Unsupported(", ".join(sorted(set(node) & _VALIDATION_KEYWORDS)))
        if node.get("additionalProperties", True) is not True:
            raise Unsupported("additionalProperties")
        pad = "    " * indent
        lines = []
        types = self.types_of(node)
        if types is not None:
            if set(types) - set(_PY_TYPES):
                raise Unsupported(f"type {types}")
            # type() is exact: True is not in {int}, 1.0 is not in {int}; _type_ok decides.
            exact = {t for name in types for t in _PY_TYPES[name]}
            lines += [f"{pad}if type({var}) not in {self.constant(frozenset(exact))} "
                      f"and not _type_ok({var}, {types!r}):",
                      f"{pad}    _fail({path!r}, {'must be ' + ' or '.join(types)!r})"]
        lines += self.bounds(node, var, path, pad)
        properties = node.get("properties") or {}
        required = node.get("required") or []
        if not isinstance(properties, dict) or not isinstance(required, list):
            raise Unsupported("properties or required of an unexpected shape")
        if properties or required:
            obj = self.name("o")
            body = self.object_checks(properties, required, obj, path + ".", indent + 1)
            if body:
                lines += [f"{pad}if type({var}) is dict:", f"{pad}    {obj} = {var}", *body]
        items = node.get("items")
        if items is not None:
            if not isinstance(items, dict):
                raise Unsupported("items as a list")
            item = self.name("i")
            body = self.check(items, item, path + "[]", indent + 2)
            if body:
                lines += [f"{pad}if type({var}) is list:", f"{pad}    for {item} in {var}:", *body]
        return lines

    def bounds(self, node: dict, var: str, path: str, pad: str) -> list[str]:
        """maxLength / minLength on strings; minimum / maximum (exclusive too) on numbers."""
        lines = []
        number = f"type({var}) in (int, float, _Raw)"
        for keyword, test, applies in (
            ("maxLength", "len({v}) > {k}", f"type({var}) is str"),
            ("minLength", "len({v}) < {k}", f"type({var}) is str"),
            ("maximum", "_exact({v}) > {k}", number),
            ("minimum", "_exact({v}) < {k}", number),
            ("exclusiveMaximum", "_exact({v}) >= {k}", number),
            ("exclusiveMinimum", "_exact({v}) <= {k}", number),
        ):
            if keyword in node:
                limit = node[keyword]
                if isinstance(limit, bool) or not isinstance(limit, (int, float)):
                    raise Unsupported(f"{keyword} that is not a number")
                exact = f"({var} if type({var}) is not _Raw else _num({var}))"
                condition = test.replace("_exact({v})", exact).format(
                    v=var, k=self.constant(limit))
                if keyword.endswith("Length"):  # jsonschema counts code points, as len() does
                    problem = f"is {'longer' if keyword[1] == 'a' else 'shorter'} than {limit}"
                else:
                    problem = f"breaks its {keyword} of {limit}"
                lines += [f"{pad}if {applies} and {condition}:",
                          f"{pad}    _fail({path!r}, {problem!r})"]
        return lines

    def object_checks(self, properties: dict, required: list, obj: str, prefix: str,
                      indent: int) -> list[str]:
        pad = "    " * indent
        lines = []
        for key in required:
            lines += [f"{pad}if {key!r} not in {obj}:",
                      f"{pad}    _fail({prefix + key!r}, 'is a required property')"]
        for key, sub in properties.items():
            value = self.name("v")
            body = self.check(sub, value, prefix + key, indent + 1)
            if body:
                lines += [f"{pad}{value} = {obj}.get({key!r}, _M)",
                          f"{pad}if {value} is not _M:", *body]
        return lines
