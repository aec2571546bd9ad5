"""The gateway: plans candidates, runs attempts, and accounts usage, cost and latency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from contextlib import aclosing

from llm_gateway.catalog import Catalog, ModelSpec
from llm_gateway.domain.errors import GatewayError
from llm_gateway.domain.messages import ChatRequest
from llm_gateway.domain.results import Completion, StreamDone, Usage
from llm_gateway.gateway.breaker import ProviderBreaker
from llm_gateway.gateway.estimate import Estimate, estimate, ranked
from llm_gateway.gateway.live import LiveLatency
from llm_gateway.gateway.outcome import CallSummary, ChatOutcome, GatewayEvent, StreamFinished, StreamStarted
from llm_gateway.gateway.plan import CallPlan, StreamOutput
from llm_gateway.pricing import PricingStatus, format_decimal
from llm_gateway.providers.base import Provider
from llm_gateway.router import Router
from llm_gateway.tokens import TokenCount, count_prompt


class Gateway:
    def __init__(
        self,
        router: Router,
        catalog: Catalog,
        providers: Mapping[str, Provider],
        breakers: Mapping[str, ProviderBreaker],
    ) -> None:
        self._router = router
        self._catalog = catalog
        self._providers = dict(providers)
        self.breakers = dict(breakers)
        self.live = LiveLatency()

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def _plan(self, request: ChatRequest, request_id: str, received_at: float | None) -> CallPlan:
        routes = self._router.plan(request.model, request.fallback_models)
        return CallPlan(routes, request, request_id, received_at)

    async def chat(
        self, request: ChatRequest, request_id: str, received_at: float | None = None
    ) -> ChatOutcome:
        """`received_at` (time.perf_counter()) is when the call reached the gateway; latency is
        measured from it (default: now)."""
        plan = self._plan(request, request_id, received_at)
        await plan.prepare()
        if request.dry_run:
            return _dry_run(plan)
        for route in plan.runnable():
            call = plan.begin_attempt(route.spec)
            try:
                with self.breakers[route.spec.provider].attempt():
                    completion = await self._providers[route.spec.provider].chat(call)
            except GatewayError as err:
                plan.failed(route, err)
                continue
            elapsed = plan.succeeded(route)
            if route.spec.listed:
                self.live.call(route.spec.id, elapsed)
            usage = completion.usage or await plan.estimated_usage(
                route.spec, completion.text, completion.tool_calls
            )
            summary = plan.summary(
                route.spec, usage, completion.finish_reason, completion.provider_model, completion.response_id
            )
            return ChatOutcome(plan.header(route.spec), completion, summary)
        raise plan.exhausted()

    async def chat_stream(
        self,
        request: ChatRequest,
        request_id: str,
        received_at: float | None = None,
        on_cut_short: Callable[[CallSummary], None] | None = None,
    ) -> AsyncGenerator[GatewayEvent, None]:
        """Start, deltas as the upstream sends them, then the summary. A candidate may be replaced
        by the next one only until its first event: after that the caller has seen output.

        A stream cut short after its start (the upstream fails, or the caller cancels) is still
        accounted: what was produced so far is counted and priced, marked estimated, and handed
        to `on_cut_short`; an upstream failure also carries it in its error's metadata."""
        plan = self._plan(request, request_id, received_at)
        await plan.prepare()
        for route in plan.runnable():
            call = plan.begin_attempt(route.spec)
            try:
                ticket = self.breakers[route.spec.provider].admit()
            except GatewayError as err:
                plan.failed(route, err)
                continue
            events = self._providers[route.spec.provider].stream(call)
            async with aclosing(events):
                try:
                    event = await anext(events)
                except BaseException as exc:
                    ticket.end(exc)
                    if not isinstance(exc, GatewayError):
                        raise
                    plan.failed(route, exc)
                    continue
                yield StreamStarted(plan.header(route.spec))
                output = StreamOutput()
                try:
                    while not isinstance(event, StreamDone):
                        output.add(event)
                        yield event
                        event = await anext(events)
                except BaseException as exc:
                    ticket.end(exc)
                    if isinstance(exc, GatewayError):
                        summary = plan.cut_short(route, output, exc)
                        exc.metadata.update(_spent(summary))
                    elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
                        summary = plan.cut_short(route, output)
                    else:
                        raise
                    if on_cut_short is not None:
                        on_cut_short(summary)
                    raise
                ticket.end(None)
                started = plan.attempt_started
                plan.succeeded(route)
                if route.spec.listed and output.first_token is not None:
                    self.live.first_token(route.spec.id, output.first_token - started)
                usage = event.usage or await plan.estimated_usage(
                    route.spec, output.text(), output.tool_calls()
                )
                yield StreamFinished(
                    plan.summary(
                        route.spec,
                        usage,
                        event.finish_reason,
                        event.provider_model,
                        event.response_id,
                        output.first_token,
                    )
                )
                return
        raise plan.exhausted()

    async def estimate_cost(
        self, request: ChatRequest, expected_output: int | None, candidates: Sequence[str]
    ) -> list[Estimate]:
        if candidates:
            routes = [
                route
                for i, model in enumerate(candidates)
                for route in self._router.resolve(model, f"candidate_models[{i}]")
            ]
        else:
            routes = self._router.resolve(request.model, "request.model")
        unique = {route.spec.id: route.spec for route in routes}
        counts: dict[str, TokenCount] = {}
        for spec in unique.values():
            if spec.tokenizer not in counts:
                counts[spec.tokenizer] = await count_prompt(spec.tokenizer, request)
        return ranked(
            [estimate(request, spec, counts[spec.tokenizer], expected_output) for spec in unique.values()]
        )

    def list_models(self, provider: str = "", capabilities: Sequence[str] = ()) -> list[ModelSpec]:
        return [
            spec
            for spec in self._catalog.listed()
            if (not provider or spec.provider == provider) and all(spec.supports(c) for c in capabilities)
        ]


def _spent(summary: CallSummary) -> dict[str, str]:
    """A cut-short stream's usage and cost, for its error's ErrorInfo metadata."""
    usage, cost = summary.usage, summary.cost
    spent = {
        "prompt_tokens": str(usage.prompt_tokens),
        "completion_tokens": str(usage.completion_tokens),
        "usage_estimated": "true",
        "cost_status": cost.status.value,
    }
    if cost.status is not PricingStatus.UNKNOWN:
        spent["cost"] = format_decimal(cost.total)
        spent["cost_currency"] = cost.currency
    return spent


def _dry_run(plan: CallPlan) -> ChatOutcome:
    """The estimate as the reply: the first candidate within budget, expected usage, no call."""
    route = plan.runnable()[0]
    plan.fit(route.spec)  # a dry run refuses what the real call would refuse
    est = plan.estimate(route.spec)
    plan.routing.selected = route.spec
    usage = Usage(est.prompt_tokens, est.expected_output_tokens, estimated=True)
    summary = plan.summary(route.spec, usage, finish_reason=None)
    return ChatOutcome(plan.header(route.spec), Completion(text=""), summary, dry_run=True)
