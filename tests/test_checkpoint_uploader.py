"""Checkpoint and Uploader on their own: STATE only past acknowledged records; jobs in
order on two threads, failures stop the pipeline and surface on the main thread."""

from __future__ import annotations

import decimal
import io
import json
import threading
from collections.abc import Callable

import pytest

from target_core.checkpoint import Checkpoint
from target_core.errors import ApiError
from target_core.uploads import Uploader


class Out:
    def __init__(self) -> None:
        self.buffer = io.StringIO()

    def __call__(self) -> io.StringIO:
        return self.buffer

    def states(self) -> list:
        return [json.loads(line) for line in self.buffer.getvalue().splitlines()]


def arrive(checkpoint: Checkpoint, records: int) -> int:
    """`records` more records arrive; returns the number of the first of them."""
    first = checkpoint.seen + 1
    checkpoint.seen += records
    return first


def test_state_waits_for_every_earlier_record() -> None:
    out = Out()
    checkpoint = Checkpoint(out)
    checkpoint.state({"s": 0})  # before any record: nothing to wait for
    assert out.states() == [{"s": 0}]
    a, b = object(), object()
    checkpoint.open(a, arrive(checkpoint, 1))  # record 1 in buffer a
    checkpoint.open(b, arrive(checkpoint, 1))  # record 2 in buffer b
    checkpoint.state({"s": 2})
    arrive(checkpoint, 1)  # record 3, in a (already open at 1)
    checkpoint.state({"s": 3})
    checkpoint.close(b)
    assert out.states() == [{"s": 0}], "record 1 is still open"
    checkpoint.close(a)
    assert out.states() == [{"s": 0}, {"s": 3}], "only the newest safe STATE is written"


def test_unchanged_and_empty_states_are_not_written_twice() -> None:
    out = Out()
    checkpoint = Checkpoint(out)
    checkpoint.state({"s": 1})
    checkpoint.state({})
    arrive(checkpoint, 1)
    checkpoint.state({"s": 1})
    checkpoint.flush(final=True)
    assert out.states() == [{"s": 1}]


def test_floats_and_decimals_in_state_are_written() -> None:
    out = Out()
    Checkpoint(out).state({"f": 1.5, "d": decimal.Decimal("2.25")})
    assert out.states() == [{"f": 1.5, "d": 2.25}]


def test_hold_until_end_writes_only_at_the_final_flush() -> None:
    out = Out()
    checkpoint = Checkpoint(out)
    checkpoint.hold_until_end = True
    checkpoint.state({"s": 1})
    checkpoint.flush()
    assert out.states() == []
    checkpoint.flush(final=True)
    assert out.states() == [{"s": 1}]


def test_move_keeps_the_lowest_record_of_what_joins() -> None:
    out = Out()
    checkpoint = Checkpoint(out)
    part, early, late = object(), object(), object()
    checkpoint.open(early, arrive(checkpoint, 1))  # record 1
    checkpoint.state({"s": 1})
    checkpoint.open(late, arrive(checkpoint, 1))  # record 2
    checkpoint.state({"s": 2})
    checkpoint.move(early, part)  # the file holds record 1 ...
    checkpoint.move(late, part)  # ... then record 2 joins: the file stays open from 1
    checkpoint.flush()
    assert out.states() == [], "record 1 is in the file, not acknowledged"
    checkpoint.close(part)
    assert out.states() == [{"s": 2}]
    assert checkpoint.newest_state_position is None


def _job_log() -> tuple[list[str], Callable[[str], tuple[Callable, Callable]]]:
    log: list[str] = []

    def job(name: str) -> tuple[Callable, Callable]:
        def prepare() -> str:
            log.append(f"pack {name} on {threading.current_thread().name}")
            return name.upper()

        def send(prepared: str) -> None:
            log.append(f"send {prepared} on {threading.current_thread().name}")
        return prepare, send
    return log, job


def test_jobs_run_in_order_on_the_packer_and_sender_threads() -> None:
    out = Out()
    checkpoint = Checkpoint(out)
    uploader = Uploader(checkpoint)
    log, job = _job_log()
    first, second = object(), object()
    checkpoint.open(first, arrive(checkpoint, 1))
    checkpoint.open(second, arrive(checkpoint, 1))
    checkpoint.state({"s": 2})
    uploader.submit(first, *job("a"))
    uploader.submit(None, *job("b"))  # nothing to acknowledge
    uploader.submit(second, *job("c"))
    uploader.wait()
    uploader.close()
    assert [entry for entry in log if entry.startswith("send")] == [
        "send A on sender", "send B on sender", "send C on sender"]
    assert {entry for entry in log if entry.startswith("pack")} == {
        "pack a on packer", "pack b on packer", "pack c on packer"}
    assert out.states() == [{"s": 2}]


def test_a_failed_send_stops_later_jobs_and_is_raised_on_the_main_thread() -> None:
    out = Out()
    checkpoint = Checkpoint(out)
    uploader = Uploader(checkpoint)
    sent: list[str] = []
    token = object()
    checkpoint.open(token, arrive(checkpoint, 1))
    checkpoint.state({"s": 1})

    def fail(_: object) -> None:
        raise ApiError("refused")

    uploader.submit(token, lambda: None, fail)
    with pytest.raises(ApiError, match="refused"):
        uploader.wait()
    with pytest.raises(ApiError):
        uploader.submit(None, lambda: None, lambda _: sent.append("later"))
    uploader.close()
    assert sent == [] and out.states() == [], "no later job ran, no STATE past the failure"


def test_submit_blocks_while_the_pipeline_is_full_and_abort_drops_queued_jobs() -> None:
    uploader = Uploader(Checkpoint(Out()), depth=1)
    release = threading.Event()
    sent: list[int] = []
    uploader.submit(None, lambda: 0, lambda _: (release.wait(10), sent.append(0)))
    uploader.submit(None, lambda: 1, lambda n: sent.append(n))  # waits in the send queue
    uploader.submit(None, lambda: 2, lambda n: sent.append(n))  # packed, waits for the sender
    uploader.submit(None, lambda: 3, lambda n: sent.append(n))  # waits in the pack queue
    blocked = threading.Thread(target=uploader.submit,
                               args=(None, lambda: 4, lambda n: sent.append(n)))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive(), "a full pipeline makes the reader wait"
    release.set()
    blocked.join(10)
    uploader.wait()
    assert sent == [0, 1, 2, 3, 4]

    release.clear()
    started = threading.Event()
    uploader.submit(None, lambda: 5,
                    lambda _: (started.set(), release.wait(10), sent.append(5)))
    uploader.submit(None, lambda: 6, lambda n: sent.append(n))
    started.wait(10)
    threading.Timer(0.2, release.set).start()
    uploader.abort(timeout=10)
    assert sent == [0, 1, 2, 3, 4, 5], "the call in flight ends; queued jobs are dropped"
    uploader.raise_failure()  # an abort is not an error of its own
