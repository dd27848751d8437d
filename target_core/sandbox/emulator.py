"""The contract between the sandbox server and a platform emulator, and a small kit to build one.

The server owns sockets, limits, faults and the request log; an emulator only turns one parsed
request into one reply. Keeping that boundary narrow is what lets ``target_core`` serve every
platform without importing any of them (emulators are found through entry points).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import orjson


class ApiError(Exception):
    """An error answer an emulator wants to give; it renders it in its platform's error shape."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class Reply(NamedTuple):
    """What an emulator answers: status, JSON body and extra headers (unpacks as a 3-tuple)."""

    status: int
    body: Any
    headers: Mapping[str, str] = {}


@dataclass(frozen=True)
class Request:
    """One HTTP request as an emulator sees it: the path is relative to the emulator's prefix.

    Header names are lower-cased so lookups do not depend on how a client spelled them.
    """

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes
    query: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        """The body parsed as JSON; a body that is not JSON is the client's fault (400)."""
        if not self.body:
            raise ApiError(400, "request body is empty: a JSON object is expected")
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc}") from None

    def json_object(self) -> dict[str, Any]:
        body = self.json()
        if not isinstance(body, dict):
            raise ApiError(400, "request body must be a JSON object")
        return body


@runtime_checkable
class Emulator(Protocol):
    """A platform emulator, constructed as ``cls(store)`` with its own folder of the data dir."""

    name: ClassVar[str]
    prefix: ClassVar[str]

    def handle(self, request: Request) -> Reply: ...

    def error_body(self, status: int, message: str) -> Any:
        """The platform's error shape; the server uses it too (413, 429, injected faults)."""
        ...

    def snapshot(self, max_rows: int | None = None) -> dict[str, Any]: ...

    def reset(self) -> None: ...


Handler = Callable[[Request], Reply]


class Routes:
    """Maps sub-paths and methods to handlers, so every emulator answers 404 and 405 alike."""

    def __init__(self) -> None:
        self._table: dict[str, dict[str, Handler]] = {}

    def add(self, method: str, path: str, handler: Handler) -> None:
        self._table.setdefault(path, {})[method.upper()] = handler

    def dispatch(self, request: Request) -> Reply:
        methods = self._table.get(request.path)
        if methods is None:
            raise ApiError(404, f"no route {request.path}")
        handler = methods.get(request.method.upper())
        if handler is None:
            allowed = ", ".join(sorted(methods))
            raise ApiError(
                405, f"method {request.method} not allowed on {request.path}", {"Allow": allowed}
            )
        return handler(request)


class BusyKeys:
    """Marks destinations with a write in progress, so an overlapping write can get a 409.

    Tests hold a key with :meth:`hold` to make "busy destination" deterministic.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: set[str] = set()

    def claim(self, key: str) -> bool:
        with self._lock:
            if key in self._busy:
                return False
            self._busy.add(key)
            return True

    def release(self, key: str) -> None:
        with self._lock:
            self._busy.discard(key)

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        if not self.claim(key):
            raise RuntimeError(f"{key} is already busy")
        try:
            yield
        finally:
            self.release(key)


def default_error_body(status: int, message: str) -> dict[str, Any]:
    """Error shape for answers no emulator owns (unknown paths, control endpoints)."""
    return {"error": {"status": status, "message": message}}


__all__ = [
    "ApiError",
    "BusyKeys",
    "Emulator",
    "Reply",
    "Request",
    "Routes",
    "default_error_body",
]
