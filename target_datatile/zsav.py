"""A .zsav file written in flat memory: ReadStat's bytecode .sav stream, re-wrapped in zlib
blocks as it arrives.

A .zsav is a .sav whose data section (SPSS's bytecode-compressed rows) is compressed again,
in independent zlib blocks, between a *zheader* (three offsets, before the blocks) and a
*ztrailer* (the block index, after them). ReadStat writes .zsav files itself, but keeps every
compressed block in memory until the file is closed; its source says why
(``zsav_write_compressed_row`` in ``src/spss/readstat_zsav_write.c``):

    "Kind of frustrating that SPSS does double compression. If they just z-compressed the
    uncompressed data, we could calculate the block count in advance and write out the file
    in a streaming manner. As things stand we have to build up the file in memory until we
    know the final block count."

Its writer only appends; the zheader (before the data) holds the ztrailer's offset, known at
the end. We write to a real, seekable file, so :class:`ZsavStream` writes a placeholder
zheader, the blocks as they are compressed, the ztrailer, and then seeks back to patch the
zheader. Peak memory is a few blocks, whatever the stream's length.

The SPSS format is still the library's: readstat-arrow's ``SavWriter`` (ReadStat) writes a
bytecode-compressed .sav into this object (``compression="rows"``). This module changes only
what ReadStat's own .zsav writer changes (``$FL3`` and the compression field 2 in the header)
and wraps the data section, byte for byte, as ReadStat does: blocks of its uncompressed block
size, each one zlib stream, and the same zheader / ztrailer fields. Only the zlib level
differs (ReadStat's is zlib's default, 6): any level decompresses to the same bytes.

Where the dictionary ends is not announced in the stream (ReadStat writes the header and the
dictionary with the first row), so :func:`dictionary_length` writes a zero-row .sav with the
same schema and metadata in memory (the row count changes fixed-size fields only), and the
stream checks that the dictionary's termination record (999) is where that says.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import readstat_arrow

BLOCK_SIZE = 0x3FF000
"""ReadStat's uncompressed block size (``zsav_ctx_init``): 4,190,208 bytes."""

LEVEL = 1
"""zlib level 1: on the 45 MB data section of the 200k benchmark stream 0.31 s on one thread
(12.4 MB out), level 6 0.94 s (9.7 MB)."""

BUFFER_SIZE = 1 << 20
"""What the ``io.BufferedWriter`` in front of the stream gathers: ReadStat writes once per row
(about 48 bytes), and those calls stay in C until a megabyte is there."""

_HEADER_BYTES = 176
_LAYOUT_CODE_AT = 64
"""int32 2, in the byte order of the whole file (ReadStat writes its machine's)."""
_COMPRESSION_AT = 72
"""int32: 1 bytecode-compressed rows (.sav), 2 zlib blocks of them (.zsav)."""
_SAV, _ZSAV = (b"$FL2", 1), (b"$FL3", 2)
_END_OF_DICTIONARY = 999
"""The record type that closes the dictionary, followed by an int32 0."""
_ZTRAILER_BIAS = -100


class ZsavError(ValueError):
    """The .sav stream does not look as this module expects: no .zsav is made."""


def dictionary_length(schema: pa.Schema, metadata: readstat_arrow.Metadata) -> int:
    """Bytes of header and dictionary ReadStat writes before the data for this schema and
    metadata: a zero-row bytecode .sav of them, written in memory."""
    empty = io.BytesIO()
    readstat_arrow.SavWriter(empty, schema, 0, metadata, compression="rows").close()
    return len(empty.getvalue())


class ZsavStream(io.RawIOBase):
    """The raw file object readstat-arrow writes a bytecode .sav into; ``path`` gets the
    .zsav. Put an ``io.BufferedWriter`` in front of it (:func:`open_zsav`).

    ``dictionary_bytes`` is where the data section starts (:func:`dictionary_length`). Data
    is cut into ``block_size`` blocks, each compressed on one of ``threads`` worker threads
    (zlib releases the GIL), at most ``threads + 1`` blocks in flight, written in order.
    :meth:`close` writes the last block and the ztrailer and patches the zheader;
    :meth:`discard` makes :meth:`close` drop everything and remove the file instead.
    """

    def __init__(self, path: Path | str, dictionary_bytes: int, *,
                 block_size: int = BLOCK_SIZE, level: int = LEVEL, threads: int = 2) -> None:
        super().__init__()
        if dictionary_bytes < _HEADER_BYTES + 8:
            raise ValueError(f"a .sav dictionary is longer than {dictionary_bytes} bytes")
        self.path = Path(path)
        self.block_size = block_size
        self.level = level
        self.blocks: list[tuple[int, int]] = []
        """(uncompressed, compressed) size of each block written so far."""
        self._dictionary_bytes = dictionary_bytes
        self._dictionary: bytearray | None = bytearray()
        """Header and dictionary as they arrive (None once written)."""
        self._order = "<"
        self._pending = bytearray()
        self._in_flight: deque[tuple[int, Future[bytes]]] = deque()
        self._max_in_flight = threads + 1
        self._received = 0
        self._discarding = False
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="zsav")
        self._file = open(self.path, "wb", buffering=0)  # noqa: SIM115 - closed in close()

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        """Bytes of the .sav stream received."""
        return self._received

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(data).cast("B")
        size = len(view)
        self._received += size
        if self._discarding:
            return size
        try:
            self._take(view)
        except BaseException:
            self._discarding = True  # nothing more is written; close() removes the file
            raise
        return size

    def _take(self, view: memoryview) -> None:
        if self._dictionary is not None:
            take = min(len(view), self._dictionary_bytes - len(self._dictionary))
            self._dictionary += view[:take]
            view = view[take:]
            if len(self._dictionary) == self._dictionary_bytes:
                self._start_data(self._dictionary)
                self._dictionary = None
        if view:
            self._pending += view
            while len(self._pending) >= self.block_size:
                self._compress(bytes(self._pending[:self.block_size]))
                del self._pending[:self.block_size]

    def _start_data(self, dictionary: bytearray) -> None:
        """Check the header and the end of the dictionary, make it a .zsav's, write it and
        a placeholder zheader."""
        layout = dictionary[_LAYOUT_CODE_AT:_LAYOUT_CODE_AT + 4]
        orders = [order for order in "<>" if struct.unpack(order + "i", layout)[0] == 2]
        if not orders:
            raise ZsavError("the .sav header's layout code is not 2")
        self._order = order = orders[0]
        magic = bytes(dictionary[:4])
        (compression,) = struct.unpack_from(order + "i", dictionary, _COMPRESSION_AT)
        if (magic, compression) != _SAV:
            raise ZsavError(f"expected a bytecode-compressed .sav ({_SAV}), got "
                            f"{(magic, compression)}")
        end = struct.unpack_from(order + "ii", dictionary, self._dictionary_bytes - 8)
        if end != (_END_OF_DICTIONARY, 0):
            raise ZsavError(f"the .sav dictionary does not end at byte {self._dictionary_bytes} "
                            f"(no termination record 999 there: {end})")
        dictionary[:4] = _ZSAV[0]
        struct.pack_into(order + "i", dictionary, _COMPRESSION_AT, _ZSAV[1])
        self._file.write(dictionary)
        self._file.write(bytes(24))  # the zheader, patched in close()

    def _compress(self, block: bytes) -> None:
        self._in_flight.append((len(block), self._pool.submit(zlib.compress, block,
                                                              self.level)))
        while len(self._in_flight) > self._max_in_flight:
            self._write_oldest()

    def _write_oldest(self) -> None:
        size, future = self._in_flight.popleft()
        compressed = future.result()
        self._file.write(compressed)
        self.blocks.append((size, len(compressed)))

    def discard(self) -> None:
        """The file will not be finished: :meth:`close` removes it and writes nothing more."""
        self._discarding = True

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._discarding:
                self._finish()
        except BaseException:
            self._discarding = True
            raise
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._in_flight.clear()
            self._pending = bytearray()
            self._file.close()
            if self._discarding:
                self.path.unlink(missing_ok=True)
            super().close()

    def _finish(self) -> None:
        if self._dictionary is not None:
            raise ZsavError(f"the .sav stream ended after {self._received} bytes, inside "
                            f"its dictionary ({self._dictionary_bytes} bytes)")
        if self._pending:
            self._compress(bytes(self._pending))
        while self._in_flight:
            self._write_oldest()
        order, start = self._order, self._dictionary_bytes
        trailer = bytearray(struct.pack(order + "qqii", _ZTRAILER_BIAS, 0, self.block_size,
                                        len(self.blocks)))
        uncompressed_at, compressed_at = start, start + 24
        for uncompressed, compressed in self.blocks:
            trailer += struct.pack(order + "qqii", uncompressed_at, compressed_at,
                                   uncompressed, compressed)
            uncompressed_at += uncompressed
            compressed_at += compressed
        self._file.write(trailer)
        self._file.seek(start)
        self._file.write(struct.pack(order + "qqq", start, compressed_at, len(trailer)))


def open_zsav(path: Path | str, dictionary_bytes: int, **options: int) -> \
        tuple[io.BufferedWriter, ZsavStream]:
    """The buffered file object to hand to ``SavWriter`` (``compression="rows"``), and the
    stream under it (to :meth:`ZsavStream.discard`). Closing the first finishes the .zsav."""
    stream = ZsavStream(path, dictionary_bytes, **options)
    return io.BufferedWriter(stream, buffer_size=BUFFER_SIZE), stream
