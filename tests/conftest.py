"""Shared fixtures: a real sandbox on loopback, and ways to run the real target against it."""

from __future__ import annotations

import json
import os
import queue
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from target_core.columns import Column
from target_core.sandbox import SandboxServer
from target_core.sandbox.store import Store
from target_datainsider.sandbox import SANDBOX_API_KEY, stored_rows
from target_graphitenote.sandbox import SANDBOX_DATASET_CODE, SANDBOX_TOKEN, SANDBOX_USER_CODE
from target_usmart import sandbox as usmart_sandbox
from target_usmart.ingest_csv import IngestCsvWriter

TARGET_CMD = [sys.executable, "-m", "target_graphitenote"]
DI_CMD = [sys.executable, "-m", "target_datainsider"]
DI_DATABASE = "shop"
US_CMD = [sys.executable, "-m", "target_usmart"]


class NumberText(str):
    """A JSON number with a fraction or exponent, as the text it was written with."""


class Sandbox:
    """A running sandbox and the control calls tests need (all over HTTP)."""

    def __init__(self, server: SandboxServer) -> None:
        self.server = server
        self.url = server.url
        self.gn_url = server.api_url("graphitenote")

    @property
    def di_url(self) -> str:
        return self.server.api_url("datainsider")

    def _control(self, method: str, route: str, body: Any = None) -> Any:
        response = requests.request(method, f"{self.url}/_sandbox/{route}", json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def datasets(self) -> dict[str, dict]:
        return self._control("GET", "state")["graphitenote"]["datasets"]

    def dataset(self, code: str = SANDBOX_DATASET_CODE) -> dict:
        return self.datasets()[code]

    def rows(self, code: str = SANDBOX_DATASET_CODE) -> list[dict]:
        return self.dataset(code)["rows"]

    def di_tables(self, database: str = DI_DATABASE) -> dict[str, dict]:
        databases = self._control("GET", "state")["datainsider"]["databases"]
        return databases.get(database, {}).get("tables", {})

    def di_table(self, table: str, database: str = DI_DATABASE) -> dict:
        return self.di_tables(database)[table]

    def di_rows(self, table: str, database: str = DI_DATABASE) -> list[dict]:
        return self.di_tables(database).get(table, {}).get("rows", [])

    def di_lake(self) -> dict:
        """The DataInsider lake: `directories` (files, rows) and `syncs`."""
        return self._control("GET", "state")["datainsider"]["lake"]

    def di_lake_files(self, directory: str) -> list[tuple[str, Path]]:
        """(name, stored Parquet file) of each file of a lake directory, in upload order."""
        files = self.di_lake()["directories"].get(directory, {}).get("files", [])
        root = self.server.data_dir / "datainsider" / "lake"
        return [(f["name"], Store(root).file_path(f["stored"])) for f in files]

    def di_exact_rows(self, table: str, database: str = DI_DATABASE) -> list[dict]:
        """A DataInsider table's rows as stored, numbers with a fraction as `NumberText`:
        lines of rows (the batch route) or of columns (the CSV route: `values`)."""
        store = Store(self.server.data_dir / "datainsider")
        meta = store.read_meta() or {"databases": {}}
        stored = meta["databases"][database]["tables"][table]
        rows: list[dict] = []
        for line in store.rows_path(stored["file"]).read_bytes().splitlines():
            batch = json.loads(line, parse_float=NumberText)
            rows += [dict(zip(batch["columns"], row, strict=True)) for row in stored_rows(batch)]
        return rows

    def exact_rows(self, code: str = SANDBOX_DATASET_CODE) -> list[dict]:
        """Rows as stored (the JSON text the target sent): each number with a fraction or an
        exponent comes back as `NumberText`, the digits exactly as they were sent."""
        path = Store(self.server.data_dir / "graphitenote").rows_path(code)
        rows: list[dict] = []
        for line in path.read_bytes().splitlines():
            batch = json.loads(line, parse_float=NumberText)
            rows += [dict(zip(batch["columns"], row, strict=True)) for row in batch["rows"]]
        return rows

    def fault(self, **rule: Any) -> None:
        self._control("POST", "faults", rule)

    def settings(self, **settings: Any) -> None:
        self._control("POST", "settings", settings)

    def requests(self) -> list[dict]:
        return self._control("GET", "requests")


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    server = SandboxServer(tmp_path / "sandbox").start()
    try:
        yield Sandbox(server)
    finally:
        server.stop()


@pytest.fixture
def echo_server(tmp_path: Path) -> Iterator[SandboxServer]:
    """A sandbox serving only the echo emulator (tests/echoplatform.py)."""
    from echoplatform import EchoEmulator

    server = SandboxServer(tmp_path / "sandbox", emulators=[EchoEmulator]).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gn_config(sandbox: Sandbox, tmp_path: Path) -> dict[str, Any]:
    """A working config for the sandbox (no client-side rate limit, fast tests)."""
    return {
        "api_token": SANDBOX_TOKEN,
        "user_code": SANDBOX_USER_CODE,
        "api_url": sandbox.gn_url,
        "dataset_code": SANDBOX_DATASET_CODE,
        "rate_limit_per_minute": 0,
        "created_datasets_file": str(tmp_path / "created-datasets.json"),
    }


@pytest.fixture
def di_config(sandbox: Sandbox) -> dict[str, Any]:
    """A working target-datainsider config for the sandbox."""
    return {"api_key": SANDBOX_API_KEY, "api_url": sandbox.di_url, "database": DI_DATABASE}


@pytest.fixture
def us_config(sandbox: Sandbox) -> dict[str, Any]:
    """A working target-usmart config for the sandbox (its seeded dataset)."""
    return {"org_guid": usmart_sandbox.SANDBOX_ORG,
            "api_key_id": usmart_sandbox.SANDBOX_KEY_ID,
            "api_key_secret": usmart_sandbox.SANDBOX_KEY_SECRET,
            "api_url": sandbox.server.api_url("usmart"),
            "dataset_guid": usmart_sandbox.SANDBOX_DATASET}


def us_landed_rows(sandbox: Sandbox, dataset: str = usmart_sandbox.SANDBOX_DATASET
                   ) -> list[dict]:
    """Every row of the latest revision of each file of a uSmart dataset, file after file
    in the order they were created (what a refreshed output pipeline serves)."""
    files = sandbox._control("GET", "state")["usmart"]["datasets"][dataset]["files"]
    return [row for file in files.values() for row in file["revisions"][-1]["data"]]


@dataclass
class Loading:
    """One target against the sandbox, as tests shared by every platform see it."""

    command: list[str]
    config: dict[str, Any]
    batch_route: str
    """The sandbox path each batch of rows is sent to (for faults)."""
    landed_ids: Callable[[], list[Any]]
    """The `id` of every row the platform holds for stream `items`, in order."""
    confirm_route: str | None = None
    """File platforms: the sandbox path polled until an uploaded file is confirmed."""


@pytest.fixture(params=["graphitenote", "datainsider", "usmart"])
def loading(request: pytest.FixtureRequest, sandbox: Sandbox) -> Loading:
    if request.param == "graphitenote":
        return Loading(TARGET_CMD, request.getfixturevalue("gn_config"),
                       "/graphitenote/api/dataset-fill", lambda: [r["id"] for r in sandbox.rows()])
    if request.param == "usmart":  # files of ~1,000 bytes: each confirmed alone, STATE moves
        return Loading(US_CMD, {**request.getfixturevalue("us_config"), "max_file_bytes": 1000},
                       "/usmart/s3/*", lambda: [r["id"] for r in us_landed_rows(sandbox)])
    return Loading(DI_CMD, request.getfixturevalue("di_config"), "/datainsider/api/ingestion/batch",
                   lambda: [r["id"] for r in sandbox.di_rows("items")])


# -- DataTile (target-datatile: the file path) ---------------------------------------------

DT_CMD = [sys.executable, "-m", "target_datatile"]
DT_ERROR = "target-datatile: error: "


def dt_snapshot(sandbox: Sandbox) -> dict:
    """The DataTile emulator's state, every row included."""
    return sandbox.server.emulators["datatile"].snapshot()  # type: ignore[attr-defined]


def dt_rows(sandbox: Sandbox, database: str = "sandbox-database") -> list[dict]:
    return dt_snapshot(sandbox)["databases"][database]["rows"]


@pytest.fixture
def dt_config(sandbox: Sandbox, tmp_path: Path) -> dict[str, Any]:
    """A working target-datatile config: stream `items` appends to the sandbox database;
    fast polls."""
    return {"api_url": sandbox.server.api_url("datatile"), "token": "dt-sandbox-token",
            "database_map": {"items": "sandbox-database"}, "poll_interval": 0.05,
            "created_databases_file": str(tmp_path / "created-databases.json")}


@pytest.fixture(params=["datatile"])
def file_loading(request: pytest.FixtureRequest, sandbox: Sandbox) -> Loading:
    """Targets on the file path: a stream's rows count only once its file is confirmed, at
    the end of the input (tests/test_kill_resume.py)."""
    return Loading(DT_CMD, request.getfixturevalue("dt_config"),
                   "/datatile/api/v2/upload/*",
                   lambda: [r["id"] for r in dt_rows(sandbox)], "/datatile/api/v2/jobs/*")


# -- Singer messages ------------------------------------------------------------------------


def schema(stream: str, properties: dict, keys: Iterable[str] = ("id",)) -> dict:
    return {"type": "SCHEMA", "stream": stream, "key_properties": list(keys),
            "schema": {"type": "object", "properties": properties}}


def record(stream: str, data: dict) -> dict:
    return {"type": "RECORD", "stream": stream, "record": data}


def state(value: Any) -> dict:
    return {"type": "STATE", "value": value}


def lines(messages: Iterable[dict | str]) -> bytes:
    """JSON lines; a str item is written as it is (for malformed-input tests)."""
    return b"".join(
        (m if isinstance(m, str) else json.dumps(m)).encode() + b"\n" for m in messages
    )


def counter_stream(
    first: int, last: int, *, state_every: int, stream: str = "items"
) -> list[dict]:
    """Records id first..last with a STATE (bookmark = last id so far) every `state_every`."""
    messages: list[dict] = [schema(stream, {"id": {"type": "integer"},
                                            "label": {"type": ["string", "null"]}})]
    for i in range(first, last + 1):
        messages.append(record(stream, {"id": i, "label": f"item {i}"}))
        if i % state_every == 0 or i == last:
            messages.append(state({"bookmarks": {stream: {"last_id": i}}}))
    return messages


# -- running the target -----------------------------------------------------------------------


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*.json')))}.json"
    path.write_text(json.dumps(config))
    return path


def target_env(**extra: str) -> dict[str, str]:
    """The environment without any TARGET_* settings of the developer's own."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TARGET_GRAPHITENOTE_", "TARGET_DATAINSIDER_",
                                "TARGET_USMART_", "TARGET_DATATILE_"))}
    env.update(extra)
    return env


def run_target(
    tmp_path: Path, config: dict[str, Any], stdin: bytes, *, timeout: float = 60,
    command: list[str] = TARGET_CMD, **env: str
) -> subprocess.CompletedProcess[str]:
    """The real command line, as Meltano would run it (target-graphitenote unless `command`)."""
    return subprocess.run(
        [*command, "--config", str(write_config(tmp_path, config))],
        input=stdin.decode(), capture_output=True, text=True, timeout=timeout,
        env=target_env(**env), check=False,
    )


def sandbox_cmd() -> list[str]:
    """The `target-sandbox` command of this environment."""
    exe = Path(sys.executable).with_name("target-sandbox")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "target_core.sandbox.cli"]


@pytest.fixture
def sandbox_url(tmp_path: Path) -> Iterator[str]:
    """`target-sandbox serve --port 0` as a subprocess; its URL from its first stdout line."""
    proc = subprocess.Popen(
        [*sandbox_cmd(), "serve", "--port", "0", "--data-dir", str(tmp_path / "sandbox")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        selector = selectors.DefaultSelector()
        selector.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        first = proc.stdout.readline() if selector.select(timeout=30) else ""  # type: ignore[union-attr]
        prefix = "sandbox listening on "
        if not first.startswith(prefix):
            proc.kill()
            pytest.fail(f"sandbox did not start: {first!r} {proc.communicate()[1]}")
        yield first[len(prefix) :].strip()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def spawn_target(
    tmp_path: Path, config: dict[str, Any], stdin: bytes | None = None,
    stderr: int = subprocess.DEVNULL, command: list[str] = TARGET_CMD, **env: str,
) -> subprocess.Popen[bytes]:
    """The real command line as a running process. With `stdin` bytes, a thread writes them
    and closes the pipe (the target may be killed meanwhile); without, the pipe stays open."""
    proc = subprocess.Popen([*command, "--config", str(write_config(tmp_path, config))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                            env=target_env(**env))
    if stdin is not None:
        pipe, proc.stdin = proc.stdin, None  # the feeder owns it: communicate() leaves it be

        def feed() -> None:
            try:
                pipe.write(stdin)  # type: ignore[union-attr]
                pipe.close()  # type: ignore[union-attr]
            except (BrokenPipeError, ValueError):
                pass  # the target was stopped: what the calling test does

        threading.Thread(target=feed, daemon=True).start()
    return proc


class LineWatcher:
    """Reads a process's pipe on a thread, so a test can wait for a line with a deadline.

    This is how a test waits for a sign from a process (a log line, a STATE line) instead of
    sleeping: on a loaded 2-core machine the target may take seconds to start."""

    def __init__(self, pipe: Any) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: Any) -> None:
        for raw in pipe:
            self._queue.put(raw.decode(errors="replace") if isinstance(raw, bytes) else raw)
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float = 60) -> str:
        """The first line (from now on) containing `text`; fails the test at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"no line with {text!r} within {timeout} s:\n"
                            + "".join(self.lines[-30:]))
            if line is None:
                pytest.fail(f"the pipe closed before a line with {text!r}:\n"
                            + "".join(self.lines[-30:]))
            self.lines.append(line)
            if text in line:
                return line

    def rest(self, timeout: float = 60) -> list[str]:
        """Every line until the pipe closes."""
        self._thread.join(timeout)
        while (line := self._queue.get_nowait() if not self._queue.empty() else None):
            self.lines.append(line)
        return self.lines


def wait_until(condition: Any, what: str, timeout: float = 60) -> Any:
    """Poll `condition()` (e.g. the sandbox's state) until it is truthy, or fail."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
    return result


ERROR_PREFIX = "target-graphitenote: error: "


def error_line(run: subprocess.CompletedProcess[str], prefix: str = ERROR_PREFIX) -> str:
    """The one error line of a failed run (exit 1, no traceback), without its prefix."""
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(prefix), run.stderr
    return last[len(prefix):]


def states_of(stdout: str) -> list[Any]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def usmart_cells(columns: Sequence[Column], values: Sequence[Any]) -> tuple[str, ...]:
    """One row as the uSmart sink hands it to its writer: each value its finished CSV cell
    (the reader-thread converters applied)."""
    return tuple(IngestCsvWriter.converter_for(c)(v) for c, v in zip(columns, values,
                                                                     strict=True))
