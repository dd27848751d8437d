"""Config that users get right: per-stream load methods, datasets created once, connection
problems named, overrides that do not fit warned about. Real runs against the sandbox."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from conftest import (
    Sandbox,
    error_line,
    lines,
    record,
    run_target,
    schema,
    state,
    states_of,
)

PROPS = {"id": {"type": "integer"}, "v": {"type": "string"}}


def two_streams(run: int) -> bytes:
    """A FULL_TABLE-like stream `full` and an INCREMENTAL-like stream `inc`, 3 rows each."""
    messages: list[dict] = [schema("full", PROPS), schema("inc", PROPS)]
    for i in range(1, 4):
        messages += [record("full", {"id": i, "v": f"run {run}"}),
                     record("inc", {"id": run * 10 + i, "v": f"run {run}"})]
    messages.append(state({"run": run}))
    return lines(messages)


ONE_STREAM = lines([schema("full", PROPS), record("full", {"id": 1, "v": "a"})])


def test_load_method_per_stream(tmp_path: Path, sandbox: Sandbox, gn_config: dict) -> None:
    del gn_config["dataset_code"]
    gn_config.update(create_missing_datasets=True, stream_load_methods={"full": "overwrite"})
    for run in (1, 2):
        result = run_target(tmp_path, gn_config, two_streams(run))
        assert result.returncode == 0, result.stderr
        assert states_of(result.stdout) == [{"run": run}]
    datasets = {d["name"]: d for d in sandbox.datasets().values()}
    assert set(datasets) >= {"full", "inc"}
    assert [(r["id"], r["v"]) for r in datasets["full"]["rows"]] == [
        (1, "run 2"), (2, "run 2"), (3, "run 2")]  # replaced
    assert [r["id"] for r in datasets["inc"]["rows"]] == [11, 12, 13, 21, 22, 23]  # appended
    assert "Stream 'full' -> Graphite Note dataset" in result.stderr
    assert "(overwrite)" in result.stderr and "(append-only)" in result.stderr


def test_a_wrong_load_method_for_a_stream_is_one_line(tmp_path: Path, gn_config: dict) -> None:
    gn_config["stream_load_methods"] = {"full": "replace"}
    assert error_line(run_target(tmp_path, gn_config, two_streams(1))) == (
        "stream_load_methods: 'full' has 'replace'; use append-only or overwrite")


def test_created_datasets_are_remembered_and_reused(tmp_path: Path, sandbox: Sandbox,
                                                   gn_config: dict) -> None:
    del gn_config["dataset_code"]
    gn_config.update(create_missing_datasets=True, dataset_name_prefix="shop_")
    first = run_target(tmp_path, gn_config, two_streams(1))
    second = run_target(tmp_path, gn_config, two_streams(2))
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    created = [d for d in sandbox.datasets().values() if d["name"].startswith("shop_")]
    assert sorted(d["name"] for d in created) == ["shop_full", "shop_inc"]  # once each
    remembered = json.loads(Path(gn_config["created_datasets_file"]).read_text())
    scope = f"{gn_config['api_url']} user {gn_config['user_code']}"
    codes = {d["name"]: code for code, d in sandbox.datasets().items()}
    assert remembered == {scope: {"shop_full": codes["shop_full"],
                                  "shop_inc": codes["shop_inc"]}}
    assert f"remembered in {gn_config['created_datasets_file']}" in first.stderr
    assert (f"Stream 'inc': dataset '{codes['shop_inc']}' was created by an earlier run "
            f"(remembered in {gn_config['created_datasets_file']})") in second.stderr
    assert [r["id"] for r in sandbox.dataset(codes["shop_inc"])["rows"]] == [
        11, 12, 13, 21, 22, 23]


def test_connection_refused_fails_within_seconds_naming_host_and_port(
        tmp_path: Path, gn_config: dict) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gn_config["api_url"] = f"http://127.0.0.1:{port}/graphitenote/api"
    started = time.monotonic()
    run = run_target(tmp_path, gn_config, ONE_STREAM, timeout=60)
    assert time.monotonic() - started < 15  # not 8 retries with backoff
    assert error_line(run) == (
        f"Graphite Note did not answer on dataset-fill at 127.0.0.1:{port}: connection refused "
        "(nothing listens there: check api_url)")


def test_no_answer_names_host_and_port(tmp_path: Path, sandbox: Sandbox,
                                       gn_config: dict) -> None:
    sandbox.fault(path="/graphitenote/api/dataset-fill", drop=True, times=10)
    gn_config["max_retries"] = 1
    run = run_target(tmp_path, gn_config, ONE_STREAM)
    port = sandbox.gn_url.split(":")[2].split("/")[0]
    assert error_line(run).startswith(
        f"Graphite Note did not answer on dataset-fill at 127.0.0.1:{port} after 2 attempts")


def test_overrides_that_never_apply_are_warned_about(tmp_path: Path, sandbox: Sandbox,
                                                     gn_config: dict) -> None:
    gn_config["column_overrides"] = {
        "full": {"id": {"subtype": "text"}, "nope": {"alias": "x"}},
        "ghost": {"id": {"alias": "y"}},
        "*": {"v": {"alias": "V"}, "missing_everywhere": {"alias": "z"}},
    }
    stream = lines([schema("full", PROPS), record("full", {"id": 1, "v": "a"})])
    run = run_target(tmp_path, gn_config, stream)
    assert run.returncode == 0, run.stderr
    assert ("column_overrides for stream 'full' name properties its SCHEMA does not have: "
            "nope (ignored)") in run.stderr
    assert "column_overrides name streams that never arrived: ghost" in run.stderr
    assert 'column_overrides "*" name properties no stream had: missing_everywhere' in run.stderr
    columns = {c["name"]: c for c in sandbox.dataset()["columns"]}
    assert columns["id"]["subtype"] == "text" and "format" not in columns["id"]
    assert columns["v"]["alias"] == "V"


def test_overriding_a_subtype_takes_that_subtypes_format(tmp_path: Path, sandbox: Sandbox,
                                                         gn_config: dict) -> None:
    gn_config["column_overrides"] = {"*": {
        "when": {"subtype": "date"},                       # datetime -> date: Y-m-d
        "n": {"subtype": "numeric", "format": "#,###.0"},  # given: kept
        "code": {"subtype": "numeric"},                    # text -> numeric: #,###.##
    }}
    props = {"id": {"type": "integer"}, "when": {"type": "string", "format": "date-time"},
             "n": {"type": "integer"}, "code": {"type": ["string", "integer"]}}
    stream = lines([schema("s", props),
                    record("s", {"id": 1, "when": "2024-03-01T10:00:00+02:00", "n": 5,
                                 "code": 7})])
    run = run_target(tmp_path, gn_config, stream)
    assert run.returncode == 0, run.stderr
    columns = {c["name"]: c for c in sandbox.dataset()["columns"]}
    assert columns["when"]["format"] == "Y-m-d"
    assert columns["n"]["format"] == "#,###.0"
    assert columns["code"]["format"] == "#,###.##"
    assert sandbox.rows()[0]["when"] == "2024-03-01"
    assert sandbox.rows()[0]["code"] == 7
