"""Cost recommendations: for each project and model of a period's calls (from the ledger), the
catalog's cheaper models with the same capabilities, what the same calls would have cost on them,
and how they fared in the period (docs/routing.md).

A candidate must have every capability of the model that served the calls (a model whose
capabilities are not known counts as having none), a context window that held the longest prompt
(or an unknown one), a known price, and a lower cost. Its cost is exact: the ledger sums each
project's calls per price band (prompts past the same tier starts of every candidate), and a band's
sum is priced as its calls would have been one by one (`PriceSheet.cost` with `calls` and
`tier_prompt`), at today's list prices.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from llm_gateway.catalog import ModelSpec
from llm_gateway.domain.results import Usage
from llm_gateway.ledger.query import ModelHealth, ModelPeriod
from llm_gateway.ledger.rows import EXACT
from llm_gateway.pricing import PricingStatus

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Alternative:
    model: str
    cost: Decimal  # the same calls at its prices
    savings: Decimal
    observed: ModelHealth | None


@dataclass(frozen=True, slots=True)
class Recommendation:
    project: str
    model: str
    requests: int
    usage: Usage
    cost: Decimal  # as charged
    observed: ModelHealth | None
    alternatives: tuple[Alternative, ...] = ()

    @property
    def best_savings(self) -> Decimal:
        return self.alternatives[0].savings if self.alternatives else ZERO


@dataclass(slots=True)
class _Calls:
    """One project's calls on one model: their sum, and their part in each price band."""

    requests: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = ZERO
    longest_prompt: int = 0
    bands: list[ModelPeriod] = field(default_factory=list)


def tier_starts(specs: Iterable[ModelSpec]) -> list[int]:
    """Every prompt length past which a candidate's price changes, ascending."""
    return sorted({start for spec in specs for start in spec.price.tier_starts})


def recommend(
    periods: Sequence[ModelPeriod],
    health: Sequence[ModelHealth],
    candidates: Sequence[ModelSpec],
    starts: Sequence[int],
    most: int,
) -> list[Recommendation]:
    """The recommendations for the ledger's `periods` (banded by `starts`, ascending), choosing
    among `candidates` (the models the caller may use), at most `most` per project and model; the
    largest saving first."""
    calls: dict[tuple[str, str], _Calls] = {}
    for period in periods:
        found = calls.setdefault((period.project, period.model), _Calls())
        found.requests += period.requests
        found.usage = _added(found.usage, period.usage)
        found.cost = EXACT.add(found.cost, period.cost)
        found.longest_prompt = max(found.longest_prompt, period.longest_prompt)
        found.bands.append(period)
    seen = {h.model: h for h in health}
    specs = {spec.id: spec for spec in candidates}
    out = []
    for (project, model), found in calls.items():
        spec = specs.get(model)
        alternatives = []
        for other in candidates:
            if other.id == model or not _may_replace(other, spec, found.longest_prompt):
                continue
            cost = _repriced(other, found.bands, starts)
            if cost is not None and cost < found.cost:
                saved = EXACT.subtract(found.cost, cost)
                alternatives.append(Alternative(other.id, cost, saved, seen.get(other.id)))
        alternatives.sort(key=lambda a: (a.cost, a.model))
        out.append(
            Recommendation(
                project,
                model,
                found.requests,
                found.usage,
                found.cost,
                seen.get(model),
                tuple(alternatives[:most]),
            )
        )
    out.sort(key=lambda r: (-r.best_savings, -r.cost, r.project, r.model))
    return out


def _may_replace(other: ModelSpec, spec: ModelSpec | None, longest_prompt: int) -> bool:
    if other.price.status is PricingStatus.UNKNOWN:
        return False
    needed = (spec.capabilities or ()) if spec is not None else ()
    if not all(other.supports(capability) for capability in needed):
        return False
    return other.context_window is None or other.context_window >= longest_prompt


def _repriced(other: ModelSpec, bands: Sequence[ModelPeriod], starts: Sequence[int]) -> Decimal | None:
    """What the calls of `bands` would have cost on `other`, exactly; None when it has no price."""
    total = ZERO
    for band in bands:
        # Any prompt length in the band prices like every call in it: one past its tier start.
        prompt = starts[band.band - 1] + 1 if band.band else 0
        cost = other.price.cost(band.usage, calls=band.requests, tier_prompt=prompt)
        if cost.status is PricingStatus.UNKNOWN:
            return None
        total = EXACT.add(total, cost.total)
    return total


def _added(a: Usage, b: Usage) -> Usage:
    return Usage(
        prompt_tokens=a.prompt_tokens + b.prompt_tokens,
        completion_tokens=a.completion_tokens + b.completion_tokens,
        cache_read_tokens=a.cache_read_tokens + b.cache_read_tokens,
        cache_write_tokens=a.cache_write_tokens + b.cache_write_tokens,
        reasoning_tokens=a.reasoning_tokens + b.reasoning_tokens,
        cache_write_1h_tokens=a.cache_write_1h_tokens + b.cache_write_1h_tokens,
    )
