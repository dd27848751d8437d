"""SPSS files (.sav / .zsav) written batch by batch, from rows spooled to disk.

An SPSS header holds the row count and each string variable's width, before the first row.
So a stream's file is made in two steps (:class:`SpssWriter`, a core ``SpooledWriter``):

1. while the stream runs, each batch of rows becomes one Arrow record batch on the packer
   thread (:func:`spss_record_batch`), which the core's ``BatchSpool`` keeps on disk; it
   counts the rows and keeps each column's widest string in UTF-8 bytes (the converters of
   ``variables`` refuse a text over SPSS's 32,767 bytes, naming stream, line and field);
2. at the end, :class:`SpssFileWriter` gets those :class:`HeaderFacts`, then the spooled
   batches as they are, which readstat-arrow's ``SavWriter`` appends one at a time, so
   memory depends on a batch, not the stream.
   A .zsav is ReadStat's bytecode .sav, compressed into zlib blocks on the way to disk by
   :mod:`target_datatile.zsav` (ReadStat's own .zsav writer keeps every block in memory until
   the file is closed, see there).

readstat-arrow (on the ReadStat C library) was chosen over pyreadstat, which writes only a
whole data frame: docs/datatile.md has the measurements.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
import pyarrow.compute as pc
import readstat_arrow
import readstat_arrow.errors

from target_core import conversions
from target_core.columns import Column, ColumnType
from target_core.errors import TargetError
from target_core.formats import SpooledWriter
from target_core.rows import Converter
from target_core.spool import BatchSpool, conform, string_widths
from target_datatile.variables import (
    SpssVariable,
    converter_for,
    exact_spss_datetime,
    is_string_column,
    spss_variables,
)
from target_datatile.zsav import (
    BLOCK_SIZE,
    BUFFER_SIZE,
    ZsavError,
    ZsavStream,
    dictionary_length,
    open_zsav,
)

Compression = Literal["zlib", "rows", "none"]
"""``zlib`` makes a .zsav file (SPSS 21+, written by :mod:`target_datatile.zsav` around
ReadStat's ``rows``), ``rows`` a bytecode-compressed .sav."""


@dataclass
class HeaderFacts:
    """What the header needs to know before the first row is written."""

    row_count: int = 0
    string_widths: dict[str, int] = field(default_factory=dict)
    """Column name -> widest value in UTF-8 bytes (string columns only)."""

    @classmethod
    def from_widths(
        cls, row_count: int, columns: Sequence[Column], widths: Sequence[int]
    ) -> HeaderFacts:
        """From a spool that measured widths by column position (the core's ``BatchSpool``:
        ``rows`` and ``string_widths``)."""
        return cls(row_count, {column.name: width
                               for column, width in zip(columns, widths, strict=True)})




def _arrow_type(variable: SpssVariable) -> pa.DataType:
    return {
        "numeric": pa.float64(),
        "string": pa.string(),
        "date": pa.date32(),
        "datetime": pa.timestamp("us"),
    }[variable.kind]


def spss_schema(columns: Sequence[Column]) -> pa.Schema:
    """The Arrow type each column's converted values take (and the writer reads)."""
    return pa.schema([(v.name, _arrow_type(v)) for v in spss_variables(columns)])


def spss_metadata(variables: Sequence[SpssVariable], facts: HeaderFacts) -> \
        readstat_arrow.Metadata:
    """What readstat-arrow writes in the dictionary: labels, formats, measures, value labels
    and each string's storage width (at least 1 byte) from the measured ``facts``."""
    return readstat_arrow.Metadata(
        variable_labels={v.name: v.label for v in variables},
        formats={v.name: v.format for v in variables if v.format},
        measures={v.name: v.measure for v in variables},  # type: ignore[misc]
        value_labels={
            v.name: [{"value": value, "label": label} for value, label in v.value_labels]
            for v in variables
            if v.value_labels
        },
        storage_widths={
            v.name: max(1, facts.string_widths.get(v.name, 0))
            for v in variables
            if v.is_string
        },
    )


def temporal_array(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array:
    """ISO text (what the converters make) cast in one call; date/datetime objects too.

    The converters hand over date-times in whatever ISO shape they came, once Python has
    read them (``variables.spss_datetime``); for a batch with a shape Arrow does not read
    (a week date, a comma before the fraction, 7 fraction digits) the exact converter
    rewrites the batch's values first."""
    try:
        strings = pa.array(values, pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return pa.array(values, arrow_type)
    try:
        return strings.cast(arrow_type)
    except pa.ArrowInvalid:
        exact = exact_spss_datetime if pa.types.is_timestamp(arrow_type) else \
            conversions.date_text
        return pa.array([exact(v) for v in values], pa.string()).cast(arrow_type)


def _strings(values: Sequence[Any]) -> pa.Array:
    """Text values (str, or the UTF-8 bytes of JSON text); anything else as its JSON text."""
    try:
        return pa.array(values, pa.string())
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return pa.array([conversions.text(v) for v in values], pa.string())


def spss_record_batch(schema: pa.Schema, rows: Sequence[Sequence[Any]]) -> pa.RecordBatch:
    """Converted rows (see :func:`target_datatile.variables.converter_for`) as one record
    batch of ``schema``.

    The rows (tuples, one value per column) go to Arrow in one call, as a struct array
    with date-times as text, which are then cast per column in C: half the packer's time
    of turning the rows into columns in Python first. Values that call cannot take (the
    date/datetime objects of a stream map, a shape Arrow's cast does not read) go column
    by column through the converters' fallbacks."""
    struct = pa.struct([pa.field(f.name, pa.string() if pa.types.is_temporal(f.type)
                                 else f.type) for f in schema])
    try:
        batch = pa.RecordBatch.from_struct_array(pa.array(rows, struct))
        arrays = [column if column.type.equals(arrow_type) else column.cast(arrow_type)
                  for column, arrow_type in zip(batch.columns, schema.types, strict=True)]
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        return _by_column(schema, rows)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _by_column(schema: pa.Schema, rows: Sequence[Sequence[Any]]) -> pa.RecordBatch:
    arrays = []
    for arrow_type, values in zip(schema.types, zip(*rows, strict=True), strict=True):
        if pa.types.is_temporal(arrow_type):
            arrays.append(temporal_array(values, arrow_type))
        elif pa.types.is_string(arrow_type):
            arrays.append(_strings(values))
        else:
            arrays.append(pa.array(values, arrow_type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def earlier_values_as_text(array: pa.Array, before: ColumnType) -> pa.Array:
    """What a column held before a SCHEMA turned it into text, as text: numbers as the JSON
    text of their value (integers without a fraction), booleans ``true`` / ``false``, dates
    and date-times as the converters write them (ISO, date-times in UTC to the microsecond)."""
    if pa.types.is_timestamp(array.type):
        return pc.strftime(array, format="%Y-%m-%dT%H:%M:%S")
    if pa.types.is_date(array.type):
        return array.cast(pa.string())
    if before is ColumnType.BOOLEAN:
        return pa.array([None if v is None else ("true" if v else "false")
                         for v in array.to_pylist()], pa.string())
    if before is ColumnType.INTEGER:
        return pa.array([None if v is None else str(int(v)) for v in array.to_pylist()],
                        pa.string())
    return pa.array([conversions.text(v) for v in array.to_pylist()], pa.string())


class SpssFileWriter:
    """One .sav / .zsav file, written from batches of rows.

    ``columns`` fix the variables (names, labels, types: :mod:`target_datatile.variables`);
    ``facts`` give the row count and string widths measured while spooling. Each
    :meth:`write_batch` takes a record batch of :attr:`schema` (the target's, from the
    spool) or rows of converted values in column order (see
    :func:`target_datatile.variables.converter_for`). :meth:`close` finishes the file and
    fails if fewer rows came than the header announced; :meth:`abort` removes the file, as
    does a :meth:`close` that fails.

    A .zsav (``compression="zlib"``) is written in flat memory: ReadStat writes a bytecode
    .sav into :mod:`target_datatile.zsav`'s stream, which compresses its data section in
    blocks of ``zsav_block_size`` bytes (ReadStat's size unless a test wants several small
    ones).
    """

    def __init__(
        self,
        path: Path | str,
        columns: Sequence[Column],
        facts: HeaderFacts,
        *,
        compression: Compression = "zlib",
        zsav_block_size: int = BLOCK_SIZE,
    ) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self.variables = spss_variables(self.columns)
        self.schema = spss_schema(self.columns)
        self.metadata = spss_metadata(self.variables, facts)
        self._zsav: ZsavStream | None = None
        self._file: io.BufferedWriter
        if compression == "zlib":
            self._file, self._zsav = open_zsav(
                self.path, dictionary_length(self.schema, self.metadata),
                block_size=zsav_block_size)
            compression = "rows"
        else:  # ReadStat writes each row on its own: a megabyte is gathered per system call
            self._file = open(self.path, "wb", buffering=BUFFER_SIZE)  # noqa: SIM115
        try:
            self._writer = readstat_arrow.SavWriter(
                self._file, self.schema, facts.row_count, self.metadata,
                compression=compression)
        except BaseException:
            self._close_file()
            self.path.unlink(missing_ok=True)
            raise

    @property
    def rows_written(self) -> int:
        return self._writer.rows_written

    def write_batch(self, rows: pa.RecordBatch | Sequence[Sequence[Any]]) -> None:
        """Append a record batch of :attr:`schema`, or rows (each a sequence of converted
        values in column order)."""
        if not isinstance(rows, pa.RecordBatch):
            if not rows:
                return
            rows = spss_record_batch(self.schema, rows)
        if rows.num_rows:
            self._writer.write_batch(rows)

    def close(self) -> None:
        """Finish the file (ReadStat fails if fewer rows came than the header holds)."""
        try:
            self._writer.close()
            self._file.close()  # a .zsav's last block, its ztrailer and zheader
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop a file that will not be finished, so no partial file can be uploaded."""
        self._writer.__exit__(RuntimeError, None, None)  # writes no more
        self._close_file()
        self.path.unlink(missing_ok=True)

    def _close_file(self) -> None:
        """Close the file without finishing it (a .zsav is dropped, not completed)."""
        if self._zsav is not None:
            self._zsav.discard()
        self._file.close()


def write_spss_file(
    path: Path | str,
    columns: Sequence[Column],
    facts: HeaderFacts,
    batches: Iterable[pa.RecordBatch | Sequence[Sequence[Any]]],
    *,
    compression: Compression = "zlib",
    zsav_block_size: int = BLOCK_SIZE,
) -> Path:
    """The whole file from batches of rows (a spool read back); no partial file is left
    behind when a batch fails or the run is interrupted."""
    writer = SpssFileWriter(path, columns, facts, compression=compression,
                            zsav_block_size=zsav_block_size)
    try:
        for batch in batches:
            writer.write_batch(batch)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return writer.path


class SpssWriter(SpooledWriter):
    """The core's format-writer interface for a .zsav file: each batch of rows becomes an
    Arrow record batch on the packer thread and is spooled (counted and measured); at the
    end :func:`write_spss_file` hands the spooled batches to readstat-arrow as they are, and
    :mod:`target_datatile.zsav` compresses its data in blocks on the way to disk (flat
    memory, like the .sav)."""

    suffix: ClassVar[str] = ".zsav"
    media_type: ClassVar[str] = "application/x-spss-sav"
    compression: ClassVar[Compression] = "zlib"

    def __init__(self, path: Path, columns: Sequence[Column]) -> None:
        super().__init__(path, columns)
        self._retyped: dict[int, ColumnType] = {}
        """Columns a SCHEMA change turned into text -> their type before: earlier batches
        hold values of that type there."""

    @classmethod
    def converter_for(cls, column: Column) -> Converter | None:
        return converter_for(column)

    def arrow_schema(self, columns: Sequence[Column]) -> pa.Schema:
        return spss_schema(columns)

    def record_batch(self, rows: Sequence[Sequence[Any]]) -> pa.RecordBatch:
        return spss_record_batch(self.spool.schema, rows)

    def extend(self, columns: Sequence[Column]) -> bool:
        for i, (old, new) in enumerate(zip(self.columns, columns, strict=False)):
            if not is_string_column(old) and is_string_column(new):
                self._retyped.setdefault(i, old.type)
        return super().extend(columns)

    def _conformed(self, spool: BatchSpool) -> Iterator[pa.RecordBatch]:
        """The spooled batches with the last schema (earlier ones: see `extend`)."""
        before = {self.columns[i].name: kind for i, kind in self._retyped.items()}

        def as_text(array: pa.Array, field: pa.Field) -> pa.Array:
            return earlier_values_as_text(array, before[field.name])

        for batch in spool.batches():
            yield conform(batch, spool.schema, as_text)

    def write_file(self, path: Path, columns: Sequence[Column], spool: BatchSpool) -> None:
        widths = list(spool.string_widths)
        if self._retyped:  # the earlier values written as text need room too: one more pass
            for batch in self._conformed(spool):
                for i, width in enumerate(string_widths(batch)):
                    widths[i] = max(widths[i], width)
        facts = HeaderFacts.from_widths(spool.rows, columns, widths)
        try:
            write_spss_file(path, columns, facts, self._conformed(spool),
                            compression=self.compression)
        except (readstat_arrow.errors.ReadstatError, ZsavError) as exc:
            raise TargetError(f"writing the SPSS file {path.name} failed: {exc}") from None


class SavWriter(SpssWriter):
    """A .sav file with SPSS's bytecode (row) compression: about 4 times the .zsav's size."""

    suffix = ".sav"
    compression = "rows"
