"""The uSmart emulator over real HTTP on loopback, driven with plain `requests` calls.

It has to be right before it can judge the target: these tests pin down the flow (view,
signed PUT, file:create, file:updateRevision, pipeline refresh, read route), what S3 refuses
(method, Content-Type, expiry, tampering), the key checks, and uSmart's CSV reading rules.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from target_core.sandbox import SandboxServer
from target_core.sandbox.emulator import Request
from target_core.sandbox.store import Store
from target_usmart.sandbox import (
    SANDBOX_DATASET,
    SANDBOX_KEY_ID,
    SANDBOX_KEY_SECRET,
    SANDBOX_ORG,
    SANDBOX_PIPELINE,
    UsmartEmulator,
)

KEYS = {"api-key-id": SANDBOX_KEY_ID, "api-key-secret": SANDBOX_KEY_SECRET}
CSV = (
    'id,zip,ratio,seen,at,note\r\n'
    '1,"0012",0.80,true,2024-01-02T03:04:05Z,"a, b"\r\n'
    '2,"-07",12,false,2024-01-03T00:00:00Z,"line\r\nbreak"\r\n'
    '3,,,,,\r\n'
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SandboxServer]:
    sandbox = SandboxServer(tmp_path / "data").start()  # emulators found by entry point
    yield sandbox
    sandbox.stop()


class UsmartApi:
    """Plain HTTP calls, as any uSmart client would make them."""

    def __init__(self, server: SandboxServer) -> None:
        self.server = server
        self.base = server.api_url("usmart")
        self.http = requests.Session()

    def action(self, name: str, body: Any, headers: dict[str, str] | None = None,
               org: str = SANDBOX_ORG) -> requests.Response:
        return self.http.post(f"{self.base}/org/{org}/{name}", data=json.dumps(body),
                              headers=KEYS if headers is None else headers, timeout=10)

    def ok(self, name: str, body: Any) -> dict[str, Any]:
        response = self.action(name, body)
        assert response.status_code == 200, response.text
        return response.json()["result"]

    def upload(self, text: str | bytes, name: str = "orders.csv") -> dict[str, Any]:
        signed = self.ok("s3:generatePutRequest", {"fileName": name})
        data = text.encode() if isinstance(text, str) else text
        put = self.http.put(signed["signedRequest"], data=data,
                            headers={"Content-Type": signed["contentType"]}, timeout=10)
        assert put.status_code == 200, put.text
        assert put.headers["ETag"].startswith('"')
        return {**signed, "fileSize": len(data)}

    def create(self, text: str | bytes, name: str = "orders.csv") -> str:
        upload = self.upload(text, name)
        return self.ok("file:create", {"datasetGUID": SANDBOX_DATASET, "fileName": name,
                                       "reference": upload["reference"],
                                       "fileSize": upload["fileSize"]})["fileGUID"]

    def read(self, resource: str, query: str = "") -> list[dict[str, Any]]:
        response = self.http.get(f"{self.base}/org/{SANDBOX_ORG}/{resource}/latest/urql{query}",
                                 headers=KEYS, timeout=10)
        assert response.status_code == 200, response.text
        return json.loads(response.content, parse_float=Decimal)

    def state(self) -> dict[str, Any]:
        response = self.http.get(f"{self.server.url}/_sandbox/state", timeout=10)
        return response.json()["usmart"]

    def settings(self, **values: Any) -> None:
        response = self.http.post(f"{self.base}/_sandbox/settings", json=values, timeout=10)
        assert response.status_code == 200, response.text


@pytest.fixture
def api(server: SandboxServer) -> UsmartApi:
    return UsmartApi(server)


def s3_code(response: requests.Response) -> str:
    assert response.status_code == 403, response.text
    assert response.text.startswith("<?xml") and "<Error>" in response.text
    return response.text.split("<Code>")[1].split("</Code>")[0]


# -- the whole flow ------------------------------------------------------------------------------
def test_fresh_data_dir_holds_the_sandbox_dataset_with_one_pipeline(api: UsmartApi) -> None:
    view = api.ok("dataset:view", {"datasetGUID": SANDBOX_DATASET})
    assert view["files"] == []
    assert [c["resourceContainerGUID"] for c in view["resourceContainers"]] == [SANDBOX_PIPELINE]


def test_create_refresh_read_then_revise(api: UsmartApi, tmp_path: Path) -> None:
    file_guid = api.create(CSV)
    view = api.ok("dataset:view", {"datasetGUID": SANDBOX_DATASET})
    assert [(f["fileGUID"], f["fileName"], f["revision"]) for f in view["files"]] == [
        (file_guid, "orders.csv", 1)]
    assert api.read(SANDBOX_PIPELINE) == []  # a pipeline serves nothing until it is processed
    api.ok("resourceContainer:process", {"resourceContainerGUID": SANDBOX_PIPELINE})
    assert api.read(SANDBOX_PIPELINE) == [
        {"id": 1, "zip": "0012", "ratio": Decimal("0.80"), "seen": True,
         "at": "2024-01-02T03:04:05Z", "note": "a, b"},
        {"id": 2, "zip": "-07", "ratio": 12, "seen": False, "at": "2024-01-03T00:00:00Z",
         "note": "line\r\nbreak"},
        {"id": 3, "zip": None, "ratio": None, "seen": None, "at": None, "note": None},
    ]

    upload = api.upload("id,zip\r\n9,\"0099\"\r\n")
    api.ok("file:updateRevision", {"reference": upload["reference"], "fileName": "orders.csv",
                                   "fileGUID": file_guid, "fileSize": upload["fileSize"],
                                   "action": "file:updateRevision"})
    assert len(api.read(SANDBOX_PIPELINE)) == 3  # still the refreshed revision
    assert api.read(file_guid) == [{"id": 9, "zip": "0099"}]  # the file's latest revision
    api.ok("resourceContainer:process", {"resourceContainerGUID": SANDBOX_PIPELINE})
    assert api.read(SANDBOX_PIPELINE) == [{"id": 9, "zip": "0099"}]

    state = api.state()
    revisions = state["datasets"][SANDBOX_DATASET]["files"][file_guid]["revisions"]
    assert [(r["revision"], r["rows"]) for r in revisions] == [(1, 3), (2, 1)]
    assert revisions[0]["columns"][:3] == [{"name": "id", "type": "number"},
                                           {"name": "zip", "type": "text"},
                                           {"name": "ratio", "type": "number"}]
    assert revisions[1]["data"] == [{"id": 9, "zip": "0099"}]
    refreshes = state["datasets"][SANDBOX_DATASET]["resourceContainers"][SANDBOX_PIPELINE][
        "refreshes"]
    assert [r["files"] for r in refreshes] == [{file_guid: 1}, {file_guid: 2}]
    assert all(u["key_headers_sent"] == [] for u in state["uploads"].values())

    shown = subprocess.run(
        [sys.executable, "-m", "target_core.sandbox.cli", "show", "--data-dir",
         str(api.server.data_dir), "--max-rows", "1"],
        capture_output=True, text=True, check=True, timeout=60)
    files = json.loads(shown.stdout)["usmart"]["datasets"][SANDBOX_DATASET]["files"]
    assert files[file_guid]["revisions"][0]["data"] == [
        {"id": 1, "zip": "0012", "ratio": 0.8, "seen": True, "at": "2024-01-02T03:04:05Z",
         "note": "a, b"}]
    assert '"ratio": 0.80' in shown.stdout  # the digits as uploaded


def test_resource_container_create_then_process(api: UsmartApi) -> None:
    guid = api.ok("resourceContainer:create", {"datasetGUID": SANDBOX_DATASET,
                                               "pipelineId": "csv"})["resourceContainerGUID"]
    api.create("a\r\n1\r\n")
    api.ok("resourceContainer:process", {"resourceContainerGUID": guid})
    assert api.read(guid) == [{"a": 1}]
    assert api.read(SANDBOX_PIPELINE) == []


def test_state_survives_a_restart(tmp_path: Path) -> None:
    with SandboxServer(tmp_path / "data", emulators=[UsmartEmulator]) as first:
        file_guid = UsmartApi(first).create("a\r\n1\r\n")
    with SandboxServer(tmp_path / "data", emulators=[UsmartEmulator]) as second:
        assert UsmartApi(second).read(file_guid) == [{"a": 1}]


# -- keys ----------------------------------------------------------------------------------------
def test_missing_or_wrong_keys_are_401_and_a_foreign_org_403(api: UsmartApi) -> None:
    body = {"datasetGUID": SANDBOX_DATASET}
    for headers in ({}, {"api-key-id": SANDBOX_KEY_ID},
                    {"api-key-id": SANDBOX_KEY_ID, "api-key-secret": "wrong-secret"},
                    {"api-key-id": "someone", "api-key-secret": SANDBOX_KEY_SECRET}):
        response = api.action("dataset:view", body, headers=headers)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["status"] == 401
        assert SANDBOX_KEY_SECRET not in response.text
    foreign = api.action("dataset:view", body, org="another-org")
    assert foreign.status_code == 403 and "Provider" in foreign.json()["error"]["message"]
    read = api.http.get(f"{api.base}/org/{SANDBOX_ORG}/{SANDBOX_PIPELINE}/latest/urql",
                        timeout=10)
    assert read.status_code == 401


def test_unknown_dataset_file_and_action(api: UsmartApi) -> None:
    assert api.action("dataset:view", {"datasetGUID": "nope"}).status_code == 404
    assert api.action("dataset:view", {}).status_code == 400
    upload = api.upload("a\r\n1\r\n")
    revise = api.action("file:updateRevision", {"reference": upload["reference"],
                                                "fileName": "x.csv", "fileGUID": "nope",
                                                "fileSize": upload["fileSize"]})
    assert revise.status_code == 404
    assert api.action("file:delete", {}).status_code == 404
    assert api.http.get(f"{api.base}/org/{SANDBOX_ORG}/dataset:view", headers=KEYS,
                        timeout=10).status_code == 405


# -- signed URLs ---------------------------------------------------------------------------------
def test_signed_url_is_put_only_with_its_content_type(api: UsmartApi) -> None:
    signed = api.ok("s3:generatePutRequest", {"fileName": "orders.csv"})
    assert signed["contentType"] == "text/csv"
    assert urlsplit(signed["signedRequest"]).netloc == urlsplit(api.base).netloc
    url = signed["signedRequest"]
    wrong_type = api.http.put(url, data=b"a\n1\n", headers={"Content-Type": "text/plain"},
                              timeout=10)
    assert s3_code(wrong_type) == "SignatureDoesNotMatch"
    assert s3_code(api.http.get(url, timeout=10)) == "SignatureDoesNotMatch"
    assert s3_code(api.http.post(url, data=b"a\n1\n", headers={"Content-Type": "text/csv"},
                                 timeout=10)) == "SignatureDoesNotMatch"
    expires = dict(parse_qsl(urlsplit(url).query))["expires"]
    tampered = url.replace(f"expires={expires}", f"expires={int(expires) + 3600}")
    assert tampered != url
    assert s3_code(api.http.put(tampered, data=b"a\n", headers={"Content-Type": "text/csv"},
                                timeout=10)) == "SignatureDoesNotMatch"
    unsigned = url.split("?")[0]
    assert s3_code(api.http.put(unsigned, data=b"a\n", headers={"Content-Type": "text/csv"},
                                timeout=10)) == "AccessDenied"
    assert api.state()["uploads"] == {}
    ok = api.http.put(url, data=b"a\n1\n", headers={"Content-Type": "text/csv"}, timeout=10)
    assert ok.status_code == 200 and ok.content == b""


def test_signed_url_expires_after_the_configured_time(api: UsmartApi) -> None:
    api.settings(signed_url_expires_seconds=0)
    signed = api.ok("s3:generatePutRequest", {"fileName": "orders.csv"})
    response = api.http.put(signed["signedRequest"], data=b"a\n1\n",
                            headers={"Content-Type": signed["contentType"]}, timeout=10)
    assert s3_code(response) == "AccessDenied"
    assert "Request has expired" in response.text
    api.settings(signed_url_expires_seconds=900)
    api.upload("a\r\n1\r\n")  # a fresh URL works


def test_a_file_name_with_spaces_and_accents_uploads(api: UsmartApi) -> None:
    file_guid = api.create("a\r\n1\r\n", name="mjesečni podaci.csv")
    [file] = api.state()["datasets"][SANDBOX_DATASET]["files"].values()
    assert file["fileName"] == "mjesečni podaci.csv"
    assert api.read(file_guid) == [{"a": 1}]


def test_expired_urls_can_be_issued_on_demand(api: UsmartApi) -> None:
    api.settings(expired_urls_to_issue=1)
    first = api.ok("s3:generatePutRequest", {"fileName": "orders.csv"})
    refused = api.http.put(first["signedRequest"], data=b"a\n",
                           headers={"Content-Type": "text/csv"}, timeout=10)
    assert "Request has expired" in refused.text
    api.upload("a\r\n1\r\n")  # only the next one was expired


def test_key_headers_sent_to_storage_are_recorded(api: UsmartApi) -> None:
    signed = api.ok("s3:generatePutRequest", {"fileName": "orders.csv"})
    response = api.http.put(signed["signedRequest"], data=b"a\n1\n",
                            headers={"Content-Type": "text/csv", **KEYS}, timeout=10)
    assert response.status_code == 200  # S3 ignores them, but they left the machine
    [upload] = api.state()["uploads"].values()
    assert upload["key_headers_sent"] == ["api-key-id", "api-key-secret"]


# -- uSmart's CSV reading rules ------------------------------------------------------------------
def test_a_blank_row_ends_the_ingest(api: UsmartApi) -> None:
    file_guid = api.create("id,name\r\n1,a\r\n\r\n2,b\r\n")
    [revision] = api.state()["datasets"][SANDBOX_DATASET]["files"][file_guid]["revisions"]
    assert revision["rows"] == 1 and revision["stopped_at_blank_row"] == 2
    assert api.read(file_guid) == [{"id": 1, "name": "a"}]


def test_types_come_from_the_first_row(api: UsmartApi) -> None:
    file_guid = api.create("code,amount,ratio\r\n,0012,.8\r\n0012,\"0013\",0.8\r\n")
    [revision] = api.state()["datasets"][SANDBOX_DATASET]["files"][file_guid]["revisions"]
    # an empty first cell types its column text; ".8" is not a number to uSmart
    assert [c["type"] for c in revision["columns"]] == ["text", "number", "text"]
    assert revision["type_conflicts"] == {"amount": 1}  # a quoted "0013" in a number column
    assert api.read(file_guid) == [
        {"code": None, "amount": 12, "ratio": ".8"},  # unquoted: its leading zeros are lost
        {"code": "0012", "amount": "0013", "ratio": "0.8"},
    ]


def test_files_uSmart_cannot_read_are_registered_and_serve_no_rows(api: UsmartApi) -> None:
    """Registration keeps the file; uSmart's ingest (when the data is first read) says why it
    cannot read it, and serves nothing from it."""
    for text, problem in (("a,b\r\n1\r\n", "has 1 fields"), ("", "no header"),
                          ('a\r\n"open\r\n', "inside a quoted field"),
                          ('a\r\nx"y"\r\n', "quote inside an unquoted field"),
                          (b"a\r\n\xff\r\n", "can't decode")):
        file_guid = api.create(text)
        [revision] = api.state()["datasets"][SANDBOX_DATASET]["files"][file_guid]["revisions"]
        assert revision["rows"] == 0 and problem in revision["unreadable"], (text, revision)
        assert api.read(file_guid) == []
    good = api.create("a\r\n1\r\n")
    [revision] = api.state()["datasets"][SANDBOX_DATASET]["files"][good]["revisions"]
    assert (revision["rows"], revision["unreadable"]) == (1, None)
    upload = api.upload("a\r\n1\r\n")
    wrong_size = api.action("file:create", {"datasetGUID": SANDBOX_DATASET, "fileName": "x.csv",
                                            "reference": upload["reference"], "fileSize": 1})
    assert wrong_size.status_code == 400 and "fileSize" in wrong_size.text
    never_uploaded = api.action("file:create", {"datasetGUID": SANDBOX_DATASET,
                                                "fileName": "x.csv", "fileSize": 4,
                                                "reference": "uploads/nothing/x.csv"})
    assert never_uploaded.status_code == 400


# -- the read route's paging ---------------------------------------------------------------------
def test_read_route_pages_with_limit_n_offset(tmp_path: Path) -> None:
    """The emulator's own paging, with the query as a server keeping `limit(n,offset)` gives
    it (the key kept with a blank value)."""
    emulator = UsmartEmulator(Store(tmp_path / "usmart"))
    emulator.catalog.state["datasets"][SANDBOX_DATASET]["files"]["f"] = {
        "fileName": "x.csv", "created": "now", "revisions": [{"revision": 1,
                                                                "reference": "r", "rows": 3}]}
    path = emulator.catalog.object_path("r")
    path.parent.mkdir(parents=True)
    path.write_text("n\r\n1\r\n2\r\n3\r\n")
    request = Request("GET", f"/org/{SANDBOX_ORG}/f/latest/urql", dict(KEYS),
                      b"", {"limit(2,1)": ""})
    assert emulator.handle(request).body == [{"n": 2}, {"n": 3}]
    everything = dataclasses.replace(request, query={})
    assert emulator.handle(everything).body == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_read_route_pages_over_http(api: UsmartApi) -> None:
    file_guid = api.create("n\r\n1\r\n2\r\n3\r\n")
    assert api.read(file_guid, "?limit(2,1)") == [{"n": 2}, {"n": 3}]
    assert api.read(file_guid, "?limit(1,0)") == [{"n": 1}]
    assert api.read(file_guid, "?limit(5,3)") == []
    assert api.read(file_guid) == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_uploads_pass_the_server_body_limit_and_are_kept_on_disk(tmp_path: Path) -> None:
    """The signed PUT takes files beyond the server's max_body_bytes (S3 takes 5 GiB: the
    2M-row benchmark's CSV is ~300 MB); the actions' JSON bodies keep the limit."""
    with SandboxServer(tmp_path / "data", emulators=[UsmartEmulator],
                       max_body_bytes=300_000) as small:
        api = UsmartApi(small)
        text = "n,label\r\n" + "".join(f"{i},row {i}\r\n" for i in range(100_000))
        assert len(text) > 1_000_000
        file_guid = api.create(text)
        assert api.read(file_guid, "?limit(2,99998)") == [{"n": 99998, "label": "row 99998"},
                                                          {"n": 99999, "label": "row 99999"}]
        kept = list((tmp_path / "data" / "usmart" / "files").iterdir())
        assert len(kept) == 1 and kept[0].stat().st_size == len(text)
        assert not list((tmp_path / "data" / ".incoming").iterdir())  # moved, not copied
        too_big = api.action("dataset:view", {"datasetGUID": "x" * 400_000},
                             headers={**KEYS, "Content-Type": "application/json"})
        assert too_big.status_code == 413


def test_s3_refusals_are_xml(api: UsmartApi) -> None:
    signed = api.ok("s3:generatePutRequest", {"fileName": "orders.csv"})
    refused = api.http.put(signed["signedRequest"], data=b"a\n", timeout=10,
                           headers={"Content-Type": "text/plain"})
    assert refused.status_code == 403
    assert refused.headers["Content-Type"] == "application/xml"
    assert "<Code>SignatureDoesNotMatch</Code>" in refused.text
