"""End to end through Meltano: tap-jsonl -> target-graphitenote, target-datainsider and
target-usmart -> a sandbox in its own process.

The project's meltano.yml and demo/customers.jsonl are copied into a temp dir (pip_url of the
loader pointed at this checkout), so `.meltano/` (plugin venvs, state DB) never lands in the
repo tree and a developer's `.env` is not read. Needs `.venv-meltano` (`make test` builds it);
skipped only when it is missing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import sandbox_cmd

from target_datainsider.target import TargetDataInsider
from target_datatile.target import TargetDataTile
from target_usmart.sandbox import SANDBOX_KEY_ID as US_KEY_ID
from target_usmart.sandbox import SANDBOX_KEY_SECRET as US_KEY_SECRET
from target_usmart.sandbox import SANDBOX_ORG as US_ORG
from target_usmart.target import TargetUsmart

REPO = Path(__file__).resolve().parents[1]
MELTANO = Path(os.environ.get("MELTANO_BIN", REPO / ".venv-meltano" / "bin" / "meltano"))
CUSTOMERS = REPO / "demo" / "customers.jsonl"
DATASET = "sandbox-dataset"
STATE_ID = "dev:tap-jsonl-to-target-graphitenote"

pytestmark = pytest.mark.skipif(
    not MELTANO.exists(),
    reason=f"{MELTANO} is missing: `make test` (or `make meltano-venv`) installs meltano there",
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the Meltano project whose loader installs from this checkout."""
    root = tmp_path / "project"
    (root / "demo").mkdir(parents=True)
    text = (REPO / "meltano.yml").read_text(encoding="utf-8")
    assert text.count("pip_url: -e .\n") >= 2, "meltano.yml: expected `pip_url: -e .` loaders"
    text = text.replace("pip_url: -e .\n", f"pip_url: -e {REPO}\n")
    (root / "meltano.yml").write_text(text, encoding="utf-8")
    shutil.copy(CUSTOMERS, root / "demo" / "customers.jsonl")
    return root


def _env(sandbox_url: str) -> dict[str, str]:
    drop = ("TARGET_GRAPHITENOTE_", "TARGET_DATAINSIDER_", "TARGET_USMART_",
            "TARGET_DATATILE_", "TAP_JSONL_",
            "MELTANO_", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update(
        MELTANO_SEND_ANONYMOUS_USAGE_STATS="false",
        MELTANO_CLI_DISABLE_VERSION_CHECK="1",
        UV_PYTHON_DOWNLOADS="never",
        TARGET_GRAPHITENOTE_API_URL=f"{sandbox_url}/graphitenote/api",
        TARGET_DATAINSIDER_API_URL=f"{sandbox_url}/datainsider/api",
        TARGET_USMART_API_URL=f"{sandbox_url}/usmart",
        TARGET_DATATILE_API_URL=f"{sandbox_url}/datatile/api/v2",
    )
    return env


def _meltano(project: Path, env: dict[str, str], *args: str, timeout: float = 120) -> str:
    result = subprocess.run(
        [str(MELTANO), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, (
        f"meltano {' '.join(args)} exited {result.returncode}\n"
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-6000:]}"
    )
    return result.stdout


def _shown(data_dir: Path) -> dict[str, Any]:
    shown = subprocess.run(
        [*sandbox_cmd(), "show", "--data-dir", str(data_dir), "--max-rows", "100000"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return json.loads(shown.stdout)


def _dataset(data_dir: Path) -> dict[str, Any]:
    return _shown(data_dir)["graphitenote"]["datasets"][DATASET]


def _utc_text(value: str) -> str:
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def test_meltano_run_lands_every_customer(project: Path, sandbox_url: str, tmp_path: Path) -> None:
    env = _env(sandbox_url)
    _meltano(project, env, "install", timeout=300)
    _meltano(project, env, "run", "tap-jsonl", "target-graphitenote")

    expected = [json.loads(line) for line in CUSTOMERS.read_text(encoding="utf-8").splitlines()]
    assert len(expected) >= 100
    dataset = _dataset(tmp_path / "sandbox")
    assert dataset["row_count"] == len(expected)
    assert dataset["completes"] == 1  # dataset-complete once, after the last fill
    assert dataset["fills"] == 1  # 200 rows < batch_size_rows
    names = [column["name"] for column in dataset["columns"]]
    assert names[:9] == [
        "id", "name", "email", "country", "signup_at", "lifetime_value", "is_active", "tags",
        "address",
    ]  # fmt: skip
    assert not {"sdc_filename", "sdc_stream"} & set(names)  # dropped by the tap's stream map

    rows = dataset["rows"]
    assert [row["id"] for row in rows] == [record["id"] for record in expected]
    for row, record in zip(rows, expected, strict=True):
        where = f"customer {record['id']}"
        assert row["name"] == record["name"], where
        assert row["email"] == record["email"], where
        assert row["country"] == record["country"], where
        assert row["signup_at"] == _utc_text(record["signup_at"]), where
        assert row["lifetime_value"] == pytest.approx(record["lifetime_value"]), where
        assert row["is_active"] == ("true" if record["is_active"] else "false"), where
        assert json.loads(row["tags"]) == record["tags"], where
        if record["address"] is None:
            assert row["address"] is None, where
        else:
            assert json.loads(row["address"]) == record["address"], where

    # Meltano stored the STATE the target emitted once the rows were acknowledged
    assert STATE_ID in _meltano(project, env, "state", "list").split()
    state = json.loads(_meltano(project, env, "state", "get", STATE_ID))
    bookmark = state["singer_state"]["bookmarks"]["customers"]
    assert bookmark["replication_key"] == "_sdc_last_modified"
    (partition,) = bookmark["partitions"]
    assert partition["context"]["_sdc_filename"] == str(project / "demo" / "customers.jsonl")
    assert partition["replication_key_value"]

    # load_method overwrite (the dev environment): a second run replaces, never duplicates
    _meltano(project, env, "run", "--full-refresh", "tap-jsonl", "target-graphitenote")
    again = _dataset(tmp_path / "sandbox")
    assert again["row_count"] == len(expected)
    assert again["completes"] == 2
    assert [row["id"] for row in again["rows"]] == [record["id"] for record in expected]


def _customers() -> list[dict[str, Any]]:
    return [json.loads(line) for line in CUSTOMERS.read_text(encoding="utf-8").splitlines()]


def test_meltano_run_lands_every_customer_in_datainsider(project: Path, sandbox_url: str,
                                                         tmp_path: Path) -> None:
    env = _env(sandbox_url)
    _meltano(project, env, "install", "loader", "target-datainsider", timeout=300)
    _meltano(project, env, "install", "extractor", "tap-jsonl", timeout=300)
    _meltano(project, env, "run", "tap-jsonl", "target-datainsider")
    _meltano(project, env, "run", "tap-jsonl", "target-datainsider")  # overwrite: no doubles

    expected = _customers()
    table = _shown(tmp_path / "sandbox")["datainsider"]["databases"]["demo"]["tables"][
        "customers"]
    assert (table["truncates"], table["row_count"]) == (2, len(expected))
    assert table["csv_calls"] == 2  # some addresses are null: the batch goes as CSV
    types = {column["name"]: column["class_name"] for column in table["columns"]}
    assert list(types.items())[:9] == [
        ("id", "int64"), ("name", "string"), ("email", "string"), ("country", "string"),
        ("signup_at", "datetime64"), ("lifetime_value", "double"), ("is_active", "bool"),
        ("tags", "string"), ("address", "string"),
    ]  # fmt: skip
    assert not {"_sdc_filename", "_sdc_stream"} & set(types)  # dropped by the tap's stream map
    rows = table["rows"]
    assert [row["id"] for row in rows] == [record["id"] for record in expected]
    for row, record in zip(rows, expected, strict=True):
        where = f"customer {record['id']}"
        assert row["name"] == record["name"], where
        assert row["email"] == record["email"], where
        assert row["signup_at"][:19] == _utc_text(record["signup_at"]), where
        assert row["lifetime_value"] == record["lifetime_value"], where
        assert row["is_active"] is record["is_active"], where
        assert json.loads(row["tags"]) == record["tags"], where
        if record["address"] is None:
            assert row["address"] is None, where  # the batch went as CSV: NULL kept
        else:
            assert json.loads(row["address"]) == record["address"], where

    # lake mode: the same job with one setting changed lands Parquet files in a FullSync
    _meltano(project, {**env, "TARGET_DATAINSIDER_MODE": "lake"}, "run", "tap-jsonl",
             "target-datainsider")
    lake = _shown(tmp_path / "sandbox")["datainsider"]["lake"]
    assert [s["sync_type"] for s in lake["syncs"]] == ["FullSync"]
    rows = lake["directories"]["/data/singer/customers"]["rows"]
    assert [row["id"] for row in rows] == [record["id"] for record in expected]
    for row, record in zip(rows, expected, strict=True):
        assert row["lifetime_value"] == record["lifetime_value"], record["id"]
        assert row["signup_at"][:19] == _utc_text(record["signup_at"]), record["id"]


def test_meltano_yml_declares_every_datainsider_setting_and_both_keys_sensitive() -> None:
    project = yaml.safe_load((REPO / "meltano.yml").read_text(encoding="utf-8"))
    (loader,) = [p for p in project["plugins"]["loaders"] if p["name"] == "target-datainsider"]
    settings = {setting["name"]: setting for setting in loader["settings"]}
    assert set(TargetDataInsider.config_jsonschema["properties"]) <= set(settings)
    sensitive = {name for name, setting in settings.items() if setting.get("sensitive")}
    assert sensitive == {"api_key", "lake_api_key"}


def test_meltano_run_lands_every_customer_in_usmart(project: Path, sandbox_url: str,
                                                    tmp_path: Path) -> None:
    """Two runs (overwrite, the dev environment): customers.csv created, then revised; the
    output pipeline serves the second revision, read back through the read route."""
    env = _env(sandbox_url)
    _meltano(project, env, "install", "loader", "target-usmart", timeout=300)
    _meltano(project, env, "install", "extractor", "tap-jsonl", timeout=300)
    _meltano(project, env, "run", "tap-jsonl", "target-usmart")
    _meltano(project, env, "run", "tap-jsonl", "target-usmart")

    dataset = _shown(tmp_path / "sandbox")["usmart"]["datasets"][DATASET]
    (file,) = dataset["files"].values()
    assert file["fileName"] == "customers.csv"
    assert [r["revision"] for r in file["revisions"]] == [1, 2]
    (pipeline,) = dataset["resourceContainers"]
    assert len(dataset["resourceContainers"][pipeline]["refreshes"]) == 2
    read = requests.get(
        f"{sandbox_url}/usmart/org/{US_ORG}/{pipeline}/latest/urql?limit(1000,0)",
        headers={"api-key-id": US_KEY_ID, "api-key-secret": US_KEY_SECRET}, timeout=30)
    assert read.status_code == 200, read.text
    rows = {row["id"]: row for row in json.loads(read.content, parse_float=Decimal)}
    expected = [json.loads(line, parse_float=Decimal)
                for line in CUSTOMERS.read_text(encoding="utf-8").splitlines()]
    assert sorted(rows) == [record["id"] for record in expected]
    assert not {"_sdc_filename", "_sdc_stream"} & set(next(iter(rows.values())))
    for record in expected:
        row, where = rows[record["id"]], f"customer {record['id']}"
        for key in ("name", "email", "country"):
            assert row[key] == record[key], where
        assert row["signup_at"].endswith("Z"), where  # ISO 8601 in UTC, the instant kept
        assert _utc_text(row["signup_at"]) == _utc_text(record["signup_at"]), where
        assert row["lifetime_value"] == record["lifetime_value"], where  # the tap's digits
        assert row["is_active"] is record["is_active"], where
        assert json.loads(row["tags"]) == record["tags"], where
        if record["address"] is None:
            assert row["address"] is None, where
        else:
            assert json.loads(row["address"], parse_float=Decimal) == record["address"], where


def test_meltano_yml_declares_every_usmart_setting_and_both_keys_sensitive() -> None:
    project = yaml.safe_load((REPO / "meltano.yml").read_text(encoding="utf-8"))
    (loader,) = [p for p in project["plugins"]["loaders"] if p["name"] == "target-usmart"]
    settings = {setting["name"]: setting for setting in loader["settings"]}
    assert set(TargetUsmart.config_jsonschema["properties"]) <= set(settings)
    sensitive = {name for name, setting in settings.items() if setting.get("sensitive")}
    assert sensitive == {"api_key_id", "api_key_secret"}


def _iso_utc(value: str) -> str:
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def test_meltano_run_lands_every_customer_in_datatile(project: Path, sandbox_url: str,
                                                      tmp_path: Path) -> None:
    env = _env(sandbox_url)
    _meltano(project, env, "install", "loader", "target-datatile", timeout=300)
    _meltano(project, env, "install", "extractor", "tap-jsonl", timeout=300)
    _meltano(project, env, "run", "tap-jsonl", "target-datatile")
    _meltano(project, env, "run", "--full-refresh", "tap-jsonl", "target-datatile")  # reload

    expected = _customers()
    shown = _shown(tmp_path / "sandbox")["datatile"]
    database = shown["databases"]["sandbox-database"]
    assert database["row_count"] == len(expected)  # overwrite (reload): no doubles
    assert [job["action"] for job in shown["jobs"]] == ["reload", "reload"]
    kinds = {v["name"]: v["type"] for v in database["variables"]}
    assert list(kinds.items())[:9] == [
        ("id", "numeric"), ("name", "string"), ("email", "string"), ("country", "string"),
        ("signup_at", "datetime"), ("lifetime_value", "numeric"), ("is_active", "numeric"),
        ("tags", "string"), ("address", "string"),
    ]  # fmt: skip
    rows = database["rows"]
    assert [row["id"] for row in rows] == [record["id"] for record in expected]
    for row, record in zip(rows, expected, strict=True):
        where = f"customer {record['id']}"
        assert row["name"] == record["name"], where
        assert row["email"] == record["email"], where
        assert row["signup_at"] == _iso_utc(record["signup_at"]), where
        assert row["lifetime_value"] == record["lifetime_value"], where
        assert row["is_active"] == int(record["is_active"]), where
        assert json.loads(row["tags"]) == record["tags"], where
        if record["address"] is None:
            assert row["address"] == "", where  # SPSS has no missing string
        else:
            assert json.loads(row["address"]) == record["address"], where
    state = json.loads(_meltano(project, env, "state", "get",
                                "dev:tap-jsonl-to-target-datatile"))
    assert state["singer_state"]["bookmarks"]["customers"]["partitions"]


def test_meltano_yml_declares_every_datatile_setting_and_the_token_sensitive() -> None:
    project = yaml.safe_load((REPO / "meltano.yml").read_text(encoding="utf-8"))
    (loader,) = [p for p in project["plugins"]["loaders"] if p["name"] == "target-datatile"]
    settings = {setting["name"]: setting for setting in loader["settings"]}
    assert set(TargetDataTile.config_jsonschema["properties"]) <= set(settings)
    sensitive = {name for name, setting in settings.items() if setting.get("sensitive")}
    assert sensitive == {"token"}
