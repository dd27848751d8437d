"""The fast paths of uSmart's cell converters give what the exact paths give.

`datetime_cell` slices the common UTC shapes (`...Z`, `...+00:00`) instead of parsing,
converting and formatting them; every other value goes through `iso_datetime`, the exact
path. These tests hold the two together on any value: the same text for good values, the
same error for bad ones.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from conftest import usmart_cells
from hypothesis import given, settings
from hypothesis import strategies as st

from target_core.columns import Column, ColumnType
from target_usmart.ingest_csv import datetime_cell, iso_datetime

UTC = dt.UTC
_ZONES = st.sampled_from([None, UTC, dt.timezone(dt.timedelta(0)),
                          dt.timezone(dt.timedelta(hours=5, minutes=30)),
                          dt.timezone(dt.timedelta(hours=-8))])
_MOMENTS = st.builds(lambda moment, zone: moment.replace(tzinfo=zone),
                     st.datetimes(min_value=dt.datetime(1, 1, 2),
                                  max_value=dt.datetime(9999, 12, 30)), _ZONES)


def _shapes(moment: dt.datetime, fraction: str) -> list[str]:
    """The ways taps write one instant: isoformat, `Z` for `+00:00`, other fraction
    lengths, a space separator, the seconds-only and basic forms."""
    iso = moment.isoformat()
    plain = moment.replace(microsecond=0).isoformat()
    shapes = [iso, iso.replace("+00:00", "Z"), iso.replace("T", " "),
              plain[:19] + fraction + plain[19:],
              (plain[:19] + fraction + plain[19:]).replace("+00:00", "Z"),
              moment.strftime("%Y%m%dT%H%M%S") + plain[19:]]
    return shapes


def exact(value: Any) -> str:
    return iso_datetime(value) or ""


def outcome(convert: Any, value: Any) -> tuple[str, str]:
    try:
        return "ok", convert(value)
    except (ValueError, TypeError) as exc:
        return type(exc).__name__, str(exc)


@settings(max_examples=500, deadline=None)
@given(moment=_MOMENTS, fraction=st.sampled_from(["", ".5", ".000", ".123456", ".000000",
                                                    ".123456789", ",25"]))
def test_fast_and_exact_paths_agree_on_good_values(moment: dt.datetime, fraction: str) -> None:
    for value in _shapes(moment, fraction):
        assert outcome(datetime_cell, value) == outcome(exact, value), value


_CHARS = st.sampled_from("0123456789-:TZ+. Wz")


@settings(max_examples=1000, deadline=None)
@given(base=st.sampled_from(["2024-01-31T10:00:00+00:00", "2024-01-31T10:00:00Z",
                             "2024-02-29T23:59:59.123456+00:00", "0001-01-01T00:00:00Z"]),
       at=st.integers(0, 31), char=_CHARS)
def test_fast_and_exact_paths_agree_on_mutated_values(base: str, at: int, char: str) -> None:
    """One character changed anywhere (a bad month, a missing separator, another offset):
    both paths accept the same values with the same text, and refuse the rest alike."""
    value = base[:at] + char + base[at + 1:]
    assert outcome(datetime_cell, value) == outcome(exact, value), value


@pytest.mark.parametrize(("value", "expected"), [
    ("2024-01-02T03:04:05+00:00", "2024-01-02T03:04:05Z"),
    ("2024-01-02T03:04:05.250000+00:00", "2024-01-02T03:04:05.250000Z"),
    ("2024-01-02T03:04:05.000000+00:00", "2024-01-02T03:04:05Z"),  # as isoformat would
    ("2024-01-02T03:04:05.25+00:00", "2024-01-02T03:04:05.250000Z"),
    ("0999-01-02T03:04:05Z", "0999-01-02T03:04:05Z"),
    ("2024-W01-1T03:04:05Z", "2024-01-01T03:04:05Z"),  # a week date is rewritten, not kept
    ("20240102T030405Z", "2024-01-02T03:04:05Z"),
    (None, ""),
])
def test_date_time_cells(value: str | None, expected: str) -> None:
    assert datetime_cell(value) == expected == exact(value)


@pytest.mark.parametrize("value", ["2024-02-30T00:00:00Z", "2024-02-30T00:00:00+00:00",
                                   "2024-01-01T25:00:00+00:00", "yesterday", "", 17])
def test_bad_date_times_get_the_exact_paths_error(value: Any) -> None:
    with pytest.raises(ValueError) as fast:
        datetime_cell(value)
    with pytest.raises(ValueError) as slow:
        iso_datetime(value)
    assert str(fast.value) == str(slow.value)


def test_every_type_becomes_a_finished_cell() -> None:
    """What the writer joins: strings only, quoting done, `""` only for a null."""
    T = ColumnType
    columns = [Column(kind.value, kind.value, kind, True, False) for kind in T]
    values = {T.TEXT: 'say "0012"', T.INTEGER: 7, T.NUMBER: 0.5, T.BOOLEAN: False,
              T.DATE: "2024-01-02", T.DATETIME: "2024-01-02T03:04:05+00:00",
              T.TIME: "10:00:00", T.JSON: {"a": [1, "b"]}}
    cells = usmart_cells(columns, [values[c.type] for c in columns])
    assert dict(zip([c.type for c in columns], cells, strict=True)) == {
        T.TEXT: '"say ""0012"""', T.INTEGER: "7", T.NUMBER: "0.5", T.BOOLEAN: "false",
        T.DATE: "2024-01-02", T.DATETIME: "2024-01-02T03:04:05Z", T.TIME: '"10:00:00"',
        T.JSON: '"{""a"":[1,""b""]}"'}
    assert usmart_cells(columns, [None] * len(columns)) == ("",) * len(columns)
