"""The gateway: plans candidates, runs attempts, and accounts usage, cost and latency.

Every call, unary or streamed, goes through one attempt loop (`_attempt`) that ends when a provider
has answered: with a whole reply, or with a stream's first event. Every call ends in exactly one
`CallRecord` for the observers (`record.py`): the front door opens the call's tracker and ends it
with what the caller got; the gateway fills it in on the way, and keeps a tracker of its own when
it is called directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import aclosing, contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, TypeVar

from llm_gateway.cache import CachedReply, CacheUse, ResponseCache
from llm_gateway.catalog import Catalog, ModelSpec
from llm_gateway.config.schema import DeploymentConfig, RoutingConfig, TaskConfig
from llm_gateway.domain.errors import Code, GatewayError, invalid_field, invalid_request
from llm_gateway.domain.messages import ChatRequest, RoutingOptions
from llm_gateway.domain.results import Completion, StreamDone, StreamEvent, TextDelta, ToolCallDelta, Usage
from llm_gateway.gateway.balance import Balancer, InFlight
from llm_gateway.gateway.breaker import Ticket
from llm_gateway.gateway.estimate import Estimate, Pricer, estimate, list_price, ranked
from llm_gateway.gateway.fit import fit_request
from llm_gateway.gateway.guard import ProviderGuard
from llm_gateway.gateway.limits import Limiter
from llm_gateway.gateway.live import LiveLatency
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
from llm_gateway.gateway.plan import CallPlan, StreamOutput
from llm_gateway.gateway.record import ANONYMOUS, CallObserver, CallTracker, Observers, Principal
from llm_gateway.gateway.scope import CallScope
from llm_gateway.gateway.strategy import Considered, choose, needed_capabilities
from llm_gateway.pricing import Cost, PricingStatus
from llm_gateway.providers.base import Provider, UpstreamCall
from llm_gateway.providers.batch_api import BatchApi, BatchCapable
from llm_gateway.router import AUTO, Route, Router
from llm_gateway.tokens import TokenCount, count_completion, count_prompt

if TYPE_CHECKING:
    from llm_gateway.budgets.keeper import BudgetKeeper
    from llm_gateway.gateway.subscriptions import SubscriptionMeter
    from llm_gateway.tracing import Tracing

# A budget's refusals that another (cheaper, priced) candidate may not meet.
_PASSED_OVER = frozenset({"BUDGET_EXHAUSTED", "PRICE_UNKNOWN"})

T = TypeVar("T")
_UNTRACED = contextlib.nullcontext()
_perf = time.perf_counter
ZERO = Decimal(0)


class Gateway:
    def __init__(
        self,
        router: Router,
        catalog: Catalog,
        providers: Mapping[str, Provider],
        guards: Mapping[str, ProviderGuard],
        key_limiters: Mapping[str, Limiter] | None = None,
        observers: Sequence[CallObserver] = (),
        budgets: BudgetKeeper | None = None,
        cache: ResponseCache | None = None,
        routing: RoutingConfig | None = None,
        tasks: Mapping[str, TaskConfig] | None = None,
        subscriptions: SubscriptionMeter | None = None,
    ) -> None:
        self._router = router
        self.subscriptions = subscriptions
        self._price: Pricer = list_price if subscriptions is None else subscriptions.price
        self._tasks = dict(tasks or {})
        self.cache = cache
        self._catalog = catalog
        self._providers = dict(providers)
        self._guards = dict(guards)
        self._key_limiters = dict(key_limiters or {})
        self.budgets = budgets
        self.breakers = {name: guard.breaker for name, guard in self._guards.items()}
        # Observed latency of listed models, for ListModels: an observer like any other.
        self.live = LiveLatency(listed=lambda model_id: catalog.is_listed(model_id))
        self.observers = Observers([self.live, *observers])
        self.tracing: Tracing | None = None  # set with the tracing observer, when tracing is on
        self.routing = routing or RoutingConfig()
        self._rng = random.Random()
        self.in_flight = InFlight()
        self._balancer = Balancer(self.in_flight, self._latency, self._unready, self._rng)

    def rate_limiters(self) -> list[tuple[str, str, Limiter]]:
        """("provider" or "key", its name, its limiter), for the metrics."""
        limiters = [("provider", name, guard.limiter) for name, guard in self._guards.items()]
        return limiters + [("key", name, limiter) for name, limiter in self._key_limiters.items()]

    def open_call(
        self,
        operation: str,
        request_id: str,
        principal: Principal,
        received_at: float | None = None,
        *,
        door: str = "",
        route: str = "",
        traceparent: str | None = None,
        started_at: float | None = None,
    ) -> CallTracker:
        """The record of a call that has just arrived through `door` at `route`; its front door
        ends it (`CallTracker.end`) with the status the caller got, however the call ends."""
        return CallTracker(
            self.observers,
            operation=operation,
            request_id=request_id,
            principal=principal,
            received_at=received_at,
            door=door,
            route=route,
            traceparent=traceparent,
            started_at=started_at,
        )

    @contextmanager
    def _tracked(self, scope: CallScope, operation: str, request: ChatRequest) -> Iterator[CallTracker]:
        """The call's tracker, given the request. One the front door opened is ended by the door;
        a call made directly on the gateway gets one of its own, ended here however it ends."""
        tracker = scope.call
        if tracker is not None:
            tracker.request = request
            try:
                yield tracker
            finally:
                self.in_flight.leave(tracker.id)
            return
        tracker = self.open_call(operation, scope.request_id, scope.principal, scope.received_at)
        tracker.request = request
        try:
            yield tracker
        except GatewayError as err:
            tracker.fail(err)
            tracker.end()
            raise
        except (asyncio.CancelledError, GeneratorExit):
            tracker.end("CANCELLED")
            raise
        except BaseException:
            tracker.end("INTERNAL")
            raise
        finally:
            self.in_flight.leave(tracker.id)
        tracker.end("OK")

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    async def _plan(
        self, request: ChatRequest, scope: CallScope, call_id: str, stream: bool = False
    ) -> CallPlan:
        """The call's candidates; counts what its budget needs. A call (not a dry run) then takes
        its place in its gateway key's rate limit, if the key has one."""
        self._check_options(request)
        considered: list[Considered] = []
        group = None
        if request.routing is not None and request.model == AUTO:
            fallbacks = self._router.fallbacks(request.fallback_models, "model", scope.principal)
            routes, considered = await self._ranked(
                request, request.routing, fallbacks, scope.principal, stream
            )
        else:
            routes = self._router.plan(request.model, request.fallback_models, principal=scope.principal)
            group = self._router.group(request.model)
            if group is not None:
                routes, considered = self._balancer.order(group, routes, stream)
                self.in_flight.enter(call_id, routes[0].spec.id)  # now: the next call sees it busy
        plan = CallPlan(routes, request, scope, call_id, self.in_flight, self._price)
        plan.routing.considered = considered
        if group is not None:
            plan.routing.reason = f"group:{group.policy}"
        await plan.prepare()
        limiter = self._key_limiters.get(scope.principal.key)
        if limiter is not None and not request.dry_run:
            await _take_room(plan, routes[0].spec, limiter)
        return plan

    async def _ranked(
        self,
        request: ChatRequest,
        options: RoutingOptions,
        fallbacks: list[Route],
        principal: Principal,
        stream: bool,
    ) -> tuple[list[Route], list[Considered]]:
        """`model: "auto"` with routing options: the catalog's models the key may use, ranked by
        the strategy (`gateway/strategy.py`), then the call's fallbacks."""
        specs = [spec for spec in self._catalog.listed() if principal.may_use(spec.id)]
        counts = await _prompt_counts(request, specs)
        chosen, considered = choose(
            specs,
            lambda spec: estimate(request, spec, counts[spec.tokenizer], price=self._price),
            options,
            self.routing,
            needed_capabilities(request, options, stream),
            lambda model_id: self._latency(model_id, stream),
            self._unready,
            self._rng,
        )
        if not chosen:
            why = "; ".join(f"{c.model}: {c.passed_over}" for c in considered[:8])
            raise GatewayError(
                f"model: no model meets the routing options ({why})",
                code=Code.FAILED_PRECONDITION,
                reason="NO_MODEL_AVAILABLE",
                metadata={"field": "routing"},
            )
        reason = f"strategy:{options.strategy.value}"
        ranked = [Route(spec, reason) for spec in chosen]
        ids = {spec.id for spec in chosen}
        return ranked + [r for r in fallbacks if r.spec.id not in ids], considered

    def _for_task(self, request: ChatRequest, prefix: str = "") -> ChatRequest:
        """The request with its task's models when it names a task and no model: the first as
        its model, the others as fallbacks before its own. An unknown task is refused."""
        if not request.task_type:
            return request
        task = self._tasks.get(request.task_type)
        if task is None:
            known = ", ".join(sorted(self._tasks)) or "none"
            why = f"unknown task {request.task_type!r}; configured: {known}"
            raise invalid_field(f"{prefix}task_type", why)
        if request.model:
            return request
        served_by = [target for target in task.models if self._router.available(target)]
        if not served_by:
            raise GatewayError(
                f"{prefix}task_type: no model of task {request.task_type!r} is available "
                f"({', '.join(task.models)}: their providers are not enabled)",
                code=Code.FAILED_PRECONDITION,
                reason="NO_MODEL_AVAILABLE",
                metadata={"field": f"{prefix}task_type", "task_type": request.task_type},
            )
        first, *others = served_by
        return dataclasses.replace(request, model=first, fallback_models=(*others, *request.fallback_models))

    def _latency(self, model_id: str, stream: bool) -> float | None:
        """Recent latency: a stream's time to its first token, a unary call's whole time (else the
        other)."""
        seen = self.live.of(model_id)
        preferred, other = seen.latency_p50, seen.time_to_first_token_p50
        if stream:
            preferred, other = other, preferred
        return preferred if preferred is not None else other

    def _unready(self, model_id: str) -> str:
        """Why the model cannot take a call right now, or "" when it can."""
        guard = self._guards.get(model_id.partition(":")[0])
        if guard is None:
            return ""
        if not guard.breaker.available:
            return "circuit open"
        if not guard.limiter.has_room():
            return "no rate-limit room now"
        return ""

    def _check_options(self, request: ChatRequest) -> None:
        """Refuses provider options that would override what the gateway sets itself (the model,
        the messages, streaming, usage reporting, settings the contract carries)."""
        problems = [
            violation
            for name, options in request.provider_options.items()
            if (provider := self._providers.get(name)) is not None
            for violation in provider.option_rules.violations(name, options)
        ]
        if problems:
            raise invalid_request(problems)

    async def _admit(self, plan: CallPlan, spec: ModelSpec, guard: ProviderGuard) -> Ticket:
        """Lets one attempt through to the provider: its circuit must be closed (checked first,
        so an open circuit fails fast instead of waiting in line), then it waits for rate-limit
        capacity, then the breaker admits it. A retry's failure does not count against the
        provider again: one call weighs at most one failure."""
        guard.breaker.check()
        shared = guard.breaker.shared
        if shared is not None:
            shared.check()
        if plan.batch and guard.batch_limiter is not None:  # batches keep to their share
            await _take_room(plan, spec, guard.batch_limiter)
        await _take_room(plan, spec, guard.limiter)
        ticket = guard.breaker.admit(plan.caller, counts=plan.may_count_failure(spec.provider))
        if ticket.probe and shared is not None and not await shared.claim_probe():
            ticket.release()
            raise guard.breaker.open_error("another replica's probe call is testing it")
        plan.admitted()
        return ticket

    async def _bounded(
        self, plan: CallPlan, spec: ModelSpec, guard: ProviderGuard, step: Awaitable[T], first: bool
    ) -> T:
        """`step` of the current attempt, cut off (closing the upstream request) at the provider's
        timeouts or the caller's deadline, whichever comes first."""
        when, by_caller = plan.attempt_bound(guard.timeouts, first)
        try:
            async with asyncio.timeout_at(when) as timeout:
                return await step
        except TimeoutError:
            if not timeout.expired():
                raise
            raise plan.timed_out(spec, by_caller, first, guard.timeouts) from None

    async def _next_event(
        self, plan: CallPlan, spec: ModelSpec, guard: ProviderGuard, events: AsyncGenerator[StreamEvent, None]
    ) -> StreamEvent:
        """The next event of a stream that has started. A timer per event costs about 7 µs, so it is
        set only when needed: the caller's deadline needs none here (gRPC cancels the call when it
        passes, which closes the upstream request), and neither does the provider's `total` while
        more than `timeout.read` remains (a silence that long fails on its own first)."""
        if plan.total_left(guard.timeouts) > guard.timeouts.read:
            return await anext(events)
        return await self._bounded(plan, spec, guard, anext(events), first=False)

    async def _retry(
        self, plan: CallPlan, route: Route, guard: ProviderGuard, err: GatewayError, retries: int
    ) -> bool:
        """Records a failed attempt (raising `err` when no other attempt may succeed) and, when the
        same model should be tried again, waits the backoff and returns True. A provider's 429
        with Retry-After also holds back its other calls for that long. A group's deployment is
        not retried while another deployment of the group is still to be tried."""
        previous = plan.failed(route, err)
        if err.reason == "UPSTREAM_RATE_LIMITED" and err.retry_after:
            guard.limiter.pause(err.retry_after)
        if plan.another_deployment_after(route):  # a group's next deployment, not the same again
            return False
        wait = guard.retry.delay(retries, err, plan.time_left(), previous)
        if wait is None:
            return False
        await asyncio.sleep(wait)
        return True

    async def _attempt(
        self,
        plan: CallPlan,
        start: Callable[[Provider, UpstreamCall], Awaitable[T]],
        *,
        first: bool,
    ) -> tuple[Route, T]:
        """Attempts the call, retrying and falling back, until a provider answers: `start` gets a
        unary reply, or a stream's first event (`first`: bounded by `timeout.first_token` too).
        Its answer ends the attempt's breaker ticket as a success: a stream's first good event
        shows the provider healthy, so a half-open circuit closes then, not when a long stream
        ends. Returns the route that answered and its answer; raises when none did."""
        for route in plan.runnable():
            spec, guard = route.spec, self._guards[route.spec.provider]
            provider = self._providers[spec.provider]
            if self._must_hold(plan) and not await self._hold(plan, route):
                continue
            for retries in itertools.count():
                call = plan.begin_attempt(spec)
                traced = self.tracing.attempt(plan.call_id, spec, plan.request) if self.tracing else _UNTRACED
                try:
                    with traced, await self._admit(plan, spec, guard):
                        answer = await self._bounded(plan, spec, guard, start(provider, call), first)
                except GatewayError as err:
                    if await self._retry(plan, route, guard, err, retries):
                        continue
                    break
                return route, answer
        raise plan.exhausted()

    def _must_hold(self, plan: CallPlan) -> bool:
        """Whether a budget or quota applies to the call (most calls: none, and no await)."""
        keeper, request = self.budgets, plan.request
        return keeper is not None and keeper.applies(plan.principal, request.caller, request.tags)

    async def _hold(self, plan: CallPlan, route: Route) -> bool:
        """Reserves the call's worst case on `route` against the budgets and quotas that apply, before
        its first upstream request (again for a dearer fallback). A candidate that does not fit is
        passed over (False); the first one's refusal is the call's if none fits. A quota's refusal
        ends the call: another candidate would not fit either."""
        keeper, request = self.budgets, plan.request
        assert keeper is not None
        spec = route.spec
        await plan.count_prompts([spec])
        est = plan.estimate(spec)
        cost = est.worst_case_cost
        amount = None if cost.status is PricingStatus.UNKNOWN else cost.total
        try:
            await keeper.reserve(
                plan.call_id,
                plan.principal,
                request.caller,
                request.tags,
                model=spec.id,
                cost=amount,
                tokens=est.prompt_tokens + est.worst_case_output_tokens,
            )
        except GatewayError as err:
            if err.reason not in _PASSED_OVER:
                raise
            plan.passed_over(route, err)
            return False
        return True

    def _cache_use(self, plan: CallPlan) -> CacheUse | None:
        if self.cache is None:
            return None
        return self.cache.use(plan.request, plan.routing.candidates, plan.principal)

    async def _cached(self, plan: CallPlan, use: CacheUse | None) -> tuple[ModelSpec, CachedReply] | None:
        """The reply the cache holds for this call, and the model that gave it (one of the call's
        candidates: the key holds them), or None."""
        if use is None or not use.reads:
            return None
        assert self.cache is not None
        reply = await self.cache.lookup(use)
        if reply is None:
            return None
        spec = next((r.spec for r in plan.routes if r.spec.id == reply.model), None)
        return None if spec is None else (spec, reply)

    def _from_cache(
        self, plan: CallPlan, spec: ModelSpec, reply: CachedReply, first_token: float | None = None
    ) -> CallSummary:
        """The summary of a call answered from the cache: the reply's own usage, cost zero, and
        what the call would have cost now shown as saved."""
        assert self.cache is not None
        routing = plan.routing
        routing.selected, routing.reason, routing.cache_hit = spec, "cache_hit", True
        summary = plan.summary(
            spec, reply.usage, reply.finish_reason, reply.provider_model, reply.response_id, first_token
        )
        saved = summary.cost.total if summary.cost.status is not PricingStatus.UNKNOWN else ZERO
        self.cache.hit(saved)
        cost = Cost(
            summary.cost.status,
            source="cache",
            currency=summary.cost.currency,
            cost_per_1k_tokens=None if summary.cost.cost_per_1k_tokens is None else ZERO,
            cache_savings=saved,
        )
        return dataclasses.replace(summary, cost=cost)

    async def chat(self, request: ChatRequest, scope: CallScope) -> ChatOutcome:
        with self._tracked(scope, "Chat", request) as tracker:
            request = tracker.request = self._for_task(request)
            plan = await self._plan(request, scope, tracker.id)
            tracker.routing = plan.routing
            use = self._cache_use(plan)
            if request.dry_run:
                outcome = _dry_run(plan)  # never an upstream request (begin_attempt refuses one)
            elif (cached := await self._cached(plan, use)) is not None:
                spec, reply = cached
                outcome = ChatOutcome(
                    plan.header(spec), reply.completion(), self._from_cache(plan, spec, reply)
                )
            else:
                route, completion = await self._attempt(plan, _chat, first=False)
                spec = route.spec
                plan.succeeded(route)
                usage = completion.usage or await plan.estimated_usage(
                    spec, completion.text, completion.tool_calls
                )
                summary = await self._billed(
                    spec,
                    plan.summary(
                        spec,
                        usage,
                        completion.finish_reason,
                        completion.provider_model,
                        completion.response_id,
                    ),
                )
                outcome = ChatOutcome(plan.header(spec), completion, summary)
                if self.tracing is not None:
                    self.tracing.replied(
                        plan.call_id, completion.text, completion.tool_calls, completion.finish_reason
                    )
                if use is not None and use.writes:
                    assert self.cache is not None
                    reply = CachedReply(
                        spec.id,
                        completion.text,
                        tuple(completion.tool_calls),
                        completion.finish_reason,
                        usage,
                        completion.provider_model,
                        completion.response_id,
                    )
                    await self.cache.keep(use, reply)
            tracker.header, tracker.summary = outcome.header, outcome.summary
            return outcome

    async def chat_stream(self, request: ChatRequest, scope: CallScope) -> AsyncGenerator[GatewayEvent, None]:
        """Start, deltas as the upstream sends them, then the summary. An attempt may be retried,
        or replaced by the next candidate, only until its first event: after that the caller has
        seen output.

        A stream cut short after its start (the upstream fails, or the caller cancels) is still
        accounted: what was produced so far is counted and priced, marked estimated, and kept in
        the call's record; an upstream failure also carries it in its error's metadata."""
        with self._tracked(scope, "ChatStream", request) as tracker:
            request = tracker.request = self._for_task(request)
            plan = await self._plan(request, scope, tracker.id, stream=True)
            tracker.routing = plan.routing
            use = self._cache_use(plan)
            if request.dry_run:  # the estimate as a stream: its start and its finish, no upstream
                outcome = _dry_run(plan)
                tracker.header, tracker.summary = outcome.header, outcome.summary
                yield StreamStarted(outcome.header)
                yield StreamFinished(outcome.summary, dry_run=True)
                return
            if (cached := await self._cached(plan, use)) is not None:  # the same events, replayed
                spec, reply = cached
                tracker.header = header = plan.header(spec)
                yield StreamStarted(header)
                first_token = _perf()
                for replayed in reply.replay():
                    yield replayed
                tracker.summary = summary = self._from_cache(plan, spec, reply, first_token)
                yield StreamFinished(summary)
                return
            kept: list[TextDelta | ToolCallDelta] | None = [] if use is not None and use.writes else None
            route, (events, event) = await self._attempt(plan, _open_stream, first=True)
            spec, guard = route.spec, self._guards[route.spec.provider]
            async with aclosing(events):
                tracker.header = header = plan.header(spec)
                yield StreamStarted(header)
                output = StreamOutput()
                try:
                    while not isinstance(event, StreamDone):
                        output.add(event)
                        if kept is not None:
                            kept.append(event)
                        yield event
                        event = await self._next_event(plan, spec, guard, events)
                except BaseException as exc:
                    if plan.may_count_failure(spec.provider):
                        guard.breaker.record_failure(exc, plan.caller)
                    if isinstance(exc, GatewayError):
                        tracker.summary = await self._billed(spec, plan.cut_short(route, output, exc))
                        exc.metadata.update(tracker.summary.spent())
                    elif isinstance(exc, asyncio.CancelledError | GeneratorExit):
                        tracker.summary = self._billed_soon(spec, plan.cut_short(route, output))
                    raise
                plan.succeeded(route, output.first_token)
                usage = event.usage or await plan.estimated_usage(spec, output.text(), output.tool_calls())
                tracker.summary = summary = await self._billed(
                    spec,
                    plan.summary(
                        spec,
                        usage,
                        event.finish_reason,
                        event.provider_model,
                        event.response_id,
                        output.first_token,
                    ),
                )
                if self.tracing is not None:
                    self.tracing.replied(
                        plan.call_id, output.text(), output.tool_calls(), event.finish_reason
                    )
                if use is not None and kept is not None:
                    assert self.cache is not None
                    reply = CachedReply(
                        spec.id,
                        output.text(),
                        tuple(output.tool_calls()),
                        event.finish_reason,
                        usage,
                        event.provider_model,
                        event.response_id,
                        tuple(kept),
                    )
                    await self.cache.keep(use, reply)
                yield StreamFinished(summary)

    async def _billed(self, spec: ModelSpec, summary: CallSummary) -> CallSummary:
        """A served call's summary, charged to its provider's subscription plan if it has one."""
        meter = self.subscriptions
        if meter is None or meter.plan(spec.provider) is None:
            return summary
        return dataclasses.replace(summary, cost=await meter.charge(spec, summary.usage))

    def _billed_soon(self, spec: ModelSpec, summary: CallSummary) -> CallSummary:
        """`_billed` for a stream whose task is being cancelled: nothing can be awaited."""
        meter = self.subscriptions
        if meter is None or meter.plan(spec.provider) is None:
            return summary
        return dataclasses.replace(summary, cost=meter.charge_soon(spec, summary.usage))

    # -- provider batch APIs (a batch in provider mode) -------------------------------------------

    def batch_api(self, provider: str) -> BatchApi | None:
        """The provider's batch API, if the gateway uses one for it."""
        adapter = self._providers.get(provider)
        return adapter.batch_api() if isinstance(adapter, BatchCapable) else None

    def batch_call(self, request: ChatRequest, principal: Principal) -> tuple[BatchApi, UpstreamCall]:
        """A provider-mode batch item's call, through its provider's batch API: the one model the
        request names (no "auto", group or fallbacks: the provider answers within its window or
        the item fails), fitted to the model as a live call is. Raises what a live call would for
        a bad request, and for a model whose provider has no batch API the gateway uses."""
        self._check_options(request)
        for name, given in (("fallback_models", request.fallback_models), ("routing", request.routing)):
            if given:
                raise invalid_field(name, "a batch in provider mode runs each item on its one model")
        if request.dry_run:
            raise invalid_field("dry_run", "a batch in provider mode sends every item")
        field = "task_type" if request.task_type and not request.model else "model"
        # A task's first model serves; its others would be fallbacks, which provider mode has none of.
        request = dataclasses.replace(self._for_task(request), fallback_models=())
        if request.model == AUTO or self._router.group(request.model) is not None:
            raise invalid_field(field, "a batch in provider mode needs one model, not 'auto' or a group")
        spec = self._router.resolve(request.model, field, principal)[0].spec
        api = self.batch_api(spec.provider)
        if api is None:
            raise invalid_field(
                "model",
                f"provider {spec.provider!r} has no batch API the gateway uses (provider mode serves "
                "OpenAI's and Anthropic's models)",
            )
        dropped: list[str] = []
        call = UpstreamCall(
            fit_request(request, spec, dropped),
            spec,
            request.provider_options.get(spec.provider, {}),
            dropped,
        )
        why = api.refuses(call)
        if why:
            raise invalid_field("model", why)
        return api, call

    async def batch_worst_case(self, call: UpstreamCall, factor: Decimal) -> Decimal | None:
        """The most `call` can cost at its provider's batch price (None: its price is unknown)."""
        prompt = await count_prompt(call.model.tokenizer, call.request)
        worst = estimate(call.request, call.model, prompt).worst_case_cost
        return None if worst.status is PricingStatus.UNKNOWN else worst.total * factor

    async def batch_answered(
        self,
        call: UpstreamCall,
        answer: Completion | GatewayError,
        principal: Principal,
        *,
        request_id: str,
        submitted_at: float,
        factor: Decimal,
    ) -> ChatOutcome:
        """A provider-mode item's answer, priced at the batch price (`factor` of the list price),
        told to the observers as a call of its own (ledger, budgets, metrics); raises its error."""
        now = time.time()
        spec = call.model
        tracker = self.open_call(
            "Chat",
            request_id,
            principal,
            _perf() - (now - submitted_at),
            door="batch",
            started_at=submitted_at,
        )
        tracker.deferred = True
        tracker.request = call.request
        routing = RoutingInfo(reason="provider_batch", candidates=[spec.id])
        tracker.routing = routing
        waited = max(now - submitted_at, 0.0)
        if isinstance(answer, GatewayError):
            routing.attempts.append(
                Attempt(spec.provider, spec.id, answer.code.value, answer.reason, answer.message, waited)
            )
            tracker.fail(answer)
            tracker.end()
            raise answer
        routing.attempts.append(Attempt(spec.provider, spec.id, "OK", "", "", waited))
        routing.selected = spec
        usage = answer.usage
        if usage is None:
            prompt = await count_prompt(spec.tokenizer, call.request)
            completion = await count_completion(spec.tokenizer, answer.text, answer.tool_calls)
            usage = Usage(prompt.tokens, completion, estimated=True)
        source = f"{spec.price.source}; batch price {factor:%}"
        summary = CallSummary(
            finish_reason=answer.finish_reason,
            usage=usage,
            cost=list_price(spec, usage).scaled(factor, source),
            latency=Latency(total=waited, time_to_first_byte=None, time_to_first_token=None, upstream=waited),
            routing=routing,
            provider_model=answer.provider_model,
            provider_response_id=answer.response_id,
            dropped_parameters=tuple(call.dropped),
        )
        header = CallHeader(tracker.id, request_id, spec, now)
        tracker.header, tracker.summary = header, summary
        tracker.end("OK")
        return ChatOutcome(header, answer, summary)

    async def estimate_cost(
        self,
        request: ChatRequest,
        expected_output: int | None,
        candidates: Sequence[str],
        principal: Principal = ANONYMOUS,
    ) -> list[Estimate]:
        by_task = request.task_type and not request.model
        request = self._for_task(request, "request.")
        if candidates:
            routes = [
                route
                for i, model in enumerate(candidates)
                for route in self._router.resolve(model, f"candidate_models[{i}]", principal)
            ]
        elif by_task:  # every model the task may use
            routes = self._router.plan(request.model, request.fallback_models, "request.model", principal)
        else:
            routes = self._router.resolve(request.model, "request.model", principal)
        unique = {route.spec.id: route.spec for route in routes}
        counts = await _prompt_counts(request, unique.values())
        return ranked(
            [
                estimate(request, spec, counts[spec.tokenizer], expected_output, self._price)
                for spec in unique.values()
            ]
        )

    def list_models(
        self, provider: str = "", capabilities: Sequence[str] = (), principal: Principal = ANONYMOUS
    ) -> list[ModelSpec]:
        """The listed models of `provider` (any, when "") with every one of `capabilities` that
        `principal` may use."""
        return [
            spec
            for spec in self._catalog.listed()
            if (not provider or spec.provider == provider)
            and all(spec.supports(c) for c in capabilities)
            and principal.may_use(spec.id)
        ]

    def list_groups(self, provider: str = "", principal: Principal = ANONYMOUS) -> list[GroupView]:
        """The model groups with a deployment `principal` may use (of `provider`, when given),
        showing only such deployments."""
        views = []
        for name, group in sorted(self._router.groups.items()):
            shown = [
                (d, self._catalog.get(*d.model.split(":", 1)))
                for d in group.deployments
                if principal.may_use(d.model) and (not provider or d.model.startswith(f"{provider}:"))
            ]
            if shown:
                views.append(GroupView(name, group.policy, shown))
        return views


@dataclasses.dataclass(frozen=True, slots=True)
class GroupView:
    """A model group as ListModels shows it: its deployments, each with its model where its
    provider is enabled."""

    name: str
    policy: str
    deployments: list[tuple[DeploymentConfig, ModelSpec | None]]


async def _prompt_counts(request: ChatRequest, specs: Iterable[ModelSpec]) -> dict[str, TokenCount]:
    """The request's prompt counted once per tokenizer among `specs`."""
    counts: dict[str, TokenCount] = {}
    for spec in specs:
        if spec.tokenizer not in counts:
            counts[spec.tokenizer] = await count_prompt(spec.tokenizer, request)
    return counts


async def _take_room(plan: CallPlan, spec: ModelSpec, limiter: Limiter) -> None:
    """Waits for `limiter` to have room for a call to `spec` (its tokens counted only when the
    limiter has a tokens-per-minute bucket), or raises its refusal."""
    tokens = await plan.call_tokens(spec) if limiter.counts_tokens else 0
    await limiter.acquire(tokens, plan.deadline)


def _chat(provider: Provider, call: UpstreamCall) -> Awaitable[Completion]:
    return provider.chat(call)


async def _open_stream(
    provider: Provider, call: UpstreamCall
) -> tuple[AsyncGenerator[StreamEvent, None], StreamEvent]:
    """The call's upstream stream and its first event; the stream is closed if that never comes."""
    events = provider.stream(call)
    try:
        return events, await anext(events)
    except BaseException:
        await events.aclose()
        raise


def _dry_run(plan: CallPlan) -> ChatOutcome:
    """The estimate as the reply: the first candidate within budget, expected usage, no call."""
    route = plan.runnable()[0]
    plan.fit(route.spec)  # a dry run refuses what the real call would refuse
    est = plan.estimate(route.spec)
    plan.routing.selected = route.spec
    usage = Usage(est.prompt_tokens, est.expected_output_tokens, estimated=True)
    summary = plan.summary(route.spec, usage, finish_reason=None)
    return ChatOutcome(plan.header(route.spec), Completion(text=""), summary, dry_run=True)
