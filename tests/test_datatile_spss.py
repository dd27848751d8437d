"""DataTile's variable rules and the SPSS writer, read back with pyreadstat (an independent
reader): names, labels, types, nulls, widths, and the limits SPSS sets."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path

import pyreadstat
import pytest
from datatile_files import PEOPLE, PEOPLE_SCHEMA, write_spss
from hypothesis import given
from hypothesis import strategies as st

from target_core.columns import Column, ColumnType
from target_datatile.spss import HeaderFacts, SpssFileWriter, write_spss_file
from target_datatile.variables import (
    MAX_NAME_BYTES,
    RESERVED_WORDS,
    converter_for,
    datatile_columns,
    is_valid_name,
    spss_boolean,
    spss_datetime,
    spss_number,
    unique_variable_names,
    variable_label,
    variable_name,
)

# names -------------------------------------------------------------------------------------
field_names = st.text(min_size=0, max_size=120)
field_lists = st.lists(field_names, max_size=30, unique=True)


@given(field_names)
def test_every_name_becomes_a_valid_variable_name(field: str) -> None:
    name = variable_name(field)
    assert is_valid_name(name), name
    assert len(name.encode()) <= MAX_NAME_BYTES


@given(field_lists)
def test_names_are_valid_unique_and_deterministic(fields: list[str]) -> None:
    names = unique_variable_names(fields)
    assert len(names) == len(fields)
    assert all(is_valid_name(name) for name in names), names
    assert len({name.upper() for name in names}) == len(names)  # SPSS ignores case
    assert unique_variable_names(fields) == names


@given(st.lists(st.sampled_from(["a" * 70, "A" * 64, "a" * 63 + "é", "to", "TO", "x y", "x_y"]),
                min_size=2, max_size=12))
def test_names_stay_unique_after_truncation(fields: list[str]) -> None:
    names = unique_variable_names(fields)
    assert len({name.upper() for name in names}) == len(fields)
    assert all(len(name) <= MAX_NAME_BYTES and is_valid_name(name) for name in names)


@pytest.mark.parametrize(("field", "name"), [
    ("customer id", "customer_id"),
    ("café", "cafe"),
    ("2nd_address", "v2nd_address"),
    ("_private", "private"),
    ("email@home", "email@home"),
    ("a#b.c", "a#b.c"),
    ("total.", "total"),
    ("WITH", "WITH_"),
    ("by", "by_"),
    ("東京", "v"),
    ("", "v"),
    ("x" * 80, "x" * 64),
])
def test_name_examples(field: str, name: str) -> None:
    assert variable_name(field) == name


def test_collisions_get_numbered_suffixes_within_64_bytes() -> None:
    assert unique_variable_names(["a b", "a_b", "A-B"]) == ["a_b", "a_b_2", "A_B_3"]
    long = ["n" * 70, "n" * 65]
    assert unique_variable_names(long) == ["n" * 64, "n" * 62 + "_2"]


def test_the_label_keeps_the_original_name_within_what_spss_holds() -> None:
    assert variable_label("full name (€)") == "full name (€)"
    long = "é" * 600  # 1,200 bytes: cut to 256 bytes, never inside a character
    assert variable_label(long) == "é" * 128
    assert variable_label("x" * 2000) == "x" * 256


# values ------------------------------------------------------------------------------------
def test_value_converters() -> None:
    assert spss_number(3) == 3.0 and type(spss_number(3)) is float
    assert spss_number(None) is None
    assert spss_number(2**70) == float(2**70)
    with pytest.raises(ValueError, match="too large"):
        spss_number(10**400)
    with pytest.raises(ValueError, match="must be a number"):
        spss_number(True)
    assert (spss_boolean(True), spss_boolean(False), spss_boolean(None)) == (1, 0, None)
    with pytest.raises(ValueError):
        spss_boolean(1)
    assert spss_datetime("2024-01-02T03:04:05.5+01:00") == "2024-01-02T02:04:05.500000"
    assert spss_datetime("2024-01-02T03:04:05Z") == "2024-01-02T03:04:05"  # sliced
    assert spss_datetime("9999-12-31T23:59:59.999999Z") == "9999-12-31T23:59:59.999000"
    with pytest.raises(ValueError, match="ISO 8601"):
        spss_datetime("yesterday")
    with pytest.raises(ValueError, match="range"):
        spss_datetime("0001-01-01T00:00:00+01:00")


# the writer --------------------------------------------------------------------------------
def read(path: Path) -> tuple[dict, object]:
    return pyreadstat.read_sav(str(path), output_format="dict")


@pytest.mark.parametrize("compression", ["zlib", "rows", "none"])
def test_rows_written_in_batches_read_back_exactly(tmp_path: Path, compression: str) -> None:
    path = write_spss(tmp_path / "people.zsav", PEOPLE_SCHEMA, PEOPLE, compression=compression)
    data, meta = read(path)
    assert meta.column_names == ["id", "full_name", "active", "born", "seen_at", "score", "tags"]
    assert list(data["id"]) == [1.0, 2.0, 3.0]
    assert list(data["full_name"]) == ["Ana Müller", "", "東京 🙂"]  # null string -> empty
    active = list(data["active"])
    assert active[:2] == [1.0, 0.0]
    assert active[2] is None or math.isnan(active[2])  # null -> system-missing
    assert list(data["born"]) == [dt.date(1990, 5, 17), dt.date(1, 1, 1), None]
    seen = list(data["seen_at"])
    assert abs(seen[0] - dt.datetime(2024, 2, 29, 23, 59, 58, 250000)) < dt.timedelta(
        microseconds=5)
    assert abs(seen[1] - dt.datetime(2024, 2, 29, 23, 0)) < dt.timedelta(microseconds=5)
    assert seen[2] is None
    assert list(data["tags"]) == ['["a","ü"]', "", "[]"]
    assert meta.column_names_to_labels["full_name"] == "full name"
    assert meta.variable_value_labels == {"active": {0.0: "false", 1.0: "true"}}
    assert meta.original_variable_types == {
        "id": "F20.0", "full_name": "A11", "active": "F1.0", "born": "DATE11",
        "seen_at": "DATETIME23.3", "score": "F8.2", "tags": "A10"}


def test_dates_at_the_ends_of_the_calendar(tmp_path: Path) -> None:
    schema = {"properties": {"id": {"type": "integer"},
                             "d": {"type": "string", "format": "date"},
                             "t": {"type": "string", "format": "date-time"}}}
    records = [{"id": 1, "d": "0001-01-01", "t": "0001-01-01T00:00:00Z"},
               {"id": 2, "d": "9999-12-31", "t": "9999-12-31T23:59:59.999999Z"},
               {"id": 3, "d": "1582-10-14", "t": "1582-10-15T00:00:00.000001Z"}]
    data, _ = read(write_spss(tmp_path / "edge.zsav", schema, records))
    assert list(data["d"]) == [dt.date(1, 1, 1), dt.date(9999, 12, 31), dt.date(1582, 10, 14)]
    got = list(data["t"])
    assert got[0] == dt.datetime(1, 1, 1)
    last_ms = dt.datetime(9999, 12, 31, 23, 59, 59, 999000)
    assert abs(got[1] - last_ms) < dt.timedelta(microseconds=50)
    assert abs(got[2] - dt.datetime(1582, 10, 15, 0, 0, 0, 1)) < dt.timedelta(microseconds=2)


def test_close_fails_when_fewer_rows_came_than_the_header_holds(tmp_path: Path) -> None:
    columns = [Column("id", "id", ColumnType.INTEGER, False, True)]
    writer = SpssFileWriter(tmp_path / "short.zsav", columns, HeaderFacts(row_count=2))
    writer.write_batch([[1.0]])
    with pytest.raises(Exception, match="row"):
        writer.close()


def test_abort_leaves_no_file(tmp_path: Path) -> None:
    columns = [Column("id", "id", ColumnType.INTEGER, False, True)]
    path = tmp_path / "partial.zsav"
    writer = SpssFileWriter(path, columns, HeaderFacts(row_count=3))
    writer.write_batch([[1.0]])
    writer.abort()
    assert not path.exists()


def test_converters_cover_every_neutral_type() -> None:
    for kind in ColumnType:
        column = Column("c", "c", kind, True, False)
        assert converter_for(column)(None) is None


def test_reserved_words_are_the_vendors_list() -> None:
    assert {"ALL", "AND", "BY", "EQ", "GE", "GT", "LE", "LT", "NE", "NOT", "OR", "TO",
            "WITH"} == RESERVED_WORDS


def test_nul_characters_are_dropped_not_cut_at() -> None:
    text = converter_for(Column("t", "t", ColumnType.TEXT, True, False))
    as_json = converter_for(Column("j", "j", ColumnType.JSON, True, False))
    assert text("a\x00b \x01c") == "ab \x01c"
    assert as_json({"k": "a\x00b"}) == b'{"k":"a\\u0000b"}'  # JSON escapes it: kept


def test_text_over_the_spss_limit_is_refused_by_the_converter() -> None:
    text = converter_for(Column("t", "t", ColumnType.TEXT, True, False))
    as_json = converter_for(Column("j", "j", ColumnType.JSON, True, False))
    fits = "é" * 16_383 + "x"
    assert text(fits) == fits
    with pytest.raises(ValueError, match="is 32768 bytes of text; an SPSS string variable holds"):
        text("ü" * 16_384)
    with pytest.raises(ValueError, match="is 32770 bytes"):
        as_json(["x" * 32_766])


def test_header_facts_from_a_spool_that_measured_by_position(tmp_path: Path) -> None:
    columns = datatile_columns({"properties": {"id": {"type": "integer"},
                                               "t": {"type": "string"}}})
    facts = HeaderFacts.from_widths(2, columns, [0, 5])
    writer = SpssFileWriter(tmp_path / "f.zsav", columns, facts)
    writer.write_batch([(1.0, "abcde"), (2.0, "xy")])  # tuples, as the core's encoder makes
    writer.close()
    data, meta = read(tmp_path / "f.zsav")
    assert meta.original_variable_types["t"] == "A5"
    assert list(data["t"]) == ["abcde", "xy"]


def test_a_whole_file_from_batches_and_no_file_when_a_batch_fails(tmp_path: Path) -> None:
    columns = datatile_columns({"properties": {"id": {"type": "integer"},
                                               "at": {"type": "string", "format": "date-time"}}})
    good = write_spss_file(tmp_path / "ok.zsav", columns, HeaderFacts(3),
                           [[(1.0, "2024-01-02 03:04:05")],  # the core's default date-time text
                            [(2.0, dt.datetime(2024, 1, 2, 3, 4, 6)), (3.0, None)]])
    data, _ = read(good)
    assert list(data["at"]) == [dt.datetime(2024, 1, 2, 3, 4, 5), dt.datetime(2024, 1, 2, 3, 4, 6),
                                None]

    def failing() -> Iterator[list[tuple]]:
        yield [(1.0, None)]
        raise KeyboardInterrupt  # a signal in the middle of writing

    with pytest.raises(KeyboardInterrupt):
        write_spss_file(tmp_path / "cut.zsav", columns, HeaderFacts(2), failing())
    assert not (tmp_path / "cut.zsav").exists()
