"""target-graphitenote against the Graphite Note sandbox: what lands, and how it gets there."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import (
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
    "anything": {},
    "café au lait!": {"type": "string"},
}
RECORDS = [
    {"id": 1, "name": "Ana", "amount": 12.5, "active": True,
     "updated_at": "2024-03-01T10:20:30+02:00", "birthday": "1990-05-17",
     "address": {"city": "Zagreb"}, "tags": ["vip", "eu"], "code": "A1", "anything": [1, {"b": 2}],
     "café au lait!": "yes"},
    {"id": 2, "name": "Björn \"B\" 日本", "amount": None, "active": False,
     "updated_at": "2024-03-01T23:59:59.123456Z", "birthday": None, "address": None,
     "tags": [], "code": 42, "anything": "plain", "café au lait!": "no"},
]


def test_columns_and_values_land_with_graphite_note_types(tmp_path: Path, sandbox: Sandbox,
                                                          gn_config: dict) -> None:
    run = run_target(tmp_path, gn_config, lines(
        [schema("people", PROPERTIES), *(record("people", r) for r in RECORDS)]))
    assert run.returncode == 0, run.stderr
    dataset = sandbox.dataset()
    columns = {c["alias"]: c for c in dataset["columns"]}
    assert [c["name"] for c in dataset["columns"]] == [
        "id", "name", "amount", "active", "updated_at", "birthday", "address", "tags", "code",
        "anything", "cafe_au_lait"]
    assert (columns["id"]["type"], columns["id"]["subtype"]) == ("dimension", "numeric")  # key
    assert (columns["amount"]["type"], columns["amount"]["subtype"]) == ("measure", "numeric")
    assert columns["amount"]["format"] == "#,###.##"
    assert (columns["updated_at"]["subtype"], columns["updated_at"]["format"]) == (
        "datetime", "Y-m-d H:i:s")
    assert columns["birthday"]["subtype"] == "date"
    for name in ("name", "active", "address", "tags", "code", "anything", "café au lait!"):
        assert (columns[name]["type"], columns[name]["subtype"]) == ("dimension", "text"), name
    assert dataset["rows"] == [
        {"id": 1, "name": "Ana", "amount": 12.5, "active": "true",
         "updated_at": "2024-03-01 08:20:30", "birthday": "1990-05-17",
         "address": '{"city":"Zagreb"}', "tags": '["vip","eu"]', "code": "A1",
         "anything": '[1,{"b":2}]', "cafe_au_lait": "yes"},
        {"id": 2, "name": "Björn \"B\" 日本", "amount": None, "active": "false",
         "updated_at": "2024-03-01 23:59:59", "birthday": None, "address": None, "tags": "[]",
         "code": "42", "anything": "plain", "cafe_au_lait": "no"},
    ]
    assert (dataset["fills"], dataset["completes"]) == (1, 1)


def test_column_overrides_change_definition_and_values(tmp_path: Path, sandbox: Sandbox,
                                                       gn_config: dict) -> None:
    gn_config["column_overrides"] = {
        "people": {"id": {"subtype": "text", "alias": "Customer ID"}},
        "*": {"amount": {"format": "#,###.0000", "type": "dimension"}},
    }
    run = run_target(tmp_path, gn_config, lines(
        [schema("people", PROPERTIES), *(record("people", r) for r in RECORDS)]))
    assert run.returncode == 0, run.stderr
    dataset = sandbox.dataset()
    columns = {c["name"]: c for c in dataset["columns"]}
    # the integer's "#,###" does not fit a text column: the override drops it (issue 13)
    assert columns["id"] == {"name": "id", "alias": "Customer ID", "type": "dimension",
                             "subtype": "text"}
    assert columns["amount"]["format"] == "#,###.0000"
    assert columns["amount"]["type"] == "dimension"
    assert [row["id"] for row in dataset["rows"]] == ["1", "2"]


def test_append_adds_and_overwrite_replaces(tmp_path: Path, sandbox: Sandbox,
                                            gn_config: dict) -> None:
    gn_config["batch_size_rows"] = 4
    first = lines(counter_stream(1, 10, state_every=5))
    second = lines(counter_stream(11, 15, state_every=5))
    assert run_target(tmp_path, gn_config, first).returncode == 0
    assert run_target(tmp_path, gn_config, second).returncode == 0
    assert [r["id"] for r in sandbox.rows()] == list(range(1, 16))
    assert sandbox.dataset()["truncates"] == 0

    gn_config["load_method"] = "overwrite"
    run = run_target(tmp_path, gn_config, lines(counter_stream(100, 109, state_every=5)))
    assert run.returncode == 0, run.stderr
    dataset = sandbox.dataset()
    assert [r["id"] for r in dataset["rows"]] == list(range(100, 110))  # 3 fills, 1 truncate
    assert dataset["truncates"] == 1  # only the first of the 3 fills had append: false


def test_compression_on_and_off_land_the_same_rows(tmp_path: Path, sandbox: Sandbox,
                                                   gn_config: dict) -> None:
    stream = lines([schema("people", PROPERTIES), *(record("people", r) for r in RECORDS * 50)])
    gn_config["load_method"] = "overwrite"
    assert run_target(tmp_path, gn_config, stream).returncode == 0
    compressed_rows = sandbox.rows()
    compressed_bytes = sandbox.requests()[0]["request_bytes"]
    gn_config["compress"] = False
    assert run_target(tmp_path, gn_config, stream).returncode == 0
    assert sandbox.rows() == compressed_rows
    assert len(compressed_rows) == 100
    plain_bytes = [r for r in sandbox.requests() if r["path"].endswith("fill")][-1]["request_bytes"]
    assert plain_bytes > 3 * compressed_bytes


def test_payload_too_large_splits_the_batch(tmp_path: Path, sandbox: Sandbox,
                                            gn_config: dict) -> None:
    sandbox.settings(max_body_bytes=700)
    gn_config.update(batch_size_rows=40, compress=False)
    run = run_target(tmp_path, gn_config, lines(counter_stream(1, 100, state_every=30)))
    assert run.returncode == 0, run.stderr
    assert [r["id"] for r in sandbox.rows()] == list(range(1, 101))  # all, once, in order
    statuses = [r["status"] for r in sandbox.requests() if r["path"].endswith("fill")]
    assert 413 in statuses
    assert "HTTP 413" in run.stderr
    assert states_of(run.stdout)[-1] == {"bookmarks": {"items": {"last_id": 100}}}


def test_single_row_too_large_fails_clearly(tmp_path: Path, sandbox: Sandbox,
                                            gn_config: dict) -> None:
    sandbox.settings(max_body_bytes=300)
    gn_config["compress"] = False
    run = run_target(tmp_path, gn_config, lines(
        [schema("s", {"id": {"type": "integer"}, "t": {"type": "string"}}),
         record("s", {"id": 1, "t": "x" * 1000})]))
    assert error_line(run) == (
        "stream 's': a single row is larger than Graphite Note accepts (HTTP 413)")


def test_retries_on_429_5xx_and_dropped_connections(tmp_path: Path, sandbox: Sandbox,
                                                    gn_config: dict) -> None:
    fill = "/graphitenote/api/dataset-fill"
    sandbox.fault(path=fill, status=429, retry_after=1, times=1)
    sandbox.fault(path=fill, status=503, retry_after=0, times=1)
    sandbox.fault(path=fill, status=500, times=1)
    sandbox.fault(path=fill, drop=True, times=1)
    sandbox.fault(path="/graphitenote/api/dataset-complete", status=502, retry_after=0, times=1)
    gn_config["batch_size_rows"] = 25
    started = time.monotonic()
    run = run_target(tmp_path, gn_config, lines(counter_stream(1, 60, state_every=9)))
    assert run.returncode == 0, run.stderr
    assert time.monotonic() - started >= 1.0  # Retry-After: 1 was honoured
    assert [r["id"] for r in sandbox.rows()] == list(range(1, 61))  # nothing lost or doubled
    faults = [r["fault"] for r in sandbox.requests() if r["fault"]]
    assert len(faults) == 5
    assert sandbox.dataset()["completes"] == 1
    for problem in ("HTTP 429", "HTTP 503", "HTTP 500", "ConnectionError", "HTTP 502"):
        assert problem in run.stderr


def test_retries_exhausted_fail_without_state(tmp_path: Path, sandbox: Sandbox,
                                              gn_config: dict) -> None:
    sandbox.fault(path="/graphitenote/api/dataset-fill", status=503, retry_after=0, times=50)
    gn_config.update(max_retries=2, batch_size_rows=5)
    run = run_target(tmp_path, gn_config, lines(counter_stream(1, 12, state_every=3)))
    assert error_line(run).startswith("Graphite Note failed on dataset-fill (HTTP 503)")
    assert run.stdout == ""  # no record was acknowledged, so no STATE


def test_state_follows_each_acknowledged_fill_and_is_never_ahead(
        tmp_path: Path, sandbox: Sandbox, gn_config: dict) -> None:
    """STATE every 7 records, batches of 20: each fill releases the newest STATE it covers."""
    sandbox.fault(path="/graphitenote/api/dataset-fill", delay=0.2, times=10)
    gn_config["batch_size_rows"] = 20
    proc = spawn_target(tmp_path, gn_config, lines(counter_stream(1, 95, state_every=7)))
    assert proc.stdout
    seen = []
    for line in proc.stdout:
        bookmark = json.loads(line)["bookmarks"]["items"]["last_id"]
        landed = {r["id"] for r in sandbox.rows()}
        assert set(range(1, bookmark + 1)) <= landed, f"STATE {bookmark} ahead of the data"
        seen.append(bookmark)
    assert proc.wait(timeout=30) == 0
    # fills end at 20, 40, 60, 80, 95: the newest STATE at or below each
    assert seen == [14, 35, 56, 77, 95]


def test_interleaved_streams_keep_checkpointing(tmp_path: Path, sandbox: Sandbox,
                                                gn_config: dict) -> None:
    """A quiet stream's buffered rows must not hold every later STATE back."""
    gn_config.update(batch_size_rows=10, create_missing_datasets=True, dataset_code=None)
    messages = [schema("a", {"id": {"type": "integer"}}), schema("b", {"id": {"type": "integer"}}),
                record("a", {"id": 0})]
    for i in range(1, 41):
        messages.append(record("b", {"id": i}))
        if i % 5 == 0:
            messages.append(state({"b": i}))
    run = run_target(tmp_path, {k: v for k, v in gn_config.items() if v is not None},
                     lines(messages))
    assert run.returncode == 0, run.stderr
    assert [s["b"] for s in states_of(run.stdout)] == [10, 20, 30, 40]


def test_datasets_are_mapped_or_created_and_completed_once(tmp_path: Path, sandbox: Sandbox,
                                                           gn_config: dict) -> None:
    del gn_config["dataset_code"]
    gn_config.update(dataset_map={"orders": "sandbox-dataset"}, create_missing_datasets=True,
                     dataset_name_prefix="shop_", batch_size_rows=3)
    props = {"id": {"type": "integer"}, "v": {"type": "string"}}
    messages = [schema("orders", props), schema("users", props)]
    for i in range(1, 8):
        messages += [record("orders", {"id": i, "v": "o"}), record("users", {"id": i, "v": "u"})]
    # a schema change mid-stream: same stream, same dataset, one complete
    messages += [schema("users", {**props, "extra": {"type": "string"}}),
                 record("users", {"id": 8, "v": "u", "extra": "x"})]
    run = run_target(tmp_path, gn_config, lines(messages))
    assert run.returncode == 0, run.stderr
    datasets = sandbox.datasets()
    created = [code for code, d in datasets.items() if d["name"] == "shop_users"]
    assert len(created) == 1
    assert f"code '{created[0]}'" in run.stderr
    users = datasets[created[0]]
    assert [r["id"] for r in users["rows"]] == list(range(1, 9))
    assert users["rows"][-1]["extra"] == "x"
    assert users["completes"] == 1
    assert [r["id"] for r in datasets["sandbox-dataset"]["rows"]] == list(range(1, 8))
    assert datasets["sandbox-dataset"]["completes"] == 1


def test_float_in_tap_state_is_passed_on(tmp_path: Path, sandbox: Sandbox,
                                         gn_config: dict) -> None:
    """singer-sdk 0.54's own STATE writer crashes on floats (meltano/sdk#3787)."""
    messages = [*counter_stream(1, 3, state_every=10), state({"watermark": 1.5, "n": 3})]
    run = run_target(tmp_path, gn_config, lines(messages))
    assert run.returncode == 0, run.stderr
    assert states_of(run.stdout)[-1] == {"watermark": 1.5, "n": 3}


def test_stream_maps_and_flattening_take_the_sdk_path(tmp_path: Path, sandbox: Sandbox,
                                                      gn_config: dict) -> None:
    gn_config.update(
        stream_maps={"people": {"__alias__": "customers", "name": "__NULL__",
                                "name_hash": "md5(name)"}},
        flattening_enabled=True, flattening_max_depth=1,
        dataset_map={"customers": "sandbox-dataset"}, batch_size_rows=1,
    )
    del gn_config["dataset_code"]
    run = run_target(tmp_path, gn_config, lines(
        [schema("people", PROPERTIES), *(record("people", r) for r in RECORDS)]))
    assert run.returncode == 0, run.stderr
    rows = sandbox.rows()
    assert [r["id"] for r in rows] == [1, 2]
    assert "name" not in rows[0]
    assert [len(r["name_hash"]) for r in rows] == [32, 32]
    assert rows[0]["address__city"] == "Zagreb"
    assert rows[0]["updated_at"] == "2024-03-01 08:20:30"


def test_bad_record_behind_a_stream_map_still_fails_clearly(tmp_path: Path,
                                                            gn_config: dict) -> None:
    gn_config["stream_maps"] = {"people": {"code": "__NULL__"}}
    bad = {**RECORDS[0], "amount": "lots"}
    run = run_target(tmp_path, gn_config, lines([schema("people", PROPERTIES),
                                                 record("people", bad)]))
    assert error_line(run) == "line 2: stream 'people': field 'amount' must be number or null"


def test_repeated_identical_schema_does_not_cut_batches(tmp_path: Path, sandbox: Sandbox,
                                                        gn_config: dict) -> None:
    """SDK taps re-send a child stream's SCHEMA often; with flattening it must not drain."""
    gn_config.update(flattening_enabled=True, flattening_max_depth=1)
    messages = []
    for r in RECORDS * 5:
        messages += [schema("people", PROPERTIES), record("people", r)]
    run = run_target(tmp_path, gn_config, lines(messages))
    assert run.returncode == 0, run.stderr
    assert (sandbox.dataset()["fills"], sandbox.dataset()["row_count"]) == (1, 10)


def test_dataset_complete_even_without_new_records(tmp_path: Path, sandbox: Sandbox,
                                                   gn_config: dict) -> None:
    """An earlier run may have died between its last STATE and its dataset-complete."""
    run = run_target(tmp_path, gn_config, lines([schema("people", PROPERTIES),
                                                 state({"done": True})]))
    assert run.returncode == 0, run.stderr
    assert (sandbox.dataset()["fills"], sandbox.dataset()["completes"]) == (0, 1)
    assert states_of(run.stdout) == [{"done": True}]


def test_a_fill_that_lands_fewer_rows_than_sent_stops_the_run(
        tmp_path: Path, sandbox: Sandbox, gn_config: dict) -> None:
    """A 200 claiming 3 rows for a batch of 10 must not release the STATE after it."""
    fill = "/graphitenote/api/dataset-fill"
    sandbox.fault(path=fill, status=200, body={"data": {"status": "success", "details": {
        "dataset-code": "sandbox-dataset", "rows-count": 3}}}, times=1)
    gn_config["batch_size_rows"] = 10
    run = run_target(tmp_path, gn_config, lines(counter_stream(1, 25, state_every=5)))
    assert error_line(run) == (
        "stream 'items': Graphite Note acknowledged only 3 of 10 rows sent to dataset "
        "'sandbox-dataset'; stopping before any later STATE")
    assert run.stdout == ""
