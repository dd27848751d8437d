"""How the reader takes standard input: large reads from the real descriptor."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest

from target_core.reader import INPUT_BUFFER_BYTES, SingerLineReader


def _message_lines(count: int) -> bytes:
    schema = {"type": "SCHEMA", "stream": "s", "key_properties": [],
              "schema": {"properties": {"id": {"type": "integer"}}}}
    records = [{"type": "RECORD", "stream": "s", "record": {"id": i, "pad": "x" * 200}}
               for i in range(count)]
    return b"".join(json.dumps(m).encode() + b"\n" for m in [schema, *records])


def test_standard_input_is_read_a_mebibyte_at_a_time(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Every read of stdin lets go of the GIL (see INPUT_BUFFER_BYTES): the first line
    costs one read of the whole buffer, not of Python's default (the descriptor's block
    size, 4 KiB here: the test fails with 4096 there)."""
    source = tmp_path / "input.jsonl"
    source.write_bytes(_message_lines(20_000))  # about 4.5 MB
    assert source.stat().st_size > 2 * INPUT_BUFFER_BYTES
    with source.open() as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        lines = SingerLineReader().default_input
        assert json.loads(next(iter(lines)))["type"] == "SCHEMA"
        assert os.lseek(stdin.fileno(), 0, os.SEEK_CUR) == INPUT_BUFFER_BYTES
        rest = list(lines)  # every line whole across the buffer's edges
    assert len(rest) == 20_000
    assert [json.loads(line)["record"]["id"] for line in rest] == list(range(20_000))


def test_a_stand_in_without_a_descriptor_is_read_as_it_is(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """A test harness's stdin (no file descriptor) is still read, through its `buffer`."""

    class StandIn:
        buffer = io.BytesIO(_message_lines(3))

        def fileno(self) -> int:
            raise io.UnsupportedOperation("fileno")

    monkeypatch.setattr(sys, "stdin", StandIn())
    reader = SingerLineReader()
    assert reader.default_input is StandIn.buffer
    seen: list[dict] = []
    counts = reader.process_lines(None, {"SCHEMA": seen.append, "RECORD": seen.append})
    assert counts["RECORD"] == 3
    assert [m["type"] for m in seen] == ["SCHEMA", "RECORD", "RECORD", "RECORD"]
