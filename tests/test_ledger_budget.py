"""Budgets and calendar arithmetic: local days and months, DST, resets, the 80 % warning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway.ledger.budget import Budgets, Refusal, check, warnings
from gateway.ledger.period import (
    day_start,
    local_zone,
    month_start,
    next_day_start,
    next_month_start,
    parse_since,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SANTIAGO = ZoneInfo("America/Santiago")  # springs forward at local midnight


def at(text: str, tz: ZoneInfo) -> float:
    """The instant of a local wall-clock time."""
    return datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


DAYS = [
    # (zone, now (local), start of its day, start of the next day, length of the day in hours)
    (BERLIN, "2026-12-01T15:00", "2026-12-01T00:00+01:00", "2026-12-02T00:00+01:00", 24),
    (BERLIN, "2026-03-29T12:00", "2026-03-29T00:00+01:00", "2026-03-30T00:00+02:00", 23),
    (BERLIN, "2026-10-25T12:00", "2026-10-25T00:00+02:00", "2026-10-26T00:00+01:00", 25),
    (BERLIN, "2026-03-29T00:30", "2026-03-29T00:00+01:00", "2026-03-30T00:00+02:00", 23),
    (NEW_YORK, "2026-03-08T23:59", "2026-03-08T00:00-05:00", "2026-03-09T00:00-04:00", 23),
    # Santiago's midnight of 2026-09-06 does not exist: that day starts at 01:00.
    (SANTIAGO, "2026-09-05T12:00", "2026-09-05T00:00-04:00", "2026-09-06T01:00-03:00", 24),
    (SANTIAGO, "2026-09-06T12:00", "2026-09-06T01:00-03:00", "2026-09-07T00:00-03:00", 23),
    (SANTIAGO, "2026-04-04T23:30", "2026-04-04T00:00-03:00", "2026-04-05T00:00-04:00", 25),
]


@pytest.mark.parametrize(("tz", "now", "start", "end", "hours"), DAYS)
def test_local_day_boundaries_follow_the_zone_through_dst(
    tz: ZoneInfo, now: str, start: str, end: str, hours: int
) -> None:
    ts = at(now, tz)
    assert day_start(ts, tz) == datetime.fromisoformat(start)
    assert next_day_start(ts, tz) == datetime.fromisoformat(end)
    length = next_day_start(ts, tz).timestamp() - day_start(ts, tz).timestamp()
    assert length == hours * 3600


MONTHS = [
    (BERLIN, "2026-12-31T23:59", "2026-12-01T00:00+01:00", "2027-01-01T00:00+01:00"),
    (BERLIN, "2026-03-31T12:00", "2026-03-01T00:00+01:00", "2026-04-01T00:00+02:00"),
    (BERLIN, "2026-10-01T00:00", "2026-10-01T00:00+02:00", "2026-11-01T00:00+01:00"),
    (NEW_YORK, "2028-02-29T08:00", "2028-02-01T00:00-05:00", "2028-03-01T00:00-05:00"),
    (UTC, "2026-01-31T23:59:59", "2026-01-01T00:00+00:00", "2026-02-01T00:00+00:00"),
]


@pytest.mark.parametrize(("tz", "now", "start", "end"), MONTHS)
def test_local_month_boundaries_include_year_ends_and_leap_days(
    tz: ZoneInfo, now: str, start: str, end: str
) -> None:
    ts = at(now, tz)
    assert month_start(ts, tz) == datetime.fromisoformat(start)
    assert next_month_start(ts, tz) == datetime.fromisoformat(end)


NOW = at("2026-12-10T15:00", BERLIN)
SINCE = [
    ("7d", NOW - 7 * 86400),
    ("12h", NOW - 12 * 3600),
    ("30m", NOW - 1800),
    ("2w", NOW - 14 * 86400),
    ("today", at("2026-12-10T00:00", BERLIN)),
    ("month", at("2026-12-01T00:00", BERLIN)),
    ("2026-12-01", at("2026-12-01T00:00", BERLIN)),
    ("2026-12-01T08:30", at("2026-12-01T08:30", BERLIN)),
    ("2026-12-01T08:30+00:00", datetime(2026, 12, 1, 8, 30, tzinfo=UTC).timestamp()),
]


@pytest.mark.parametrize(("text", "expected"), SINCE)
def test_since_accepts_durations_dates_and_date_times(text: str, expected: float) -> None:
    assert parse_since(text, NOW, BERLIN) == expected


@pytest.mark.parametrize("text", ["yesterday", "7", "d7", "2026-13-01", ""])
def test_since_refuses_other_text_naming_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="7d"):
        parse_since(text, NOW, BERLIN)


def test_a_named_zone_is_loaded_and_an_unknown_one_is_refused_by_name() -> None:
    assert local_zone("Europe/Berlin") == BERLIN
    assert local_zone(":America/New_York") == NEW_YORK
    with pytest.raises(ValueError, match="Mars/Olympus"):
        local_zone("Mars/Olympus")
    assert local_zone() is not None  # the machine's zone, or UTC


DAILY = Budgets(daily_usd=0.01)
MONTHLY = Budgets(monthly_usd=5.0)
BOTH = Budgets(daily_usd=1.0, monthly_usd=5.0)

CHECKS = [
    # (budgets, today, month, now, expected (period, reset) or None)
    (Budgets(), 100.0, 1000.0, "2026-12-10T15:00", None),
    (DAILY, 0.0099, 0.0099, "2026-12-10T15:00", None),
    (DAILY, 0.01, 0.01, "2026-12-10T15:00", ("daily", "2026-12-11T00:00+01:00")),
    (DAILY, 0.02, 3.0, "2026-12-31T23:59", ("daily", "2027-01-01T00:00+01:00")),
    (DAILY, 0.02, 0.02, "2026-03-29T12:00", ("daily", "2026-03-30T00:00+02:00")),
    (MONTHLY, 4.0, 4.99, "2026-12-10T15:00", None),
    (MONTHLY, 0.0, 5.0, "2026-12-10T15:00", ("monthly", "2027-01-01T00:00+01:00")),
    (MONTHLY, 0.0, 6.0, "2026-10-20T09:00", ("monthly", "2026-11-01T00:00+01:00")),
    (BOTH, 1.0, 2.0, "2026-12-10T15:00", ("daily", "2026-12-11T00:00+01:00")),
    # Both spent: the monthly one is named, it lasts longer.
    (BOTH, 1.5, 5.5, "2026-12-10T15:00", ("monthly", "2027-01-01T00:00+01:00")),
]


@pytest.mark.parametrize(("budgets", "today", "month", "now", "expected"), CHECKS)
def test_check_refuses_when_a_budget_is_spent_until_its_local_reset(
    budgets: Budgets, today: float, month: float, now: str, expected: tuple[str, str] | None
) -> None:
    refusal = check(today, month, budgets, at(now, BERLIN), BERLIN)
    if expected is None:
        assert refusal is None
        return
    assert refusal is not None
    assert (refusal.period, refusal.resets_at) == (expected[0], datetime.fromisoformat(expected[1]))


def test_refusal_message_names_the_budget_the_key_and_the_reset() -> None:
    now = at("2026-12-10T23:00", BERLIN)
    refusal = check(0.0123, 0.0123, DAILY, now, BERLIN)
    assert isinstance(refusal, Refusal)
    assert "daily budget of $0.01" in refusal.message
    assert "gateway.budget.dailyUsd" in refusal.message
    assert "2026-12-11T00:00+01:00" in refusal.message
    assert refusal.retry_after_seconds(now) == 3600
    assert refusal.spent_usd == 0.0123 and refusal.limit_usd == 0.01


def test_warning_at_80_percent_comes_once_per_day_and_again_the_next_day() -> None:
    """79 % → nothing; 80 % → one daily warning; the rest of the day → nothing; the next
    day at 80 % → one warning again."""
    budgets = Budgets(daily_usd=10.0)
    day1 = at("2026-12-10T09:00", BERLIN)
    found, state = warnings(7.9, 7.9, budgets, day1, BERLIN, frozenset())
    assert found == [] and state == frozenset()
    found, state = warnings(8.0, 8.0, budgets, day1 + 60, BERLIN, state)
    assert [(w.period, w.period_key, w.spent_usd) for w in found] == [("daily", "2026-12-10", 8.0)]
    for spent in (8.5, 9.9, 12.0):
        again, state = warnings(spent, spent, budgets, day1 + 3600, BERLIN, state)
        assert again == []
    day2 = at("2026-12-11T00:00", BERLIN)
    found, state = warnings(8.1, 16.1, budgets, day2, BERLIN, state)
    assert [w.period_key for w in found] == ["2026-12-11"]
    assert state == frozenset({("daily", "2026-12-11")})  # yesterday's mark is gone


def test_monthly_warning_is_once_per_local_month() -> None:
    budgets = Budgets(monthly_usd=100.0)
    end_of_nov = at("2026-11-30T23:30", BERLIN)
    found, state = warnings(0.0, 85.0, budgets, end_of_nov, BERLIN, frozenset())
    assert [(w.period, w.period_key) for w in found] == [("monthly", "2026-11")]
    found, state = warnings(0.0, 90.0, budgets, end_of_nov + 60, BERLIN, state)
    assert found == []
    # An hour later it is December in Berlin.
    december = end_of_nov + timedelta(hours=1).total_seconds()
    found, state = warnings(0.0, 80.0, budgets, december, BERLIN, state)
    assert [(w.period, w.period_key) for w in found] == [("monthly", "2026-12")]
