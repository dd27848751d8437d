"""One HTTP session per target: timeouts, retries with backoff, Retry-After, a rate limit.

- Retries: 429, 500, 502, 503, 504, dropped connections and timeouts are retried with
  exponential backoff and full jitter (`backoff.expo`), up to `max_retries` times. A
  `Retry-After` header (seconds or an HTTP date) replaces the computed wait.
- Rate limit: at most `calls_per_minute` requests in any 60 s window, counted client-side
  across every thread and stream (Graphite Note enforces 10/minute per tenant). A call's
  slot is stamped when its answer arrives (the server counted it at some point before
  that) and the window is kept one `margin` second longer than the server's, so our own
  pacing never meets a 429 even when a big upload takes seconds to arrive.
- A refused connection before any answer (wrong port, nothing listening) fails at once:
  retrying a wrong `api_url` for minutes helps nobody. Every "did not answer" error names
  the host and port tried.
- Transport safety: plain `http://` is refused for any host but loopback, so a token never
  crosses a network unencrypted; sandbox URLs on 127.0.0.1 stay allowed.
- Safe repeats: a call that is not idempotent (POST by default) is repeated only when the
  platform cannot have acted on it: a 429, or a connection that was never made. GET, PUT
  and DELETE (and a POST the caller marks `idempotent=True`, e.g. a full reload) are also
  repeated after 5xx answers, timeouts and dropped connections.
- Busy destinations: `busy_statuses` (e.g. 409 "a previous job is still running") are
  waited out with backoff up to `busy_timeout` seconds, apart from the retry count.
- Files: `MultipartFile` streams a multipart/form-data body from disk (never the whole
  file in memory) and is reopened on every attempt; `put_file` PUTs a file to an absolute
  signed URL (e.g. S3) without the platform's auth headers, and logs no query string
  (where signatures travel).
- `poll` waits for a background job: it asks until the answer says done, up to a timeout.
- Redaction: error texts quoted from a response pass through the process redactor.
Answers that retrying cannot fix come back as `HttpStatusError` for the platform client
to turn into a message the user can act on.
"""

from __future__ import annotations

import email.utils
import io
import ipaddress
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

import backoff
import requests

from target_core.errors import ConfigError, TargetError
from target_core.redaction import REDACTOR

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 600.0
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
T = TypeVar("T")


class HttpStatusError(TargetError):
    """A non-retryable (or retries exhausted) HTTP answer."""

    def __init__(self, status: int, route: str, detail: str) -> None:
        super().__init__(f"HTTP {status} on {route}: {detail}")
        self.status = status
        self.route = route
        self.detail = detail


class RateLimiter:
    """At most `calls` calls in any `period` (+ `margin`) seconds: a sliding window.

    `acquire` takes a slot (waiting for one when needed) and stamps it with the time;
    `release` re-stamps the calling thread's slot when the call's answer has arrived. The
    server counted the call somewhere between those two moments, so the window measured
    from the later one is never shorter than the server's."""

    def __init__(
        self,
        calls: int,
        period: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        margin: float = 1.0,
    ) -> None:
        self.calls, self.period, self.margin = calls, period, margin
        self._clock, self._sleep = clock, sleep
        self._slots: deque[list[float]] = deque()
        self._lock = threading.Lock()
        self._mine = threading.local()
        self.waited_total = 0.0
        """Seconds spent waiting for a slot so far (all threads)."""

    def acquire(self) -> float:
        """Wait for a free slot; returns the seconds waited. `calls <= 0` means no limit."""
        if self.calls <= 0:
            return 0.0
        waited = 0.0
        window = self.period + self.margin
        with self._lock:
            while True:
                now = self._clock()
                while self._slots and now - min(self._slots)[0] >= window:
                    self._slots.remove(min(self._slots))
                if len(self._slots) < self.calls:
                    slot = [now]
                    self._slots.append(slot)
                    self._mine.slot = slot
                    self.waited_total += waited
                    return waited
                pause = window - (now - min(self._slots)[0])
                if waited == 0.0:
                    logger.info("Rate limit of %d calls per %.0f s reached: waiting %.1f s",
                                self.calls, self.period, pause)
                self._sleep(pause)
                waited += pause

    def release(self) -> None:
        """The calling thread's call has its answer: its slot counts from now."""
        slot = getattr(self._mine, "slot", None)
        if slot is not None:
            with self._lock:
                slot[0] = max(slot[0], self._clock())
            self._mine.slot = None


def check_url(url: str, setting: str) -> str:
    """The URL without a trailing slash; https, or http only to a loopback address."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{setting} must be an http(s) URL, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(
            f"{setting} uses plain http:// to {parts.hostname}: only https is allowed except "
            "for loopback addresses (127.0.0.1, localhost), so the token is never sent unencrypted"
        )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number or an HTTP date."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


@dataclass(frozen=True)
class MultipartFile:
    """A multipart/form-data body with one file part, streamed from disk.

    `fields` are plain form fields sent before the file. Each attempt opens the file again
    (`open_body`), so a retry sends the whole file, never the rest of a half-read one.
    """

    field: str
    path: Path
    file_name: str
    content_type: str = "application/octet-stream"
    fields: Mapping[str, str] = field(default_factory=dict)

    def open_body(self) -> tuple[StreamedBody, str]:
        """A fresh body and its Content-Type header (with the boundary)."""
        boundary = f"----target-core-{secrets.token_hex(12)}"
        head = b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(name)}"'
            f"\r\n\r\n{value}\r\n".encode()
            for name, value in self.fields.items()
        )
        head += (f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(self.field)}"; '
                 f'filename="{_quoted(self.file_name)}"\r\n'
                 f"Content-Type: {self.content_type}\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        body = StreamedBody([head, Path(self.path), tail])
        return body, f"multipart/form-data; boundary={boundary}"


def _quoted(text: str) -> str:
    """A form field or file name inside a quoted header parameter."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


class StreamedBody(io.RawIOBase):
    """Bytes and files read one after the other, with a known length (so requests sends a
    Content-Length and streams the body in blocks instead of loading it)."""

    def __init__(self, parts: list[bytes | Path]) -> None:
        super().__init__()
        self._parts = parts
        self._length = sum(len(p) if isinstance(p, bytes) else os.path.getsize(p) for p in parts)
        self._sources: Iterator[IO[bytes]] = self._open_each()
        self._current: IO[bytes] | None = next(self._sources, None)
        self._position = 0

    def _open_each(self) -> Iterator[IO[bytes]]:
        for part in self._parts:
            if isinstance(part, bytes):
                yield io.BytesIO(part)
            else:
                with part.open("rb") as handle:
                    yield handle

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        """Bytes read so far (requests takes `len - tell` as the Content-Length)."""
        return self._position

    def readinto(self, buffer: Any) -> int:
        while self._current is not None:
            count = self._current.readinto(buffer)  # type: ignore[attr-defined]
            if count:
                self._position += count
                return count
            self._current = next(self._sources, None)
        return 0

    def close(self) -> None:
        self._sources.close()  # closes an open file part
        super().close()


def _never_sent(exc: requests.RequestException) -> bool:
    """True when the request cannot have reached the platform (no connection was made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    text = repr(exc.args[0]) if exc.args else ""
    return isinstance(exc, requests.ConnectionError) and (
        "NewConnectionError" in text or "Connection refused" in text)


def poll(
    check: Callable[[], T | None],
    *,
    what: str,
    timeout: float,
    interval: float = 1.0,
    max_interval: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call `check` until it returns something other than None (a job finished), waiting
    `interval` seconds between calls, growing by half each time up to `max_interval`.

    `check` raises to stop early (a failed job). After `timeout` seconds: `TargetError`
    naming `what`."""
    deadline = clock() + timeout
    pause = interval
    while True:
        result = check()
        if result is not None:
            return result
        left = deadline - clock()
        if left <= 0:
            raise TargetError(f"{what} did not finish within {timeout:g} s")
        sleep(min(pause, left))
        pause = min(pause * 1.5, max_interval)


class ApiSession:
    """Calls one platform's API with the behaviour described in the module docstring."""

    def __init__(
        self,
        base_url: str,
        *,
        platform: str,
        headers: Mapping[str, str],
        timeout: float = 300.0,
        max_retries: int = 8,
        rate_limiter: RateLimiter | None = None,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.platform = platform
        self.timeout = timeout
        self.max_retries = max_retries
        self.rate_limiter = rate_limiter or RateLimiter(0)
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.session = requests.Session()
        self.session.headers.update(headers)
        self._bare = requests.Session()  # for signed URLs: no platform credentials
        self._bare.headers["User-Agent"] = self.session.headers.get("User-Agent", "target-core")
        self._sleep = sleep
        self.calls = 0
        self.last_duration = 0.0
        """Seconds the last attempt took, answer or not (for callers that adapt to it)."""
        self.answered = False
        """True once any call got an HTTP answer (then a refused connection is retried)."""
        parts = urlsplit(self.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.host_port = f"{parts.hostname}:{port}"

    def post(
        self, route: str, body: bytes, content_type: str = "application/json", *,
        idempotent: bool = True, **options: Any,
    ) -> requests.Response:
        """POST `body` to `route`; returns a 2xx response or raises `HttpStatusError`.

        Repeated like a safe call unless `idempotent=False` (see the module docstring)."""
        return self.request("POST", route, body=body, content_type=content_type,
                            idempotent=idempotent, **options)

    def get(self, route: str, params: Mapping[str, Any] | None = None,
            **options: Any) -> requests.Response:
        return self.request("GET", route, params=params, **options)

    def put(self, route: str, body: bytes, content_type: str = "application/json",
            **options: Any) -> requests.Response:
        return self.request("PUT", route, body=body, content_type=content_type, **options)

    def delete(self, route: str, params: Mapping[str, Any] | None = None,
               **options: Any) -> requests.Response:
        return self.request("DELETE", route, params=params, **options)

    def upload(self, route: str, upload: MultipartFile, *, idempotent: bool = False,
               **options: Any) -> requests.Response:
        """POST a multipart file, streamed from disk and reopened on each attempt."""
        return self.request("POST", route, multipart=upload, idempotent=idempotent, **options)

    def put_file(self, url: str, path: Path, content_type: str,
                 **options: Any) -> requests.Response:
        """PUT a file to an absolute (signed) URL, streamed, without the platform's headers.

        Only the URL's host and path appear in logs and errors: signed URLs carry their
        signature in the query string."""
        return self.request("PUT", url, file=Path(path), content_type=content_type,
                            absolute=True, **options)

    def request(
        self,
        method: str,
        route: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        multipart: MultipartFile | None = None,
        file: Path | None = None,
        headers: Mapping[str, str] | None = None,
        absolute: bool = False,
        idempotent: bool | None = None,
        busy_statuses: Collection[int] = (),
        busy_timeout: float = 0.0,
    ) -> requests.Response:
        """One call with retries; a 2xx (or 3xx) response, or `HttpStatusError`.

        `route` is relative to the base URL, or with `absolute=True` a full URL that gets
        none of the session's headers. Exactly one of `body`, `multipart`, `file` (a file
        streamed as the whole body) may be given. `idempotent` defaults by method."""
        method = method.upper()
        if absolute:
            url = check_url(route, "a URL from the platform")
            split = urlsplit(url)
            shown = f"{split.scheme}://{split.netloc}{split.path}"
            session = self._bare
        else:
            url, shown, session = f"{self.base_url}/{route.lstrip('/')}", route, self.session
        safe = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        waits = backoff.expo(base=2, factor=self.backoff_base, max_value=self.backoff_max)
        next(waits)  # the generator's first value is a placeholder
        busy_until = time.monotonic() + busy_timeout
        attempt = 0
        while True:
            attempt += 1
            self.rate_limiter.acquire()
            started = time.monotonic()
            self.calls += 1
            data, sent_headers = self._body(body, content_type, multipart, file, headers)
            try:
                response = session.request(method, url, params=params, data=data,
                                           headers=sent_headers, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem, response = f"{type(exc).__name__} (no answer)", None
                repeatable = safe or _never_sent(exc)
                if not self.answered and _refused(exc) and not absolute:
                    raise TargetError(
                        f"{self.platform} did not answer on {shown} at {self.host_port}: "
                        "connection refused (nothing listens there: check api_url)") from None
            else:
                self.answered = True
                logger.debug("%s %s -> %d in %.2f s", method, shown, response.status_code,
                             time.monotonic() - started)
                status = response.status_code
                if status < 400:
                    return response
                if status in busy_statuses and time.monotonic() < busy_until:
                    told = retry_after_seconds(response.headers.get("Retry-After"))
                    pause = next(waits) if told is None else told
                    pause = min(pause, max(busy_until - time.monotonic(), 0.0))
                    logger.info("%s is busy (HTTP %d on %s): waiting %.1f s", self.platform,
                                status, shown, pause)
                    self._sleep(pause)
                    attempt -= 1  # waiting for a busy destination is not a failed attempt
                    continue
                if status not in RETRY_STATUSES:
                    raise HttpStatusError(status, shown, self._detail(response))
                problem = f"HTTP {status}"
                repeatable = safe or status == 429
            finally:
                if isinstance(data, io.IOBase):
                    data.close()
                self.rate_limiter.release()
                self.last_duration = time.monotonic() - started
            where = urlsplit(url).netloc if absolute else self.host_port
            if attempt > self.max_retries or not repeatable:
                if response is not None:
                    raise HttpStatusError(response.status_code, shown, self._detail(response))
                again = "" if repeatable else " (not repeated: the platform may have acted on it)"
                raise TargetError(f"{self.platform} did not answer on {shown} at {where} after "
                                  f"{attempt} attempt{'s' if attempt > 1 else ''}: "
                                  f"{problem}{again}")
            pause = backoff.full_jitter(next(waits))
            if response is not None:
                told = retry_after_seconds(response.headers.get("Retry-After"))
                pause = pause if told is None else told
            logger.warning("%s from %s on %s at %s; retry %d of %d in %.1f s", problem,
                           self.platform, shown, where, attempt, self.max_retries, pause)
            self._sleep(pause)

    @staticmethod
    def _body(
        body: bytes | None, content_type: str | None, multipart: MultipartFile | None,
        file: Path | None, headers: Mapping[str, str] | None,
    ) -> tuple[Any, dict[str, str]]:
        sent = dict(headers or {})
        if multipart is not None:
            data, sent["Content-Type"] = multipart.open_body()
            return data, sent
        if content_type is not None:
            sent["Content-Type"] = content_type
        if file is not None:
            return StreamedBody([file]), sent
        return body, sent

    @staticmethod
    def _detail(response: requests.Response) -> str:
        text = " ".join(response.text.split())[:300] or response.reason or "no details"
        return REDACTOR(text)


def _refused(exc: BaseException) -> bool:
    """Whether a requests error was caused by a refused TCP connection."""
    seen: BaseException | None = exc
    for _ in range(10):  # requests -> urllib3 -> socket: a short chain
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError):
            return True
        reason = getattr(seen, "reason", None)
        nested = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        seen = reason if isinstance(reason, BaseException) else nested or seen.__cause__ \
            or seen.__context__
    return False
