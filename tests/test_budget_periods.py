"""Budget periods follow the calendar of the configured time zone, across daylight-saving
changes, and budget scopes say which calls they cover."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_gateway.budgets import Period, Scope, ScopeKind, parse_scope, window
from llm_gateway.domain.messages import Caller
from llm_gateway.domain.principal import Principal

ZONES = [
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Asia/Kolkata",
    "America/Santiago",
    "America/Havana",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "period", "now", "start", "end"),
    [
        # Midnight in Paris is 23:00 UTC in winter: a call at 23:30 UTC is on the next local day.
        ("Europe/Paris", Period.DAY, "2026-12-02T22:59:59", "2026-12-01T23:00:00", "2026-12-02T23:00:00"),
        ("Europe/Paris", Period.DAY, "2026-12-02T23:00:00", "2026-12-02T23:00:00", "2026-12-03T23:00:00"),
        # The day the clocks go back is 25 hours long; the day they go forward, 23.
        ("Europe/Paris", Period.DAY, "2026-10-25T12:00:00", "2026-10-24T22:00:00", "2026-10-25T23:00:00"),
        ("Europe/Paris", Period.DAY, "2026-03-29T12:00:00", "2026-03-28T23:00:00", "2026-03-29T22:00:00"),
        # The repeated hour when the clocks go back is two windows.
        ("Europe/Paris", Period.HOUR, "2026-10-25T00:30:00", "2026-10-25T00:00:00", "2026-10-25T01:00:00"),
        ("Europe/Paris", Period.HOUR, "2026-10-25T01:30:00", "2026-10-25T01:00:00", "2026-10-25T02:00:00"),
        # A minute is the clock's minute anywhere (a key's quota per minute).
        ("Asia/Kolkata", Period.MINUTE, "2026-12-03T06:07:59", "2026-12-03T06:07:00", "2026-12-03T06:08:00"),
        # A half-hour offset moves the hours too.
        ("Asia/Kolkata", Period.HOUR, "2026-12-03T06:00:00", "2026-12-03T05:30:00", "2026-12-03T06:30:00"),
        # ISO weeks start on Monday; months on the 1st.
        (
            "America/New_York",
            Period.WEEK,
            "2026-12-03T12:00:00",
            "2026-11-30T05:00:00",
            "2026-12-07T05:00:00",
        ),
        (
            "America/New_York",
            Period.MONTH,
            "2026-12-01T03:00:00",
            "2026-11-01T04:00:00",
            "2026-12-01T05:00:00",
        ),
        ("UTC", Period.MONTH, "2028-02-29T23:59:59", "2028-02-01T00:00:00", "2028-03-01T00:00:00"),
        # Midnight skipped by a clock change: the day starts when the clocks jump (Chile at 24:00,
        # Cuba at 00:00).
        ("America/Santiago", Period.DAY, "2026-09-06T05:00:00", "2026-09-06T04:00:00", "2026-09-07T03:00:00"),
        ("America/Havana", Period.DAY, "2026-03-08T06:00:00", "2026-03-08T05:00:00", "2026-03-09T04:00:00"),
    ],
)
def test_windows_follow_the_local_calendar(zone: str, period: Period, now: str, start: str, end: str) -> None:
    found = window(period, ZoneInfo(zone), utc(now))
    assert (found.start, found.end) == (utc(start), utc(end))
    assert utc(now) in found


def test_a_budget_without_a_period_never_resets() -> None:
    found = window(Period.NONE, ZoneInfo("Europe/Paris"), utc("2026-12-03T00:00:00"))
    assert found.start.year == 1970
    assert found.end.year == 9999


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        window(Period.DAY, ZoneInfo("UTC"), datetime(2026, 12, 3))


@settings(max_examples=400, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    period=st.sampled_from([Period.HOUR, Period.DAY, Period.WEEK, Period.MONTH]),
    now=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)),
)
def test_windows_tile_time(zone: str, period: Period, now: datetime) -> None:
    """Every instant is in exactly one window: each window holds its own start, and the next one
    starts where it ends."""
    tz = ZoneInfo(zone)
    found = window(period, tz, now)
    assert now in found
    assert window(period, tz, found.start) == found
    assert window(period, tz, found.end).start == found.end
    assert window(period, tz, found.start - timedelta(microseconds=1)).end == found.start
    local = found.start.astimezone(tz)
    if period is not Period.HOUR:
        # Local midnight, or just after a gap that skipped it.
        assert (found.start - timedelta(seconds=1)).astimezone(tz).date() < local.date()
        assert local.time() < datetime(2000, 1, 1, 3).time()
    if period is Period.WEEK:
        assert local.weekday() == 0
    if period is Period.MONTH:
        assert local.day == 1


CALL = (Principal("team-a", admin=False), Caller(user="u-1", project="search", tenant="acme"), {"team": "ml"})


@pytest.mark.parametrize(
    ("text", "scope", "covers"),
    [
        ("gateway", Scope(ScopeKind.GATEWAY), True),
        ("key:team-a", Scope(ScopeKind.KEY, "team-a"), True),
        ("key:team-b", Scope(ScopeKind.KEY, "team-b"), False),
        ("user:u-1", Scope(ScopeKind.USER, "u-1"), True),
        ("project:search", Scope(ScopeKind.PROJECT, "search"), True),
        ("project:ads", Scope(ScopeKind.PROJECT, "ads"), False),
        ("tenant:acme", Scope(ScopeKind.TENANT, "acme"), True),
        ("tag:team=ml", Scope(ScopeKind.TAG, "ml", "team"), True),
        ("tag:team=ops", Scope(ScopeKind.TAG, "ops", "team"), False),
        ("tag:env=ml", Scope(ScopeKind.TAG, "ml", "env"), False),
        ("project:a:b", Scope(ScopeKind.PROJECT, "a:b"), False),
    ],
)
def test_scopes_parse_print_and_cover(text: str, scope: Scope, covers: bool) -> None:
    assert parse_scope(text) == scope
    assert str(scope) == text
    assert scope.covers(*CALL) is covers


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not a scope"),
        ("team:a", "not a scope"),
        ("gateway:x", "not a scope"),
        ("project:", "project is missing"),
        ("tag:team", "tag:KEY=VALUE"),
        ("tag:=x", "tag:KEY=VALUE"),
        ("tag:team=", "tag:KEY=VALUE"),
    ],
)
def test_bad_scopes_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_scope(text)
