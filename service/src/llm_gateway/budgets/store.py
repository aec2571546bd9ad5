"""What a budget store does, and opening the one the ledger's URL names: budgets live in the
ledger's database (SQLite on one machine, PostgreSQL for a fleet), so their counters can be rebuilt
from its calls."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from llm_gateway.budgets.counters import Charge, Hold, Spend, Standing
from llm_gateway.budgets.model import Alert, Budget, Quota
from llm_gateway.budgets.webhooks import Outbox
from llm_gateway.ledger.url import Backend, LedgerUrl


class BudgetExistsError(Exception):
    """A budget with that id exists already."""


@dataclass(frozen=True, slots=True)
class StoredAlert:
    seq: int  # the order alerts were raised in, for paging
    alert: Alert


@dataclass(frozen=True, slots=True)
class Rebuilt:
    """A budget window's spend as the ledger's calls add it up, and what the counter said."""

    budget_id: str
    window_start: datetime
    before: Decimal
    after: Decimal


@dataclass(frozen=True, slots=True)
class PlanPeriod:
    """A subscription plan's period as charged so far: its fee, tokens and calls."""

    fee: Decimal
    tokens: int
    calls: int


# Builds the alerts a settlement's spend changes raise; runs inside the settling transaction.
RaiseAlerts = Callable[[list[Spend]], list[Alert]]


class BudgetStore(Outbox, Protocol):
    """Budgets, their counters, alerts and the webhook outbox in one database. Every method may
    raise the driver's errors (the database is down or locked)."""

    async def migrate(self) -> None: ...

    async def reserve(
        self, call_id: str, holds: Sequence[Hold], *, now: datetime, expires_at: datetime
    ) -> list[Standing]:
        """All of `holds` or none (`BudgetRefusedError`); the standings after, in budget order."""
        ...

    async def settle(
        self,
        settlements: Sequence[tuple[str, Sequence[Hold]]],
        raise_alerts: RaiseAlerts,
        alerts: Sequence[Alert],
        webhooks: Sequence[str],
    ) -> list[Alert]:
        """Settles calls, and keeps the alerts `raise_alerts` finds plus `alerts` (one per dedup
        key: an alert another process raised already is not raised again), each queued for every
        one of `webhooks`, in one transaction. Returns the alerts newly raised."""
        ...

    async def standings(self, charges: Sequence[Charge], *, now: datetime) -> list[Standing]: ...

    async def budgets(self) -> list[Budget]:
        """The budgets created through the API."""
        ...

    async def create_budget(self, budget: Budget) -> None:
        """Raises `BudgetExistsError` when the id is taken."""
        ...

    async def update_budget(self, budget: Budget) -> bool:
        """False when there is no such budget."""
        ...

    async def delete_budget(self, budget_id: str) -> bool:
        """Removes the budget and its counters; False when there is no such budget."""
        ...

    async def alerts(self, budget_id: str, after_seq: int, limit: int) -> list[StoredAlert]:
        """Alerts newest first, older than `after_seq` (0: from the newest), of one budget ("": all)."""
        ...

    async def rebuild(
        self, budgets: Sequence[tuple[Budget, Charge]], quotas: Sequence[tuple[Quota, Charge]]
    ) -> list[Rebuilt]:
        """Sets each window's counter to what the ledger's calls add up to."""
        ...

    async def add_plan_tokens(
        self, plan: str, period_key: str, tokens: int, fee: Decimal, calls: int = 1
    ) -> int:
        """Adds `calls` calls of `tokens` tokens in all to a subscription plan's period,
        atomically across every process; returns the period's tokens after them."""
        ...

    async def plan_periods(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], PlanPeriod]:
        """The periods of `keys` (plan, period key) charged so far."""
        ...

    async def close(self) -> None: ...


def open_budget_store(url: LedgerUrl, *, timeout: float, pool_size: int = 4) -> BudgetStore:
    """The budget store in the ledger's database, not yet connected."""
    if url.backend is Backend.SQLITE:
        from llm_gateway.budgets.sqlite_store import SqliteBudgetStore

        assert url.path is not None
        return SqliteBudgetStore(url.path, busy_timeout=timeout)
    from llm_gateway.budgets.postgres_store import PostgresBudgetStore

    return PostgresBudgetStore(url.url, timeout=timeout, pool_size=pool_size)
