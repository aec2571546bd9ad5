"""Subscription plans: a provider billed by a flat fee per calendar period (provisioned throughput,
a flat-rate plan), optionally with a quota of tokens past which calls pay the models' own prices.

A call on a plan costs its marginal price. The period's tokens are counted in the order calls are
charged (`SubscriptionMeter`); a call's tokens are covered by the fee while the quota lasts, in the
order the provider reads them (prompt tokens, cache reads first, then output tokens), so the one
call that crosses the quota pays exactly for its tokens past it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

from llm_gateway.budgets.periods import Period, Window, window
from llm_gateway.domain.results import Usage
from llm_gateway.pricing.sheet import ZERO, Cost, PlanCharge, PriceSheet, PricingStatus

SUBSCRIPTION_SOURCE = "subscription"
OVERAGE_SOURCE = "subscription overage"
_THOUSAND = Decimal(1000)
_RATE_QUANTUM = Decimal("1e-12")


@dataclass(frozen=True, slots=True)
class Plan:
    """One provider's plan: `fee` per `period` (in `zone`'s calendar), covering `included_tokens`
    each period (None: every call)."""

    provider: str
    fee: Decimal
    period: Period
    included_tokens: int | None
    zone: ZoneInfo
    overage: PriceSheet | None = None  # what tokens past the quota cost; None: the model's own price

    def prices(self, model: PriceSheet) -> PriceSheet:
        """What tokens past the quota cost on a model whose own prices are `model`."""
        return model if self.overage is None else self.overage

    def window(self, now: datetime) -> Window:
        return window(self.period, self.zone, now)

    def charge(self, period: Window, before: int, tokens: int, *, estimated: bool = False) -> PlanCharge:
        """Where a call of `tokens` tokens falls once the period has used `before`."""
        if self.included_tokens is None:
            included = tokens
        else:
            included = min(tokens, max(self.included_tokens - before, 0))
        return PlanCharge(
            self.provider, period.start, period.end, before, included, tokens - included, estimated
        )


def marginal_cost(sheet: PriceSheet, usage: Usage, charge: PlanCharge) -> Cost:
    """What the call adds to the bill: nothing for its covered tokens, `sheet`'s prices (the plan's
    overage price or the model's own, at the tier the call's whole prompt picks) for those past the
    quota, and `sheet`'s request fee when none of its tokens were covered."""
    tokens = usage.total_tokens
    if not charge.overage:
        return Cost(
            status=PricingStatus.PRICED,
            source=SUBSCRIPTION_SOURCE,
            currency=sheet.currency,
            cost_per_1k_tokens=ZERO if tokens else None,
            estimated=usage.estimated or charge.estimated,
            plan=charge,
        )
    cost = sheet.cost(
        overage_usage(usage, charge.overage),
        calls=0 if charge.included else 1,
        tier_prompt=usage.prompt_tokens,
    )
    if cost.status is not PricingStatus.PRICED:
        return replace(cost, plan=charge, estimated=cost.estimated or charge.estimated)
    per_1k = (cost.total * _THOUSAND / tokens).quantize(_RATE_QUANTUM) if tokens else None
    return replace(
        cost, cost_per_1k_tokens=per_1k, estimated=usage.estimated or charge.estimated, plan=charge
    )


def overage_usage(usage: Usage, overage: int) -> Usage:
    """The last `overage` of the call's tokens, as usage: output (visible, then reasoning), then
    uncached input, then cache writes (one-hour first), then cache reads."""
    left = overage
    completion = min(left, usage.completion_tokens)
    left -= completion
    reasoning = max(usage.reasoning_tokens - (usage.completion_tokens - completion), 0)
    uncached = max(usage.prompt_tokens - usage.cache_read_tokens - usage.cache_write_tokens, 0)
    fresh = min(left, uncached)
    left -= fresh
    written = min(left, usage.cache_write_tokens)
    left -= written
    written_1h = min(written, usage.cache_write_1h_tokens)
    read = min(left, usage.cache_read_tokens)
    return Usage(
        prompt_tokens=fresh + written + read,
        completion_tokens=completion,
        cache_read_tokens=read,
        cache_write_tokens=written,
        reasoning_tokens=reasoning,
        cache_write_1h_tokens=written_1h,
        estimated=usage.estimated,
    )
