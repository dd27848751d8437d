"""The sandbox itself, over real HTTP on loopback: server machinery and the Graphite Note emulator.

The emulator has to be right before it can judge a target, so these tests pin down what it
accepts and refuses, and that the cross-cutting faults behave as documented.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from target_core.sandbox import SandboxServer
from target_core.sandbox.faults import FaultRule
from target_graphitenote.sandbox import (
    SANDBOX_DATASET_CODE,
    SANDBOX_TOKEN,
    SANDBOX_USER_CODE,
    GraphiteNoteEmulator,
)

AUTH = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}
COLUMNS = [
    {"name": "invoice", "type": "dimension", "subtype": "text"},
    {"name": "quantity", "type": "measure", "subtype": "numeric", "format": "#,###.##"},
    {"name": "day", "type": "dimension", "subtype": "date"},
    {"name": "at", "type": "dimension", "subtype": "datetime", "alias": "Invoice time"},
]
ROWS = [
    ["536365", 6, "2010-12-01", "2010-12-01 08:26:00"],
    ["536366", 2.5, None, "2010-12-01 08:28:00"],
    [None, None, "2010-12-02", None],
]


def _script(name: str) -> str:
    found = Path(sys.executable).parent / name
    return str(found) if found.exists() else (shutil.which(name) or name)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SandboxServer]:
    sandbox = SandboxServer(tmp_path / "data").start()
    yield sandbox
    sandbox.stop()


class Api:
    """Calls the Graphite Note emulator the way a target would."""

    def __init__(self, server: SandboxServer):
        self.server = server
        self.base = server.api_url("graphitenote")
        self.session = requests.Session()

    def post(self, route: str, body: Any, headers: dict[str, str] | None = None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.session.post(
            f"{self.base}/{route}",
            data=data,
            headers=AUTH if headers is None else headers,
            timeout=10,
        )

    def fill(self, rows: list[list[Any]], columns=COLUMNS, code=SANDBOX_DATASET_CODE, **extra):
        body = {
            "user-code": SANDBOX_USER_CODE,
            "dataset-code": code,
            "columns": columns,
            "insert-data": json.dumps(rows),
            **extra,
        }
        return self.post("dataset-fill", body)

    def control(self, method: str, route: str, body: Any = None) -> Any:
        response = self.session.request(
            method, f"{self.server.url}/_sandbox/{route}", json=body, timeout=10
        )
        assert response.status_code == 200, response.text
        return response.json()

    def dataset(self, code: str = SANDBOX_DATASET_CODE) -> dict[str, Any]:
        return self.control("GET", "state")["graphitenote"]["datasets"][code]


@pytest.fixture
def api(server: SandboxServer) -> Api:
    return Api(server)


def _error(response: requests.Response, status: int) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status
    assert SANDBOX_TOKEN not in response.text
    return error["message"]


# auth and required fields --------------------------------------------------------------------
def test_auth_missing_or_wrong_token_is_401(api: Api) -> None:
    body = {"user-code": SANDBOX_USER_CODE, "dataset-code": SANDBOX_DATASET_CODE}
    _error(api.post("dataset-complete", body, headers={}), 401)
    _error(api.post("dataset-complete", body, headers={"Authorization": "Bearer nope"}), 401)
    _error(api.post("dataset-complete", body, headers={"Authorization": SANDBOX_TOKEN}), 401)


def test_user_code_missing_is_400_and_foreign_is_403(api: Api) -> None:
    assert "user-code" in _error(api.post("dataset-complete", {"dataset-code": "x"}), 400)
    body = {"user-code": "someone-else", "dataset-code": SANDBOX_DATASET_CODE}
    _error(api.post("dataset-complete", body), 403)


def test_unknown_dataset_is_404(api: Api) -> None:
    _error(api.fill(ROWS, code="000000000000"), 404)
    body = {"user-code": SANDBOX_USER_CODE, "dataset-code": "000000000000"}
    _error(api.post("dataset-complete", body), 404)


@pytest.mark.parametrize("missing", ["dataset-code", "columns", "insert-data"])
def test_fill_missing_field_is_400(api: Api, missing: str) -> None:
    body = {
        "user-code": SANDBOX_USER_CODE,
        "dataset-code": SANDBOX_DATASET_CODE,
        "columns": COLUMNS,
        "insert-data": json.dumps(ROWS),
    }
    del body[missing]
    assert missing in _error(api.post("dataset-fill", body), 400)


def test_bad_json_wrong_method_and_unknown_paths(api: Api, server: SandboxServer) -> None:
    _error(api.post("dataset-fill", b"{not json"), 400)
    response = api.session.get(f"{api.base}/dataset-fill", headers=AUTH, timeout=10)
    _error(response, 405)
    _error(api.post("dataset-list", {"user-code": SANDBOX_USER_CODE}), 404)
    assert api.session.get(f"{server.url}/nowhere", timeout=10).status_code == 404


def test_bad_columns_are_400(api: Api) -> None:
    bad_type = [{"name": "a", "type": "metric", "subtype": "numeric"}]
    assert "type" in _error(api.fill([[1]], columns=bad_type), 400)
    bad_subtype = [{"name": "a", "type": "measure", "subtype": "boolean"}]
    assert "subtype" in _error(api.fill([[1]], columns=bad_subtype), 400)
    _error(api.fill([], columns=[]), 400)


# fills ---------------------------------------------------------------------------------------
def test_compressed_and_plain_fills_store_the_same_rows(api: Api) -> None:
    assert api.fill(ROWS).json() == {
        "data": {
            "status": "success",
            "details": {"dataset-code": SANDBOX_DATASET_CODE, "rows-count": 3},
        }
    }
    packed = base64.b64encode(gzip.compress(json.dumps(ROWS).encode())).decode()
    body = {
        "user-code": SANDBOX_USER_CODE,
        "dataset-code": SANDBOX_DATASET_CODE,
        "columns": COLUMNS,
        "insert-data": packed,
        "compressed": True,
    }
    response = api.post("dataset-fill", body)
    assert response.json()["data"]["details"]["rows-count"] == 3
    dataset = api.dataset()
    assert dataset["row_count"] == 6
    assert dataset["rows"][:3] == dataset["rows"][3:]
    assert dataset["rows"][0] == {
        "invoice": "536365",
        "quantity": 6,
        "day": "2010-12-01",
        "at": "2010-12-01 08:26:00",
    }
    assert dataset["columns"][3]["alias"] == "Invoice time"
    assert dataset["fills"] == 2


@pytest.mark.parametrize(
    "insert_data",
    ["not base64!", base64.b64encode(b"plain, not gzip").decode(), json.dumps(ROWS)],
)
def test_compressed_insert_data_that_does_not_decode_is_400(api: Api, insert_data: str) -> None:
    body = {
        "user-code": SANDBOX_USER_CODE,
        "dataset-code": SANDBOX_DATASET_CODE,
        "columns": COLUMNS,
        "insert-data": insert_data,
        "compressed": True,
    }
    assert "insert-data" in _error(api.post("dataset-fill", body), 400)


def test_append_false_truncates_and_resets_columns(api: Api) -> None:
    api.fill(ROWS)
    extra = [{"name": "extra", "type": "dimension", "subtype": "text"}]
    api.fill([["x"]], columns=extra)
    dataset = api.dataset()
    assert [column["name"] for column in dataset["columns"]] == [
        "invoice",
        "quantity",
        "day",
        "at",
        "extra",
    ]
    assert dataset["row_count"] == 4

    only = [{"name": "n", "type": "measure", "subtype": "numeric"}]
    response = api.fill([[1], [2]], columns=only, append=False)
    assert response.json()["data"]["details"]["rows-count"] == 2
    dataset = api.dataset()
    assert dataset["rows"] == [{"n": 1}, {"n": 2}]
    assert [column["name"] for column in dataset["columns"]] == ["n"]
    assert (dataset["row_count"], dataset["truncates"], dataset["fills"]) == (2, 1, 3)


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        ([["a", 1, None, None], ["b", 2, None]], "row 1"),
        ([["a", "6", None, None]], "'quantity'"),
        ([["a", True, None, None]], "'quantity'"),
        ([["a", 1, "2010-13-01", None]], "'day'"),
        ([["a", 1, None, "2010-12-01T08:26:00"]], "'at'"),
        ([[5, 1, None, None]], "'invoice'"),
        ({"not": "a list"}, "list"),
    ],
)
def test_bad_rows_are_400_and_store_nothing(api: Api, rows: Any, needle: str) -> None:
    assert needle in _error(api.fill(rows), 400)
    assert api.dataset()["row_count"] == 0


def test_create_then_fill_then_complete(api: Api) -> None:
    response = api.post(
        "dataset-create",
        {"user-code": SANDBOX_USER_CODE, "name": "Invoices", "columns": COLUMNS},
    )
    data = response.json()["data"]
    code = data["dataset-code"]
    assert len(code) == 12 and all(char in "0123456789abcdef" for char in code)
    assert data == {"dataset-code": code, "table-name": f"dataset_{code}", "columns": 4}
    _error(api.post("dataset-create", {"user-code": SANDBOX_USER_CODE}), 400)

    api.fill(ROWS, code=code)
    api.fill(ROWS[:1], code=code)
    complete = {"user-code": SANDBOX_USER_CODE, "dataset-code": code}
    first = api.post("dataset-complete", complete).json()
    assert first["data"] == {
        "status": "success",
        "details": {"dataset-code": code, "rows-count": 4},
    }
    api.post("dataset-complete", complete)
    dataset = api.dataset(code)
    assert (dataset["name"], dataset["completes"], dataset["row_count"]) == ("Invoices", 2, 4)


def test_overlapping_fill_is_409(api: Api, server: SandboxServer) -> None:
    emulator = server.emulators["graphitenote"]
    assert isinstance(emulator, GraphiteNoteEmulator)
    with emulator.busy.hold(SANDBOX_DATASET_CODE):
        _error(api.fill(ROWS), 409)
    assert api.fill(ROWS).status_code == 200


# cross-cutting limits ------------------------------------------------------------------------
def test_body_over_limit_is_413_and_connection_stays_usable(api: Api) -> None:
    api.control("POST", "settings", {"max_body_bytes": 2000})
    big = [["x" * 50, 1, None, None]] * 100
    _error(api.fill(big), 413)
    assert api.fill(ROWS).status_code == 200  # same keep-alive session
    assert api.dataset()["row_count"] == 3


def test_rate_limit_is_429_with_retry_after(api: Api) -> None:
    api.control("POST", "settings", {"rate_limit_per_minute": 2})
    assert api.fill(ROWS).status_code == 200
    assert api.fill(ROWS).status_code == 200
    refused = api.fill(ROWS)
    _error(refused, 429)
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert api.dataset()["row_count"] == 6
    api.control("POST", "settings", {"rate_limit_per_minute": 0})
    assert api.fill(ROWS).status_code == 200


# faults --------------------------------------------------------------------------------------
def test_fault_status_with_retry_after(api: Api) -> None:
    rule = {"path": "/graphitenote/api/dataset-fill", "status": 503, "times": 2, "retry_after": 1}
    assert api.control("POST", "faults", rule)["faults"][0]["times"] == 2
    for _ in range(2):
        response = api.fill(ROWS)
        _error(response, 503)
        assert response.headers["Retry-After"] == "1"
    assert api.fill(ROWS).status_code == 200
    assert api.dataset()["row_count"] == 3
    faults = [entry["fault"] for entry in api.control("GET", "requests")]
    assert faults == ["status=503", "status=503", None]


def _plain_fill(api: Api) -> requests.Response:
    """A fill with plain requests (no retries), to see what the connection does."""
    return requests.post(
        f"{api.base}/dataset-fill",
        json={
            "user-code": SANDBOX_USER_CODE,
            "dataset-code": SANDBOX_DATASET_CODE,
            "columns": COLUMNS,
            "insert-data": json.dumps(ROWS),
        },
        headers=AUTH,
        timeout=10,
    )


def test_fault_drop_closes_without_answer_and_applies_nothing(api: Api) -> None:
    api.control("POST", "faults", {"path": "/graphitenote/api/dataset-fill", "drop": True})
    with pytest.raises(requests.ConnectionError):
        _plain_fill(api)
    assert api.dataset()["row_count"] == 0
    assert api.fill(ROWS).status_code == 200


def test_fault_drop_after_applies_then_closes_without_answer(api: Api) -> None:
    """The answer lost on the way back: the client sees a dropped connection, yet the fill
    is stored (what makes delivery at-least-once)."""
    api.control("POST", "faults", {"path": "/graphitenote/api/dataset-fill",
                                   "drop_after": True})
    with pytest.raises(requests.ConnectionError):
        _plain_fill(api)
    assert api.dataset()["row_count"] == 3
    entry = api.control("GET", "requests")[-1]
    assert (entry["status"], entry["fault"]) == (200, "applied+drop")
    with pytest.raises(ValueError, match="drop_after"):
        FaultRule.from_json({"drop_after": True, "status": 500})


def test_fault_delay_then_normal_answer(api: Api) -> None:
    api.control("POST", "faults", {"delay": 0.4})  # no path: any API path
    started = time.monotonic()
    assert api.fill(ROWS).status_code == 200
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    assert api.fill(ROWS).status_code == 200
    assert time.monotonic() - started < 0.4


def test_faults_can_be_cleared(api: Api) -> None:
    api.control("POST", "faults", [{"status": 500, "times": 5}, {"drop": True}])
    assert len(api.control("GET", "faults")["faults"]) == 2
    assert api.control("DELETE", "faults") == {"faults": []}
    assert api.fill(ROWS).status_code == 200
    response = api.session.post(f"{api.server.url}/_sandbox/faults", json={"status": 1000})
    assert response.status_code == 400


# persistence, log, control -------------------------------------------------------------------
def test_state_survives_restart_and_reset_wipes_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with SandboxServer(data_dir) as first:
        Api(first).fill(ROWS)
    with SandboxServer(data_dir) as second:
        api = Api(second)
        assert api.dataset()["row_count"] == 3
        api.fill(ROWS[:1])
        assert api.dataset()["rows"][3] == api.dataset()["rows"][0]
        assert api.control("POST", "reset") == {"ok": True}
        assert api.dataset()["row_count"] == 0
        assert api.control("GET", "requests") == []


def test_half_written_batch_from_a_crash_is_cut_off_on_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with SandboxServer(data_dir) as first:
        Api(first).fill(ROWS)
    rows_file = data_dir / "graphitenote" / "rows" / f"{SANDBOX_DATASET_CODE}.jsonl"
    with open(rows_file, "ab") as handle:  # appended, but meta.json never recorded it
        handle.write(b'[{"invoice": "lost"}]\n[{"invoice": "half')
    with SandboxServer(data_dir) as second:
        api = Api(second)
        api.fill(ROWS[:1])
        state = api.control("GET", "state?max_rows=10")["graphitenote"]
        dataset = state["datasets"][SANDBOX_DATASET_CODE]
        assert dataset["row_count"] == 4
        assert [row["invoice"] for row in dataset["rows"]] == [
            "536365",
            "536366",
            None,
            "536365",
        ]


def test_request_log_never_holds_credentials(api: Api, server: SandboxServer) -> None:
    api.fill(ROWS)
    api.post(
        "dataset-complete",
        {"user-code": SANDBOX_USER_CODE},
        headers={"Authorization": "Bearer leak"},
    )
    log = (server.data_dir / "requests.jsonl").read_text()
    assert SANDBOX_TOKEN not in log and "leak" not in log and "Authorization" not in log
    entries = api.control("GET", "requests")
    assert [entry["status"] for entry in entries] == [200, 401]
    assert entries[0]["path"] == "/graphitenote/api/dataset-fill"
    assert entries[0]["request_bytes"] > 0 and entries[0]["duration_ms"] >= 0


def test_refuses_non_loopback_host(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        SandboxServer(tmp_path, host="0.0.0.0")


# the console script ----------------------------------------------------------------------------
def test_cli_serve_with_fault_then_show_and_reset(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    fault = json.dumps({"path": "/graphitenote/api/dataset-complete", "status": 502})
    process = subprocess.Popen(
        [
            _script("target-sandbox"),
            "serve",
            "--data-dir",
            str(data_dir),
            "--port",
            "0",
            "--fault",
            fault,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("sandbox listening on http://127.0.0.1:")
        base = line.rsplit(" ", 1)[1]
        assert requests.get(f"{base}/_sandbox/health", timeout=5).json() == {"ok": True}
        api_url = f"{base}/graphitenote/api"
        body = {
            "user-code": SANDBOX_USER_CODE,
            "dataset-code": SANDBOX_DATASET_CODE,
            "columns": COLUMNS,
            "insert-data": json.dumps(ROWS),
        }
        assert requests.post(f"{api_url}/dataset-fill", json=body, headers=AUTH).ok
        complete = {"user-code": SANDBOX_USER_CODE, "dataset-code": SANDBOX_DATASET_CODE}
        response = requests.post(f"{api_url}/dataset-complete", json=complete, headers=AUTH)
        assert response.status_code == 502
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0

    shown = subprocess.run(
        [_script("target-sandbox"), "show", "--data-dir", str(data_dir), "--max-rows", "2"],
        capture_output=True,
        text=True,
        check=True,
    )
    dataset = json.loads(shown.stdout)["graphitenote"]["datasets"][SANDBOX_DATASET_CODE]
    assert dataset["row_count"] == 3
    assert dataset["rows"] == [
        {"invoice": "536365", "quantity": 6, "day": "2010-12-01", "at": "2010-12-01 08:26:00"},
        {"invoice": "536366", "quantity": 2.5, "day": None, "at": "2010-12-01 08:28:00"},
    ]

    subprocess.run(
        [_script("target-sandbox"), "reset", "--data-dir", str(data_dir)],
        capture_output=True,
        check=True,
    )
    shown = subprocess.run(
        [_script("target-sandbox"), "show", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(shown.stdout)["graphitenote"]["datasets"][SANDBOX_DATASET_CODE]["rows"] == []


def _shown(data_dir: Path, *args: str) -> dict:
    """What `target-sandbox show` prints, every platform."""
    shown = subprocess.run([_script("target-sandbox"), "show", "--data-dir", str(data_dir),
                            *args], capture_output=True, text=True, check=True)
    return json.loads(shown.stdout)


def _show(data_dir: Path, *args: str) -> dict:
    return _shown(data_dir, *args)["graphitenote"]["datasets"]


def test_cli_show_prints_20_rows_per_dataset_unless_told_and_filters(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with SandboxServer(data_dir) as server:
        api = Api(server)
        for _ in range(10):
            assert api.fill(ROWS).status_code == 200  # 30 rows
        created = requests.post(f"{api.base}/dataset-create", headers=AUTH, timeout=10, json={
            "user-code": SANDBOX_USER_CODE, "name": "other", "columns": COLUMNS}).json()
        other = created["data"]["dataset-code"]
    datasets = _show(data_dir)
    assert datasets[SANDBOX_DATASET_CODE]["row_count"] == 30
    assert len(datasets[SANDBOX_DATASET_CODE]["rows"]) == 20
    assert len(_show(data_dir, "--max-rows", "25")[SANDBOX_DATASET_CODE]["rows"]) == 25
    assert set(datasets) == {SANDBOX_DATASET_CODE, other}
    assert set(_show(data_dir, "--dataset", other)) == {other}


def test_cli_show_dataset_filters_every_platform_by_name(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    whole = _shown(data_dir)
    assert set(whole["datatile"]["databases"]) == {"sandbox-database"}
    assert set(whole["usmart"]["datasets"]) == {"sandbox-dataset"}
    shown = _shown(data_dir, "--dataset", "sandbox-database")
    assert set(shown["datatile"]["databases"]) == {"sandbox-database"}
    assert shown["usmart"]["datasets"] == {}
    assert shown["graphitenote"]["datasets"] == {}
    assert shown["datatile"]["folders"] == whole["datatile"]["folders"]  # not a named place
    shown = _shown(data_dir, "--dataset", "sandbox-dataset")
    assert set(shown["usmart"]["datasets"]) == {"sandbox-dataset"}
    assert shown["datatile"]["databases"] == {}
    assert shown["datainsider"]["databases"] == {}


def test_cli_reset_refuses_while_a_server_runs_on_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    reset = [_script("target-sandbox"), "reset", "--data-dir", str(data_dir)]
    with SandboxServer(data_dir) as server:
        assert Api(server).fill(ROWS).status_code == 200
        refused = subprocess.run(reset, capture_output=True, text=True, check=False)
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            f"target-sandbox: a server is running on {data_dir} ({server.url}): stop it "
            f"first, or reset it live with POST {server.url}/_sandbox/reset")
        assert Api(server).dataset()["row_count"] == 3  # nothing was wiped under it
    done = subprocess.run(reset, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert _show(data_dir)[SANDBOX_DATASET_CODE]["row_count"] == 0


def test_cli_reset_ignores_the_file_of_a_killed_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "server.json").write_text(json.dumps({"pid": 2**22 + 7,
                                                      "url": "http://127.0.0.1:9"}))
    done = subprocess.run([_script("target-sandbox"), "reset", "--data-dir", str(data_dir)],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
