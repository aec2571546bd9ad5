"""Budget periods: calendar hours, days, ISO weeks and months in a configured time zone.

A window starts at the local calendar boundary (midnight for a day, Monday midnight for a week,
the 1st at midnight for a month) and ends at the next one, so a day is 23 or 25 hours long when the
clocks change. An hour is the local clock's hour; when the clocks go back, the repeated hour is two
windows (one per UTC offset). A boundary that does not exist locally (midnight skipped by a
daylight-saving change) is the first instant after the gap. Windows are returned in UTC.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

# The window of a budget without a period: all time.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NEVER = datetime(9999, 12, 31, tzinfo=UTC)


class Period(enum.StrEnum):
    MINUTE = "minute"  # for key quotas
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Window:
    """[start, end) in UTC: spend in it counts against the limit; at `end` the budget resets."""

    start: datetime
    end: datetime

    def __contains__(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def window(period: Period, zone: ZoneInfo, now: datetime) -> Window:
    """The window of `period` that `now` (an aware datetime) falls in, in `zone`'s calendar."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    if period is Period.NONE:
        return Window(_EPOCH, _NEVER)
    if period is Period.MINUTE:  # every zone's offset is whole minutes: the UTC minute
        start = now.astimezone(UTC).replace(second=0, microsecond=0)
        return Window(start, start + timedelta(minutes=1))
    local = now.astimezone(zone)
    if period is Period.HOUR:
        # The same local hour, on the same side of a clock change (`fold` is kept).
        start = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        return Window(start, start + timedelta(hours=1))
    day = local.date()
    if period is Period.DAY:
        first, after = day, day + timedelta(days=1)
    elif period is Period.WEEK:
        first = day - timedelta(days=day.weekday())
        after = first + timedelta(weeks=1)
    else:
        first = day.replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
    return Window(
        _boundary(first.year, first.month, first.day, zone),
        _boundary(after.year, after.month, after.day, zone),
    )


def _boundary(year: int, month: int, day: int, zone: ZoneInfo) -> datetime:
    """The first instant of a local date, in UTC: local midnight, or the end of a daylight-saving
    gap that skipped it."""
    midnight = datetime(year, month, day, tzinfo=zone)
    late = midnight.astimezone(UTC)  # read with the offset before a gap: at or after the day's start
    if late.astimezone(zone).replace(tzinfo=None) == midnight.replace(tzinfo=None):
        return late  # midnight exists
    early = midnight.replace(fold=1).astimezone(UTC)  # the offset after the gap: still the day before
    while late - early > timedelta(seconds=1):  # the instant the local date turns, to the second
        middle = early + (late - early) / 2
        if middle.astimezone(zone).date() < midnight.date():
            early = middle
        else:
            late = middle
    whole = late.replace(microsecond=0)  # clocks change on whole seconds
    return whole if whole.astimezone(zone).date() >= midnight.date() else whole + timedelta(seconds=1)
