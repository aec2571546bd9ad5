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

from dataclasses import dataclass
from decimal import Decimal

from llm_gateway.budgets.periods import Window

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


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a budget stands in its window."""

    charge: Charge
    spent: Decimal
    reserved: Decimal

    @property
    def remaining(self) -> Decimal:
        """What is left for new calls: the limit less what is spent and reserved (never below 0)."""
        return max(self.charge.limit - self.spent - self.reserved, ZERO)


class BudgetRefusedError(Exception):
    """The call's amount does not fit `standing`'s budget (nothing was reserved anywhere)."""

    def __init__(self, standing: Standing, amount: Decimal) -> None:
        super().__init__(f"budget {standing.charge.budget_id}: {amount} does not fit")
        self.standing = standing
        self.amount = amount
