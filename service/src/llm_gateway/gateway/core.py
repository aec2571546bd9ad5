"""The gateway: plans candidates, runs attempts, and accounts usage, cost and latency."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import aclosing

from llm_gateway.catalog import Catalog, ModelSpec
from llm_gateway.domain.errors import GatewayError
from llm_gateway.domain.messages import ChatRequest, ToolCall
from llm_gateway.domain.results import Completion, StreamDone, TextDelta, Usage
from llm_gateway.gateway.estimate import Estimate, budget_error, estimate, ranked
from llm_gateway.gateway.outcome import (
    Attempt,
    CallHeader,
    CallSummary,
    ChatOutcome,
    GatewayEvent,
    Latency,
    RoutingInfo,
    StreamFinished,
    StreamStarted,
)
from llm_gateway.providers.base import Provider, UpstreamCall
from llm_gateway.providers.http import UpstreamTiming, current_timing
from llm_gateway.router import Route, Router
from llm_gateway.tokens import prompt_tokens, text_tokens

_perf = time.perf_counter


class Gateway:
    def __init__(self, router: Router, catalog: Catalog, providers: Mapping[str, Provider]) -> None:
        self._router = router
        self._catalog = catalog
        self._providers = dict(providers)

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    async def chat(self, request: ChatRequest, request_id: str) -> ChatOutcome:
        started = _perf()
        created = time.time()
        plan = _Plan(self._router.plan(request.model, request.fallback_models), request)
        if request.dry_run:
            return self._dry_run(plan, request_id, started, created)
        upstream = 0.0
        for route in plan.runnable():
            timing = UpstreamTiming()
            current_timing.set(timing)
            attempt_start = _perf()
            try:
                completion = await self._provider(route.spec).chat(plan.call(route.spec))
            except GatewayError as err:
                elapsed = _perf() - attempt_start
                upstream += elapsed
                plan.failed(route, err, elapsed)
                continue
            elapsed = _perf() - attempt_start
            upstream += elapsed
            plan.succeeded(route, elapsed)
            header = CallHeader(_new_id(), request_id, route.spec, created)
            usage = completion.usage or _estimated_usage(
                plan.prompt_tokens, completion.text, completion.tool_calls
            )
            summary = self._summary(plan, route.spec, usage, started, timing, None, upstream, completion)
            return ChatOutcome(header, completion, summary)
        raise plan.exhausted()

    async def chat_stream(self, request: ChatRequest, request_id: str) -> AsyncIterator[GatewayEvent]:
        """Start, deltas as the upstream sends them, then the summary. A candidate may be replaced
        by the next one only until its first event: after that the caller has seen output."""
        started = _perf()
        created = time.time()
        plan = _Plan(self._router.plan(request.model, request.fallback_models), request)
        upstream = 0.0
        for route in plan.runnable():
            timing = UpstreamTiming()
            current_timing.set(timing)
            attempt_start = _perf()
            events = self._provider(route.spec).stream(plan.call(route.spec))
            async with aclosing(events):
                try:
                    event = await anext(events)
                except GatewayError as err:
                    elapsed = _perf() - attempt_start
                    upstream += elapsed
                    plan.failed(route, err, elapsed)
                    continue
                yield StreamStarted(CallHeader(_new_id(), request_id, route.spec, created))
                first_token: float | None = None
                text: list[str] = []
                arguments: list[str] = []
                while not isinstance(event, StreamDone):
                    if first_token is None:
                        first_token = _perf()
                    if isinstance(event, TextDelta):
                        text.append(event.text)
                    else:
                        arguments.append(event.name + event.arguments)
                    yield event
                    event = await anext(events)
                elapsed = _perf() - attempt_start
                upstream += elapsed
                plan.succeeded(route, elapsed)
                usage = event.usage or _estimated_usage(
                    plan.prompt_tokens, "".join(text), (), extra_tokens=text_tokens("".join(arguments))
                )
                completion = Completion(
                    text="",
                    finish_reason=event.finish_reason,
                    response_id=event.response_id,
                    provider_model=event.provider_model,
                )
                yield StreamFinished(
                    self._summary(plan, route.spec, usage, started, timing, first_token, upstream, completion)
                )
                return
        raise plan.exhausted()

    def estimate_cost(
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
        prompt = prompt_tokens(request)
        unique = {route.spec.id: route.spec for route in routes}
        return ranked([estimate(request, spec, prompt, expected_output) for spec in unique.values()])

    def list_models(self, provider: str = "", capabilities: Sequence[str] = ()) -> list[ModelSpec]:
        return [
            spec
            for spec in self._catalog.listed()
            if (not provider or spec.provider == provider) and all(spec.supports(c) for c in capabilities)
        ]

    def _provider(self, spec: ModelSpec) -> Provider:
        return self._providers[spec.provider]

    def _dry_run(self, plan: _Plan, request_id: str, started: float, created: float) -> ChatOutcome:
        route = plan.runnable()[0]
        est = plan.estimate(route.spec)
        usage = Usage(est.prompt_tokens, est.expected_output_tokens, estimated=True)
        header = CallHeader(_new_id(), request_id, route.spec, created)
        plan.routing.selected = route.spec
        total = _perf() - started
        summary = CallSummary(
            finish_reason=None,
            usage=usage,
            cost=est.expected_cost,
            latency=Latency(total, None, None, 0.0),
            routing=plan.routing,
            provider_model="",
            provider_response_id="",
        )
        return ChatOutcome(header, Completion(text=""), summary, dry_run=True)

    def _summary(
        self,
        plan: _Plan,
        spec: ModelSpec,
        usage: Usage,
        started: float,
        timing: UpstreamTiming,
        first_token: float | None,
        upstream: float,
        completion: Completion,
    ) -> CallSummary:
        plan.routing.selected = spec
        return CallSummary(
            finish_reason=completion.finish_reason,
            usage=usage,
            cost=spec.price.cost(usage),
            latency=Latency(
                total=_perf() - started,
                time_to_first_byte=None if timing.first_byte is None else timing.first_byte - started,
                time_to_first_token=None if first_token is None else first_token - started,
                upstream=upstream,
            ),
            routing=plan.routing,
            provider_model=completion.provider_model,
            provider_response_id=completion.response_id,
        )


class _Plan:
    """The candidates of one call, their budget checks, and the attempts made so far."""

    def __init__(self, routes: list[Route], request: ChatRequest) -> None:
        self.request = request
        self.routes = routes
        self.routing = RoutingInfo(reason=routes[0].reason, candidates=[r.spec.id for r in routes])
        self.prompt_tokens = prompt_tokens(request)
        self._last_error: GatewayError | None = None

    def estimate(self, spec: ModelSpec) -> Estimate:
        return estimate(self.request, spec, self.prompt_tokens)

    def runnable(self) -> list[Route]:
        """Candidates within `max_cost`, in order; with none, the first candidate's budget error.
        A candidate over budget is recorded as an attempt that never reached the provider."""
        budget = self.request.max_cost
        if budget is None:
            return self.routes
        allowed = []
        for route in self.routes:
            est = self.estimate(route.spec)
            if est.within_budget:
                allowed.append(route)
                continue
            err = budget_error(est, budget)
            self.routing.attempts.append(_attempt(route.spec, err.code, err.reason, err.message, 0.0))
        if not allowed:
            raise budget_error(self.estimate(self.routes[0].spec), budget)
        return allowed

    def call(self, spec: ModelSpec) -> UpstreamCall:
        return UpstreamCall(self.request, spec, self.request.provider_options.get(spec.provider, {}))

    def failed(self, route: Route, err: GatewayError, elapsed: float) -> None:
        """Records a failed attempt; re-raises unless another candidate may succeed."""
        self.routing.attempts.append(_attempt(route.spec, err.code, err.reason, err.message, elapsed))
        if not err.retryable:
            raise err
        self._last_error = err

    def succeeded(self, route: Route, elapsed: float) -> None:
        self.routing.attempts.append(_attempt(route.spec, "OK", "", "", elapsed))
        if route.spec.id != self.routes[0].spec.id:
            self.routing.reason = "fallback"

    def exhausted(self) -> GatewayError:
        """The error to raise when every runnable candidate failed with a retryable error."""
        err = self._last_error
        assert err is not None, "runnable() yields at least one route, and each failure is recorded"
        err.metadata["attempts"] = "; ".join(f"{a.model} {a.code}" for a in self.routing.attempts)
        return err


def _attempt(spec: ModelSpec, code: str, reason: str, message: str, elapsed: float) -> Attempt:
    return Attempt(spec.provider, spec.id, str(code), reason, message, elapsed)


def _estimated_usage(prompt: int, text: str, tool_calls: Sequence[ToolCall], extra_tokens: int = 0) -> Usage:
    completion = text_tokens(text) + extra_tokens
    completion += sum(text_tokens(c.name) + text_tokens(c.arguments) for c in tool_calls)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, estimated=True)


def _new_id() -> str:
    return f"chat_{secrets.token_hex(12)}"
