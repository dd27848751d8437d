"""The singer-sdk Target every platform target builds on.

What it changes in singer-sdk 0.54 (see docs/architecture.md for the measurements):

- STATE: written by `Checkpoint` as soon as every record before it is acknowledged by the
  platform (the SDK writes STATE only in `drain_all`, i.e. at the end of most runs).
- Records: a lean path for the common case (no stream maps, no flattening, no `_sdc`
  metadata) that validates, checks key properties and encodes the row without the SDK's
  per-record bookkeeping; every other case takes the SDK's own path. Both end in
  `RowSink.process_record`.
- Sinks: created with what they use bound in (`sink_parts`: the checkpoint, the uploader,
  and what a platform adds), so they never reach back into the target.
- Uploads: a full sink is handed to the `Uploader` (packer and sender threads); when a
  STATE is waiting on records buffered in other streams, those are sent too, so
  checkpoints keep moving even when streams interleave.
- Schema changes: buffered rows of the old schema are handed over before the new sink is
  set up, so they land first (meltano/sdk#3237).
- Signals: SIGTERM / SIGINT stop the reader; the drain runs on a clean stack, finishes
  nothing (no platform "load complete" call) and the run exits 128 + the signal number: its
  input was cut, and an orchestrator must not take it for a finished load. A run that holds
  STATE until the end (a replace) sends nothing more; any other run sends what it buffered
  and writes the STATE those rows cover. A second signal stops at once, writing no STATE.
  `interrupted_by` says which signal stopped the run, for sinks that must not finish a file.
- Periodic drains (the SDK's 5-minute record age) hand buffered rows over without waiting
  for them, so the reader never stalls; a run that holds STATE until the end skips them.
- Errors: one line on stderr, exit 1, no traceback, no secret (`invoke`); an upload error
  wins over a signal.

Private SDK API is used (`_process_record_message`, `_sinks_active`, `_batch_records_read`,
...): singer-sdk is pinned to ~=0.54.9 and the test suite runs the standard SDK tests.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any

from singer_sdk import Sink, Target
from singer_sdk.exceptions import (
    ConfigurationError,
    ConfigValidationError,
    FatalSyncError,
    InvalidJSONSchema,
    InvalidRecord,
    MappingError,
)
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.singerlib.exceptions import InvalidInputLine

from target_core.budget import BatchBudget
from target_core.checkpoint import Checkpoint
from target_core.columns import Column
from target_core.conversions import raw_to_decimal
from target_core.errors import ConfigError, InputError, Interrupted, TargetError
from target_core.reader import SingerLineReader, StopReading, describe_missing_schema
from target_core.redaction import REDACTOR, install_log_redaction
from target_core.sink import RowSink, SinkParts
from target_core.uploads import Uploader

if TYPE_CHECKING:
    from target_core.http import ApiSession

_AGE_CHECK_EVERY = 1000
USER_ERRORS = (TargetError, FatalSyncError, InvalidInputLine, InvalidRecord, InvalidJSONSchema,
               MappingError, ConfigurationError)


@dataclass
class StreamStats:
    """What one stream loaded in this run (every sink version of it)."""

    rows: int = 0
    batches: int = 0
    seconds: float = 0.0
    """Time its calls took, waits for the rate limit included."""


def secret_values(config: dict, config_schema: dict) -> list[str]:
    """Values of the settings the schema marks secret (`secret: true` / `writeOnly`)."""
    props = config_schema.get("properties", {})
    return [
        str(config[name]) for name, spec in props.items()
        if (spec.get("secret") or spec.get("writeOnly")) and config.get(name) not in (None, "")
    ]


class CoreTarget(Target):
    """Checkpointed, fast, quiet-on-secrets base for the project's targets."""

    message_reader_class = SingerLineReader
    max_parallelism = 1  # the Uploader's threads do the parallel part, in order

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.checkpoint = Checkpoint()
        self.uploader = Uploader(self.checkpoint)
        self._lean: dict[str, RowSink | None] = {}
        self.interrupted_by: int | None = None
        """The signal (SIGTERM, SIGINT) that cut the input, if one did."""
        self.budget: BatchBudget | None = None
        """Batches sized by request bytes (set by a platform with a byte budget setting);
        None: `batch_size_rows` (or the SDK's 10,000) rows and `max_batch_bytes`."""
        self.stream_stats: dict[str, StreamStats] = {}
        self._started = time.monotonic()
        self._stats_lock = threading.Lock()
        super().__init__(*args, **kwargs)
        self.check_config()

    # -- config ------------------------------------------------------------------------

    def _validate_config(self, *, raise_errors: bool = True) -> list[str]:
        """The SDK's validation, with secrets known to the redactor before any message."""
        install_log_redaction(secret_values(dict(self._config), self.config_jsonschema))
        try:
            return super()._validate_config(raise_errors=raise_errors)
        except ConfigValidationError as exc:
            problems = "; ".join(REDACTOR(str(e)) for e in exc.errors or [str(exc)])
            raise ConfigError(f"invalid config: {problems}") from None

    def check_config(self) -> None:
        """Cross-setting checks a JSON Schema cannot express; raise `ConfigError`."""

    # -- sinks -------------------------------------------------------------------------

    def sink_parts(self, stream: str) -> SinkParts:
        """What a stream's sink is handed; platforms return a subclass with their client
        and destination registry."""
        return SinkParts(self.checkpoint, self.uploader, budget=self.budget,
                         acknowledged=self.acknowledged)

    def get_sink_class(self, stream_name: str) -> Callable[..., Sink]:  # type: ignore[override]
        """The sink class with its parts bound, so a sink never reaches back here."""
        sink_class = super().get_sink_class(stream_name)
        return functools.partial(sink_class, parts=self.sink_parts(stream_name))

    # -- messages ----------------------------------------------------------------------

    def _process_schema_message(self, message_dict: dict) -> None:
        stream, schema = message_dict.get("stream"), message_dict.get("schema")
        if not isinstance(stream, str) or not isinstance(schema, dict) or not isinstance(
                schema.get("properties"), dict):
            raise InvalidInputLine("a SCHEMA message needs a 'stream' name and a 'schema' "
                                   "object with 'properties'")
        maps = self.mapper.stream_maps.get(stream)
        before = self._columns_of(stream)
        if maps and (maps[0].raw_schema != schema
                     or maps[0].raw_key_properties != message_dict.get("key_properties")):
            self._drain_stream(stream)  # the SDK replaces the sinks: old rows go out first
        super()._process_schema_message(message_dict)
        self._lean.clear()
        if before is not None:
            self._log_column_changes(stream, before, self._columns_of(stream) or [])

    def _columns_of(self, stream: str) -> list[Column] | None:
        sink = self._sinks_active.get(stream)
        return sink.columns if isinstance(sink, RowSink) else None

    def _log_column_changes(self, stream: str, before: list[Column],
                            after: list[Column]) -> None:
        """One line when a new SCHEMA adds columns or changes a column's type."""
        old = {c.name: c.type for c in before}
        added = [c.name for c in after if c.name not in old]
        changed = [f"{c.name} {old[c.name]} -> {c.type}" for c in after
                   if c.name in old and old[c.name] != c.type]
        if added or changed:
            self.logger.info("Stream '%s': new SCHEMA%s%s", stream,
                             f"; adds columns {', '.join(added)}" if added else "",
                             f"; changes types: {', '.join(changed)}" if changed else "")

    def _lean_sink(self, stream: str) -> RowSink | None:
        """The stream's sink if its records may take the lean path."""
        maps = self.mapper.stream_maps.get(stream)
        sink = self._sinks_active.get(stream)
        eligible = (
            maps is not None and len(maps) == 1 and type(maps[0]) is SameRecordTransform
            and not maps[0].flattening_enabled and maps[0].stream_alias == stream
            and isinstance(sink, RowSink) and not sink.include_sdc_metadata_properties
            and type(sink).preprocess_record is RowSink.preprocess_record
        )
        return sink if eligible else None

    def _process_record_message(self, message_dict: dict) -> None:
        checkpoint = self.checkpoint
        checkpoint.seen += 1
        stream = message_dict.get("stream")
        try:
            sink = self._lean[stream]  # type: ignore[index]
        except (KeyError, TypeError):
            if not isinstance(stream, str) or "record" not in message_dict:
                message = "a RECORD message needs a 'stream' name and a 'record'"
                raise InvalidInputLine(message) from None
            if stream not in self.mapper.stream_maps:
                raise describe_missing_schema(stream) from None
            sink = self._lean[stream] = self._lean_sink(stream)
        record = message_dict.get("record")
        if type(record) is not dict:
            raise InvalidInputLine(f"RECORD for stream '{stream}': 'record' must be a JSON object")
        if sink is None:  # stream maps, flattening: the SDK's path, with the SDK's Decimals
            super()._process_record_message({**message_dict, "record": raw_to_decimal(record)})
        elif sink.add(record):
            self._drain_full(sink)
        if checkpoint.seen % _AGE_CHECK_EVERY == 0:
            self._handle_max_record_age()

    def _drain_stream(self, stream: str) -> None:
        """Hand over the buffered rows of every sink the stream's maps feed."""
        for stream_map in self.mapper.stream_maps.get(stream, ()):
            sink = self._sinks_active.get(stream_map.stream_alias)
            if sink is not None:
                self.drain_one(sink)

    def _drain_full(self, sink: RowSink) -> None:
        self.logger.debug("Stream '%s' batch is full (%d rows): handing it to the uploader",
                          sink.stream_name, sink.current_size)
        self.drain_one(sink)
        waiting_for = self.checkpoint.newest_state_position
        if waiting_for is None or self.checkpoint.hold_until_end:
            return  # no STATE to move (or none before the end): no partial batches
        for other in [*self._sinks_active.values(), *self._sinks_to_clear]:
            if (other is not sink and isinstance(other, RowSink) and other.current_size
                    and other.first_record <= waiting_for):
                self.drain_one(other)  # it holds records a waiting STATE depends on

    def _process_state_message(self, message_dict: dict) -> None:
        if "value" not in message_dict:
            raise InputError("STATE message has no 'value'")
        self._latest_state = message_dict["value"]
        self.checkpoint.state(message_dict["value"])
        self._handle_max_record_age()  # a slow tap still gets its periodic drain

    def _process_activate_version_message(self, message_dict: dict) -> None:
        stream = message_dict.get("stream")
        if not isinstance(stream, str) or stream not in self.mapper.stream_maps:
            raise InputError(f"ACTIVATE_VERSION for stream {stream!r} arrived before its SCHEMA")
        if not isinstance(message_dict.get("version"), int):
            raise InputError(f"ACTIVATE_VERSION for stream '{stream}' has no integer 'version'")
        self._drain_stream(stream)  # buffered rows before the version switch (sdk#2576)
        super()._process_activate_version_message(message_dict)

    def _process_batch_message(self, message_dict: dict) -> None:
        raise InputError(
            "BATCH messages are not supported: run the tap without batch output "
            "(its records are then validated and converted like any other)"
        )

    def _write_state_message(self, state: dict) -> None:
        """The SDK would write unacknowledged state here; the checkpoint decides instead."""
        self.checkpoint.flush()

    # -- drains ------------------------------------------------------------------------

    def drain_all(self, *, is_endofpipe: bool = False) -> None:  # type: ignore[misc]
        if not is_endofpipe:
            self._drain_without_waiting()
            return
        if self.interrupted_by is not None and self.checkpoint.hold_until_end:
            # No STATE could come out of it: sending more would only take time.
            self.uploader.raise_failure()  # an upload error that came first still wins
            raise Interrupted(self.interrupted_by)
        for sink in [*self._sinks_to_clear, *self._sinks_active.values()]:
            self.drain_one(sink)
        self.uploader.wait()
        if self.interrupted_by is None:
            self.finish_streams()
        for sink in [*self._sinks_to_clear, *self._sinks_active.values()]:
            sink.clean_up()
        self.uploader.close()
        self._sinks_to_clear = []
        self.checkpoint.flush(final=self.interrupted_by is None)
        self.log_summary()
        if self.interrupted_by is not None:
            raise Interrupted(self.interrupted_by)

    def _drain_without_waiting(self) -> None:
        """The SDK's periodic drain: buffered rows go out so STATE can move; the reader goes
        on at once. Skipped when STATE waits for the end anyway (no partial fills for it)."""
        if not self.checkpoint.hold_until_end:
            for sink in [*self._sinks_to_clear, *self._sinks_active.values()]:
                self.drain_one(sink)
            self._sinks_to_clear = []
        self._reset_max_record_age()

    # -- progress ----------------------------------------------------------------------

    def client_session(self) -> ApiSession | None:
        """The session of the platform's client, once the client exists: its counts feed
        `api_stats`."""
        return None

    def api_stats(self) -> tuple[int, float]:
        """(calls made so far, seconds waited for the rate limit), from the `client_session`;
        without one, each batch counts as one call and nothing waits."""
        session = self.client_session()
        if session is None:
            return sum(s.batches for s in self.stream_stats.values()), 0.0
        return session.calls, session.rate_limiter.waited_total

    def acknowledged(self, stream: str, number: int, rows: int, seconds: float) -> None:
        """A batch landed (sender thread): count it and say so, with the run's progress."""
        with self._stats_lock:
            stats = self.stream_stats.setdefault(stream, StreamStats())
            stats.rows += rows
            stats.batches += 1
            stats.seconds += seconds
            total = sum(s.rows for s in self.stream_stats.values())
        calls, waited = self.api_stats()
        elapsed = max(time.monotonic() - self._started, 1e-6)
        self.logger.info("Stream '%s': batch %d (%d rows) acknowledged in %.1f s; %d rows and "
                         "%d calls so far, %.0f rows/s, %.1f s waiting for the rate limit",
                         stream, number, rows, seconds, total, calls, total / elapsed, waited)

    def log_summary(self) -> None:
        """One line per stream and one for the run, at the end (or after a signal)."""
        for stream, stats in self.stream_stats.items():
            self.logger.info("Summary: stream '%s': %d rows in %d batches, %.1f s in calls",
                             stream, stats.rows, stats.batches, stats.seconds)
        calls, waited = self.api_stats()
        total = sum(s.rows for s in self.stream_stats.values())
        elapsed = max(time.monotonic() - self._started, 1e-6)
        self.logger.info("Summary: %d rows in %d calls in %.1f s (%.0f rows/s), %.1f s "
                         "waiting for the rate limit", total, calls, elapsed, total / elapsed,
                         waited)

    def finish_streams(self) -> None:
        """End of input, everything acknowledged: per-stream finishing calls (platform)."""

    def _handle_termination(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM / SIGINT: stop reading; the end-of-input drain then finishes nothing.

        The SDK drains inside the handler, which can interrupt a batch hand-over half way
        (losing it) or wait forever on a lock the interrupted code holds. Here the handler
        only asks the reader to stop; the drain runs on a clean stack, and its errors end
        the run with a one-line error and exit 1 like any other. A second signal exits at
        once with 128 + its number, after silencing the checkpoint so that no STATE line
        can follow (every line already written covers acknowledged rows only).
        """
        reader = getattr(self, "message_reader", None)
        if self.interrupted_by is not None or reader is None:  # again, or before any input
            self.checkpoint.silence()
            self.logger.error("Signal %d %s: stopping at once, without sending buffered "
                              "rows; no STATE after the last one printed", signum,
                              "again" if self.interrupted_by is not None else "before input")
            logging.shutdown()
            sys.stderr.flush()
            os._exit(128 + signum)
        self.interrupted_by = signum
        if self.checkpoint.hold_until_end:
            self.uploader.cancel()  # a replace cut short: nothing more is worth sending
            self.logger.warning("Signal %d: stopping; this run writes STATE only at the end, "
                                "so nothing more is sent, no STATE is written and no dataset "
                                "is completed (exit %d)", signum, 128 + signum)
        else:
            self.logger.warning("Signal %d: stopping after the current message; buffered rows "
                                "are sent and acknowledged, then the STATE they cover is "
                                "written (exit %d). Signal again to stop at once.",
                                signum, 128 + signum)
        reader.stop_requested = True  # type: ignore[attr-defined]
        if getattr(reader, "waiting_for_input", False):
            raise StopReading

    # -- command line ------------------------------------------------------------------

    @classmethod
    def invoke(cls, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        """The SDK's CLI, with every user-facing failure as one line and exit code 1."""
        gc.freeze()  # objects from imports and set-up never need scanning again
        gc.set_threshold(100_000, 50, 100)
        try:
            super().invoke(*args, **kwargs)
        except USER_ERRORS as exc:
            message = exc.error_message if isinstance(exc, InvalidRecord) else str(exc)
            message = REDACTOR(" ".join(message.split()))
            logging.shutdown()
            sys.stderr.write(f"{cls.name}: error: {message}\n")
            sys.stderr.flush()
            sys.exit(1)
        except Interrupted as stop:
            cls.logger.warning("Stopped by signal %d: the input was cut short; exit %d",
                               stop.signum, stop.exit_code)
            logging.shutdown()
            sys.exit(stop.exit_code)
