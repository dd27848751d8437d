"""target-datatile end to end: the real command line against the DataTile emulator over HTTP.

Each test reads back what landed, value by value, from the emulator (which reads the
uploaded SPSS file with pyreadstat, a reader independent of the target's writer).
"""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    DT_CMD,
    DT_ERROR,
    LineWatcher,
    Sandbox,
    counter_stream,
    dt_rows,
    dt_snapshot,
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

from target_datatile.sandbox import SANDBOX_DATABASE, SANDBOX_FOLDER, SANDBOX_TOKEN
from target_datatile.target import TargetDataTile

PEOPLE = {
    "id": {"type": "integer"},
    "full name": {"type": ["string", "null"]},
    "active": {"type": ["boolean", "null"]},
    "born": {"type": ["string", "null"], "format": "date"},
    "seen_at": {"type": ["string", "null"], "format": "date-time"},
    "amount": {"type": ["number", "null"]},
    "tags": {"type": ["array", "null"], "items": {"type": "string"}},
    "address": {"type": ["object", "null"], "properties": {"city": {"type": "string"}}},
}
PEOPLE_RECORDS: list[dict[str, Any]] = [
    {"id": 1, "full name": "Ana Müller", "active": True, "born": "1990-05-17",
     "seen_at": "2024-02-29T23:59:58.250000Z", "amount": 12.5, "tags": ["a", "ü"],
     "address": {"city": "Zürich"}},
    {"id": 2, "full name": None, "active": False, "born": "0001-01-01",
     "seen_at": "2024-03-01T01:00:00+02:00", "amount": None, "tags": None, "address": None},
    {"id": 3, "full name": "東京 🙂", "active": None, "born": None, "seen_at": None,
     "amount": -1234567.125, "tags": [], "address": {"city": "Léon"}},
]
PEOPLE_LANDED = [
    {"id": 1, "full_name": "Ana Müller", "active": 1, "born": "1990-05-17",
     "seen_at": "2024-02-29T23:59:58.250000", "amount": 12.5, "tags": '["a","ü"]',
     "address": '{"city":"Zürich"}'},
    {"id": 2, "full_name": "", "active": 0, "born": "0001-01-01",
     "seen_at": "2024-02-29T23:00:00.000000", "amount": None, "tags": "", "address": ""},
    {"id": 3, "full_name": "東京 🙂", "active": None, "born": None, "seen_at": None,
     "amount": -1234567.125, "tags": "[]", "address": '{"city":"Léon"}'},
]


def people(stream: str = "items", records: list[dict] = PEOPLE_RECORDS) -> bytes:
    return lines([schema(stream, PEOPLE), *[record(stream, r) for r in records],
                  state({"bookmarks": {stream: {"id": records[-1]["id"]}}})])


def run(tmp_path: Path, config: dict, stdin: bytes, **env: str) -> subprocess.CompletedProcess:
    return run_target(tmp_path, config, stdin, command=DT_CMD, **env)


def emulator(sandbox: Sandbox) -> Any:
    return sandbox.server.emulators["datatile"]


def uploads(sandbox: Sandbox) -> list[dict]:
    return [r for r in sandbox.requests() if "/upload/" in r["path"]]


# -- create, reload, append ---------------------------------------------------------------


@pytest.mark.parametrize(("file_format", "suffix"), [(None, ".zsav"), ("sav", ".sav")])
def test_append_then_reload_land_value_by_value(tmp_path: Path, sandbox: Sandbox,
                                                dt_config: dict, file_format: str | None,
                                                suffix: str) -> None:
    if file_format:
        dt_config["file_format"] = file_format
    first = run(tmp_path, dt_config, people())
    assert first.returncode == 0, first.stderr
    assert states_of(first.stdout) == [{"bookmarks": {"items": {"id": 3}}}]
    assert dt_rows(sandbox) == PEOPLE_LANDED
    again = run(tmp_path, dt_config, people())  # append-only: the rows again, after
    assert again.returncode == 0, again.stderr
    assert dt_rows(sandbox) == PEOPLE_LANDED * 2
    assert [u["path"].rsplit("/", 2)[-2] for u in uploads(sandbox)] == ["append", "append"]

    dt_config["load_method"] = "overwrite"
    replaced = run(tmp_path, dt_config, people(records=PEOPLE_RECORDS[1:]))
    assert replaced.returncode == 0, replaced.stderr
    assert dt_rows(sandbox) == PEOPLE_LANDED[1:]
    assert uploads(sandbox)[-1]["path"].endswith(f"/upload/reload/{SANDBOX_DATABASE}")
    database = dt_snapshot(sandbox)["databases"][SANDBOX_DATABASE]
    variables = {v["name"]: v for v in database["variables"]}
    assert variables["active"]["value_labels"] == {"0": "false", "1": "true"}
    assert variables["full_name"]["label"] == "full name"
    assert [variables[n]["type"] for n in ("id", "born", "seen_at", "tags")] == [
        "numeric", "date", "datetime", "string"]
    assert "completed" in replaced.stderr and "Summary: 2 rows" in replaced.stderr
    assert {Path(job["file"]).suffix for job in dt_snapshot(sandbox)["jobs"]} == {suffix}


def test_create_makes_a_database_remembers_it_and_appends_next_time(
        tmp_path: Path, sandbox: Sandbox, dt_config: dict) -> None:
    dt_config.update(database_map={}, create_missing_databases=True, folder_hash=SANDBOX_FOLDER)
    first = run(tmp_path, dt_config, people("orders"))
    assert first.returncode == 0, first.stderr
    created = [h for h, d in dt_snapshot(sandbox)["databases"].items()
               if h != SANDBOX_DATABASE]
    assert len(created) == 1
    (database,) = created
    assert f"created DataTile database '{database}'" in first.stderr
    assert json.loads(Path(dt_config["created_databases_file"]).read_text()) == {
        dt_config["api_url"]: {"orders": database}}
    assert dt_snapshot(sandbox)["databases"][database]["name"] == "orders"
    assert dt_snapshot(sandbox)["databases"][database]["folder"] == SANDBOX_FOLDER

    second = run(tmp_path, dt_config, people("orders", PEOPLE_RECORDS[:1]))
    assert second.returncode == 0, second.stderr
    assert uploads(sandbox)[-1]["path"].endswith(f"/upload/append/{database}")
    assert dt_rows(sandbox, database) == PEOPLE_LANDED + PEOPLE_LANDED[:1]


def test_exact_numbers_become_doubles(tmp_path: Path, sandbox: Sandbox,
                                      dt_config: dict) -> None:
    """Numbers arrive as the tap's exact text (msgspec.Raw); SPSS keeps doubles."""
    stream = lines([schema("items", {"id": {"type": "integer"}, "x": {"type": "number"}}),
                    '{"type":"RECORD","stream":"items","record":{"id":1,"x":0.1}}',
                    '{"type":"RECORD","stream":"items","record":{"id":2,"x":1e-7}}',
                    '{"type":"RECORD","stream":"items","record":{"id":9007199254740993,'
                    '"x":123456789012.25}}'])
    result = run(tmp_path, dt_config, stream)
    assert result.returncode == 0, result.stderr
    assert dt_rows(sandbox) == [{"id": 1, "x": 0.1}, {"id": 2, "x": 1e-7},
                                {"id": 9007199254740992, "x": 123456789012.25}]


def test_csv_file_format(tmp_path: Path, sandbox: Sandbox, dt_config: dict) -> None:
    dt_config["file_format"] = "csv"
    result = run(tmp_path, dt_config, people())
    assert result.returncode == 0, result.stderr
    rows = dt_rows(sandbox)
    assert [r["id"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["full_name"] == "Ana Müller" and rows[0]["active"] == "true"
    assert rows[2]["amount"] == "-1234567.125"  # the tap's digits, as text


# -- names, labels, values ----------------------------------------------------------------


def test_names_are_sanitised_unique_within_64_bytes_and_labelled(
        tmp_path: Path, sandbox: Sandbox, dt_config: dict) -> None:
    long = "a very long field name that goes on " * 3
    fields = ["customer id", "Customer-ID", "2nd", "to", "café", long + "x", long + "y", "東京"]
    properties = {"id": {"type": "integer"}, **{f: {"type": "string"} for f in fields}}
    stream = lines([schema("items", properties),
                    record("items", {"id": 1, **{f: f"value {i}" for i, f in enumerate(fields)}})])
    result = run(tmp_path, dt_config, stream)
    assert result.returncode == 0, result.stderr
    variables = dt_snapshot(sandbox)["databases"][SANDBOX_DATABASE]["variables"]
    names = [v["name"] for v in variables]
    cut = "a_very_long_field_name_that_goes_on_a_very_long_field_name_that_"
    assert names == ["id", "customer_id", "Customer_ID_2", "v2nd", "to_", "cafe", cut,
                     cut[:62] + "_2", "v"]
    assert all(len(n.encode()) <= 64 for n in names)
    assert [v["label"] for v in variables] == ["id", *fields]
    (row,) = dt_rows(sandbox)
    assert [row[n] for n in names[1:]] == [f"value {i}" for i in range(len(fields))]


def test_a_string_at_the_spss_limit_lands_and_one_byte_more_is_a_clear_error(
        tmp_path: Path, sandbox: Sandbox, dt_config: dict) -> None:
    fits = "é" * 16_383 + "x"  # 32,767 bytes
    stream = [schema("items", {"id": {"type": "integer"}, "body": {"type": "string"}}),
              record("items", {"id": 1, "body": fits})]
    ok = run(tmp_path, dt_config, lines(stream))
    assert ok.returncode == 0, ok.stderr
    assert dt_rows(sandbox) == [{"id": 1, "body": fits}]
    too_long = run(tmp_path, dt_config, lines([*stream, record("items", {"id": 2,
                                                                         "body": fits + "y"})]))
    line = error_line(too_long, DT_ERROR)
    assert line == ("line 3: stream 'items': field 'body' is 32768 bytes of text; an SPSS "
                    "string variable holds at most 32767 bytes")
    assert "éé" not in too_long.stderr
    assert len(uploads(sandbox)) == 1, "nothing uploaded from the failed run"


def test_nul_characters_are_dropped_and_a_long_json_value_is_a_clear_error(
        tmp_path: Path, sandbox: Sandbox, dt_config: dict) -> None:
    """ReadStat writes C strings: a NUL would cut the value there, so it is dropped (JSON
    text escapes it). A JSON value over 32,767 bytes is refused naming line and field."""
    fields = {"id": {"type": "integer"}, "body": {"type": ["string", "null"]},
              "doc": {"type": ["object", "null"]}}
    stream = [schema("items", fields),
              record("items", {"id": 1, "body": "a\x00b\x00", "doc": {"k": "x\x00y"}}),
              record("items", {"id": 2, "body": "\x00" * 9000 + "é", "doc": None})]
    ok = run(tmp_path, dt_config, lines(stream))
    assert ok.returncode == 0, ok.stderr
    assert dt_rows(sandbox) == [{"id": 1, "body": "ab", "doc": '{"k":"x\\u0000y"}'},
                                {"id": 2, "body": "é", "doc": ""}]
    too_long = run(tmp_path, dt_config, lines([*stream, record("items", {
        "id": 3, "doc": {"k": "z" * 32_760}})]))
    assert error_line(too_long, DT_ERROR) == (
        "line 4: stream 'items': field 'doc' is 32768 bytes of text; an SPSS string "
        "variable holds at most 32767 bytes")


def test_a_schema_change_mid_stream_gives_one_file_with_the_union(
        tmp_path: Path, sandbox: Sandbox, dt_config: dict) -> None:
    wider = {"id": {"type": "integer"}, "label": {"type": ["string", "null"]},
             "score": {"type": ["number", "null"]}, "flag": {"type": ["boolean", "null"]}}
    stream = lines([
        *counter_stream(1, 3, state_every=2),
        schema("items", wider),
        record("items", {"id": 4, "label": "four", "score": 4.5, "flag": True}),
        record("items", {"id": 5, "score": None}),
        state({"bookmarks": {"items": {"last_id": 5}}}),
    ])
    result = run(tmp_path, dt_config, stream)
    assert result.returncode == 0, result.stderr
    assert "new SCHEMA; adds columns score, flag" in result.stderr
    assert len(uploads(sandbox)) == 1
    assert dt_rows(sandbox) == [
        {"id": 1, "label": "item 1", "score": None, "flag": None},
        {"id": 2, "label": "item 2", "score": None, "flag": None},
        {"id": 3, "label": "item 3", "score": None, "flag": None},
        {"id": 4, "label": "four", "score": 4.5, "flag": 1},
        {"id": 5, "label": "", "score": None, "flag": None},
    ]
    assert states_of(result.stdout)[-1] == {"bookmarks": {"items": {"last_id": 5}}}


def test_a_column_whose_type_changes_becomes_text_with_room_for_the_old_values(
        tmp_path: Path, sandbox: Sandbox, dt_config: dict) -> None:
    stream = lines([schema("items", {"id": {"type": "integer"}, "x": {"type": "number"}}),
                    record("items", {"id": 1, "x": 123456.789}),
                    schema("items", {"id": {"type": "integer"}, "x": {"type": "string"}}),
                    record("items", {"id": 2, "x": "a"})])
    result = run(tmp_path, dt_config, stream)
    assert result.returncode == 0, result.stderr
    assert "changes types: x number -> text" in result.stderr
    assert dt_rows(sandbox) == [{"id": 1, "x": "123456.789"}, {"id": 2, "x": "a"}]


def test_an_empty_stream_changes_nothing(tmp_path: Path, sandbox: Sandbox,
                                         dt_config: dict) -> None:
    result = run(tmp_path, dt_config, lines([schema("items", PEOPLE),
                                             state({"bookmarks": {"items": {"id": 0}}})]))
    assert result.returncode == 0, result.stderr
    assert uploads(sandbox) == []
    assert dt_snapshot(sandbox)["jobs"] == []
    assert dt_snapshot(sandbox)["databases"][SANDBOX_DATABASE]["loads"] == 0
    assert states_of(result.stdout) == [{"bookmarks": {"items": {"id": 0}}}]


# -- after the upload -----------------------------------------------------------------------


def test_state_comes_only_after_the_job_finished(tmp_path: Path, sandbox: Sandbox,
                                                 dt_config: dict) -> None:
    emulator(sandbox).settings.processing_seconds = 1.0
    proc = spawn_target(tmp_path, dt_config, people(), command=DT_CMD)
    out = LineWatcher(proc.stdout)
    job = wait_until(lambda: dt_snapshot(sandbox)["jobs"], "the upload")[0]
    assert job["status"] in ("queued", "processing")
    assert out.lines == [] and out._queue.empty(), "STATE before the job finished"
    line = out.wait_for("bookmarks")
    assert dt_snapshot(sandbox)["jobs"][0]["status"] == "completed"
    assert json.loads(line) == {"bookmarks": {"items": {"id": 3}}}
    assert proc.wait(timeout=30) == 0


def test_without_waiting_the_accepted_upload_is_the_confirmation(
        tmp_path: Path, sandbox: Sandbox, dt_config: dict) -> None:
    emulator(sandbox).settings.processing_seconds = 2.0
    dt_config["wait_for_processing"] = False
    result = run(tmp_path, dt_config, people())
    assert result.returncode == 0, result.stderr
    assert states_of(result.stdout) == [{"bookmarks": {"items": {"id": 3}}}]
    assert [j["status"] for j in dt_snapshot(sandbox)["jobs"]] in (["queued"], ["processing"])
    assert "wait_for_processing is false" in result.stderr
    assert not [r for r in sandbox.requests() if "/jobs/" in r["path"]], "no polls"
    emulator(sandbox).wait_idle()
    assert dt_rows(sandbox) == PEOPLE_LANDED


def test_a_busy_database_is_waited_out(tmp_path: Path, sandbox: Sandbox,
                                       dt_config: dict) -> None:
    with emulator(sandbox).busy.hold(SANDBOX_DATABASE):
        proc = spawn_target(tmp_path, dt_config, people(), stderr=subprocess.PIPE,
                            command=DT_CMD)
        log = LineWatcher(proc.stderr)
        log.wait_for("DataTile is busy (HTTP 409")
    assert proc.wait(timeout=60) == 0, "".join(log.rest())
    assert dt_rows(sandbox) == PEOPLE_LANDED
    assert [u["status"] for u in uploads(sandbox)][-1] == 202


def test_busy_past_the_processing_timeout_is_one_clear_line(tmp_path: Path, sandbox: Sandbox,
                                                            dt_config: dict) -> None:
    dt_config["processing_timeout"] = 1
    with emulator(sandbox).busy.hold(SANDBOX_DATABASE):
        result = run(tmp_path, dt_config, people())
    assert error_line(result, DT_ERROR).startswith(
        "DataTile kept 'sandbox-database' busy for 1 s (HTTP 409")
    assert result.stdout == ""


@pytest.mark.parametrize(("setting", "value", "expected"), [
    ("upload_quota", 0, "DataTile refused upload/append/sandbox-database for quota (HTTP 402)"),
    ("max_file_bytes", 100, "DataTile refused the file as too large (HTTP 413"),
])
def test_quota_and_file_size_refusals(tmp_path: Path, sandbox: Sandbox, dt_config: dict,
                                      setting: str, value: int, expected: str) -> None:
    setattr(emulator(sandbox).settings, setting, value)
    result = run(tmp_path, dt_config, people())
    assert error_line(result, DT_ERROR).startswith(expected)
    assert result.stdout == ""


def test_a_processing_failure_is_one_line_and_no_state(tmp_path: Path, sandbox: Sandbox,
                                                       dt_config: dict) -> None:
    assert run(tmp_path, dt_config, people()).returncode == 0
    clash = lines([schema("items", {"id": {"type": "string"}}), record("items", {"id": "x"}),
                   state({"bookmarks": {"items": {"id": "x"}}})])
    result = run(tmp_path, dt_config, clash)
    line = error_line(result, DT_ERROR)
    assert line.startswith("DataTile processing job ") and " failed: " in line
    assert "variable 'id' is string in the file but numeric in the database" in line
    assert result.stdout == ""
    assert dt_rows(sandbox) == PEOPLE_LANDED  # the failed job changed nothing


def test_a_reload_is_repeated_after_a_dropped_connection(tmp_path: Path, sandbox: Sandbox,
                                                         dt_config: dict) -> None:
    dt_config.update(load_method="overwrite", max_retries=2)
    sandbox.fault(path=f"/datatile/api/v2/upload/reload/{SANDBOX_DATABASE}", drop_after=True)
    result = run(tmp_path, dt_config, people())
    assert result.returncode == 0, result.stderr
    assert dt_rows(sandbox) == PEOPLE_LANDED, "the reload replaced: nothing twice"
    # the dropped one and its repeat; a repeat that came while the first upload's job was
    # still running was answered 409 (busy) and waited out, which is no upload
    sent = [(r["status"], bool(r["fault"])) for r in uploads(sandbox) if r["status"] != 409]
    assert sent == [(202, True), (202, False)]  # applied but its answer dropped; repeated


def test_an_append_whose_answer_was_lost_is_at_least_once(tmp_path: Path, sandbox: Sandbox,
                                                          dt_config: dict) -> None:
    """Not repeated (DataTile may have queued it): one line, no STATE; the rerun from the
    last STATE sends the rows again, and they land twice (documented)."""
    sandbox.fault(path=f"/datatile/api/v2/upload/append/{SANDBOX_DATABASE}", drop_after=True)
    lost = run(tmp_path, dt_config, people())
    assert "(not repeated: the platform may have acted on it)" in error_line(lost, DT_ERROR)
    assert lost.stdout == ""
    rerun = run(tmp_path, dt_config, people())
    assert rerun.returncode == 0, rerun.stderr
    emulator(sandbox).wait_idle()
    assert Counter(r["id"] for r in dt_rows(sandbox)) == {1: 2, 2: 2, 3: 2}


# -- configuration and errors ---------------------------------------------------------------


def test_two_streams_on_one_database_under_overwrite_are_refused(
        tmp_path: Path, sandbox: Sandbox, dt_config: dict) -> None:
    dt_config.update(load_method="overwrite",
                     database_map={"items": SANDBOX_DATABASE, "more": SANDBOX_DATABASE})
    result = run(tmp_path, dt_config, people() + people("more"))
    assert error_line(result, DT_ERROR) == (
        "streams 'items' and 'more' are both mapped to database 'sandbox-database': with "
        "load_method overwrite each reload would replace the other's rows; map them to "
        "different databases")
    assert uploads(sandbox) == []


@pytest.mark.parametrize(("change", "expected"), [
    ({"database_map": {}}, "no database for stream 'items': add it to database_map"),
    ({"create_missing_databases": True}, "create_missing_databases needs folder_hash"),
    ({"api_url": "http://datatile.example.com/api/v2"}, "api_url uses plain http://"),
    ({"file_format": "xlsx"}, "invalid config: "),
    ({"database_map": {"items": "nope"}}, "DataTile has no database 'nope' (HTTP 404"),
])
def test_one_line_errors(tmp_path: Path, sandbox: Sandbox, dt_config: dict,
                         change: dict, expected: str) -> None:
    result = run(tmp_path, {**dt_config, **change}, people())
    assert error_line(result, DT_ERROR).startswith(expected)


def test_the_token_never_appears_even_at_debug(tmp_path: Path, sandbox: Sandbox,
                                               dt_config: dict) -> None:
    ok = run(tmp_path, dt_config, people(), LOGLEVEL="DEBUG", TARGET_DATATILE_LOGLEVEL="DEBUG")
    assert ok.returncode == 0, ok.stderr
    assert "DEBUG" in ok.stderr and SANDBOX_TOKEN not in ok.stderr + ok.stdout
    wrong = "dt-wrong-token-98765"
    refused = run(tmp_path, {**dt_config, "token": wrong}, people(), LOGLEVEL="DEBUG")
    assert error_line(refused, DT_ERROR).startswith(
        "DataTile refused the API token (HTTP 401 on upload/append/sandbox-database)")
    assert wrong not in refused.stderr + refused.stdout
    bad_type = run(tmp_path, {**dt_config, "token": 987654321}, people())
    assert "987654321" not in bad_type.stderr + bad_type.stdout
    assert bad_type.returncode == 1


def test_every_setting_is_documented_with_the_assumed_ones_marked() -> None:
    properties = TargetDataTile.config_jsonschema["properties"]
    for name in ("job_id_field", "job_status_route", "job_state_field", "job_success_states",
                 "job_failure_states", "job_message_field", "database_hash_field",
                 "callback_field", "busy_status_codes", "quota_status_codes"):
        assert properties[name]["description"].startswith("[assumed]"), name
        assert "default" in properties[name], name
    assert properties["token"].get("secret") is True
    assert properties["file_format"]["default"] == "zsav"
    assert all(spec.get("description") for spec in properties.values())
