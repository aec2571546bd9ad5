"""Budget counters: what each budget has spent in its current window and what calls in flight
have reserved, kept in a database every worker process shares (the ledger's), changed only in
transactions (`sqlite.py`, `postgres.py`).

A call reserves its worst-case cost against every budget that covers it, all or none, before its
first upstream request; it fits when, for each budget, spent + reserved + its amount <= limit. When
it ends, its reservations are replaced by its exact cost. A reservation whose process died expires
at `expires_at`; the cost of a call that outlives its reservation is still added when it settles
(the settling process names the budgets), so spend is never lost, only the hold is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

from llm_gateway.budgets.periods import Window
from llm_gateway.ledger.rows import EXACT

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Charge:
    """One budget a call counts against: its id, limit and current window."""

    budget_id: str
    limit: Decimal
    window: Window

    @property
    def window_key(self) -> str:
        return self.window.start.isoformat()


class Hold(NamedTuple):
    """An amount against one budget: a call's reservation, or what it settles at. A key's request
    and token quotas are budgets too, counted in requests and tokens instead of USD."""

    charge: Charge
    amount: Decimal


def each(charges: Iterable[Charge], amount: Decimal) -> list[Hold]:
    """The same amount against every one of `charges`."""
    return [Hold(charge, amount) for charge in charges]


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a budget stands in its window."""

    charge: Charge
    spent: Decimal
    reserved: Decimal

    @property
    def remaining(self) -> Decimal:
        """What is left for new calls: the limit less what is spent and reserved (never below 0)."""
        return max(EXACT.subtract(self.charge.limit, EXACT.add(self.spent, self.reserved)), ZERO)

    def fits(self, amount: Decimal) -> bool:
        """Whether `amount` more may be reserved: spent + reserved + amount <= limit, exactly."""
        return EXACT.add(EXACT.add(self.spent, self.reserved), amount) <= self.charge.limit


class BudgetRefusedError(Exception):
    """The call's amount does not fit `standing`'s budget (nothing was reserved anywhere)."""

    def __init__(self, standing: Standing, amount: Decimal) -> None:
        super().__init__(f"budget {standing.charge.budget_id}: {amount} does not fit")
        self.standing = standing
        self.amount = amount


@dataclass(frozen=True, slots=True)
class Spend:
    """A budget's spend in its window before and after a settlement added to it."""

    charge: Charge
    before: Decimal
    after: Decimal


def summed(settlements: Iterable[tuple[str, Iterable[Hold]]]) -> tuple[list[str], list[Hold]]:
    """The calls settled, and what they add to each budget window, summed, in budget order (the
    order reservations take their locks in) and without zero amounts."""
    calls = []
    added: dict[tuple[str, str], Hold] = {}
    for call_id, holds in settlements:
        calls.append(call_id)
        for charge, amount in holds:
            key = (charge.budget_id, charge.window_key)
            found = added.get(key)
            added[key] = Hold(charge, amount if found is None else EXACT.add(found.amount, amount))
    return calls, [hold for _, hold in sorted(added.items()) if hold.amount]
