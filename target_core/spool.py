"""Disk-backed batches, for platforms that take a whole file per stream and run.

DataTile (one SPSS/CSV upload per stream) and uSmart (one CSV file per stream, then a
revision) cannot send rows as they come: a run's rows must become one file. Keeping them
in memory would grow with the stream; a `RowSpool` writes each encoded row (the JSON array
bytes the row encoder makes) to a temporary gzip file as it arrives, so memory stays flat
whatever the stream's length, and reads them back once, in order, to build the upload:
CSV here; Parquet (pyarrow) and SPSS (pyreadstat) join with the targets that need them.
"""

from __future__ import annotations

import csv
import gzip
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import msgspec

_decode_row = msgspec.json.Decoder(list).decode


class RowSpool:
    """Rows appended to a temporary gzip (level 1) JSON-lines file, then read back once."""

    def __init__(self, directory: Path | str | None = None, prefix: str = "rows-") -> None:
        handle, name = tempfile.mkstemp(prefix=prefix, suffix=".jsonl.gz", dir=directory)
        os.close(handle)
        self.path = Path(name)
        self._file: gzip.GzipFile | None = gzip.GzipFile(self.path, "wb", compresslevel=1)
        self.rows = 0
        self.raw_bytes = 0

    def write(self, row: bytes) -> None:
        """One encoded row (`b'[1,"a",null]'`)."""
        if self._file is None:
            raise ValueError("the spool is closed for writing")
        self._file.write(row + b"\n")
        self.rows += 1
        self.raw_bytes += len(row) + 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def read_rows(self) -> Iterator[list[Any]]:
        """The rows, decoded, in the order they were written."""
        self.close()
        with gzip.open(self.path, "rb") as lines:
            for line in lines:
                yield _decode_row(line)

    def write_csv(self, destination: Path | str, header: Sequence[str]) -> Path:
        """A UTF-8 CSV file of the rows (header first; nulls as empty fields), streamed."""
        destination = Path(destination)
        with destination.open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(header)
            for row in self.read_rows():
                writer.writerow(row)
        return destination

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> RowSpool:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.discard()

