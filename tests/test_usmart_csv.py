"""uSmart's CSV rules: what the writer produces, read back the way uSmart (the emulator) reads.

The property tests write random tables with `IngestCsvWriter` and read the file with the
emulator's parser (`target_usmart.sandbox`), a separate piece of code with uSmart's reading
rules: quoted cells are text, an unquoted empty cell is null, a number loses leading zeros,
`.8` and exponents are not numbers, a blank row ends the file.
"""

from __future__ import annotations

import datetime as dt
import decimal
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from conftest import usmart_cells
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from target_core.columns import Column, ColumnType
from target_core.conversions import exact_number
from target_core.formats import FormatWriter
from target_usmart.ingest_csv import IngestCsvWriter, iso_datetime
from target_usmart.sandbox import (
    csv_records,
    decode_cell,
    infer_type,
    parse_csv,
)

T = ColumnType
KIND = {T.TEXT: "text", T.TIME: "text", T.JSON: "text", T.INTEGER: "number",
        T.NUMBER: "number", T.BOOLEAN: "boolean", T.DATE: "date", T.DATETIME: "datetime"}
UTC = dt.UTC

# -- strategies ------------------------------------------------------------------------------

_TEXT = st.text(st.characters(blacklist_categories=["Cs"]), max_size=12)
_TRICKY = st.sampled_from([
    "", " ", "0012", "-0012", "+7", "0", "0.8", ".8", "1e5", "1E-3", "true", "FALSE", "null",
    "NaN", "-inf", "2024-01-31", "2024-01-31T10:00:00Z", " padded", "padded ", "a,b", 'say "hi"',
    "line\nbreak", "cr\ronly", "\r\n", "#", "00:00:00", "x\x00y",
])
_OFFSETS = st.sampled_from([None, UTC, dt.timezone(dt.timedelta(hours=5, minutes=30)),
                            dt.timezone(dt.timedelta(hours=-8))])
_JSON_LEAF = (st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
              | st.floats(allow_nan=False, allow_infinity=False) | _TEXT)
_JSON = st.recursive(_JSON_LEAF, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(_TEXT, inner, max_size=3), max_leaves=6)

VALUES: dict[ColumnType, st.SearchStrategy[Any]] = {
    T.TEXT: _TEXT | _TRICKY,
    T.INTEGER: st.integers(-(10**30), 10**30),
    T.NUMBER: (st.floats(allow_nan=False, allow_infinity=False)
               | st.decimals(allow_nan=False, allow_infinity=False)
               | st.integers(-(10**20), 10**20)
               # what the reader makes of a JSON number with a fraction or an exponent
               # (str of a Decimal is JSON number text, exponents included)
               | st.decimals(allow_nan=False, allow_infinity=False)
               .map(lambda d: exact_number(str(d)))),
    T.BOOLEAN: st.booleans(),
    T.DATE: st.dates().map(dt.date.isoformat),
    T.DATETIME: st.builds(lambda moment, zone: moment.replace(tzinfo=zone).isoformat(),
                          st.datetimes(min_value=dt.datetime(1, 1, 2),
                                       max_value=dt.datetime(9999, 12, 30)), _OFFSETS),
    T.JSON: _JSON.filter(lambda value: isinstance(value, (list, dict))),
}


def column(name: str, kind: ColumnType) -> Column:
    return Column(name, name, kind, True, False)


@st.composite
def tables(draw: st.DrawFn, names: Sequence[str] = "abcdef", min_columns: int = 2
           ) -> tuple[list[Column], list[list[Any]]]:
    chosen = draw(st.lists(st.sampled_from(names), min_size=min_columns, max_size=len(names),
                           unique=True))
    columns = [column(name, draw(st.sampled_from(list(VALUES)))) for name in chosen]
    row = st.tuples(*(st.none() | VALUES[c.type] for c in columns)).map(list)
    return columns, draw(st.lists(row, max_size=25))


# -- reading back with uSmart's rules ------------------------------------------------------------


def read_back(path: Path) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    with open(path, encoding="utf-8", newline="") as lines:
        header, *records = csv_records(lines)
    assert header is not None
    assert None not in records, "a blank row would end uSmart's ingest"
    return [text for text, _ in header], records  # type: ignore[misc]


def converted(columns: Sequence[Column], row: Sequence[Any]) -> tuple[str, ...]:
    """What the sink hands the writer: the reader-thread conversions done (finished cells)."""
    return usmart_cells(columns, row)


def assert_same(kind: ColumnType, value: Any, cell: tuple[str, bool]) -> None:
    """`cell` read as the column's declared uSmart type gives back `value` exactly."""
    got, fits = decode_cell(cell, KIND[kind])
    if value is None:
        assert got is None, (cell, value)
        return
    assert fits, (kind, value, cell)
    if type(value) is msgspec.Raw:
        assert got == decimal.Decimal(bytes(value).decode()), (value, cell)
        assert cell[0] == bytes(value).decode(), "the tap's digits, as they came"
    elif kind is T.NUMBER and isinstance(value, float):
        assert decimal.Decimal(repr(value)) == got and float(got) == value, (value, cell)
    elif kind is T.BOOLEAN:
        assert got is value, (value, cell)
    elif kind in (T.NUMBER, T.INTEGER, T.TEXT, T.DATE):
        assert got == value and type(got) is not bool, (value, cell)
    elif kind is T.DATETIME:
        written, original = dt.datetime.fromisoformat(got), dt.datetime.fromisoformat(value)
        assert written.tzinfo is UTC, cell
        assert written == (original if original.tzinfo else original.replace(tzinfo=UTC))
    elif kind is T.JSON:
        assert orjson.loads(got) == value, (value, cell)


def expected_order(rows: list[list[Any]], sample: int) -> list[list[Any]]:
    head = rows[:sample]
    if not head:
        return rows
    nulls = [row.count(None) for row in head]
    first = nulls.index(min(nulls))
    return [head[first], *head[:first], *head[first + 1:], *rows[sample:]]


PROPERTY = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@PROPERTY
@given(table=tables(), sample=st.integers(1, 8))
def test_every_value_reads_back_exactly(tmp_path: Path, table: Any, sample: int) -> None:
    columns, rows = table
    path = tmp_path / "stream.csv"
    writer = IngestCsvWriter(path, columns, sample_size=sample)
    writer.write_rows([converted(columns, row) for row in rows])
    assert writer.finish() == path
    header, records = read_back(path)
    assert header == [c.name for c in columns]
    ordered = expected_order(rows, sample)
    assert len(records) == len(ordered)
    for row, record in zip(ordered, records, strict=True):
        for col, value, cell in zip(columns, row, record, strict=True):
            assert_same(col.type, value, cell)
    if records:  # uSmart types each column from the first row: every filled cell types right
        for col, value, cell in zip(columns, ordered[0], records[0], strict=True):
            if value is not None:
                assert infer_type(cell) == KIND[col.type], (col, value, cell)
        parsed = parse_csv(path)
        assert parsed.rows == len(rows) and parsed.stopped_at_blank_row is None


@PROPERTY
@given(first=tables("abcde"), second=tables("cdefgh"), sample=st.integers(1, 6))
def test_schema_change_gives_one_file_with_the_union(
    tmp_path: Path, first: Any, second: Any, sample: int
) -> None:
    (columns_a, rows_a), (columns_b, rows_b) = first, second
    columns_b = [next((a for a in columns_a if a.name == b.name), b) for b in columns_b]
    rows_b = [[row[i] if columns_b[i].type is orig.type else None
               for i, orig in enumerate(second[0])] for row in rows_b]
    path = tmp_path / "stream.csv"
    writer = IngestCsvWriter(path, columns_a, sample_size=sample)
    writer.write_rows([converted(columns_a, row) for row in rows_a])
    writer.extend(columns_b)
    writer.write_rows([converted(columns_b, row) for row in rows_b])
    writer.finish()
    union = list(dict.fromkeys([c.name for c in columns_a] + [c.name for c in columns_b]))
    by_name = {c.name: c for c in [*columns_a, *columns_b]}
    header, records = read_back(path)
    assert header == union
    as_union = [[dict(zip([c.name for c in cols], row, strict=True)).get(name)
                 for name in union] for cols, rows in ((columns_a, rows_a), (columns_b, rows_b))
                for row in rows]
    ordered = expected_order(as_union, sample)
    assert len(records) == len(ordered)
    for row, record in zip(ordered, records, strict=True):
        for name, value, cell in zip(union, row, record, strict=True):
            assert_same(by_name[name].type, value, cell)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stream.csv"]


# -- the rules, one by one -------------------------------------------------------------------


def write(tmp_path: Path, columns: list[Column], rows: list[list[Any]], **options: Any) -> str:
    writer = IngestCsvWriter(tmp_path / "out.csv", columns, **options)
    writer.write_rows([converted(columns, row) for row in rows])
    return writer.finish().read_bytes().decode()


def test_a_small_file_byte_for_byte(tmp_path: Path) -> None:
    columns = [column("id", T.INTEGER), column("zip", T.TEXT), column("ratio", T.NUMBER),
               column("ok", T.BOOLEAN), column("tags", T.JSON), column("at", T.DATETIME)]
    rows = [
        [1, None, None, None, None, None],
        [2, "0012", 0.8, True, {"a": [1, "x"]}, iso_datetime("2024-02-29T23:30:00-01:00")],
        [3, "", 1e-7, False, [], None],
        [None, None, None, None, None, None],
    ]
    assert write(tmp_path, columns, rows) == (
        "id,zip,ratio,ok,tags,at\r\n"
        '2,"0012",0.8,true,"{""a"":[1,""x""]}",2024-03-01T00:30:00Z\r\n'  # most complete first
        "1,,,,,\r\n"
        '3,"",0.0000001,false,"[]",\r\n'  # an empty string is "", a null is nothing
        ",,,,,\r\n"  # all null: still its delimiters, never a blank row
    )


def test_numbers_keep_their_digits_without_exponent_or_bare_point(tmp_path: Path) -> None:
    values = [0.8, -0.5, 1e-7, 1.5e300, 1e16, 123456789.123, decimal.Decimal("0.80"),
              decimal.Decimal("1E+3"), decimal.Decimal(".25"), 10**25,
              # as the reader decodes JSON numbers: the tap's own text, exponents made
              # positional once
              exact_number("0.80"), exact_number("-0.5"), exact_number("1e-7"),
              exact_number("123456789012345678.123456"), exact_number("2.5E+3")]
    text = write(tmp_path, [column("n", T.NUMBER)], [[v] for v in values])
    lines = text.split("\r\n")[1:-1]
    assert lines[0] == "0.8" and lines[1] == "-0.5" and lines[2] == "0.0000001"
    assert lines[3] == "15" + "0" * 299 and lines[4] == "10000000000000000"
    assert lines[5:10] == ["123456789.123", "0.80", "1000", "0.25", "1" + "0" * 25]
    assert lines[10:] == ["0.80", "-0.5", "0.0000001", "123456789012345678.123456", "2500"]
    assert not any("e" in line.lower() or line.startswith(".") for line in lines)


def test_one_column_nulls_and_empty_strings_are_never_blank_rows(tmp_path: Path) -> None:
    text = write(tmp_path, [column("only", T.TEXT)], [["a"], [None], [""]])
    assert text == 'only\r\n"a"\r\n""\r\n""\r\n'


def test_a_value_that_is_not_finite_is_refused() -> None:
    convert = IngestCsvWriter.converter_for(column("n", T.NUMBER))
    for value in (float("nan"), float("inf"), decimal.Decimal("-Infinity")):
        with pytest.raises(ValueError, match="must be a finite number"):
            convert(value)


def test_the_first_row_is_the_most_complete_of_the_first_thousand(tmp_path: Path) -> None:
    columns = [column("id", T.INTEGER), column("a", T.TEXT), column("b", T.NUMBER)]
    rows = [[i, None, None] for i in range(1500)]
    rows[700] = [700, "full", 1.5]
    rows[1200] = [1200, "later", 2.5]  # beyond the first 1,000: keeps its place
    writer = IngestCsvWriter(tmp_path / "x.csv", columns)
    for start in range(0, len(rows), 64):
        writer.write_rows([converted(columns, row) for row in rows[start:start + 64]])
    _, records = read_back(writer.finish())
    ids = [int(record[0][0]) for record in records]
    assert ids == [700, *range(700), *range(701, 1500)]
    assert parse_csv(tmp_path / "x.csv").columns == [
        {"name": "id", "type": "number"}, {"name": "a", "type": "text"},
        {"name": "b", "type": "number"}]


def test_a_column_added_after_rows_reached_disk_pads_the_earlier_rows(tmp_path: Path) -> None:
    first = [column("id", T.INTEGER), column("note", T.TEXT)]
    second = [column("id", T.INTEGER), column("extra", T.NUMBER)]
    third = [column("more", T.BOOLEAN)]
    writer = IngestCsvWriter(tmp_path / "x.csv", first, sample_size=2)
    writer.write_rows([converted(first, row)
                       for row in [[1, "multi\r\nline"], [2, 'a "quote"'], [3, None]]])
    writer.extend(second)
    writer.write_rows([converted(second, [4, 0.5])])
    writer.extend(third)
    writer.write_rows([converted(third, [True])])
    assert writer.finish().read_bytes().decode() == (
        "id,note,extra,more\r\n"
        '1,"multi\r\nline",,\r\n2,"a ""quote""",,\r\n3,,,\r\n4,,0.5,\r\n,,,true\r\n')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]


def test_discard_leaves_nothing(tmp_path: Path) -> None:
    writer = IngestCsvWriter(tmp_path / "x.csv", [column("id", T.INTEGER)], sample_size=1)
    writer.write_rows([("1",), ("2",)])
    writer.extend([column("id", T.INTEGER), column("b", T.TEXT)])
    writer.write_rows([("3", '"x"')])
    writer.discard()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("value", "expected"), [
    ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z"),
    ("2024-01-02T03:04:05.123456789Z", "2024-01-02T03:04:05.123456789Z"),  # as the tap sent it
    ("2024-01-02T03:04:05.5+02:00", "2024-01-02T01:04:05.500000Z"),
    ("2024-01-02 03:04:05", "2024-01-02T03:04:05Z"),
    ("0001-01-01T00:00:00+00:00", "0001-01-01T00:00:00Z"),
    ("9999-12-31T23:59:59-00:30", None),
    ("yesterday", None),
])
def test_date_times_become_iso_8601_utc(value: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ValueError):
            iso_datetime(value)
    else:
        assert iso_datetime(value) == expected


def test_memory_stays_flat_with_stream_length(tmp_path: Path) -> None:
    """Python allocations peak while the 1,000-row sample is held, not as the file grows."""
    columns = [column("id", T.INTEGER), column("name", T.TEXT), column("x", T.NUMBER),
               column("at", T.DATETIME), column("tags", T.JSON)]
    batch = [converted(columns, [i, f"name {i}", i / 7, "2024-01-02T03:04:05Z", {"i": i}])
             for i in range(1000)]
    writer = IngestCsvWriter(tmp_path / "big.csv", columns)
    tracemalloc.start()
    try:
        for _ in range(20):
            writer.write_rows(batch)
        _, early_peak = tracemalloc.get_traced_memory()
        for _ in range(180):
            writer.write_rows(batch)
        _, late_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    writer.finish()
    assert writer.rows == 200_000
    assert late_peak - early_peak < 64 * 1024, (early_peak, late_peak)
    assert (tmp_path / "big.csv").stat().st_size > 10_000_000


def test_the_format_writer_interface(tmp_path: Path) -> None:
    """What the core's file sink calls: converters, size, extend, finish."""
    assert issubclass(IngestCsvWriter, FormatWriter)
    number, when = column("n", T.NUMBER), column("at", T.DATETIME)
    assert IngestCsvWriter.converter_for(number)(msgspec.Raw(b"0.10")) == "0.10"  # tap's text
    assert IngestCsvWriter.converter_for(number)(decimal.Decimal("0.10")) == "0.10"
    assert IngestCsvWriter.converter_for(number)(1e-7) == "0.0000001"
    assert IngestCsvWriter.converter_for(number)(None) == ""  # a null: an empty field
    with pytest.raises(ValueError, match="must be a number"):
        IngestCsvWriter.converter_for(number)("12")
    assert IngestCsvWriter.converter_for(when)("2024-01-02T03:04:05+01:00") == (
        "2024-01-02T02:04:05Z")
    assert IngestCsvWriter.converter_for(column("t", T.TEXT))("12") == '"12"'
    assert (IngestCsvWriter.suffix, IngestCsvWriter.media_type) == (".csv", "text/csv")
    writer = IngestCsvWriter(tmp_path / "x.csv", [number], sample_size=2)
    writer.write_rows([("1",), ("2",), ("3",)])
    assert writer.extend([number, when]) is True and writer.columns == [number, when]
    writer.write_rows([("4", "2024-01-02T03:04:05Z")])
    assert writer.size > 0 and writer.rows == 4
    path = writer.finish()
    assert path.read_bytes() == b"n,at\r\n1,\r\n2,\r\n3,\r\n4,2024-01-02T03:04:05Z\r\n"
    assert writer.size == path.stat().st_size
