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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import fastjsonschema
from singer_sdk import Target
from singer_sdk.exceptions import InvalidRecord, MissingKeyPropertiesError
from singer_sdk.sinks import BatchSink

from target_core.checkpoint import Checkpoint
from target_core.columns import Column, columns_from_schema, identifier
from target_core.rows import Converter, RowError, compile_row_encoder
from target_core.uploads import Uploader
from target_core.validation import RecordProblem, RecordValidator, describe

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SinkParts:
    """What a sink is handed by its target: platforms subclass it to add their own."""

    checkpoint: Checkpoint
    uploader: Uploader


class RowSink(BatchSink, abc.ABC):
    """Validates and encodes a stream's records into a buffer of rows."""

    MAX_SIZE_DEFAULT = 10_000
    max_batch_bytes = 32 * 1024 * 1024
    """Uncompressed JSON bytes that end a batch early (wide rows); platforms may lower it.
    With `rows_as_tuples` the budget counts values instead (a tuple row's length)."""
    rows_as_tuples = False
    """Rows as tuples of converted values (file sinks) instead of JSON text (batch calls)."""

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
        self.batch_limit = self.max_size
        self.rows: list[Any] = []
        self.first_record = 0
        self.lean_records = 0
        self.buffered_bytes = 0
        self.batches_sent = 0
        self.rows_sent = 0

    def stream_columns(self) -> list[Column]:
        """The columns rows are encoded for: the schema's, in order."""
        return columns_from_schema(self.schema, self.key_properties, self.sanitise_name)

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
                self.check(record)
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
                or self.buffered_bytes >= self.max_batch_bytes)

    def process_record(self, record: dict, context: dict | None) -> None:
        """The SDK's path (stream maps, flattening): validated already, encode and buffer."""
        try:
            row = self.encode_row(record)
        except (RowError, RecordProblem) as exc:
            raise InvalidRecord(f"stream '{self.stream_name}': {exc}", {}) from None
        if not self.rows:
            self._open_buffer()
        self.rows.append(row)
        self.buffered_bytes += len(row)

    def _open_buffer(self) -> None:
        self.first_record = self.parts.checkpoint.seen
        self.parts.checkpoint.open(self, self.first_record)

    @property
    def is_full(self) -> bool:
        return (self._batch_records_read >= self.batch_limit
                or self.buffered_bytes >= self.max_batch_bytes)

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

    @abc.abstractmethod
    def send_batch(self, rows: list[bytes], prepared: Any) -> None:
        """Deliver rows (each the JSON text of one row) to the platform; sender thread.

        `prepared` is what `prepare_batch` returned for these rows."""

    def process_batch(self, context: dict) -> None:
        rows, token = self.take_buffer()
        if not rows:
            return
        number = self.batches_sent = self.batches_sent + 1
        self.parts.uploader.submit(
            token, lambda: self.prepare_batch(rows), lambda ready: self._send(rows, ready, number)
        )

    def _send(self, rows: list[bytes], prepared: Any, number: int) -> None:
        started = time.monotonic()
        self.send_batch(rows, prepared)
        self.rows_sent += len(rows)
        self.logger.info("Stream '%s': batch %d (%d rows) acknowledged in %.1f s; %d rows loaded",
                         self.stream_name, number, len(rows), time.monotonic() - started,
                         self.rows_sent)
