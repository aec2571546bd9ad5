"""A model's prices over time: the sheet in force at an instant, cached for as long as it holds."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from llm_gateway.domain.results import Usage
from llm_gateway.pricing.sheet import Cost, PriceSheet

# The time now, in seconds since the Unix epoch (time.time); tests pass their own.
Clock = Callable[[], float]
# The sheet in force at an instant, and the window [since, until) in which it stays in force.
Window = tuple[PriceSheet, float, float]


class PriceSchedule:
    """The PriceSheet in force at any instant.

    Most prices hold for all time, but some of the catalog's change at a time of day (DeepSeek's
    off-peak discount) or from a date on. The sheet in force is kept with the instant it stops
    being valid, so `now()` is a clock read and a comparison; only a call past that instant looks
    the price up again.
    """

    __slots__ = ("_clock", "_lookup", "_sheet", "_since", "_until")

    def __init__(self, lookup: Callable[[float], Window], clock: Clock = time.time) -> None:
        self._lookup = lookup
        self._clock = clock
        self._sheet, self._since, self._until = lookup(clock())

    @classmethod
    def fixed(cls, sheet: PriceSheet) -> PriceSchedule:
        """A price that never changes (configured prices, and most of the catalog's)."""
        return cls(lambda _: (sheet, -math.inf, math.inf))

    def now(self) -> PriceSheet:
        """The sheet in force at the clock's time."""
        instant = self._clock()
        if self._since <= instant < self._until:
            return self._sheet
        # Past the window (or a clock set back before it): look up the window holding `instant`.
        self._sheet, self._since, self._until = self._lookup(instant)
        return self._sheet

    def at(self, instant: float) -> PriceSheet:
        """The sheet in force at `instant` (Unix seconds); does not move the cached window."""
        if self._since <= instant < self._until:
            return self._sheet
        return self._lookup(instant)[0]

    def valid_until(self) -> float:
        """When the sheet `now()` returned last stops being valid (Unix seconds; inf: never)."""
        return self._until

    def cost(self, usage: Usage) -> Cost:
        """`usage` priced at the sheet in force now."""
        return self.now().cost(usage)
