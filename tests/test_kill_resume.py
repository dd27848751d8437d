"""A run killed mid-stream and resumed from its last STATE loses no record.

STATE comes every 37 records and batches hold 50, so checkpoints never line up with
batches; the kill comes right after a STATE line appears (the moment a wrong target would
have written a STATE ahead of its data), not at a random time.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import (
    Loading,
    Sandbox,
    counter_stream,
    lines,
    run_target,
    spawn_target,
)

TOTAL = 3000


def bookmark(line: bytes) -> int:
    return json.loads(line)["bookmarks"]["items"]["last_id"]


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_without_loss(tmp_path: Path, sandbox: Sandbox, loading: Loading,
                                         stop: signal.Signals) -> None:
    sandbox.fault(path=loading.batch_route, delay=0.05, times=1000)
    config = {**loading.config, "batch_size_rows": 50}
    proc = spawn_target(tmp_path, config, lines(counter_stream(1, TOTAL, state_every=37)),
                        command=loading.command)
    assert proc.stdout is not None
    for _ in range(3):  # the third STATE line: the run is well under way
        line = proc.stdout.readline()
        assert line, "the target wrote no STATE before the stream ended"
    proc.send_signal(stop)
    emitted = [line, *proc.stdout.read().splitlines()]  # what Meltano would have stored
    proc.wait(timeout=30)
    last = bookmark(emitted[-1])
    assert last < TOTAL, "the kill came too late to test anything"

    landed = loading.landed_ids()
    assert set(range(1, last + 1)) <= set(landed), "a STATE was emitted ahead of its data"

    resumed = run_target(tmp_path, config, lines(counter_stream(last + 1, TOTAL,
                                                                state_every=37)),
                         command=loading.command)
    assert resumed.returncode == 0, resumed.stderr
    ids = loading.landed_ids()
    assert set(ids) == set(range(1, TOTAL + 1)), "records were lost"
    doubled = {i for i, n in Counter(ids).items() if n > 1}
    assert all(i > last for i in doubled), "only rows after the last STATE may be sent twice"


def test_sigterm_while_waiting_on_the_platform_loses_no_batch(
        tmp_path: Path, sandbox: Sandbox, gn_config: dict) -> None:
    """The reader is blocked handing a batch over when SIGTERM comes: that batch must land."""
    sandbox.fault(path="/graphitenote/api/dataset-fill", delay=0.7, times=1000)
    gn_config["batch_size_rows"] = 10
    proc = spawn_target(tmp_path, gn_config, lines(counter_stream(1, 200, state_every=7)),
                        stderr=subprocess.PIPE)
    assert proc.stdout
    proc.stdout.readline()  # the first STATE: uploads are under way and the queue is full
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    read = int(re.search(rb"(\d+) records", err).group(1))  # type: ignore[union-attr]
    ids = [r["id"] for r in sandbox.rows()]
    assert ids == list(range(1, read + 1)), "every record the target read has landed"
    assert read < 200, "the signal came too late to test anything"
    last = json.loads(out.splitlines()[-1])["bookmarks"]["items"]["last_id"]
    assert read - 7 < last <= read
    assert sandbox.dataset()["completes"] == 1


def test_sigterm_while_the_tap_is_quiet_stops_at_once(tmp_path: Path, sandbox: Sandbox,
                                                      gn_config: dict) -> None:
    proc = spawn_target(tmp_path, gn_config)
    assert proc.stdin
    proc.stdin.write(lines(counter_stream(1, 25, state_every=10)))
    proc.stdin.flush()  # and then nothing more, with stdin left open
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert [r["id"] for r in sandbox.rows()] == list(range(1, 26))
    assert json.loads(out.splitlines()[-1]) == {"bookmarks": {"items": {"last_id": 25}}}


def test_sigterm_with_a_failing_upload_exits_non_zero(tmp_path: Path, sandbox: Sandbox,
                                                      gn_config: dict) -> None:
    sandbox.fault(path="/graphitenote/api/dataset-fill", status=400, delay=1.0, times=100)
    gn_config["batch_size_rows"] = 10
    proc = spawn_target(tmp_path, gn_config, lines(counter_stream(1, 30, state_every=7)),
                        stderr=subprocess.PIPE)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert out == b""
    assert err.decode().strip().splitlines()[-1].startswith(
        "target-graphitenote: error: Graphite Note rejected dataset-fill as malformed (HTTP 400)")


def test_overwrite_writes_state_only_at_the_end(tmp_path: Path, sandbox: Sandbox,
                                                gn_config: dict) -> None:
    """A resumed replace would truncate what the interrupted run loaded: no mid-run STATE."""
    gn_config.update(load_method="overwrite", batch_size_rows=10)
    run = run_target(tmp_path, gn_config, lines(counter_stream(1, 35, state_every=7)))
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ['{"bookmarks":{"items":{"last_id":35}}}']
    assert sandbox.dataset()["fills"] == 4
