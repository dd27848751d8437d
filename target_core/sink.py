"""The Sink every platform builds on: rows in column order, batches handed to the uploader.

A platform sink says three things: how a property name becomes a column name
(`sanitise_name`), how a neutral column type becomes values (`converter_for`), and how a
batch of encoded rows reaches the platform (`send_batch`, run on the uploader thread).
Everything else is here: validation with the compiled validator, one generated row
encoder per schema, size limits in rows and bytes, and the hand-over that tells the
checkpoint which records travel in which batch.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from singer_sdk.exceptions import InvalidRecord
from singer_sdk.sinks import BatchSink

from target_core.columns import Column, columns_from_schema, identifier
from target_core.rows import Converter, RowError, compile_row_encoder
from target_core.validation import RecordProblem, RecordValidator

if TYPE_CHECKING:
    from target_core.target import CoreTarget

logger = logging.getLogger(__name__)


class CoreSink(BatchSink, abc.ABC):
    """Buffers encoded rows; a full buffer becomes one upload job."""

    MAX_SIZE_DEFAULT = 10_000
    max_batch_bytes = 32 * 1024 * 1024
    """Uncompressed JSON bytes that end a batch early (wide rows); platforms may lower it."""

    def __init__(self, target: CoreTarget, *args: Any, **kwargs: Any) -> None:
        self.core_target = target  # the SDK 0.54 Sink keeps no reference to its target
        super().__init__(target, *args, **kwargs)

    # -- what a platform provides ------------------------------------------------------

    def sanitise_name(self, name: str) -> str:
        """A property name -> a column name the platform accepts."""
        return identifier(name)

    @abc.abstractmethod
    def converter_for(self, column: Column) -> Converter | None:
        """The value conversion for a column (None: send the value as it is)."""

    @abc.abstractmethod
    def send_batch(self, rows: list[bytes]) -> None:
        """Deliver rows (each the JSON text of one row) to the platform; uploader thread."""

    # -- set-up ------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.columns: list[Column] = columns_from_schema(
            self.schema, self.key_properties, self.sanitise_name
        )
        self.encode_row, self.encoder_validates = compile_row_encoder(
            [c.source for c in self.columns],
            [self.converter_for(c) for c in self.columns],
            self.schema if self.validate_schema else None,
        )
        if self.validate_schema and not self.encoder_validates:
            self.logger.info("Stream '%s': schema keywords beyond the generated checks; "
                             "validating with fastjsonschema", self.stream_name)
        self.rows: list[bytes] = []
        self.first_record = 0
        self.lean_records = 0
        self.buffered_bytes = 0
        self.batches_sent = 0
        self.rows_sent = 0

    def get_validator(self) -> RecordValidator | None:
        return RecordValidator(self.schema) if self.validate_schema else None

    @property
    def check(self) -> Callable[[dict], Any] | None:
        """The validation to run before encoding: None when off or done by the encoder."""
        validator = self._validator
        if self.encoder_validates or not isinstance(validator, RecordValidator):
            return None
        return validator.check

    def _validate_and_parse(self, record: dict) -> dict:
        """SDK path: validate with a message that names the stream; date-times stay strings."""
        if self._validator is not None and not self.encoder_validates:
            try:
                self._validator.validate(record)
            except InvalidRecord as exc:
                message = f"stream '{self.stream_name}': {exc.error_message}"
                raise InvalidRecord(message, {}) from None
        return record

    # -- records -----------------------------------------------------------------------

    def process_record(self, record: dict, context: dict | None) -> None:
        try:
            row = self.encode_row(record)
        except (RowError, RecordProblem) as exc:
            raise InvalidRecord(f"stream '{self.stream_name}': {exc}", {}) from None
        if not self.rows:
            self.first_record = self.core_target.checkpoint.seen
            self.core_target.checkpoint.open(self, self.first_record)
        self.rows.append(row)
        self.buffered_bytes += len(row)

    @property
    def is_full(self) -> bool:
        return (self._batch_records_read >= self.max_size
                or self.buffered_bytes >= self.max_batch_bytes)

    # -- batches -----------------------------------------------------------------------

    def start_drain(self) -> dict:
        # The lean path skips the per-record metric call; its records are counted here.
        if self.lean_records:
            self.record_counter_metric.increment(self.lean_records)
            self.lean_records = 0
        return super().start_drain()

    def process_batch(self, context: dict) -> None:
        rows, self.rows, self.buffered_bytes = self.rows, [], 0
        if not rows:
            return
        token = object()
        self.core_target.checkpoint.move(self, token)
        number = self.batches_sent = self.batches_sent + 1
        self.core_target.uploader.submit(token, lambda: self._send(rows, number))

    def _send(self, rows: Sequence[bytes], number: int) -> None:
        started = time.monotonic()
        self.send_batch(list(rows))
        self.rows_sent += len(rows)
        self.logger.info("Stream '%s': batch %d (%d rows) acknowledged in %.1f s; %d rows loaded",
                         self.stream_name, number, len(rows), time.monotonic() - started,
                         self.rows_sent)
