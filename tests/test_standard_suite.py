"""The singer-sdk standard target tests, plus a check that their records really landed.

The SDK's target tests only check that nothing raises (a target that drops every record
passes). So after the standard suite, every SDK test stream that should load is run again
and the sandbox is compared with the input, record by record, for each target.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import tempfile
from collections import defaultdict
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import requests
from singer_sdk.testing import get_target_test_class

from target_core.columns import identifier
from target_core.sandbox import SandboxServer
from target_datainsider.names import normalize_name
from target_datainsider.sandbox import SANDBOX_API_KEY
from target_datainsider.target import TargetDataInsider
from target_datatile.sandbox import SANDBOX_FOLDER as DT_FOLDER
from target_datatile.sandbox import SANDBOX_TOKEN as DT_TOKEN
from target_datatile.target import TargetDataTile
from target_datatile.variables import unique_variable_names
from target_graphitenote.sandbox import SANDBOX_TOKEN, SANDBOX_USER_CODE
from target_graphitenote.target import TargetGraphiteNote
from target_usmart import sandbox as usmart_sandbox
from target_usmart.sink import csv_file_name
from target_usmart.target import TargetUsmart

# The suite's config is fixed when the test class is built, so its sandbox starts at import.
_SERVER = SandboxServer(Path(tempfile.mkdtemp(prefix="gn-suite-"))).start()
atexit.register(_SERVER.stop)
CONFIG: dict[str, Any] = {
    "api_token": SANDBOX_TOKEN,
    "user_code": SANDBOX_USER_CODE,
    "api_url": _SERVER.api_url("graphitenote"),
    "create_missing_datasets": True,
    "created_datasets_file": str(Path(tempfile.mkdtemp(prefix="gn-suite-created-"))
                                 / "datasets.json"),
    "rate_limit_per_minute": 0,
    "batch_size_rows": 3,  # several fills per stream, and checkpoints between them
}

DI_CONFIG: dict[str, Any] = {
    "api_key": SANDBOX_API_KEY,
    "api_url": _SERVER.api_url("datainsider"),
    "database": "suite",
    "batch_size_rows": 3,
}

US_CONFIG: dict[str, Any] = {
    "org_guid": usmart_sandbox.SANDBOX_ORG,
    "api_key_id": usmart_sandbox.SANDBOX_KEY_ID,
    "api_key_secret": usmart_sandbox.SANDBOX_KEY_SECRET,
    "api_url": _SERVER.api_url("usmart"),
    "dataset_guid": usmart_sandbox.SANDBOX_DATASET,  # each stream its own file in it
    "batch_size_rows": 3,
}

DT_CONFIG: dict[str, Any] = {
    "token": DT_TOKEN,
    "api_url": _SERVER.api_url("datatile"),
    "create_missing_databases": True,
    "folder_hash": DT_FOLDER,
    "created_databases_file": str(Path(tempfile.mkdtemp(prefix="dt-suite-created-"))
                                  / "databases.json"),
    "poll_interval": 0.02,
    "batch_size_rows": 3,
}

TestTargetGraphiteNote = get_target_test_class(
    TargetGraphiteNote, config=CONFIG, parse_env_config=False
)
TestTargetDataInsider = get_target_test_class(
    TargetDataInsider, config=DI_CONFIG, parse_env_config=False
)
TestTargetUsmart = get_target_test_class(TargetUsmart, config=US_CONFIG, parse_env_config=False)
TestTargetDataTile = get_target_test_class(
    TargetDataTile, config=DT_CONFIG, parse_env_config=False
)

STREAMS = resources.files("singer_sdk.testing") / "target_test_streams"
LOADABLE = [
    "array_data", "camelcase", "camelcase_complex_schema", "duplicate_records",
    "encoded_string_data", "multiple_state_messages", "no_primary_keys",
    "no_primary_keys_append", "optional_attributes", "record_missing_fields",
    "schema_no_properties", "schema_updates", "special_chars_in_attributes",
    "user_location_data", "user_location_upsert_data",
]


def _records(name: str) -> dict[str, list[dict]]:
    by_stream: dict[str, list[dict]] = defaultdict(list)
    for line in (STREAMS / f"{name}.singer").read_text().splitlines():
        message = json.loads(line) if line.strip() else {}
        if message.get("type") == "RECORD":
            by_stream[message["stream"]].append(message["record"])
    return by_stream


@pytest.mark.parametrize("name", LOADABLE)
def test_standard_stream_lands_record_by_record(name: str, tmp_path: Path) -> None:
    with SandboxServer(tmp_path) as server:
        config = {**CONFIG, "api_url": server.api_url("graphitenote"), "dataset_name_prefix": ""}
        target = TargetGraphiteNote(config=config, parse_env_config=False)
        target.listen(open(STREAMS / f"{name}.singer"))  # noqa: SIM115 - listen reads to the end
        datasets = server.emulators["graphitenote"].snapshot()["datasets"]
    landed = {d["name"]: d for d in datasets.values() if d["name"] != "Sandbox dataset"}
    expected = _records(name)
    assert set(landed) == set(expected)
    for stream, records in expected.items():
        rows = landed[stream]["rows"]
        assert len(rows) == len(records), stream
        assert landed[stream]["completes"] == 1
        for got, sent in zip(rows, records, strict=True):
            for key, value in sent.items():
                column = identifier(key)
                if isinstance(value, (dict, list)):
                    assert json.loads(got[column]) == value, (stream, key)
                elif isinstance(value, bool):
                    assert got[column] == str(value).lower(), (stream, key)
                else:
                    assert got[column] == value, (stream, key)


def _instant(value: str) -> dt.datetime:
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _same_value(got: object, sent: object, class_name: str) -> bool:
    """A value DataInsider stored against the one the tap sent, by the column's type."""
    if class_name == "datetime64" and isinstance(sent, str):
        stored = dt.datetime.fromisoformat(f"{got}+00:00")
        return stored == _instant(sent).replace(microsecond=_instant(sent).microsecond
                                                // 1000 * 1000)
    if class_name == "string" and sent is not None:
        return got == sent if isinstance(sent, str) else json.loads(got) == sent  # type: ignore[arg-type]
    return got == sent


@pytest.mark.parametrize("name", LOADABLE)
def test_standard_stream_lands_in_datainsider_value_by_value(name: str, tmp_path: Path) -> None:
    with SandboxServer(tmp_path) as server:
        config = {**DI_CONFIG, "api_url": server.api_url("datainsider")}
        target = TargetDataInsider(config=config, parse_env_config=False)
        target.listen(open(STREAMS / f"{name}.singer"))  # noqa: SIM115 - listen reads to the end
        databases = server.emulators["datainsider"].snapshot()["databases"]
    tables = databases.get("suite", {}).get("tables", {})  # a stream with no records: no table
    expected = _records(name)
    assert set(tables) == {normalize_name(stream) for stream in expected}
    for stream, records in expected.items():
        table = tables[normalize_name(stream)]
        assert table["display_name"] == stream
        types = {column["name"]: column["class_name"] for column in table["columns"]}
        rows = table["rows"]
        assert len(rows) == len(records), stream
        for got, sent in zip(rows, records, strict=True):
            for key, value in sent.items():
                column = normalize_name(key)
                assert _same_value(got[column], value, types[column]), (stream, key, got[column])


def _usmart_read_route(server: SandboxServer, file_guid: str) -> list[dict[str, Any]]:
    """A file's rows as uSmart's read API serves them (`urql?limit(n,offset)`)."""
    url = (f"{server.api_url('usmart')}/org/{usmart_sandbox.SANDBOX_ORG}/{file_guid}"
           f"/latest/urql?limit(100000,0)")
    response = requests.get(url, timeout=30, headers={
        "api-key-id": usmart_sandbox.SANDBOX_KEY_ID,
        "api-key-secret": usmart_sandbox.SANDBOX_KEY_SECRET})
    assert response.status_code == 200, response.text
    return json.loads(response.content, parse_float=Decimal)


def _same_in_usmart(got: Any, sent: Any) -> bool:
    """A value read back from uSmart (typed by the file's first row) against the tap's."""
    if sent is None or isinstance(sent, bool):
        return got is sent or got == str(sent).lower()
    if isinstance(sent, (dict, list)):
        return json.loads(got) == sent
    if isinstance(sent, (int, float)):  # a number column, or text when the first row's
        return Decimal(str(got)) == Decimal(repr(sent))  # cell was empty
    if isinstance(got, str) and got.endswith("Z") and got != sent:  # a date-time, in UTC
        return _instant(got) == _instant(sent)
    return got == sent


@pytest.mark.parametrize("name", LOADABLE)
def test_standard_stream_lands_in_usmart_value_by_value(name: str, tmp_path: Path) -> None:
    with SandboxServer(tmp_path) as server:
        config = {**US_CONFIG, "api_url": server.api_url("usmart")}
        target = TargetUsmart(config=config, parse_env_config=False)
        target.listen(open(STREAMS / f"{name}.singer"))  # noqa: SIM115 - listen reads to the end
        files = server.emulators["usmart"].snapshot(0)["datasets"][
            usmart_sandbox.SANDBOX_DATASET]["files"]
        landed = {file["fileName"].rsplit("-", 1)[0]: _usmart_read_route(server, guid)
                  for guid, file in files.items()}
    expected = _records(name)  # a stream with no records: no file
    assert set(landed) == {csv_file_name(stream).removesuffix(".csv") for stream in expected}
    for stream, records in expected.items():
        rows = landed[csv_file_name(stream).removesuffix(".csv")]
        assert len(rows) == len(records), stream
        remaining = list(records)  # the most complete record comes first: match each row
        for row in rows:
            index = next((i for i, sent in enumerate(remaining) if _row_is(row, sent)), None)
            assert index is not None, (stream, row, remaining)
            remaining.pop(index)


def _row_is(row: dict[str, Any], sent: dict[str, Any]) -> bool:
    """Every value of the record read back, and null in the columns it has no value for."""
    columns = {identifier(key): value for key, value in sent.items()}
    return set(columns) <= set(row) and all(
        _same_in_usmart(row[column], columns[column]) if column in columns
        else row[column] is None for column in row)


def _spss_value(sent: object, column_type: str) -> object:
    """What DataTile's SPSS file gives back for a value the tap sent (see docs/datatile.md:
    booleans 0/1, nulls system-missing or "", nested values as JSON text, strings without
    NUL characters and trailing blanks)."""
    if column_type == "string":
        if sent is None:
            return ""
        text = sent if isinstance(sent, str) else json.dumps(sent, separators=(",", ":"),
                                                            ensure_ascii=False)
        return text.replace("\x00", "").rstrip(" ")
    if isinstance(sent, bool):
        return int(sent)
    return sent


@pytest.mark.parametrize("name", LOADABLE)
def test_standard_stream_lands_in_datatile_value_by_value(name: str, tmp_path: Path) -> None:
    with SandboxServer(tmp_path) as server:
        config = {**DT_CONFIG, "api_url": server.api_url("datatile"),
                  "created_databases_file": str(tmp_path / "created.json")}
        target = TargetDataTile(config=config, parse_env_config=False)
        target.listen(open(STREAMS / f"{name}.singer"))  # noqa: SIM115 - listen reads to the end
        databases = server.emulators["datatile"].snapshot()["databases"]
    created = json.loads((tmp_path / "created.json").read_text()).get(
        config["api_url"], {}) if (tmp_path / "created.json").exists() else {}
    expected = _records(name)
    assert set(created) == set(expected)  # a stream with no records: no database
    for stream, records in expected.items():
        database = databases[created[stream]]
        types = {v["label"]: (v["name"], v["type"]) for v in database["variables"]}
        rows = database["rows"]
        assert len(rows) == len(records), stream
        for got, sent in zip(rows, records, strict=True):
            for key, value in sent.items():
                column, kind = types[key]
                assert got[column] == _spss_value(value, kind), (stream, key, got[column])
        assert [v["name"] for v in database["variables"]] == unique_variable_names(
            [v["label"] for v in database["variables"]])


# -- target-datainsider in lake mode: the same suite, then each stream's Parquet read back --

DI_LAKE_CONFIG: dict[str, Any] = {**DI_CONFIG, "mode": "lake", "lake_path_prefix": "/suite"}

TestTargetDataInsiderLake = get_target_test_class(
    TargetDataInsider, config=DI_LAKE_CONFIG, parse_env_config=False
)


def _same_lake_value(got: object, sent: object) -> bool:
    """A value read back from Parquet (instants as `... .ffffffZ` text) against the tap's."""
    if isinstance(sent, (dict, list)):
        return json.loads(got) == sent  # type: ignore[arg-type]
    if isinstance(sent, str) and isinstance(got, str) and got.endswith("Z") and got != sent:
        return dt.datetime.fromisoformat(got) == _instant(sent)
    return got == sent


@pytest.mark.parametrize("name", LOADABLE)
def test_standard_stream_lands_in_the_datainsider_lake_value_by_value(name: str,
                                                                      tmp_path: Path) -> None:
    with SandboxServer(tmp_path) as server:
        config = {**DI_LAKE_CONFIG, "api_url": server.api_url("datainsider")}
        target = TargetDataInsider(config=config, parse_env_config=False)
        target.listen(open(STREAMS / f"{name}.singer"))  # noqa: SIM115 - listen reads to the end
        directories = server.emulators["datainsider"].snapshot()["lake"]["directories"]
    expected = _records(name)
    assert set(directories) == {f"/suite/{normalize_name(stream)}" for stream in expected}
    for stream, records in expected.items():
        rows = directories[f"/suite/{normalize_name(stream)}"]["rows"]
        assert len(rows) == len(records), stream
        for got, sent in zip(rows, records, strict=True):
            for key, value in sent.items():
                column = normalize_name(key)
                assert _same_lake_value(got[column], value), (stream, key, got[column], value)
