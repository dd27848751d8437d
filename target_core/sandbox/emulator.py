"""The contract between the sandbox server and a platform emulator, and a small kit to build one.

The server owns sockets, limits, faults and the request log; an emulator only turns one parsed
request into one reply. Keeping that boundary narrow is what lets ``target_core`` serve every
platform without importing any of them (emulators are found through entry points).
"""

from __future__ import annotations

import hashlib
import io
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, ClassVar, NamedTuple, Protocol, runtime_checkable

import multipart
import orjson

BODY_READ_BYTES = 1 << 20
"""How much of a multipart body is read and parsed at a time."""
MAX_PARTS = 128
MAX_FIELD_BYTES = 1 << 20
"""A plain form field (not a file) is held in memory: this much at most."""


class ApiError(Exception):
    """An error answer an emulator wants to give; it renders it in its platform's error shape."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class Reply(NamedTuple):
    """What an emulator answers: status, body and extra headers (unpacks as a 3-tuple).

    The body is sent as JSON, except `bytes` (sent as they are, with the Content-Type given
    in `headers`, else application/octet-stream) and `None` (no body at all)."""

    status: int
    body: Any
    headers: Mapping[str, str] = {}

    @classmethod
    def empty(cls, status: int = 200, headers: Mapping[str, str] | None = None) -> Reply:
        """No body (e.g. S3's answer to a PUT: 200 and an ETag header)."""
        return cls(status, None, dict(headers or {}))

    @classmethod
    def xml(cls, status: int, text: str, headers: Mapping[str, str] | None = None) -> Reply:
        return cls(status, text.encode(), {"Content-Type": "application/xml", **(headers or {})})


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart body, on disk until the request ends (keep it with
    `Store.keep_file`)."""

    field: str
    file_name: str | None
    content_type: str | None
    path: Path
    size: int


@dataclass(frozen=True)
class Multipart:
    """A parsed multipart/form-data body: plain fields, and file parts on disk."""

    fields: Mapping[str, str]
    files: Mapping[str, UploadedFile]


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
    body_path: Path | None = None
    """Set when the body was streamed to disk (file uploads); `body` is then empty."""
    path_params: Mapping[str, str] = field(default_factory=dict)
    """The `{name}` parts of the route that matched."""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def open_body(self) -> IO[bytes]:
        """The body as a binary file, wherever it is kept."""
        return self.body_path.open("rb") if self.body_path is not None else io.BytesIO(self.body)

    def body_size(self) -> int:
        return self.body_path.stat().st_size if self.body_path is not None else len(self.body)

    def save_body(self, destination: Path) -> tuple[int, str]:
        """Copy the body to a file; returns its size and MD5 hex digest (S3's ETag)."""
        digest = hashlib.md5(usedforsecurity=False)
        size = 0
        destination.parent.mkdir(parents=True, exist_ok=True)
        with self.open_body() as source, destination.open("wb") as out:
            while chunk := source.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        return size, digest.hexdigest()

    def multipart(self, spool_dir: Path) -> Multipart:
        """Parse a multipart/form-data body; each file part's bytes go to a file in
        `spool_dir` as they are parsed (written once, never held whole).

        A body that is not multipart, or is malformed, is the client's fault (400)."""
        content_type, options = multipart.parse_options_header(self.header("content-type") or "")
        if content_type != "multipart/form-data" or not options.get("boundary"):
            raise ApiError(400, "a multipart/form-data body with a boundary is expected")
        fields: dict[str, str] = {}
        files: dict[str, UploadedFile] = {}
        spool_dir.mkdir(parents=True, exist_ok=True)
        parser = multipart.PushMultipartParser(options["boundary"], self.body_size(),
                                               max_segment_count=MAX_PARTS, strict=True)
        text = bytearray()
        out: IO[bytes] | None = None
        try:
            with self.open_body() as body:
                for event in parser.parse_blocking(body.read, BODY_READ_BYTES):
                    if isinstance(event, multipart.MultipartSegment):
                        segment, text = event, bytearray()
                        if segment.filename is not None:
                            path = spool_dir / f"part-{len(fields) + len(files)}"
                            out = path.open("wb")
                    elif event:  # a piece of the segment's body
                        if out is not None:
                            out.write(event)
                        elif len(text) + len(event) > MAX_FIELD_BYTES:
                            raise ApiError(400, f"form field '{segment.name}' is over "
                                           f"{MAX_FIELD_BYTES} bytes")
                        else:
                            text += event
                    elif out is not None:  # the end of a file part
                        out.close()
                        out = None
                        files[segment.name or ""] = UploadedFile(
                            segment.name or "", segment.filename, segment.content_type, path,
                            segment.size)
                    else:
                        fields[segment.name or ""] = text.decode(segment.charset or "utf-8")
        except (multipart.MultipartError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"malformed multipart body: {exc}") from None
        finally:
            if out is not None:
                out.close()
        return Multipart(fields, files)

    def credential(self, sources: tuple[str, ...]) -> str:
        """The first credential found in `sources` ("header:<name>", "query:<name>",
        "json:<field>"), or "" (for rate limiting per credential)."""
        for source in sources:
            kind, _, name = source.partition(":")
            value: Any = None
            if kind == "header":
                value = self.header(name)
            elif kind == "query":
                value = self.query.get(name)
            elif kind == "json" and self.body[:1] == b"{":
                try:
                    value = orjson.loads(self.body).get(name)
                except orjson.JSONDecodeError:
                    value = None
            if isinstance(value, str) and value:
                return value
        return ""

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


_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _route_pattern(path: str) -> re.Pattern[str] | None:
    """`/upload/{action}/{hash}` -> a regex with one named group per segment parameter."""
    if not _PARAM.search(path):
        return None
    parts = _PARAM.split(path)
    regex = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)"
                    for i, part in enumerate(parts))
    return re.compile(regex + r"\Z")


class Routes:
    """Maps sub-paths and methods to handlers, so every emulator answers 404 and 405 alike.

    A path may hold `{name}` segments; the handler finds them in `request.path_params`.
    Exact paths are tried first, then patterns in the order they were added."""

    def __init__(self) -> None:
        self._table: dict[str, dict[str, Handler]] = {}
        self._patterns: list[tuple[re.Pattern[str], str]] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        if path not in self._table and (pattern := _route_pattern(path)) is not None:
            self._patterns.append((pattern, path))
        self._table.setdefault(path, {})[method.upper()] = handler

    def dispatch(self, request: Request) -> Reply:
        methods = self._table.get(request.path)
        if methods is None:
            for pattern, path in self._patterns:
                if matched := pattern.match(request.path):
                    methods = self._table[path]
                    request = replace(request, path_params=matched.groupdict())
                    break
            else:
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
    "Multipart",
    "Reply",
    "Request",
    "Routes",
    "UploadedFile",
    "default_error_body",
]
