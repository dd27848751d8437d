"""The singer-sdk standard target tests, plus a check that their records really landed.

The SDK's target tests only check that nothing raises (a target that drops every record
passes). So after the standard suite, every SDK test stream that should load is run again
and the sandbox is compared with the input, record by record.
"""

from __future__ import annotations

import atexit
import json
import tempfile
from collections import defaultdict
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from singer_sdk.testing import get_target_test_class

from target_core.columns import identifier
from target_core.sandbox import SandboxServer
from target_graphitenote.sandbox import SANDBOX_TOKEN, SANDBOX_USER_CODE
from target_graphitenote.target import TargetGraphiteNote

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

TestTargetGraphiteNote = get_target_test_class(
    TargetGraphiteNote, config=CONFIG, parse_env_config=False
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
