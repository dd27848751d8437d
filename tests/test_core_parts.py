"""target_core pieces on their own: column types, conversions, rate limit, redaction."""

from __future__ import annotations

import logging

import pytest

from target_core import conversions
from target_core.columns import (
    ColumnType,
    column_type,
    columns_from_schema,
    identifier,
    unique_names,
)
from target_core.errors import ConfigError
from target_core.http import RateLimiter, check_url, retry_after_seconds
from target_core.redaction import MASK, Redactor, install_log_redaction


@pytest.mark.parametrize(("prop", "expected"), [
    ({"type": "integer"}, (ColumnType.INTEGER, False)),
    ({"type": ["integer", "null"]}, (ColumnType.INTEGER, True)),
    ({"type": ["number", "integer"]}, (ColumnType.NUMBER, False)),
    ({"type": "boolean"}, (ColumnType.BOOLEAN, False)),
    ({"type": "string", "format": "date-time"}, (ColumnType.DATETIME, False)),
    ({"type": ["null", "string"], "format": "date"}, (ColumnType.DATE, True)),
    ({"type": "string", "format": "time"}, (ColumnType.TIME, False)),
    ({"type": "string", "format": "email"}, (ColumnType.TEXT, False)),
    ({"anyOf": [{"type": "string", "format": "date-time"}, {"type": "null"}]},
     (ColumnType.DATETIME, True)),
    ({"anyOf": [{"type": "integer"}, {"type": "string"}]}, (ColumnType.TEXT, False)),
    ({"type": "object", "properties": {"a": {"type": "integer"}}}, (ColumnType.JSON, False)),
    ({"properties": {"a": {"type": "integer"}}}, (ColumnType.JSON, False)),
    ({"type": ["array", "null"], "items": {"type": "string"}}, (ColumnType.JSON, True)),
    ({}, (ColumnType.TEXT, True)),
])
def test_column_types(prop: dict, expected: tuple) -> None:
    assert column_type(prop)[:2] == expected


def test_column_names_are_safe_and_unique() -> None:
    schema = {"properties": {"a-b": {}, "a_b": {}, "A B": {}, "1st": {}, "ünï": {}, "": {}}}
    names = [c.name for c in columns_from_schema(schema, ["a-b"])]
    assert names == ["a_b", "a_b_2", "A_B_3", "_1st", "uni", "column"]  # case-insensitive
    assert [c.is_key for c in columns_from_schema(schema, ["a-b"])][:2] == [True, False]
    assert identifier("agent:os:version") == "agent_os_version"


def test_numbered_names_stay_within_a_byte_limit() -> None:
    """A platform's name limit (DataTile: 64 bytes) holds after the `_2` suffix too, and a
    cut never splits a character; so does a column added by a later SCHEMA."""
    from target_core.filesink import merge_columns

    long = "é" * 40  # 80 bytes: the rule itself keeps names within the limit
    keep = lambda name: name.encode()[:8].decode("utf-8", "ignore")  # noqa: E731
    names = unique_names([long, long, "x" * 20, "X" * 20], keep, max_bytes=8)
    assert names == ["éééé", "ééé_2", "xxxxxxxx", "XXXXXX_2"]
    assert all(len(n.encode()) <= 8 for n in names)
    known = columns_from_schema({"properties": {"abcdefgh": {}}}, (), keep, 8)
    added = columns_from_schema({"properties": {"ABCDEFGH": {}}}, (), keep, 8)
    assert [c.name for c in merge_columns(known, added, 8)] == ["abcdefgh", "ABCDEF_2"]


@pytest.mark.parametrize(("value", "expected"), [
    ("2024-03-01T10:20:30Z", "2024-03-01 10:20:30"),
    ("2024-03-01T10:20:30.999999+00:00", "2024-03-01 10:20:30"),
    ("2024-03-01T01:20:30-05:30", "2024-03-01 06:50:30"),
    ("2024-03-01T00:20:30+02:00", "2024-02-29 22:20:30"),
    ("2024-03-01 10:20:30", "2024-03-01 10:20:30"),
    ("2024-03-01", "2024-03-01 00:00:00"),
    ("2024-01-01T10:00+00:00", "2024-01-01 10:00:00"),  # no seconds
    ("2024-01-01T100000.5Z", "2024-01-01 10:00:00"),  # ISO basic time
    ("2024-W01-1T10:00:00", "2024-01-01 10:00:00"),  # ISO week date
    ("0201-12-31T23:59:59+01:00", "0201-12-31 22:59:59"),  # a year below 1000 keeps 4 digits
    (None, None),
])
def test_datetimes_become_utc_text(value: str | None, expected: str | None) -> None:
    assert conversions.utc_datetime_text(value) == expected


@pytest.mark.parametrize("value", ["2024-13-01T00:00:00Z", "yesterday", 1700000000, "",
                                   "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_bad_datetimes_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        conversions.utc_datetime_text(value)


def test_other_conversions() -> None:
    assert conversions.date_text("2024-02-29") == "2024-02-29"
    # a date given as a date-time is its local calendar date, never shifted to UTC (issue 13)
    assert conversions.date_text("2024-02-29T23:00:00-02:00") == "2024-02-29"
    assert conversions.date_text("2024-03-01T00:00:00+02:00") == "2024-03-01"
    assert conversions.utc_datetime_text("0999-06-01T12:00:00Z") == "0999-06-01 12:00:00"
    assert conversions.boolean_text(True) == "true"
    assert conversions.text(12.5) == "12.5"
    assert conversions.text({"a": [1, None]}) == '{"a":[1,null]}'
    assert conversions.json_text(["é"]) == '["é"]'
    with pytest.raises(ValueError):
        conversions.number("12")


def test_rate_limiter_keeps_a_sliding_window() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(3, period=60, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        assert limiter.acquire() == 0.0
    now[0] = 10.0
    # the 4th call waits until the 1st leaves the window, plus the 1 s margin
    assert limiter.acquire() == 51.0
    assert slept == [51.0]
    assert limiter.waited_total == 51.0
    assert RateLimiter(0).acquire() == 0.0  # 0: no limit


def test_rate_limiter_counts_a_call_from_its_answer() -> None:
    """A slow upload reaches the server late: its slot counts from when the answer came,
    so the next window never opens before the server's does (no 429 from our pacing)."""
    now = [0.0]
    limiter = RateLimiter(1, period=60, clock=lambda: now[0], sleep=lambda s: now.__setitem__(
        0, now[0] + s), margin=0.5)
    limiter.acquire()
    now[0] = 20.0  # the call took 20 s (a big body on a slow link)
    limiter.release()
    assert limiter.acquire() == 60.5  # 20 + 60 + 0.5, not 60.5 after the start


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("100000") == 600.0  # capped


def test_plain_http_only_to_loopback() -> None:
    assert check_url("http://127.0.0.1:8765/gn/api/", "api_url") == "http://127.0.0.1:8765/gn/api"
    assert check_url("http://localhost/x", "api_url")
    assert check_url("https://app.graphite-note.com/api", "api_url")
    for bad in ("http://10.0.0.5/api", "ftp://x/y", "not a url"):
        with pytest.raises(ConfigError):
            check_url(bad, "api_url")


def test_redaction_in_text_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    redact = Redactor(["s3cr3t-token"])
    assert redact("token s3cr3t-token in Authorization: Bearer abc.def") == (
        f"token {MASK} in Authorization: Bearer {MASK}")
    install_log_redaction(["another-s3cret"])
    logger = logging.getLogger("test.redaction")
    handler = logging.StreamHandler()
    logger.addHandler(handler)
    try:
        install_log_redaction([])
        records: list[str] = []
        handler.emit = lambda record: records.append(handler.format(record))  # type: ignore
        try:
            raise RuntimeError("failed with another-s3cret")
        except RuntimeError:
            logger.exception("call with %s", "another-s3cret")
    finally:
        logger.removeHandler(handler)
    assert records and all("another-s3cret" not in r for r in records)
    assert MASK in records[0]
