"""STATE goes out only when every record that came before it has been acknowledged.

Records are numbered as they arrive (`seen`). A STATE message is remembered with the number
of records before it. A record is *open* from its arrival until the platform acknowledges
the batch that carried it; what is open is tracked per batch: the first record number of
each sink's buffer and of each batch handed to the uploader. The lowest open number minus
one is the watermark: every STATE at or below it is safe, and the newest of those is
written. Nothing is written before the first STATE arrives, an unchanged STATE is not
written twice, and floats or Decimals in a tap's state are encoded safely (the SDK's own
writer crashes on them, meltano/sdk#3787).

Acknowledgements come from the sender thread and buffers change on the main thread, so
all bookkeeping happens under one lock; STATE lines are written under it too.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, TextIO

from target_core.conversions import dumps


class Checkpoint:
    """Tracks open records and writes the newest safe STATE to stdout."""

    def __init__(self, out: Callable[[], TextIO] = lambda: sys.stdout) -> None:
        self.seen = 0
        """Records received so far; the main thread increments it."""
        self._out = out
        self._lock = threading.Lock()
        self._open: dict[Hashable, int] = {}  # buffer or batch -> first record number in it
        self._pending: deque[tuple[int, Any]] = deque()  # (records before it, state)
        self._last_written: bytes | None = None
        self._silenced = False
        self.hold_until_end = False
        """Write nothing before the end of input (set when a resumed run would undo the
        rows an interrupted one loaded, e.g. a replace that starts with a truncate)."""

    def open(self, owner: Hashable, first_record: int) -> None:
        """A buffer starts filling, or a batch takes over a buffer's records."""
        with self._lock:
            self._open[owner] = first_record

    def move(self, old: Hashable, new: Hashable) -> None:
        """A buffer's records now travel as a batch (same first record number), or join
        records already open under `new` (a file part): `new` keeps the lower number."""
        with self._lock:
            if old in self._open:
                first = self._open.pop(old)
                self._open[new] = min(first, self._open.get(new, first))

    def close(self, owner: Hashable) -> None:
        """The platform acknowledged this batch (or the buffer turned out empty)."""
        with self._lock:
            self._open.pop(owner, None)
            self._write_safe()

    def state(self, value: Any) -> None:
        """A STATE message arrived after `seen` records (empty states are ignored)."""
        if not value:
            return
        with self._lock:
            if self._pending and self._pending[-1][0] == self.seen:
                self._pending.pop()  # no record between them: only the newer one matters
            self._pending.append((self.seen, value))
            self._write_safe()

    def flush(self, *, final: bool = False) -> None:
        """Write whatever has become safe; `final` at the end of the input."""
        with self._lock:
            if final:
                self.hold_until_end = False
            self._write_safe()

    def silence(self) -> None:
        """Write nothing more, whatever is acknowledged later (a run stopped at once).

        Taken under the lock, so a line being written by the sender thread is finished
        first and no line starts afterwards."""
        with self._lock:
            self._silenced = True

    @property
    def newest_state_position(self) -> int | None:
        """How many records came before the newest STATE not yet written."""
        with self._lock:
            return self._pending[-1][0] if self._pending else None

    def _write_safe(self) -> None:
        if self.hold_until_end or self._silenced:
            return
        watermark = min(self._open.values(), default=self.seen + 1) - 1
        newest = None
        while self._pending and self._pending[0][0] <= watermark:
            newest = self._pending.popleft()[1]
        if newest is None:
            return
        line = dumps(newest)
        if line == self._last_written:
            return
        out = self._out()
        out.write(line.decode() + "\n")
        out.flush()
        self._last_written = line
