"""How big a batch is: a budget of request bytes as sent, learnt from the platform's answers.

Where a platform limits calls, a call's size is what buys speed: the fullest call the
platform accepts. Rows are counted as they are encoded (uncompressed JSON), but a call
carries them compressed and encoded, so the budget keeps the ratio of bytes sent to bytes
encoded as measured on the last batch, and turns the request budget into a number of
encoded bytes that ends a batch.

It adapts, for the rest of the run:
- a 413 (payload too large) for a body of N bytes lowers the budget to 90% of N, and the
  refused rows are re-sent in pieces that fit;
- an answer slower than `slow_seconds` halves the budget (never below `floor`): a platform
  that takes that long is struggling with the size, and a timeout would cost a whole call.
Both are logged once per change, with the new size.
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
        floor: int = 256 * 1024,
    ) -> None:
        self.request_bytes = request_bytes
        """The most bytes one call should carry (the setting, or what the platform taught)."""
        self.ratio = first_ratio
        """Bytes sent per encoded byte, from the last batch (a first guess before that)."""
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

    def refused(self, sent: int) -> None:
        """The platform answered 413 to a request of `sent` bytes."""
        with self._lock:
            new = max(self.floor, int(sent * 0.9))
            if new < self.request_bytes:
                logger.warning("The platform refused a %s request as too large (HTTP 413): "
                               "batches now aim at %s per call", _size(sent), _size(new))
                self.request_bytes = new

    def answered_in(self, seconds: float) -> None:
        """A call's answer took `seconds`: halve the budget when that is slow."""
        if seconds < self.slow_seconds:
            return
        with self._lock:
            new = max(self.floor, self.request_bytes // 2)
            if new < self.request_bytes:
                logger.warning("The platform took %.0f s to answer (slow: %.0f s or more): "
                               "batches now aim at %s per call", seconds, self.slow_seconds,
                               _size(new))
                self.request_bytes = new


def _size(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KiB"
