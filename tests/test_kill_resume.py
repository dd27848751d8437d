"""A run killed mid-stream and resumed from its last STATE loses no record.

STATE comes every 37 records and batches hold 50, so checkpoints never line up with
batches; the kill comes right after a STATE line appears (the moment a wrong target would
have written a STATE ahead of its data), not at a random time.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections import Counter
from pathlib import Path

import pytest
from conftest import (
    TARGET_CMD,
    Sandbox,
    counter_stream,
    lines,
    run_target,
    target_env,
    write_config,
)

TOTAL = 3000


def start_target(tmp_path: Path, config: dict, stdin: bytes) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([*TARGET_CMD, "--config", str(write_config(tmp_path, config))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=target_env())

    def feed() -> None:
        try:
            proc.stdin.write(stdin)  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        except (BrokenPipeError, ValueError):
            pass  # the target was killed: exactly what the test does

    threading.Thread(target=feed, daemon=True).start()
    return proc


def bookmark(line: bytes) -> int:
    return json.loads(line)["bookmarks"]["items"]["last_id"]


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_without_loss(tmp_path: Path, sandbox: Sandbox, gn_config: dict,
                                         stop: signal.Signals) -> None:
    sandbox.fault(path="/graphitenote/api/dataset-fill", delay=0.05, times=1000)
    gn_config["batch_size_rows"] = 50
    proc = start_target(tmp_path, gn_config, lines(counter_stream(1, TOTAL, state_every=37)))
    assert proc.stdout is not None
    for _ in range(3):  # the third STATE line: the run is well under way
        line = proc.stdout.readline()
        assert line, "the target wrote no STATE before the stream ended"
    proc.send_signal(stop)
    emitted = [line, *proc.stdout.read().splitlines()]  # what Meltano would have stored
    proc.wait(timeout=30)
    last = bookmark(emitted[-1])
    assert last < TOTAL, "the kill came too late to test anything"

    landed = [r["id"] for r in sandbox.rows()]
    assert set(range(1, last + 1)) <= set(landed), "a STATE was emitted ahead of its data"

    resumed = run_target(tmp_path, gn_config, lines(counter_stream(last + 1, TOTAL,
                                                                   state_every=37)))
    assert resumed.returncode == 0, resumed.stderr
    ids = [r["id"] for r in sandbox.rows()]
    assert set(ids) == set(range(1, TOTAL + 1)), "records were lost"
    doubled = {i for i, n in Counter(ids).items() if n > 1}
    assert all(i > last for i in doubled), "only rows after the last STATE may be sent twice"
