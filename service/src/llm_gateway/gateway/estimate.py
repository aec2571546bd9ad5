"""Cost estimates before a call: expected and worst case, and the budget check."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from llm_gateway.catalog import ModelSpec
from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.domain.messages import ChatRequest
from llm_gateway.domain.results import Usage
from llm_gateway.pricing import Cost, PricingStatus, format_decimal
from llm_gateway.tokens import CountMethod, TokenCount

# Output tokens assumed for the expected cost when the caller gives none.
DEFAULT_EXPECTED_OUTPUT_TOKENS = 256
# Worst-case output when neither the request (max_tokens) nor the catalog bounds it.
UNBOUNDED_OUTPUT_TOKENS = 4096


class Pricer(Protocol):
    def __call__(self, model: ModelSpec, usage: Usage, /, *, worst: bool = False) -> Cost:
        """What a call of `usage` on `model` would cost now; `worst`: at most (a subscription's
        quota may run out before it ends)."""
        ...


def list_price(model: ModelSpec, usage: Usage, *, worst: bool = False) -> Cost:
    return model.price.cost(usage)


@dataclass(frozen=True, slots=True)
class Estimate:
    model: ModelSpec
    prompt_tokens: int
    method: CountMethod  # how prompt_tokens was counted
    expected_output_tokens: int
    worst_case_output_tokens: int
    expected_cost: Cost
    worst_case_cost: Cost
    fits_context_window: bool
    within_budget: bool


def estimate(
    request: ChatRequest,
    model: ModelSpec,
    prompt: TokenCount,
    expected_output: int | None = None,
    price: Pricer = list_price,
) -> Estimate:
    prompt_tokens = prompt.tokens
    worst = request.generation.max_tokens or model.max_output_tokens or UNBOUNDED_OUTPUT_TOKENS
    expected = min(DEFAULT_EXPECTED_OUTPUT_TOKENS if expected_output is None else expected_output, worst)
    expected_cost = price(model, Usage(prompt_tokens, expected, estimated=True))
    worst_cost = price(model, Usage(prompt_tokens, worst, estimated=True), worst=True)
    window = model.context_window
    return Estimate(
        model=model,
        prompt_tokens=prompt_tokens,
        method=prompt.method,
        expected_output_tokens=expected,
        worst_case_output_tokens=worst,
        expected_cost=expected_cost,
        worst_case_cost=worst_cost,
        fits_context_window=window is None or prompt_tokens + worst <= window,
        within_budget=_within(worst_cost, request.max_cost),
    )


def _within(cost: Cost, budget: Decimal | None) -> bool:
    if budget is None or cost.status is PricingStatus.FREE:
        return True
    # An unknown price cannot be shown to fit a budget.
    return cost.status is PricingStatus.PRICED and cost.total <= budget


def budget_error(estimate: Estimate, budget: Decimal) -> GatewayError:
    cost = estimate.worst_case_cost
    if cost.status is PricingStatus.UNKNOWN:
        return GatewayError(
            f"max_cost is set but {estimate.model.id} has no known price, so the budget cannot be "
            "checked; configure a price for it or drop max_cost",
            code=Code.FAILED_PRECONDITION,
            reason="PRICE_UNKNOWN",
            metadata={"model": estimate.model.id, "max_cost": format_decimal(budget)},
        )
    worst = format_decimal(cost.total)
    return GatewayError(
        f"the worst-case cost of {estimate.model.id} is {worst} USD "
        f"({estimate.prompt_tokens} prompt tokens + {estimate.worst_case_output_tokens} output tokens), "
        f"over max_cost {format_decimal(budget)} USD",
        code=Code.FAILED_PRECONDITION,
        reason="BUDGET_EXCEEDED",
        metadata={
            "model": estimate.model.id,
            "estimated_cost": worst,
            "max_cost": format_decimal(budget),
        },
    )


def ranked(estimates: list[Estimate]) -> list[Estimate]:
    """Cheapest expected cost first; free models cost zero; unknown prices last; ties by model id."""

    def key(e: Estimate) -> tuple[int, Decimal, str]:
        cost = e.expected_cost
        if cost.status is PricingStatus.UNKNOWN:
            return (1, Decimal(0), e.model.id)
        return (0, cost.total, e.model.id)

    return sorted(estimates, key=key)
