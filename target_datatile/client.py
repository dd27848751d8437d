"""DataTile's Data Collector API, one method per route (see docs/datatile.md).

Routes under ``api_url`` (``https://<server>/api/v2``), header ``token: <API token>``:

- ``POST upload/{action}/{hash}``, multipart field ``dataset`` (the file, streamed from
  disk): ``create`` into a folder, ``reload`` or ``append`` a database. The answer carries the
  processing job's id.
- the job's status route (assumed ``GET jobs/{job_id}``), polled until the job ends.

What the vendor's page leaves open (the job id field, the status route and its states, the
callback field, the busy and quota status codes) is an :class:`ApiShape` field, each one a
setting of the target with the default the sandbox implements.

TODO(issue 14): ``target_core.http.ApiSession`` only POSTs bytes today. Uploads go through a
one-attempt ``ApiSession`` and are retried here, so each attempt reopens the file; polls use
the session's ``requests.Session`` directly. Move both onto the core's multipart upload
("reopened on each retry") and GET / poll-while-busy helpers when they land.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import backoff
import orjson
import requests
from requests_toolbelt import MultipartEncoder

from target_core.errors import ApiError, TargetError
from target_core.http import RETRY_STATUSES, ApiSession, HttpStatusError

logger = logging.getLogger(__name__)

PLATFORM = "DataTile"
ACTIONS = ("create", "reload", "append")
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


class _StreamedBody:
    """A multipart body read from disk as requests sends it; ``len()`` gives Content-Length
    (the sandbox and many servers refuse chunked uploads)."""

    def __init__(self, encoder: MultipartEncoder) -> None:
        self._encoder = encoder

    def __len__(self) -> int:
        return self._encoder.len

    def read(self, size: int = -1) -> bytes:
        return self._encoder.read(size)


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
        # one attempt per call: the retry loop below reopens the file each time
        self._single_attempt = ApiSession(
            session.base_url,
            platform=session.platform,
            headers=dict(session.session.headers),
            timeout=session.timeout,
            max_retries=0,
            rate_limiter=session.rate_limiter,
        )

    # upload -------------------------------------------------------------------------------
    def upload(
        self,
        action: str,
        target_hash: str,
        path: Path,
        *,
        callback_url: str | None = None,
        busy_timeout: float = 3600.0,
        busy_wait: float = 5.0,
    ) -> str:
        """Upload ``path`` to ``upload/{action}/{target_hash}``; returns the job id.

        A busy destination is retried with backoff (from ``busy_wait`` s, doubling, at most
        60 s apart) until ``busy_timeout`` s have passed. 429, 5xx and dropped connections
        are retried up to the session's ``max_retries``: a ``reload`` replaces, so a repeat
        is harmless; a repeated ``append`` or ``create`` may load the file twice if the lost
        answer had accepted it (at-least-once, as docs/datatile.md says).
        """
        if action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
        route = f"upload/{action}/{target_hash}"
        started = self._clock()
        busy_waits = backoff.expo(base=2, factor=busy_wait, max_value=60.0)
        retry_waits = backoff.expo(base=2, factor=self.session.backoff_base,
                                   max_value=self.session.backoff_max)
        next(busy_waits), next(retry_waits)  # the generators' first values are placeholders
        retries = 0
        while True:
            try:
                response = self._post_file(route, path, callback_url)
            except HttpStatusError as exc:
                if exc.status in self.shape.busy_status_codes:
                    pause = min(next(busy_waits), max(0.0, started + busy_timeout - self._clock()))
                    if pause <= 0:
                        raise ApiError(
                            f"{PLATFORM} kept '{target_hash}' busy for {busy_timeout:.0f} s "
                            f"(HTTP {exc.status} on {route}): a previous load into it is still "
                            "processing; raise processing_timeout or try again later",
                            exc.status) from None
                    logger.info("%s: '%s' is busy with a previous job; trying again in %.0f s",
                                PLATFORM, target_hash, pause)
                    self._sleep(pause)
                    continue
                if exc.status not in RETRY_STATUSES or retries >= self.session.max_retries:
                    raise self._explain(exc, action, target_hash) from None
                problem = f"HTTP {exc.status}"
            except TargetError as exc:  # no answer at all (dropped connection, timeout)
                if retries >= self.session.max_retries:
                    raise TargetError(f"{PLATFORM} did not answer the upload to {route} after "
                                      f"{retries + 1} attempts") from exc
                problem = "no answer"
                if action != "reload":
                    logger.warning("%s: retrying an %s after %s: if the lost answer had "
                                   "accepted it, the file is loaded twice", PLATFORM, action,
                                   problem)
            else:
                return self._job_id(response, route)
            retries += 1
            pause = backoff.full_jitter(next(retry_waits))
            logger.warning("%s from %s on %s; retry %d of %d in %.1f s", problem, PLATFORM,
                           route, retries, self.session.max_retries, pause)
            self._sleep(pause)

    def _post_file(self, route: str, path: Path, callback_url: str | None) -> requests.Response:
        with path.open("rb") as handle:  # reopened for every attempt
            fields: dict[str, Any] = {
                "dataset": (path.name, handle,
                            CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")),
            }
            if callback_url:
                fields[self.shape.callback_field] = callback_url
            encoder = MultipartEncoder(fields=fields)
            return self._single_attempt.post(route, _StreamedBody(encoder),  # type: ignore[arg-type]
                                             encoder.content_type)

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
        """The job's current state (one GET of the status route)."""
        route = self.shape.job_status_route.format(job_id=job_id)
        self.session.rate_limiter.acquire()
        try:
            response = self.session.session.get(
                f"{self.session.base_url}/{route.lstrip('/')}", timeout=self.session.timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _PollProblem(f"{type(exc).__name__} (no answer)") from None
        if response.status_code in RETRY_STATUSES:
            raise _PollProblem(f"HTTP {response.status_code}")
        if response.status_code >= 400:
            raise self._explain(
                HttpStatusError(response.status_code, route, ApiSession._detail(response)),
                "status", job_id)
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

        A poll that gets no answer, a 429 or a 5xx is simply repeated at the next interval.
        """
        deadline = self._clock() + timeout
        last_state = "not yet reported"
        while True:
            try:
                job = self.job(job_id)
            except _PollProblem as exc:
                logger.warning("%s: polling job %s: %s; polling on", PLATFORM, job_id, exc)
            else:
                if job.state != last_state:
                    logger.info("%s job %s: %s", PLATFORM, job_id, job.state or "(no state)")
                    last_state = job.state
                if job.succeeded:
                    return job
                if job.failed:
                    reason = f": {job.message}" if job.message else ""
                    raise ApiError(f"{PLATFORM} processing job {job_id} {job.state}{reason}")
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise TargetError(
                    f"{PLATFORM} processing job {job_id} did not finish within {timeout:.0f} s "
                    f"(last state: {last_state}); raise processing_timeout, or check the job "
                    "in DataTile's Processing log")
            self._sleep(min(poll_interval, remaining))

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


class _PollProblem(Exception):
    """A poll that may simply be repeated (no answer, 429, 5xx)."""


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
