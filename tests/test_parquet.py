"""The Parquet format writer (target_core/parquet.py): values exact by Arrow type, checked
against Arrow's own parser; bounded files; failures named by column."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from target_core.columns import Column, ColumnType
from target_core.errors import TargetError
from target_core.parquet import (
    ParquetWriter,
    double_value,
    epoch_days,
    epoch_microseconds,
    int64_value,
)

OFFSETS = st.integers(min_value=-14 * 60, max_value=14 * 60)
MOMENTS = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30))


def _offset_text(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


@settings(max_examples=300, deadline=None)
@given(MOMENTS, OFFSETS)
def test_date_times_are_the_instant_arrow_reads(moment: dt.datetime, offset: int) -> None:
    """Years 1-9999, offsets -14:00..+14:00, microseconds: Arrow's own ISO 8601 parser
    (C++, independent of Python's) reads the same instant from the text."""
    text = f"{moment.year:04d}-{moment:%m-%dT%H:%M:%S.%f}{_offset_text(offset)}"
    expected = pa.array([text]).cast(pa.timestamp("us", tz="UTC"))[0].value
    assert epoch_microseconds(text) == expected
    if offset == 0:
        assert epoch_microseconds(text[:-6] + "Z") == expected
        assert epoch_microseconds(text[:-6]) == expected  # naive: UTC


@settings(max_examples=200, deadline=None)
@given(st.dates())
def test_dates_are_the_day_arrow_reads(day: dt.date) -> None:
    text = f"{day.year:04d}-{day:%m-%d}"
    assert epoch_days(text) == pa.array([text]).cast(pa.date32()).cast(pa.int32())[0].as_py()


def test_values_out_of_a_columns_range_are_refused() -> None:
    assert int64_value(2**63 - 1) == 2**63 - 1
    with pytest.raises(ValueError, match="outside the 64-bit integer range"):
        int64_value(2**63)
    with pytest.raises(ValueError, match="must be an integer"):
        int64_value(True)
    assert double_value(msgspec.Raw(b"0.000001")) == 1e-06
    with pytest.raises(ValueError, match="outside the range of a double"):
        double_value(msgspec.Raw(b"1" + b"0" * 400))


def test_each_batch_is_a_row_group_on_disk_and_a_new_schema_is_a_new_file(
        tmp_path: Path) -> None:
    columns = [Column("id", "id", ColumnType.INTEGER, False, True),
               Column("v", "V!", ColumnType.NUMBER, True, False)]
    writer = ParquetWriter(tmp_path / "a.parquet", columns)
    sizes = []
    for first in (0, 100):
        writer.write_rows([(i, float(i) / 3) for i in range(first, first + 100)])
        sizes.append(writer.size)
    assert 0 < sizes[0] < sizes[1]
    assert writer.extend([*columns, Column("w", "w", ColumnType.TEXT, True, False)]) is False
    path = writer.finish()
    file = pq.ParquetFile(path)
    assert (file.metadata.num_rows, file.metadata.num_row_groups) == (200, 2)
    assert file.schema_arrow.field("v").metadata == {b"singer_property": b"V!"}


def test_a_value_arrow_refuses_names_the_column_and_discard_removes_the_file(
        tmp_path: Path) -> None:
    writer = ParquetWriter(tmp_path / "b.parquet",
                           [Column("id", "id", ColumnType.INTEGER, False, True)])
    with pytest.raises(TargetError, match="column 'id' cannot be written to Parquet as int64"):
        writer.write_rows([("not a number",)])
    writer.discard()
    assert not (tmp_path / "b.parquet").exists()
