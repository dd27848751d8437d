"""target-datainsider in lake mode against the sandbox's file sync: Parquet files read back
with pyarrow value by value, sync start/upload/end, FullSync vs IncrementalSync, answers
checked, STATE only after sync end, signals and kills."""

from __future__ import annotations

import datetime as dt
import json
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import (
    DI_CMD,
    LineWatcher,
    Sandbox,
    counter_stream,
    error_line,
    lines,
    record,
    run_target,
    schema,
    spawn_target,
    state,
    states_of,
    wait_until,
)
from test_datainsider_load import EXACT, PROPERTIES, RECORDS, exact_records

from target_datainsider.sink import LakeLoad
from target_datainsider.target import TargetDataInsider

PREFIX = "target-datainsider: error: "
API = "/datainsider/api"
START, END = f"{API}/ingestion/file/sync/start", f"{API}/ingestion/file/sync/end"
UPLOAD = f"{API}/lake/file/upload"
ITEMS = "/data/singer/items"


@pytest.fixture
def lake_config(di_config: dict) -> dict[str, Any]:
    return {**di_config, "mode": "lake"}


def run(tmp_path: Path, config: dict, messages: list, **env: str) -> Any:
    return run_target(tmp_path, config, lines(messages), command=DI_CMD, **env)


def tables(sandbox: Sandbox, directory: str) -> list[pa.Table]:
    return [pq.read_table(path) for _, path in sandbox.di_lake_files(directory)]


def ids(sandbox: Sandbox, directory: str = ITEMS) -> list[int]:
    return [i for table in tables(sandbox, directory) for i in table.column("id").to_pylist()]


def syncs(sandbox: Sandbox) -> list[dict]:
    return sandbox.di_lake()["syncs"]


def test_values_land_in_parquet_with_arrow_types(tmp_path: Path, sandbox: Sandbox,
                                                 lake_config: dict) -> None:
    messages = [schema("people", PROPERTIES), *(record("people", r) for r in RECORDS),
                state({"at": 3})]
    result = run(tmp_path, lake_config, messages)
    assert result.returncode == 0, result.stderr
    assert states_of(result.stdout) == [{"at": 3}]
    for progress in ("Stream 'people': DataInsider file sync 1 started (IncrementalSync) for "
                     "lake directory /data/singer/people",
                     "Stream 'people': file 1 (3 rows, ",
                     "Stream 'people': batch 1 (3 rows) acknowledged in ",
                     "3 rows and 3 calls so far",
                     "Summary: stream 'people': 3 rows in 1 batches",
                     "Summary: 3 rows in 3 calls in "):
        assert progress in result.stderr, progress
    (name, path), = sandbox.di_lake_files("/data/singer/people")
    assert name == "people-1-0001.parquet"
    table = pq.read_table(path)
    assert {f.name: str(f.type) for f in table.schema} == {
        "id": "int64", "name": "string", "amount": "double", "active": "bool",
        "updated_at": "timestamp[us, tz=UTC]", "birthday": "date32[day]",
        "address": "string", "tags": "string", "code": "string", "cafe_au_lait_": "string"}
    field = table.schema.field("cafe_au_lait_")
    assert field.metadata == {b"singer_property": "café au lait!".encode()}
    got = table.to_pydict()
    assert got["id"] == [1, 2, 9007199254740993]
    assert got["name"] == [r["name"] for r in RECORDS]
    assert got["amount"] == [12.5, 0.1, -1e-300]
    assert got["active"] == [True, False, True]
    utc = dt.UTC
    assert table.column("updated_at").cast(pa.int64()).to_pylist() == [
        int((dt.datetime(2024, 3, 1, 8, 20, 30, 500000, tzinfo=utc)
             - dt.datetime(1970, 1, 1, tzinfo=utc)) / dt.timedelta(microseconds=1)),
        (dt.datetime(201, 12, 31, 23, 59, 59, 123456, tzinfo=utc)
         - dt.datetime(1970, 1, 1, tzinfo=utc)) // dt.timedelta(microseconds=1),
        (dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=utc)
         - dt.datetime(1970, 1, 1, tzinfo=utc)) // dt.timedelta(microseconds=1)]
    assert got["birthday"] == [dt.date(1990, 5, 17), dt.date(2400, 2, 29), dt.date(1, 1, 1)]
    assert [json.loads(a) for a in got["address"]] == [r["address"] for r in RECORDS]
    assert [json.loads(t) for t in got["tags"]] == [r["tags"] for r in RECORDS]
    assert got["code"] == ["A1", "42", ""]
    (sync,) = syncs(sandbox)
    assert (sync["sync_type"], sync["sync_status"], sync["total_files"]) == (
        "IncrementalSync", "Finished", 1)
    shown = sandbox.di_lake()["directories"]["/data/singer/people"]
    assert shown["row_count"] == 3
    assert shown["rows"][1]["updated_at"] == "0201-12-31 23:59:59.123456Z"


def test_numbers_as_doubles_and_nulls_in_every_type(tmp_path: Path, sandbox: Sandbox,
                                                    lake_config: dict) -> None:
    props = {"id": {"type": "integer"}, "amount": {"type": ["number", "null"]},
             "note": {"type": ["string", "null"]}}
    messages = [schema("exact", props), *exact_records("exact", 1)]
    nullable = {key: {"anyOf": [prop, {"type": "null"}]} for key, prop in PROPERTIES.items()}
    nulls = {key: None for key in PROPERTIES if key != "id"} | {"id": 5}
    messages += [schema("people", nullable), record("people", nulls)]
    result = run(tmp_path, lake_config, messages)
    assert result.returncode == 0, result.stderr
    (table,) = tables(sandbox, "/data/singer/exact")
    # a double keeps 15-17 significant digits: the nearest double of each number
    assert table.column("amount").to_pylist() == [float(n) for n in EXACT]
    (people,) = tables(sandbox, "/data/singer/people")
    assert people.to_pylist() == [{key if key != "café au lait!" else "cafe_au_lait_": value
                                   for key, value in nulls.items()}]
    assert str(people.schema.field("updated_at").type) == "timestamp[us, tz=UTC]"  # typed


def test_append_adds_files_and_overwrite_replaces_the_directory(
        tmp_path: Path, sandbox: Sandbox, lake_config: dict) -> None:
    for first in (1, 4):
        assert run(tmp_path, lake_config, counter_stream(first, first + 2,
                                                         state_every=2)).returncode == 0
    assert ids(sandbox) == [1, 2, 3, 4, 5, 6]
    assert [name for name, _ in sandbox.di_lake_files(ITEMS)] == [
        "items-1-0001.parquet", "items-2-0001.parquet"]  # unique names: sync id
    lake_config["load_method"] = "overwrite"
    result = run(tmp_path, lake_config, counter_stream(10, 12, state_every=2))
    assert result.returncode == 0, result.stderr
    assert states_of(result.stdout) == [{"bookmarks": {"items": {"last_id": 12}}}]
    assert ids(sandbox) == [10, 11, 12]
    assert ids(sandbox, "/user/root/.Trash" + ITEMS) == [1, 2, 3, 4, 5, 6]
    assert [s["sync_type"] for s in syncs(sandbox)] == [
        "IncrementalSync", "IncrementalSync", "FullSync"]
    assert "/tmp" + ITEMS not in sandbox.di_lake()["directories"]  # the staging moved in


def test_lake_path_prefix_and_map(tmp_path: Path, sandbox: Sandbox, lake_config: dict) -> None:
    lake_config.update(lake_path_prefix="/lake/raw/", lake_path_map={"public-b": "/x/b"})
    messages = [*counter_stream(1, 2, state_every=2, stream="public-a"),
                *counter_stream(3, 4, state_every=2, stream="public-b")]
    assert run(tmp_path, lake_config, messages).returncode == 0
    assert ids(sandbox, "/lake/raw/public_a") == [1, 2]
    assert ids(sandbox, "/x/b") == [3, 4]


def test_empty_stream_starts_no_sync(tmp_path: Path, sandbox: Sandbox,
                                     lake_config: dict) -> None:
    result = run(tmp_path, lake_config, [schema("items", {"id": {"type": "integer"}}),
                                         state({"x": 1})])
    assert result.returncode == 0, result.stderr
    assert states_of(result.stdout) == [{"x": 1}]
    assert syncs(sandbox) == [] and sandbox.di_lake()["directories"] == {}


def test_schema_change_mid_stream_starts_a_new_file(tmp_path: Path, sandbox: Sandbox,
                                                    lake_config: dict) -> None:
    """One Parquet schema per file: the new columns (and a type turned text) go on in a
    second file of the same sync."""
    first = {"id": {"type": "integer"}, "v": {"type": "integer"}}
    second = {**first, "v": {"type": "string"}, "extra": {"type": ["boolean", "null"]}}
    messages = [schema("items", first), record("items", {"id": 1, "v": 5}),
                schema("items", second), record("items", {"id": 2, "v": "x", "extra": True})]
    result = run(tmp_path, lake_config, messages)
    assert result.returncode == 0, result.stderr
    one, two = tables(sandbox, ITEMS)
    assert one.to_pylist() == [{"id": 1, "v": 5}]
    assert two.to_pylist() == [{"id": 2, "v": "x", "extra": True}]
    assert len(syncs(sandbox)) == 1 and syncs(sandbox)[0]["total_files"] == 2


def test_large_streams_are_cut_into_several_files(tmp_path: Path, sandbox: Sandbox,
                                                  lake_config: dict,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LakeLoad, "max_file_bytes", 1500)
    stream = tmp_path / "in.jsonl"
    stream.write_bytes(lines(counter_stream(1, 400, state_every=37)))
    config = {**lake_config, "batch_size_rows": 50}
    target = TargetDataInsider(config=config, parse_env_config=False)
    with stream.open() as source:
        target.listen(source)
    files = sandbox.di_lake_files(ITEMS)
    assert len(files) > 2
    assert ids(sandbox) == list(range(1, 401))
    assert len(syncs(sandbox)) == 1


def test_a_refused_upload_ends_no_sync_and_writes_no_state(
        tmp_path: Path, sandbox: Sandbox, lake_config: dict) -> None:
    sandbox.fault(path=UPLOAD, status=200, body={"code": 22, "msg": "wrong auth"})
    result = run(tmp_path, lake_config, counter_stream(1, 5, state_every=2))
    assert error_line(result, PREFIX) == (
        f"DataInsider refused file items-1-0001.parquet for lake directory {ITEMS} "
        "(code 22 WrongAuth): wrong auth")
    assert result.stdout == ""
    assert [s["sync_status"] for s in syncs(sandbox)] == ["Syncing"]


def test_sync_end_without_success_is_an_error(tmp_path: Path, sandbox: Sandbox,
                                              lake_config: dict) -> None:
    sandbox.fault(path=END, status=200, body={"success": False})
    lake_config["load_method"] = "overwrite"
    result = run(tmp_path, lake_config, counter_stream(1, 5, state_every=2))
    assert error_line(result, PREFIX) == "DataInsider did not end file sync 1: success=False"
    assert result.stdout == ""


def test_a_failed_full_sync_is_never_ended_and_publishes_nothing(
        tmp_path: Path, sandbox: Sandbox, lake_config: dict) -> None:
    """The directory keeps the last complete load; the failed run's file stays staged."""
    assert run(tmp_path, lake_config, counter_stream(1, 3, state_every=3)).returncode == 0
    sandbox.fault(path=END, status=400, body={"code": 400, "reason": "bad_request",
                                              "message": "move full sync files failed: "})
    lake_config["load_method"] = "overwrite"
    result = run(tmp_path, lake_config, counter_stream(7, 9, state_every=3))
    assert error_line(result, PREFIX).startswith(
        "DataInsider failed on ingestion/file/sync/end (HTTP 400): move full sync files failed")
    assert result.stdout == ""
    assert ids(sandbox) == [1, 2, 3]
    assert ids(sandbox, "/tmp" + ITEMS) == [7, 8, 9]


def test_retries_on_429_and_5xx(tmp_path: Path, sandbox: Sandbox, lake_config: dict) -> None:
    sandbox.fault(path=START, status=429, retry_after=0, times=1)
    sandbox.fault(path=UPLOAD, status=503, retry_after=0, times=1)
    sandbox.fault(path=UPLOAD, drop=True, times=1)
    sandbox.fault(path=END, status=502, retry_after=0, times=1)
    result = run(tmp_path, lake_config, counter_stream(1, 5, state_every=2))
    assert result.returncode == 0, result.stderr
    assert states_of(result.stdout)[-1] == {"bookmarks": {"items": {"last_id": 5}}}
    assert ids(sandbox) == [1, 2, 3, 4, 5]
    statuses = [(r["path"].rsplit("/", 1)[-1], r["status"]) for r in sandbox.requests()]
    assert statuses.count(("start", 429)) == statuses.count(("end", 502)) == 1
    assert ("upload", 503) in statuses


def test_an_end_whose_answer_was_lost_is_not_an_error(tmp_path: Path, sandbox: Sandbox,
                                                      lake_config: dict) -> None:
    sandbox.fault(path=END, drop_after=True)  # applied, the answer lost: the retry hears 400
    result = run(tmp_path, lake_config, counter_stream(1, 3, state_every=3))
    assert result.returncode == 0, result.stderr
    assert ids(sandbox) == [1, 2, 3]
    assert [r["status"] for r in sandbox.requests() if r["path"] == END][-1] == 400


# -- signals and kills --------------------------------------------------------------------


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("method", ["append-only", "overwrite"])
def test_a_signal_mid_stream_uploads_nothing_and_writes_no_state(
        tmp_path: Path, sandbox: Sandbox, lake_config: dict, stop: signal.Signals,
        method: str) -> None:
    lake_config.update(load_method=method, batch_size_rows=50)
    proc = spawn_target(tmp_path, lake_config, stderr=subprocess.PIPE, command=DI_CMD)
    assert proc.stdin and proc.stderr and proc.stdout
    log = LineWatcher(proc.stderr)
    proc.stdin.write(lines(counter_stream(1, 500, state_every=37)))
    proc.stdin.flush()  # stdin stays open: the input is cut by the signal
    log.wait_for("Stream 'items' -> DataInsider lake directory")
    proc.send_signal(stop)
    assert proc.wait(timeout=30) == 128 + stop
    assert proc.stdout.read() == b""
    assert syncs(sandbox) == [], "nothing is synced from a cut input"
    assert any("no file is finished, uploaded or committed" in line for line in log.rest())


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
@pytest.mark.parametrize("method", ["append-only", "overwrite"])
def test_killed_during_the_sync_then_resumed_loses_nothing(
        tmp_path: Path, sandbox: Sandbox, lake_config: dict, stop: signal.Signals,
        method: str) -> None:
    """Stopped after the file was uploaded, while its sync end is refused (503, retried):
    no STATE, the sync never ends. (A SIGTERM here waits for the call in flight and its
    retries, as on every path; the second signal stops at once.) The resumed run, from the
    STATE Meltano had (none), loads everything again. IncrementalSync: the stopped run's
    file stays in the directory, so its rows are there twice (the documented cost);
    FullSync: exactly once."""
    sandbox.fault(path=END, status=503, retry_after=1, times=1000)
    lake_config.update(load_method=method, batch_size_rows=50, max_retries=100)
    stream = lines(counter_stream(1, 300, state_every=37))
    proc = spawn_target(tmp_path, lake_config, stream, command=DI_CMD, stderr=subprocess.PIPE)
    assert proc.stdout and proc.stderr
    log = LineWatcher(proc.stderr)
    wait_until(lambda: any(r["path"] == END for r in sandbox.requests()),
               "the first sync end to be refused")
    proc.send_signal(stop)
    if stop == signal.SIGTERM:
        log.wait_for("Signal 15: stopping")
        proc.send_signal(stop)
    assert proc.wait(timeout=30) == (-stop if stop == signal.SIGKILL else 128 + stop)
    assert proc.stdout.read() == b"", "no STATE before the sync ended"
    assert [s["sync_status"] for s in syncs(sandbox)] == ["Syncing"]
    staged = ids(sandbox, ITEMS if method == "append-only" else "/tmp" + ITEMS)
    assert staged == list(range(1, 301))

    sandbox._control("DELETE", "faults")
    resumed = run_target(tmp_path, lake_config, stream, command=DI_CMD)
    assert resumed.returncode == 0, resumed.stderr
    assert states_of(resumed.stdout)[-1] == {"bookmarks": {"items": {"last_id": 300}}}
    landed = Counter(ids(sandbox))
    assert set(landed) == set(range(1, 301)), "records were lost"
    assert set(landed.values()) == ({2} if method == "append-only" else {1})


@pytest.mark.parametrize(("bad", "expected"), [
    ("{not json", "line 4: not a valid JSON line"),
    ('{"type": "RECORD", "stream": "items", "record": {"id": "x", "label": null}}',
     "line 4: stream 'items': field 'id' must be integer"),
])
def test_bad_input_is_one_line_and_syncs_nothing(tmp_path: Path, sandbox: Sandbox,
                                                 lake_config: dict, bad: str,
                                                 expected: str) -> None:
    messages = [*counter_stream(1, 1, state_every=1), bad]
    assert error_line(run(tmp_path, lake_config, messages), PREFIX).startswith(expected)
    assert syncs(sandbox) == []
