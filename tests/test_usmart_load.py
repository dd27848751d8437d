"""target-usmart end to end: the real command line against the sandbox over HTTP, and what
landed read back through uSmart's read route (`.../latest/urql?limit(n,offset)`), value by
value.

Covered here: create then revise (overwrite), a new file per run (append-only), basenames,
values that CSV readers love to break (leading zeros, `0.80`, empty strings, all-null
records), a SCHEMA change mid-stream, an empty stream, an expired signed URL, pipeline
refreshes (all, some, none), a failed refresh, signals with no partial file registered, one
line errors, and no secret or URL signature in any output at DEBUG. The shared kill-and-
resume test (tests/test_kill_resume.py) runs target-usmart too.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import signal
import subprocess
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import (
    US_CMD,
    LineWatcher,
    Sandbox,
    counter_stream,
    lines,
    record,
    run_target,
    schema,
    spawn_target,
    states_of,
    wait_until,
)

from target_usmart.sandbox import (
    SANDBOX_DATASET,
    SANDBOX_KEY_ID,
    SANDBOX_KEY_SECRET,
    SANDBOX_ORG,
    SANDBOX_PIPELINE,
)

KEYS = {"api-key-id": SANDBOX_KEY_ID, "api-key-secret": SANDBOX_KEY_SECRET}
PREFIX = "target-usmart: error: "
ORDERS = {"id": {"type": "integer"}, "zip": {"type": ["string", "null"]},
          "ratio": {"type": ["number", "null"]}, "note": {"type": ["string", "null"]},
          "paid": {"type": ["boolean", "null"]},
          "at": {"type": ["string", "null"], "format": "date-time"},
          "meta": {"type": ["object", "null"]}}


def run(tmp_path: Path, config: dict, messages: list, **env: str) -> subprocess.CompletedProcess:
    return run_target(tmp_path, config, lines(messages), command=US_CMD, **env)


def usmart(sandbox: Sandbox) -> dict[str, Any]:
    return sandbox._control("GET", "state")["usmart"]


def files(sandbox: Sandbox, dataset: str = SANDBOX_DATASET) -> dict[str, dict]:
    return usmart(sandbox)["datasets"][dataset]["files"]


def refreshes(sandbox: Sandbox, pipeline: str = SANDBOX_PIPELINE) -> list[dict]:
    return usmart(sandbox)["datasets"][SANDBOX_DATASET]["resourceContainers"][pipeline][
        "refreshes"]


def read_route(sandbox: Sandbox, resource: str, limit: int = 100_000, offset: int = 0
               ) -> list[dict[str, Any]]:
    """What uSmart's read API serves, numbers with their digits (Decimal)."""
    url = (f"{sandbox.server.api_url('usmart')}/org/{SANDBOX_ORG}/{resource}/latest/urql"
           f"?limit({limit},{offset})")
    response = requests.get(url, headers=KEYS, timeout=30)
    assert response.status_code == 200, response.text
    return json.loads(response.content, parse_float=Decimal)


def emulator_settings(sandbox: Sandbox, **values: Any) -> None:
    """The uSmart emulator's own settings (signed URL lifetime, expired URLs to issue)."""
    response = requests.post(f"{sandbox.server.api_url('usmart')}/_sandbox/settings",
                             json=values, timeout=10)
    assert response.status_code == 200, response.text


def calls(sandbox: Sandbox) -> list[tuple[str, str, int]]:
    """(method, last path segment, status) of every uSmart request the sandbox saw."""
    return [(r["method"], r["path"].rsplit("/", 1)[-1], r["status"])
            for r in sandbox.requests()
            if r["emulator"] == "usmart" and "/_sandbox/" not in r["path"]]


# -- create, then revise --------------------------------------------------------------------

FIRST = [  # the most complete record first: uSmart types the columns from the first row
    {"id": 1, "zip": "0012", "ratio": "0.80", "note": "a, \"quoted\"\nline", "paid": True,
     "at": "2024-02-29T23:30:00-01:00", "meta": {"n": "1.10", "tags": ["x"]}},
    {"id": 2, "zip": "-07", "ratio": "0.8", "note": "", "paid": False,
     "at": "0999-01-02T03:04:05Z", "meta": None},
    {"id": 3, "zip": None, "ratio": "1e-7", "note": "12", "paid": None, "at": None,
     "meta": None},
    {"id": 4, "zip": "00", "ratio": "123456789012345678.123456", "note": " padded ",
     "paid": True, "at": "2024-01-02T03:04:05.123456Z", "meta": {}},
]


def exact_lines(messages: list[dict]) -> bytes:
    """JSON lines with the `ratio` and `meta.n` strings of FIRST written as JSON numbers, so
    the tap's own digits (`0.80`, `1e-7`) reach the target."""
    text = lines(messages).decode()
    text = re.sub(r'"ratio": "([-0-9.e]+)"', r'"ratio": \1', text)
    text = re.sub(r'"n": "([-0-9.e]+)"', r'"n": \1', text)
    return text.encode()


def test_overwrite_creates_then_revises_and_every_value_reads_back(
        tmp_path: Path, sandbox: Sandbox, us_config: dict) -> None:
    us_config["load_method"] = "overwrite"
    messages = [schema("orders", ORDERS), *(record("orders", r) for r in FIRST),
                {"type": "STATE", "value": {"bookmarks": {"orders": 4}}}]
    first = run_target(tmp_path, us_config, exact_lines(messages), command=US_CMD)
    assert first.returncode == 0, first.stderr
    assert states_of(first.stdout) == [{"bookmarks": {"orders": 4}}]
    (file_guid, file), = files(sandbox).items()
    assert file["fileName"] == "orders.csv"
    assert [c["type"] for c in file["revisions"][0]["columns"]] == [
        "number", "text", "number", "text", "boolean", "datetime", "text"]
    assert file["revisions"][0]["stopped_at_blank_row"] is None
    assert file["revisions"][0]["type_conflicts"] == {}

    rows = read_route(sandbox, SANDBOX_PIPELINE)
    assert [row["id"] for row in rows] == [1, 2, 3, 4]
    assert [row["zip"] for row in rows] == ["0012", "-07", None, "00"]  # zeros kept
    assert [row["ratio"] for row in rows] == [Decimal("0.80"), Decimal("0.8"),
                                              Decimal("0.0000001"),
                                              Decimal("123456789012345678.123456")]
    assert [str(row["ratio"]) for row in rows][:2] == ["0.80", "0.8"]  # the tap's digits
    assert [row["note"] for row in rows] == ['a, "quoted"\nline', "", "12", " padded "]
    assert [row["paid"] for row in rows] == [True, False, None, True]
    assert [row["at"] for row in rows] == ["2024-03-01T00:30:00Z", "0999-01-02T03:04:05Z",
                                           None, "2024-01-02T03:04:05.123456Z"]
    assert json.loads(rows[0]["meta"], parse_float=Decimal) == {"n": Decimal("1.10"),
                                                                 "tags": ["x"]}
    assert [row["meta"] for row in rows[1:]] == [None, None, "{}"]
    assert read_route(sandbox, SANDBOX_PIPELINE, 2, 1) == rows[1:3]  # limit(n,offset)

    second_rows = [{"id": 9, "zip": "0099", "ratio": "2.50", "note": "new", "paid": False,
                    "at": "2025-01-01T00:00:00Z", "meta": {"v": 2}}]
    second = run_target(tmp_path, us_config, exact_lines(
        [schema("orders", ORDERS), *(record("orders", r) for r in second_rows),
         {"type": "STATE", "value": {"bookmarks": {"orders": 9}}}]), command=US_CMD)
    assert second.returncode == 0, second.stderr
    (again_guid, again), = files(sandbox).items()
    assert again_guid == file_guid, "overwrite revises the stream's file"
    assert [r["revision"] for r in again["revisions"]] == [1, 2]
    assert read_route(sandbox, SANDBOX_PIPELINE) == [
        {"id": 9, "zip": "0099", "ratio": Decimal("2.50"), "note": "new", "paid": False,
         "at": "2025-01-01T00:00:00Z", "meta": '{"v":2}'}]
    assert [list(r["files"].values()) for r in refreshes(sandbox)] == [[1], [2]]
    assert all(u["key_headers_sent"] == [] for u in usmart(sandbox)["uploads"].values())
    assert "new revision of file 'orders.csv'" in second.stderr


def test_append_only_adds_a_file_per_run_named_with_its_utc_time(
        tmp_path: Path, sandbox: Sandbox, us_config: dict) -> None:
    started = dt.datetime.now(dt.UTC).replace(microsecond=0)
    for first, last in ((1, 5), (6, 8)):
        done = run_target(tmp_path, us_config, lines(counter_stream(first, last,
                                                                    state_every=2)),
                          command=US_CMD)
        assert done.returncode == 0, done.stderr
        assert states_of(done.stdout)[-1] == {"bookmarks": {"items": {"last_id": last}}}
    names = [f["fileName"] for f in files(sandbox).values()]
    assert len(names) == 2
    for name in names:
        stamp = re.fullmatch(r"items-(\d{8}T\d{6}Z)\.csv", name)
        assert stamp, name
        when = dt.datetime.strptime(stamp.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        assert started <= when <= dt.datetime.now(dt.UTC)
    assert [row["id"] for row in read_route(sandbox, SANDBOX_PIPELINE)] == list(range(1, 9))


def test_file_names_are_basenames_whatever_the_stream_name(
        tmp_path: Path, sandbox: Sandbox, us_config: dict) -> None:
    us_config.update(load_method="overwrite", file_name_map={"mapped": "../../tmp/named"})
    props = {"id": {"type": "integer"}}
    streams = ["public/orders", "../../etc/passwd", "..", "mapped", r"C:\data\x"]
    messages = [m for s in streams for m in (schema(s, props), record(s, {"id": 1}))]
    done = run(tmp_path, us_config, messages)
    assert done.returncode == 0, done.stderr
    assert sorted(f["fileName"] for f in files(sandbox).values()) == [
        "named.csv", "orders.csv", "passwd.csv", "stream.csv", "x.csv"]
    assert all("/" not in key.split("/", 2)[2] for key in usmart(sandbox)["uploads"])


# -- values, schema changes, empty streams ------------------------------------------------------


def test_all_null_records_empty_strings_and_a_schema_change_mid_stream(
        tmp_path: Path, sandbox: Sandbox, us_config: dict) -> None:
    wide = {"id": {"type": "integer"}, "name": {"type": ["string", "null"]},
            "code": {"type": ["string", "null"]}}
    nullable = {k: {"type": [v["type"], "null"]} if isinstance(v["type"], str) else v
                for k, v in wide.items()}
    messages = [
        schema("people", nullable, keys=()),
        record("people", {"id": 1, "name": "Ann", "code": "007"}),
        record("people", {"id": None, "name": None, "code": None}),  # all null
        record("people", {"id": 2, "name": "", "code": ""}),  # empty strings
        schema("people", {**nullable, "score": {"type": ["number", "null"]}}, keys=()),
        record("people", {"id": 3, "name": "Bo", "code": "0", "score": 0.5}),
        schema("quiet", {"id": {"type": "integer"}}),  # a stream with no records
    ]
    done = run(tmp_path, us_config, messages)
    assert done.returncode == 0, done.stderr
    (file,) = files(sandbox).values()
    assert file["fileName"].startswith("people-")
    assert [c["name"] for c in file["revisions"][-1]["columns"]] == ["id", "name", "code",
                                                                     "score"]
    assert read_route(sandbox, SANDBOX_PIPELINE) == [
        # the most complete row first (uSmart types the columns from it), then in order
        {"id": 3, "name": "Bo", "code": "0", "score": Decimal("0.5")},
        {"id": 1, "name": "Ann", "code": "007", "score": None},
        {"id": None, "name": None, "code": None, "score": None},
        {"id": 2, "name": "", "code": "", "score": None},
    ]
    assert "Stream 'people': new SCHEMA; adds columns score" in done.stderr
    assert sum(1 for c in calls(sandbox) if c[1] == "s3:generatePutRequest") == 1


def test_an_empty_stream_changes_nothing(tmp_path: Path, sandbox: Sandbox,
                                         us_config: dict) -> None:
    us_config["load_method"] = "overwrite"
    done = run(tmp_path, us_config, [schema("orders", ORDERS),
                                     {"type": "STATE", "value": {"b": 1}}])
    assert done.returncode == 0, done.stderr
    assert calls(sandbox) == [], "no call at all for a stream without records"
    assert files(sandbox) == {} and refreshes(sandbox) == []


# -- signed URLs and pipelines ------------------------------------------------------------------


def test_an_expired_signed_url_is_asked_for_again(tmp_path: Path, sandbox: Sandbox,
                                                  us_config: dict) -> None:
    emulator_settings(sandbox, expired_urls_to_issue=1)
    done = run(tmp_path, us_config, counter_stream(1, 3, state_every=3))
    assert done.returncode == 0, done.stderr
    seen = [(method, name if method != "PUT" else "PUT", status)
            for method, name, status in calls(sandbox)]
    assert seen == [("POST", "dataset:view", 200),
                    ("POST", "s3:generatePutRequest", 200), ("PUT", "PUT", 403),
                    ("POST", "s3:generatePutRequest", 200), ("PUT", "PUT", 200),
                    ("POST", "file:create", 200), ("POST", "resourceContainer:process", 200)]
    assert "AccessDenied: Request has expired" in done.stderr
    assert [row["id"] for row in read_route(sandbox, SANDBOX_PIPELINE)] == [1, 2, 3]


def test_pipelines_refreshed_all_by_default_a_list_or_none(
        tmp_path: Path, sandbox: Sandbox, us_config: dict) -> None:
    created = requests.post(
        f"{sandbox.server.api_url('usmart')}/org/{SANDBOX_ORG}/resourceContainer:create",
        json={"datasetGUID": SANDBOX_DATASET, "pipelineId": "csv"}, headers=KEYS, timeout=10)
    second = created.json()["result"]["resourceContainerGUID"]
    assert run(tmp_path, us_config, counter_stream(1, 2, state_every=2)).returncode == 0
    assert (len(refreshes(sandbox)), len(refreshes(sandbox, second))) == (1, 1)
    us_config["refresh_pipelines"] = [second]
    assert run(tmp_path, us_config, counter_stream(3, 4, state_every=2)).returncode == 0
    assert (len(refreshes(sandbox)), len(refreshes(sandbox, second))) == (1, 2)
    assert [r["id"] for r in read_route(sandbox, second)] == [1, 2, 3, 4]
    assert [r["id"] for r in read_route(sandbox, SANDBOX_PIPELINE)] == [1, 2]
    us_config["refresh_pipelines"] = "none"
    assert run(tmp_path, us_config, counter_stream(5, 6, state_every=2)).returncode == 0
    assert (len(refreshes(sandbox)), len(refreshes(sandbox, second))) == (1, 2)
    assert len(files(sandbox)) == 3


def test_a_failed_refresh_is_an_error_and_the_resumed_run_revises_again(
        tmp_path: Path, sandbox: Sandbox, us_config: dict) -> None:
    us_config.update(load_method="overwrite", max_retries=1)
    sandbox.fault(path=f"/usmart/org/{SANDBOX_ORG}/resourceContainer:process", status=400)
    stream = counter_stream(1, 20, state_every=7)
    failed = run(tmp_path, us_config, stream)
    assert failed.returncode == 1 and failed.stdout == "", "no STATE past an unrefreshed file"
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith(PREFIX + "uSmart rejected resourceContainer:process (HTTP 400)")
    assert "Traceback" not in failed.stderr
    (file,) = files(sandbox).values()
    assert len(file["revisions"]) == 1 and refreshes(sandbox) == []

    resumed = run(tmp_path, us_config, stream)  # Meltano has no STATE: the whole stream
    assert resumed.returncode == 0, resumed.stderr
    (file,) = files(sandbox).values()
    assert len(file["revisions"]) == 2  # harmless under overwrite: same rows, new revision
    assert [r["id"] for r in read_route(sandbox, SANDBOX_PIPELINE)] == list(range(1, 21))
    assert states_of(resumed.stdout) == [{"bookmarks": {"items": {"last_id": 20}}}]


# -- signals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
def test_a_signal_mid_stream_registers_no_partial_file_and_the_rerun_loses_nothing(
        tmp_path: Path, sandbox: Sandbox, us_config: dict, stop: signal.Signals) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    us_config.update(spool_dir=str(spool), batch_size_rows=100)
    proc = spawn_target(tmp_path, us_config, command=US_CMD)
    assert proc.stdin and proc.stdout
    stream = counter_stream(1, 2000, state_every=37)
    proc.stdin.write(lines(stream[:1500]))  # and no more: the input is cut mid-stream
    proc.stdin.flush()
    wait_until(lambda: any(p.stat().st_size > 0 for p in spool.rglob("*.csv")),
               "the target to spool rows of the stream")
    proc.send_signal(stop)
    out = proc.stdout.read()
    assert proc.wait(timeout=30) == (-stop if stop == signal.SIGKILL else 128 + stop)
    assert out == b"", "no STATE: nothing was confirmed"
    assert files(sandbox) == {} and usmart(sandbox)["uploads"] == {}, "no partial file"
    assert not list(spool.rglob("*.csv")) or stop == signal.SIGKILL  # SIGTERM cleans up

    again = run(tmp_path, us_config, stream)
    assert again.returncode == 0, again.stderr
    assert [r["id"] for r in read_route(sandbox, SANDBOX_PIPELINE)] == list(range(1, 2001))


def test_sigterm_while_the_refresh_runs_leaves_no_state_and_the_rerun_revises(
        tmp_path: Path, sandbox: Sandbox, us_config: dict) -> None:
    """Between the registered revision and its refresh: no STATE; the rerun (overwrite)
    makes a new revision of the same file with every row, once."""
    us_config["load_method"] = "overwrite"
    sandbox.fault(path=f"/usmart/org/{SANDBOX_ORG}/resourceContainer:process", delay=1.0)
    stream = counter_stream(1, 50, state_every=7)
    proc = spawn_target(tmp_path, us_config, lines(stream), stderr=subprocess.PIPE,
                        command=US_CMD)
    log = LineWatcher(proc.stderr)
    log.wait_for("registered as new file 'items.csv'")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert proc.stdout is not None and proc.stdout.read() == b""
    resumed = run(tmp_path, us_config, stream)
    assert resumed.returncode == 0, resumed.stderr
    (file,) = files(sandbox).values()
    assert [r["revision"] for r in file["revisions"]] == [1, 2]
    assert [r["id"] for r in read_route(sandbox, SANDBOX_PIPELINE)] == list(range(1, 51))


# -- errors and secrets -------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "messages", "expected"), [
    ({"api_key_secret": "not-the-secret"}, None,
     "uSmart refused the API key (HTTP 401 on dataset:view): check api_key_id and "
     "api_key_secret"),
    ({"org_guid": "elsewhere"}, None,
     "uSmart denied dataset:view in organisation 'elsewhere' (HTTP 403)"),
    ({"dataset_guid": "nope"}, None, "uSmart has no dataset 'nope' (HTTP 404 on dataset:view)"),
    ({"dataset_guid": None}, None, "no dataset for stream 'items': set dataset_guid, or "
                                   'dataset_map {"items": "<dataset GUID>"}'),
    ({"load_method": "overwrite", "file_name_map": {"a": "same.csv", "b": "same"}},
     [schema("a", {"id": {"type": "integer"}}), schema("b", {"id": {"type": "integer"}})],
     "streams 'a' and 'b' both overwrite the file 'same.csv' of dataset 'sandbox-dataset'"),
    ({"api_url": "http://example.com/usmart"}, None, "api_url uses plain http:// to "
                                                     "example.com"),
    ({"load_method": "overwrite", "max_file_bytes": 1000}, None,
     "max_file_bytes is for append-only"),
    ({"refresh_pipelines": "some"}, None, 'refresh_pipelines must be "all", "none" or a list'),
    ({"refresh_pipelines": 3}, None, "invalid config"),
])
def test_errors_are_one_line_naming_what_to_fix(
        tmp_path: Path, sandbox: Sandbox, us_config: dict, change: dict,
        messages: list | None, expected: str) -> None:
    config = {k: v for k, v in {**us_config, **change}.items() if v is not None}
    done = run(tmp_path, config, messages or counter_stream(1, 3, state_every=3))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(PREFIX) and expected in last, last
    assert "not-the-secret" not in done.stderr
    assert done.stdout == ""
    if messages:
        assert calls(sandbox) == [], "refused before anything was sent"


def test_secrets_and_url_signatures_never_appear_even_at_debug(
        tmp_path: Path, sandbox: Sandbox, us_config: dict) -> None:
    emulator_settings(sandbox, expired_urls_to_issue=1)
    sandbox.fault(path="/usmart/s3/*", method="PUT", status=503, retry_after=0)
    us_config.update(max_file_bytes=500, batch_size_rows=20)  # several files and URLs
    done = run(tmp_path, us_config, counter_stream(1, 200, state_every=50),
               LOGLEVEL="DEBUG", TARGET_USMART_LOGLEVEL="DEBUG")
    assert done.returncode == 0, done.stderr
    assert "DEBUG" in done.stderr
    assert sum(1 for c in calls(sandbox) if c[1] == "s3:generatePutRequest") >= 3
    output = done.stderr + done.stdout
    for secret in (SANDBOX_KEY_SECRET, SANDBOX_KEY_ID):
        assert secret not in output
    assert "signature=" not in output and "expires=" not in output
    assert not re.search(r"[0-9a-f]{64}", output), "an HMAC signature leaked"
    assert "/usmart/s3/usmart-sandbox-uploads/uploads/" in output  # the PUTs are logged...
    assert "503" in output  # ...and retried
