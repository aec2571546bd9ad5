"""The state of one call: its candidates, budget checks, attempts, timings and accounting."""

from __future__ import annotations

import time
from collections.abc import Sequence

from llm_gateway.catalog import ModelSpec
from llm_gateway.config.schema import TimeoutConfig
from llm_gateway.domain.errors import Code, GatewayError, deadline_exceeded
from llm_gateway.domain.messages import ChatRequest, ToolCall
from llm_gateway.domain.results import FinishReason, TextDelta, ToolCallDelta, Usage
from llm_gateway.gateway.balance import InFlight
from llm_gateway.gateway.breaker import TRIPPING_REASONS
from llm_gateway.gateway.estimate import Estimate, Pricer, budget_error, estimate, list_price
from llm_gateway.gateway.fit import fit_request
from llm_gateway.gateway.outcome import Attempt, CallHeader, CallSummary, Latency, RoutingInfo
from llm_gateway.gateway.scope import CallScope
from llm_gateway.providers.base import UpstreamCall
from llm_gateway.providers.http import UpstreamTiming, current_timing
from llm_gateway.router import Route
from llm_gateway.tokens import TokenCount, count_completion, count_prompt, ready_counter

_perf = time.perf_counter


class StreamOutput:
    """What a stream has sent so far, to count when the provider reports no usage."""

    __slots__ = ("_calls", "_text", "first_token")

    def __init__(self) -> None:
        self.first_token: float | None = None
        self._text: list[str] = []
        self._calls: dict[int, list[str]] = {}  # index -> [name, arguments]

    def add(self, event: TextDelta | ToolCallDelta) -> None:
        if self.first_token is None:
            self.first_token = time.perf_counter()
        if isinstance(event, TextDelta):
            self._text.append(event.text)
        else:
            call = self._calls.setdefault(event.index, ["", ""])
            call[0] += event.name
            call[1] += event.arguments

    def text(self) -> str:
        return "".join(self._text)

    def tool_calls(self) -> list[ToolCall]:
        return [ToolCall("", name, arguments) for name, arguments in self._calls.values()]


class CallPlan:
    def __init__(
        self,
        routes: list[Route],
        request: ChatRequest,
        scope: CallScope,
        call_id: str,
        in_flight: InFlight | None = None,
        price: Pricer = list_price,
    ) -> None:
        self.call_id = call_id  # the reply's id, the same as the call's record
        self._price = price
        self._in_flight = in_flight
        self.started = _perf() if scope.received_at is None else scope.received_at
        self.created = time.time()
        self.request = request
        self.request_id = scope.request_id
        self.deadline = scope.deadline
        self.principal = scope.principal
        self.batch = scope.batch
        self.routes = routes
        self.routing = RoutingInfo(reason=routes[0].reason, candidates=[r.spec.id for r in routes])
        self.upstream = 0.0  # seconds spent in upstream attempts
        self._timing = UpstreamTiming()
        self._dropped: list[str] = []  # the current attempt's dropped settings (LENIENT policy)
        self._attempt_started = 0.0
        self._attempt_at = 0.0  # time.monotonic() when the current attempt was admitted
        self._admitted = False
        self._last_error: GatewayError | None = None
        self._passed_over: GatewayError | None = None  # the first candidate a budget refused
        self._failures: dict[str, GatewayError] = {}  # model id -> its last failed attempt's error
        self._counted: set[str] = set()  # providers this call has had a failure counted against
        self._estimates: dict[str, Estimate] = {}
        self._prompts: dict[str, TokenCount] = {}
        # Who the call is for, as the circuit breakers tell callers apart: the gateway key; with
        # authentication off, what the caller says of itself.
        caller = request.caller
        self.caller = scope.principal.key or caller.tenant or caller.project or caller.user

    def prompt_tokens(self, spec: ModelSpec) -> TokenCount:
        """The prompt's size for `spec`, as `count_prompts` counted it; uncounted (a stream cut
        short), it is counted now with what is loaded, never waiting for a tokenizer."""
        found = self._prompts.get(spec.tokenizer)
        return found if found is not None else ready_counter(spec.tokenizer).prompt(self.request)

    async def count_prompts(self, specs: Sequence[ModelSpec]) -> None:
        """Counts the prompt for each model's tokenizer ahead of `prompt_tokens`."""
        for spec in specs:
            if spec.tokenizer not in self._prompts:
                self._prompts[spec.tokenizer] = await count_prompt(spec.tokenizer, self.request)

    async def prepare(self) -> None:
        """Counts what the budget check or a dry run will need before any candidate runs."""
        if self.request.max_cost is not None:
            await self.count_prompts([route.spec for route in self.routes])
        elif self.request.dry_run:
            await self.count_prompts([self.routes[0].spec])

    def estimate(self, spec: ModelSpec) -> Estimate:
        """The model's cost estimate for this request, computed once per model."""
        found = self._estimates.get(spec.id)
        if found is None:
            found = self._estimates[spec.id] = estimate(
                self.request, spec, self.prompt_tokens(spec), price=self._price
            )
        return found

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
            self._record(route.spec, err.code, err.reason, err.message, 0.0)
        if not allowed:
            raise budget_error(self.estimate(self.routes[0].spec), budget)
        return allowed

    def another_deployment_after(self, route: Route) -> bool:
        """Whether `route` is a group's deployment with another of the group after it."""
        if route.reason != "group":
            return False
        later = self.routes[self.routes.index(route) + 1 :]
        return any(r.reason == "group" for r in later)

    def fit(self, spec: ModelSpec) -> ChatRequest:
        """The request as `spec` can take it (`gateway/fit.py`); what LENIENT left out is reported."""
        self._dropped = []
        return fit_request(self.request, spec, self._dropped)

    def begin_attempt(self, spec: ModelSpec) -> UpstreamCall:
        """The request fitted to the model, as the attempt's call; starts timing the attempt (the
        shared HTTP client's hook marks its first byte)."""
        if self.request.dry_run:
            raise AssertionError("a dry run never reaches a provider")
        request = self.fit(spec)
        if self._in_flight is not None:
            self._in_flight.enter(self.call_id, spec.id)
        self._timing = UpstreamTiming()
        current_timing.set(self._timing)
        self._attempt_started = _perf()
        self._admitted = False
        options = self.request.provider_options.get(spec.provider, {})
        return UpstreamCall(request, spec, options, self._dropped)

    def admitted(self) -> None:
        """The attempt got past the circuit breaker and rate limits: its upstream time starts now
        (waiting in line for capacity is the gateway's time, not the provider's)."""
        self._attempt_started = _perf()
        self._attempt_at = time.monotonic()
        self._admitted = True

    async def call_tokens(self, spec: ModelSpec) -> int:
        """The tokens a tokens-per-minute limit takes for a call to `spec`: the prompt and, as
        providers count it, the caller's `max_tokens`; without one, the expected output."""
        await self.count_prompts([spec])
        est = self.estimate(spec)
        output = self.request.generation.max_tokens or est.expected_output_tokens
        return est.prompt_tokens + output

    def time_left(self) -> float | None:
        """Seconds until the caller's deadline; None without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()

    def attempt_bound(self, timeouts: TimeoutConfig, first: bool) -> tuple[float, bool]:
        """When the current attempt's next wait must end (time.monotonic()): its `total` timeout,
        for a stream's first event also `first_token`, and the caller's deadline. The flag says
        whether the caller's deadline is the bound."""
        when = self._attempt_at + (min(timeouts.total, timeouts.first_token) if first else timeouts.total)
        if self.deadline is not None and self.deadline <= when:
            return self.deadline, True
        return when, False

    def total_left(self, timeouts: TimeoutConfig) -> float:
        """Seconds until the current attempt's `total` timeout."""
        return self._attempt_at + timeouts.total - time.monotonic()

    def timed_out(
        self, spec: ModelSpec, by_caller: bool, first: bool, timeouts: TimeoutConfig
    ) -> GatewayError:
        if by_caller:
            return deadline_exceeded()
        if first and timeouts.first_token < timeouts.total:
            what = f"sent no first token within {timeouts.first_token:g} s (timeout.first_token)"
        else:
            what = f"did not finish within {timeouts.total:g} s (timeout.total)"
        return GatewayError(
            f"provider {spec.provider!r} {what}",
            code=Code.DEADLINE_EXCEEDED,
            reason="UPSTREAM_TIMEOUT",
            metadata={"provider": spec.provider, "model": spec.id},
            retryable=True,
        )

    def failed(self, route: Route, err: GatewayError) -> GatewayError | None:
        """Records a failed attempt; re-raises unless another candidate may succeed. Returns the
        error of the same model's previous failed attempt in this call, if any."""
        self._record(route.spec, err.code, err.reason, err.message, self._end_attempt())
        if err.reason in TRIPPING_REASONS:
            self._counted.add(route.spec.provider)
        if not err.retryable:
            raise err
        self._last_error = err
        previous = self._failures.get(route.spec.id)
        self._failures[route.spec.id] = err
        return previous

    def passed_over(self, route: Route, err: GatewayError) -> None:
        """Records a candidate refused before any upstream request (a budget it does not fit)."""
        self._record(route.spec, err.code, err.reason, err.message, 0.0)
        if self._passed_over is None:
            self._passed_over = err

    def may_count_failure(self, provider: str) -> bool:
        """Whether a failure of this call may still count against `provider`'s circuit: a call
        weighs at most one failure, however often it is retried."""
        return provider not in self._counted

    def succeeded(self, route: Route, first_token: float | None = None) -> float:
        """Records the serving attempt (with a stream's first token, time.perf_counter()); returns
        how long it took, in seconds."""
        started = self._attempt_started
        elapsed = self._end_attempt()
        self._record(
            route.spec, "OK", "", "", elapsed, None if first_token is None else first_token - started
        )
        self.routing.selected = route.spec
        if route.spec.id != self.routes[0].spec.id:
            self.routing.reason = "fallback"
        return elapsed

    @property
    def attempt_started(self) -> float:
        """time.perf_counter() when the current attempt began."""
        return self._attempt_started

    def cut_short(self, route: Route, output: StreamOutput, err: GatewayError | None = None) -> CallSummary:
        """The summary of a stream that ended before its provider's final event, by an upstream
        failure (`err`) or the caller cancelling: what was produced so far, counted and priced,
        marked estimated (a provider reports usage only at the end)."""
        if err is None:
            self._record(route.spec, Code.CANCELLED, "", "the caller cancelled", self._end_attempt())
        else:
            self._record(route.spec, err.code, err.reason, err.message, self._end_attempt())
        self.routing.selected = route.spec
        # Counted here on the event loop: awaiting a worker thread is not possible while the
        # task is being cancelled.
        spec = route.spec
        completion = ready_counter(spec.tokenizer).completion(output.text(), output.tool_calls())
        usage = Usage(self.prompt_tokens(spec).tokens, completion, estimated=True)
        return self.summary(spec, usage, None, first_token=output.first_token)

    def exhausted(self) -> GatewayError:
        """The error to raise when every runnable candidate failed with a retryable error."""
        err = self._last_error
        if err is None:  # no candidate went upstream: each was refused by a budget
            assert self._passed_over is not None, "runnable() yields at least one route, each recorded"
            return self._passed_over
        err.metadata["attempts"] = "; ".join(f"{a.model} {a.code}" for a in self.routing.attempts)
        return err

    def header(self, spec: ModelSpec) -> CallHeader:
        return CallHeader(self.call_id, self.request_id, spec, self.created)

    async def estimated_usage(self, spec: ModelSpec, text: str, tool_calls: Sequence[ToolCall]) -> Usage:
        """Usage the provider did not report, counted by the gateway and marked as estimated."""
        await self.count_prompts([spec])
        completion = await count_completion(spec.tokenizer, text, tool_calls)
        return Usage(self.prompt_tokens(spec).tokens, completion, estimated=True)

    def summary(
        self,
        spec: ModelSpec,
        usage: Usage,
        finish_reason: FinishReason | None,
        provider_model: str = "",
        provider_response_id: str = "",
        first_token: float | None = None,
    ) -> CallSummary:
        first_byte = self._timing.first_byte
        return CallSummary(
            finish_reason=finish_reason,
            usage=usage,
            cost=self._price(spec, usage),
            latency=Latency(
                total=_perf() - self.started,
                time_to_first_byte=None if first_byte is None else first_byte - self.started,
                time_to_first_token=None if first_token is None else first_token - self.started,
                upstream=self.upstream,
            ),
            routing=self.routing,
            provider_model=provider_model,
            provider_response_id=provider_response_id,
            dropped_parameters=tuple(self._dropped),
        )

    def _end_attempt(self) -> float:
        elapsed = _perf() - self._attempt_started
        if self._admitted:
            self.upstream += elapsed
        return elapsed

    def _record(
        self,
        spec: ModelSpec,
        code: str,
        reason: str,
        message: str,
        elapsed: float,
        first_token: float | None = None,
    ) -> None:
        attempt = Attempt(spec.provider, spec.id, str(code), reason, message, elapsed, first_token)
        self.routing.attempts.append(attempt)
