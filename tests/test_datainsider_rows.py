"""target-datainsider's fast row paths give what the exact ones give.

Rows are tuples of converted values; the packer builds each request body a column at a
time (`csv_data`, already escaped for the JSON body; `batch_records`) and the date-time
converter slices the common UTC shapes. Each shortcut is checked here against its
value-by-value reference (hypothesis), bad values included; then the CSV route end to end:
over 5 MB cut before sending, a 413 split, values with line ends of any kind.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import msgspec
from conftest import DI_CMD, Sandbox, lines, record, run_target, schema, state, states_of
from hypothesis import example, given, settings
from hypothesis import strategies as st

from target_datainsider.sink import (
    Layout,
    batch_records,
    boolean_cells,
    csv_data,
    escaped,
    exact_csv_text,
    exact_datetime_ms_text,
    json_bytes,
    json_cells,
    number_cells,
    plain_cells,
    quoted_cells,
    utc_datetime_ms_text,
)

CSV_ROUTE = "/datainsider/api/ingestion/csv"

# -- date-times: the sliced shapes against the parsed path -----------------------------------

_digits = st.integers(0, 99).map(lambda n: f"{n:02d}")
_fractions = st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=9).map(
    lambda d: "." + d), st.just(","), st.just(".5a"))
_ends = st.sampled_from(["Z", "+00:00", "", "+01:30", "-00:00", "-14:00", "z", "+0000",
                         "+00:00:00", "Zz", "+00:0"])


@st.composite
def datetime_texts(draw: st.DrawFn) -> str:
    """Mostly `YYYY-MM-DDTHH:MM:SS[.f]<zone>`, with impossible fields and odd shapes."""
    year = draw(st.integers(0, 10_000).map(lambda y: f"{y:04d}"))
    month, day, hour, minute, second = (draw(_digits) for _ in range(5))
    separator = draw(st.sampled_from(["T", "T", "T", " ", "t", "x"]))
    text = (f"{year}-{month}-{day}{separator}{hour}:{minute}:{second}"
            f"{draw(_fractions)}{draw(_ends)}")
    cut = draw(st.one_of(st.none(), st.integers(0, len(text))))
    return text if cut is None else text[:cut]


def _outcome(convert: Any, value: Any) -> Any:
    try:
        return convert(value)
    except (ValueError, TypeError) as exc:
        return type(exc), str(exc)


@settings(max_examples=1000, deadline=None)
@given(st.one_of(datetime_texts(), st.text(max_size=30)))
@example("2024-01-01T00:00:03+00:00")
@example("2024-01-01T00:00:03Z")
@example("2024-01-01T00:00:03.123456+00:00")
@example("2024-01-01T00:00:03.5Z")
@example("0001-01-01T00:00:00Z")
@example("2024-02-30T00:00:00Z")  # no such day: the same error on both paths
@example("2024-W01-1T00:00:00Z")  # a week date: the exact path reads it
@example("2024-01-01T24:00:00+00:00")
@example("2024-01-01T00:00:03.\u0661\u0662\u0663Z")  # digits that are not ASCII
@example("2024-01-01T00:00:03.Z")
def test_sliced_datetime_shapes_give_what_the_exact_path_gives(text: str) -> None:
    assert _outcome(utc_datetime_ms_text, text) == _outcome(exact_datetime_ms_text, text)


def test_datetime_values_that_are_not_text_take_the_exact_path() -> None:
    import datetime as dt

    moment = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert utc_datetime_ms_text(moment) == "2024-05-06 05:08:09.123Z"
    assert utc_datetime_ms_text(None) is None
    assert _outcome(utc_datetime_ms_text, 12) == _outcome(exact_datetime_ms_text, 12)


# -- CSV text: the column-wise build against the value-by-value one -------------------------

_any_text = st.text(st.characters(codec="utf-8"), max_size=12)
_special_text = st.lists(st.sampled_from(['"', ",", "\n", "\r", "\x1f", " ", "a", "é", "日",
                                          "😀", "null", "\\"]), max_size=8).map("".join)
_texts = st.one_of(st.none(), _any_text, _special_text)
_numbers = st.one_of(
    st.none(), st.integers(-(2**80), 2**80),
    st.decimals(allow_nan=False, allow_infinity=False, places=6).map(
        lambda d: msgspec.Raw(format(d, "f").encode())))
_booleans = st.one_of(st.none(), st.booleans())
_plain = st.one_of(st.none(), st.just("2024-01-01 00:00:03.000Z"), st.just("0001-12-31"))
_json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), _special_text, _any_text, _numbers),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(_special_text, inner, max_size=3)), max_leaves=6)
_jsons = st.one_of(st.none(), st.one_of(st.lists(_json_values, max_size=3),
                                        st.dictionaries(_any_text, _json_values, max_size=3))
                   .map(json_bytes))
_KINDS = {"text": (_texts, quoted_cells), "number": (_numbers, number_cells),
          "boolean": (_booleans, boolean_cells), "plain": (_plain, plain_cells),
          "json": (_jsons, json_cells)}


def _expected_cell(value: Any) -> str:
    """What a CSV reader gives back for a value (null and "" alike: an empty cell)."""
    if value is None:
        return ""
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) in (msgspec.Raw, bytes):
        return bytes(value).decode()
    return str(value)


def _parsed(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline=""), strict=True))


def _unescaped(data: bytes) -> str:
    """A piece of `data` as the JSON body carries it -> the CSV text it stands for."""
    text = json.loads(b'"' + data + b'"')
    assert isinstance(text, str)
    return text


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[tuple], list[Any], list[int | None]]:
    kinds = draw(st.lists(st.sampled_from(sorted(_KINDS)), min_size=1, max_size=5))
    rows = draw(st.lists(st.tuples(*(_KINDS[k][0] for k in kinds)), min_size=1, max_size=6))
    positions: list[int | None] = draw(st.permutations(range(len(kinds))))
    for _ in range(draw(st.integers(0, 2))):  # stored columns we lack
        positions.insert(draw(st.integers(0, len(positions))), None)
    return rows, [_KINDS[k][1] for k in kinds], positions


@settings(max_examples=500, deadline=None)
@given(batches())
def test_column_wise_csv_reads_back_as_the_value_by_value_csv(
        batch: tuple[list[tuple], list[Any], list[int | None]]) -> None:
    rows, makers, positions = batch
    expected = [[_expected_cell(None if i is None else row[i]) for i in positions]
                for row in rows]
    fast = _unescaped(csv_data(rows, makers, positions))
    assert _parsed(fast) == expected
    assert _parsed(exact_csv_text(rows, positions)) == expected
    assert fast.count("\n") - sum(_expected_cell(v).count("\n") for row in rows
                                  for v in row) == len(rows)  # one line end per row


def test_a_column_the_shortcuts_do_not_cover_takes_the_value_by_value_path() -> None:
    def exact(rows: list[tuple]) -> bytes:
        return escaped(exact_csv_text(rows, [0, 1]))

    rows = [(1, "a"), (2, 3.5)]  # a float in a text column: not what a converter makes
    assert csv_data(rows, [number_cells, quoted_cells], [0, 1]) == exact(rows)
    rows = [("x", True), ("y", 1)]  # an integer in a boolean column
    assert csv_data(rows, [quoted_cells, boolean_cells], [0, 1]) == exact(rows)
    rows = [("x", b"{}"), ("y", "{}")]  # text in a JSON column
    assert csv_data(rows, [quoted_cells, json_cells], [0, 1]) == exact(rows)
    rows = [("\\u001f", b"1"), ("y", b"2")]  # the escaped separator as text
    assert csv_data(rows, [quoted_cells, json_cells], [0, 1]) == exact(rows)


def test_one_column_rows_are_never_empty_lines() -> None:
    assert _parsed(_unescaped(csv_data([(None,), ("",), ("a",)], [quoted_cells], [0]))) == [
        [""], [""], ["a"]]


def test_batch_records_follow_the_stored_order() -> None:
    rows = [(1, "a", msgspec.Raw(b"0.10")), (2, None, msgspec.Raw(b"-1e5"))]
    assert batch_records(rows, None) == b'[[1,"a",0.10],[2,null,-1e5]]'
    layout = Layout((2, 0, 1), identity=False)
    assert json.loads(batch_records(rows, layout)) == [[0.1, 1, "a"], [-1e5, 2, None]]
    assert batch_records(rows, layout).startswith(b"[[0.10,1,")  # digits as they came


def test_batch_records_send_json_columns_as_their_text() -> None:
    rows = [(1, json_bytes({"a": msgspec.Raw(b"0.10"), "é": "\"q\""})), (2, None)]
    assert json.loads(batch_records(rows, None, [1])) == [
        [1, '{"a":0.10,"é":"\\"q\\""}'], [2, None]]
    layout = Layout((1, 0), identity=False)
    assert json.loads(batch_records(rows, layout, [1])) == [
        ['{"a":0.10,"é":"\\"q\\""}', 1], [None, 2]]


# -- the CSV route end to end ----------------------------------------------------------------

PROPS = {"id": {"type": "integer"}, "n": {"type": ["integer", "null"]},
         "text": {"type": "string"}}


def _rows(count: int, size: int) -> list[dict]:
    return [record("s", {"id": i, "n": None if i % 2 else i, "text": f"{i:06d}" + "é" * size})
            for i in range(1, count + 1)]


def test_csv_bodies_stay_under_5_mb_and_a_413_splits_them(tmp_path: Path, sandbox: Sandbox,
                                                         di_config: dict) -> None:
    result = run_target(tmp_path, di_config, lines([schema("s", PROPS), *_rows(600, 10_000),
                                                    state({"done": 1})]), command=DI_CMD)
    assert result.returncode == 0, result.stderr
    inserts = [r for r in sandbox.requests() if r["path"] == CSV_ROUTE]
    assert len(inserts) >= 3  # 12 MB of text as sent: cut before sending, never refused
    assert all(r["status"] == 200 and r["request_bytes"] < 5 * 1024 * 1024 for r in inserts)
    landed = sandbox.di_rows("s")
    assert [(r["id"], r["n"]) for r in landed] == [(i, None if i % 2 else i)
                                                   for i in range(1, 601)]
    assert landed[-1]["text"] == "000600" + "é" * 10_000

    sandbox.settings(max_body_bytes=100_000)  # smaller than a batch: 413, split, resent
    result = run_target(tmp_path, {**di_config, "table_map": {"s": "t"}},
                        lines([schema("s", PROPS), *_rows(40, 3_000), state({"done": 2})]),
                        command=DI_CMD)
    assert result.returncode == 0, result.stderr
    statuses = [r["status"] for r in sandbox.requests() if r["path"] == CSV_ROUTE]
    assert 413 in statuses
    assert [(r["id"], r["n"], r["text"]) for r in sandbox.di_rows("t")] == [
        (i, None if i % 2 else i, f"{i:06d}" + "é" * 3_000) for i in range(1, 41)]
    assert states_of(result.stdout) == [{"done": 2}]


def test_text_with_every_kind_of_line_end_lands_on_the_csv_route(
        tmp_path: Path, sandbox: Sandbox, di_config: dict) -> None:
    values = ["a\rb", "c\r\nd", "e\nf", ' "q" , x ', "\x1fsep\x1f", "😀 日本"]
    messages = [schema("s", PROPS), *(record("s", {"id": i, "n": None, "text": text})
                                      for i, text in enumerate(values, 1)), state({"x": 1})]
    result = run_target(tmp_path, di_config, lines(messages), command=DI_CMD)
    assert result.returncode == 0, result.stderr
    assert [r["text"] for r in sandbox.di_rows("s")] == values
    assert [r["path"] for r in sandbox.requests()].count(CSV_ROUTE) == 1


def test_a_csv_body_given_in_pieces_holds_their_text_in_order() -> None:
    from target_datainsider.client import CSV_SETTING, DataInsiderClient

    pieces = ['1,"a ""q"" \\ é",\n', '2,"😀\r\n\x1f",true\n', ""]
    body = DataInsiderClient(None, "key").csv_body(  # type: ignore[arg-type]
        "db", "t", map(escaped, pieces))
    assert json.loads(body) == {"api_key": "key", "db_name": "db", "tbl_name": "t",
                                "csv_setting": CSV_SETTING, "data": "".join(pieces)}
