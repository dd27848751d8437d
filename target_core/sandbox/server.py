"""The sandbox HTTP server: loopback only, HTTP/1.1 keep-alive, one emulator per URL prefix.

Every API request goes through the same pipeline before its emulator sees it:

1. route by prefix (unknown path: 404);
2. read the body, refusing more than ``max_body_bytes`` (413, body read and discarded so the
   client gets the answer and the connection stays usable); a body that is not JSON and
   over ``STREAM_TO_DISK_BYTES`` (file uploads) is streamed to a file, never held whole.
   An emulator with a ``max_upload_bytes`` attribute takes bodies that are not JSON up to
   that size when it is the larger (a storage that accepts big files, like S3's PUT);
3. fault injection by method and path pattern (delay, then drop or an error status);
4. rate limit per credential (429 with Retry-After), the credential taken from wherever
   the emulator's ``credential_sources`` say (default: the Authorization header);
5. the emulator; then one line in the request log. Replies are JSON, raw bytes (XML
   errors, files) or empty.

Run it in its own process (``target-sandbox serve``) when measuring speed; in tests,
``SandboxServer(data_dir).start()`` serves from a background thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import socket
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from target_core.sandbox.control import ControlApi
from target_core.sandbox.emulator import ApiError, Emulator, Reply, Request, default_error_body
from target_core.sandbox.faults import FaultPlan, FaultRule
from target_core.sandbox.limits import (
    DEFAULT_MAX_BODY_BYTES,
    Limits,
    LimitSettings,
    SlidingWindowLimiter,
)
from target_core.sandbox.registry import EmulatorRegistry
from target_core.sandbox.requestlog import RequestLog

# a body bigger than this is not even read to be discarded: answer 413 and close
_DISCARD_CAP_BYTES = 1024 * 1024 * 1024
_CHUNK_BYTES = 1024 * 1024
STREAM_TO_DISK_BYTES = 256 * 1024
DEFAULT_CREDENTIAL_SOURCES = ("header:authorization",)


def loopback_host(host: str) -> str:
    """The host to bind; anything but a loopback address is refused (the sandbox has no auth
    of its own on the control endpoints, and fake credentials are public)."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"refusing to bind {host!r}: the sandbox serves loopback only") from None
    if not address.is_loopback:
        raise ValueError(f"refusing to bind {host}: the sandbox serves loopback only")
    return host


class _Dropped(Exception):
    """The connection is to be closed with no answer at all."""


class SandboxApp:
    """Everything a request handler needs, shared by all handler threads."""

    def __init__(
        self,
        data_dir: Path,
        limits: Limits,
        faults: Sequence[FaultRule],
        emulators: Sequence[type[Emulator]] | None,
    ):
        self.registry = EmulatorRegistry(data_dir, emulators)
        self.settings = LimitSettings(limits)
        self.faults = FaultPlan(list(faults))
        self.limiter = SlidingWindowLimiter()
        self.log = RequestLog(data_dir)
        self.incoming = data_dir / ".incoming"
        """Request bodies streamed to disk, each removed once its request is answered."""
        self.control = ControlApi(self.registry, self.faults, self.settings, self.limiter, self.log)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "target-sandbox"
    sys_version = ""
    timeout = 120  # an idle keep-alive connection is closed after two minutes
    disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall
    server: _LoopbackHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: the request log is ours, and it never contains headers."""

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    # pipeline -------------------------------------------------------------------------------
    def _serve(self) -> None:
        app = self.server.app
        started = time.monotonic()
        split = urlsplit(self.path)
        path = split.path
        # blank values kept: a parameter without `=` (uSmart's `urql?limit(10,0)`) is a key
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        if ControlApi.owns(path):
            self._send(self._control_reply(app, path, query))
            return
        entry: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "emulator": None,
            "method": self.command,
            "path": path,
            "status": None,
            "request_bytes": 0,
            "response_bytes": 0,
            "duration_ms": 0.0,
            "fault": None,
        }
        logged = False
        try:
            reply = self._api_reply(app, path, query, entry)
            entry["status"] = reply.status

            def log_before_answering(size: int) -> None:
                # logged before the answer leaves: a client that has its answer (a test
                # reading the log right after) always finds its request there
                nonlocal logged
                entry["response_bytes"] = size
                entry["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
                app.log.append(entry)
                logged = True

            self._send(reply, before_writing=log_before_answering)
        except (_Dropped, BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            if not logged:
                entry["duration_ms"] = round((time.monotonic() - started) * 1000, 3)
                app.log.append(entry)

    def _control_reply(self, app: SandboxApp, path: str, query: Mapping[str, str]) -> Reply:
        try:
            body = self._read_body(app.settings.get().max_body_bytes)
        except ApiError as exc:
            return Reply(exc.status, default_error_body(exc.status, exc.message))
        if body is None:
            return Reply(413, default_error_body(413, "request body too large"))
        return app.control.handle(self.command, path, query, body)

    def _api_reply(
        self, app: SandboxApp, path: str, query: Mapping[str, str], entry: dict[str, Any]
    ) -> Reply:
        limits = app.settings.get()
        matched = app.registry.match(path)
        if matched is None:
            # on an unreadable body the connection closes anyway; the 404 is the useful answer
            with contextlib.suppress(ApiError):
                self._read_body(limits.max_body_bytes)
            return Reply(404, default_error_body(404, f"no emulator serves {path}"))
        emulator, sub_path = matched
        entry["emulator"] = emulator.name
        max_bytes = limits.max_body_bytes
        upload_limit = getattr(emulator, "max_upload_bytes", 0)
        if upload_limit > max_bytes and not self._is_json():
            max_bytes = upload_limit  # the emulator takes bigger files (e.g. S3's PUT)
        body_path: Path | None = None
        try:
            if self._streams_to_disk(max_bytes):
                body_path = self._spool_body(app.incoming)
                body: bytes | None = b""
            else:
                body = self._read_body(max_bytes)
        except ApiError as exc:
            return Reply(exc.status, emulator.error_body(exc.status, exc.message))
        if body is None:
            entry["request_bytes"] = self._declared_length()
            message = f"request body exceeds {max_bytes} bytes"
            return Reply(413, emulator.error_body(413, message))
        try:
            return self._emulate(app, emulator, path, sub_path, query, body, body_path, entry)
        finally:
            if body_path is not None:
                body_path.unlink(missing_ok=True)

    def _emulate(
        self, app: SandboxApp, emulator: Emulator, path: str, sub_path: str,
        query: Mapping[str, str], body: bytes, body_path: Path | None, entry: dict[str, Any],
    ) -> Reply:
        limits = app.settings.get()
        entry["request_bytes"] = body_path.stat().st_size if body_path is not None else len(body)
        rule = app.faults.take(self.command, path)
        if rule is not None:
            entry["fault"] = rule.label()
            if rule.delay > 0:
                time.sleep(rule.delay)
            if rule.drop:
                raise _Dropped
            if rule.status is not None:
                message = f"sandbox fault injection: status {rule.status}"
                body = rule.body if rule.body is not None else emulator.error_body(
                    rule.status, message)
                return Reply(rule.status, body, rule.retry_after_header())

        request = Request(
            method=self.command,
            path=sub_path,
            headers={name.lower(): value for name, value in self.headers.items()},
            body=body,
            query=query,
            body_path=body_path,
        )
        sources = getattr(emulator, "credential_sources", DEFAULT_CREDENTIAL_SOURCES)
        credential = hashlib.sha256(request.credential(sources).encode()).hexdigest()
        wait = app.limiter.admit(f"{emulator.name}:{credential}", limits.rate_limit_per_minute)
        if wait:
            message = f"rate limit of {limits.rate_limit_per_minute} requests per minute exceeded"
            return Reply(429, emulator.error_body(429, message), {"Retry-After": str(wait)})

        try:
            reply = emulator.handle(request)
        except ApiError as exc:
            return Reply(exc.status, emulator.error_body(exc.status, exc.message), exc.headers)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            message = f"sandbox internal error: {type(exc).__name__}"
            return Reply(500, emulator.error_body(500, message))
        if rule is not None and rule.drop_after:
            entry["status"] = reply.status  # applied; the answer never leaves
            raise _Dropped
        return reply

    # socket I/O -----------------------------------------------------------------------------
    def _is_json(self) -> bool:
        return (self.headers.get("Content-Type") or "").lower().startswith("application/json")

    def _streams_to_disk(self, max_bytes: int) -> bool:
        """A file upload: not JSON, bigger than a small answer, within the size limit."""
        length = self._declared_length()
        return (not self._is_json() and
                STREAM_TO_DISK_BYTES < length <= max_bytes and
                "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower())

    def _spool_body(self, directory: Path) -> Path:
        """The body copied to a file in blocks (the connection stays usable)."""
        directory.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix="body-", dir=directory)
        remaining = self._declared_length()
        with open(handle, "wb") as out:
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, _CHUNK_BYTES))
                if not chunk:
                    self.close_connection = True
                    Path(name).unlink(missing_ok=True)
                    raise ApiError(400, "the request body ended before its Content-Length")
                out.write(chunk)
                remaining -= len(chunk)
        return Path(name)

    def _declared_length(self) -> int:
        try:
            return max(0, int(self.headers.get("Content-Length") or 0))
        except ValueError:
            return 0

    def _read_body(self, max_bytes: int) -> bytes | None:
        """The body, or None when it is over ``max_bytes`` (then it has been read and dropped,
        or the connection is marked to close when it is too big even to drain)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            # nothing we serve sends chunked bodies; the unread body makes the connection unusable
            self.close_connection = True
            raise ApiError(411, "chunked request bodies are not supported: send Content-Length")
        raw = self.headers.get("Content-Length")
        try:
            length = int(raw) if raw else 0
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "invalid Content-Length header") from None
        if length <= max_bytes:
            return self.rfile.read(length) if length else b""
        if length > _DISCARD_CAP_BYTES:
            self.close_connection = True
            return None
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, _CHUNK_BYTES))
            if not chunk:
                break
            remaining -= len(chunk)
        return None

    def _send(self, reply: Reply, before_writing: Callable[[int], None] | None = None) -> int:
        status, body, headers = reply
        if body is None:
            data, kind = b"", None
        elif isinstance(body, bytes):
            data, kind = body, "application/octet-stream"
        else:
            data, kind = orjson.dumps(body), "application/json"
        self.send_response(status)
        if kind is not None and not any(n.lower() == "content-type" for n in headers):
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        if before_writing is not None:
            before_writing(len(data))
        self.end_headers()
        self.wfile.write(data)
        return len(data)


class _LoopbackHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, app: SandboxApp):
        self.address_family = (
            socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
        )
        self.app = app
        super().__init__((host, port), _Handler)


class SandboxServer:
    """The sandbox as a Python object: ``start()`` serves from a thread, ``stop()`` ends it.

    >>> server = SandboxServer(tmp_path).start()
    >>> api_url = server.api_url("graphitenote")   # http://127.0.0.1:PORT/graphitenote/api
    >>> server.stop()
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit_per_minute: int = 0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        faults: Sequence[FaultRule | Mapping[str, Any]] = (),
        emulators: Sequence[type[Emulator]] | None = None,
    ):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        rules = [
            rule if isinstance(rule, FaultRule) else FaultRule.from_json(rule) for rule in faults
        ]
        self.app = SandboxApp(
            self.data_dir, Limits(rate_limit_per_minute, max_body_bytes), rules, emulators
        )
        self._httpd = _LoopbackHTTPServer(loopback_host(host), port, self.app)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        host = self._httpd.server_address[0]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}"

    @property
    def emulators(self) -> dict[str, Emulator]:
        return self.app.registry.emulators

    def api_url(self, emulator_name: str) -> str:
        """Base URL a target is configured with to talk to one emulator."""
        return self.url + self.emulators[emulator_name].prefix

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.05)

    def start(self) -> SandboxServer:
        self._thread = threading.Thread(
            target=self.serve_forever, name="target-sandbox", daemon=True
        )
        self._thread.start()
        write_server_file(self.data_dir, self.url)
        return self

    def stop(self) -> None:
        """Stop accepting and close the listening socket (idle keep-alive threads are daemons)."""
        if self._thread is not None:
            self._httpd.shutdown()
            remove_server_file(self.data_dir, self.url)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# -- which server serves a data dir (so `target-sandbox reset` can refuse) -------------------

SERVER_FILE = "server.json"


def write_server_file(data_dir: Path, url: str) -> None:
    """Record that this process serves `data_dir` at `url` (removed again by `stop`)."""
    (data_dir / SERVER_FILE).write_bytes(orjson.dumps({"pid": os.getpid(), "url": url}))


def remove_server_file(data_dir: Path, url: str) -> None:
    path = data_dir / SERVER_FILE
    with contextlib.suppress(OSError, ValueError):
        if orjson.loads(path.read_bytes()).get("url") == url:
            path.unlink()


def running_server(data_dir: Path) -> str | None:
    """The URL of a live server on `data_dir`, or None (a file left by a killed server is
    stale: its process is gone, or its URL no longer answers)."""
    try:
        info = orjson.loads((data_dir / SERVER_FILE).read_bytes())
        os.kill(int(info["pid"]), 0)
        url = str(info["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        with urllib.request.urlopen(f"{url}/_sandbox/health", timeout=2) as answer:
            return url if answer.status == 200 else None
    except OSError:
        return None


def served_elsewhere(data_dir: Path) -> bool:
    """Whether another live process serves `data_dir`: a reader of its files (``show``) must
    then leave them alone (an emulator caching what it read would write under the server)."""
    try:
        pid = int(orjson.loads((data_dir / SERVER_FILE).read_bytes())["pid"])
        if pid == os.getpid():
            return False
        os.kill(pid, 0)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True
