"""The .zsav written in flat memory (`target_datatile.zsav`), against ReadStat's own files.

For tables of every variable kind, our streamed .zsav, ReadStat's own .zsav and ReadStat's
bytecode .sav read back the same in pyreadstat; our decompressed data section is ReadStat's
bytecode byte for byte; and the zheader / ztrailer hold what ReadStat's hold.
"""

from __future__ import annotations

import datetime as dt
import io
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyreadstat
import pytest
import readstat_arrow
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from target_core.spool import string_widths
from target_datatile.spss import (
    HeaderFacts,
    spss_metadata,
    spss_record_batch,
    spss_schema,
    write_spss_file,
)
from target_datatile.variables import converter_for, datatile_columns, spss_variables
from target_datatile.zsav import (
    BLOCK_SIZE,
    BUFFER_SIZE,
    ZsavError,
    ZsavStream,
    dictionary_length,
    open_zsav,
)

CREATION_TIME = slice(92, 109)
"""The header's creation date and time: two files written a second apart differ there."""


# reading a .zsav's structure ---------------------------------------------------------------
@dataclass
class Zsav:
    """A .zsav taken apart: dictionary, zheader, blocks, ztrailer."""

    raw: bytes
    zheader: tuple[int, int, int]
    trailer: tuple[int, int, int, int]
    entries: list[tuple[int, int, int, int]]

    @classmethod
    def parse(cls, raw: bytes, dictionary_bytes: int) -> Zsav:
        zheader = struct.unpack_from("<qqq", raw, dictionary_bytes)
        trailer = struct.unpack_from("<qqii", raw, zheader[1])
        entries = [struct.unpack_from("<qqii", raw, zheader[1] + 24 * (i + 1))
                   for i in range(trailer[3])]
        return cls(raw, zheader, trailer, entries)

    @property
    def data(self) -> bytes:
        """The decompressed data section: the bytecode rows."""
        return b"".join(zlib.decompress(self.raw[at:at + size])
                        for _, at, _, size in self.entries)


def assert_consistent(zsav: Zsav, dictionary_bytes: int, block_size: int) -> None:
    """Every field of the zheader and ztrailer agrees with the file around it."""
    raw = zsav.raw
    zheader_ofs, ztrailer_ofs, ztrailer_len = zsav.zheader
    bias, zero, size, count = zsav.trailer
    assert raw[:4] == b"$FL3"
    assert struct.unpack_from("<i", raw, 72) == (2,)  # compression: zlib blocks
    assert struct.unpack_from("<ii", raw, dictionary_bytes - 8) == (999, 0)
    assert zheader_ofs == dictionary_bytes
    assert ztrailer_len == 24 + 24 * count == len(raw) - ztrailer_ofs
    assert (bias, zero, size) == (-100, 0, block_size)
    uncompressed_at, compressed_at = zheader_ofs, zheader_ofs + 24
    for i, (u_ofs, c_ofs, u_size, c_size) in enumerate(zsav.entries):
        assert (u_ofs, c_ofs) == (uncompressed_at, compressed_at)
        block = zlib.decompress(raw[c_ofs:c_ofs + c_size])
        assert len(block) == u_size
        assert u_size == block_size if i < count - 1 else 0 < u_size <= block_size
        uncompressed_at += u_size
        compressed_at += c_size
    assert compressed_at == ztrailer_ofs


# the three files of one table -------------------------------------------------------------
@dataclass
class Files:
    ours: bytes
    readstat_zsav: bytes
    readstat_sav: bytes
    dictionary_bytes: int
    paths: tuple[Path, Path, Path]


def write_three(folder: Path, schema: dict[str, Any], records: list[dict[str, Any]],
                block_size: int = BLOCK_SIZE, batch_rows: int = 7) -> Files:
    """The records converted as the target does, then written as our .zsav (in batches)
    and as ReadStat's own .zsav and .sav of the same schema and metadata."""
    columns = datatile_columns(schema)
    converters = [converter_for(column) for column in columns]
    rows = [tuple(convert(record.get(column.source)) for convert, column in
                  zip(converters, columns, strict=True)) for record in records]
    arrow_schema = spss_schema(columns)
    table = spss_record_batch(arrow_schema, rows)
    facts = HeaderFacts.from_widths(len(rows), columns, string_widths(table))
    ours = write_spss_file(folder / "ours.zsav", columns, facts,
                           [rows[i:i + batch_rows] for i in range(0, len(rows), batch_rows)],
                           zsav_block_size=block_size)
    metadata = spss_metadata(spss_variables(columns), facts)
    paths = [ours]
    for name, compression in (("readstat.zsav", "zlib"), ("readstat.sav", "rows")):
        with readstat_arrow.SavWriter(folder / name, arrow_schema, len(rows), metadata,
                                      compression=compression) as writer:
            if rows:
                writer.write_batch(table)
        paths.append(folder / name)
    return Files(*(path.read_bytes() for path in paths),
                 dictionary_length(arrow_schema, metadata), (paths[0], paths[1], paths[2]))


def read_back(path: Path) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    data, meta = pyreadstat.read_sav(str(path), output_format="dict")
    values = {name: [None if isinstance(v, float) and v != v else v for v in column]
              for name, column in data.items()}
    return values, {
        "rows": meta.number_rows, "names": meta.column_names,
        "labels": meta.column_names_to_labels, "types": meta.original_variable_types,
        "readstat_types": meta.readstat_variable_types, "widths": meta.variable_display_width,
        "value_labels": meta.variable_value_labels, "measures": meta.variable_measure,
        "encoding": meta.file_encoding}


# every variable kind -----------------------------------------------------------------------
KINDS: dict[str, dict[str, Any]] = {
    "integer": {"type": ["integer", "null"]},
    "number": {"type": ["number", "null"]},
    "string": {"type": ["string", "null"]},
    "boolean": {"type": ["boolean", "null"]},
    "date": {"type": ["string", "null"], "format": "date"},
    "date-time": {"type": ["string", "null"], "format": "date-time"},
    "object": {"type": ["object", "null"]},
}
long_texts = st.builds(lambda char, size: char * (size // len(char.encode())),
                       st.sampled_from(["a", "é", "東", "🙂"]),
                       st.sampled_from([0, 1, 8, 255, 256, 4_000, 32_767]))
"""Up to SPSS's 32,767 bytes (very long strings, in 252-byte segments)."""
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "integer": st.integers(-(2**53), 2**53),
    "number": st.floats(allow_nan=False, allow_infinity=False),
    "string": st.text(max_size=12) | long_texts,
    "boolean": st.booleans(),
    "date": st.dates(dt.date(1, 1, 1)).map(lambda d: f"{d.year:04d}-{d:%m-%d}"),
    "date-time": st.datetimes(dt.datetime(1, 1, 2), dt.datetime(9999, 12, 30)).map(
        lambda t: f"{t.year:04d}-{t:%m-%dT%H:%M:%S.%f}Z"),
    "object": st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
}


@st.composite
def tables(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    kinds = draw(st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=8))
    fields = {f"{kind} {i}": kind for i, kind in enumerate(kinds)}
    row = st.fixed_dictionaries({name: st.none() | VALUES[kind]
                                 for name, kind in fields.items()})
    records = draw(st.lists(row, max_size=30))
    return {"properties": {name: KINDS[kind] for name, kind in fields.items()}}, records


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.data_too_large])
@given(tables(), st.sampled_from([64, 1000, BLOCK_SIZE]))
@example(({"properties": {"s": KINDS["string"], "b": KINDS["boolean"], "e": KINDS["string"]}},
          [{"s": "a" * 32_767, "b": True}, {"s": "🙂" * 8_191, "b": None, "e": None}]), 64)
@example(({"properties": {"n": KINDS["number"]}}, []), BLOCK_SIZE)  # no rows: no block
def test_our_zsav_reads_as_readstats_own_and_holds_its_bytecode(
        tmp_path_factory: pytest.TempPathFactory,
        table: tuple[dict[str, Any], list[dict[str, Any]]], block_size: int) -> None:
    schema, records = table
    files = write_three(tmp_path_factory.mktemp("zsav"), schema, records, block_size)
    ours, theirs = (Zsav.parse(raw, files.dictionary_bytes)
                    for raw in (files.ours, files.readstat_zsav))
    assert_consistent(ours, files.dictionary_bytes, block_size)
    assert ours.data == files.readstat_sav[files.dictionary_bytes:]  # ReadStat's bytecode
    assert ours.data == theirs.data
    assert theirs.zheader[0] == files.dictionary_bytes  # where ReadStat's data starts too
    if block_size == BLOCK_SIZE:  # ReadStat's blocks: the same index but for zlib's sizes
        assert ours.trailer == theirs.trailer and ours.zheader[2] == theirs.zheader[2]
        assert [(u, s) for u, _, s, _ in ours.entries] == \
            [(u, s) for u, _, s, _ in theirs.entries]

    def masked(raw: bytes) -> bytes:
        return raw[:CREATION_TIME.start] + raw[CREATION_TIME.stop:files.dictionary_bytes]

    assert masked(files.ours) == masked(files.readstat_zsav)  # header and dictionary
    ours_read, zsav_read, sav_read = (read_back(path) for path in files.paths)
    assert ours_read == zsav_read == sav_read
    assert ours_read[1]["rows"] == len(records)


# the structure, at ReadStat's block size ---------------------------------------------------
@dataclass
class Wide:
    """Numbers that bytecode cannot shorten and 40-byte texts: ~60 bytes a row."""

    rows: int

    def __post_init__(self) -> None:
        self.columns = datatile_columns({"properties": {"x": {"type": "number"},
                                                        "t": {"type": "string"}}})
        self.schema = spss_schema(self.columns)
        self.batch = pa.RecordBatch.from_arrays(
            [pa.array([i + 0.5 for i in range(self.rows)], pa.float64()),
             pa.array([f"{i:040d}" for i in range(self.rows)], pa.string())],
            schema=self.schema)
        self.facts = HeaderFacts.from_widths(self.rows, self.columns,
                                             string_widths(self.batch))
        self.metadata = spss_metadata(spss_variables(self.columns), self.facts)

    def readstat(self, where: Any, compression: str = "rows") -> readstat_arrow.SavWriter:
        """ReadStat's own writer of this table."""
        return readstat_arrow.SavWriter(where, self.schema, self.rows, self.metadata,
                                        compression=compression)  # type: ignore[arg-type]


def test_a_file_of_several_real_blocks_has_readstats_block_index(tmp_path: Path) -> None:
    wide = Wide(150_000)
    batch = wide.batch
    before = threading.active_count()
    ours = write_spss_file(tmp_path / "big.zsav", wide.columns, wide.facts,
                           [batch.slice(i, 10_000) for i in range(0, batch.num_rows, 10_000)])
    assert threading.active_count() == before  # the compressing thread is gone
    with wide.readstat(tmp_path / "readstat.zsav", "zlib") as theirs:
        theirs.write_batch(batch)
    start = dictionary_length(wide.schema, wide.metadata)
    zsav = Zsav.parse(ours.read_bytes(), start)
    readstat = Zsav.parse((tmp_path / "readstat.zsav").read_bytes(), start)
    assert_consistent(zsav, start, BLOCK_SIZE)
    assert len(zsav.entries) == 3
    # the same blocks: where each starts and how much it holds; only zlib's output differs
    assert [(u, s) for u, _, s, _ in zsav.entries] == [(u, s) for u, _, s, _ in readstat.entries]
    assert (zsav.zheader[0], zsav.zheader[2]) == (readstat.zheader[0], readstat.zheader[2])
    assert zsav.trailer == readstat.trailer
    assert zsav.data == readstat.data
    data, meta = pyreadstat.read_sav(str(ours), output_format="dict")
    assert meta.number_rows == batch.num_rows
    assert data["t"][-1] == f"{batch.num_rows - 1:040d}" and data["x"][-1] == 149_999.5


def test_no_row_reaches_python_one_at_a_time(tmp_path: Path) -> None:
    """ReadStat writes once per row; the buffer in front of the stream gathers them."""
    calls = []

    class Counted(ZsavStream):
        def write(self, data: Any) -> int:
            calls.append(len(data))
            return super().write(data)

    wide = Wide(50_000)
    stream = Counted(tmp_path / "c.zsav", dictionary_length(wide.schema, wide.metadata))
    buffered = io.BufferedWriter(stream, buffer_size=BUFFER_SIZE)
    with wide.readstat(buffered) as writer:
        writer.write_batch(wide.batch)
    buffered.close()
    assert sum(calls) == stream.tell() > 2_000_000
    assert len(calls) <= sum(calls) // (BUFFER_SIZE // 2) + 2
    assert pyreadstat.read_sav(str(tmp_path / "c.zsav"), metadataonly=True,
                              output_format="dict")[1].number_rows == \
        50_000


# failures leave no file ---------------------------------------------------------------------
def test_a_dictionary_that_does_not_end_where_expected_fails_loudly(tmp_path: Path) -> None:
    wide = Wide(10)
    length = dictionary_length(wide.schema, wide.metadata)
    for wrong in (length - 8, length + 8):
        path = tmp_path / f"wrong{wrong}.zsav"
        buffered, stream = open_zsav(path, wrong)
        with pytest.raises(ZsavError, match="dictionary"):
            writer = wide.readstat(buffered)
            writer.write_batch(wide.batch)
            writer.close()
            buffered.close()
        assert stream.closed
        assert not path.exists()


def test_a_bytecode_sav_is_required(tmp_path: Path) -> None:
    wide = Wide(3)
    buffered, _ = open_zsav(tmp_path / "x.zsav", dictionary_length(wide.schema, wide.metadata))
    with pytest.raises(ZsavError, match="bytecode"):
        with wide.readstat(buffered, "none") as writer:
            writer.write_batch(wide.batch)
        buffered.close()
    assert not (tmp_path / "x.zsav").exists()


def test_a_write_cut_in_the_middle_leaves_no_file(tmp_path: Path) -> None:
    wide = Wide(100_000)
    before = threading.active_count()

    def cut() -> Any:
        yield wide.batch.slice(0, 80_000)  # many blocks already compressed and written
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_spss_file(tmp_path / "cut.zsav", wide.columns, wide.facts, cut(),
                        zsav_block_size=4096)
    assert not (tmp_path / "cut.zsav").exists()
    assert threading.active_count() == before
