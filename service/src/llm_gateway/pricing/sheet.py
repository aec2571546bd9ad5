"""A model's prices at one moment (a `PriceSheet`), and the exact cost of a call's usage."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from llm_gateway.domain.results import Usage

ZERO = Decimal(0)
_MILLION = Decimal(1_000_000)
_THOUSAND = Decimal(1_000)
# cost_per_1k_tokens is a derived rate, not an amount charged: rounded to a pico-dollar.
_RATE_QUANTUM = Decimal("1e-12")


class PricingStatus(StrEnum):
    PRICED = "priced"
    FREE = "free"
    UNKNOWN = "unknown"


class BillingModel(StrEnum):
    FREE = "free"
    PER_TOKEN = "per_token"
    PER_REQUEST = "per_request"
    HYBRID = "hybrid"
    SUBSCRIPTION = "subscription"  # a flat fee per period (docs/subscriptions.md)


@dataclass(frozen=True, slots=True)
class CostCapabilities:
    """What a provider reports and charges: how fully its calls can be costed."""

    tracks_tokens: bool  # replies carry its own token counts
    token_caching: bool  # it caches prompts and reports cached tokens, priced apart
    request_fees: bool  # some of its models charge a fee per request
    billing_model: BillingModel


@dataclass(frozen=True, slots=True)
class Rate:
    """A price per million tokens, optionally rising once the prompt passes a threshold.

    As in the provider price sheets (and genai-prices), the whole call is charged at the tier
    price when its prompt has more than `start` tokens.
    """

    base: Decimal
    tiers: tuple[tuple[int, Decimal], ...] = ()  # (start, price), ascending by start

    def at(self, prompt_tokens: int) -> Decimal:
        for start, price in reversed(self.tiers):
            if prompt_tokens > start:
                return price
        return self.base


@dataclass(frozen=True, slots=True)
class PlanCharge:
    """Where one call fell in its provider's subscription period: the period's tokens before it,
    and how many of its own tokens the fee covered and how many went past the quota."""

    plan: str  # the provider
    period_start: datetime
    period_end: datetime
    before: int
    included: int
    overage: int
    estimated: bool = False  # the period's count could not be read: `before` is this process's guess

    @property
    def period_key(self) -> str:
        return self.period_start.isoformat()


@dataclass(frozen=True, slots=True)
class Cost:
    """The cost of one call, in exact decimals."""

    status: PricingStatus
    source: str
    currency: str = "USD"
    input: Decimal = ZERO
    cached_input: Decimal = ZERO
    cache_write: Decimal = ZERO  # five-minute and one-hour writes together
    cache_write_1h: Decimal = ZERO
    output: Decimal = ZERO
    request_fee: Decimal = ZERO
    total: Decimal = ZERO
    cost_per_1k_tokens: Decimal | None = None
    cache_savings: Decimal = ZERO
    estimated: bool = False
    plan: PlanCharge | None = None  # set on a subscription provider's calls

    def scaled(self, factor: Decimal, source: str) -> Cost:
        """Every amount times `factor`, exactly (a provider's batch price is a fraction of its
        list price); `source` says where the price came from."""
        if self.status is PricingStatus.UNKNOWN:
            return self
        per_1k = self.cost_per_1k_tokens
        return replace(
            self,
            source=source,
            input=self.input * factor,
            cached_input=self.cached_input * factor,
            cache_write=self.cache_write * factor,
            cache_write_1h=self.cache_write_1h * factor,
            output=self.output * factor,
            request_fee=self.request_fee * factor,
            total=self.total * factor,
            cost_per_1k_tokens=None if per_1k is None else per_1k * factor,
            cache_savings=self.cache_savings * factor,
        )


@dataclass(frozen=True, slots=True)
class PriceSheet:
    """A model's prices in USD. Rates are per million tokens; None means no such charge."""

    status: PricingStatus
    source: str
    input: Rate | None = None
    cached_input: Rate | None = None
    cache_write: Rate | None = None
    cache_write_1h: Rate | None = None  # Anthropic's one-hour cache
    output: Rate | None = None
    per_request: Decimal = ZERO
    currency: str = "USD"

    @property
    def billing_model(self) -> BillingModel | None:
        if self.status is PricingStatus.FREE:
            return BillingModel.FREE
        if self.status is PricingStatus.UNKNOWN:
            return None
        per_token = any(r is not None for r in (self.input, self.cached_input, self.output))
        if per_token and self.per_request:
            return BillingModel.HYBRID
        return BillingModel.PER_TOKEN if per_token else BillingModel.PER_REQUEST

    @property
    def tiered(self) -> bool:
        return bool(self.tier_starts)

    @property
    def tier_starts(self) -> frozenset[int]:
        """The prompt lengths past which a price changes."""
        rates = (self.input, self.cached_input, self.cache_write, self.cache_write_1h, self.output)
        return frozenset(start for r in rates if r is not None for start, _ in r.tiers)

    def cost(self, usage: Usage, *, calls: int = 1, tier_prompt: int | None = None) -> Cost:
        """Prices `usage`. Cache reads and writes are charged at their own rates (falling back to
        the input rate where the sheet has none; one-hour writes to the five-minute rate);
        reasoning tokens are output tokens.

        `usage` may also be the sum of `calls` calls whose prompts all fall in the same price
        tier, that of a `tier_prompt`-token prompt: each call pays the request fee, and the rates
        are linear in the tokens, so the sum is priced exactly."""
        if self.status is not PricingStatus.PRICED:
            return Cost(status=self.status, source=self.source, estimated=usage.estimated)
        uncached = max(usage.prompt_tokens - usage.cache_read_tokens - usage.cache_write_tokens, 0)
        prompt = usage.prompt_tokens if tier_prompt is None else tier_prompt  # picks the tier
        input_rate = _rate(self.input, prompt)
        cached_rate = _rate(self.cached_input, prompt, input_rate)
        write_rate = _rate(self.cache_write, prompt, input_rate)
        write_1h_rate = _rate(self.cache_write_1h, prompt, write_rate)
        written_1h = min(usage.cache_write_1h_tokens, usage.cache_write_tokens)
        input_cost = uncached * input_rate / _MILLION
        cached_cost = usage.cache_read_tokens * cached_rate / _MILLION
        write_1h_cost = written_1h * write_1h_rate / _MILLION
        write_cost = (usage.cache_write_tokens - written_1h) * write_rate / _MILLION + write_1h_cost
        output_cost = usage.completion_tokens * _rate(self.output, prompt) / _MILLION
        request_fee = self.per_request * calls
        total = input_cost + cached_cost + write_cost + output_cost + request_fee
        tokens = usage.total_tokens
        return Cost(
            status=PricingStatus.PRICED,
            source=self.source,
            currency=self.currency,
            input=input_cost,
            cached_input=cached_cost,
            cache_write=write_cost,
            cache_write_1h=write_1h_cost,
            output=output_cost,
            request_fee=request_fee,
            total=total,
            cost_per_1k_tokens=(total * _THOUSAND / tokens).quantize(_RATE_QUANTUM) if tokens else None,
            cache_savings=usage.cache_read_tokens * (input_rate - cached_rate) / _MILLION,
            estimated=usage.estimated,
        )


def _rate(rate: Rate | None, prompt_tokens: int, fallback: Decimal = ZERO) -> Decimal:
    return fallback if rate is None else rate.at(prompt_tokens)


UNKNOWN_PRICE = PriceSheet(status=PricingStatus.UNKNOWN, source="")


def format_decimal(value: Decimal) -> str:
    """Plain notation without exponent or trailing zeros: Decimal("1.50E-4") -> "0.00015"."""
    if not value:  # most of a reply's amounts (cache, fees, savings)
        return "0"
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text
