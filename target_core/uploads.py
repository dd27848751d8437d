"""Batches go to the platform on two background threads while the main thread keeps reading.

Parsing and validating hold the GIL on the main thread. The other core gets the rest, as a
two-stage pipeline: a *packer* thread prepares the next batch (compression: zlib releases
the GIL) while a *sender* thread waits on the platform's answer to the previous one.
Batches are sent one at a time, in the order they were handed over (platforms want fills
of one dataset in order, and the first fill of a replace run must land first). Each queue
is bounded: when the platform is slower than the tap, the reader waits instead of
buffering the stream in memory (at most `depth` + 2 batches exist at once, besides the
one the reader fills). One waiting batch is enough to keep both stages busy; with batches
sized by a request budget (tens of MB of rows each), each one more would cost ~20 MB.

A job that fails for good stops both stages; later batches are dropped unsent and the error
is raised on the main thread at its next hand-over or wait, so the run ends non-zero and no
later STATE is written.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Hashable
from typing import Any

from target_core.checkpoint import Checkpoint

Prepare = Callable[[], Any]
Send = Callable[[Any], None]
Token = Hashable | None
"""What the checkpoint closes when a job's send returns; None: nothing (a job that only
writes to a file, or that closes checkpoint entries itself)."""


class _Aborted(Exception):
    """Marks a pipeline stopped by `abort`: later jobs are dropped like after a failure."""


class Uploader:
    """Runs (prepare, send) jobs in order; each sent job is acknowledged to the checkpoint."""

    def __init__(self, checkpoint: Checkpoint, depth: int = 1) -> None:
        self._checkpoint = checkpoint
        self._to_pack: queue.Queue[tuple[Token, Prepare, Send] | None] = queue.Queue(depth)
        self._to_send: queue.Queue[tuple[Token, Send, Any] | None] = queue.Queue(1)
        self._error: BaseException | None = None
        self._cancelled = False
        self._threads: list[threading.Thread] = []

    def submit(self, token: Token, prepare: Prepare, send: Send) -> None:
        """Queue a job; blocks while the pipeline is full. Raises an earlier failure."""
        self.raise_failure()
        if self._cancelled:
            return
        if not self._threads:
            self._threads = [threading.Thread(target=run, name=name, daemon=True)
                             for name, run in (("packer", self._pack), ("sender", self._send))]
            for thread in self._threads:
                thread.start()
        while True:
            try:
                self._to_pack.put((token, prepare, send), timeout=0.5)
                return
            except queue.Full:
                self.raise_failure()
                if self._cancelled:
                    return

    def wait(self) -> None:
        """Block until every queued job is sent; raise the failure if one failed."""
        if self._threads:
            self._to_pack.join()  # everything packed is in the send queue by then
            self._to_send.join()
        self.raise_failure()

    def cancel(self) -> None:
        """Send nothing more: queued jobs are dropped, new ones ignored (a signal cut the
        run and nothing sent now could be checkpointed). A call in flight is not cut."""
        self._cancelled = True

    def close(self) -> None:
        if self._threads:
            self._to_pack.put(None)
            for thread in self._threads:
                thread.join()
            self._threads = []

    def abort(self, timeout: float = 5.0) -> None:
        """The run failed or was interrupted: drop every queued job unsent and stop.

        A call already in flight is not cut; its thread gets `timeout` seconds to end (the
        threads are daemons, so they never keep the process alive)."""
        if self._error is None:
            self._error = _Aborted("the upload pipeline was stopped")
        if self._threads:
            try:
                self._to_pack.put(None, timeout=timeout)
            except queue.Full:
                return
            for thread in self._threads:
                thread.join(timeout)
            self._threads = []

    def raise_failure(self) -> None:
        if self._error is not None and not isinstance(self._error, _Aborted):
            raise self._error

    def _pack(self) -> None:
        while (job := self._to_pack.get()) is not None:
            token, prepare, send = job
            try:
                if self._error is None and not self._cancelled:  # else dropped unsent
                    self._to_send.put((token, send, prepare()))
            except BaseException as exc:
                self._error = exc
            finally:
                self._to_pack.task_done()
        self._to_pack.task_done()
        self._to_send.put(None)

    def _send(self) -> None:
        while (job := self._to_send.get()) is not None:
            token, send, prepared = job
            try:
                if self._error is None and not self._cancelled:
                    send(prepared)
                    if token is not None:
                        self._checkpoint.close(token)
            except BaseException as exc:
                self._error = exc
            finally:
                self._to_send.task_done()
        self._to_send.task_done()
