"""The Data Collector API client against the DataTile emulator, over real HTTP."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from datatile_files import PEOPLE, PEOPLE_SCHEMA, write_spss

from target_core.errors import ApiError, TargetError
from target_core.http import ApiSession
from target_core.sandbox import SandboxServer
from target_datatile.client import ApiShape, DataTileClient
from target_datatile.sandbox import (
    SANDBOX_DATABASE,
    SANDBOX_FOLDER,
    SANDBOX_TOKEN,
    DataTileEmulator,
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SandboxServer]:
    sandbox = SandboxServer(tmp_path / "data", emulators=[DataTileEmulator]).start()
    yield sandbox
    sandbox.stop()


@pytest.fixture
def emulator(server: SandboxServer) -> DataTileEmulator:
    return server.emulators["datatile"]  # type: ignore[return-value]


def make_client(server: SandboxServer, token: str = SANDBOX_TOKEN, max_retries: int = 3,
                shape: ApiShape | None = None) -> DataTileClient:
    session = ApiSession(server.api_url("datatile"), platform="DataTile",
                         headers={"token": token}, timeout=10, max_retries=max_retries,
                         backoff_base=0.01, backoff_max=0.05)
    return DataTileClient(session, shape)


@pytest.fixture
def client(server: SandboxServer) -> DataTileClient:
    return make_client(server)


@pytest.fixture
def people(tmp_path: Path) -> Path:
    return write_spss(tmp_path / "people.zsav", PEOPLE_SCHEMA, PEOPLE)


def control(server: SandboxServer, method: str, route: str, body: object = None) -> object:
    response = requests.request(method, f"{server.url}/_sandbox/{route}", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def uploads_seen(server: SandboxServer) -> list[int]:
    log = control(server, "GET", "requests")
    return [entry["status"] for entry in log if "/upload/" in entry["path"]]  # type: ignore[union-attr]


def test_create_then_poll_reports_the_new_database(client: DataTileClient, people: Path,
                                                   emulator: DataTileEmulator) -> None:
    job_id = client.upload("create", SANDBOX_FOLDER, people)
    job = client.wait_for_job(job_id, poll_interval=0.02, timeout=20)
    assert job.succeeded and job.state == "completed"
    database = emulator.snapshot()["databases"][job.database_hash]
    assert [row["id"] for row in database["rows"]] == [1, 2, 3]


def test_reload_and_append(client: DataTileClient, people: Path,
                           emulator: DataTileEmulator) -> None:
    for action in ("reload", "append", "append"):
        job = client.wait_for_job(client.upload(action, SANDBOX_DATABASE, people),
                                  poll_interval=0.02, timeout=20)
        assert job.database_hash == SANDBOX_DATABASE
    rows = emulator.snapshot()["databases"][SANDBOX_DATABASE]["rows"]
    assert [row["id"] for row in rows] == [1, 2, 3] * 3


def test_a_failed_job_is_one_clear_error(client: DataTileClient, tmp_path: Path) -> None:
    bad = tmp_path / "bad.zsav"
    bad.write_bytes(b"not spss")
    job_id = client.upload("reload", SANDBOX_DATABASE, bad)
    with pytest.raises(ApiError, match=rf"DataTile processing job {job_id} failed: the file"):
        client.wait_for_job(job_id, poll_interval=0.02, timeout=20)


def test_a_job_that_does_not_finish_in_time(client: DataTileClient, people: Path,
                                            emulator: DataTileEmulator) -> None:
    emulator.settings.processing_seconds = 3.0
    job_id = client.upload("reload", SANDBOX_DATABASE, people)
    with pytest.raises(TargetError, match=r"did not finish within 0.3 s .*processing_timeout"):
        client.wait_for_job(job_id, poll_interval=0.05, timeout=0.3)


def test_polls_come_soon_after_the_upload_then_back_off_to_the_interval(
        server: SandboxServer, people: Path, emulator: DataTileEmulator) -> None:
    emulator.settings.processing_seconds = 3600.0  # never ends while this test looks
    pauses: list[float] = []
    clock = [0.0]

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock[0] += seconds

    session = make_client(server).session
    client = DataTileClient(session, sleep=sleep, clock=lambda: clock[0])
    job_id = client.upload("reload", SANDBOX_DATABASE, people)
    with pytest.raises(TargetError, match="did not finish within 10 s"):
        client.wait_for_job(job_id, poll_interval=2.0, timeout=10)
    assert pauses[:4] == pytest.approx([0.05, 0.075, 0.1125, 0.16875])
    assert max(pauses) == 2.0 and pauses[-2:] == [2.0, 2.0]
    assert all(b >= a for a, b in itertools.pairwise(pauses))
    short = DataTileClient(session, sleep=sleep, clock=lambda: clock[0])
    pauses.clear()
    with pytest.raises(TargetError):
        short.wait_for_job(job_id, poll_interval=0.01, timeout=0.05)
    assert set(pauses) == {0.01}, "an interval below the first pause is used as it is"


def test_a_busy_destination_is_waited_out(client: DataTileClient, people: Path,
                                          emulator: DataTileEmulator,
                                          server: SandboxServer) -> None:
    result: dict[str, str] = {}
    with emulator.busy.hold(SANDBOX_DATABASE):
        worker = threading.Thread(target=lambda: result.update(job=client.upload(
            "append", SANDBOX_DATABASE, people, busy_timeout=60)))
        worker.start()
        deadline = time.monotonic() + 20
        while uploads_seen(server).count(409) < 2:  # the sign: refused twice, still trying
            assert time.monotonic() < deadline
            time.sleep(0.01)
    worker.join(20)
    assert client.wait_for_job(result["job"], poll_interval=0.02, timeout=20).succeeded
    assert uploads_seen(server)[-1] == 202


def test_busy_past_the_timeout_is_an_error(client: DataTileClient, people: Path,
                                           emulator: DataTileEmulator) -> None:
    with emulator.busy.hold(SANDBOX_DATABASE), pytest.raises(ApiError, match="busy"):
        client.upload("append", SANDBOX_DATABASE, people, busy_timeout=0.2)


def test_quota_and_size_refusals_are_clear_errors(client: DataTileClient, people: Path,
                                                  emulator: DataTileEmulator) -> None:
    emulator.settings.max_file_bytes = 10
    with pytest.raises(ApiError, match=r"refused the file as too large \(HTTP 413"):
        client.upload("reload", SANDBOX_DATABASE, people)
    emulator.settings.max_file_bytes = 1 << 20
    emulator.settings.upload_quota = 0
    with pytest.raises(ApiError, match=r"refused upload/reload/sandbox-database for quota"):
        client.upload("reload", SANDBOX_DATABASE, people)


def test_refusals_name_what_to_fix_and_never_the_token(server: SandboxServer,
                                                        people: Path) -> None:
    wrong = "dt-wrong-token-123"
    with pytest.raises(ApiError) as refused:
        make_client(server, token=wrong).upload("reload", SANDBOX_DATABASE, people)
    assert "refused the API token (HTTP 401" in str(refused.value)
    assert wrong not in str(refused.value)
    with pytest.raises(ApiError, match=r"has no database 'nope'.*database_map"):
        make_client(server).upload("append", "nope", people)
    with pytest.raises(ApiError, match=r"has no folder 'nope'.*folder_hash"):
        make_client(server).upload("create", "nope", people)


def test_a_dropped_reload_is_retried_with_the_file_reopened(
        client: DataTileClient, people: Path, server: SandboxServer,
        emulator: DataTileEmulator, caplog: pytest.LogCaptureFixture) -> None:
    """A reload replaces: repeating it after a lost answer is safe."""
    path = f"/datatile/api/v2/upload/reload/{SANDBOX_DATABASE}"
    control(server, "POST", "faults", [{"path": path, "drop": True},
                                       {"path": path, "status": 503}])
    with caplog.at_level(logging.WARNING):
        job_id = client.upload("reload", SANDBOX_DATABASE, people)
    assert client.wait_for_job(job_id, poll_interval=0.02, timeout=20).succeeded
    assert emulator.snapshot()["databases"][SANDBOX_DATABASE]["row_count"] == len(PEOPLE)
    assert "ConnectionError (no answer) from DataTile" in caplog.text
    log = control(server, "GET", "requests")
    sizes = {entry["request_bytes"] for entry in log if entry["path"] == path}  # type: ignore[union-attr]
    assert len(sizes) == 1 and sizes.pop() > people.stat().st_size  # the whole file each time
    assert uploads_seen(server) == [None, 503, 202]  # dropped (no status), refused, taken


def test_an_append_whose_answer_was_lost_is_not_repeated(
        client: DataTileClient, people: Path, server: SandboxServer,
        emulator: DataTileEmulator) -> None:
    """DataTile may have queued it: a repeat could load the file twice. The run stops with
    one line instead; the rerun from the last STATE is what may duplicate (at-least-once)."""
    path = f"/datatile/api/v2/upload/append/{SANDBOX_DATABASE}"
    control(server, "POST", "faults", {"path": path, "drop_after": True})
    with pytest.raises(TargetError, match=r"not repeated: the platform may have acted on it"):
        client.upload("append", SANDBOX_DATABASE, people)
    emulator.wait_idle()
    assert emulator.snapshot()["databases"][SANDBOX_DATABASE]["row_count"] == len(PEOPLE)
    assert len(uploads_seen(server)) == 1


def test_retries_are_bounded(server: SandboxServer, people: Path) -> None:
    path = f"/datatile/api/v2/upload/reload/{SANDBOX_DATABASE}"
    control(server, "POST", "faults", {"path": path, "status": 503, "times": 5})
    with pytest.raises(ApiError, match="HTTP 503"):
        make_client(server, max_retries=2).upload("reload", SANDBOX_DATABASE, people)
    assert uploads_seen(server) == [503, 503, 503]


def test_polls_ride_out_a_dropped_answer(client: DataTileClient, people: Path,
                                        server: SandboxServer) -> None:
    job_id = client.upload("reload", SANDBOX_DATABASE, people)
    control(server, "POST", "faults", [{"path": f"/datatile/api/v2/jobs/{job_id}", "drop": True},
                                       {"path": f"/datatile/api/v2/jobs/{job_id}",
                                        "status": 502}])
    assert client.wait_for_job(job_id, poll_interval=0.02, timeout=20).succeeded


def test_the_assumed_names_are_settings(server: SandboxServer, people: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    shaped = make_client(server, shape=ApiShape(job_id_field="jobId"))
    with caplog.at_level(logging.INFO):
        job_id = shaped.upload("reload", SANDBOX_DATABASE, people)
    assert "the job id came in field 'id'" in caplog.text
    wrong_route = make_client(server, shape=ApiShape(job_status_route="status/{job_id}"))
    with pytest.raises(ApiError, match=r"knows no job .*job_status_route"):
        wrong_route.wait_for_job(job_id, poll_interval=0.02, timeout=5)
    never_done = make_client(server, shape=ApiShape(job_success_states=("done",)))
    with pytest.raises(TargetError, match="last state: completed"):
        never_done.wait_for_job(job_id, poll_interval=0.02, timeout=0.3)
