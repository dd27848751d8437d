"""Singer input lines -> message dicts, fast, and with the line number in every input error.

The SDK's readers decode text with stdlib json or msgspec and turn every float into a
`Decimal`; both cost a third of the decoding time, and the SDK's error for a bad line
echoes the whole line (personal data) without saying which line it was. This reader takes
bytes from stdin, decodes with msgspec, dispatches RECORD first, and rewrites every input
error to start with `line N:` while keeping its SDK exception type (the standard test suite
checks the types).

Numbers in RECORD and STATE messages keep the tap's digits: a number with a fraction or an
exponent is decoded as `msgspec.Raw` text (`conversions.exact_number`), which costs less
than building a float (measured in docs/architecture.md). SCHEMA and the other messages are
decoded again with plain floats: JSON Schema keywords (`maximum: 1.5`) are compared as numbers.
"""

from __future__ import annotations

import sys
import typing as t
from collections import Counter

import msgspec
from singer_sdk.exceptions import (
    FatalSyncError,
    InvalidJSONSchema,
    InvalidRecord,
    RecordsWithoutSchemaException,
)
from singer_sdk.singerlib.encoding.base import GenericSingerReader
from singer_sdk.singerlib.exceptions import InvalidInputLine

from target_core.conversions import exact_number
from target_core.errors import InputError

_INPUT_ERRORS = (InputError, FatalSyncError, InvalidInputLine, InvalidRecord, InvalidJSONSchema)
_decode = msgspec.json.Decoder(float_hook=exact_number).decode
_decode_floats = msgspec.json.Decoder().decode
_EXACT_KINDS = frozenset({"RECORD", "STATE"})
INPUT_BUFFER_BYTES = 1024 * 1024
"""Bytes asked of standard input per read. Each read lets go of the GIL, and the packer
thread, waiting for it, takes it: the reading thread then waits up to Python's 5 ms switch
interval to get it back. Python's default buffer is the descriptor's block size (4 KiB
for pipes and files here): 17,000 reads for the benchmark's 200,000 records (70 MB); with
1 MiB, about 70. Measured at 200k records: 18,000 -> 2,500 context switches, 12% less wall
time for target-datatile, 17% for target-graphitenote (docs/architecture.md)."""


def _with_line(exc: Exception, line_number: int) -> Exception:
    """The same exception, its message now starting with the input line number."""
    message = exc.error_message if isinstance(exc, InvalidRecord) else str(exc)
    if not message.startswith("line "):
        message = f"line {line_number}: {message}"
    exc.args = (message,)
    if isinstance(exc, InvalidRecord):
        exc.error_message = message
    return exc


class StopReading(Exception):
    """Raised by a signal handler while the reader waits for its next line."""


class SingerLineReader(GenericSingerReader[bytes]):
    """Reads Singer messages as bytes and counts lines for error messages.

    `stop_requested` ends the loop after the current message, so a SIGTERM is handled on a
    clean stack (the SDK drains from inside the signal handler, which can interrupt a
    hand-over half way or wait on a lock the interrupted code holds). `waiting_for_input`
    tells a handler when nothing is in progress, so it may raise `StopReading` and not
    wait for a quiet tap's next line.
    """

    line_number = 0
    stop_requested = False
    waiting_for_input = False

    @property
    def default_input(self) -> t.IO[bytes]:
        """Standard input, read `INPUT_BUFFER_BYTES` at a time (a pipe's read returns what
        the tap has written so far, so a quiet tap's lines are not held back)."""
        try:
            descriptor = sys.stdin.fileno()
        except (AttributeError, OSError, ValueError):  # no real stdin (a test's stand-in)
            return sys.stdin.buffer
        return open(descriptor, "rb", buffering=INPUT_BUFFER_BYTES, closefd=False)

    def deserialize_json(self, line: bytes | str) -> dict:
        try:
            message = _decode_floats(line)
        except msgspec.DecodeError as exc:
            # msgspec names the byte offset, never the content: safe to show.
            raise InvalidInputLine(f"not a valid JSON line ({exc})") from None
        if type(message) is not dict:
            raise InvalidInputLine("not a Singer message (a JSON object was expected)")
        return message

    def process_lines(
        self,
        file_input: t.IO[bytes] | t.IO[str] | None,
        callbacks: dict[str, t.Callable[[dict], None]],
    ) -> Counter[str]:
        counts: Counter[str] = Counter()
        on_record = callbacks["RECORD"]
        decode = _decode
        records = 0
        self.line_number = 0
        self.waiting_for_input = True
        try:
            for line in file_input or self.default_input:
                self.waiting_for_input = False
                self.line_number += 1
                try:
                    message = decode(line)
                    kind = message.get("type")
                except (msgspec.DecodeError, AttributeError):
                    if not line.strip():
                        self.waiting_for_input = True
                        continue  # a blank line carries nothing; taps sometimes end with one
                    message = self.deserialize_json(line)  # raises the explaining error
                    kind = message.get("type")
                if kind == "RECORD":
                    records += 1
                    on_record(message)
                else:
                    if type(kind) is str and kind not in _EXACT_KINDS:
                        message = _decode_floats(line)  # schema keywords are numbers
                    callback = callbacks.get(kind) if type(kind) is str else None
                    if callback is None:
                        raise InvalidInputLine(
                            "a Singer message needs a 'type' of SCHEMA, RECORD, STATE, "
                            f"ACTIVATE_VERSION or BATCH, not {kind!r}"[:200]
                        )
                    callback(message)
                    counts[kind] += 1
                if self.stop_requested:
                    break
                self.waiting_for_input = True
        except StopReading:
            pass
        except _INPUT_ERRORS as exc:
            raise _with_line(exc, self.line_number) from exc.__cause__
        finally:
            self.waiting_for_input = False
        counts["RECORD"] = records
        return counts


def describe_missing_schema(stream: str) -> RecordsWithoutSchemaException:
    """The SDK's exception type, with a message that says what to do."""
    return RecordsWithoutSchemaException(
        f"RECORD for stream '{stream}' arrived before any SCHEMA for it: "
        "the tap must send a SCHEMA message for a stream before its records"
    )
