"""The ``/_sandbox/*`` endpoints tests and users drive the sandbox with (no auth: loopback only).

| route | does |
|---|---|
| ``GET /_sandbox/health`` | ``{"ok": true}`` |
| ``GET /_sandbox/state?max_rows=N`` | what ``target-sandbox show`` prints |
| ``POST /_sandbox/settings`` | change ``rate_limit_per_minute`` / ``max_body_bytes`` |
| ``POST /_sandbox/reset`` | wipe every emulator's data and the request log |
| ``GET /_sandbox/requests?last=N`` | the request log, oldest first |
| ``GET/POST/DELETE /_sandbox/faults`` | list / add (object or list) / clear fault rules |
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from target_core.sandbox.emulator import ApiError, Reply, default_error_body
from target_core.sandbox.faults import FaultPlan, FaultRule
from target_core.sandbox.limits import LimitSettings, SlidingWindowLimiter
from target_core.sandbox.registry import EmulatorRegistry
from target_core.sandbox.requestlog import RequestLog

CONTROL_PREFIX = "/_sandbox"


class ControlApi:
    def __init__(
        self,
        registry: EmulatorRegistry,
        faults: FaultPlan,
        settings: LimitSettings,
        limiter: SlidingWindowLimiter,
        log: RequestLog,
    ):
        self._registry = registry
        self._faults = faults
        self._settings = settings
        self._limiter = limiter
        self._log = log
        self._routes = {
            ("GET", "/health"): self._health,
            ("GET", "/state"): self._state,
            ("GET", "/settings"): self._get_settings,
            ("POST", "/settings"): self._post_settings,
            ("POST", "/reset"): self._reset,
            ("GET", "/requests"): self._requests,
            ("GET", "/faults"): self._get_faults,
            ("POST", "/faults"): self._post_faults,
            ("DELETE", "/faults"): self._delete_faults,
        }

    @staticmethod
    def owns(path: str) -> bool:
        return path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/")

    def handle(self, method: str, path: str, query: Mapping[str, str], body: bytes) -> Reply:
        sub_path = path[len(CONTROL_PREFIX) :] or "/"
        handler = self._routes.get((method, sub_path))
        try:
            if handler is None:
                if any(route == sub_path for _, route in self._routes):
                    raise ApiError(405, f"method {method} not allowed on {path}")
                raise ApiError(404, f"no control route {path}")
            return handler(query, body)
        except ApiError as exc:
            return Reply(exc.status, default_error_body(exc.status, exc.message), exc.headers)

    # routes ---------------------------------------------------------------------------------
    def _health(self, query: Mapping[str, str], body: bytes) -> Reply:
        return Reply(200, {"ok": True})

    def _state(self, query: Mapping[str, str], body: bytes) -> Reply:
        return Reply(200, self._registry.snapshot(_int_param(query, "max_rows")))

    def _get_settings(self, query: Mapping[str, str], body: bytes) -> Reply:
        return Reply(200, self._settings.get().to_json())

    def _post_settings(self, query: Mapping[str, str], body: bytes) -> Reply:
        changes = _json(body)
        if not isinstance(changes, dict):
            raise ApiError(400, "settings must be a JSON object")
        try:
            limits = self._settings.update(changes)
        except (TypeError, ValueError) as exc:
            raise ApiError(400, str(exc)) from None
        self._limiter.clear()
        return Reply(200, limits.to_json())

    def _reset(self, query: Mapping[str, str], body: bytes) -> Reply:
        self._registry.reset()
        self._log.clear()
        self._limiter.clear()
        return Reply(200, {"ok": True})

    def _requests(self, query: Mapping[str, str], body: bytes) -> Reply:
        return Reply(200, self._log.read(_int_param(query, "last")))

    def _get_faults(self, query: Mapping[str, str], body: bytes) -> Reply:
        return Reply(200, {"faults": self._faults.active()})

    def _post_faults(self, query: Mapping[str, str], body: bytes) -> Reply:
        data = _json(body)
        try:
            rules = [
                FaultRule.from_json(item) for item in (data if isinstance(data, list) else [data])
            ]
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        for rule in rules:
            self._faults.add(rule)
        return Reply(200, {"faults": self._faults.active()})

    def _delete_faults(self, query: Mapping[str, str], body: bytes) -> Reply:
        self._faults.clear()
        return Reply(200, {"faults": []})


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None


def _int_param(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if value < 0:
        raise ApiError(400, f"{name} must be >= 0")
    return value
