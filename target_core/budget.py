"""How big a batch is: a budget of request bytes as sent, learnt from the platform's answers.

Where a platform limits calls, a call's size is what buys speed: the fullest call the
platform accepts. Rows are counted as they are encoded (uncompressed JSON), but a call
carries them compressed and encoded, so the budget keeps the ratio of bytes sent to bytes
encoded as measured on the last batch, and turns the request budget into a number of
encoded bytes that ends a batch.

It adapts, for the rest of the run:
- a 413 (payload too large) for a body of N bytes sets a ceiling of 90% of N that the
  budget never passes again, and cuts the budget to a quarter of N (so a limit far below
  the first guess is found in a few refusals, not one halving per refused call); the
  refused rows are re-sent in pieces of the new size;
- each fast answer then lets the budget grow by a quarter, up to the ceiling (or the
  setting), so a cut that went too deep is made good within a few calls;
- an answer slower than `slow_seconds` halves the budget (not below `floor`): a platform
  that takes that long is struggling with the size, and a timeout would cost a whole call.
Every cut is logged, with the new size.
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)


class BatchBudget:
    """The request size a batch aims at, shared by every stream of a run."""

    def __init__(
        self,
        request_bytes: int,
        *,
        first_ratio: float = 0.5,
        slow_seconds: float = 60.0,
        floor: int = 16 * 1024,
    ) -> None:
        self.request_bytes = request_bytes
        """The bytes one call should carry now (the setting, or what the platform taught)."""
        self.ceiling = request_bytes
        """Never aim above this: the setting, or 90% of the smallest body refused (413)."""
        self.ratio = first_ratio
        """Bytes sent per encoded byte, from the last batch (a first guess before that)."""
        self.measurements = 0
        self.refused_at: int | None = None
        """The smallest request size the platform refused (413), if any."""
        self.slow_seconds = slow_seconds
        self.floor = floor
        self._lock = threading.Lock()

    def encoded_limit(self) -> int:
        """Encoded (uncompressed JSON) bytes that make a batch as big as the budget."""
        return max(1, int(self.request_bytes / max(self.ratio, 1e-3)))

    def measured(self, encoded: int, sent: int) -> None:
        """A batch was prepared: `encoded` bytes of rows became a `sent`-byte request."""
        if encoded > 0 and sent > 0:
            self.ratio = sent / encoded * 1.02  # 2% head room for batch-to-batch variation
            self.measurements += 1

    def known_too_large(self, sent: int) -> bool:
        """Whether a 413 already showed that a request of `sent` bytes will be refused."""
        return self.refused_at is not None and sent >= self.refused_at

    def refused(self, sent: int) -> None:
        """The platform answered 413 to a request of `sent` bytes."""
        with self._lock:
            # the platform's limit is what it is: no floor here (the sink splits down to
            # single rows, and a row too large for the platform is an error of its own)
            self.refused_at = min(sent, self.refused_at or sent)
            self.ceiling = max(1, min(self.ceiling, int(sent * 0.9)))
            new = max(1, min(self.request_bytes, sent // 4))
            logger.warning("The platform refused a %s request as too large (HTTP 413): "
                           "batches now aim at %s per call (at most %s from now on)",
                           _size(sent), _size(new), _size(self.ceiling))
            self.request_bytes = new

    def answered_in(self, seconds: float) -> None:
        """A call was answered in `seconds`: halve the budget when that is slow, else let
        it grow back towards the ceiling."""
        with self._lock:
            if seconds < self.slow_seconds:
                self.request_bytes = min(self.ceiling, int(self.request_bytes * 1.25))
                return
            new = max(self.floor, self.request_bytes // 2)
            self.ceiling = min(self.ceiling, new)  # no growing back into slow sizes
            if new < self.request_bytes:
                logger.warning("The platform took %.0f s to answer (slow: %.0f s or more): "
                               "batches now aim at %s per call", seconds, self.slow_seconds,
                               _size(new))
                self.request_bytes = new


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KiB"
