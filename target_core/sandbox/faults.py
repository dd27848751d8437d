"""Fault injection: rules that make the next matching requests fail the way real networks do.

Tests of retry, backoff and "nothing acknowledged is lost" need failures on demand: an error
status (with or without Retry-After), a connection closed with no answer before the emulator
saw the request, a connection closed *after* the emulator applied it (the answer lost on the
way back: the client cannot tell, retries, and the change is applied twice), or a slow
answer. Rules are consumed (``times``), first added first used.
"""

from __future__ import annotations

import fnmatch
import math
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

_KNOWN_KEYS = frozenset({"path", "method", "status", "retry_after", "drop", "drop_after",
                         "delay", "times", "body"})
_PATTERN_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class FaultRule:
    """One rule: which requests (``path``: exact, or a glob pattern such as
    ``/datatile/api/v2/upload/*``; None = any API path; ``method``: None = any) and what
    to do to ``times`` of them.

    ``delay`` is applied first (seconds), then ``drop`` (close the socket, no answer) or
    ``status`` (answer that status, with ``Retry-After`` when ``retry_after`` is set, and
    ``body`` instead of the emulator's error body when given: e.g. a 200 that claims fewer
    rows than were sent). The emulator never sees a request a rule answers. ``drop_after``
    is the exception: the emulator handles the request (a fill is stored), then the socket
    is closed with no answer.
    """

    path: str | None = None
    status: int | None = None
    retry_after: float | None = None
    drop: bool = False
    delay: float = 0.0
    times: int = 1
    body: dict[str, Any] | None = None
    method: str | None = None
    drop_after: bool = False

    @classmethod
    def from_json(cls, data: Any) -> FaultRule:
        """Build a rule from its JSON form; raises ValueError with a readable reason."""
        if not isinstance(data, Mapping):
            raise ValueError("a fault must be a JSON object")
        unknown = set(data) - _KNOWN_KEYS
        if unknown:
            raise ValueError(f"unknown fault keys: {', '.join(sorted(unknown))}")
        path = data.get("path")
        if path is not None and (not isinstance(path, str) or not path.startswith("/")):
            raise ValueError("fault path must be a string starting with '/'")
        method = data.get("method")
        if method is not None and (not isinstance(method, str) or not method.isalpha()):
            raise ValueError("fault method must be an HTTP method name, e.g. PUT")
        status = data.get("status")
        if status is not None and (not _is_int(status) or not 100 <= status <= 599):
            raise ValueError("fault status must be an integer from 100 to 599")
        retry_after = _number(data, "retry_after")
        delay = _number(data, "delay") or 0.0
        drop = data.get("drop", False)
        drop_after = data.get("drop_after", False)
        if not isinstance(drop, bool) or not isinstance(drop_after, bool):
            raise ValueError("fault drop and drop_after must be true or false")
        if drop_after and (drop or status is not None):
            raise ValueError("a drop_after fault applies the request, then drops: no status "
                             "or drop with it")
        times = data.get("times", 1)
        if not _is_int(times) or times < 1:
            raise ValueError("fault times must be an integer >= 1")
        if drop and status is not None:
            raise ValueError("a fault either drops the connection or answers a status, not both")
        if retry_after is not None and status is None:
            raise ValueError("fault retry_after needs a status")
        body = data.get("body")
        if body is not None and (not isinstance(body, dict) or status is None):
            raise ValueError("fault body must be a JSON object, given with a status")
        if not drop and not drop_after and status is None and delay <= 0:
            raise ValueError("a fault needs one of status, drop, drop_after or delay")
        return cls(path, status, retry_after, drop, delay, times, body,
                   method.upper() if method else None, drop_after)

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method.upper():
            return False
        if self.path is None or self.path == path:
            return True
        return bool(_PATTERN_CHARS & set(self.path)) and fnmatch.fnmatchcase(path, self.path)

    def retry_after_header(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(math.ceil(self.retry_after))}

    def label(self) -> str:
        """Short description for the request log, e.g. ``status=503`` or ``delay=2.5+drop``."""
        parts = []
        if self.delay > 0:
            parts.append(f"delay={self.delay:g}")
        if self.drop:
            parts.append("drop")
        if self.drop_after:
            parts.append("applied+drop")
        if self.status is not None:
            parts.append(f"status={self.status}")
        return "+".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value not in (None, False)}


class FaultPlan:
    """The active rules, shared by all handler threads."""

    def __init__(self, rules: list[FaultRule] | None = None):
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = list(rules or [])

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, method: str, path: str) -> FaultRule | None:
        """The first rule matching the request, with one of its ``times`` used up."""
        with self._lock:
            for index, rule in enumerate(self._rules):
                if rule.matches(method, path):
                    if rule.times <= 1:
                        del self._rules[index]
                    else:
                        self._rules[index] = replace(rule, times=rule.times - 1)
                    return rule
        return None

    def active(self) -> list[dict[str, Any]]:
        with self._lock:
            return [rule.to_json() for rule in self._rules]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(data: Mapping[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"fault {key} must be a number >= 0")
    return float(value)
