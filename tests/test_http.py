"""ApiSession over real HTTP against the echo emulator: verbs and query parameters, streamed
multipart uploads reopened on retry, signed PUTs without the platform's headers, retries
that know which calls are safe to repeat, busy destinations, and polling."""

from __future__ import annotations

import hashlib
import logging
import os
import time
import tracemalloc
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests

from target_core.errors import TargetError
from target_core.http import ApiSession, HttpStatusError, MultipartFile, poll
from target_core.redaction import install_log_redaction
from target_core.sandbox import FaultRule, SandboxServer

TOKEN = "Bearer echo-secret-token"


@pytest.fixture
def server(echo_server: SandboxServer) -> SandboxServer:
    return echo_server


@pytest.fixture
def session(server: SandboxServer) -> ApiSession:
    return ApiSession(server.api_url("echo"), platform="Echo", headers={"Authorization": TOKEN},
                      timeout=10, max_retries=3, backoff_base=0.01, backoff_max=0.05)


def fault(server: SandboxServer, **rule: Any) -> None:
    server.app.faults.add(FaultRule.from_json(rule))


def calls(server: SandboxServer, path: str, count: int = 0) -> list[dict]:
    """The request log's entries for `path`; waits for `count` of them (a request the
    session gave up on, e.g. a dropped connection, has no answer to wait for)."""
    deadline = time.monotonic() + 10
    while len(found := [e for e in server.app.log.read() if e["path"] == path]) < count:
        assert time.monotonic() < deadline, f"{len(found)} requests to {path}, not {count}"
        time.sleep(0.01)
    return found


def answer(response: requests.Response) -> dict:
    return orjson.loads(response.content)


def test_every_verb_with_query_parameters_and_the_platform_headers(session: ApiSession) -> None:
    for method in ("GET", "PUT", "DELETE", "POST"):
        got = answer(session.request(method, "things/t1", params={"from": 5, "q": "a b"},
                                     body=b'{"x":1}' if method in ("PUT", "POST") else None,
                                     content_type="application/json"))
        assert got["method"] == method
        assert got["params"] == {"thing": "t1"}
        assert got["query"] == {"from": "5", "q": "a b"}
        assert got["authorization"] == TOKEN
    assert answer(session.get("things/t2/parts/p9"))["params"] == {"thing": "t2", "part": "p9"}
    assert answer(session.delete("things/t3"))["method"] == "DELETE"
    assert answer(session.put("things/t4", b"{}"))["body"]["size"] == 2


def _big_file(tmp_path: Path, mib: int = 3) -> tuple[Path, str]:
    path = tmp_path / "data.csv"
    path.write_bytes(os.urandom(mib * 1024 * 1024))
    return path, hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_a_multipart_upload_is_streamed_and_reopened_on_each_retry(
        tmp_path: Path, server: SandboxServer, session: ApiSession) -> None:
    path, md5 = _big_file(tmp_path)
    fault(server, path="/echo/upload", drop=True, times=1)
    fault(server, path="/echo/upload", status=503, times=1)
    got = answer(session.upload("upload", MultipartFile(
        "dataset", path, 'my "file".csv', "text/csv", {"note": "first"}), idempotent=True))
    assert got["fields"] == {"note": "first"}
    assert got["files"]["dataset"] == {"file_name": 'my "file".csv', "content_type": "text/csv",
                                       "size": path.stat().st_size, "md5": md5}
    assert got["body"]["on_disk"], "the sandbox streamed the body to disk"
    assert [c["status"] for c in calls(server, "/echo/upload", 3)] == [None, 503, 200]


def test_an_upload_does_not_hold_the_file_in_memory(
        tmp_path: Path, server: SandboxServer, session: ApiSession) -> None:
    path, _ = _big_file(tmp_path, 24)
    tracemalloc.start()
    try:
        session.upload("upload", MultipartFile("f", path, "big.bin"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"{peak / 2**20:.1f} MiB for a 24 MiB upload"


def test_calls_that_are_not_idempotent_are_repeated_only_when_nothing_was_done(
        tmp_path: Path, server: SandboxServer, session: ApiSession) -> None:
    fault(server, path="/echo/things/once", drop=True)
    with pytest.raises(TargetError, match="not repeated"):
        session.post("things/once", b"{}", idempotent=False)
    assert len(calls(server, "/echo/things/once", 1)) == 1

    fault(server, path="/echo/things/once", status=500)
    with pytest.raises(HttpStatusError) as refused:
        session.post("things/once", b"{}", idempotent=False)
    assert refused.value.status == 500
    assert len(calls(server, "/echo/things/once", 2)) == 2

    fault(server, path="/echo/things/once", status=429, retry_after=0, times=2)
    assert answer(session.post("things/once", b"{}", idempotent=False))["method"] == "POST"
    assert [c["status"] for c in calls(server, "/echo/things/once", 5)][2:] == [429, 429, 200]

    fault(server, path="/echo/things/safe", method="GET", drop=True, times=2)
    fault(server, path="/echo/things/safe", method="GET", status=502)
    assert answer(session.get("things/safe"))["method"] == "GET"
    assert [c["status"] for c in calls(server, "/echo/things/safe", 4)] == [None, None, 502, 200]


def test_a_refused_connection_fails_at_once_before_any_answer_then_is_repeated() -> None:
    """The first call to a port nobody listens on fails at once, naming host and port (a
    wrong api_url); once the platform has answered, a refused connection is a passing
    fault: repeated, even for a POST, since nothing was sent."""
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    session = ApiSession(f"http://127.0.0.1:{port}", platform="Echo", headers={},
                         timeout=2, max_retries=2, backoff_base=0.01, backoff_max=0.02)
    with pytest.raises(TargetError, match=f"at 127.0.0.1:{port}: connection refused"):
        session.post("x", b"{}", idempotent=False)
    assert session.calls == 1
    session.answered = True  # as after an earlier call that got an answer
    with pytest.raises(TargetError, match="after 3 attempts") as failed:
        session.post("x", b"{}", idempotent=False)
    assert "not repeated" not in str(failed.value)


def test_a_put_to_a_signed_url_carries_no_platform_headers_and_logs_no_signature(
        tmp_path: Path, server: SandboxServer, session: ApiSession,
        caplog: pytest.LogCaptureFixture) -> None:
    path, md5 = _big_file(tmp_path, 1)
    signed = answer(session.post("sign/report.csv", b"{}"))
    url = f"{server.url}{signed['path']}?{signed['query']}"
    signature = dict(p.split("=") for p in signed["query"].split("&"))["signature"]
    caplog.set_level(logging.DEBUG)
    install_log_redaction([])  # what a target does when it reads its config
    fault(server, path=signed["path"], method="PUT", status=500)
    response = session.put_file(url, path, "text/csv")
    assert response.headers["ETag"] == f'"{md5}"' and response.content == b""
    assert (server.data_dir / "echo" / "files" / "report.csv").read_bytes() == path.read_bytes()

    with pytest.raises(HttpStatusError) as wrong:
        session.put_file(url, path, "application/json")  # not the signed Content-Type
    assert wrong.value.status == 403 and "SignatureDoesNotMatch" in wrong.value.detail
    assert signature not in str(wrong.value) and signature not in caplog.text
    assert "report.csv" in str(wrong.value)


def test_an_expired_signed_url_is_refused_with_s3_xml(
        tmp_path: Path, server: SandboxServer, session: ApiSession) -> None:
    path, _ = _big_file(tmp_path, 1)
    signed = answer(session.post("sign/late.csv", b"{}", params={"seconds": -1}))
    with pytest.raises(HttpStatusError) as expired:
        session.put_file(f"{server.url}{signed['path']}?{signed['query']}", path, "text/csv")
    assert expired.value.status == 403
    assert "<Code>AccessDenied</Code>" in expired.value.detail
    assert "Request has expired" in expired.value.detail


def test_an_xml_error_body_is_quoted_in_the_error(session: ApiSession) -> None:
    with pytest.raises(HttpStatusError) as refused:
        session.get("xml")
    assert refused.value.status == 400 and "<Code>Bad</Code>" in refused.value.detail


def test_a_busy_destination_is_waited_out_up_to_a_timeout(
        server: SandboxServer, session: ApiSession) -> None:
    fault(server, path="/echo/things/*", method="POST", status=409, times=5)
    got = session.post("things/db1", b"{}", idempotent=False, busy_statuses=(409,),
                       busy_timeout=30)
    assert answer(got)["params"] == {"thing": "db1"}
    assert [c["status"] for c in calls(server, "/echo/things/db1", 6)] == [409] * 5 + [200]

    fault(server, path="/echo/things/*", method="POST", status=409, times=1000)
    with pytest.raises(HttpStatusError) as busy:
        session.post("things/db2", b"{}", busy_statuses=(409,), busy_timeout=0.3)
    assert busy.value.status == 409


def test_poll_waits_for_a_background_job(server: SandboxServer, session: ApiSession) -> None:
    def job_state(job: str) -> dict | None:
        state = answer(session.get(f"jobs/{job}"))
        if state["state"] == "failed":
            raise TargetError(f"job failed: {state['error']}")
        return state if state["done"] else None

    job = answer(session.post("jobs", b'{"delay": 0.3, "value": 7}'))["job"]
    done = poll(lambda: job_state(job), what="the echo job", timeout=10, interval=0.02)
    assert done["state"] == "succeeded" and done["result"] == {"echo": 7}
    assert len(calls(server, f"/echo/jobs/{job}")) > 1, "it asked more than once"

    failing = answer(session.post("jobs", b'{"fail": true}'))["job"]
    with pytest.raises(TargetError, match="the data did not parse"):
        poll(lambda: job_state(failing), what="the echo job", timeout=10, interval=0.02)

    slow = answer(session.post("jobs", b'{"delay": 30}'))["job"]
    with pytest.raises(TargetError, match=r"the echo job did not finish within 0\.2 s"):
        poll(lambda: job_state(slow), what="the echo job", timeout=0.2, interval=0.02)
