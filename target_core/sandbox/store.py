"""Durable state of one emulator: a small JSON metadata file plus append-only row files.

The benchmark sends hundreds of 10,000-row batches, so a write must cost what the batch costs,
not what the whole table costs: each batch of rows is appended as one JSON-array line, and only
the small metadata file is rewritten (atomically, tmp + rename, so a reader never sees half of
it). The metadata records each row file's length; :meth:`Store.trim_rows` cuts off what a crash
left half-written.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

_TABLE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
META_FILE = "meta.json"
ROWS_DIR = "rows"
FILES_DIR = "files"


class Store:
    """Files of one emulator under ``DATA_DIR/<emulator name>/``; thread-safe through ``lock``.

    Emulators take ``lock`` around a read-modify-write of their metadata and rows, so one
    logical change (append rows, then record the new count) is never interleaved with another.
    Nothing is created on disk until the first write, so reading an empty data dir is harmless.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.lock = threading.RLock()

    # metadata -------------------------------------------------------------------------------
    def read_meta(self) -> dict[str, Any] | None:
        try:
            data = (self.root / META_FILE).read_bytes()
        except FileNotFoundError:
            return None
        return orjson.loads(data)

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / META_FILE
        tmp = target.with_name(f".{META_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
        os.replace(tmp, target)

    # rows -----------------------------------------------------------------------------------
    def rows_path(self, table: str) -> Path:
        if not _TABLE_NAME.match(table):
            raise ValueError(f"invalid table name {table!r}")
        return self.root / ROWS_DIR / f"{table}.jsonl"

    def append_line(self, table: str, line: bytes) -> int:
        """Append one batch already encoded as a single line of JSON (no newline inside), as
        an emulator gets it from a client: storing it as is saves re-serialising big
        batches. Returns the file's new length."""
        path = self.rows_path(table)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as handle:
            handle.write(line + b"\n")
            return handle.tell()

    def truncate_rows(self, table: str) -> None:
        self.trim_rows(table, 0)

    def trim_rows(self, table: str, size: int) -> None:
        """Cut a row file back to ``size`` bytes (what the metadata says was committed)."""
        path = self.rows_path(table)
        try:
            if path.stat().st_size > size:
                os.truncate(path, size)
        except FileNotFoundError:
            pass

    def read_rows(
        self,
        table: str,
        limit: int | None = None,
        batch_rows: Callable[[Any], list[Any]] = list,
    ) -> list[Any]:
        """The first ``limit`` rows (all when None), read batch by batch, never the whole file.

        ``batch_rows`` turns one stored line (decoded) into its rows."""
        if limit is not None and limit <= 0:
            return []
        rows: list[Any] = []
        try:
            handle = open(self.rows_path(table), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return rows
        with handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # a batch cut short by a crash: not committed
                rows.extend(batch_rows(orjson.loads(line)))
                if limit is not None and len(rows) >= limit:
                    return rows[:limit]
        return rows

    # files ----------------------------------------------------------------------------------
    def file_path(self, name: str) -> Path:
        """Where an uploaded file called ``name`` is kept (``files/<name>``)."""
        if not _TABLE_NAME.match(name):
            raise ValueError(f"invalid file name {name!r}")
        return self.root / FILES_DIR / name

    def keep_file(self, name: str, source: Path) -> Path:
        """Move an uploaded file (a multipart part, a streamed body) into the store."""
        path = self.file_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, path)
        return path

    # whole store ----------------------------------------------------------------------------
    def wipe(self) -> None:
        """Remove every file of this emulator (the folder itself is recreated on next write)."""
        with self.lock:
            shutil.rmtree(self.root, ignore_errors=True)
