"""The DataTile emulator over real HTTP, fed SPSS files written by the target's own writer.

The emulator has to be right before it can judge the target: these tests pin down what it
accepts, refuses, and what a processing job does to a database.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from datatile_files import PEOPLE, PEOPLE_SCHEMA, write_spss

from target_core.sandbox import SandboxServer
from target_datatile.sandbox import (
    SANDBOX_DATABASE,
    SANDBOX_FOLDER,
    SANDBOX_TOKEN,
    DataTileEmulator,
)

AUTH = {"token": SANDBOX_TOKEN}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SandboxServer]:
    sandbox = SandboxServer(tmp_path / "data", emulators=[DataTileEmulator]).start()
    yield sandbox
    sandbox.stop()


class Api:
    """Calls the emulator the way the target does (multipart field `dataset`)."""

    def __init__(self, server: SandboxServer, tmp_path: Path):
        self.base = server.api_url("datatile")
        self.emulator: DataTileEmulator = server.emulators["datatile"]  # type: ignore[assignment]
        self.tmp = tmp_path
        self.http = requests.Session()

    def upload(self, action: str, target: str, path: Path, headers: dict | None = None,
               **fields: str) -> requests.Response:
        with path.open("rb") as handle:
            return self.http.post(f"{self.base}/upload/{action}/{target}",
                                  headers=AUTH if headers is None else headers,
                                  files={"dataset": (path.name, handle)}, data=fields, timeout=10)

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"{self.base}/jobs/{job_id}", headers=AUTH, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def finished(self, job_id: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in ("completed", "failed"):
                return job
            assert time.monotonic() < deadline, f"job still {job['status']}"
            time.sleep(0.02)

    def load(self, action: str, target: str, path: Path) -> dict[str, Any]:
        response = self.upload(action, target, path)
        assert response.status_code == 202, response.text
        return self.finished(response.json()["id"])

    def state(self) -> dict[str, Any]:
        return self.emulator.snapshot()

    def database(self, key: str = SANDBOX_DATABASE) -> dict[str, Any]:
        return self.state()["databases"][key]

    def file(self, name: str, records: list[dict], schema: dict = PEOPLE_SCHEMA,
             **options: Any) -> Path:
        return write_spss(self.tmp / name, schema, records, **options)


@pytest.fixture
def api(server: SandboxServer, tmp_path: Path) -> Api:
    return Api(server, tmp_path)


PEOPLE_ROWS = [
    {"id": 1, "full_name": "Ana Müller", "active": 1, "born": "1990-05-17",
     "seen_at": "2024-02-29T23:59:58.250000", "score": 12.5, "tags": '["a","ü"]'},
    {"id": 2, "full_name": "", "active": 0, "born": "0001-01-01",
     "seen_at": "2024-02-29T23:00:00.000000", "score": None, "tags": ""},
    {"id": 3, "full_name": "東京 🙂", "active": None, "born": None, "seen_at": None,
     "score": -0.125, "tags": "[]"},
]


def test_a_fresh_sandbox_has_a_folder_and_an_empty_database(api: Api) -> None:
    state = api.state()
    assert SANDBOX_FOLDER in state["folders"]
    database = state["databases"][SANDBOX_DATABASE]
    assert database["folder"] == SANDBOX_FOLDER
    assert (database["variables"], database["rows"], database["row_count"]) == ([], [], 0)
    assert state["jobs"] == []


def test_the_token_header_is_required(api: Api) -> None:
    path = api.file("people.zsav", PEOPLE)
    missing = api.upload("reload", SANDBOX_DATABASE, path, headers={})
    wrong = api.upload("reload", SANDBOX_DATABASE, path, headers={"token": "nope"})
    bearer = api.upload("reload", SANDBOX_DATABASE, path,
                        headers={"Authorization": f"Bearer {SANDBOX_TOKEN}"})
    assert [r.status_code for r in (missing, wrong, bearer)] == [401, 401, 401]
    assert "token" in missing.json()["error"]["message"]
    assert api.state()["jobs"] == []


def test_create_makes_a_database_in_the_folder_and_reports_its_hash(api: Api) -> None:
    response = api.upload("create", SANDBOX_FOLDER, api.file("people.zsav", PEOPLE))
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    job = api.finished(response.json()["id"])
    assert job["status"] == "completed", job
    new_hash = job["database"]
    assert new_hash and new_hash != SANDBOX_DATABASE
    database = api.database(new_hash)
    assert database["folder"] == SANDBOX_FOLDER
    assert database["name"] == "people"
    assert database["rows"] == PEOPLE_ROWS
    variables = {v["name"]: v for v in database["variables"]}
    assert list(variables) == ["id", "full_name", "active", "born", "seen_at", "score", "tags"]
    assert variables["full_name"]["label"] == "full name"
    assert variables["full_name"]["format"] == "A11"  # "Ana Müller" is 11 UTF-8 bytes
    assert variables["active"]["value_labels"] == {"0": "false", "1": "true"}
    assert (variables["born"]["type"], variables["seen_at"]["type"]) == ("date", "datetime")
    assert api.database()["rows"] == []  # the seeded database is untouched


def test_reload_replaces_variables_and_rows(api: Api) -> None:
    assert api.load("reload", SANDBOX_DATABASE, api.file("a.zsav", PEOPLE))["status"] == \
        "completed"
    other = {"properties": {"id": {"type": "integer"}, "city": {"type": "string"}}}
    job = api.load("reload", SANDBOX_DATABASE,
                   api.file("b.zsav", [{"id": 9, "city": "Split"}], schema=other))
    assert job["status"] == "completed"
    assert job["database"] == SANDBOX_DATABASE
    database = api.database()
    assert [v["name"] for v in database["variables"]] == ["id", "city"]
    assert database["rows"] == [{"id": 9, "city": "Split"}]
    assert database["row_count"] == 1


def test_append_adds_rows_and_merges_new_variables(api: Api) -> None:
    api.load("reload", SANDBOX_DATABASE, api.file("a.zsav", PEOPLE[:1]))
    wave = {"properties": {"id": {"type": "integer"}, "score": {"type": "number"},
                           "wave": {"type": "string"}}}
    job = api.load("append", SANDBOX_DATABASE,
                   api.file("b.zsav", [{"id": 7, "score": 1.5, "wave": "w2"}], schema=wave))
    assert job["status"] == "completed", job
    database = api.database()
    names = [v["name"] for v in database["variables"]]
    assert names == ["id", "full_name", "active", "born", "seen_at", "score", "tags", "wave"]
    first, second = database["rows"]
    assert first == {**PEOPLE_ROWS[0], "wave": ""}
    assert second == {"id": 7, "full_name": "", "active": None, "born": None,
                      "seen_at": None, "score": 1.5, "tags": "", "wave": "w2"}
    assert database["row_count"] == 2


def test_append_with_a_type_clash_fails_the_job_and_changes_nothing(api: Api) -> None:
    api.load("reload", SANDBOX_DATABASE, api.file("a.zsav", PEOPLE))
    before = api.database()
    clash = {"properties": {"id": {"type": "integer"}, "score": {"type": "string"}}}
    job = api.load("append", SANDBOX_DATABASE,
                   api.file("b.zsav", [{"id": 4, "score": "high"}], schema=clash))
    assert job["status"] == "failed"
    assert "score" in job["message"] and "string" in job["message"]
    assert api.database() == before


def test_destinations_are_checked(api: Api) -> None:
    path = api.file("people.zsav", PEOPLE)
    assert api.upload("create", "root", path).status_code == 400
    assert api.upload("create", "no-such-folder", path).status_code == 404
    assert api.upload("append", "no-such-database", path).status_code == 404
    assert api.upload("create", SANDBOX_DATABASE, path).status_code == 404  # not a folder
    assert api.upload("merge", SANDBOX_DATABASE, path).status_code == 404
    assert api.http.get(f"{api.base}/upload/reload/{SANDBOX_DATABASE}", headers=AUTH,
                        timeout=10).status_code == 405
    assert api.state()["jobs"] == []


def test_the_body_must_be_multipart_with_a_dataset_file(api: Api) -> None:
    url = f"{api.base}/upload/reload/{SANDBOX_DATABASE}"
    raw = api.http.post(url, headers=AUTH, data=b"not multipart", timeout=10)
    wrong_field = api.http.post(url, headers=AUTH, files={"file": ("a.zsav", b"x")}, timeout=10)
    assert (raw.status_code, wrong_field.status_code) == (400, 400)
    assert "dataset" in wrong_field.json()["error"]["message"]


def test_a_file_that_is_not_spss_or_csv_fails_its_job(api: Api) -> None:
    path = api.tmp / "notes.txt"
    path.write_text("hello")
    job = api.load("reload", SANDBOX_DATABASE, path)
    assert job["status"] == "failed"
    assert "neither an SPSS file" in job["message"]
    assert api.database()["loads"] == 0


def test_sav_and_csv_files_are_read_too(api: Api) -> None:
    sav = api.file("people.sav", PEOPLE, compression="rows")
    assert api.load("reload", SANDBOX_DATABASE, sav)["status"] == "completed"
    assert api.database()["rows"] == PEOPLE_ROWS
    csv_file = api.tmp / "people.csv"
    csv_file.write_text("id,name\n1,Ana\n2,\n", encoding="utf-8")
    assert api.load("reload", SANDBOX_DATABASE, csv_file)["status"] == "completed"
    assert api.database()["rows"] == [{"id": "1", "name": "Ana"}, {"id": "2", "name": ""}]


def test_a_busy_destination_refuses_a_second_upload(api: Api) -> None:
    path = api.file("people.zsav", PEOPLE)
    with api.emulator.busy.hold(SANDBOX_DATABASE):
        refused = api.upload("append", SANDBOX_DATABASE, path)
    assert refused.status_code == 409
    assert "busy" in refused.json()["error"]["message"]
    # a running job holds its destination until it ends
    api.emulator.settings.processing_seconds = 2.0
    first = api.upload("append", SANDBOX_DATABASE, path)
    second = api.upload("append", SANDBOX_DATABASE, path)
    assert (first.status_code, second.status_code) == (202, 409)
    assert api.finished(first.json()["id"])["status"] == "completed"
    api.emulator.settings.processing_seconds = 0.0
    assert api.load("append", SANDBOX_DATABASE, path)["status"] == "completed"
    assert api.database()["row_count"] == 2 * len(PEOPLE)



def test_a_job_reads_at_once_and_ends_after_processing_seconds(
        api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The read happens inside the job's time, not after it; the database changes, and the
    job ends (completed or failed), no sooner than processing_seconds after the answer."""
    import target_datatile.sandbox as emulator_module

    reads: list[float] = []
    real_read = emulator_module.read_dataset_file

    def timed_read(path: Path) -> Any:
        reads.append(time.monotonic())
        return real_read(path)

    monkeypatch.setattr(emulator_module, "read_dataset_file", timed_read)
    api.emulator.settings.processing_seconds = 3.0
    for path, outcome in ((api.file("people.zsav", PEOPLE), "completed"),
                          (api.tmp / "bad.zsav", "failed")):
        if outcome == "failed":
            path.write_bytes(b"$FL2 but not SPSS")
        rows_before = api.database()["row_count"]
        response = api.upload("append", SANDBOX_DATABASE, path)
        answered = time.monotonic()
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        while not reads or reads[-1] < answered - 1.0:
            assert time.monotonic() - answered < 2.0, "the file was not read at once"
            time.sleep(0.01)
        assert reads[-1] - answered < 2.0  # the old model read it after 3 s
        assert api.job(job_id)["status"] == "processing"
        assert api.database()["row_count"] == rows_before, "changed before the job ended"
        assert api.finished(job_id)["status"] == outcome
        assert time.monotonic() - answered >= 3.0
    assert api.database()["row_count"] == len(PEOPLE)


def test_file_size_limit_and_quota(api: Api) -> None:
    path = api.file("people.zsav", PEOPLE)
    api.emulator.settings.max_file_bytes = path.stat().st_size - 1
    too_big = api.upload("reload", SANDBOX_DATABASE, path)
    assert too_big.status_code == 413
    assert "limit" in too_big.json()["error"]["message"]
    api.emulator.settings.max_file_bytes = 1 << 20
    api.emulator.settings.upload_quota = 1
    assert api.load("reload", SANDBOX_DATABASE, path)["status"] == "completed"
    over = api.upload("reload", SANDBOX_DATABASE, path)
    assert over.status_code == 402
    assert "quota" in over.json()["error"]["message"]
    assert len(api.state()["jobs"]) == 1


def test_a_long_string_at_the_spss_limit_lands_whole(api: Api) -> None:
    text = "é" * 16_383 + "x"  # 32,767 bytes
    schema = {"properties": {"id": {"type": "integer"}, "body": {"type": "string"}}}
    job = api.load("reload", SANDBOX_DATABASE,
                   api.file("long.zsav", [{"id": 1, "body": text}], schema=schema))
    assert job["status"] == "completed", job
    assert api.database()["rows"] == [{"id": 1, "body": text}]


def test_the_callback_url_gets_each_status_transition(api: Api) -> None:
    events: list[dict] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            events.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        callback = f"http://127.0.0.1:{receiver.server_address[1]}/events"
        response = api.upload("reload", SANDBOX_DATABASE, api.file("p.zsav", PEOPLE),
                              callback=callback)
        job = api.finished(response.json()["id"])
        api.emulator.wait_idle()
    finally:
        receiver.shutdown()
    assert [e["status"] for e in events] == ["processing", "completed"]
    assert {e["id"] for e in events} == {job["id"]}
    assert job["callbacks_sent"] in (1, 2)  # read before or after the last event was sent


def test_state_survives_a_restart_and_show_prints_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with SandboxServer(data, emulators=[DataTileEmulator]) as server:
        api = Api(server, tmp_path)
        api.load("reload", SANDBOX_DATABASE, api.file("people.zsav", PEOPLE))
    shown = subprocess.run(
        [sys.executable, "-m", "target_core.sandbox.cli", "show", "--data-dir", str(data)],
        capture_output=True, text=True, check=True, timeout=60,
    )
    state = json.loads(shown.stdout)["datatile"]
    assert state["databases"][SANDBOX_DATABASE]["rows"] == PEOPLE_ROWS
    assert [job["status"] for job in state["jobs"]] == ["completed"]
    assert SANDBOX_FOLDER in state["folders"]


def test_the_rate_limit_bucket_is_the_token(api: Api, server: SandboxServer) -> None:
    """`serve --rate-limit-per-minute N` counts each `token` header on its own (the kit's
    per-credential bucket): the sandbox token's second call waits, another token's does not."""
    requests.post(f"{server.url}/_sandbox/settings", json={"rate_limit_per_minute": 1},
                  timeout=10).raise_for_status()
    first = api.http.get(f"{api.base}/jobs/none", headers=AUTH, timeout=10)
    second = api.http.get(f"{api.base}/jobs/none", headers=AUTH, timeout=10)
    other = api.http.get(f"{api.base}/jobs/none", headers={"token": "another"}, timeout=10)
    assert (first.status_code, second.status_code, other.status_code) == (404, 429, 401)
    assert int(second.headers["Retry-After"]) > 0


def test_a_job_counts_rows_and_rows_are_read_when_asked_for(api: Api) -> None:
    """The job reads metadata and the last row (what its answer needs); the rows are read into
    the database when something first asks for them, then the kept files go."""
    api.load("reload", SANDBOX_DATABASE, api.file("a.zsav", PEOPLE))
    job = api.load("append", SANDBOX_DATABASE, api.file("b.sav", PEOPLE[:1], compression="rows"))
    assert (job["status"], job["rows"], job["message"]) == ("completed", 1, "1 rows loaded")
    stored = api.emulator.catalog.databases[SANDBOX_DATABASE]
    kept = [api.emulator.store.file_path(part["file"]) for part in stored["pending"]]
    assert [part["rows"] for part in stored["pending"]] == [3, 1] and all(
        path.exists() for path in kept)
    assert not api.emulator.store.rows_path(stored["table"]).exists()  # nothing decoded yet
    database = api.database()
    assert database["rows"] == [*PEOPLE_ROWS, PEOPLE_ROWS[0]]
    assert database["row_count"] == 4 and "read_errors" not in database
    assert stored["pending"] == [] and not any(path.exists() for path in kept)
    assert api.database() == database  # read once, then served from the row file


@pytest.mark.parametrize(("name", "compression", "cut"), [
    ("cut.zsav", "zlib", 50), ("cut.sav", "rows", 50), ("cut.sav", "rows", 5000)])
def test_a_file_cut_short_fails_its_job(api: Api, name: str, compression: str,
                                        cut: int) -> None:
    """Its header (metadata) still reads; its rows do not: the job reads to the last row."""
    path = api.file(name, PEOPLE * 200, compression=compression)
    path.write_bytes(path.read_bytes()[:-cut])
    job = api.load("reload", SANDBOX_DATABASE, path)
    assert job["status"] == "failed" and "could not be processed" in job["message"]
    assert api.database()["loads"] == 0


def test_rows_that_cannot_be_read_later_show_in_the_count(api: Api) -> None:
    api.load("reload", SANDBOX_DATABASE, api.file("a.zsav", PEOPLE[:1]))
    api.load("append", SANDBOX_DATABASE, api.file("b.zsav", PEOPLE * 200))
    [_, second] = api.emulator.catalog.databases[SANDBOX_DATABASE]["pending"]
    kept = api.emulator.store.file_path(second["file"])
    kept.write_bytes(kept.read_bytes()[:-50])  # damaged after its job counted it
    database = api.database()
    assert database["row_count"] == 1 and database["rows"] == PEOPLE_ROWS[:1]
    assert second["file"] in database["read_errors"][0]


def test_show_beside_a_live_server_reads_rows_without_writing(api: Api,
                                                              server: SandboxServer) -> None:
    api.load("reload", SANDBOX_DATABASE, api.file("a.zsav", PEOPLE))
    stored = api.emulator.catalog.databases[SANDBOX_DATABASE]
    [part] = stored["pending"]
    shown = subprocess.run(
        [sys.executable, "-m", "target_core.sandbox.cli", "show", "--data-dir",
         str(server.data_dir), "--max-rows", "2"],
        capture_output=True, text=True, check=True, timeout=60)
    database = json.loads(shown.stdout)["datatile"]["databases"][SANDBOX_DATABASE]
    assert database["rows"] == PEOPLE_ROWS[:2] and database["row_count"] == 3
    assert api.emulator.store.file_path(part["file"]).exists()  # the server's to read
    assert not api.emulator.store.rows_path(stored["table"]).exists()
    assert api.database()["rows"] == PEOPLE_ROWS
