"""A .zsav file written in flat memory: ReadStat's bytecode .sav stream, re-wrapped in zlib
blocks as it arrives.

A .zsav is a .sav whose data section (SPSS's bytecode-compressed rows) is compressed again,
in independent zlib blocks, between a *zheader* (three offsets, before the blocks) and a
*ztrailer* (the block index, after them). ReadStat writes .zsav files itself, but keeps every
compressed block in memory until the file is closed. Its source says why, in a comment of
``zsav_write_compressed_row`` (``src/spss/readstat_zsav_write.c``): since SPSS compresses
twice (bytecode, then zlib), the block count is not known in advance, so "we have to build up
the file in memory until we know the final block count". Its writer only appends, and the
zheader (before the data) holds the ztrailer's offset, known only at the end.

We write to a real, seekable file, so :class:`ZsavStream` writes a placeholder zheader, the
blocks as they are compressed, the ztrailer, and then seeks back to patch the zheader. Peak
memory is a few megabytes queued for the deflate, whatever the stream's length.

The SPSS format is still the library's: readstat-arrow's ``SavWriter`` (ReadStat) writes a
bytecode-compressed .sav into this object (``compression="rows"``). This module changes only
what ReadStat's own .zsav writer changes (``$FL3`` and the compression field 2 in the header)
and wraps the data section, byte for byte, as ReadStat does: blocks of its uncompressed block
size, each one zlib stream, and the same zheader / ztrailer fields. Only the deflate
differs: ISA-L's (``isal``, zlib-format streams) at level 1 where ReadStat uses zlib's
default level 6; any zlib reader inflates both to the same bytes.

Where the dictionary ends is not announced in the stream (ReadStat writes the header and the
dictionary with the first row), so :func:`dictionary_length` writes a zero-row .sav with the
same schema and metadata in memory (the row count changes fixed-size fields only), and the
stream checks that the dictionary's termination record (999) is where that says.
"""

from __future__ import annotations

import io
import struct
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import readstat_arrow
from isal import isal_zlib

BLOCK_SIZE = 0x3FF000
"""ReadStat's uncompressed block size (``zsav_ctx_init``): 4,190,208 bytes."""

LEVEL = 1
"""ISA-L's level 1 (it has 0-3). On the 45 MB data section of the 200k benchmark stream, one
thread, 4 MB blocks fed a megabyte at a time: ISA-L level 1 0.076 s (11.9 MB out), level 3
0.17 s (11.5 MB); zlib level 1 0.30 s (12.4 MB), level 6 0.90 s (9.7 MB). At 0.076 s the
deflate keeps up with ReadStat's row loop (about 0.2 s) on the other core; zlib's did not."""

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

    ``dictionary_bytes`` is where the data section starts (:func:`dictionary_length`). The
    data is cut into ``block_size`` blocks, each one zlib stream. The pieces that arrive (a
    buffer's worth) are compressed and written in order by one worker thread (ISA-L and file
    writes release the GIL, so it runs beside ReadStat's row loop), at most ``in_flight`` of
    them queued: memory holds a few pieces and one deflate state, never a whole block.
    :meth:`close` finishes the last block, writes the ztrailer and patches the zheader;
    :meth:`discard` makes :meth:`close` drop everything and remove the file instead.
    """

    def __init__(self, path: Path | str, dictionary_bytes: int, *,
                 block_size: int = BLOCK_SIZE, level: int = LEVEL, in_flight: int = 2) -> None:
        super().__init__()
        if dictionary_bytes < _HEADER_BYTES + 8:
            raise ValueError(f"{dictionary_bytes} bytes cannot hold a .sav header and "
                             "dictionary")
        self.path = Path(path)
        self.block_size = block_size
        self.level = level
        self.blocks: list[tuple[int, int]] = []
        """(uncompressed, compressed) size of each finished block (the worker's)."""
        self._dictionary_bytes = dictionary_bytes
        self._dictionary: bytearray | None = bytearray()
        """Header and dictionary as they arrive (None once written)."""
        self._order = "<"
        self._filled = 0
        """Bytes handed to the worker for the current block."""
        self._queued: deque[Future[None]] = deque()
        self._in_flight = in_flight
        self._received = 0
        self._discarding = False
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="zsav")
        self._deflater = isal_zlib.compressobj(level)  # a zlib stream per block
        self._block_in = self._block_out = 0
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()

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
        while view:
            take = min(len(view), self.block_size - self._filled)
            self._filled += take
            ends_block = self._filled == self.block_size
            self._queue(bytes(view[:take]), ends_block)  # a copy: the buffer is reused
            view = view[take:]
            if ends_block:
                self._filled = 0

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

    def _queue(self, piece: bytes, ends_block: bool) -> None:
        self._queued.append(self._worker.submit(self._deflate, piece, ends_block))
        while len(self._queued) > self._in_flight:
            self._queued.popleft().result()  # waits; a worker's error is raised here

    def _deflate(self, piece: bytes, ends_block: bool) -> None:
        """On the worker: compress a piece of the current block and write what came out."""
        out = self._deflater.compress(piece)
        if ends_block:
            out += self._deflater.flush()
        self._file.write(out)
        self._block_in += len(piece)
        self._block_out += len(out)
        if ends_block:
            self.blocks.append((self._block_in, self._block_out))
            self._block_in = self._block_out = 0
            self._deflater = isal_zlib.compressobj(self.level)

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
            self._worker.shutdown(wait=True, cancel_futures=True)
            self._queued.clear()
            self._file.close()
            if self._discarding:
                self.path.unlink(missing_ok=True)
            super().close()

    def _finish(self) -> None:
        if self._dictionary is not None:
            raise ZsavError(f"the .sav stream ended after {self._received} bytes, inside "
                            f"its dictionary ({self._dictionary_bytes} bytes)")
        if self._filled:
            self._queue(b"", ends_block=True)
        while self._queued:
            self._queued.popleft().result()
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
