"""The limits every emulated API enforces before its own checks: body size and request rate.

Real platforms refuse big payloads (413) and too many calls (429 + Retry-After); a target must
handle both, so the sandbox enforces them too, with values a test can change at runtime.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
RATE_WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Limits:
    """``rate_limit_per_minute`` 0 means no rate limit."""

    rate_limit_per_minute: int = 0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __post_init__(self) -> None:
        for key in ("rate_limit_per_minute", "max_body_bytes"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{key} must be an integer >= 0")

    def updated(self, changes: Mapping[str, Any]) -> Limits:
        unknown = set(changes) - {"rate_limit_per_minute", "max_body_bytes"}
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
        return replace(self, **changes)

    def to_json(self) -> dict[str, int]:
        return {
            "rate_limit_per_minute": self.rate_limit_per_minute,
            "max_body_bytes": self.max_body_bytes,
        }


class LimitSettings:
    """The current :class:`Limits`, swapped whole so a handler never sees half an update."""

    def __init__(self, limits: Limits):
        self._lock = threading.Lock()
        self._limits = limits

    def get(self) -> Limits:
        return self._limits

    def update(self, changes: Mapping[str, Any]) -> Limits:
        with self._lock:
            self._limits = self._limits.updated(changes)
            return self._limits


class SlidingWindowLimiter:
    """At most ``limit`` admitted requests per key in any 60 s window.

    Refused requests do not count, so a client that waits ``Retry-After`` seconds gets in.
    """

    def __init__(
        self,
        window_seconds: float = RATE_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._window = window_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._hits: dict[str, deque[float]] = {}

    def admit(self, key: str, limit: int) -> int:
        """0 when admitted, else whole seconds until a slot frees (at least 1)."""
        if limit <= 0:
            return 0
        now = self._clock()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self._window:
                hits.popleft()
            if len(hits) < limit:
                hits.append(now)
                return 0
            return max(1, math.ceil(hits[-limit] + self._window - now))

    def clear(self) -> None:
        with self._lock:
            self._hits.clear()
