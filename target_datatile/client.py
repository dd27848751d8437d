"""DataTile's Data Collector API, one method per route (see docs/datatile.md).

Routes under ``api_url`` (``https://<server>/api/v2``), header ``token: <API token>``:

- ``POST upload/{action}/{hash}``, multipart field ``dataset`` (the file, streamed from
  disk by the core's ``ApiSession.upload``): ``create`` into a folder, ``reload`` or
  ``append`` a database. The answer carries the processing job's id.
- the job's status route (assumed ``GET jobs/{job_id}``), polled until the job ends.

What the vendor's page leaves open (the job id field, the status route and its states, the
callback field, the busy and quota status codes) is an :class:`ApiShape` field, each one a
setting of the target with the default the sandbox implements.

Repeats: 429 (and a connection never made) are repeated for every upload; a ``reload`` is
also repeated after a dropped connection, a timeout or a 5xx, since it replaces the data.
An ``append`` or ``create`` whose answer was lost is not repeated (DataTile may have queued
it): the run stops with one line, and the rerun from the last STATE sends the stream again,
so those rows may land twice (at-least-once, as docs/datatile.md says).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import requests

from target_core.errors import ApiError, TargetError
from target_core.http import ApiSession, HttpStatusError, MultipartFile, poll

logger = logging.getLogger(__name__)

PLATFORM = "DataTile"
ACTIONS = ("create", "reload", "append")
FIRST_POLL_PAUSE = 0.05
"""Seconds before the second poll of a job; each later pause is 1.5 times the one before,
up to ``poll_interval`` (about 11 polls before the pauses reach 5 s)."""
CONTENT_TYPES = {".zsav": "application/x-spss-sav", ".sav": "application/x-spss-sav",
                 ".csv": "text/csv"}


@dataclass(frozen=True)
class ApiShape:
    """The parts of the API the vendor's page does not document, with assumed defaults."""

    job_id_field: str = "id"
    """Field of the upload's answer that holds the job id (``jobId`` and ``job_id`` are
    tried too when it is absent)."""
    job_status_route: str = "jobs/{job_id}"
    job_state_field: str = "status"
    job_success_states: tuple[str, ...] = ("completed",)
    job_failure_states: tuple[str, ...] = ("failed",)
    """Any other state means the job is still queued or running."""
    job_message_field: str = "message"
    database_hash_field: str = "database"
    """Field of the finished job that holds the database's hash (a new one after create)."""
    callback_field: str = "callback"
    """Multipart field that carries ``callback_url``."""
    busy_status_codes: tuple[int, ...] = (409, 423)
    """'Destination busy': a previous request to it still runs; waited out with backoff."""
    quota_status_codes: tuple[int, ...] = (402,)


@dataclass(frozen=True)
class Job:
    """One processing job as the status route reports it."""

    id: str
    state: str
    succeeded: bool
    failed: bool
    database_hash: str | None
    message: str | None

    @property
    def finished(self) -> bool:
        return self.succeeded or self.failed


class DataTileClient:
    """Calls the Data Collector API as the user whose token ``session`` sends."""

    def __init__(
        self,
        session: ApiSession,
        shape: ApiShape | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.session = session
        self.shape = shape or ApiShape()
        self._sleep, self._clock = sleep, clock

    # upload -------------------------------------------------------------------------------
    def upload(
        self,
        action: str,
        target_hash: str,
        path: Path,
        *,
        file_name: str | None = None,
        callback_url: str | None = None,
        busy_timeout: float = 3600.0,
    ) -> str:
        """Upload ``path`` (as ``file_name``: a ``create`` names the database after it) to
        ``upload/{action}/{target_hash}``; returns the job id.

        A busy destination (``busy_status_codes``) is waited out with backoff until
        ``busy_timeout`` seconds have passed; then it is an error that says so."""
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
        route = f"upload/{action}/{target_hash}"
        fields = {self.shape.callback_field: callback_url} if callback_url else {}
        upload = MultipartFile("dataset", Path(path), file_name or Path(path).name,
                               CONTENT_TYPES.get(Path(path).suffix.lower(),
                                                 "application/octet-stream"), fields)
        try:
            response = self.session.upload(
                route, upload, idempotent=action == "reload",
                busy_statuses=self.shape.busy_status_codes, busy_timeout=busy_timeout)
        except HttpStatusError as exc:
            if exc.status in self.shape.busy_status_codes:
                raise ApiError(
                    f"{PLATFORM} kept '{target_hash}' busy for {busy_timeout:.0f} s (HTTP "
                    f"{exc.status} on {route}): a previous load into it is still processing; "
                    "raise processing_timeout or try again later", exc.status) from None
            raise self._explain(exc, action, target_hash) from None
        return self._job_id(response, route)

    def _job_id(self, response: requests.Response, route: str) -> str:
        answer = _json_object(response, route)
        for field in dict.fromkeys((self.shape.job_id_field, "jobId", "job_id", "id")):
            value = answer.get(field)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
                if field != self.shape.job_id_field:
                    logger.info("%s: the job id came in field '%s' (job_id_field is '%s')",
                                PLATFORM, field, self.shape.job_id_field)
                return str(value)
        raise ApiError(f"{PLATFORM} accepted the upload to {route} but its answer has no job "
                       f"id in field '{self.shape.job_id_field}': set job_id_field")

    # job status ---------------------------------------------------------------------------
    def job(self, job_id: str) -> Job:
        """The job's current state (one GET of the status route; 429, 5xx and dropped
        connections are repeated by the session)."""
        route = self.shape.job_status_route.format(job_id=job_id)
        try:
            response = self.session.get(route)
        except HttpStatusError as exc:
            raise self._explain(exc, "status", job_id) from None
        answer = _json_object(response, route)
        state = str(answer.get(self.shape.job_state_field) or "")
        database = answer.get(self.shape.database_hash_field)
        message = answer.get(self.shape.job_message_field)
        return Job(
            id=job_id,
            state=state,
            succeeded=state in self.shape.job_success_states,
            failed=state in self.shape.job_failure_states,
            database_hash=str(database) if database else None,
            message=str(message) if message else None,
        )

    def wait_for_job(self, job_id: str, *, poll_interval: float, timeout: float) -> Job:
        """Poll until the job succeeds; raises on failure or after ``timeout`` seconds.

        The first poll comes right away and the next ones soon after (``FIRST_POLL_PAUSE``,
        then half as long again each time) up to ``poll_interval``: a small file's job ends
        in a fraction of a second, and waiting a whole interval for it would be most of a
        short run's time; a long job is still polled every ``poll_interval`` seconds."""
        deadline = self._clock() + timeout
        last_state = ["not yet reported"]

        def check() -> Job | None:
            job = self.job(job_id)
            if job.state != last_state[0]:
                logger.info("%s job %s: %s", PLATFORM, job_id, job.state or "(no state)")
                last_state[0] = job.state
            if job.succeeded:
                return job
            if job.failed:
                reason = f": {job.message}" if job.message else ""
                raise ApiError(f"{PLATFORM} processing job {job_id} {job.state}{reason}")
            if self._clock() >= deadline:
                raise TargetError(
                    f"{PLATFORM} processing job {job_id} did not finish within {timeout:g} s "
                    f"(last state: {last_state[0]}); raise processing_timeout, or check the "
                    "job in DataTile's Processing log")
            return None

        # the deadline is checked after each answer: poll's own timeout is only a backstop
        return poll(check, what=f"{PLATFORM} processing job {job_id}",
                    timeout=timeout + 2 * poll_interval + self.session.timeout,
                    interval=min(FIRST_POLL_PAUSE, poll_interval), max_interval=poll_interval,
                    sleep=self._sleep, clock=self._clock)

    # errors -------------------------------------------------------------------------------
    def _explain(self, exc: HttpStatusError, action: str, target_hash: str) -> ApiError:
        status, route = exc.status, exc.route
        if status in self.shape.quota_status_codes:
            return ApiError(f"{PLATFORM} refused {route} for quota (HTTP {status}): {exc.detail}. "
                            "Quotas differ per server: ask the DataTile administrator", status)
        what = "folder" if action == "create" else "database"
        messages = {
            401: f"{PLATFORM} refused the API token (HTTP 401 on {route}): check token (a newly "
                 "generated token invalidates the old ones)",
            403: f"{PLATFORM} denied {route} (HTTP 403): the token's user needs the Data "
                 f"collector and Database creator roles and Edit rights on {what} "
                 f"'{target_hash}'",
            404: f"{PLATFORM} has no {what} '{target_hash}' (HTTP 404 on {route}): check "
                 "database_map / folder_hash",
            413: f"{PLATFORM} refused the file as too large (HTTP 413 on {route}): {exc.detail}",
        }
        if action == "status":
            messages[404] = f"{PLATFORM} knows no job '{target_hash}' (HTTP 404 on {route}): " \
                            "check job_status_route and job_id_field"
        default = f"{PLATFORM} failed on {route} (HTTP {status}): {exc.detail}"
        return ApiError(messages.get(status, default), status)


def _json_object(response: requests.Response, route: str) -> dict[str, Any]:
    try:
        answer = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise ApiError(f"{PLATFORM} answered {route} with a body that is not JSON",
                       response.status_code) from None
    if not isinstance(answer, dict):
        raise ApiError(f"{PLATFORM} answered {route} with JSON that is not an object",
                       response.status_code)
    return answer
