"""The ledger's read side, as the usage service asks it: who may see what, pages of records with
AIP-158 page tokens, and summaries."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from decimal import Context, Decimal
from fractions import Fraction
from typing import Protocol

from llm_gateway.domain.results import Usage
from llm_gateway.gateway.record import Principal
from llm_gateway.ledger.query import (
    DEFAULT_PAGE_SIZE,
    EPOCH,
    MAX_PAGE_SIZE,
    AccessDenied,
    Bucket,
    InvalidPageToken,
    LedgerQueryError,
    ModelHealth,
    ModelPeriod,
    ModelUsage,
    Position,
    ProviderCost,
    RecordFilter,
    RecordPage,
    SummaryRequest,
    UsageSummary,
)
from llm_gateway.ledger.rows import EXACT, micros
from llm_gateway.ledger.sql import (
    buckets_query,
    health_query,
    list_query,
    models_query,
    money,
    periods_query,
    shares_query,
    stats_from,
    total_query,
)
from llm_gateway.ledger.store import LedgerStore

_TOKEN_VERSION = 1
# An amortized share is an allocation, not an amount charged: rounded to a pico-dollar.
_SHARE_QUANTUM = Decimal("1e-12")
_WIDE = Context(prec=60)


class PeriodFee(Protocol):
    """A subscription period as charged so far (`budgets.store.PlanPeriod`)."""

    @property
    def fee(self) -> Decimal: ...

    @property
    def calls(self) -> int: ...


# Reads subscription periods by (plan, period key) from the store that counts them.
PlanPeriods = Callable[[Sequence[tuple[str, str]]], Awaitable[Mapping[tuple[str, str], PeriodFee]]]


def scoped(principal: Principal, filters: RecordFilter) -> RecordFilter:
    """The filters a principal may run: an admin's as asked; any other key's narrowed to its own
    calls, and refused when they name another key."""
    if principal.admin:
        return filters
    if filters.key is not None and filters.key != principal.key:
        raise AccessDenied("key", "a key that is not an admin key sees only its own calls")
    return replace(filters, key=principal.key)


class UsageQueries:
    """Records and summaries from one ledger store, each for a principal."""

    def __init__(self, store: LedgerStore, before_read: Callable[[], Awaitable[None]] | None = None) -> None:
        self._store = store
        self._before_read = before_read
        self.plan_periods: PlanPeriods | None = None  # set where subscriptions are counted
        self._ready = False
        self._lock = asyncio.Lock()

    async def _schema(self) -> None:
        """Runs `before_read` (the ledger writes out what this process has queued, so a caller
        reads its own calls at once), and migrates once before the first read: a query may
        arrive before the writer has created the tables (migrations are idempotent, so racing
        the writer is safe)."""
        if self._before_read is not None:
            await self._before_read()
        if self._ready:
            return
        async with self._lock:
            if not self._ready:
                await self._store.migrate()
                self._ready = True

    async def list_records(
        self, principal: Principal, filters: RecordFilter, *, page_size: int = 0, page_token: str = ""
    ) -> RecordPage:
        """The calls `filters` selects, newest first. `page_size` 0 means 50, and more than 1,000
        means 1,000; a page token only continues the listing it came from (same filters and
        caller), as AIP-158 asks."""
        if page_size < 0:
            raise LedgerQueryError("page_size", "must not be negative")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        filters = scoped(principal, filters)
        digest = _digest(filters)
        after = _read_token(page_token, digest) if page_token else None
        await self._schema()
        records = await self._store.fetch_records(list_query(self._store.dialect, filters, after, size + 1))
        if len(records) <= size:
            return RecordPage(tuple(records))
        last = records[size - 1]
        return RecordPage(
            tuple(records[:size]), _make_token(Position(micros(last.started_at), last.id), digest)
        )

    async def summary(self, principal: Principal, request: SummaryRequest) -> UsageSummary:
        request = replace(request, filters=scoped(principal, request.filters))
        await self._schema()
        dialect = self._store.dialect
        bucket_rows, total_rows, model_rows, shares = await asyncio.gather(
            self._store.fetch(buckets_query(dialect, request)),
            self._store.fetch(total_query(dialect, request)),
            self._store.fetch(models_query(dialect, request)),
            self._shares(request),
        )
        width = len(request.group_by)
        buckets = []
        for row in bucket_rows:
            start, group = int(row[0]), tuple(str(value) for value in row[1 : 1 + width])
            stats = replace(stats_from(row[1 + width :]), amortized_cost=shares.amount((start, group)))
            buckets.append(Bucket(EPOCH + timedelta(microseconds=start), group, stats))
        buckets.sort(key=lambda b: (b.start, b.group))
        models = [
            ModelUsage(str(p), str(m), int(n), money(cost), shares.amount((str(p), str(m))))
            for p, m, n, cost in model_rows
        ]
        requests: dict[str, int] = defaultdict(int)
        costs: dict[str, Decimal] = defaultdict(Decimal)
        for usage in models:
            requests[usage.provider] += usage.requests
            costs[usage.provider] = EXACT.add(costs[usage.provider], usage.cost)
        cost_by_provider = tuple(
            sorted(
                (ProviderCost(name, requests[name], costs[name], shares.amount(name)) for name in requests),
                key=lambda p: (-p.cost, -p.requests, p.provider),
            )
        )
        served = [m for m in models if m.model]
        return UsageSummary(
            buckets=tuple(buckets),
            total=replace(stats_from(total_rows[0]), amortized_cost=shares.amount(())),
            cost_by_provider=cost_by_provider,
            top_models_by_cost=tuple(
                sorted(served, key=lambda m: (-m.cost, -m.requests, m.model))[: request.top]
            ),
            top_models_by_calls=tuple(
                sorted(served, key=lambda m: (-m.requests, -m.cost, m.model))[: request.top]
            ),
            currency=request.currency,
        )

    async def _shares(self, request: SummaryRequest) -> _Shares:
        """Each subscription period's fee spread evenly over the period's calls (as the plan's
        counter counts them, across every process), added up per bucket and group, provider,
        model and in total, for the calls `request` selects."""
        shares = _Shares()
        if self.plan_periods is None or request.currency != "USD":  # plan fees are in USD
            return shares
        width = len(request.group_by)
        rows = await self._store.fetch(shares_query(self._store.dialect, request))
        if not rows:
            return shares
        periods = await self.plan_periods(sorted({(str(r[1 + width]), str(r[3 + width])) for r in rows}))
        for row in rows:
            provider, model, period = str(row[1 + width]), str(row[2 + width]), str(row[3 + width])
            found = periods.get((provider, period))
            if found is None or not found.calls:
                continue
            share = Fraction(found.fee) * int(row[4 + width]) / found.calls
            bucket = (int(row[0]), tuple(str(value) for value in row[1 : 1 + width]))
            for key in (bucket, (provider, model), provider, ()):
                shares.add(key, share)
        return shares

    async def model_periods(
        self, principal: Principal, filters: RecordFilter, tier_starts: Sequence[int], currency: str = "USD"
    ) -> tuple[list[ModelPeriod], list[ModelHealth]]:
        """What `filters` selects per project, served model and price band (`periods_query`), and
        how every model fared over the same period among the calls the principal may see."""
        filters = scoped(principal, filters)
        if filters.start is None or filters.end is None:
            raise LedgerQueryError("start" if filters.start is None else "end", "is required")
        await self._schema()
        dialect = self._store.dialect
        seen = RecordFilter(start=filters.start, end=filters.end, key=filters.key)
        period_rows, health_rows = await asyncio.gather(
            self._store.fetch(periods_query(dialect, filters, currency, sorted(tier_starts))),
            self._store.fetch(health_query(dialect, seen)),
        )
        periods = [
            ModelPeriod(
                project=str(row[0]),
                model=str(row[1]),
                band=int(row[2]),
                requests=int(row[3]),
                usage=Usage(
                    prompt_tokens=int(row[4]),
                    completion_tokens=int(row[5]),
                    cache_read_tokens=int(row[6]),
                    cache_write_tokens=int(row[7]),
                    cache_write_1h_tokens=int(row[8]),
                    reasoning_tokens=int(row[9]),
                ),
                longest_prompt=int(row[10]),
                cost=money(row[11]),
            )
            for row in period_rows
        ]
        health = [
            ModelHealth(str(m), int(n), int(failed), None if p50 is None else float(p50))
            for m, n, failed, p50 in health_rows
        ]
        return periods, health


class _Shares:
    """Amortized fees by key, kept as exact fractions until they are read."""

    def __init__(self) -> None:
        self._by: dict[object, Fraction] = defaultdict(Fraction)

    def add(self, key: object, share: Fraction) -> None:
        self._by[key] += share

    def amount(self, key: object) -> Decimal:
        found = self._by.get(key)
        if not found:
            return Decimal(0)
        return _WIDE.divide(Decimal(found.numerator), Decimal(found.denominator)).quantize(_SHARE_QUANTUM)


def _digest(filters: RecordFilter) -> str:
    """What a page token is bound to: the effective filters (after the caller's scope)."""
    canonical = json.dumps(
        [
            None if filters.start is None else micros(filters.start.timestamp()),
            None if filters.end is None else micros(filters.end.timestamp()),
            filters.key,
            filters.user,
            filters.project,
            filters.tenant,
            filters.provider,
            filters.model,
            sorted(filters.tags),
        ],
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _make_token(position: Position, digest: str) -> str:
    payload = json.dumps({"v": _TOKEN_VERSION, "t": position.started_at, "i": position.id, "f": digest})
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def _read_token(token: str, digest: str) -> Position:
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        position = Position(int(payload["t"]), str(payload["i"]))
        version, bound_to = payload["v"], payload["f"]
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise InvalidPageToken("is not a page token of this listing") from None
    if version != _TOKEN_VERSION:
        raise InvalidPageToken("comes from another version of the gateway; list again from the start")
    if bound_to != digest:
        raise InvalidPageToken("was issued for other filters; send the same filters with it")
    return position
