"""A run killed mid-stream and resumed from its last STATE loses no record.

STATE comes every 37 records and batches hold 50, so checkpoints never line up with
batches; the kill comes right after a STATE line appears (the moment a wrong target would
have written a STATE ahead of its data), not at a random time. Every test waits for a sign
from the target or the sandbox (a line, a request seen), never a fixed sleep.

A signal cuts the input: the run exits 128 + the signal number, calls no dataset-complete,
and under overwrite writes no STATE at all (a resumed replace would truncate the rows it
loaded). The resumed runs are then checked row by row.
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
    LineWatcher,
    Loading,
    Sandbox,
    counter_stream,
    lines,
    run_target,
    spawn_target,
    states_of,
    wait_until,
)

TOTAL = 3000


def bookmark(line: bytes) -> int:
    return json.loads(line)["bookmarks"]["items"]["last_id"]


def slow_load_after_its_first_state(
        tmp_path: Path, sandbox: Sandbox, gn_config: dict, delay: float, total: int
) -> tuple[subprocess.Popen[bytes], bytes]:
    """An append load in batches of 10 with every fill `delay` s slow, once its first STATE
    line (a fill acknowledged) has appeared; returns the process and that line."""
    sandbox.fault(path="/graphitenote/api/dataset-fill", delay=delay, times=1000)
    gn_config["batch_size_rows"] = 10
    proc = spawn_target(tmp_path, gn_config, lines(counter_stream(1, total, state_every=7)),
                        stderr=subprocess.PIPE)
    assert proc.stdout
    first = proc.stdout.readline()
    assert first, "the target wrote no STATE"
    return proc, first


def resume_and_check(tmp_path: Path, sandbox: Sandbox, gn_config: dict, last: int, total: int,
                     *, state_every: int) -> None:
    """Resume an append run from bookmark `last`, as the tap would: then every record is in
    the dataset, and only those after the bookmark may be there twice."""
    resumed = run_target(tmp_path, gn_config, lines(counter_stream(last + 1, total,
                                                                   state_every=state_every)))
    assert resumed.returncode == 0, resumed.stderr
    ids = [r["id"] for r in sandbox.rows()]
    assert set(ids) == set(range(1, total + 1)), "records were lost"
    doubled = {i for i, n in Counter(ids).items() if n > 1}
    assert all(i > last for i in doubled), "only rows after the last STATE may be sent twice"


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
    assert proc.wait(timeout=30) == (-signal.SIGKILL if stop == signal.SIGKILL else 128 + stop)
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
    proc, _ = slow_load_after_its_first_state(tmp_path, sandbox, gn_config, 0.7, 200)
    proc.send_signal(signal.SIGTERM)  # uploads are under way and the queue is full
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    read = int(re.search(rb"(\d+) records", err).group(1))  # type: ignore[union-attr]
    ids = [r["id"] for r in sandbox.rows()]
    assert ids == list(range(1, read + 1)), "every record the target read has landed"
    assert read < 200, "the signal came too late to test anything"
    last = json.loads(out.splitlines()[-1])["bookmarks"]["items"]["last_id"]
    assert read - 7 < last <= read
    assert sandbox.dataset()["completes"] == 0, "a cut load is not completed"
    assert "Stopped by signal 15: the input was cut short; exit 143" in err.decode()


def test_sigterm_while_the_tap_is_quiet_stops_at_once(tmp_path: Path, sandbox: Sandbox,
                                                      gn_config: dict) -> None:
    gn_config["batch_size_rows"] = 5
    proc = spawn_target(tmp_path, gn_config)
    assert proc.stdin and proc.stdout
    proc.stdin.write(lines(counter_stream(1, 25, state_every=10)))
    proc.stdin.flush()  # and then nothing more, with stdin left open
    states = LineWatcher(proc.stdout)
    states.wait_for('"last_id":25')  # the sign that every line was read and has landed
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    assert time.monotonic() - started < 10
    assert proc.returncode == 128 + signal.SIGTERM
    assert [r["id"] for r in sandbox.rows()] == list(range(1, 26))
    assert json.loads(states.rest()[-1]) == {"bookmarks": {"items": {"last_id": 25}}}


def test_sigterm_after_a_failed_upload_exits_1_with_its_line(
        tmp_path: Path, sandbox: Sandbox, gn_config: dict) -> None:
    sandbox.fault(path="/graphitenote/api/dataset-fill", status=400, times=100)
    gn_config["batch_size_rows"] = 10
    proc = spawn_target(tmp_path, gn_config, stderr=subprocess.PIPE)
    assert proc.stdin
    proc.stdin.write(lines(counter_stream(1, 30, state_every=7)))
    proc.stdin.flush()  # stdin stays open: the target cannot end by itself
    wait_until(lambda: any(r["status"] == 400 for r in sandbox.requests()),
               "the sandbox to refuse the first fill")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, "an upload error that came first wins over the signal"
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


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_overwrite_stopped_by_a_signal_then_resumed_loses_nothing(
        tmp_path: Path, sandbox: Sandbox, gn_config: dict, stop: signal.Signals) -> None:
    """The issue's reproduction: overwrite, batches of 10, a slow stream of 300 records, a
    signal after the first fill. No STATE and no dataset-complete; the resumed run (from the
    STATE Meltano had before: none) replaces the dataset with every record exactly once."""
    sandbox.fault(path="/graphitenote/api/dataset-fill", delay=0.3, times=1000)
    gn_config.update(load_method="overwrite", batch_size_rows=10)
    stream = lines(counter_stream(1, 300, state_every=7))
    proc = spawn_target(tmp_path, gn_config, stream, stderr=subprocess.PIPE)
    wait_until(lambda: sandbox.dataset()["fills"] >= 1, "the first fill")
    proc.send_signal(stop)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + stop, err.decode()
    assert out == b"", "no STATE from a replace cut short"
    assert sandbox.dataset()["completes"] == 0
    assert len(sandbox.rows()) < 300, "the signal came too late to test anything"

    resumed = run_target(tmp_path, gn_config, stream)
    assert resumed.returncode == 0, resumed.stderr
    assert [r["id"] for r in sandbox.rows()] == list(range(1, 301))
    assert [r["label"] for r in sandbox.rows()] == [f"item {i}" for i in range(1, 301)]
    assert resumed.stdout.splitlines() == ['{"bookmarks":{"items":{"last_id":300}}}']
    assert sandbox.dataset()["completes"] == 1


def test_append_stopped_by_sigint_then_resumed_loses_nothing(
        tmp_path: Path, sandbox: Sandbox, gn_config: dict) -> None:
    proc, first = slow_load_after_its_first_state(tmp_path, sandbox, gn_config, 0.2, 300)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGINT, err.decode()
    last = bookmark((out.splitlines() or [first])[-1])
    assert last < 300, "the signal came too late to test anything"
    landed = [r["id"] for r in sandbox.rows()]
    assert set(range(1, last + 1)) <= set(landed), "a STATE was written ahead of its data"
    assert sandbox.dataset()["completes"] == 0

    resume_and_check(tmp_path, sandbox, gn_config, last, 300, state_every=7)


def test_a_second_signal_stops_at_once_with_no_state_past_the_data(
        tmp_path: Path, sandbox: Sandbox, gn_config: dict) -> None:
    """Draining under a rate limit takes minutes; a second Ctrl-C must not."""
    gn_config.update(batch_size_rows=10, rate_limit_per_minute=2)
    proc = spawn_target(tmp_path, gn_config, lines(counter_stream(1, 300, state_every=7)),
                        stderr=subprocess.PIPE)
    assert proc.stdout and proc.stderr
    log = LineWatcher(proc.stderr)
    log.wait_for("Rate limit of 2 calls per 60 s reached")  # two fills went, the rest wait
    proc.send_signal(signal.SIGINT)
    log.wait_for("Signal 2: stopping after the current message")
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=20)
    assert time.monotonic() - started < 10
    assert proc.returncode == 128 + signal.SIGINT
    out = proc.stdout.read().splitlines()
    landed = {r["id"] for r in sandbox.rows()}
    assert len(landed) == 20
    if out:
        assert set(range(1, bookmark(out[-1]) + 1)) <= landed
    assert any("Signal 2 again: stopping at once" in line for line in log.rest())
    assert sandbox.dataset()["completes"] == 0


def test_a_fill_applied_but_unanswered_is_duplicated_once_and_counted(
        tmp_path: Path, sandbox: Sandbox, gn_config: dict) -> None:
    """At-least-once, measured: the platform stores the 2nd fill, the connection drops before
    its answer, the target retries it. Exactly that batch lands twice; nothing else does,
    nothing is lost, and no STATE runs ahead of the data."""
    fill = "/graphitenote/api/dataset-fill"
    sandbox.fault(path=fill, delay=0.001)           # the 1st fill: untouched
    sandbox.fault(path=fill, drop_after=True)       # the 2nd: applied, answer lost
    gn_config["batch_size_rows"] = 10
    run = run_target(tmp_path, gn_config, lines(counter_stream(1, 45, state_every=7)))
    assert run.returncode == 0, run.stderr
    ids = [r["id"] for r in sandbox.rows()]
    counts = Counter(ids)
    duplicates = sorted(i for i, n in counts.items() if n > 1)
    assert duplicates == list(range(11, 21)), "exactly the unanswered batch, once more"
    assert all(n <= 2 for n in counts.values())
    assert set(ids) == set(range(1, 46))
    assert len(ids) - len(set(ids)) == 10  # bounded by one batch per lost answer
    log = sandbox.requests()
    assert [(r["status"], r["fault"]) for r in log if r["path"] == fill][:3] == [
        (200, "delay=0.001"), (200, "applied+drop"), (200, None)]
    assert "ConnectionError" in run.stderr  # the retry is logged
    assert states_of(run.stdout)[-1] == {"bookmarks": {"items": {"last_id": 45}}}


# -- file platforms: a stream's file is confirmed at the end of the input -------------------


def _uploads(sandbox: Sandbox, loading: Loading) -> list[dict]:
    prefix = loading.batch_route.rstrip("*")
    return [r for r in sandbox.requests() if r["path"].startswith(prefix)]


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_file_target_stopped_mid_stream_uploads_nothing_and_resumes_without_loss(
        tmp_path: Path, sandbox: Sandbox, file_loading: Loading, stop: signal.Signals) -> None:
    """Run 1 loads 1..1000. Run 2 reads 1001..3000 through a pipe left open and is stopped
    once it has spooled three batches: no partial file is uploaded, no STATE passes 1000.
    Run 3 resumes from the last STATE: every record lands exactly once."""
    config = {**file_loading.config, "batch_size_rows": 50}
    first = run_target(tmp_path, config, lines(counter_stream(1, 1000, state_every=37)),
                       command=file_loading.command)
    assert first.returncode == 0, first.stderr
    assert states_of(first.stdout)[-1] == {"bookmarks": {"items": {"last_id": 1000}}}
    uploaded = len(_uploads(sandbox, file_loading))

    proc = spawn_target(tmp_path, config, stderr=subprocess.PIPE, command=file_loading.command,
                        LOGLEVEL="DEBUG")
    assert proc.stdin and proc.stdout
    log = LineWatcher(proc.stderr)
    proc.stdin.write(lines(counter_stream(1001, 2000, state_every=37)))
    proc.stdin.flush()  # half the stream; the pipe stays open: the input has not ended
    for _ in range(3):
        log.wait_for("batch is full")  # the sign: rows are being spooled
    proc.send_signal(stop)
    assert proc.wait(timeout=30) == (-signal.SIGKILL if stop == signal.SIGKILL else 128 + stop)
    emitted = proc.stdout.read().splitlines()
    assert all(bookmark(line) <= 1000 for line in emitted), "a STATE past confirmed data"
    assert len(_uploads(sandbox, file_loading)) == uploaded, "a partial file was uploaded"
    assert sorted(file_loading.landed_ids()) == list(range(1, 1001))

    resumed = run_target(tmp_path, config, lines(counter_stream(1001, TOTAL, state_every=37)),
                         command=file_loading.command)
    assert resumed.returncode == 0, resumed.stderr
    assert file_loading.landed_ids() == list(range(1, TOTAL + 1)), "lost or doubled"


@pytest.mark.parametrize("load_method", ["append-only", "overwrite"])
def test_file_target_killed_while_its_file_is_processed(
        tmp_path: Path, sandbox: Sandbox, file_loading: Loading, load_method: str) -> None:
    """SIGKILL between the upload and its confirmation: no STATE was written for it. The
    rerun sends the stream again: a replace (reload) lands it once; an append lands the
    rows after the last STATE twice (at-least-once), never loses one."""
    assert file_loading.confirm_route is not None
    config = {**file_loading.config, "load_method": load_method}
    sandbox.fault(path=file_loading.confirm_route, delay=0.5, times=1000)  # slow polls
    stream = lines(counter_stream(1, 500, state_every=37))
    proc = spawn_target(tmp_path, config, stream, command=file_loading.command)
    wait_until(lambda: any(r["status"] == 202 for r in _uploads(sandbox, file_loading)),
               "the upload to be accepted")  # the sign: now the target waits for the job
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert proc.stdout is not None and proc.stdout.read() == b"", "STATE before confirmation"
    wait_until(lambda: len(file_loading.landed_ids()) == 500, "the platform to finish the job")
    assert sorted(file_loading.landed_ids()) == list(range(1, 501))  # the platform went on

    resumed = run_target(tmp_path, config, stream, command=file_loading.command)
    assert resumed.returncode == 0, resumed.stderr
    ids = Counter(file_loading.landed_ids())
    assert set(ids) == set(range(1, 501))
    assert set(ids.values()) == ({1} if load_method == "overwrite" else {2})
