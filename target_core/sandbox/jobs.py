"""Background jobs: work an emulated platform finishes some time after it answered.

File platforms queue an upload and hand back a job id to poll (DataTile's processing job,
a warehouse load). `Jobs.start` runs the work on a thread after a delay; the job reads
``queued``, then ``running``, then ``succeeded`` (with the work's result) or ``failed``
(with the message of the `JobFailed` it raised). The delay is what lets a test catch a
target between its upload and the confirmation; ``reset`` cancels what has not run.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


class JobFailed(Exception):
    """Raised by a job's work: the job ends ``failed`` with this message."""


@dataclass
class Job:
    id: str
    kind: str
    state: str = "queued"
    """queued, running, succeeded or failed."""
    result: Any = None
    error: str | None = None
    created: float = 0.0
    finished: float | None = None

    @property
    def done(self) -> bool:
        return self.state in ("succeeded", "failed")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "done": self.done}


class Jobs:
    """An emulator's jobs, by id (kept in memory: a restarted sandbox forgets them)."""

    def __init__(self, prefix: str = "job") -> None:
        self._prefix = prefix
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._cancel = threading.Event()

    def start(self, kind: str, work: Callable[[], Any], delay: float = 0.0) -> Job:
        """Queue `work`; it runs on its own thread after `delay` seconds."""
        with self._lock:
            job = Job(f"{self._prefix}-{next(self._ids)}", kind, created=time.time())
            self._jobs[job.id] = job
            cancel = self._cancel
        threading.Thread(target=self._run, args=(job, work, delay, cancel), daemon=True,
                         name=f"sandbox-{job.id}").start()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def wait(self, job_id: str, timeout: float = 30.0) -> Job:
        """Block until the job is done (for tests and emulators that answer synchronously)."""
        deadline = time.monotonic() + timeout
        while (job := self.get(job_id)) is not None and not job.done:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{job_id} still {job.state} after {timeout} s")
            time.sleep(0.01)
        if job is None:
            raise KeyError(job_id)
        return job

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return [job.to_json() for job in self._jobs.values()]

    def reset(self) -> None:
        """Forget every job; those not yet started never run."""
        with self._lock:
            self._cancel.set()
            self._cancel = threading.Event()
            self._jobs.clear()

    def _run(self, job: Job, work: Callable[[], Any], delay: float,
             cancel: threading.Event) -> None:
        if cancel.wait(delay):
            return
        with self._lock:
            job.state = "running"
        try:
            result = work()
        except JobFailed as exc:
            state, result, error = "failed", None, str(exc)
        except Exception as exc:
            state, result, error = "failed", None, f"internal error: {type(exc).__name__}"
        else:
            state, error = "succeeded", None
        with self._lock:
            job.state, job.result, job.error, job.finished = state, result, error, time.time()
