"""Where a call stands with its budgets and its key's quotas, as headers (gRPC trailing metadata,
HTTP response headers): the tightest budget's remaining USD and reset, and OpenAI's
`x-ratelimit-*` headers for the key's request and token quotas."""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal

from llm_gateway.budgets.counters import ZERO, Standing
from llm_gateway.budgets.keeper import BudgetKeeper, Reservation, counted
from llm_gateway.budgets.model import rfc3339
from llm_gateway.budgets.periods import Period
from llm_gateway.gateway.outcome import CallSummary
from llm_gateway.ledger.rows import EXACT
from llm_gateway.pricing import format_decimal


def call_headers(keeper: BudgetKeeper | None, call_id: str, summary: CallSummary) -> list[tuple[str, str]]:
    """The headers of a call ending with `summary` (none when it held no budget or quota): what
    every door sends, as gRPC trailing metadata or HTTP response headers."""
    held = keeper.reservation(call_id) if keeper is not None else None
    if keeper is None or held is None:
        return []
    usage = summary.usage
    return standing_headers(
        held, counted(summary.cost), usage.prompt_tokens + usage.completion_tokens, keeper.now()
    )


def stream_headers(keeper: BudgetKeeper | None, call_id: str) -> list[tuple[str, str]]:
    """The headers of a stream, sent as it starts: what remains should it cost and use all it holds
    (its worst case), since what it will cost is not known yet (the end has the exact figures)."""
    held = keeper.reservation(call_id) if keeper is not None else None
    if keeper is None or held is None:
        return []
    return standing_headers(held, held.cost, held.tokens, keeper.now())


def standing_headers(held: Reservation, cost: Decimal, tokens: int, now: datetime) -> list[tuple[str, str]]:
    """The headers of a call that held `held` and ended costing `cost` and using `tokens`: what
    remains once its hold is replaced by what it used (calls still in flight keep theirs)."""
    standings = {s.charge.budget_id: s for s in held.standings}
    headers: list[tuple[str, str]] = []
    tightest: tuple[Decimal, str, datetime | None] | None = None
    for budget, charge in held.budgets:
        standing = standings.get(charge.budget_id)
        if standing is None:
            continue
        left = _left(standing, held.cost, cost)
        if tightest is None or left < tightest[0]:
            resets = charge.window.end if budget.period is not Period.NONE else None
            tightest = (left, budget.id, resets)
    if tightest is not None:
        left, budget_id, resets = tightest
        headers += [("x-budget-id", budget_id), ("x-budget-remaining-usd", format_decimal(left))]
        if resets is not None:
            headers.append(("x-budget-reset", rfc3339(resets)))
    for what, used in (("requests", Decimal(1)), ("tokens", Decimal(tokens))):
        quotas = [
            (_left(standings[c.budget_id], Decimal(1 if what == "requests" else held.tokens), used), q, c)
            for q, c in held.quotas
            if q.what == what and c.budget_id in standings
        ]
        if not quotas:
            continue
        left, quota, charge = min(quotas, key=lambda found: found[0])
        headers += [
            (f"x-ratelimit-limit-{what}", str(quota.limit)),
            (f"x-ratelimit-remaining-{what}", format_decimal(left)),
            (f"x-ratelimit-reset-{what}", duration((charge.window.end - now).total_seconds())),
        ]
    return headers


def _left(standing: Standing, held: Decimal, used: Decimal) -> Decimal:
    """The limit less spent, others' reservations and what this call used (never below 0)."""
    others = EXACT.subtract(standing.reserved, held)
    return max(
        EXACT.subtract(standing.charge.limit, EXACT.add(EXACT.add(standing.spent, others), used)), ZERO
    )


def duration(seconds: float) -> str:
    """A duration as OpenAI writes its resets: "1h2m3s", "6m0s", "45s" (whole seconds, rounded up)."""
    total = max(math.ceil(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
