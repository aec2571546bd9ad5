"""Charging calls to their providers' subscription plans (`pricing.subscription`): each call's
tokens are added to its plan's period in the ledger's database, one atomic increment that orders
every worker's and replica's calls, and the call costs what its place in that order makes it.

Without a ledger the period is counted in this process alone. While the database cannot be
reached, a call is priced from this process's last known count (its cost marked estimated) and its
tokens are added once the database answers again, so the period's count loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol
from zoneinfo import ZoneInfo

from llm_gateway.budgets.periods import Period, Window
from llm_gateway.budgets.store import PlanPeriod
from llm_gateway.catalog import ModelSpec
from llm_gateway.config.schema import GatewayConfig
from llm_gateway.domain.results import Usage
from llm_gateway.pricing.catalog_prices import sheet_from_config
from llm_gateway.pricing.sheet import Cost
from llm_gateway.pricing.subscription import OVERAGE_SOURCE, Plan, marginal_cost

_log = logging.getLogger("llm_gateway.subscriptions")
_RETRY = 1.0  # seconds between tries of a database that failed


class PlanCounters(Protocol):
    async def add_plan_tokens(
        self, plan: str, period_key: str, tokens: int, fee: Decimal, calls: int = 1
    ) -> int: ...

    async def plan_periods(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], PlanPeriod]: ...


@dataclass(frozen=True, slots=True)
class PlanStanding:
    """A plan's current period as this process last saw it."""

    plan: Plan
    period: Window
    tokens: int
    calls: int


def plans_from_config(config: GatewayConfig) -> dict[str, Plan]:
    zone = ZoneInfo(config.budgets.time_zone)
    return {
        name: Plan(
            name,
            sub.fee_usd,
            Period(sub.period),
            sub.included_tokens,
            zone,
            None if sub.overage is None else sheet_from_config(sub.overage, OVERAGE_SOURCE),
        )
        for name, provider in config.providers.items()
        if (sub := provider.subscription) is not None
    }


class SubscriptionMeter:
    def __init__(
        self,
        plans: Mapping[str, Plan],
        counters: PlanCounters | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.plans = dict(plans)
        self._counters = counters
        self._clock = clock
        # (plan, period key) -> tokens and calls as last counted (the database's or this process's).
        self._seen: dict[tuple[str, str], tuple[int, int]] = {}
        # Tokens and calls charged while the database could not be reached, to add once it can.
        self._unsent: dict[tuple[str, str], list[int]] = {}
        self._down = False
        self._retry_at = 0.0  # time.monotonic() when a database that failed is tried again
        self._background: set[asyncio.Task[None]] = set()

    def plan(self, provider: str) -> Plan | None:
        return self.plans.get(provider)

    def _period(self, plan: Plan) -> tuple[Window, tuple[str, str]]:
        period = plan.window(datetime.fromtimestamp(self._clock(), UTC))
        return period, (plan.provider, period.start.isoformat())

    async def charge(self, spec: ModelSpec, usage: Usage) -> Cost:
        """Adds the call to its plan's period and prices it by where it fell."""
        plan = self.plans[spec.provider]
        period, key = self._period(plan)
        tokens = usage.total_tokens
        if self._counters is None:
            return self._counted_here(plan, period, key, spec, usage)
        if self._down and time.monotonic() < self._retry_at:  # one try a second while it is down
            return self._counted_here(plan, period, key, spec, usage, unsent=True)
        try:
            await self._send_unsent()
            after = await self._counters.add_plan_tokens(key[0], key[1], tokens, plan.fee)
        except Exception as exc:  # the driver's errors: the database is down, locked or slow
            self._went_down(exc)
            return self._counted_here(plan, period, key, spec, usage, unsent=True)
        if self._down:
            self._down = False
            _log.info({"event": "subscription_store_recovered"})
        seen, calls = self._seen.get(key, (0, 0))
        self._seen[key] = (max(after, seen), calls + 1)
        return marginal_cost(plan.prices(spec.price), usage, plan.charge(period, after - tokens, tokens))

    def charge_soon(self, spec: ModelSpec, usage: Usage) -> Cost:
        """For a call that cannot wait (its task is being cancelled): priced from the last known
        count, marked estimated, its tokens added to the period in the background."""
        plan = self.plans[spec.provider]
        period, key = self._period(plan)
        unsent = self._counters is not None
        cost = self._counted_here(plan, period, key, spec, usage, unsent=unsent, estimated=True)
        if unsent:
            task = asyncio.get_running_loop().create_task(self._send_later())
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return cost

    def estimate(self, spec: ModelSpec, usage: Usage, *, worst: bool = False) -> Cost:
        """What a call of `usage` would cost now, from the last known count (nothing is counted).
        The worst case of a plan with a quota is the overage price of every token: calls in flight
        elsewhere may use up the quota before this one ends."""
        plan = self.plans[spec.provider]
        period, key = self._period(plan)
        before = self._seen.get(key, (0, 0))[0]
        if worst and plan.included_tokens is not None:
            before = plan.included_tokens
        charge = plan.charge(period, before, usage.total_tokens, estimated=True)
        return marginal_cost(plan.prices(spec.price), usage, charge)

    def price(self, spec: ModelSpec, usage: Usage, *, worst: bool = False) -> Cost:
        """A `Pricer`: the estimate on a plan's provider, the model's own price elsewhere."""
        if spec.provider in self.plans:
            return self.estimate(spec, usage, worst=worst)
        return spec.price.cost(usage)

    def standing(self, provider: str) -> PlanStanding | None:
        plan = self.plans.get(provider)
        if plan is None:
            return None
        period, key = self._period(plan)
        tokens, calls = self._seen.get(key, (0, 0))
        return PlanStanding(plan, period, tokens, calls)

    async def refresh(self) -> None:
        """Reads every plan's current period from the database (for listings); keeps the last
        known counts when it cannot be read."""
        if self._counters is None or not self.plans:
            return
        keys = [self._period(plan)[1] for plan in self.plans.values()]
        try:
            found = await self._counters.plan_periods(keys)
        except Exception as exc:
            self._went_down(exc)
            return
        for key, period in found.items():
            tokens, calls = self._seen.get(key, (0, 0))
            self._seen[key] = (max(period.tokens, tokens), max(period.calls, calls))

    async def close(self) -> None:
        """Adds what is still unsent, if the database answers."""
        for task in list(self._background):
            await asyncio.wait([task], timeout=1.0)
        try:
            await self._send_unsent()
        except Exception as exc:
            _log.warning({"event": "subscription_counts_unsent", "error": type(exc).__name__})

    def _counted_here(
        self,
        plan: Plan,
        period: Window,
        key: tuple[str, str],
        spec: ModelSpec,
        usage: Usage,
        *,
        unsent: bool = False,
        estimated: bool = False,
    ) -> Cost:
        tokens = usage.total_tokens
        before, calls = self._seen.get(key, (0, 0))
        self._seen[key] = (before + tokens, calls + 1)
        if unsent:
            pending = self._unsent.setdefault(key, [0, 0])
            pending[0] += tokens
            pending[1] += 1
        charge = plan.charge(period, before, tokens, estimated=unsent or estimated)
        return marginal_cost(plan.prices(spec.price), usage, charge)

    async def _send_later(self) -> None:
        try:
            await self._send_unsent()
        except Exception as exc:
            self._went_down(exc)

    async def _send_unsent(self) -> None:
        assert self._counters is not None
        while self._unsent:
            key, (tokens, calls) = next(iter(self._unsent.items()))
            plan = self.plans[key[0]]
            del self._unsent[key]
            try:
                await self._counters.add_plan_tokens(key[0], key[1], tokens, plan.fee, calls)
            except BaseException:
                self._unsent[key] = [tokens, calls]
                raise

    def _went_down(self, exc: Exception) -> None:
        self._retry_at = time.monotonic() + _RETRY
        if not self._down:
            self._down = True
            _log.warning(
                {
                    "event": "subscription_store_unreachable",
                    "error": type(exc).__name__,
                    "detail": str(exc)[:200],
                }
            )
