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
- Redaction: error texts quoted from a response pass through the process redactor.
Answers that retrying cannot fix come back as `HttpStatusError` for the platform client
to turn into a message the user can act on.
"""

from __future__ import annotations

import email.utils
import ipaddress
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from urllib.parse import urlsplit

import backoff
import requests

from target_core.errors import ConfigError, TargetError
from target_core.redaction import REDACTOR

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 600.0


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


class ApiSession:
    """POSTs to one platform's API with the behaviour described in the module docstring."""

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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.platform = platform
        self.timeout = timeout
        self.max_retries = max_retries
        self.rate_limiter = rate_limiter or RateLimiter(0)
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.session = requests.Session()
        self.session.headers.update(headers)
        self.calls = 0
        self.last_duration = 0.0
        """Seconds the last attempt took, answer or not (for callers that adapt to it)."""
        self.answered = False
        """True once any call got an HTTP answer (then a refused connection is retried)."""
        parts = urlsplit(self.base_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.host_port = f"{parts.hostname}:{port}"

    def post(
        self, route: str, body: bytes, content_type: str = "application/json"
    ) -> requests.Response:
        """POST `body` to `route`; returns a 2xx response or raises `HttpStatusError`."""
        url = f"{self.base_url}/{route.lstrip('/')}"
        waits = backoff.expo(base=2, factor=self.backoff_base, max_value=self.backoff_max)
        next(waits)  # the generator's first value is a placeholder
        attempt = 0
        while True:
            attempt += 1
            self.rate_limiter.acquire()
            started = time.monotonic()
            self.calls += 1
            try:
                response = self.session.post(
                    url, data=body, headers={"Content-Type": content_type}, timeout=self.timeout
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem, response = f"{type(exc).__name__} (no answer)", None
                if not self.answered and _refused(exc):
                    raise TargetError(
                        f"{self.platform} did not answer on {route} at {self.host_port}: "
                        "connection refused (nothing listens there: check api_url)") from None
            else:
                self.answered = True
                logger.debug("POST %s -> %d in %.2f s (%d bytes sent)", route,
                             response.status_code, time.monotonic() - started, len(body))
                if response.status_code < 400:
                    return response
                if response.status_code not in RETRY_STATUSES:
                    raise HttpStatusError(response.status_code, route, self._detail(response))
                problem = f"HTTP {response.status_code}"
            finally:
                self.rate_limiter.release()
                self.last_duration = time.monotonic() - started
            if attempt > self.max_retries:
                if response is not None:
                    raise HttpStatusError(response.status_code, route, self._detail(response))
                raise TargetError(f"{self.platform} did not answer on {route} at "
                                  f"{self.host_port} after {attempt} attempts: {problem}")
            pause = backoff.full_jitter(next(waits))
            if response is not None:
                told = retry_after_seconds(response.headers.get("Retry-After"))
                pause = pause if told is None else told
            logger.warning("%s from %s on %s at %s; retry %d of %d in %.1f s", problem,
                           self.platform, route, self.host_port, attempt, self.max_retries, pause)
            time.sleep(pause)

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
