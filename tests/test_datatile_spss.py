"""DataTile's variable rules and the SPSS writer, read back with pyreadstat (an independent
reader): names, labels, types, nulls, widths, and the limits SPSS sets."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyreadstat
import pytest
from datatile_files import PEOPLE, PEOPLE_SCHEMA, write_spss
from hypothesis import example, given
from hypothesis import strategies as st

from target_core import conversions
from target_core.columns import Column, ColumnType
from target_datatile.spss import (
    HeaderFacts,
    SavWriter,
    SpssFileWriter,
    spss_record_batch,
    temporal_array,
    write_spss_file,
)
from target_datatile.variables import (
    MAX_NAME_BYTES,
    RESERVED_WORDS,
    converter_for,
    datatile_columns,
    exact_spss_datetime,
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
    assert spss_number(3) == 3 and spss_number(2**53 + 1) == float(2**53 + 1)
    numeric = pa.schema([("n", pa.float64())])
    assert spss_record_batch(numeric, [(spss_number(3),), (spss_number(-(2**53)),),
                                       (spss_boolean(True),)]).column(0).to_pylist() == [
        3.0, -(2.0**53), 1.0]
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
    assert spss_datetime("2024-01-02T03:04:05Z") == "2024-01-02T03:04:05"  # cut
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


# fast paths of the converters: the same result as the exact path -------------------------
def _as_instant(text: str | None) -> object:
    """What the writer makes of a converter's date-time text (Arrow's cast, in C), in a
    batch of its own and in a batch next to a value of the common shape."""
    schema = pa.schema([("t", pa.timestamp("us"))])
    alone = spss_record_batch(schema, [(text,)]).column(0)[0].as_py()
    batch = spss_record_batch(schema, [("2024-01-01T00:00:00", ), (text,)])
    assert batch.column(0)[1].as_py() == alone
    assert temporal_array([text], pa.timestamp("us"))[0].as_py() == alone
    return alone


def _outcome(convert: Callable[[Any], Any], value: Any) -> tuple[str, object]:
    try:
        return "ok", convert(value)
    except ValueError as exc:
        return "error", str(exc)


datetimes = st.datetimes(min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30))


@st.composite
def iso_shapes(draw: st.DrawFn) -> str:
    """Date-times in the shapes Python's fromisoformat reads, and some it does not."""
    moment = draw(datetimes)
    date = draw(st.sampled_from([moment.strftime("%Y-%m-%d").zfill(10),
                                 f"{moment.year:04d}{moment.month:02d}{moment.day:02d}",
                                 "{:04d}-W{:02d}-{}".format(*moment.isocalendar())]))
    time = draw(st.sampled_from(["", f"{moment.hour:02d}", f"{moment:%H:%M}",
                                 f"{moment:%H:%M:%S}", f"{moment:%H%M%S}"]))
    digits = draw(st.integers(0, 9)) if time.count(":") == 2 else 0
    fraction = draw(st.sampled_from([".", ","])) + f"{moment.microsecond:06d}123"[:digits] \
        if digits else ""
    zone = draw(st.sampled_from(["", "Z", "+00:00", "-00:00", "+0000", "+00:00:00", "+01:00",
                                 "-23:59", "z"])) if time else ""
    separator = draw(st.sampled_from(["T", " "]))
    return f"{date}{separator}{time}{fraction}{zone}" if time else date


@given(iso_shapes())
@example("9999-12-31T23:59:59.999999Z")
@example("9999-12-31T23:59:59.9994")
@example("0001-01-01T00:00:00+01:00")
@example("0999-03-04T05:06:07.08+00:00")
def test_date_times_land_on_the_exact_paths_instant(text: str) -> None:
    _same_as_the_exact_path(text)


@given(st.one_of(st.text(max_size=40), st.from_regex(
    r"\A[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,7})?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})?\Z"), st.integers(), st.none()))
@example("2024-02-30T00:00:00Z")
@example("2024-13-01T00:00:00")
@example("2024-01-01T24:00:00+00:00")
@example("2024-01-01T00:00:60")
@example("2024-01-01T00:00:00,5Z")
@example("2024-W01-1T00:00:00")
def test_bad_date_times_get_the_exact_paths_error(text: object) -> None:
    _same_as_the_exact_path(text)


def _same_as_the_exact_path(text: object) -> None:
    """The same instant once the writer has cast it, or the same error."""
    fast, exact = _outcome(spss_datetime, text), _outcome(exact_spss_datetime, text)
    assert fast[0] == exact[0]
    if fast[0] == "ok":
        assert _as_instant(fast[1]) == _as_instant(exact[1])
    else:
        assert fast == exact


def _exact_number(value: Any) -> float | None:
    """spss_number before it had a fast path: Python's own `float` of the number's text
    (as `conversions.number_float` did before it had one too)."""
    try:
        exact = conversions.number(value)
        number = None if exact is None else float(bytes(exact)) \
            if type(exact) is conversions.Raw else float(exact)
    except OverflowError:
        number = math.inf
    if number is not None and math.isinf(number):
        raise ValueError("is too large for an SPSS numeric variable (a double)")
    return number


@given(st.one_of(
    st.integers(), st.integers(-(10**400), 10**400), st.none(), st.booleans(),
    st.decimals(allow_nan=False, allow_infinity=False).map(
        lambda d: conversions.exact_number(str(d))),
    # what the reader makes of a JSON number with a fraction (JSON: no leading zeros)
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,400})\.[0-9]{1,30}\Z").map(conversions.exact_number),
    st.floats(allow_nan=False), st.text(max_size=3)))
@example(conversions.exact_number("9007199254740993.0"))  # halfway between two doubles
@example(conversions.exact_number("2.4703282292062328e-324"))  # just above half the least
@example(conversions.exact_number("1.7976931348623158e308"))  # rounds to the largest
@example(conversions.exact_number("1.7976931348623159e308"))  # rounds to infinity
def test_spss_number_matches_number_float(value: Any) -> None:
    fast = _outcome(spss_number, value)
    assert fast == _outcome(_exact_number, value)


@given(st.one_of(
    st.integers(-(10**400), 10**400).map(lambda n: conversions.exact_number(str(n))),
    st.from_regex(r"\A-?(0|[1-9][0-9]{0,400})\.[0-9]{1,30}\Z").map(conversions.exact_number),
    st.floats(allow_nan=False, allow_infinity=False).map(
        lambda f: conversions.exact_number(repr(f)))))
@example(conversions.exact_number("9007199254740993.0"))
@example(conversions.exact_number("1.7976931348623159e308"))
def test_number_float_reads_raw_text_as_python_does(value: Any) -> None:
    expected = float(bytes(value)) if type(value) is conversions.Raw else float(value)
    assert conversions.number_float(value) == expected


@given(st.one_of(st.text(max_size=50), st.text(min_size=8180, max_size=8200),
                 st.just("é" * 16_384), st.just("a\x00" * 9000), st.none(), st.integers(),
                 st.dictionaries(st.text(max_size=5), st.integers())))
def test_spss_text_fast_path_matches_the_measured_one(value: Any) -> None:
    convert = converter_for(Column("t", "t", ColumnType.TEXT, True, False))

    def measured(v: Any) -> Any:
        text = conversions.text(v)
        if text is None:
            return None
        text = text.replace("\x00", "")
        if len(text.encode()) > 32_767:
            raise ValueError(f"is {len(text.encode())} bytes of text; an SPSS string "
                             "variable holds at most 32767 bytes")
        return text

    assert _outcome(convert, value) == _outcome(measured, value)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=4),
                           max_leaves=20)


@given(json_values)
def test_spss_json_is_the_utf8_of_json_text(value: Any) -> None:
    convert = converter_for(Column("j", "j", ColumnType.JSON, True, False))
    got = convert(value)
    assert (None if got is None else got.decode()) == conversions.json_text(value)


def test_a_column_turned_text_holds_its_earlier_values_as_text(tmp_path: Path) -> None:
    before = datatile_columns({"properties": {
        "i": {"type": ["integer", "null"]}, "b": {"type": ["boolean", "null"]},
        "n": {"type": ["number", "null"]}, "d": {"type": ["string", "null"], "format": "date"},
        "t": {"type": ["string", "null"], "format": "date-time"}}})
    after = [Column(c.name, c.source, ColumnType.TEXT, True, False) for c in before]
    writer = SavWriter(tmp_path / "r", before)
    convert = [writer.converter_for(c) for c in before]
    values = [(12, True, 123456.789, "0999-01-02", "2024-01-02T03:04:05.5+01:00"),
              (None, False, None, None, None)]
    writer.write_rows([tuple(f(v) for f, v in zip(convert, row, strict=True))
                       for row in values])
    writer.extend(after)
    writer.write_rows([("x", "y", "z", "w", "v")])
    data, meta = read(writer.finish())
    assert [list(data[c.name]) for c in before] == [
        ["12", "", "x"], ["true", "false", "y"], ["123456.789", "", "z"],
        ["0999-01-02", "", "w"], ["2024-01-02T02:04:05.500000", "", "v"]]
    assert meta.original_variable_types["t"] == "A26"
