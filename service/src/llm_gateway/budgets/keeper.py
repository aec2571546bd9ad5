"""The budgets of one gateway process: which apply to a call, its reservation before the first
upstream request, its settlement after the call ends (as a call observer), the alerts that raises,
and the webhook sender that delivers them.

A reservation is made in the shared store before the call goes upstream (the caller waits for it);
a settlement is queued and written in batches by a task of its own (the caller never waits for
it). Budgets created through the API are read back by every worker every `refresh_interval`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from llm_gateway import background
from llm_gateway.budgets.counters import ZERO, BudgetRefusedError, Charge, Hold, Spend, Standing
from llm_gateway.budgets.model import Alert, Budget, Quota, budget_alert, call_alert, rfc3339
from llm_gateway.budgets.periods import Period, window
from llm_gateway.budgets.store import BudgetStore, Rebuilt
from llm_gateway.budgets.webhooks import WebhookSender
from llm_gateway.config.schema import ApiKeyConfig, BudgetsConfig
from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.domain.messages import Caller
from llm_gateway.domain.principal import Principal
from llm_gateway.gateway.record import CallRecord
from llm_gateway.pricing import Cost, PricingStatus, format_decimal

_log = logging.getLogger("llm_gateway.budgets")

# Settlements written per transaction, at most; and how long the first waits for others to join it.
_BATCH, _GATHER = 500, 0.005
# A settlement that cannot be written now is retried after this long (doubling up to the maximum).
_RETRY, _MAX_RETRY = 0.2, 5.0
# Start-up tries this many times to set the tables up before leaving it to the refresh loop.
_START_TRIES = 5
# A refused call waits at most this long for this process's settlements before it is refused.
_FLUSH_WAIT = 1.0
# Shutdown waits this long for the queued settlements to be written.
_CLOSE_WAIT = 5.0
# After the store failed a reservation, calls meet `when_store_down` without trying it for this
# long: a dead database costs a process one failure a second, not one per call.
_DOWN_FOR = 1.0


@dataclass(slots=True)
class Outage:
    """What this process let through under each budget (worst cases, then what the calls cost)
    while the store could not be reached and `when_store_down` was "allow"."""

    allowed: dict[str, Decimal] = field(default_factory=dict)
    calls: int = 0


@dataclass(slots=True)
class Reservation:
    """What a call holds: the budgets and quotas it counts against (in the windows current when it
    started), and the amounts reserved against them."""

    budgets: list[tuple[Budget, Charge]]
    quotas: list[tuple[Quota, Charge]]
    cost: Decimal  # USD held against each budget
    tokens: int  # tokens held against each token quota
    standings: list[Standing] = field(default_factory=list)  # after the last reservation
    # Let through while the store was down: the outage whose allowance it counts against, and how
    # much (its worst case until it settles).
    outage: Outage | None = None
    local_cost: Decimal = ZERO

    def holds(self) -> list[Hold]:
        return [Hold(charge, self.cost) for _, charge in self.budgets] + [
            Hold(charge, Decimal(1 if quota.what == "requests" else self.tokens))
            for quota, charge in self.quotas
        ]

    def settled(self, cost: Decimal, tokens: int) -> list[Hold]:
        return [Hold(charge, cost) for _, charge in self.budgets] + [
            Hold(charge, Decimal(1 if quota.what == "requests" else tokens)) for quota, charge in self.quotas
        ]


class BudgetKeeper:
    def __init__(
        self,
        config: BudgetsConfig,
        keys: Sequence[ApiKeyConfig],
        store: BudgetStore,
        webhooks: Sequence[str] = (),
        sender: WebhookSender | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.zone = ZoneInfo(config.time_zone)
        self.store = store
        self.sender = sender
        self._webhooks = tuple(webhooks)
        self.clock = clock
        self._configured = [Budget.from_config(b) for b in config.limits]
        self._budgets: tuple[Budget, ...] = tuple(self._configured)
        self._quotas: dict[str, tuple[Quota, ...]] = {
            key.name: tuple(
                Quota(key.name, what, Period(per), limit) for what, per, limit in key.quota.limits()
            )
            for key in keys
            if key.quota is not None and key.quota.limits()
        }
        self._held: dict[str, Reservation] = {}
        self._pending: deque[tuple[str, list[Hold], Alert | None]] = deque()
        self._wake = asyncio.Event()
        self._settled = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self._migrated = False
        self._queued = self._written = 0  # settlements queued and written, for `flush`
        self._hurry = False  # someone waits in `flush`: no gathering
        self._outage: Outage | None = None  # the store failed the last reservation tried
        self._retry_store_at = 0.0
        # Since start (metrics read them): calls a budget covered while the store was down, by outcome.
        self.store_down_calls = {"allowed": 0, "refused": 0}

    # -- which budgets apply ------------------------------------------------------------------

    @property
    def budgets(self) -> tuple[Budget, ...]:
        """Every budget in force: from config, then those created through the API."""
        return self._budgets

    def find(self, budget_id: str) -> Budget | None:
        return next((b for b in self._budgets if b.id == budget_id), None)

    def quotas(self, key: str) -> tuple[Quota, ...]:
        return self._quotas.get(key, ())

    def covering(self, principal: Principal, caller: Caller, tags: Mapping[str, str]) -> list[Budget]:
        return [b for b in self._budgets if b.scope.covers(principal, caller, tags)]

    def applies(self, principal: Principal, caller: Caller, tags: Mapping[str, str]) -> bool:
        """Whether a call must reserve (cheap: most calls of most gateways have nothing to hold)."""
        if not self._budgets and not self._quotas:
            return False
        return principal.key in self._quotas or any(
            b.scope.covers(principal, caller, tags) for b in self._budgets
        )

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # -- reserving ----------------------------------------------------------------------------

    async def reserve(
        self,
        call_id: str,
        principal: Principal,
        caller: Caller,
        tags: Mapping[str, str],
        *,
        model: str,
        cost: Decimal | None,
        tokens: int,
    ) -> Reservation | None:
        """Reserves `cost` (USD, the call's worst case on `model`; None for an unknown price) against
        every budget covering the call, and one request and `tokens` against the key's quotas; again
        for a dearer fallback (only when it needs more than is held). Raises the refusal when one
        does not fit; None when nothing applies."""
        held = self._held.get(call_id)
        if held is None:
            now = self.now()
            budgets = [(b, b.charge(self.zone, now)) for b in self.covering(principal, caller, tags)]
            quotas = [(q, self._quota_charge(q, now)) for q in self.quotas(principal.key)]
            if not budgets and not quotas:
                return None
            held = Reservation(budgets, quotas, ZERO, 0)
        elif cost is not None and cost <= held.cost and tokens <= held.tokens:
            return held  # a fallback no dearer than what is held
        if cost is None:
            if held.budgets and self.config.unknown_prices == "refuse":
                raise _price_unknown(model, held.budgets[0][0])
            cost = ZERO
        wanted = Reservation(
            held.budgets,
            held.quotas,
            max(cost, held.cost),
            max(tokens, held.tokens),
            outage=held.outage,
            local_cost=held.local_cost,
        )
        if self._outage is not None and time.monotonic() < self._retry_store_at:
            return self._hold_locally(call_id, wanted, model)
        now = self.now()
        expires = now + timedelta(seconds=self.config.reservation_ttl)
        try:
            try:
                wanted.standings = await self.store.reserve(
                    call_id, wanted.holds(), now=now, expires_at=expires
                )
            except BudgetRefusedError:
                if self._written == self._queued:
                    raise
                # Calls that ended here may still hold what they no longer need: settle them first
                # (a caller's next call must not be refused for its previous one's worst case).
                await self.flush()
                wanted.standings = await self.store.reserve(
                    call_id, wanted.holds(), now=now, expires_at=expires
                )
        except BudgetRefusedError as refused:
            raise self._refusal(refused, wanted, model, now) from None
        except Exception as exc:  # the database: `when_store_down` says what happens meanwhile
            self._store_failed(exc)
            return self._hold_locally(call_id, wanted, model)
        if self._outage is not None:
            _log.warning({"event": "budget_store_recovered", "allowed_while_down": self._outage.calls})
            self._outage = None
        self._held[call_id] = wanted
        return wanted

    def _store_failed(self, exc: Exception) -> None:
        self._retry_store_at = time.monotonic() + _DOWN_FOR
        if self._outage is None:  # once per outage
            self._outage = Outage()
            _log.error(
                {
                    "event": "budget_store_unreachable",
                    "error": type(exc).__name__,
                    "detail": str(exc)[:200],
                    "when_store_down": self.config.when_store_down,
                }
            )

    def _hold_locally(self, call_id: str, wanted: Reservation, model: str) -> Reservation:
        """The call's reservation while the store is down: refused, or held against this process's
        allowance for the outage (its spend is written to the store with its settlement)."""
        outage = self._outage
        assert outage is not None
        allowance = self.config.local_allowance_usd
        extra = wanted.cost - (wanted.local_cost if wanted.outage is outage else ZERO)
        refused = self.config.when_store_down == "refuse"
        over = next(
            (b for b, _ in wanted.budgets if outage.allowed.get(b.id, ZERO) + extra > allowance), None
        )
        if refused or over is not None:
            self.store_down_calls["refused"] += 1
            raise _store_unavailable(None if refused else over, allowance, model)
        for budget, _ in wanted.budgets:
            outage.allowed[budget.id] = outage.allowed.get(budget.id, ZERO) + extra
        outage.calls += 1
        self.store_down_calls["allowed"] += 1
        wanted.outage, wanted.local_cost = outage, wanted.cost
        self._held[call_id] = wanted
        return wanted

    def _refusal(
        self, refused: BudgetRefusedError, wanted: Reservation, model: str, now: datetime
    ) -> GatewayError:
        standing, amount = refused.standing, refused.amount
        charge = standing.charge
        quota = next((q for q, c in wanted.quotas if c.budget_id == charge.budget_id), None)
        resets = charge.window.end
        if quota is not None:
            wait = max((resets - now).total_seconds(), 0.0)
            return GatewayError(
                f"key {quota.key!r} is over its quota of {quota.limit} {quota.what} "
                f"per {quota.period.value}: "
                f"{format_decimal(standing.spent)} used and {format_decimal(standing.reserved)} held by "
                "calls in flight; "
                f"this call needs {format_decimal(amount)}; it resets at {rfc3339(resets)}",
                code=Code.RESOURCE_EXHAUSTED,
                reason="KEY_QUOTA_EXCEEDED",
                metadata={
                    "key": quota.key,
                    "quota": f"{quota.what}_per_{quota.period.value}",
                    "limit": str(quota.limit),
                    "used": format_decimal(standing.spent),
                    "reserved": format_decimal(standing.reserved),
                    "requested": format_decimal(amount),
                    "resets_at": rfc3339(resets),
                },
                retry_after=wait,
            )
        budget = next(b for b, c in wanted.budgets if c.budget_id == charge.budget_id)
        metadata = {
            "budget_id": budget.id,
            "scope": str(budget.scope),
            "limit_usd": format_decimal(budget.limit),
            "spent_usd": format_decimal(standing.spent),
            "reserved_usd": format_decimal(standing.reserved),
            "remaining_usd": format_decimal(standing.remaining),
            "requested_usd": format_decimal(amount),
            "period": budget.period.value,
            "model": model,
        }
        per, until = "", "it never resets"
        if budget.period is not Period.NONE:
            metadata["resets_at"] = rfc3339(resets)
            per, until = f" per {budget.period.value}", f"until it resets at {metadata['resets_at']}"
        return GatewayError(
            f"budget {budget.id!r} ({budget.scope}) cannot hold this call: its worst case on {model} is "
            f"{format_decimal(amount)} USD, and {format_decimal(standing.remaining)} of its "
            f"{format_decimal(budget.limit)} USD{per} remain ({format_decimal(standing.spent)} spent, "
            f"{format_decimal(standing.reserved)} held by calls in flight) {until}; lower max_tokens, "
            "choose a cheaper model, or raise the budget",
            code=Code.RESOURCE_EXHAUSTED,
            reason="BUDGET_EXHAUSTED",
            metadata=metadata,
        )

    def reservation(self, call_id: str) -> Reservation | None:
        return self._held.get(call_id)

    # -- settling (a call observer) -------------------------------------------------------------

    def call_ended(self, record: CallRecord) -> None:
        held = self._held.pop(record.id, None)
        if held is None and record.deferred:  # held nothing: counted now, whatever is left
            held = self._unheld(record)
        cost = counted(record.cost)
        if held is not None and held.outage is not None:  # its allowance: the worst case becomes the cost
            for budget, _ in held.budgets:
                held.outage.allowed[budget.id] += cost - held.local_cost
        alert = None
        threshold = record.cost_alert_threshold
        if threshold is not None and cost > threshold:
            alert = call_alert(record.id, record.caller, record.principal.key, cost, threshold, self.clock())
        if held is None and alert is None:
            return
        usage = record.usage
        tokens = usage.prompt_tokens + usage.completion_tokens if usage is not None else 0
        self._pending.append((record.id, held.settled(cost, tokens) if held else [], alert))
        self._queued += 1
        self._wake.set()

    def _unheld(self, record: CallRecord) -> Reservation | None:
        """What a call that reserved nothing (answered through a provider's batch API) counts
        against: the budgets covering it and its key's quotas, in the current windows."""
        now = self.now()
        budgets = [
            (b, b.charge(self.zone, now)) for b in self.covering(record.principal, record.caller, record.tags)
        ]
        quotas = [(q, self._quota_charge(q, now)) for q in self.quotas(record.principal.key)]
        return Reservation(budgets, quotas, ZERO, 0) if budgets or quotas else None

    async def flush(self) -> None:
        """Returns once every settlement queued so far is written (or the keeper is closing)."""
        target = self._queued
        while self._written < target and not self._closing:
            self._hurry = True
            self._settled.clear()
            self._wake.set()
            await self._settled.wait()

    async def _settle_forever(self) -> None:
        delay = _RETRY
        while True:
            await self._wake.wait()
            if not self._hurry and len(self._pending) < _BATCH:
                # Calls ending meanwhile join the batch: one transaction for many calls instead of
                # one each (their reservations are held that much longer).
                await asyncio.sleep(_GATHER)
            self._wake.clear()
            self._hurry = False
            while self._pending:
                batch = [self._pending.popleft() for _ in range(min(_BATCH, len(self._pending)))]
                try:
                    raised = await self.store.settle(
                        [(call_id, holds) for call_id, holds, _ in batch],
                        self._alerts_of,
                        [alert for _, _, alert in batch if alert is not None],
                        self._webhooks,
                    )
                except asyncio.CancelledError:
                    self._pending.extendleft(reversed(batch))
                    raise
                except Exception as exc:
                    self._pending.extendleft(reversed(batch))
                    _log.warning(
                        {
                            "event": "budget_settle_failed",
                            "calls": len(batch),
                            "error": type(exc).__name__,
                            "retry_in": delay,
                        }
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, _MAX_RETRY)
                    continue
                delay = _RETRY
                self._written += len(batch)
                for alert in raised:
                    _log.warning({"event": "cost_alert", **alert.payload})
                if raised and self.sender is not None:
                    self.sender.wake()
            self._settled.set()

    def _alerts_of(self, spends: list[Spend]) -> list[Alert]:
        now = self.clock()
        alerts: list[Alert] = []
        for spend in spends:
            budget = self.find(spend.charge.budget_id)
            if budget is None:
                continue  # a quota, or a budget deleted meanwhile
            alerts.extend(
                budget_alert(budget, spend.charge.window, t, spend.after, now) for t in budget.crossed(spend)
            )
        return alerts

    # -- budgets created through the API --------------------------------------------------------

    async def refresh(self) -> None:
        """Reads the budgets created through the API (config ids take precedence)."""
        stored = await self.store.budgets()
        configured = {b.id for b in self._configured}
        self._budgets = (*self._configured, *(b for b in stored if b.id not in configured))

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.refresh_interval)
            try:
                if not self._migrated:
                    await self.store.migrate()
                    self._migrated = True
                await self.refresh()
            except Exception as exc:
                _log.warning({"event": "budget_refresh_failed", "error": type(exc).__name__})

    async def standings(self, budgets: Sequence[Budget]) -> list[Standing]:
        now = self.now()
        return await self.store.standings([b.charge(self.zone, now) for b in budgets], now=now)

    def _quota_charge(self, quota: Quota, now: datetime) -> Charge:
        return Charge(quota.id, Decimal(quota.limit), window(quota.period, self.zone, now))

    def _quota_charges(self) -> list[tuple[Quota, Charge]]:
        now = self.now()
        return [(q, self._quota_charge(q, now)) for quotas in self._quotas.values() for q in quotas]

    async def quota_standings(self) -> list[tuple[Quota, Standing]]:
        charges = self._quota_charges()
        found = await self.store.standings([c for _, c in charges], now=self.now())
        return [(q, s) for (q, _), s in zip(charges, found, strict=True)]

    async def rebuild(self) -> list[Rebuilt]:
        """Sets every budget's and quota's current window to what the ledger's calls add up to."""
        now = self.now()
        return await self.store.rebuild(
            [(b, b.charge(self.zone, now)) for b in self._budgets], self._quota_charges()
        )

    # -- life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Creates the tables and reads the stored budgets; a database that is down now is retried
        by the refresh loop (config budgets hold meanwhile, their reservations failing closed)."""
        for attempt in range(_START_TRIES):
            try:
                await self.store.migrate()
                self._migrated = True
                await self.refresh()
                break
            except Exception as exc:
                # Several workers setting up one new SQLite file at once can find it locked.
                if attempt + 1 < _START_TRIES:
                    await asyncio.sleep(_RETRY)
                    continue
                _log.error(
                    {
                        "event": "budget_store_unavailable",
                        "error": type(exc).__name__,
                        "detail": str(exc)[:200],
                    }
                )
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._settle_forever(), name="budget-settle"),
            loop.create_task(self._refresh_forever(), name="budget-refresh"),
        ]
        if self.sender is not None:
            self.sender.start()

    async def close(self) -> None:
        """Writes the settlements still queued (for at most `_CLOSE_WAIT` seconds), then stops."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_WAIT):
                await self.flush()
        self._closing = True
        await background.stop(*self._tasks)
        if self._pending:
            _log.error({"event": "budget_settlements_lost", "calls": len(self._pending)})
        if self.sender is not None:
            await self.sender.close()
        await self.store.close()


def counted(cost: Cost | None) -> Decimal:
    """What a call's cost counts against budgets: its total when priced; 0 when nothing was
    produced, the model is free, or an unknown price was let through."""
    if cost is None or cost.status is not PricingStatus.PRICED:
        return ZERO
    return cost.total


def _store_unavailable(over: Budget | None, allowance: Decimal, model: str) -> GatewayError:
    if over is None:
        return GatewayError(
            "the budget store cannot be reached, so this call's budgets cannot be checked; retry shortly",
            code=Code.UNAVAILABLE,
            reason="BUDGET_STORE_UNAVAILABLE",
        )
    return GatewayError(
        f"the budget store cannot be reached, and this gateway has let through its allowance of "
        f"{format_decimal(allowance)} USD under budget {over.id!r} ({over.scope}) meanwhile; "
        "retry shortly",
        code=Code.UNAVAILABLE,
        reason="BUDGET_STORE_UNAVAILABLE",
        metadata={"budget_id": over.id, "local_allowance_usd": format_decimal(allowance), "model": model},
    )


def _price_unknown(model: str, budget: Budget) -> GatewayError:
    return GatewayError(
        f"{model} has no known price, so budget {budget.id!r} ({budget.scope}) cannot hold the call; "
        'configure a price for the model, or set budgets.unknown_prices = "allow"',
        code=Code.FAILED_PRECONDITION,
        reason="PRICE_UNKNOWN",
        metadata={"model": model, "budget_id": budget.id, "scope": str(budget.scope)},
    )
