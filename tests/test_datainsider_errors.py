"""target-datainsider: bad config, refused keys and bad input give one clear line, exit 1,
no traceback, and neither key appears anywhere, even at DEBUG."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import (
    DI_CMD,
    Sandbox,
    counter_stream,
    error_line,
    lines,
    record,
    run_target,
    schema,
    target_env,
)

from target_datainsider.sandbox import SANDBOX_API_KEY, SANDBOX_READONLY_KEY
from target_datainsider.target import TargetDataInsider

PREFIX = "target-datainsider: error: "
PROPS = {"id": {"type": "integer"}, "email": {"type": "string"},
         "age": {"type": ["integer", "null"]}}


def run(tmp_path: Path, config: dict, messages: list, **env: str) -> subprocess.CompletedProcess:
    return run_target(tmp_path, config, lines(messages), command=DI_CMD, **env)


def users() -> list[dict]:
    return [schema("users", PROPS), record("users", {"id": 1, "email": "a@b"})]


@pytest.mark.parametrize(("change", "expected"), [
    ({"api_key": None}, "invalid config: 'api_key' is a required property"),
    ({"api_url": None}, "invalid config: 'api_url' is a required property"),
    ({"api_url": "http://acme.datainsider.co/api"},
     "api_url uses plain http:// to acme.datainsider.co: only https is allowed except for "
     "loopback addresses"),
    ({"load_method": "upsert"}, "invalid config: 'upsert' is not one of ['append-only', "
                                "'overwrite'] in config['load_method']"),
    ({"mode": "both"}, "invalid config: 'both' is not one of ['warehouse', 'lake']"),
    ({"key_properties_as": "keys"}, "invalid config: 'keys' is not one of ['primary_keys', "
                                    "'none']"),
    ({"mode": "lake", "lake_api_key": "not-the-server-key"},
     "DataInsider refused the file sync key (HTTP 400 on ingestion/file/sync/start: invalid "
     "api key): check lake_api_key"),
    ({"database": "my-db"}, "database: 'my-db' is not a DataInsider database or table name "
                            "(letters, digits and _ only)"),
    ({"table_map": {"users": "a.b.c"}}, "table_map['users'] must be \"database.table\" or "
                                        "\"table\", got 'a.b.c'"),
    ({"lake_path_prefix": "data/x"}, "lake_path_prefix must be an absolute lake path like "
                                     "/data/db/x, got 'data/x'"),
    ({"lake_path_map": {"users": "/data/../etc"}}, "lake_path_map['users'] must be an "
                                                   "absolute lake path"),
    ({"batch_size_rows": 0}, "batch_size_rows must be at least 1"),
    ({"database": None}, "no database for stream 'users': set database (the default), or "
                         'table_map ({"users": "<database>.<table>"})'),
])
def test_bad_config(tmp_path: Path, di_config: dict, change: dict, expected: str) -> None:
    config = {k: v for k, v in {**di_config, **change}.items() if v is not None}
    assert error_line(run(tmp_path, config, users()), PREFIX).startswith(expected)


def test_overwrite_refuses_two_streams_in_one_table(tmp_path: Path, di_config: dict) -> None:
    di_config.update(load_method="overwrite", table_map={"a": "shop.t", "b": "t"})
    result = run(tmp_path, di_config, [schema("a", PROPS), schema("b", PROPS)])
    assert error_line(result, PREFIX) == (
        "streams 'a' and 'b' are both mapped to table shop.t: with load_method overwrite each "
        "would replace the other's rows; map them to different tables")


@pytest.mark.parametrize(("key", "expected"), [
    ("wrong-key-4f9a2c", "DataInsider does not know the API key (HTTP 404 on "
                         "ingestion/csv/schema): check api_key"),
    (SANDBOX_READONLY_KEY, "DataInsider denied ingestion/csv/schema (HTTP 403 "
                           "insufficient_permission): the API key needs permission to create "
                           "and edit databases (database:create, database:edit)"),
])
def test_refused_key(tmp_path: Path, sandbox: Sandbox, di_config: dict, key: str,
                     expected: str) -> None:
    di_config["api_key"] = key
    result = run(tmp_path, di_config, counter_stream(1, 3, state_every=1), LOGLEVEL="DEBUG")
    assert error_line(result, PREFIX) == expected
    assert key not in result.stderr + result.stdout
    assert result.stdout == ""


def test_line_that_is_not_json(tmp_path: Path, di_config: dict) -> None:
    result = run(tmp_path, di_config, [
        schema("users", PROPS), record("users", {"id": 1, "email": "x@y"}),
        '{"type": "RECORD", "stream": "users", "record": {"id": 2, "email": "secret@pii',
    ])
    assert error_line(result, PREFIX).startswith("line 3: not a valid JSON line")
    assert "secret@pii" not in result.stderr


def test_record_that_breaks_its_schema(tmp_path: Path, di_config: dict) -> None:
    result = run(tmp_path, di_config, [
        schema("users", PROPS), record("users", {"id": 1, "email": "a@b", "age": 3}),
        record("users", {"id": 2, "email": "c@d", "age": "123-45-6789"}),
    ])
    assert error_line(result, PREFIX) == (
        "line 3: stream 'users': field 'age' must be integer or null")
    assert "123-45-6789" not in result.stderr


def test_overwrite_refuses_two_streams_in_one_lake_directory(tmp_path: Path,
                                                             di_config: dict) -> None:
    di_config.update(mode="lake", load_method="overwrite", lake_path_prefix="/data",
                     lake_path_map={"b": "/data/a"})
    result = run(tmp_path, di_config, [schema("a", PROPS), schema("b", PROPS),
                                       record("a", {"id": 1, "email": "x"})])
    assert error_line(result, PREFIX) == (
        "streams 'a' and 'b' are both mapped to lake directory /data/a: with load_method "
        "overwrite each FullSync would replace the other's files; map them to different "
        "directories (lake_path_map)")


def test_record_before_schema(tmp_path: Path, di_config: dict) -> None:
    result = run(tmp_path, di_config, [record("users", {"id": 1})])
    assert error_line(result, PREFIX).startswith(
        "line 1: RECORD for stream 'users' arrived before any SCHEMA for it")


def test_keys_never_appear_even_with_debug_logging(tmp_path: Path, sandbox: Sandbox,
                                                   di_config: dict) -> None:
    """Every route is called (truncate and read-back carry the key in the query string),
    with a retried 500, and the urllib3 debug log of each URL."""
    sandbox.fault(path="/datainsider/api/ingestion/batch", status=500, retry_after=0, times=1)
    di_config.update(batch_size_rows=2, load_method="overwrite",
                     lake_api_key="di-lake-key-7c1e")
    result = run(tmp_path, di_config,
                 [*counter_stream(1, 5, state_every=2),
                  record("items", {"id": 6, "label": None})],
                 LOGLEVEL="DEBUG", TARGET_DATAINSIDER_LOGLEVEL="DEBUG")
    assert result.returncode == 0, result.stderr
    assert "DEBUG" in result.stderr and "?****" in result.stderr  # query strings masked
    for secret in (di_config["api_key"], "di-lake-key-7c1e"):
        assert secret not in result.stderr + result.stdout


def test_keys_never_appear_in_lake_mode_even_with_debug_logging(
        tmp_path: Path, sandbox: Sandbox, di_config: dict) -> None:
    """Both keys set apart (the file sync key is the sandbox's), every file sync route
    called, a start retried after a 500 and an upload after a 503."""
    sandbox.fault(path="/datainsider/api/ingestion/file/sync/start", status=500,
                  retry_after=0, times=1)
    sandbox.fault(path="/datainsider/api/lake/file/upload", status=503, retry_after=0,
                  times=1)
    di_config.update(mode="lake", api_key="di-warehouse-key-3b9d",
                     lake_api_key=SANDBOX_API_KEY)
    result = run(tmp_path, di_config, counter_stream(1, 5, state_every=2),
                 LOGLEVEL="DEBUG", TARGET_DATAINSIDER_LOGLEVEL="DEBUG")
    assert result.returncode == 0, result.stderr
    assert "DEBUG" in result.stderr and "?****" in result.stderr  # query strings masked
    assert "HTTP 500" in result.stderr and "HTTP 503" in result.stderr
    assert "file sync 1 ended" in result.stderr
    for secret in ("di-warehouse-key-3b9d", SANDBOX_API_KEY):
        assert secret not in result.stderr + result.stdout


def test_about_documents_every_setting_and_marks_both_keys_secret() -> None:
    shown = subprocess.run([*DI_CMD, "--about", "--format=json"], capture_output=True,
                           text=True, env=target_env(), timeout=60, check=True).stdout
    settings = json.loads(shown)["settings"]["properties"]
    assert settings["api_key"]["secret"] is True
    assert settings["lake_api_key"]["secret"] is True
    for name in ("api_url", "mode", "database", "table_map", "lake_path_prefix",
                 "lake_path_map", "load_method", "key_properties_as", "batch_size_rows",
                 "rate_limit_per_minute", "request_timeout", "max_retries"):
        assert settings[name]["description"], name
    assert set(TargetDataInsider.config_jsonschema["properties"]) <= set(settings)
    assert settings["mode"]["enum"] == ["warehouse", "lake"]
