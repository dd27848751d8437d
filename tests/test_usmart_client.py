"""target_usmart.client against the uSmart emulator over loopback: every action, the signed
PUT streamed from disk without key headers, a refused URL requested again, errors a user can
act on, and no signature in any log line."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from conftest import usmart_cells

from target_core.columns import Column, ColumnType
from target_core.errors import ApiError
from target_core.http import ApiSession
from target_core.redaction import REDACTOR, RedactingFilter
from target_core.sandbox import SandboxServer
from target_usmart.client import UsmartClient, safe_file_name
from target_usmart.ingest_csv import IngestCsvWriter
from target_usmart.sandbox import (
    SANDBOX_DATASET,
    SANDBOX_KEY_ID,
    SANDBOX_KEY_SECRET,
    SANDBOX_ORG,
    SANDBOX_PIPELINE,
    UsmartEmulator,
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[SandboxServer]:
    sandbox = SandboxServer(tmp_path / "data", emulators=[UsmartEmulator]).start()
    yield sandbox
    sandbox.stop()


def make_client(server: SandboxServer, *, key_secret: str = SANDBOX_KEY_SECRET,
                org: str = SANDBOX_ORG, **options: Any) -> UsmartClient:
    session = ApiSession(server.api_url("usmart"), platform="uSmart", timeout=10, max_retries=1,
                         backoff_base=0.01,
                         headers={"api-key-id": SANDBOX_KEY_ID, "api-key-secret": key_secret})
    return UsmartClient(session, org, **options)


@pytest.fixture
def client(server: SandboxServer) -> UsmartClient:
    return make_client(server)


def control(server: SandboxServer, method: str, route: str, body: Any = None) -> Any:
    response = requests.request(method, f"{server.url}{route}", json=body, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def state(server: SandboxServer) -> dict[str, Any]:
    return control(server, "GET", "/_sandbox/state")["usmart"]


def stream_file(tmp_path: Path, rows: list[list[Any]]) -> Path:
    columns = [Column("id", "id", ColumnType.INTEGER, False, True),
               Column("code", "code", ColumnType.TEXT, True, False),
               Column("price", "price", ColumnType.NUMBER, True, False)]
    writer = IngestCsvWriter(tmp_path / "orders.csv", columns)
    writer.write_rows([usmart_cells(columns, row) for row in rows])
    return writer.finish()


def test_create_refresh_read_then_revise(client: UsmartClient, server: SandboxServer,
                                         tmp_path: Path) -> None:
    view = client.view_dataset(SANDBOX_DATASET)
    assert view.files == () and view.pipelines == (SANDBOX_PIPELINE,)

    path = stream_file(tmp_path, [[1, "007", 0.8], [2, None, 19.99]])
    upload = client.upload("orders.csv", path)
    file_guid = client.create_file(SANDBOX_DATASET, upload, "orders.csv", path.stat().st_size)
    view = client.view_dataset(SANDBOX_DATASET)
    assert [(f.guid, f.name) for f in view.files_named("orders.csv")] == [
        (file_guid, "orders.csv")]
    for pipeline in view.pipelines:
        client.refresh_pipeline(pipeline)
    assert client.read_rows(SANDBOX_PIPELINE, 100) == [
        {"id": 1, "code": "007", "price": Decimal("0.8")},
        {"id": 2, "code": None, "price": Decimal("19.99")}]

    path = stream_file(tmp_path, [[3, "0003", 1e-7]])
    upload = client.upload("orders.csv", path)
    client.update_revision(file_guid, upload, "orders.csv", path.stat().st_size)
    client.refresh_pipeline(SANDBOX_PIPELINE)
    assert client.read_rows(SANDBOX_PIPELINE, 100) == [
        {"id": 3, "code": "0003", "price": Decimal("0.0000001")}]

    uploads = state(server)["uploads"]
    assert len(uploads) == 2
    assert all(u["key_headers_sent"] == [] and u["contentType"] == "text/csv"
               for u in uploads.values())
    revisions = state(server)["datasets"][SANDBOX_DATASET]["files"][file_guid]["revisions"]
    assert [r["revision"] for r in revisions] == [1, 2]


def test_an_expired_url_is_requested_again(client: UsmartClient, server: SandboxServer,
                                           tmp_path: Path, caplog: pytest.LogCaptureFixture
                                           ) -> None:
    control(server, "POST", "/usmart/_sandbox/settings", {"expired_urls_to_issue": 1})
    caplog.handler.addFilter(RedactingFilter(REDACTOR))
    path = stream_file(tmp_path, [[1, "a", 1.5]])
    with caplog.at_level(logging.DEBUG):
        upload = client.upload("orders.csv", path)
    calls = [(r["method"], r["path"].rsplit("/", 1)[-1], r["status"])
             for r in control(server, "GET", "/_sandbox/requests") if "_sandbox" not in r["path"]]
    assert calls == [("POST", "s3:generatePutRequest", 200), ("PUT", "orders.csv", 403),
                     ("POST", "s3:generatePutRequest", 200), ("PUT", "orders.csv", 200)]
    assert "asking for a new signed URL" in caplog.text
    assert "Request has expired" in caplog.text
    signature = dict(parse_qsl(urlsplit(upload.url).query))["signature"]
    assert signature not in caplog.text and urlsplit(upload.url).query not in caplog.text
    assert signature not in repr(upload)


def test_urls_refused_every_time_end_in_one_clear_error(server: SandboxServer,
                                                        tmp_path: Path) -> None:
    client = make_client(server, url_attempts=2)
    control(server, "POST", "/usmart/_sandbox/settings", {"signed_url_expires_seconds": 0})
    with pytest.raises(ApiError) as raised:
        client.upload("orders.csv", stream_file(tmp_path, [[1, "a", 1.5]]))
    message = str(raised.value)
    assert message.startswith("uSmart's storage refused the upload of 'orders.csv' with 2 "
                              "signed URLs: HTTP 403 (AccessDenied: Request has expired)")
    assert "signature" not in message and "\n" not in message


def test_errors_name_what_to_fix(server: SandboxServer, tmp_path: Path) -> None:
    with pytest.raises(ApiError, match=r"refused the API key .* check api_key_id and "
                                       "api_key_secret") as raised:
        make_client(server, key_secret="not-the-secret").view_dataset(SANDBOX_DATASET)
    assert "not-the-secret" not in str(raised.value)
    with pytest.raises(ApiError, match=r"denied dataset:view in organisation 'elsewhere'.*"
                                       "Provider role"):
        make_client(server, org="elsewhere").view_dataset(SANDBOX_DATASET)
    client = make_client(server)
    with pytest.raises(ApiError, match=r"has no dataset 'missing' .*dataset_map"):
        client.view_dataset("missing")
    upload = client.upload("orders.csv", stream_file(tmp_path, [[1, "a", 1.5]]))
    with pytest.raises(ApiError, match=r"rejected file:create .*fileSize"):
        client.create_file(SANDBOX_DATASET, upload, "orders.csv", 1)
    with pytest.raises(ValueError, match="plain file name"):
        client.request_upload("../orders.csv")


@pytest.mark.parametrize(("name", "expected"), [
    ("orders.csv", "orders.csv"), ("public/orders.csv", "orders.csv"),
    ("../../etc/passwd", "passwd"), ("C:\\data\\x.csv", "x.csv"), ("..", "stream"),
    ("a/..", "stream"), ("tab\there.csv", "tab_here.csv"), ("  ", "stream"),
])
def test_safe_file_names_are_basenames(name: str, expected: str) -> None:
    assert safe_file_name(name) == expected


def test_a_create_is_never_repeated_blindly_but_a_revision_or_a_put_is(
        server: SandboxServer, tmp_path: Path) -> None:
    """file:create is not idempotent (a repeat makes a second file): a 503 ends it; the
    signed PUT and file:updateRevision are repeated after a 503 (same content again)."""
    client = make_client(server)
    org = f"/usmart/org/{SANDBOX_ORG}"
    path = stream_file(tmp_path, [[1, "a", 1.5]])
    control(server, "POST", "/_sandbox/faults", {"path": f"{org}/file:create", "status": 503})
    upload = client.upload("orders.csv", path)
    with pytest.raises(ApiError, match=r"failed on file:create \(HTTP 503\)"):
        client.create_file(SANDBOX_DATASET, upload, "orders.csv", path.stat().st_size)
    assert state(server)["datasets"][SANDBOX_DATASET]["files"] == {}
    file_guid = client.create_file(SANDBOX_DATASET, upload, "orders.csv", path.stat().st_size)

    control(server, "POST", "/_sandbox/faults", {"path": "/usmart/s3/*", "status": 503})
    control(server, "POST", "/_sandbox/faults", {"path": f"{org}/file:updateRevision",
                                                 "status": 503})
    upload = client.upload("orders.csv", path)
    client.update_revision(file_guid, upload, "orders.csv", path.stat().st_size)
    calls = [(r["method"], r["path"].rsplit("/", 1)[-1], r["status"])
             for r in control(server, "GET", "/_sandbox/requests") if "_sandbox" not in r["path"]]
    assert calls[-5:] == [("POST", "s3:generatePutRequest", 200), ("PUT", "orders.csv", 503),
                          ("PUT", "orders.csv", 200), ("POST", "file:updateRevision", 503),
                          ("POST", "file:updateRevision", 200)]
    revisions = state(server)["datasets"][SANDBOX_DATASET]["files"][file_guid]["revisions"]
    assert [r["revision"] for r in revisions] == [1, 2]
