"""Values land exactly: a number keeps the tap's digits, a date-time its instant, at any year.

Property-based (hypothesis) checks of the conversions against references written here from
first principles (calendar arithmetic, decimal text), over years 1-9999, offsets -14:00 to
+14:00 and decimals of up to 38 digits; then the issue's cases end to end, over HTTP, with
the sandbox's stored text checked byte for byte.
"""

from __future__ import annotations

import decimal
import json
from pathlib import Path

import pytest
from conftest import NumberText, Sandbox, lines, record, run_target, schema, state
from hypothesis import example, given, settings
from hypothesis import strategies as st

from target_core import conversions
from target_core.reader import _decode
from target_core.rows import compile_row_encoder

# -- reference: days since 0001-01-01, by counting (not by the datetime module) -------------


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _month_days(year: int) -> list[int]:
    return [31, 29 if _is_leap(year) else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


def _days_before_year(year: int) -> int:
    y = year - 1
    return y * 365 + y // 4 - y // 100 + y // 400


def _to_days(year: int, month: int, day: int) -> int:
    return _days_before_year(year) + sum(_month_days(year)[: month - 1]) + day - 1


def _from_days(days: int) -> tuple[int, int, int]:
    year = 1 + days // 366  # never past the answer; walk forward
    while _days_before_year(year + 1) <= days:
        year += 1
    days -= _days_before_year(year)
    month = 1
    for length in _month_days(year):
        if days < length:
            break
        days -= length
        month += 1
    return year, month, days + 1


def reference_utc(year: int, month: int, day: int, hms: tuple[int, int, int],
                  offset_minutes: int) -> str | None:
    """`YYYY-MM-DD HH:MM:SS` in UTC, or None when the instant is outside years 1-9999."""
    seconds = (_to_days(year, month, day) * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2]
               - offset_minutes * 60)
    days, rest = divmod(seconds, 86400)
    if days < 0 or days >= _to_days(10000, 1, 1):
        return None
    y, m, d = _from_days(days)
    return f"{y:04d}-{m:02d}-{d:02d} {rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


def _offset_text(minutes: int, zulu: bool) -> str:
    if zulu and minutes == 0:
        return "Z"
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


calendar_days = st.integers(1, 9999).flatmap(
    lambda y: st.integers(1, 12).flatmap(
        lambda m: st.tuples(st.just(y), st.just(m), st.integers(1, _month_days(y)[m - 1]))))


@settings(max_examples=800, deadline=None)
@given(day=calendar_days,
       hms=st.tuples(st.integers(0, 23), st.integers(0, 59), st.integers(0, 59)),
       fraction=st.one_of(st.just(""), st.integers(0, 999999).map(lambda f: f".{f:06d}")),
       offset=st.integers(-14 * 60, 14 * 60), zulu=st.booleans(), separator=st.sampled_from("T "))
@example(day=(999, 1, 1), hms=(0, 0, 0), fraction="", offset=0, zulu=True, separator="T")
@example(day=(1, 1, 1), hms=(0, 30, 0), fraction="", offset=60, zulu=False, separator="T")
@example(day=(9999, 12, 31), hms=(23, 0, 0), fraction="", offset=-60, zulu=False,
         separator="T")
def test_date_times_keep_their_instant_at_any_year_and_offset(
        day: tuple[int, int, int], hms: tuple[int, int, int], fraction: str, offset: int,
        zulu: bool, separator: str) -> None:
    year, month, mday = day
    text = (f"{year:04d}-{month:02d}-{mday:02d}{separator}{hms[0]:02d}:{hms[1]:02d}:"
            f"{hms[2]:02d}{fraction}{_offset_text(offset, zulu)}")
    expected = reference_utc(year, month, mday, hms, offset)
    if expected is None:
        with pytest.raises(ValueError):
            conversions.utc_datetime_text(text)
    else:
        assert conversions.utc_datetime_text(text) == expected
    # a date given as a date-time is the calendar date where it was written
    assert conversions.date_text(text) == f"{year:04d}-{month:02d}-{mday:02d}"


@settings(max_examples=300, deadline=None)
@given(day=calendar_days)
def test_dates_keep_four_digit_years(day: tuple[int, int, int]) -> None:
    text = f"{day[0]:04d}-{day[1]:02d}-{day[2]:02d}"
    assert conversions.date_text(text) == text


# -- numbers: through the reader and the row encoder, as a record travels ------------------

_encode, _ = compile_row_encoder(["n", "o"], [conversions.number, conversions.json_text],
                                 {"properties": {"n": {"type": ["number", "null"]},
                                                 "o": {"type": ["object", "null"]}}})


def _number_out(number_text: str) -> tuple[str, str]:
    """(the number column's JSON text, the JSON-text column's) for one decoded record line."""
    line = (f'{{"type":"RECORD","stream":"s","record":{{"n":{number_text},'
            f'"o":{{"v":{number_text}}}}}}}').encode()
    row = _encode(_decode(line)["record"])
    values = json.loads(row, parse_float=NumberText, parse_int=NumberText)
    nested = json.loads(values[1], parse_float=NumberText, parse_int=NumberText)["v"]
    return values[0], nested


decimal_texts = st.builds(
    lambda sign, whole, frac: f"{sign}{whole}" + (f".{frac}" if frac else ""),
    st.sampled_from(["", "-"]),
    st.integers(0, 10**20 - 1).map(str),
    st.one_of(st.just(""), st.text("0123456789", min_size=1, max_size=18)),
).filter(lambda t: len(t.lstrip("-").replace(".", "")) <= 38)


@settings(max_examples=800, deadline=None)
@given(text=decimal_texts)
@example(text="123456789012345678.123456")
@example(text="0.000001")
@example(text="-0.0")
@example(text="99999999999999999999.999999999999999999")
def test_decimals_keep_the_taps_digits(text: str) -> None:
    column, nested = _number_out(text)
    if "." in text:
        assert column == text
        assert nested == text
    else:  # an integer: a Python int, exact at any size (`-0` is written `0`)
        assert int(column) == int(nested) == int(text)


@settings(max_examples=500, deadline=None)
@given(mantissa=decimal_texts, exponent=st.integers(-40, 40), letter=st.sampled_from("eE"),
       plus=st.booleans())
@example(mantissa="1", exponent=-7, letter="e", plus=False)
@example(mantissa="2.5", exponent=3, letter="E", plus=True)
def test_exponents_become_positional_with_the_same_value(
        mantissa: str, exponent: int, letter: str, plus: bool) -> None:
    text = f"{mantissa}{letter}{'+' if plus and exponent >= 0 else ''}{exponent}"
    column, nested = _number_out(text)
    for out in (column, nested):
        assert "e" not in out.lower()
        assert decimal.Decimal(out) == decimal.Decimal(text)


# -- end to end: the issue's values, over HTTP, checked as stored ---------------------------


def test_issue_values_land_exactly(tmp_path: Path, sandbox: Sandbox, gn_config: dict) -> None:
    properties = {
        "id": {"type": "integer"},
        "amount": {"type": ["number", "null"]},
        "big": {"type": ["integer", "null"]},
        "at": {"type": ["string", "null"], "format": "date-time"},
        "day": {"type": ["string", "null"], "format": "date"},
        "when_or_text": {"anyOf": [{"type": "string", "format": "date-time"},
                                   {"type": "string"}, {"type": "null"}]},
        "details": {"type": ["object", "null"]},
    }
    values = [
        {"id": 1, "amount": "123456789012345678.123456", "big": 12345678901234567890123,
         "at": "0999-01-01T00:00:00Z", "day": "2024-03-01T00:00:00+02:00",
         "when_or_text": "not a date at all", "details": {"rate": "0.000001"}},
        {"id": 2, "amount": "0.000001", "big": -1, "at": "2024-03-01T00:30:00+01:00",
         "day": "0099-12-31", "when_or_text": "2024-01-01T00:00:00Z",
         "details": {"rate": "1e-7"}},
        {"id": 3, "amount": "2.50E+3", "big": None, "at": None, "day": None,
         "when_or_text": None, "details": None},
    ]
    stream = [schema("numbers", properties)]
    for v in values:  # numbers written into the JSON text exactly as a tap would send them
        rec = record("numbers", {**v, "amount": 0, "details": None})
        line = lines([rec]).decode()
        line = line.replace('"amount": 0', f'"amount": {v["amount"]}')
        if v["details"] is not None:
            line = line.replace('"details": null', f'"details": {{"rate": {v["details"]["rate"]}}}')
        stream.append(line.strip())
    stream.append(state({"bookmarks": {"numbers": {"id": 3}}}))
    run = run_target(tmp_path, gn_config, lines(stream))
    assert run.returncode == 0, run.stderr
    rows = sandbox.exact_rows()
    assert [r["amount"] for r in rows] == ["123456789012345678.123456", "0.000001", 2500]
    assert all(type(r["amount"]) is NumberText for r in rows[:2])  # the tap's text, not floats
    assert [r["big"] for r in rows] == [12345678901234567890123, -1, None]
    assert [r["at"] for r in rows] == ["0999-01-01 00:00:00", "2024-02-29 23:30:00", None]
    assert [r["day"] for r in rows] == ["2024-03-01", "0099-12-31", None]
    assert [r["when_or_text"] for r in rows] == ["not a date at all", "2024-01-01T00:00:00Z",
                                                  None]
    assert [r["details"] for r in rows] == ['{"rate":0.000001}', '{"rate":0.0000001}', None]
    columns = {c["name"]: c for c in sandbox.dataset()["columns"]}
    assert columns["when_or_text"]["subtype"] == "text"
