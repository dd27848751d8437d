"""Batches sized by request bytes, adapted to the platform's answers; what the log says.

The default is a budget of request bytes as sent (`batch_size_bytes`), not a row count:
under a per-call rate limit, the fullest call the platform accepts is what buys speed.
bench/calls.py measures the issue's 1,000,000-record scenario; these tests check the
mechanics on small streams, over HTTP against the sandbox.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Sandbox, counter_stream, lines, record, run_target, schema, states_of

from target_core.target import CoreTarget
from target_graphitenote.target import TargetGraphiteNote

FILL = "/graphitenote/api/dataset-fill"


def fills(sandbox: Sandbox) -> list[dict]:
    return [r for r in sandbox.requests() if r["path"] == FILL]


def wide_stream(n: int) -> bytes:
    """Rows of ~200 bytes that do not compress much (hex digests, like ids and hashes)."""
    messages: list[dict] = [schema("items", {"id": {"type": "integer"},
                                             "label": {"type": "string"},
                                             "n": {"type": "number"}})]
    for i in range(1, n + 1):
        digest = hashlib.sha256(str(i).encode()).hexdigest()
        messages.append(record("items", {"id": i, "label": f"{digest} {digest[::-1]}",
                                         "n": i / 7}))
    messages.append({"type": "STATE", "value": {"last": n}})
    return lines(messages)


def test_batches_fill_the_byte_budget_without_a_row_count(tmp_path: Path, sandbox: Sandbox,
                                                          gn_config: dict) -> None:
    gn_config["batch_size_bytes"] = 100_000
    run = run_target(tmp_path, gn_config, wide_stream(20_000))
    assert run.returncode == 0, run.stderr
    assert [r["id"] for r in sandbox.rows()] == list(range(1, 20_001))
    sizes = [r["request_bytes"] for r in fills(sandbox)]
    assert all(r["status"] == 200 for r in fills(sandbox))
    assert max(sizes) <= 100_000 * 1.1, sizes  # the budget holds, as sent (compressed)
    # after the first (a guess of the compression ratio), batches are nearly full
    assert all(size >= 100_000 * 0.8 for size in sizes[1:-1]), sizes
    assert len(sizes) < 20_000 / 10_000 * 20  # far fewer calls than rows / 10,000 allowed


def test_batch_size_rows_is_an_optional_cap(tmp_path: Path, sandbox: Sandbox,
                                            gn_config: dict) -> None:
    gn_config["batch_size_rows"] = 1_000
    assert run_target(tmp_path, gn_config, wide_stream(5_000)).returncode == 0
    assert len(fills(sandbox)) == 5


def test_a_413_teaches_the_limit_for_the_rest_of_the_run(tmp_path: Path, sandbox: Sandbox,
                                                         gn_config: dict) -> None:
    """The default budget (1 MiB with no rate limit), a platform refusing more than 60 kB: each
    refusal cuts the aim to a quarter, so a few refusals find the limit (each costs a
    call); then the batches fit, and grow back close to the limit."""
    sandbox.settings(max_body_bytes=60_000)
    run = run_target(tmp_path, gn_config, wide_stream(40_000))
    assert run.returncode == 0, run.stderr
    assert [r["id"] for r in sandbox.rows()] == list(range(1, 40_001))  # all, once, in order
    statuses = [r["status"] for r in fills(sandbox)]
    assert statuses.count(413) <= 5, statuses
    assert statuses[-10:] == [200] * 10  # learnt: no more refusals
    sizes = [r["request_bytes"] for r in fills(sandbox) if r["status"] == 200]
    assert max(sizes) > 40_000, "the budget grew back close to the limit after the cuts"
    assert "batches now aim at" in run.stderr
    assert states_of(run.stdout)[-1] == {"last": 40_000}


def test_slow_answers_shrink_the_batches(tmp_path: Path, sandbox: Sandbox,
                                         gn_config: dict) -> None:
    """request_timeout 4: an answer taking 1 s or more is slow, and halves the budget."""
    sandbox.fault(path=FILL, delay=1.2, times=1)
    gn_config.update(batch_size_bytes=200_000, request_timeout=4)
    run = run_target(tmp_path, gn_config, wide_stream(20_000))
    assert run.returncode == 0, run.stderr
    assert re.search(r"took 1 s to answer .* batches now aim at 98 KiB per call", run.stderr)
    sizes = [r["request_bytes"] for r in fills(sandbox)]
    # batches packed while the slow answer was awaited keep their size (at most 5 are in
    # the pipeline); every later one aims at the halved budget
    later = sizes[7:]
    assert len(later) >= 3 and max(later) <= 100_000 * 1.1, sizes
    assert [r["id"] for r in sandbox.rows()] == list(range(1, 20_001))


def test_each_acknowledged_call_says_the_progress(tmp_path: Path, sandbox: Sandbox,
                                                  gn_config: dict) -> None:
    gn_config["batch_size_rows"] = 10
    run = run_target(tmp_path, gn_config, lines(counter_stream(1, 30, state_every=7)))
    assert run.returncode == 0, run.stderr
    progress = re.findall(r"Stream 'items': batch (\d) \(10 rows\) acknowledged in [\d.]+ s; "
                          r"(\d+) rows and (\d+) calls so far, \d+ rows/s, "
                          r"[\d.]+ s waiting for the rate limit", run.stderr)
    assert progress == [("1", "10", "1"), ("2", "20", "2"), ("3", "30", "3")]
    assert "Summary: stream 'items': 30 rows in 3 batches" in run.stderr
    assert re.search(r"Summary: 30 rows in 4 calls in [\d.]+ s", run.stderr)  # + complete


def test_a_schema_that_adds_or_changes_columns_is_logged(tmp_path: Path, sandbox: Sandbox,
                                                         gn_config: dict) -> None:
    first = {"id": {"type": "integer"}, "v": {"type": "integer"}}
    messages = [schema("s", first), record("s", {"id": 1, "v": 1}),
                schema("s", first), record("s", {"id": 2, "v": 2}),  # unchanged: no line
                schema("s", {"id": {"type": "integer"}, "v": {"type": "string"},
                             "w": {"type": "boolean"}}),
                record("s", {"id": 3, "v": "three", "w": True})]
    run = run_target(tmp_path, gn_config, lines(messages))
    assert run.returncode == 0, run.stderr
    changes = re.findall(r"Stream 's': new SCHEMA.*", run.stderr)
    assert changes == ["Stream 's': new SCHEMA; adds columns w; changes types: v integer -> "
                       "text"]


@pytest.mark.parametrize(("load_method", "expected_fills"),
                         [("append-only", 6), ("overwrite", 2)])
def test_periodic_drains_under_overwrite_make_no_partial_fills(
        tmp_path: Path, sandbox: Sandbox, gn_config: dict, load_method: str,
        expected_fills: int, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Every STATE triggers the SDK's record-age drain here (its 5 minutes made 0). In
    append mode each drain sends what is buffered, so STATE moves; under overwrite no STATE
    can move before the end, so a partial fill would only be one more call."""
    monkeypatch.setattr(CoreTarget, "_MAX_RECORD_AGE_IN_MINUTES", -1.0)
    gn_config.update(load_method=load_method, batch_size_rows=20)
    target = TargetGraphiteNote(config=gn_config, parse_env_config=False)
    stream = lines(counter_stream(1, 30, state_every=5))
    target.listen(io.BytesIO(stream))  # type: ignore[arg-type]
    assert len(fills(sandbox)) == expected_fills
    assert [r["id"] for r in sandbox.rows()] == list(range(1, 31))
    assert states_of(capsys.readouterr().out)[-1] == {"bookmarks": {"items": {"last_id": 30}}}



def test_the_periodic_drain_does_not_hold_the_reader(
        tmp_path: Path, sandbox: Sandbox, gn_config: dict,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's record-age drain (made to fire at every STATE here) hands the buffered rows
    over and the reader goes on: the line after the drain is read while that fill is still
    waiting for its (slow) answer. A drain that waited would have it acknowledged first."""
    monkeypatch.setattr(CoreTarget, "_MAX_RECORD_AGE_IN_MINUTES", -1.0)
    sandbox.fault(path=FILL, delay=1.0, times=10)
    gn_config["batch_size_rows"] = 1000
    target = TargetGraphiteNote(config=gn_config, parse_env_config=False)
    acknowledged_when_read: list[int] = []

    def tap() -> Iterator[bytes]:
        for line in lines(counter_stream(1, 15, state_every=5)).splitlines(keepends=True):
            acknowledged_when_read.append(sum(s.rows for s in target.stream_stats.values()))
            yield line

    target.listen(tap())  # type: ignore[arg-type]
    assert [r["id"] for r in sandbox.rows()] == list(range(1, 16))
    assert len(fills(sandbox)) == 3  # one partial fill per drain: STATE could move
    # line 8 is record 6, read right after the drain at STATE 5 handed records 1-5 over
    assert acknowledged_when_read[7] == 0
