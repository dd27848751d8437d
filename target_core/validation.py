"""A compiled JSON Schema validator per stream, with messages that name fields, not values.

The SDK validates with `jsonschema`, which rebuilds validator objects while descending
into every record: ~80% of a stock target's time. fastjsonschema compiles the schema to
Python once. Compiled with `use_default=False` (never insert defaults into records) and
`use_formats=False` (the SDK does not check formats either; date-time columns are checked
when their values are converted, see `conversions`). Its messages (`data.age must be
integer`) carry the field path and the rule, never the offending value.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import fastjsonschema
import orjson
from singer_sdk.exceptions import InvalidJSONSchema, InvalidRecord
from singer_sdk.sinks.core import BaseJSONSchemaValidator


@functools.lru_cache(maxsize=256)
def _compile(schema_json: bytes) -> Callable[[Any], Any]:
    return fastjsonschema.compile(orjson.loads(schema_json), use_default=False, use_formats=False)


def describe(exc: fastjsonschema.JsonSchemaValueException) -> str:
    """`data.address.city must be string` -> `field 'address.city' must be string`."""
    path = ".".join(str(p) for p in (exc.path or [])[1:])
    rule = exc.message.split(" ", 1)[1] if " " in exc.message else exc.message
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
