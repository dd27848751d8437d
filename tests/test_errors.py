"""Bad config, refusals and bad input: one clear line, exit 1, no traceback, no secret."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import (
    Sandbox,
    counter_stream,
    error_line,
    lines,
    record,
    run_target,
    schema,
    state,
)

PROPS = {"id": {"type": "integer"}, "email": {"type": "string"},
         "age": {"type": ["integer", "null"]}}


@pytest.mark.parametrize(("change", "expected"), [
    ({"api_token": None}, "invalid config: 'api_token' is a required property"),
    ({"api_url": "http://graphite.example.com/api"},
     "api_url uses plain http:// to graphite.example.com: only https is allowed except for "
     "loopback addresses"),
    ({"load_method": "upsert"}, "invalid config: 'upsert' is not one of ['append-only', "
                                "'overwrite'] in config['load_method']"),
    ({"compression_level": 12}, "compression_level must be between 1 and 9"),
    ({"dataset_code": None},
     "no dataset for stream 'users': set dataset_code (one stream), "
     'dataset_map ({"users": "<dataset code>"}) or create_missing_datasets'),
])
def test_bad_config(tmp_path: Path, gn_config: dict, change: dict, expected: str) -> None:
    config = {k: v for k, v in {**gn_config, **change}.items() if v is not None}
    run = run_target(tmp_path, config, lines([schema("users", PROPS),
                                              record("users", {"id": 1, "email": "a@b"})]))
    assert error_line(run).startswith(expected)


def test_secret_of_the_wrong_type_is_not_echoed(tmp_path: Path, gn_config: dict) -> None:
    gn_config["api_token"] = 987654321
    run = run_target(tmp_path, gn_config, b"")
    assert "is not of type 'string'" in error_line(run)
    assert "987654321" not in run.stderr + run.stdout


def test_wrong_token(tmp_path: Path, gn_config: dict) -> None:
    gn_config["api_token"] = "wrong-token-4f9a2c"
    run = run_target(tmp_path, gn_config, lines(counter_stream(1, 3, state_every=1)),
                     LOGLEVEL="DEBUG")
    assert error_line(run) == ("Graphite Note refused the API token (HTTP 401 on dataset-fill): "
                               "check api_token")
    assert "wrong-token-4f9a2c" not in run.stderr + run.stdout
    assert run.stdout == ""


def test_unknown_dataset(tmp_path: Path, gn_config: dict) -> None:
    gn_config["dataset_code"] = "no-such-dataset"
    run = run_target(tmp_path, gn_config, lines(counter_stream(1, 3, state_every=1)))
    assert error_line(run) == (
        "Graphite Note has no dataset 'no-such-dataset' (HTTP 404 on dataset-fill): check "
        "dataset_code / dataset_map, or set create_missing_datasets: true")


def test_record_before_schema(tmp_path: Path, gn_config: dict) -> None:
    run = run_target(tmp_path, gn_config, lines([state({"a": 1}),
                                                 record("users", {"id": 1})]))
    assert error_line(run) == (
        "line 2: RECORD for stream 'users' arrived before any SCHEMA for it: the tap must send "
        "a SCHEMA message for a stream before its records")


def test_line_that_is_not_json(tmp_path: Path, gn_config: dict, sandbox: Sandbox) -> None:
    run = run_target(tmp_path, gn_config, lines([
        schema("users", PROPS), record("users", {"id": 1, "email": "x@y"}),
        '{"type": "RECORD", "stream": "users", "record": {"id": 2, "email": "secret@pii',
    ]))
    assert error_line(run).startswith("line 3: not a valid JSON line (JSON is malformed")
    assert "secret@pii" not in run.stderr


def test_record_that_breaks_its_schema(tmp_path: Path, gn_config: dict) -> None:
    run = run_target(tmp_path, gn_config, lines([
        schema("users", PROPS), record("users", {"id": 1, "email": "a@b", "age": 3}),
        record("users", {"id": 2, "email": "c@d", "age": "123-45-6789"}),
    ]))
    assert error_line(run) == "line 3: stream 'users': field 'age' must be integer or null"
    assert "123-45-6789" not in run.stderr


def test_record_with_a_bad_date_time(tmp_path: Path, gn_config: dict) -> None:
    props = {"id": {"type": "integer"}, "at": {"type": "string", "format": "date-time"}}
    run = run_target(tmp_path, gn_config, lines([
        schema("events", props), record("events", {"id": 1, "at": "2024-13-45T00:00:00Z"})]))
    assert error_line(run) == ("line 2: stream 'events': field 'at' is not a valid ISO 8601 "
                               "date-time")


def test_record_without_its_key_property(tmp_path: Path, gn_config: dict) -> None:
    run = run_target(tmp_path, gn_config, lines([
        schema("users", PROPS), record("users", {"email": "a@b"})]))
    assert error_line(run) == "line 2: stream 'users': record lacks key property 'id'"


def test_message_without_type(tmp_path: Path, gn_config: dict) -> None:
    run = run_target(tmp_path, gn_config, lines([schema("users", PROPS), {"stream": "users"}]))
    assert error_line(run).startswith("line 2: a Singer message needs a 'type'")


def test_token_never_appears_even_with_debug_logging(tmp_path: Path, gn_config: dict,
                                                     sandbox: Sandbox) -> None:
    sandbox.fault(path="/graphitenote/api/dataset-fill", status=500, retry_after=0, times=1)
    gn_config["batch_size_rows"] = 2
    run = run_target(tmp_path, gn_config, lines(counter_stream(1, 5, state_every=2)),
                     LOGLEVEL="DEBUG", TARGET_GRAPHITENOTE_LOGLEVEL="DEBUG")
    assert run.returncode == 0, run.stderr
    assert "DEBUG" in run.stderr  # debug logging really was on
    assert gn_config["api_token"] not in run.stderr + run.stdout


@pytest.mark.parametrize(("message", "expected"), [
    ({"type": ["RECORD"]}, "line 2: a Singer message needs a 'type' of SCHEMA, RECORD"),
    ({"type": "RECORD", "stream": "users", "record": [1]},
     "line 2: RECORD for stream 'users': 'record' must be a JSON object"),
    ({"type": "RECORD", "stream": "users", "record": None},
     "line 2: RECORD for stream 'users': 'record' must be a JSON object"),
    ({"type": "ACTIVATE_VERSION", "stream": "nope", "version": 1},
     "line 2: ACTIVATE_VERSION for stream 'nope' arrived before its SCHEMA"),
    ({"type": "ACTIVATE_VERSION", "stream": "users"},
     "line 2: ACTIVATE_VERSION for stream 'users' has no integer 'version'"),
    ({"type": "SCHEMA", "stream": "x", "schema": {"properties": []}},
     "line 2: a SCHEMA message needs a 'stream' name and a 'schema' object with 'properties'"),
    ({"type": "STATE"}, "line 2: STATE message has no 'value'"),
])
def test_malformed_messages(tmp_path: Path, gn_config: dict, message: dict,
                            expected: str) -> None:
    run = run_target(tmp_path, gn_config, lines([schema("users", PROPS), message]))
    assert error_line(run).startswith(expected)


def test_overwrite_refuses_two_streams_in_one_dataset(tmp_path: Path, gn_config: dict) -> None:
    gn_config.update(load_method="overwrite",
                     dataset_map={"a": "sandbox-dataset", "b": "sandbox-dataset"})
    run = run_target(tmp_path, gn_config, lines([schema("a", PROPS), schema("b", PROPS)]))
    assert error_line(run).startswith(
        "streams 'a' and 'b' are both mapped to dataset 'sandbox-dataset'")
