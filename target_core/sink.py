"""The Sinks every platform builds on: rows in column order, handed to the uploader.

`RowSink` is what both paths share: validation with the compiled validator, one generated
row encoder per schema, size limits in rows and bytes, and the checkpoint entry of the
buffered records. Two paths build on it:

- `CoreSink` (here), the batch-call path: each full buffer becomes one platform call. A
  platform sink says how a property name becomes a column name (`sanitise_name`), how a
  neutral column type becomes values (`converter_for`), and how a batch of encoded rows
  reaches the platform (`prepare_batch` on the packer thread, e.g. compression, then
  `send_batch` on the sender thread).
- `filesink.FileSink`, the file path: buffers go into the stream's files.

Sinks are handed what they use (`SinkParts`: the checkpoint and the uploader; a platform
adds its client and destination registry) when the target creates them, so no sink
imports or reaches back into a target.
"""

from __future__ import annotations

import abc
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import fastjsonschema
from singer_sdk import Target
from singer_sdk.exceptions import InvalidRecord, MissingKeyPropertiesError
from singer_sdk.sinks import BatchSink

from target_core.budget import BatchBudget
from target_core.checkpoint import Checkpoint
from target_core.columns import Column, columns_from_schema, identifier
from target_core.conversions import decimal_to_raw, raw_to_decimal
from target_core.rows import Converter, RowError, compile_row_encoder
from target_core.uploads import Uploader
from target_core.validation import RecordProblem, RecordValidator, describe

logger = logging.getLogger(__name__)
_SAMPLE_BYTES = 1024 * 1024
"""Encoded rows packed once, at the first batch, to learn what a byte costs as sent."""


Acknowledged = Callable[[str, int, int, float], None]
"""(stream, batch number, rows, seconds): a batch landed; called on the sender thread."""


@dataclass(frozen=True)
class SinkParts:
    """What a sink is handed by its target: platforms subclass it to add their own."""

    checkpoint: Checkpoint
    uploader: Uploader
    budget: BatchBudget | None = field(default=None, kw_only=True)
    """Batches sized by request bytes (batch-call platforms with a byte budget setting)."""
    acknowledged: Acknowledged | None = field(default=None, kw_only=True)
    """Told of every landed batch, for the progress lines."""


class RowSink(BatchSink, abc.ABC):
    """Validates and encodes a stream's records into a buffer of rows."""

    MAX_SIZE_DEFAULT = 10_000
    """Rows per batch when the target has neither a byte budget nor `batch_size_rows`."""
    max_batch_bytes = 32 * 1024 * 1024
    """Uncompressed JSON bytes that always end a batch (memory); platforms may lower it.
    With `rows_as_tuples` the limit counts values instead (a tuple row's length)."""
    rows_as_tuples = False
    """Rows as tuples of converted values (file sinks) instead of JSON text (batch calls)."""
    max_name_bytes: int | None = None
    """The platform's longest column name in UTF-8 bytes (None: no limit); see
    `columns.unique_names`."""

    def __init__(self, target: Target, stream_name: str, schema: dict,
                 key_properties: Sequence[str] | None, *, parts: SinkParts) -> None:
        self.parts = parts
        super().__init__(target, stream_name, schema, key_properties)

    # -- what a platform provides ------------------------------------------------------

    def sanitise_name(self, name: str) -> str:
        """A property name -> a column name the platform accepts."""
        return identifier(name)

    @abc.abstractmethod
    def converter_for(self, column: Column) -> Converter | None:
        """The value conversion for a column (None: send the value as it is)."""

    # -- set-up ------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.columns: list[Column] = self.stream_columns()
        self.encode_row, self.encoder_validates = compile_row_encoder(
            [c.source for c in self.columns],
            [self.converter_for(c) for c in self.columns],
            self.schema if self.validate_schema else None,
            as_tuple=self.rows_as_tuples,
        )
        if self.validate_schema and not self.encoder_validates:
            self.logger.info("Stream '%s': schema keywords beyond the generated checks; "
                             "validating with fastjsonschema", self.stream_name)
        self.check = self._fallback_check()
        self.key_names = tuple(self.key_properties)
        # With a byte budget, `batch_size_rows` is only an optional cap.
        budgeted = self.parts.budget is not None and self.batch_size_rows is None
        self.batch_limit = sys.maxsize if budgeted else self.max_size
        self.byte_limit = self.max_batch_bytes
        self.rows: list[Any] = []
        self.first_record = 0
        self.lean_records = 0
        self.buffered_bytes = 0
        self.batches_sent = 0
        self.rows_sent = 0

    def stream_columns(self) -> list[Column]:
        """The columns rows are encoded for: the schema's, in order."""
        return columns_from_schema(self.schema, self.key_properties, self.sanitise_name,
                                   self.max_name_bytes)

    def get_validator(self) -> RecordValidator | None:
        return RecordValidator(self.schema) if self.validate_schema else None

    def _fallback_check(self) -> Callable[[dict], Any] | None:
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

    def add(self, record: dict) -> bool:
        """The lean path for one record: validate, check keys, encode, buffer.

        Does what the SDK's record path does for a stream without maps, flattening or
        `_sdc` metadata, in one call. Returns True when the batch is full.
        """
        try:
            if self.check is not None:
                self.check(raw_to_decimal(record))  # fastjsonschema knows Decimal, not Raw
            row = self.encode_row(record)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise InvalidRecord(f"stream '{self.stream_name}': {describe(exc)}", {}) from None
        except (RowError, RecordProblem) as exc:
            raise InvalidRecord(f"stream '{self.stream_name}': {exc}", {}) from None
        for key in self.key_names:
            if key not in record:
                raise MissingKeyPropertiesError(
                    f"stream '{self.stream_name}': record lacks key property '{key}'")
        rows = self.rows
        if not rows:
            self._open_buffer()
        rows.append(row)
        self.buffered_bytes += len(row)
        self._total_records_read += 1
        self._batch_records_read += 1
        self.lean_records += 1
        return (self._batch_records_read >= self.batch_limit
                or (self.buffered_bytes >= self.byte_limit and self._over_byte_limit()))

    def _over_byte_limit(self) -> bool:
        """Whether the buffer's bytes end the batch (`CoreSink` looks at its budget again)."""
        return self.buffered_bytes >= self.byte_limit

    def process_record(self, record: dict, context: dict | None) -> None:
        """The SDK's path (stream maps, flattening): validated already, encode and buffer.

        The target handed the SDK Decimals (its own convention); they become exact number
        text again here, as do floats a map computed (positional, never `1e-06`)."""
        try:
            row = self.encode_row(decimal_to_raw(record))
        except (RowError, RecordProblem) as exc:
            raise InvalidRecord(f"stream '{self.stream_name}': {exc}", {}) from None
        if not self.rows:
            self._open_buffer()
        self.rows.append(row)
        self.buffered_bytes += len(row)

    def _open_buffer(self) -> None:
        self.first_record = self.parts.checkpoint.seen
        self.parts.checkpoint.open(self, self.first_record)
        budget = self.parts.budget
        self.byte_limit = (self.max_batch_bytes if budget is None
                           else min(self.max_batch_bytes, budget.encoded_limit()))

    @property
    def is_full(self) -> bool:
        return (self._batch_records_read >= self.batch_limit
                or (self.buffered_bytes >= self.byte_limit and self._over_byte_limit()))

    def take_buffer(self) -> tuple[list[Any], object]:
        """The buffered rows, and the checkpoint key their records are now open under
        (empty rows: nothing was buffered). The buffer starts afresh."""
        rows, self.rows, self.buffered_bytes = self.rows, [], 0
        token = object()
        if rows:
            self.parts.checkpoint.move(self, token)
        return rows, token

    def start_drain(self) -> dict:
        # The lean path skips the per-record metric call; its records are counted here.
        if self.lean_records:
            self.record_counter_metric.increment(self.lean_records)
            self.lean_records = 0
        return super().start_drain()


class CoreSink(RowSink):
    """The batch-call path: a full buffer becomes one upload job (one platform call)."""

    def prepare_batch(self, rows: list[bytes]) -> Any:
        """CPU work on a batch before it is sent (e.g. compression); packer thread.

        It runs while the previous batch is still being sent."""
        return rows

    send_needs_rows = True
    """False when what `prepare_batch` returns is all `send_batch` needs: the rows are then
    let go as soon as the batch is packed (`send_batch` gets None), so a batch waiting for
    the rate limit holds its compressed form only (a few MB, not tens)."""

    @abc.abstractmethod
    def send_batch(self, rows: list[bytes] | None, prepared: Any) -> None:
        """Deliver rows (each the JSON text of one row) to the platform; sender thread.

        `prepared` is what `prepare_batch` returned for these rows; `rows` is None when
        the sink set `send_needs_rows = False`."""

    def _over_byte_limit(self) -> bool:
        """The byte limit is set when a buffer opens; the budget may have learnt since (the
        packer measures each batch): look again before ending the batch."""
        budget = self.parts.budget
        if budget is not None:
            if not budget.measurements:  # the first batch of the run: measure a sample
                sample, size = [], 0
                for row in self.rows:
                    sample.append(row)
                    size += len(row)
                    if size >= _SAMPLE_BYTES:
                        break
                self.prepare_batch(sample)  # reports its size to the budget
            self.byte_limit = min(self.max_batch_bytes, budget.encoded_limit())
        return self.buffered_bytes >= self.byte_limit

    def process_batch(self, context: dict) -> None:
        rows, token = self.take_buffer()
        if not rows:
            return
        number = self.batches_sent = self.batches_sent + 1
        count = len(rows)
        held: list[list[bytes] | None] = [rows]  # the only reference the jobs keep
        del rows

        def prepare() -> Any:
            ready = self.prepare_batch(held[0])  # type: ignore[arg-type]
            if not self.send_needs_rows:
                held[0] = None
            return ready

        self.parts.uploader.submit(
            token, prepare, lambda ready: self._send(held[0], count, ready, number))

    def _send(self, rows: list[bytes] | None, count: int, prepared: Any, number: int) -> None:
        started = time.monotonic()
        self.send_batch(rows, prepared)
        self.rows_sent += count
        if self.parts.acknowledged is not None:
            self.parts.acknowledged(self.stream_name, number, count, time.monotonic() - started)
