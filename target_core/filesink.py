"""The file path: a stream's rows become files, and count as loaded when the platform says so.

For platforms that take whole files (one per stream, or a few), not one call per batch.
Three threads, as on the batch path (`uploads.py`):

```
main    FileSink: validate + convert a record into a tuple, buffer it
        buffer full -> a write job
packer  StreamFile.write: rows -> the stream's FormatWriter (CSV, Parquet, SPSS...);
        a file over `max_file_bytes` (or whose format cannot take a SCHEMA change) is
        finished here and a new one started
sender  StreamFile.send: FileLoad.upload(file) for each finished file
end     StreamFile.finish_last (packer) + send_last (sender): the last file, then
        FileLoad.commit(files) (job poll, revision, sync end)
```

Records are acknowledged only by the platform's confirmation: the checkpoint keeps them
open from their arrival until `commit` returns (or, for a platform whose every upload is a
confirmation on its own, `confirms_each_file`, until that file's upload returns). So STATE
never passes rows that sit in a file not yet confirmed.

How a platform plugs in (all in its own folder):

1. A `FileLoad` subclass: one stream's load for one run. It chooses the format
   (`writer_class`, or `open_writer` for writer options), may rename columns
   (`sanitise_name`) and convert values (`converter_for`), may cap file sizes
   (`max_file_bytes`), and does the platform calls on the sender thread: `upload` per
   finished file (`FinishedFile`), `commit` once per stream after the last upload.
2. A `filetarget.FileTarget` subclass whose `open_load(stream)` returns that `FileLoad`
   (raising `ConfigError` for a stream it cannot place) with the platform client.

Nothing else: the sink, the checkpointing, the spool directory, schema changes (one file
with the union of the columns), empty streams (no file, no call), failures and signals
(no partial file is ever uploaded, committed or left on disk) are handled here.
"""

from __future__ import annotations

import abc
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from singer_sdk import Target

from target_core.checkpoint import Checkpoint
from target_core.columns import Column, ColumnType, identifier, numbered
from target_core.formats import CsvWriter, FormatWriter
from target_core.rows import Converter
from target_core.sink import RowSink, SinkParts
from target_core.uploads import Uploader

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FinishedFile:
    """A complete file of one stream, ready to upload (deleted once uploaded)."""

    stream: str
    number: int
    """1 for the stream's first file of the run, 2 for the next (size limits)."""
    path: Path
    media_type: str
    suffix: str
    rows: int
    size: int
    columns: tuple[Column, ...]


class FileLoad(abc.ABC):
    """One stream's files for one run, and how they reach the platform (platform code).

    `upload` and `commit` run on the sender thread, one call at a time for the whole
    target; they raise (a `TargetError` with a line the user can act on) when the platform
    refuses, and the run stops before any later STATE.
    """

    writer_class: ClassVar[type[FormatWriter]] = CsvWriter
    max_file_bytes: int | None = None
    """Finish a file and start the next once it holds this many bytes (None: one file).
    Checked after each batch the sink hands over, so a file may pass it by one batch:
    under a hard platform limit, leave that margin (or lower `batch_size_rows`)."""
    confirms_each_file: bool = False
    """True when a returned `upload` is the platform's confirmation of that file's rows
    (no later commit call confirms more); False: rows wait for `commit`."""

    def __init__(self, stream: str) -> None:
        self.stream = stream

    max_name_bytes: int | None = None
    """The platform's longest column name in UTF-8 bytes: names made unique with `_2`,
    `_3`... are cut before the suffix to stay within it (`sanitise_name` keeps each name
    within it on its own)."""

    def sanitise_name(self, name: str) -> str:
        """A property name -> a column name the platform accepts."""
        return identifier(name)

    def converter_for(self, column: Column) -> Converter | None:
        """The conversion of a column's values; by default what the format wants."""
        return self.writer_class.converter_for(column)

    def open_writer(self, path: Path, columns: Sequence[Column]) -> FormatWriter:
        """A writer for the stream's next file (`path` has no suffix yet)."""
        return self.writer_class(path.with_suffix(self.writer_class.suffix), columns)

    @abc.abstractmethod
    def upload(self, file: FinishedFile) -> None:
        """Send one finished file to the platform (sender thread)."""

    def commit(self, files: Sequence[FinishedFile]) -> None:  # noqa: B027 (optional hook)
        """After the stream's last upload: what makes the files count (job poll, revision,
        sync end). Its return acknowledges every row of `files` (sender thread)."""


def merge_columns(known: Sequence[Column], incoming: Sequence[Column],
                  max_name_bytes: int | None = None) -> list[Column]:
    """The union of a stream's columns across SCHEMA messages, matched by property.

    Known columns keep their place and name; one whose type changed becomes nullable TEXT
    (both kinds of value can be written as text); new ones follow, renamed with `_2`, `_3`
    ... if their name is taken (cut first to stay within `max_name_bytes`)."""
    merged = list(known)
    index = {c.source: i for i, c in enumerate(merged)}
    taken = {c.name.lower() for c in merged}
    for column in incoming:
        at = index.get(column.source)
        if at is None:
            name, n = column.name, 1
            while name.lower() in taken:
                n += 1
                name = numbered(column.name, n, max_name_bytes)
            taken.add(name.lower())
            index[column.source] = len(merged)
            merged.append(replace(column, name=name))
            continue
        old = merged[at]
        if old.type is not column.type:
            merged[at] = replace(old, type=ColumnType.TEXT, nullable=True, json_types=())
        elif column.nullable and not old.nullable:
            merged[at] = replace(old, nullable=True)
    return merged


class StreamFile:
    """One stream's files in this run, shared by the stream's sinks (SCHEMA changes)."""

    progress_rows: ClassVar[int] = 100_000
    """A progress line each time this many more rows are in the stream's files: a file
    platform confirms only at the end, and a long stream should not look stuck until then."""

    def __init__(self, stream: str, load: FileLoad, directory: Path,
                 checkpoint: Checkpoint) -> None:
        self.stream = stream
        self.load = load
        self.columns: list[Column] = []
        """The union of the stream's columns so far (main thread)."""
        self.batches = 0
        """Write jobs handed over (main thread): 0 means no record, so no file."""
        self._directory = directory
        self._checkpoint = checkpoint
        self._writer: FormatWriter | None = None
        self._part: object = object()  # checkpoint key of the current file's records
        self._held: object = object()  # ... of uploaded files' records, until commit
        self._keys: dict[int, object] = {}  # file number -> its records' key, until uploaded
        self.files: list[FinishedFile] = []
        """Finished files (packer), uploaded in order (sender)."""
        self._rows_written = 0  # packer
        self._started = time.monotonic()

    # main thread ---------------------------------------------------------------------

    def add_columns(self, columns: Sequence[Column]) -> list[Column]:
        """A (new) schema's columns; returns the union rows are now encoded for."""
        self.columns = merge_columns(self.columns, columns, self.load.max_name_bytes)
        return self.columns

    # packer thread -------------------------------------------------------------------

    def write(self, rows: list[Any], columns: list[Column], token: object) -> list[FinishedFile]:
        """Rows (encoded for `columns`) into the current file; returns files to upload."""
        done = []
        if self._writer is not None and self._writer.columns != columns \
                and not self._writer.extend(columns):
            done.append(self._finish_current())
        if self._writer is None:
            number = len(self.files) + 1
            self._writer = self.load.open_writer(self._directory / f"{self._stem()}-{number}",
                                                 columns)
        self._checkpoint.move(token, self._part)  # the file now holds these records
        self._writer.write_rows(rows)
        self._log_progress(len(rows))
        limit = self.load.max_file_bytes
        if limit is not None and self._writer.size >= limit:
            done.append(self._finish_current())
        return done

    def _log_progress(self, rows: int) -> None:
        before, self._rows_written = self._rows_written, self._rows_written + rows
        if before // self.progress_rows == self._rows_written // self.progress_rows:
            return
        assert self._writer is not None
        elapsed = max(time.monotonic() - self._started, 1e-6)
        logger.info("Stream '%s': %d rows written so far (file %d: %d rows, %d bytes on disk), "
                    "%.0f rows/s", self.stream, self._rows_written, len(self.files) + 1,
                    self._writer.rows, self._writer.size, self._rows_written / elapsed)

    def finish_last(self) -> list[FinishedFile]:
        """End of input: the current file, complete."""
        return [self._finish_current()] if self._writer is not None else []

    def _finish_current(self) -> FinishedFile:
        writer, self._writer = self._writer, None
        assert writer is not None
        path = writer.finish()
        file = FinishedFile(self.stream, len(self.files) + 1, path, writer.media_type,
                            writer.suffix, writer.rows, path.stat().st_size,
                            tuple(writer.columns))
        self.files.append(file)
        # the file's records stay open under their own key until its upload returns
        key, self._part = self._part, object()
        self._keys[file.number] = key
        return file

    def _stem(self) -> str:
        return (identifier(self.stream) or "stream")[:60]

    # sender thread -------------------------------------------------------------------

    def send(self, files: list[FinishedFile]) -> None:
        """Upload finished files, in order; each is deleted once the platform has it."""
        for file in files:
            started = time.monotonic()
            self.load.upload(file)
            file.path.unlink(missing_ok=True)
            key = self._keys.pop(file.number)
            if self.load.confirms_each_file:
                self._checkpoint.close(key)
            else:
                self._checkpoint.move(key, self._held)
            logger.info("Stream '%s': file %d (%d rows, %d bytes) uploaded in %.1f s",
                        self.stream, file.number, file.rows, file.size,
                        time.monotonic() - started)

    def send_last(self, files: list[FinishedFile]) -> None:
        """The last file, then the commit that confirms every file of the stream."""
        self.send(files)
        started = time.monotonic()
        self.load.commit(self.files)
        self._checkpoint.close(self._held)
        logger.info("Stream '%s': %d rows in %d file(s) confirmed in %.1f s", self.stream,
                    sum(f.rows for f in self.files), len(self.files),
                    time.monotonic() - started)

    # any thread, once nothing runs ---------------------------------------------------

    def discard(self) -> None:
        """Remove what is on disk (a failed or interrupted run: nothing is finished)."""
        if self._writer is not None:
            self._writer.discard()
            self._writer = None
        for file in self.files:
            file.path.unlink(missing_ok=True)


class StreamFiles:
    """The run's `StreamFile`s by stream, in one spool directory removed at the end.

    `open_load` is the platform's factory of `FileLoad`s (it may raise `ConfigError` for a
    stream it cannot place: the run stops at that stream's SCHEMA)."""

    def __init__(self, checkpoint: Checkpoint, open_load: Callable[[str], FileLoad],
                 spool_root: Path | str | None = None) -> None:
        self._checkpoint = checkpoint
        self._open_load = open_load
        self._spool_root = spool_root
        self._directory: Path | None = None
        self._lock = threading.Lock()
        self.streams: dict[str, StreamFile] = {}

    def stream(self, name: str) -> StreamFile:
        """The stream's files (main thread: at each of its sinks' set-up)."""
        if name not in self.streams:
            load = self._open_load(name)
            self.streams[name] = StreamFile(name, load, self.directory, self._checkpoint)
        return self.streams[name]

    @property
    def directory(self) -> Path:
        """The spool directory (created on first use)."""
        with self._lock:
            if self._directory is None:
                self._directory = Path(tempfile.mkdtemp(prefix="target-spool-",
                                                        dir=self._spool_root))
            return self._directory

    def finish(self, uploader: Uploader) -> None:
        """End of input: finish, upload and commit every stream that got records."""
        for file in self.streams.values():
            if file.batches:
                uploader.submit(None, file.finish_last, file.send_last)

    def discard(self) -> None:
        """Remove every spooled and unsent file, and the spool directory."""
        for file in self.streams.values():
            file.discard()
        with self._lock:
            if self._directory is not None:
                shutil.rmtree(self._directory, ignore_errors=True)
                self._directory = None


@dataclass(frozen=True)
class FileSinkParts(SinkParts):
    """What a `FileSink` is handed: the checkpoint, the uploader and the run's files."""

    files: StreamFiles


class FileSink(RowSink):
    """Records -> tuples in the stream's column order -> write jobs for its `StreamFile`."""

    MAX_SIZE_DEFAULT = 5_000
    max_batch_bytes = 400_000  # values (rows are tuples): bounds memory for wide rows
    rows_as_tuples = True
    parts: FileSinkParts

    def __init__(self, target: Target, stream_name: str, schema: dict,
                 key_properties: Sequence[str] | None, *, parts: FileSinkParts) -> None:
        self.file = parts.files.stream(stream_name)
        super().__init__(target, stream_name, schema, key_properties, parts=parts)

    def sanitise_name(self, name: str) -> str:
        return self.file.load.sanitise_name(name)

    @property
    def max_name_bytes(self) -> int | None:  # type: ignore[override]
        return self.file.load.max_name_bytes

    def converter_for(self, column: Column) -> Converter | None:
        return self.file.load.converter_for(column)

    def stream_columns(self) -> list[Column]:
        return list(self.file.add_columns(super().stream_columns()))

    def process_batch(self, context: dict) -> None:
        rows, token = self.take_buffer()
        if not rows:
            return
        file, columns = self.file, self.columns
        file.batches += 1
        self.rows_sent += len(rows)
        self.parts.uploader.submit(None, lambda: file.write(rows, columns, token), file.send)
