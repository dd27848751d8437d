"""The request log: what a target sent, as ``DATA_DIR/requests.jsonl``.

Entries carry method, path (without query string), status, sizes, duration and the injected
fault. Headers and query strings are never recorded: they are where credentials travel
(bearer tokens, API keys, signed-URL signatures), and the log is meant to be shared.
"""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path
from typing import Any

import orjson

REQUEST_LOG_FILE = "requests.jsonl"


class RequestLog:
    def __init__(self, data_dir: Path | str):
        self.path = Path(data_dir) / REQUEST_LOG_FILE
        self._lock = threading.Lock()

    def append(self, entry: dict[str, Any]) -> None:
        line = orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "ab") as handle:
                handle.write(line)

    def read(self, last: int | None = None) -> list[dict[str, Any]]:
        """All entries, or the ``last`` N, oldest first."""
        with self._lock:
            try:
                handle = open(self.path, "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                return []
            with handle:
                lines = deque(handle, maxlen=last) if last is not None else list(handle)
        return [orjson.loads(line) for line in lines if line.endswith(b"\n")]

    def clear(self) -> None:
        with self._lock:
            self.path.unlink(missing_ok=True)
