"""Batches go to the platform on a second thread while the main thread keeps reading.

Parsing and validating hold the GIL; compression (zlib) and waiting on the network release
it, so one uploader thread puts the second core to work. Batches are sent one at a time in
the order they were handed over (platforms want fills of one dataset in order, and the
first fill of a replace run must land first). The queue holds at most `depth` batches:
when the platform is slower than the tap, the reader waits instead of buffering the whole
stream in memory.

An upload that fails for good stops the uploader; the error is raised on the main thread
at its next hand-over or wait, so the run ends non-zero and no later STATE is written.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Hashable

from target_core.checkpoint import Checkpoint

logger = logging.getLogger(__name__)

Job = tuple[Hashable, Callable[[], None]]


class Uploader:
    """One background thread running upload jobs in order, acknowledging each to the checkpoint."""

    def __init__(self, checkpoint: Checkpoint, depth: int = 2) -> None:
        self._checkpoint = checkpoint
        self._jobs: queue.Queue[Job | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def submit(self, token: Hashable, job: Callable[[], None]) -> None:
        """Queue a job; blocks while `depth` jobs are waiting. Raises an earlier failure."""
        self.raise_failure()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="uploader", daemon=True)
            self._thread.start()
        while True:
            try:
                self._jobs.put((token, job), timeout=0.5)
                return
            except queue.Full:
                self.raise_failure()

    def wait(self) -> None:
        """Block until every queued job is done; raise the failure if one failed."""
        if self._thread is not None:
            self._jobs.join()
        self.raise_failure()

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()
            self._thread = None

    def raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            token, job = item
            try:
                if self._error is None:  # after a failure, later batches are dropped unsent
                    job()
                    self._checkpoint.close(token)
            except BaseException as exc:
                self._error = exc
            finally:
                self._jobs.task_done()
        self._jobs.task_done()
