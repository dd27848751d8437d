"""The sandbox kit file platforms are built from, over plain HTTP (requests, not our client):
path parameters, replies that are not JSON, bodies streamed to disk and multipart files kept
in the store, a rate-limit bucket per credential wherever it travels, faults by method and
path pattern, background jobs and expiring signed URLs."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import requests

from target_core.sandbox import (
    ApiError,
    FaultRule,
    JobFailed,
    Jobs,
    Reply,
    Request,
    Routes,
    SandboxServer,
    SignatureRefused,
    SignedUrls,
)


@pytest.fixture
def server(echo_server: SandboxServer) -> SandboxServer:
    return echo_server


def url(server: SandboxServer, path: str) -> str:
    return f"{server.api_url('echo')}{path}"


def test_routes_with_path_parameters_answer_404_and_405_alike() -> None:
    routes = Routes()
    routes.add("POST", "/upload/{action}/{hash}", lambda r: Reply(200, dict(r.path_params)))
    routes.add("POST", "/upload/create/special", lambda r: Reply(201, "exact first"))
    request = Request("POST", "/upload/reload/ab12", {}, b"")
    assert routes.dispatch(request).body == {"action": "reload", "hash": "ab12"}
    assert routes.dispatch(Request("POST", "/upload/create/special", {}, b"")).status == 201
    with pytest.raises(ApiError) as missing:
        routes.dispatch(Request("POST", "/upload/reload/ab/extra", {}, b""))
    assert missing.value.status == 404
    with pytest.raises(ApiError) as wrong_method:
        routes.dispatch(Request("GET", "/upload/reload/ab12", {}, b""))
    assert wrong_method.value.status == 405 and wrong_method.value.headers == {"Allow": "POST"}


def test_query_parameters_without_a_value_are_kept(server: SandboxServer) -> None:
    """`?limit(2,1)` (uSmart's read API) has no `=`: it reaches the emulator as a key."""
    answer = requests.get(url(server, "/things/t?limit(2,1)&flag&a=b"), timeout=10).json()
    assert answer["query"] == {"limit(2,1)": "", "flag": "", "a": "b"}


def test_an_emulator_may_take_bigger_uploads_than_the_server_limit(tmp_path: Path) -> None:
    """`max_upload_bytes` raises the limit for bodies that are not JSON (files) only."""
    from echoplatform import EchoEmulator

    class BigFiles(EchoEmulator):
        max_upload_bytes = 2_000_000

    with SandboxServer(tmp_path / "data", emulators=[BigFiles],
                       max_body_bytes=300_000) as big:
        put = requests.put(f"{big.api_url('echo')}/things/f", data=b"x" * 1_500_000,
                           headers={"Content-Type": "text/csv"}, timeout=30)
        assert put.status_code == 200 and put.json()["body"]["on_disk"] is True
        too_big = requests.put(f"{big.api_url('echo')}/things/f", data=b"x" * 2_000_001,
                               headers={"Content-Type": "text/csv"}, timeout=30)
        assert too_big.status_code == 413
        json_body = requests.put(f"{big.api_url('echo')}/things/f", data=b"[" + b"1," * 200_000
                                 + b"1]", headers={"Content-Type": "application/json"},
                                 timeout=30)
        assert json_body.status_code == 413


def test_replies_that_are_not_json(server: SandboxServer) -> None:
    xml = requests.get(url(server, "/xml"), timeout=10)
    assert xml.status_code == 400 and xml.headers["Content-Type"] == "application/xml"
    assert xml.text.startswith("<?xml") and "<Code>Bad</Code>" in xml.text
    signed = requests.post(url(server, "/sign/a.csv"), timeout=10).json()
    content = b"x,y\n1,2\n"
    put = requests.put(f"{server.url}{signed['path']}?{signed['query']}", data=content,
                       headers={"Content-Type": "text/csv"}, timeout=10)
    assert put.status_code == 200 and put.content == b""
    assert put.headers["Content-Length"] == "0" and "Content-Type" not in put.headers
    assert put.headers["ETag"] == f'"{hashlib.md5(content).hexdigest()}"'


def test_a_large_upload_is_streamed_to_disk_parsed_and_kept(
        tmp_path: Path, server: SandboxServer) -> None:
    data = os.urandom(3 * 1024 * 1024)
    answer = requests.post(url(server, "/upload"), files={"dataset": ("x.sav", data, "a/b")},
                           data={"label": "wave 2"}, timeout=10).json()
    assert answer["body"]["on_disk"]
    assert answer["fields"] == {"label": "wave 2"}
    assert answer["files"]["dataset"] == {"file_name": "x.sav", "content_type": "a/b",
                                          "size": len(data),
                                          "md5": hashlib.md5(data).hexdigest()}
    assert (server.data_dir / "echo" / "files" / "dataset.bin").read_bytes() == data
    assert list((server.data_dir / ".incoming").iterdir()) == [], "bodies removed after use"
    small = requests.post(url(server, "/things/s"), data=b'{"a": 1}',
                          headers={"Content-Type": "application/json"}, timeout=10).json()
    assert not small["body"]["on_disk"] and small["body"]["size"] == 8


def test_multipart_parts_arrive_whole_and_a_huge_form_field_is_refused(
        server: SandboxServer) -> None:
    from target_core.sandbox.emulator import MAX_FIELD_BYTES

    tricky = b"\r\n--\r\n" * 100_000 + os.urandom(1_500_000)  # the delimiter's start, often
    answer = requests.post(url(server, "/upload"), timeout=10, files={
        "a": ("a.bin", tricky, "x/y"), "b": ("b.bin", b"", None),
    }, data={"label": "Wälle 2", "empty": ""}).json()
    assert answer["fields"] == {"label": "Wälle 2", "empty": ""}
    assert answer["files"]["a"]["md5"] == hashlib.md5(tricky).hexdigest()
    assert (answer["files"]["a"]["size"], answer["files"]["b"]["size"]) == (len(tricky), 0)
    huge = requests.post(url(server, "/upload"), data={"label": "x" * (MAX_FIELD_BYTES + 1)},
                         files={"a": ("a.bin", b"1", None)}, timeout=10)
    assert huge.status_code == 400 and "form field 'label'" in huge.json()["error"]["message"]


def test_a_malformed_multipart_body_is_a_400(server: SandboxServer) -> None:
    bad = requests.post(url(server, "/upload"), data=b"--x\r\nnot a part",
                        headers={"Content-Type": "multipart/form-data; boundary=x"}, timeout=10)
    assert bad.status_code == 400 and "multipart" in bad.json()["error"]["message"]


def test_a_rate_limit_bucket_per_credential_wherever_it_travels(server: SandboxServer) -> None:
    server.app.settings.update({"rate_limit_per_minute": 2})

    def status(**where: dict) -> int:
        return requests.post(url(server, "/things/r"), timeout=10, **where).status_code

    assert [status(headers={"x-key": "A"}) for _ in range(3)] == [200, 200, 429]
    assert status(params={"api_key": "B"}) == 200, "another key has its own bucket"
    assert status(json={"api_key": "B"}) == 200, "the same key in the body: the same bucket"
    assert status(json={"api_key": "B"}) == 429
    assert status(json={"api_key": "C"}) == 200


def test_faults_chosen_by_method_and_path_pattern(server: SandboxServer) -> None:
    server.app.faults.add(FaultRule.from_json(
        {"method": "put", "path": "/echo/things/*", "status": 503, "times": 2}))
    assert requests.get(url(server, "/things/a"), timeout=10).status_code == 200
    assert requests.put(url(server, "/things/a"), timeout=10).status_code == 503
    assert requests.post(url(server, "/things/b"), timeout=10).status_code == 200
    assert requests.put(url(server, "/things/b"), timeout=10).status_code == 503
    assert requests.put(url(server, "/things/c"), timeout=10).status_code == 200
    with pytest.raises(ValueError, match="method"):
        FaultRule.from_json({"method": "P U T", "status": 500})


def test_background_jobs_run_later_and_report_their_end() -> None:
    jobs = Jobs("j")
    done = jobs.start("load", lambda: {"rows": 3}, delay=0.05)
    assert done.state in ("queued", "running")

    def fail() -> None:
        raise JobFailed("type clash in column a")

    failed = jobs.start("load", fail)
    assert jobs.wait(done.id).result == {"rows": 3} and jobs.get(done.id).state == "succeeded"
    assert jobs.wait(failed.id).state == "failed"
    assert jobs.get(failed.id).error == "type clash in column a"
    never = jobs.start("load", lambda: pytest.fail("a reset job ran"), delay=0.2)
    jobs.reset()
    assert jobs.get(never.id) is None and jobs.snapshot() == []


def test_signed_urls_expire_and_refuse_changes() -> None:
    now = [1000.0]
    urls = SignedUrls(b"k" * 32, clock=lambda: now[0])
    query = dict(pair.split("=") for pair in urls.sign("PUT", "/b/f.csv", 60,
                                                        {"ct": "csv"}).split("&"))
    assert urls.verify("PUT", "/b/f.csv", query) == {"ct": "csv"}
    for method, path, changed in [("GET", "/b/f.csv", {}), ("PUT", "/b/g.csv", {}),
                                  ("PUT", "/b/f.csv", {"ct": "json"}),
                                  ("PUT", "/b/f.csv", {"expires": "9999999999"})]:
        with pytest.raises(SignatureRefused) as refused:
            urls.verify(method, path, {**query, **changed})
        assert refused.value.code == "SignatureDoesNotMatch"
    now[0] += 61
    with pytest.raises(SignatureRefused) as expired:
        urls.verify("PUT", "/b/f.csv", query)
    assert expired.value.code == "AccessDenied" and "expired" in expired.value.message
