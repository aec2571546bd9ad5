"""Routing strategies for `model: "auto"` with routing options: which of the catalog's models may
serve the call, and in what order (docs/routing.md).

A model is passed over when it lacks a capability the call needs (its tools, images, response
format, reasoning settings, or `required_capabilities`), its context window is too small (for the
prompt, or under `min_context_window`), it costs more per 1,000 tokens than allowed, its recent
latency is over `max_latency`, its circuit is open, or its rate limit has no room right now. The
rest are ranked, preferred providers first, then by the strategy's score (lower first):

- cost: the call's expected cost on the model (unknown prices last);
- speed: recent observed latency (unary calls: the whole call; streams: the first token); a model
  without recent calls goes first with probability `exploration`, else after those measured;
- quality: 1 - the configured quality score (none configured: 1);
- auto: the weighted sum of cost, latency and 1 - quality, each scaled to 0..1 over the eligible
  models (no latency known: the middle).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from llm_gateway.catalog import ModelSpec
from llm_gateway.config.schema import RoutingConfig
from llm_gateway.domain.messages import ChatRequest, ResponseFormatType, RoutingOptions, RoutingStrategy
from llm_gateway.gateway.estimate import Estimate
from llm_gateway.pricing import PricingStatus


@dataclass(frozen=True, slots=True)
class Considered:
    """A model a strategy, or a group's deployment the balancer, looked at for a call."""

    model: str
    passed_over: str  # "" when eligible
    expected_cost: Decimal | None = None
    cost_per_1k_tokens: Decimal | None = None
    latency: float | None = None  # seconds
    quality: float | None = None
    score: float = 0.0
    in_flight: int | None = None  # a group's deployment: calls on it in flight in this process
    weight: int | None = None  # a group's deployment: its weight


def needed_capabilities(request: ChatRequest, options: RoutingOptions, stream: bool) -> list[str]:
    needed = set(options.required_capabilities)
    if request.tools:
        needed.add("tools")
    if any(m.has_images() for m in request.messages):
        needed.add("vision")
    fmt = request.response_format
    if fmt is not None and fmt.type is not ResponseFormatType.TEXT:
        needed.add(fmt.type.value)
    if request.reasoning is not None:
        needed.add("reasoning")
    if stream:
        needed.add("streaming")
    return sorted(needed)


def choose(
    specs: Sequence[ModelSpec],
    estimates: Callable[[ModelSpec], Estimate],
    options: RoutingOptions,
    config: RoutingConfig,
    needed: Sequence[str],
    latency: Callable[[str], float | None],
    unready: Callable[[str], str],
    rng: random.Random,
) -> tuple[list[ModelSpec], list[Considered]]:
    """The eligible models in rank order, and every model considered (eligible first, in rank
    order, then those passed over)."""
    eligible: list[tuple[ModelSpec, Considered]] = []
    passed: list[Considered] = []
    for spec in specs:
        est = estimates(spec)
        priced = est.expected_cost.status is not PricingStatus.UNKNOWN
        cost = est.expected_cost.total if priced else None
        per_1k = est.expected_cost.cost_per_1k_tokens if priced else None
        if priced and per_1k is None:  # a free model, or no tokens at all
            per_1k = Decimal(0)
        seen = latency(spec.id)
        quality = config.quality.get(spec.id)
        why = _passed_over(spec, est, options, needed, per_1k, seen) or unready(spec.id)
        considered = Considered(spec.id, why, cost, per_1k, seen, quality)
        if why:
            passed.append(considered)
        else:
            eligible.append((spec, considered))
    scores = _scores([c for _, c in eligible], options.strategy, config, rng)
    preference = {provider: i for i, provider in enumerate(options.preferred_providers)}
    ranked = sorted(
        zip(eligible, scores, strict=True),
        key=lambda item: (preference.get(item[0][0].provider, len(preference)), item[1], item[0][0].id),
    )
    chosen = [spec for (spec, _), _ in ranked]
    shown = [_scored(considered, score) for (_, considered), score in ranked]
    return chosen, shown + passed


def _passed_over(
    spec: ModelSpec,
    est: Estimate,
    options: RoutingOptions,
    needed: Sequence[str],
    per_1k: Decimal | None,
    seen: float | None,
) -> str:
    lacking = [c for c in needed if not spec.supports(c)]
    if lacking:
        return f"lacks {', '.join(lacking)}"
    if not est.fits_context_window:
        return "the prompt does not fit its context window"
    window = options.min_context_window
    if window is not None and (spec.context_window is None or spec.context_window < window):
        return f"context window under min_context_window ({window})"
    limit = options.max_cost_per_1k_tokens
    if limit is not None:
        if per_1k is None:
            return "price unknown, so max_cost_per_1k_tokens cannot be checked"
        if per_1k > limit:
            return f"over max_cost_per_1k_tokens ({per_1k} > {limit} USD)"
    if options.max_latency is not None and seen is not None and seen > options.max_latency:
        return f"recent latency over max_latency_ms ({seen * 1000:.0f} > {options.max_latency * 1000:.0f} ms)"
    return ""


def _scores(
    considered: list[Considered], strategy: RoutingStrategy, config: RoutingConfig, rng: random.Random
) -> list[float]:
    if not considered:
        return []
    costs = [float(c.expected_cost) if c.expected_cost is not None else None for c in considered]
    qualities = [1.0 - (c.quality if c.quality is not None else 0.0) for c in considered]
    if strategy is RoutingStrategy.COST:
        return [c if c is not None else float("inf") for c in costs]
    if strategy is RoutingStrategy.QUALITY:
        return qualities
    latencies = [c.latency for c in considered]
    unmeasured = [i for i, seen in enumerate(latencies) if seen is None]
    explore = unmeasured and rng.random() < config.exploration
    tried = rng.choice(unmeasured) if explore else None
    if strategy is RoutingStrategy.SPEED:
        slowest = max((s for s in latencies if s is not None), default=0.0)
        return [
            -1.0 if i == tried else (s if s is not None else slowest + 1.0) for i, s in enumerate(latencies)
        ]
    weights = config.weights
    cost_part = _scaled(costs)
    speed_part = _scaled(latencies)
    return [
        -1.0
        if i == tried
        else weights.cost * cost_part[i] + weights.speed * speed_part[i] + weights.quality * qualities[i]
        for i in range(len(considered))
    ]


def _scaled(values: list[float | None]) -> list[float]:
    """Each value scaled to 0 (the least) to 1 (the most) over those known; unknown: 0.5."""
    known = [v for v in values if v is not None]
    if not known:
        return [0.5] * len(values)
    low, high = min(known), max(known)
    spread = high - low
    return [0.5 if v is None else (0.0 if spread == 0 else (v - low) / spread) for v in values]


def _scored(considered: Considered, score: float) -> Considered:
    return dataclasses.replace(considered, score=score)
