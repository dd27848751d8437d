"""target-datainsider against the DataInsider sandbox: what lands, and how it gets there."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import (
    DI_CMD,
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
)

from target_datainsider.sandbox import SANDBOX_API_KEY
from target_datainsider.sink import DataInsiderSink
from target_datainsider.target import SWITCH_SECONDS, TargetDataInsider

PREFIX = "target-datainsider: error: "
BATCH = "/datainsider/api/ingestion/batch"
PROPERTIES = {
    "id": {"type": "integer"},
    "name": {"type": "string"},
    "amount": {"type": ["number", "null"]},
    "active": {"type": "boolean"},
    "updated_at": {"type": "string", "format": "date-time"},
    "birthday": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
    "address": {"type": ["object", "null"], "properties": {"city": {"type": "string"}}},
    "tags": {"type": "array", "items": {"type": "string"}},
    "code": {"type": ["string", "integer"]},
    "café au lait!": {"type": "string"},
}
RECORDS = [
    {"id": 1, "name": "Ana", "amount": 12.5, "active": True,
     "updated_at": "2024-03-01T10:20:30.5+02:00", "birthday": "1990-05-17",
     "address": {"city": "Zagreb"}, "tags": ["vip", "eu"], "code": "A1", "café au lait!": "yes"},
    {"id": 2, "name": "Björn \"B\" 日本, Ltd.\nline two", "amount": 0.1, "active": False,
     "updated_at": "0201-12-31T23:59:59.123456Z", "birthday": "2400-02-29",
     "address": {"city": "Oslo"}, "tags": [], "code": 42, "café au lait!": "no"},
    {"id": 9007199254740993, "name": "", "amount": -1e-300, "active": True,
     "updated_at": "9999-12-31T23:59:59Z", "birthday": "0001-01-01", "address": {"city": ""},
     "tags": ["a,b", "\"q\""], "code": "", "café au lait!": "ü"},
]


def run(tmp_path: Path, config: dict, messages: list, **env: str) -> Any:
    return run_target(tmp_path, config, lines(messages), command=DI_CMD, **env)


def people(records: list[dict] = RECORDS) -> list[dict]:
    return [schema("people", PROPERTIES), *(record("people", r) for r in records)]


def test_columns_and_values_land_with_datainsider_types(tmp_path: Path, sandbox: Sandbox,
                                                        di_config: dict) -> None:
    result = run(tmp_path, di_config, people())
    assert result.returncode == 0, result.stderr
    table = sandbox.di_table("people")
    assert table["display_name"] == "people"
    assert (table["table_type"], table["primary_keys"], table["order_bys"]) == (
        "replacing", ["id"], ["id"])
    columns = {c["name"]: c for c in table["columns"]}
    assert list(columns) == ["id", "name", "amount", "active", "updated_at", "birthday",
                             "address", "tags", "code", "cafe_au_lait_"]
    assert {n: c["class_name"] for n, c in columns.items()} == {
        "id": "int64", "name": "string", "amount": "double", "active": "bool",
        "updated_at": "datetime64", "birthday": "date", "address": "string",
        "tags": "string", "code": "string", "cafe_au_lait_": "string"}
    assert columns["cafe_au_lait_"]["display_name"] == "café au lait!"  # display names kept
    assert columns["updated_at"]["timezone"] == "UTC"
    assert columns["id"]["is_nullable"] is False  # a key: part of the ORDER BY
    assert table["rows"] == [
        {"id": 1, "name": "Ana", "amount": 12.5, "active": True,
         "updated_at": "2024-03-01 08:20:30.500", "birthday": "1990-05-17",
         "address": '{"city":"Zagreb"}', "tags": '["vip","eu"]', "code": "A1",
         "cafe_au_lait_": "yes"},
        {"id": 2, "name": "Björn \"B\" 日本, Ltd.\nline two", "amount": 0.1, "active": False,
         "updated_at": "0201-12-31 23:59:59.123", "birthday": "2400-02-29",
         "address": '{"city":"Oslo"}', "tags": "[]", "code": "42", "cafe_au_lait_": "no"},
        {"id": 9007199254740993, "name": "", "amount": -1e-300, "active": True,
         "updated_at": "9999-12-31 23:59:59.000", "birthday": "0001-01-01",
         "address": '{"city":""}',
         "tags": '["a,b","\\"q\\""]', "code": "", "cafe_au_lait_": "ü"},
    ]
    assert (table["batch_calls"], table["csv_calls"]) == (1, 0)


def test_nulls_in_every_type_go_as_csv_and_land_as_null(tmp_path: Path, sandbox: Sandbox,
                                                         di_config: dict) -> None:
    """ingestion/batch drops a row with a null in a non-string column and writes a null
    string as "": batches with nulls go to ingestion/csv, which writes NULL. Its one loss:
    an empty string in such a batch lands as NULL too."""
    nullable = {name: prop if name in ("id", "birthday") else {"anyOf": [prop, {"type": "null"}]}
                for name, prop in PROPERTIES.items()}
    nulls = {"id": 5, **{name: None for name in PROPERTIES if name != "id"}}
    di_config["batch_size_rows"] = 2
    result = run(tmp_path, di_config, [schema("people", nullable), record("people", nulls),
                                       record("people", RECORDS[0]), record("people", RECORDS[1])])
    assert result.returncode == 0, result.stderr
    table = sandbox.di_table("people")
    assert (table["batch_calls"], table["csv_calls"]) == (1, 1)  # only the batch with nulls
    first, second, third = table["rows"]
    assert first == {"id": 5, "name": None, "amount": None, "active": None, "updated_at": None,
                     "birthday": None, "address": None, "tags": None, "code": None,
                     "cafe_au_lait_": None}
    # the row that shared the CSV batch keeps every value, quotes and newlines included
    assert second["updated_at"] == "2024-03-01 08:20:30.500"
    assert (second["amount"], second["active"], second["birthday"]) == (12.5, True, "1990-05-17")
    assert third["name"] == RECORDS[1]["name"]
    di_config["table_map"] = {"people": "empty_strings"}
    result = run(tmp_path, di_config, [schema("people", nullable),
                                       record("people", {**RECORDS[2], "amount": None})])
    assert result.returncode == 0, result.stderr
    (row,) = sandbox.di_rows("empty_strings")
    assert (row["name"], row["code"], row["amount"]) == (None, None, None)  # "" as NULL
    assert "ingestion/csv" in result.stderr


def test_new_column_mid_stream_is_added_and_rows_follow_stored_order(
        tmp_path: Path, sandbox: Sandbox, di_config: dict) -> None:
    di_config["batch_size_rows"] = 2
    base = {"id": {"type": "integer"}, "b": {"type": "string"}}
    wider = {"id": {"type": "integer"}, "a": {"type": ["integer", "null"]},
             "b": {"type": "string"}}  # the new column sits in the middle of the schema
    result = run(tmp_path, di_config, [
        schema("s", base), record("s", {"id": 1, "b": "x"}), record("s", {"id": 2, "b": "y"}),
        record("s", {"id": 3, "b": "z"}), state({"at": 3}),
        schema("s", wider), record("s", {"id": 4, "a": 40, "b": "w"}), state({"at": 4}),
    ])
    assert result.returncode == 0, result.stderr
    table = sandbox.di_table("s")
    assert [c["name"] for c in table["columns"]] == ["id", "b", "a"]  # added at the end
    assert table["rows"] == [{"id": 1, "b": "x", "a": None}, {"id": 2, "b": "y", "a": None},
                             {"id": 3, "b": "z", "a": None}, {"id": 4, "b": "w", "a": 40}]
    assert states_of(result.stdout) == [{"at": 3}, {"at": 4}]


def test_changed_column_type_stops_before_any_row(tmp_path: Path, sandbox: Sandbox,
                                                  di_config: dict) -> None:
    first = run(tmp_path, di_config, [schema("s", {"id": {"type": "integer"},
                                                   "v": {"type": "string"}}),
                                      record("s", {"id": 1, "v": "one"})])
    assert first.returncode == 0, first.stderr
    result = run(tmp_path, di_config, [schema("s", {"id": {"type": "integer"},
                                                    "v": {"type": "number"}}),
                                       record("s", {"id": 2, "v": 2.5}), state({"x": 1})])
    assert error_line(result, PREFIX) == (
        "stream 's': column 'v' of DataInsider table shop.s is stored as string, but the schema "
        "makes it double; DataInsider never changes a column's type: change the column in "
        "DataInsider, or load into another table (table_map)")
    assert result.stdout == ""
    assert [r["id"] for r in sandbox.di_rows("s")] == [1]
    assert not [r for r in sandbox.requests() if r["path"] == BATCH][1:]  # no second insert


def test_append_adds_and_overwrite_replaces(tmp_path: Path, sandbox: Sandbox,
                                            di_config: dict) -> None:
    di_config["batch_size_rows"] = 4
    assert run(tmp_path, di_config, counter_stream(1, 10, state_every=5)).returncode == 0
    assert run(tmp_path, di_config, counter_stream(11, 15, state_every=5)).returncode == 0
    assert [r["id"] for r in sandbox.di_rows("items")] == list(range(1, 16))
    assert sandbox.di_table("items")["truncates"] == 0

    di_config["load_method"] = "overwrite"
    result = run(tmp_path, di_config, counter_stream(100, 109, state_every=5))
    assert result.returncode == 0, result.stderr
    table = sandbox.di_table("items")
    assert [r["id"] for r in table["rows"]] == list(range(100, 110))
    assert table["truncates"] == 1  # once per run, before the first of its 3 batches
    assert states_of(result.stdout) == [{"bookmarks": {"items": {"last_id": 109}}}]  # at the end


def test_empty_stream_changes_nothing(tmp_path: Path, sandbox: Sandbox, di_config: dict) -> None:
    assert run(tmp_path, di_config, counter_stream(1, 3, state_every=3)).returncode == 0
    di_config["load_method"] = "overwrite"
    result = run(tmp_path, di_config, [schema("items", {"id": {"type": "integer"}}),
                                       schema("other", {"id": {"type": "integer"}}),
                                       state({"done": True})])
    assert result.returncode == 0, result.stderr
    assert [r["id"] for r in sandbox.di_rows("items")] == [1, 2, 3]  # not truncated
    assert set(sandbox.di_tables()) == {"items"}  # no table for a stream without records
    assert states_of(result.stdout) == [{"done": True}]
    assert "no new records" in result.stderr


def test_table_map_and_key_properties_as_none(tmp_path: Path, sandbox: Sandbox,
                                              di_config: dict) -> None:
    di_config.update(table_map={"items": "sales.line_items", "b": "other"},
                     key_properties_as="none")
    result = run(tmp_path, di_config, [*counter_stream(1, 2, state_every=5),
                                       schema("b", {"id": {"type": "integer"}}),
                                       record("b", {"id": 7})])
    assert result.returncode == 0, result.stderr
    table = sandbox.di_table("line_items", "sales")
    assert (table["table_type"], table["primary_keys"]) == ("default", [])
    assert [r["id"] for r in table["rows"]] == [1, 2]
    assert [r["id"] for r in sandbox.di_rows("other")] == [7]  # in the default database


def test_existing_table_with_other_column_order(tmp_path: Path, sandbox: Sandbox,
                                                di_config: dict) -> None:
    """Rows are positional: they must follow the stored order, and fill columns we lack."""
    requests.post(f"{sandbox.di_url}/databases", json={"api_key": SANDBOX_API_KEY,
                                                       "name": "shop"}, timeout=10)
    created = requests.post(f"{sandbox.di_url}/databases/shop/tables", timeout=10, json={
        "api_key": SANDBOX_API_KEY, "tbl_name": "items", "columns": [
            {"class_name": "string", "name": "label", "display_name": "Label",
             "is_nullable": True},
            {"class_name": "int32", "name": "legacy", "display_name": "Legacy",
             "is_nullable": True, "default_value": 0},
            {"class_name": "int64", "name": "id", "display_name": "id"}]})
    assert created.status_code == 200, created.text
    result = run(tmp_path, di_config, counter_stream(1, 3, state_every=3))
    assert result.returncode == 0, result.stderr
    assert sandbox.di_rows("items") == [{"label": f"item {i}", "legacy": 0, "id": i}
                                        for i in (1, 2, 3)]


def test_rows_the_platform_drops_stop_the_run(tmp_path: Path, sandbox: Sandbox,
                                              di_config: dict) -> None:
    """A date column made without input_formats refuses `YYYY-MM-DD`: HTTP 200, rows dropped."""
    requests.post(f"{sandbox.di_url}/databases", json={"api_key": SANDBOX_API_KEY,
                                                       "name": "shop"}, timeout=10)
    requests.post(f"{sandbox.di_url}/databases/shop/tables", timeout=10, json={
        "api_key": SANDBOX_API_KEY, "tbl_name": "days", "columns": [
            {"class_name": "int64", "name": "id", "display_name": "id"},
            {"class_name": "date", "name": "day", "display_name": "day"}],
    }).raise_for_status()
    di_config["batch_size_rows"] = 3
    props = {"id": {"type": "integer"}, "day": {"type": "string", "format": "date"}}
    messages: list = [schema("days", props)]
    for i in range(1, 5):
        messages += [record("days", {"id": i, "day": "2024-01-0" + str(i)}), state({"n": i})]
    result = run(tmp_path, di_config, messages)
    assert error_line(result, PREFIX) == (
        "stream 'days': DataInsider dropped 3 of 3 rows of the batch from input lines 2-6 "
        "(3 invalid, 0 skipped, 0 failed) in table shop.days; stopping before any later STATE")
    assert result.stdout == ""


@pytest.mark.parametrize(("answer", "dropped", "detail"), [
    ({"total_records": 5, "total_invalid_records": 0, "total_invalid_fields": 0,
      "total_skipped_records": 2, "total_inserted_records": 3, "total_failed_records": 0},
     2, "0 invalid, 2 skipped, 0 failed"),
    ({"total_records": 5, "total_invalid_records": 0, "total_invalid_fields": 0,
      "total_skipped_records": 0, "total_inserted_records": 4, "total_failed_records": 1},
     1, "0 invalid, 0 skipped, 1 failed"),
])
def test_counters_below_the_rows_sent_stop_the_run(tmp_path: Path, sandbox: Sandbox,
                                                   di_config: dict, answer: dict,
                                                   dropped: int, detail: str) -> None:
    sandbox.fault(path=BATCH, status=200, body=answer, times=1)
    di_config["batch_size_rows"] = 5
    result = run(tmp_path, di_config, counter_stream(1, 12, state_every=2))
    assert error_line(result, PREFIX) == (
        f"stream 'items': DataInsider dropped {dropped} of 5 rows of the batch from input "
        f"lines 2-8 ({detail}) in table shop.items; stopping before any later STATE")
    assert result.stdout == ""


def test_csv_route_inserting_fewer_rows_stops_the_run(tmp_path: Path, sandbox: Sandbox,
                                                      di_config: dict) -> None:
    sandbox.fault(path="/datainsider/api/ingestion/csv", status=200,
                  body={"succeed": True, "row_inserted": 1}, times=1)
    props = {"id": {"type": "integer"}, "n": {"type": ["integer", "null"]}}
    result = run(tmp_path, di_config, [schema("s", props), record("s", {"id": 1, "n": None}),
                                       record("s", {"id": 2, "n": 2}), state({"x": 1})])
    assert error_line(result, PREFIX) == (
        "stream 's': DataInsider dropped 1 of 2 rows of the batch from input lines 2-3 "
        "(ingestion/csv inserted 1) in table shop.s; stopping before any later STATE")
    assert result.stdout == ""


def test_requests_stay_under_5_mb_and_413_splits(tmp_path: Path, sandbox: Sandbox,
                                                 di_config: dict) -> None:
    props = {"id": {"type": "integer"}, "text": {"type": "string"}}
    big = [record("s", {"id": i, "text": f"{i:06d}" + "x" * 20_000}) for i in range(1, 601)]
    result = run(tmp_path, di_config, [schema("s", props), *big, state({"done": 1})])
    assert result.returncode == 0, result.stderr
    inserts = [r for r in sandbox.requests() if r["path"] == BATCH]
    assert len(inserts) >= 3  # 12 MB of rows: the byte bound cut the batches
    assert all(r["status"] == 200 and r["request_bytes"] < 5 * 1024 * 1024 for r in inserts)
    assert [r["id"] for r in sandbox.di_rows("s")] == list(range(1, 601))

    sandbox.settings(max_body_bytes=300_000)  # smaller than a batch: 413, split, resent
    result = run(tmp_path, {**di_config, "table_map": {"s": "t"}},
                 [schema("s", props), *big[:40], state({"done": 2})])
    assert result.returncode == 0, result.stderr
    statuses = [r["status"] for r in sandbox.requests() if r["path"] == BATCH]
    assert 413 in statuses
    smallest_refused = float("inf")  # batches packed before a 413 are split before sending
    for request in [r for r in sandbox.requests() if r["path"] == BATCH]:
        assert request["request_bytes"] < smallest_refused, "a size refused before was sent"
        if request["status"] == 413:
            smallest_refused = request["request_bytes"]
    assert [r["id"] for r in sandbox.di_rows("t")] == list(range(1, 41))
    assert states_of(result.stdout) == [{"done": 2}]


def test_emulator_refuses_over_5_mb_with_413(sandbox: Sandbox) -> None:
    body = {"api_key": SANDBOX_API_KEY, "db_name": "shop", "tbl_name": "x",
            "records": [["y" * 1000]] * 5300}
    answer = requests.post(f"{sandbox.di_url}/ingestion/batch", json=body, timeout=30)
    assert answer.status_code == 413
    assert answer.json()["code"] == 413


def test_single_row_too_large_fails_clearly(tmp_path: Path, sandbox: Sandbox,
                                            di_config: dict) -> None:
    sandbox.settings(max_body_bytes=2_000)
    result = run(tmp_path, di_config, [schema("s", {"id": {"type": "integer"},
                                                    "t": {"type": "string"}}),
                                       record("s", {"id": 1, "t": "x" * 5000})])
    assert error_line(result, PREFIX) == (
        "stream 's': a single row (input line 2) is larger than DataInsider accepts (HTTP 413)")


def test_retries_on_429_5xx_and_dropped_connections(tmp_path: Path, sandbox: Sandbox,
                                                    di_config: dict) -> None:
    sandbox.fault(path=BATCH, status=429, retry_after=1, times=1)
    sandbox.fault(path=BATCH, status=503, retry_after=0, times=1)
    sandbox.fault(path=BATCH, status=500, times=1)
    sandbox.fault(path=BATCH, drop=True, times=1)
    sandbox.fault(path="/datainsider/api/ingestion/csv/schema", status=502, retry_after=0)
    sandbox.fault(path="/datainsider/api/databases/shop/tables/items", status=504,
                  retry_after=0)
    di_config["batch_size_rows"] = 25
    started = time.monotonic()
    result = run(tmp_path, di_config, counter_stream(1, 60, state_every=9))
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started >= 1.0  # Retry-After: 1 was honoured
    assert [r["id"] for r in sandbox.di_rows("items")] == list(range(1, 61))
    assert len([r for r in sandbox.requests() if r["fault"]]) == 6
    for problem in ("HTTP 429", "HTTP 503", "HTTP 500", "ConnectionError", "HTTP 502",
                    "HTTP 504"):
        assert problem in result.stderr


def test_retries_exhausted_fail_without_state(tmp_path: Path, sandbox: Sandbox,
                                              di_config: dict) -> None:
    sandbox.fault(path=BATCH, status=503, retry_after=0, times=50)
    di_config.update(max_retries=2, batch_size_rows=5)
    result = run(tmp_path, di_config, counter_stream(1, 12, state_every=3))
    assert error_line(result, PREFIX).startswith(
        "DataInsider failed on ingestion/batch for shop.items (HTTP 503 internal_error)")
    assert result.stdout == ""


def test_state_follows_each_confirmed_batch_and_is_never_ahead(
        tmp_path: Path, sandbox: Sandbox, di_config: dict) -> None:
    sandbox.fault(path=BATCH, delay=0.2, times=10)
    di_config["batch_size_rows"] = 20
    proc = spawn_target(tmp_path, di_config, lines(counter_stream(1, 95, state_every=7)),
                        command=DI_CMD)
    assert proc.stdout
    seen = []
    for line in proc.stdout:
        bookmark = json.loads(line)["bookmarks"]["items"]["last_id"]
        landed = {r["id"] for r in sandbox.di_rows("items")}
        assert set(range(1, bookmark + 1)) <= landed, f"STATE {bookmark} ahead of the data"
        seen.append(bookmark)
    assert proc.wait(timeout=30) == 0
    assert seen == [14, 35, 56, 77, 95]


EXACT = ("123456789012345678.123456", "0.000001", "-0.1")


def exact_records(stream: str, first: int, *, note: str | None = "n") -> list[str]:
    """RECORD lines with numbers written as text (json.dumps of a float would round them)."""
    shown = "null" if note is None else json.dumps(note)
    return [f'{{"type": "RECORD", "stream": "{stream}", "record": {{"id": {first + i}, '
            f'"amount": {number}, "note": {shown}}}}}' for i, number in enumerate(EXACT)]


def test_numbers_keep_the_taps_digits_on_the_batch_and_csv_routes(
        tmp_path: Path, sandbox: Sandbox, di_config: dict) -> None:
    """Batch route (no null), CSV route (a null in the batch) and rows re-ordered for a table
    stored in another order: every number lands with the digits the tap wrote (the emulator
    keeps the text it received; a real double column keeps 15-17 significant digits)."""
    requests.post(f"{sandbox.di_url}/databases", json={"api_key": SANDBOX_API_KEY,
                                                       "name": "shop"}, timeout=10)
    created = requests.post(f"{sandbox.di_url}/databases/shop/tables", timeout=10, json={
        "api_key": SANDBOX_API_KEY, "tbl_name": "reordered", "columns": [
            {"class_name": "string", "name": "note", "display_name": "note", "is_nullable": True},
            {"class_name": "double", "name": "amount", "display_name": "amount",
             "is_nullable": True},
            {"class_name": "int64", "name": "id", "display_name": "id"}]})
    assert created.status_code == 200, created.text
    props = {"id": {"type": "integer"}, "amount": {"type": ["number", "null"]},
             "note": {"type": ["string", "null"]}}
    di_config["batch_size_rows"] = 3
    messages = [schema("exact", props), *exact_records("exact", 1),
                *exact_records("exact", 4, note=None),
                schema("reordered", props), *exact_records("reordered", 1),
                *exact_records("reordered", 4, note=None), state({"done": True})]
    result = run(tmp_path, di_config, messages)
    assert result.returncode == 0, result.stderr
    for table in ("exact", "reordered"):
        rows = sandbox.di_exact_rows(table)
        assert [r["id"] for r in rows] == [1, 2, 3, 4, 5, 6]
        assert [str(r["amount"]) for r in rows] == [*EXACT, *EXACT], table
        assert [r["note"] for r in rows] == ["n", "n", "n", None, None, None]
    routes = Counter(r["path"].rsplit("/", 1)[-1] for r in sandbox.requests()
                     if r["path"].startswith("/datainsider/api/ingestion/"))
    assert routes["batch"] == 2 and routes["csv"] == 2  # both routes, for both tables


def test_a_warehouse_run_switches_the_gil_more_often_then_puts_it_back(
        tmp_path: Path, sandbox: Sandbox, di_config: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    seen: list[float] = []
    send = DataInsiderSink.send_batch
    monkeypatch.setattr(DataInsiderSink, "send_batch", lambda self, rows, packed: (
        seen.append(sys.getswitchinterval()), send(self, rows, packed))[1])
    before = sys.getswitchinterval()
    stream = tmp_path / "in.jsonl"
    stream.write_bytes(lines(counter_stream(1, 30, state_every=7)))
    target = TargetDataInsider(config={**di_config, "batch_size_rows": 10},
                               parse_env_config=False)
    with stream.open() as source:
        target.listen(source)
    assert seen == [SWITCH_SECONDS] * 3  # every batch sent while the run lasted
    assert sys.getswitchinterval() == before
    assert [r["id"] for r in sandbox.di_rows("items")] == list(range(1, 31))
