"""The generated checks must accept and reject exactly what fastjsonschema does.

Records are mutated at random (wrong types, nulls, missing keys, 1.0 for integers, nested
changes) and fed to both; any disagreement fails the test. Also checks which schemas fall
back to fastjsonschema, and that messages name the field and never the value.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import fastjsonschema
import pytest

from target_core.rows import compile_row_encoder
from target_core.validation import RecordProblem, RecordValidator

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id"],
    "properties": {
        "id": {"type": ["integer"]},
        "name": {"type": ["string"], "maxLength": 12},
        "amount": {"type": ["number", "null"], "minimum": -5, "exclusiveMaximum": 1000},
        "is_active": {"type": "boolean"},
        "updated_at": {"type": "string", "format": "date-time"},
        "maybe_date": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
        "address": {"type": ["object", "null"], "required": ["city"], "properties": {
            "city": {"type": "string", "minLength": 1},
            "geo": {"type": "object", "properties": {"lat": {"type": "number"}}},
        }},
        "tags": {"type": ["array", "null"], "items": {"type": ["string", "integer"]}},
        "anything": {},
        "untyped_obj": {"properties": {"x": {"type": "integer"}}},
    },
}
GOOD = {"id": 1, "name": "Ana", "amount": 12.5, "is_active": True,
        "updated_at": "2024-01-01T00:00:00Z", "maybe_date": None,
        "address": {"city": "Zagreb", "geo": {"lat": 45.8}}, "tags": ["a", 2],
        "anything": {"z": [1]}, "untyped_obj": {"x": 3}}
VALUES = [None, 0, 1, -7, 1.0, 2.5, 10**6, True, False, "", "x", "long string value!",
          [], ["a"], [1, "b", None], {}, {"city": "A"}, {"city": ""}, {"geo": {"lat": "n"}}]


def mutate(record: dict, rng: random.Random) -> dict:
    out = copy.deepcopy(record)
    for _ in range(rng.randint(1, 3)):
        roll = rng.random()
        key = rng.choice(list(SCHEMA["properties"]))
        if roll < 0.15:
            out.pop(key, None)
        elif roll < 0.8:
            out[key] = copy.deepcopy(rng.choice(VALUES))
        elif isinstance(out.get("address"), dict):
            target = out["address"]
            if rng.random() < 0.5:
                target.pop("city", None)
            else:
                target[rng.choice(["city", "geo"])] = copy.deepcopy(rng.choice(VALUES))
    return out


def test_generated_checks_agree_with_fastjsonschema() -> None:
    reference = fastjsonschema.compile(SCHEMA, use_default=False, use_formats=False)
    names = list(SCHEMA["properties"])
    encode, validates = compile_row_encoder(names, [None] * len(names), SCHEMA)
    assert validates
    rng = random.Random(7)
    outcomes = {True: 0, False: 0}
    for _ in range(20_000):
        record = mutate(GOOD, rng)
        try:
            reference(record)
            expected = True
        except fastjsonschema.JsonSchemaValueException:
            expected = False
        try:
            encode(record)
            got = True
        except RecordProblem:
            got = False
        assert got == expected, record
        outcomes[got] += 1
    assert min(outcomes.values()) > 2_000  # both sides of the fence were really tested


@pytest.mark.parametrize("keyword", [
    {"enum": ["a", "b"]}, {"pattern": "^a"}, {"multipleOf": 0.01}, {"allOf": [{}]},
    {"$ref": "#/definitions/x"}, {"type": "object", "additionalProperties": False},
])
def test_keywords_beyond_the_generated_checks_fall_back(keyword: dict) -> None:
    schema = {"type": "object", "properties": {"id": {"type": "integer"}, "v": keyword}}
    _, validates = compile_row_encoder(["id", "v"], [None, None], schema)
    assert not validates


def _nested(depth: int) -> dict:
    node: dict = {"type": "object", "properties": {}}
    root = node
    for _ in range(depth):
        child: dict = {"type": "object", "properties": {}}
        node["properties"]["x"] = child
        node = child
    return root


@pytest.mark.parametrize("schema", [
    {"properties": {"id": {"type": "integer"}}, "additionalProperties": False},
    {"properties": {"id": {"type": "integer"}}, "allOf": [{"required": ["b"]}]},
    {"properties": {"id": {"type": "integer"}}, "minProperties": 2},
    {"type": "array", "properties": {"id": {}}},
    {"properties": {"id": {"anyOf": [{"type": "string", "maxLength": 3}, {"type": "null"}]}}},
    {"properties": {"id": {"type": "string", "anyOf": [{"type": "string"}, {"type": "integer"}]}}},
    {"properties": {"id": {"anyOf": [{"type": "number"}, {}]}}},
    {"properties": {"id": {"type": "string"}}, "required": "id"},
    _nested(60),  # deeper than Python's compiler nests blocks
])
def test_record_level_and_unusual_schemas_fall_back(schema: dict) -> None:
    sources = list(schema.get("properties", {}))
    encode, validates = compile_row_encoder(sources, [None] * len(sources), schema)
    assert not validates
    assert encode({"id": 1}).startswith(b"[")  # still encodes; fastjsonschema validates


def test_messages_name_the_field_not_the_value() -> None:
    encode, _ = compile_row_encoder(list(SCHEMA["properties"]),
                                    [None] * len(SCHEMA["properties"]), SCHEMA)
    with pytest.raises(RecordProblem) as caught:
        encode({**GOOD, "address": {"city": "Zagreb", "geo": {"lat": "SECRET-VALUE"}}})
    assert str(caught.value) == "field 'address.geo.lat' must be number"
    validator = RecordValidator({"type": "object", "properties": {"e": {"enum": ["a"]}}})
    with pytest.raises(Exception) as caught:
        validator.validate({"e": "SECRET-VALUE"})
    assert "SECRET-VALUE" not in str(caught.value)
    assert "field 'e' must be one of" in str(caught.value)
    spaced = RecordValidator({"type": "object", "properties": {"first name": {"type": "string"}}})
    with pytest.raises(Exception) as caught:
        spaced.validate({"first name": 5})
    assert str(caught.value).endswith("field 'first name' must be string")
