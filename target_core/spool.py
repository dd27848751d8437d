"""Disk-backed rows, for formats that need a whole stream before they can write a byte.

SPSS files carry the row count and each string variable's width in their header, so a
stream's rows are first kept here and measured, then read back in the same batches to write
the real file (`formats.SpooledWriter`). Memory stays flat whatever the stream's length.

On disk a spool is a sequence of frames, one per batch: 4 bytes of length, then the batch
pickled and compressed with zlib level 1 (one C call each per batch, no per-row text; zlib
releases the GIL). The spool is the process's own temporary file, and pickle brings every
value back as it was written: Decimal, date and datetime included.
"""

from __future__ import annotations

import pickle
import struct
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

_LENGTH = struct.Struct("<I")


def utf8_widths(rows: Sequence[Sequence[Any]], width: int) -> list[int]:
    """Per column, the longest string value in UTF-8 bytes (0 when the column has none)."""
    widths = [0] * width
    for index, values in enumerate(zip(*rows, strict=False)):
        strings = [v for v in values if type(v) is str]
        if strings:
            widths[index] = max(map(len, map(str.encode, strings)))
    return widths


class RowSpool:
    """Batches of rows appended to a file, measured, then read back once in order."""

    def __init__(self, path: Path | str, width: int) -> None:
        self.path = Path(path)
        self.width = width
        """Values per row now; earlier batches may be narrower (a SCHEMA added columns)."""
        self.rows = 0
        self.string_widths = [0] * width
        """Per column: the longest string value seen, in UTF-8 bytes (0: none seen)."""
        self.size = 0
        """Bytes on disk."""
        self._file: IO[bytes] | None = self.path.open("wb")

    def write(self, rows: Sequence[Sequence[Any]]) -> None:
        """One batch of rows, each with `width` values."""
        if self._file is None:
            raise ValueError("the spool is closed for writing")
        if not rows:
            return
        frame = zlib.compress(pickle.dumps(rows, pickle.HIGHEST_PROTOCOL), 1)
        self._file.write(_LENGTH.pack(len(frame)))
        self._file.write(frame)
        self.size += _LENGTH.size + len(frame)
        self.rows += len(rows)
        self.string_widths = [
            max(a, b) for a, b in zip(self.string_widths, utf8_widths(rows, self.width),
                                      strict=True)
        ]

    def widen(self, width: int) -> None:
        """Rows from now on have `width` values (columns were added at the end)."""
        if width < self.width:
            raise ValueError("a spool's rows can only get wider")
        self.string_widths += [0] * (width - self.width)
        self.width = width

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def batches(self) -> Iterator[list[list[Any]]]:
        """The batches as written, each row padded with None to the current `width`."""
        self.close()
        width = self.width
        with self.path.open("rb") as spool:
            while header := spool.read(_LENGTH.size):
                (length,) = _LENGTH.unpack(header)
                rows = [list(row) for row in pickle.loads(zlib.decompress(spool.read(length)))]
                if rows and len(rows[0]) < width:
                    rows = [row + [None] * (width - len(row)) for row in rows]
                yield rows

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> RowSpool:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.discard()
