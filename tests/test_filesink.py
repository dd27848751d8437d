"""The file path's guarantees, through a small CSV target (tests/filesplatform.py) and its
emulator built from the sandbox kit, over real HTTP on loopback.

- rows land exactly, as one file per stream (or several under a size limit);
- no STATE before the platform confirmed (the commit job finished);
- a kill between the upload and the confirmation leaves no STATE past the data;
- a failed upload ends the run with one line, and leaves no spool behind;
- a signal never finishes a partial file, and the exit is 128 + n;
- memory stays flat at 1M rows (peak RSS of the target process).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    Sandbox,
    error_line,
    lines,
    record,
    run_target,
    schema,
    spawn_target,
    state,
    states_of,
    write_config,
)
from filesplatform import API_KEY, FilesEmulator

from target_core.sandbox import SandboxServer
from target_graphitenote.sandbox import GraphiteNoteEmulator

CMD = [sys.executable, str(Path(__file__).with_name("filesplatform.py"))]
PREFIX = "target-testfiles: error: "
API = "/testfiles/api"


class Files(Sandbox):
    def streams(self) -> dict[str, dict]:
        return self._control("GET", "state")["testfiles"]["streams"]

    def jobs(self) -> list[dict]:
        return self._control("GET", "state")["testfiles"]["jobs"]

    def calls(self, suffix: str) -> list[dict]:
        return [r for r in self.requests() if r["path"].endswith(suffix)]

    def wait_for(self, sign: Callable[[], Any], what: str, timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while not (found := sign()):
            assert time.monotonic() < deadline, f"no sign of {what}"
            time.sleep(0.02)
        return found


@pytest.fixture
def files(tmp_path: Path) -> Iterator[Files]:
    server = SandboxServer(tmp_path / "sandbox",
                           emulators=[FilesEmulator, GraphiteNoteEmulator]).start()
    try:
        yield Files(server)
    finally:
        server.stop()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    path = tmp_path / "spool"
    path.mkdir()
    return path


@pytest.fixture
def config(files: Files, spool: Path) -> dict[str, Any]:
    return {"api_url": files.server.api_url("testfiles"), "api_key": API_KEY,
            "spool_dir": str(spool), "processing_timeout": 60}


def two_streams(first: int = 1, last: int = 600, *, split: int = 300,
                state_every: int = 37) -> list[dict]:
    """Stream 'a' gets ids up to `split`, then stream 'b' the rest; a STATE (the last id so
    far) every `state_every` records and at the end of each stream."""
    props = {"id": {"type": "integer"}, "label": {"type": ["string", "null"]}}
    messages: list[dict] = [schema("a", props), schema("b", props)]
    for i in range(first, last + 1):
        messages.append(record("a" if i <= split else "b", {"id": i, "label": f"item {i}"}))
        if i % state_every == 0 or i in (split, last):
            messages.append(state({"last_id": i}))
    return messages


def ids(files: Files, stream: str) -> list[int]:
    return [int(r["id"]) for r in files.streams().get(stream, {"rows": []})["rows"]]


def test_rows_land_exactly_one_file_per_stream_and_state_at_the_end(
        tmp_path: Path, files: Files, config: dict, spool: Path) -> None:
    props = {"id": {"type": "integer"}, "price": {"type": ["number", "null"]},
             "ok": {"type": ["boolean", "null"]}, "at": {"type": "string", "format": "date-time"},
             "day": {"type": ["string", "null"], "format": "date"},
             "tags": {"type": ["array", "null"]}, "note": {"type": ["string", "null"]}}
    messages: list[Any] = [schema("typed", props), schema("empty", {"id": {"type": "integer"}})]
    messages += [
        record("typed", {"id": 1, "price": 12.5, "ok": True, "at": "2024-03-01T10:20:30Z",
                         "day": "2024-03-01", "tags": ["x", 1], "note": 'a "quote", a\nline'}),
        state({"n": 1}),
        record("typed", {"id": 2, "price": None, "ok": False, "at": "2024-03-01T01:20:30-05:30",
                         "day": None, "tags": None, "note": ""}),
        state({"n": 2}),
        record("typed", {"id": 3, "at": "0999-01-01T00:00:00Z"}),
        state({"n": 3}),
    ]
    run = run_target(tmp_path, config, lines(messages), command=CMD)
    assert run.returncode == 0, run.stderr
    landed = files.streams()
    assert "empty" not in landed, "a stream with no records changes nothing"
    assert len(landed["typed"]["files"]) == 1
    assert landed["typed"]["columns"] == ["id", "price", "ok", "at", "day", "tags", "note"]
    assert landed["typed"]["rows"] == [
        {"id": "1", "price": "12.5", "ok": "true", "at": "2024-03-01 10:20:30",
         "day": "2024-03-01", "tags": '["x",1]', "note": 'a "quote", a\nline'},
        {"id": "2", "price": "", "ok": "false", "at": "2024-03-01 06:50:30", "day": "",
         "tags": "", "note": ""},
        {"id": "3", "price": "", "ok": "", "at": "0999-01-01 00:00:00", "day": "", "tags": "",
         "note": ""},
    ]
    assert states_of(run.stdout) == [{"n": 3}], "one file: STATE only after its commit"
    assert list(spool.iterdir()) == [], "the spool is removed on success"
    assert not files.calls("/streams/empty/files")


def test_a_schema_change_mid_stream_gives_one_file_with_the_union(
        tmp_path: Path, files: Files, config: dict) -> None:
    v1 = {"id": {"type": "integer"}, "label": {"type": "string"}}
    v2 = {"id": {"type": "integer"}, "label": {"type": "integer"},  # type changed
          "extra": {"type": ["string", "null"]}}
    messages = [schema("s", v1), record("s", {"id": 1, "label": "one"}),
                schema("s", v2), record("s", {"id": 2, "label": 22, "extra": "x"}),
                state({"done": True})]
    run = run_target(tmp_path, config, lines(messages), command=CMD)
    assert run.returncode == 0, run.stderr
    landed = files.streams()["s"]
    assert len(landed["files"]) == 1
    assert landed["columns"] == ["id", "label", "extra"]
    assert landed["rows"] == [{"id": "1", "label": "one", "extra": ""},
                              {"id": "2", "label": "22", "extra": "x"}]


def test_no_state_before_the_platform_confirms(
        tmp_path: Path, files: Files, config: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FilesEmulator.job_seconds, "a", 1.5)
    monkeypatch.setitem(FilesEmulator.job_seconds, "b", 1.5)
    proc = spawn_target(tmp_path, config, lines(two_streams()), command=CMD)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    landed = files.streams()  # the moment the first STATE is out
    assert json.loads(first) == {"last_id": 300}
    assert landed["a"]["row_count"] == 300, "STATE came before the job landed the rows"
    assert [j["state"] for j in files.jobs()][:1] == ["succeeded"]
    second = proc.stdout.readline()
    landed = files.streams()
    assert json.loads(second) == {"last_id": 600}
    assert landed["b"]["row_count"] == 300
    assert proc.wait(timeout=60) == 0


def test_a_kill_between_upload_and_confirmation_leaves_no_state_past_the_data(
        tmp_path: Path, files: Files, config: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FilesEmulator.job_seconds, "b", 2.0)
    proc = spawn_target(tmp_path, config, lines(two_streams()), command=CMD)
    files.wait_for(lambda: [r for r in files.calls("/streams/b/commit") if r["status"] == 202],
                   "stream b's upload and commit")
    proc.send_signal(signal.SIGKILL)  # uploaded, its commit job still running
    out, _ = proc.communicate(timeout=30)
    emitted = states_of(out.decode())
    assert emitted and emitted[-1] == {"last_id": 300}, "STATE went past stream a's rows"
    last = emitted[-1]["last_id"]
    files.wait_for(lambda: [j["state"] for j in files.jobs()] == ["succeeded"] * 2,
                   "the orphaned job to end")  # the platform finishes what it accepted

    resumed = run_target(tmp_path, config, lines(two_streams(last + 1)), command=CMD)
    assert resumed.returncode == 0, resumed.stderr
    everything = ids(files, "a") + ids(files, "b")
    assert set(everything) == set(range(1, 601)), "records were lost"
    doubled = {i for i, n in Counter(everything).items() if n > 1}
    assert doubled and all(i > last for i in doubled), "only rows after the STATE repeat"


@pytest.mark.parametrize("fault", [
    {"status": 400},  # refused: not repeated
    {"status": 503, "times": 10},  # retries run out
    {"drop": True, "times": 10},  # no answer
])
@pytest.mark.parametrize("max_file_bytes", [None, 1500])
def test_a_failed_upload_ends_the_run_with_one_line_and_no_spool(
        tmp_path: Path, files: Files, config: dict, spool: Path, fault: dict,
        max_file_bytes: int | None) -> None:
    files.fault(method="POST", path=f"{API}/streams/*/files", **fault)
    config.update(max_retries=1, max_file_bytes=max_file_bytes)
    run = run_target(tmp_path, config, lines(two_streams(1, 2000, split=1000)), command=CMD)
    message = error_line(run, PREFIX)
    assert "stream 'a'" in message or "streams/a/files" in message, message
    assert states_of(run.stdout) == []
    assert list(spool.iterdir()) == [], "the spool is removed on failure"
    assert not files.calls("/commit"), "nothing is committed after a failed upload"


def test_a_stream_without_destination_fails_at_its_schema(
        tmp_path: Path, files: Files, config: dict, spool: Path) -> None:
    config["refuse_streams"] = ["b"]
    run = run_target(tmp_path, config, lines(two_streams(1, 10, split=5)), command=CMD)
    assert "no destination for stream 'b'" in error_line(run, PREFIX)
    assert files.requests() == [] and list(spool.iterdir()) == []


def test_a_busy_destination_is_waited_out(tmp_path: Path, files: Files, config: dict) -> None:
    files.fault(method="POST", path=f"{API}/streams/*/commit", status=409, times=2)
    run = run_target(tmp_path, config, lines(two_streams(1, 20, split=20)), command=CMD)
    assert run.returncode == 0, run.stderr
    assert [r["status"] for r in files.calls("/commit")] == [409, 409, 202]
    assert ids(files, "a") == list(range(1, 21))


def test_a_size_limit_splits_files_and_each_confirmed_upload_moves_state(
        tmp_path: Path, files: Files, config: dict) -> None:
    config.update(max_file_bytes=2000, confirm="upload", batch_size_rows=50)
    run = run_target(tmp_path, config, lines(two_streams(1, 1200, split=600)), command=CMD)
    assert run.returncode == 0, run.stderr
    landed = files.streams()
    assert len(landed["a"]["files"]) >= 3 and len(landed["b"]["files"]) >= 3
    assert ids(files, "a") == list(range(1, 601)) and ids(files, "b") == list(range(601, 1201))
    emitted = [s["last_id"] for s in states_of(run.stdout)]
    assert len(emitted) > 5 and emitted == sorted(emitted) and emitted[-1] == 1200
    assert not files.calls("/commit")


def _spawn_with_open_stdin(tmp_path: Path, config: dict, messages: list[dict]
                           ) -> subprocess.Popen[bytes]:
    proc = spawn_target(tmp_path, config, stderr=subprocess.PIPE, command=CMD)
    assert proc.stdin is not None
    proc.stdin.write(lines(messages))
    proc.stdin.flush()  # the pipe stays open: the tap is still running
    return proc


def test_a_signal_never_finishes_a_partial_file(
        tmp_path: Path, files: Files, config: dict, spool: Path) -> None:
    config["max_file_bytes"] = None
    proc = _spawn_with_open_stdin(tmp_path, config, two_streams(1, 5000, split=5000))
    files.wait_for(lambda: [p for p in spool.rglob("*.csv") if p.stat().st_size > 0],
                   "rows in the spooled file")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()
    assert "Traceback" not in err.decode()
    assert states_of(out.decode()) == [], "no file was confirmed, so no STATE"
    assert files.requests() == [], "nothing uploaded or committed from the partial file"
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_keeps_confirmed_files_and_resumes_without_loss(
        tmp_path: Path, files: Files, config: dict, spool: Path, stop: signal.Signals) -> None:
    config.update(max_file_bytes=3000, confirm="upload", batch_size_rows=100)
    proc = _spawn_with_open_stdin(tmp_path, config, two_streams(1, 3000, split=3000))
    files.wait_for(lambda: len(files.calls("/streams/a/files")) >= 2, "two confirmed files")
    proc.send_signal(stop)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + stop, err.decode()
    emitted = states_of(out.decode())
    assert emitted, "confirmed files move STATE"
    last = emitted[-1]["last_id"]
    landed = ids(files, "a")
    assert landed == list(range(1, len(landed) + 1)) and last <= len(landed) < 3000
    assert list(spool.iterdir()) == []

    resumed = run_target(tmp_path, config, lines(two_streams(last + 1, 3000, split=3000)),
                         command=CMD)
    assert resumed.returncode == 0, resumed.stderr
    everything = ids(files, "a")
    assert set(everything) == set(range(1, 3001))
    assert all(i > last for i, n in Counter(everything).items() if n > 1)


def _peak_rss_mib(tmp_path: Path, config: dict, records: int) -> tuple[float, str]:
    """Run the target on `records` records: its peak RSS (MiB) from the kernel, and its log."""
    source = tmp_path / f"input-{records}.jsonl"
    with source.open("wb") as out:
        out.write(lines([schema("big", {"id": {"type": "integer"},
                                        "label": {"type": "string"},
                                        "value": {"type": "number"}})]))
        chunk: list[bytes] = []
        for i in range(1, records + 1):
            chunk.append(b'{"type":"RECORD","stream":"big","record":{"id":%d,"label":"item %d",'
                         b'"value":%d.25}}\n' % (i, i, i))
            if i % 50_000 == 0 or i == records:
                chunk.append(b'{"type":"STATE","value":{"last_id":%d}}\n' % i)
                out.write(b"".join(chunk))
                chunk = []
    report = tmp_path / f"rss-{records}.txt"
    with source.open("rb") as stdin:
        run = subprocess.run([sys.executable, "-c", _MEASURE, str(report), *CMD, "--config",
                              str(write_config(tmp_path, config))],
                             stdin=stdin, capture_output=True, check=False)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    assert json.loads(run.stdout.splitlines()[-1]) == {"last_id": records}
    return int(report.read_text()) / 1024, run.stderr.decode()  # KiB on Linux


# A process's ru_maxrss counts the memory of whatever it was forked from (pytest, with the
# sandbox in it): the target is started from this small launcher, which reports the peak.
_MEASURE = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
open(sys.argv[1], "w").write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def test_memory_stays_flat_at_a_million_rows(tmp_path: Path, files: Files,
                                             config: dict) -> None:
    files.settings(max_body_bytes=256 * 1024 * 1024)
    small, _ = _peak_rss_mib(tmp_path, config, 100_000)
    assert files.streams()["big"]["row_count"] == 100_000
    large, log = _peak_rss_mib(tmp_path, config, 1_000_000)
    landed = files.streams()["big"]
    assert landed["row_count"] == 1_100_000
    print(f"peak RSS: {small:.0f} MiB at 100k rows, {large:.0f} MiB at 1M rows")
    assert large <= small * 1.10, f"{small:.0f} MiB at 100k, {large:.0f} MiB at 1M rows"
    # a long stream says how far it got while its one file is written (confirmed only at
    # the end): a line each 100,000 rows
    progress = re.findall(r"Stream 'big': (\d+) rows written so far \(file 1: (\d+) rows, "
                          r"\d+ bytes on disk\), \d+ rows/s", log)
    assert [int(rows) for rows, _ in progress] == list(range(100_000, 1_000_001, 100_000)), log
    assert all(total == in_file for total, in_file in progress)
