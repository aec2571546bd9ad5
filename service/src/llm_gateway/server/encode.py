"""Domain results to protobuf replies. Money leaves as exact decimal strings."""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf import duration_pb2, timestamp_pb2

from llm_gateway.catalog import Catalog, ModelSpec
from llm_gateway.domain.results import Completion, FinishReason, TextDelta, ToolCallDelta, Usage
from llm_gateway.gateway import Attempt, CallHeader, CallSummary, ChatOutcome, Estimate, Latency, RoutingInfo
from llm_gateway.gateway.breaker import CircuitState, ProviderBreaker
from llm_gateway.gateway.core import GroupView
from llm_gateway.gateway.live import ModelLatency
from llm_gateway.gateway.subscriptions import PlanStanding
from llm_gateway.pricing import Cost, PriceSheet, PricingStatus, format_decimal
from llm_gateway.pricing.sheet import PlanCharge
from llm_gateway.tokens import CountMethod
from llmgateway.v1 import accounting_pb2, catalog_pb2, chat_pb2, content_pb2

_FINISH = {
    FinishReason.STOP: chat_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: chat_pb2.FINISH_REASON_LENGTH,
    FinishReason.TOOL_CALLS: chat_pb2.FINISH_REASON_TOOL_CALLS,
    FinishReason.CONTENT_FILTER: chat_pb2.FINISH_REASON_CONTENT_FILTER,
    FinishReason.OTHER: chat_pb2.FINISH_REASON_OTHER,
}
_PRICING = {
    PricingStatus.PRICED: accounting_pb2.PRICING_STATUS_PRICED,
    PricingStatus.FREE: accounting_pb2.PRICING_STATUS_FREE,
    PricingStatus.UNKNOWN: accounting_pb2.PRICING_STATUS_UNKNOWN,
}
_BILLING = {
    "free": catalog_pb2.BILLING_MODEL_FREE,
    "per_token": catalog_pb2.BILLING_MODEL_PER_TOKEN,
    "per_request": catalog_pb2.BILLING_MODEL_PER_REQUEST,
    "hybrid": catalog_pb2.BILLING_MODEL_HYBRID,
    "subscription": catalog_pb2.BILLING_MODEL_SUBSCRIPTION,
}
_CIRCUIT = {
    CircuitState.CLOSED: catalog_pb2.CIRCUIT_STATE_CLOSED,
    CircuitState.OPEN: catalog_pb2.CIRCUIT_STATE_OPEN,
    CircuitState.HALF_OPEN: catalog_pb2.CIRCUIT_STATE_HALF_OPEN,
}
CAPABILITIES = {
    "streaming": catalog_pb2.CAPABILITY_STREAMING,
    "tools": catalog_pb2.CAPABILITY_TOOLS,
    "vision": catalog_pb2.CAPABILITY_VISION,
    "json_schema": catalog_pb2.CAPABILITY_JSON_SCHEMA,
    "reasoning": catalog_pb2.CAPABILITY_REASONING,
    "json_object": catalog_pb2.CAPABILITY_JSON_OBJECT,
}


# Replies are built in place: a sub-message passed to a constructor is copied into its parent, and
# a reply has five of them (bench/NOTES.md, "Encoding the reply").


def chat_response(outcome: ChatOutcome) -> chat_pb2.ChatResponse:
    header, summary = outcome.header, outcome.summary
    reply = chat_pb2.ChatResponse(
        id=header.id,
        request_id=header.request_id,
        model=header.model.id,
        provider=header.model.provider,
        provider_model=summary.provider_model,
        provider_response_id=summary.provider_response_id,
        dry_run=outcome.dry_run,
        dropped_parameters=summary.dropped_parameters,
    )
    if not outcome.dry_run:
        _assistant_into(reply.message, outcome.completion)
    _usage_into(reply.usage, summary.usage)
    _cost_into(reply.cost, summary.cost)
    _latency_into(reply.latency, summary.latency)
    _routing_into(reply.routing, summary.routing)
    _time_into(reply.create_time, header.created_at)
    if summary.finish_reason is not None:
        reply.finish_reason = _FINISH[summary.finish_reason]
    return reply


def stream_start(header: CallHeader) -> chat_pb2.ChatStreamResponse:
    reply = chat_pb2.ChatStreamResponse()
    start = reply.start
    start.id = header.id
    start.request_id = header.request_id
    start.model = header.model.id
    start.provider = header.model.provider
    _time_into(start.create_time, header.created_at)
    return reply


def stream_delta(event: TextDelta | ToolCallDelta) -> chat_pb2.ChatStreamResponse:
    if isinstance(event, TextDelta):
        return chat_pb2.ChatStreamResponse(text_delta=chat_pb2.TextDelta(text=event.text))
    return chat_pb2.ChatStreamResponse(
        tool_call_delta=chat_pb2.ToolCallDelta(
            index=event.index, id=event.id, name=event.name, arguments=event.arguments
        )
    )


def stream_finish(summary: CallSummary, dry_run: bool = False) -> chat_pb2.ChatStreamResponse:
    # Streams always finish with a reason; only dry runs have none.
    if dry_run:
        reason = chat_pb2.FINISH_REASON_UNSPECIFIED
    else:
        reason = _FINISH[summary.finish_reason or FinishReason.OTHER]
    reply = chat_pb2.ChatStreamResponse()
    finish = reply.finish
    finish.finish_reason = reason
    finish.provider_model = summary.provider_model
    finish.provider_response_id = summary.provider_response_id
    finish.dropped_parameters.extend(summary.dropped_parameters)
    finish.dry_run = dry_run
    _usage_into(finish.usage, summary.usage)
    _cost_into(finish.cost, summary.cost)
    _latency_into(finish.latency, summary.latency)
    _routing_into(finish.routing, summary.routing)
    return reply


def _assistant_into(message: content_pb2.Message, completion: Completion) -> None:
    message.role = content_pb2.ROLE_ASSISTANT
    if completion.text:
        message.content.add(text=completion.text)
    for call in completion.tool_calls:
        message.tool_calls.add(id=call.id, name=call.name, arguments=call.arguments)


def usage(u: Usage) -> accounting_pb2.Usage:
    out = accounting_pb2.Usage()
    _usage_into(out, u)
    return out


def _usage_into(out: accounting_pb2.Usage, u: Usage) -> None:
    out.prompt_tokens = u.prompt_tokens
    out.completion_tokens = u.completion_tokens
    out.total_tokens = u.total_tokens
    out.cache_read_tokens = u.cache_read_tokens
    out.cache_write_tokens = u.cache_write_tokens
    out.reasoning_tokens = u.reasoning_tokens
    out.estimated = u.estimated
    out.cache_write_1h_tokens = u.cache_write_1h_tokens


def cost(c: Cost) -> accounting_pb2.Cost:
    out = accounting_pb2.Cost()
    _cost_into(out, c)
    return out


def _cost_into(out: accounting_pb2.Cost, c: Cost) -> None:
    out.currency = c.currency
    out.status = _PRICING[c.status]
    out.price_source = c.source
    out.estimated = c.estimated
    if c.status is PricingStatus.UNKNOWN:
        return
    out.input = format_decimal(c.input)
    out.cached_input = format_decimal(c.cached_input)
    out.cache_write = format_decimal(c.cache_write)
    out.cache_write_1h = format_decimal(c.cache_write_1h)
    out.output = format_decimal(c.output)
    out.request_fee = format_decimal(c.request_fee)
    out.total = format_decimal(c.total)
    out.cache_savings = format_decimal(c.cache_savings)
    if c.cost_per_1k_tokens is not None:
        out.cost_per_1k_tokens = format_decimal(c.cost_per_1k_tokens)
    if c.plan is not None:
        _charge_into(out.subscription, c.plan)


def _charge_into(out: accounting_pb2.SubscriptionCharge, charge: PlanCharge) -> None:
    out.plan = charge.plan
    out.period_start.FromDatetime(charge.period_start)
    out.tokens_before = charge.before
    out.included_tokens = charge.included
    out.overage_tokens = charge.overage


def latency(lat: Latency) -> accounting_pb2.Latency:
    out = accounting_pb2.Latency()
    _latency_into(out, lat)
    return out


def _latency_into(out: accounting_pb2.Latency, lat: Latency) -> None:
    _duration_into(out.total, lat.total)
    _duration_into(out.upstream, lat.upstream)
    _duration_into(out.gateway_overhead, lat.gateway_overhead)
    if lat.time_to_first_byte is not None:
        _duration_into(out.time_to_first_byte, lat.time_to_first_byte)
    if lat.time_to_first_token is not None:
        _duration_into(out.time_to_first_token, lat.time_to_first_token)


def routing(r: RoutingInfo) -> accounting_pb2.Routing:
    out = accounting_pb2.Routing()
    _routing_into(out, r)
    return out


def _routing_into(out: accounting_pb2.Routing, r: RoutingInfo) -> None:
    selected = r.selected
    if selected is not None:
        out.selected_provider = selected.provider
        out.selected_model = selected.id
    out.reason = r.reason
    out.candidates.extend(r.candidates)
    for a in r.attempts:
        _attempt_into(out.attempts.add(), a)
    out.fallback_used = r.fallback_used
    out.cache_hit = r.cache_hit
    for c in r.considered:
        considered = out.considered.add(model=c.model, passed_over=c.passed_over, score=c.score)
        if c.expected_cost is not None:
            considered.expected_cost = format_decimal(c.expected_cost)
        if c.cost_per_1k_tokens is not None:
            considered.cost_per_1k_tokens = format_decimal(c.cost_per_1k_tokens)
        if c.latency is not None:
            _duration_into(considered.latency, c.latency)
        if c.quality is not None:
            considered.quality = c.quality
        if c.in_flight is not None:
            considered.in_flight = c.in_flight
        if c.weight is not None:
            considered.weight = c.weight


def attempt(a: Attempt) -> accounting_pb2.Attempt:
    out = accounting_pb2.Attempt()
    _attempt_into(out, a)
    return out


def _attempt_into(out: accounting_pb2.Attempt, a: Attempt) -> None:
    out.provider = a.provider
    out.model = a.model
    out.code = a.code
    out.reason = a.reason
    out.message = a.message
    _duration_into(out.latency, a.latency)


def model(
    spec: ModelSpec, catalog: Catalog, state: catalog_pb2.ModelState, plan: PlanStanding | None = None
) -> catalog_pb2.Model:
    costs = catalog.cost_capabilities(spec.provider)
    # A plan's models show what tokens past its quota cost.
    prices = pricing(spec.price if plan is None else plan.plan.prices(spec.price))
    if plan is not None:
        prices.billing_model = catalog_pb2.BILLING_MODEL_SUBSCRIPTION
        prices.subscription.CopyFrom(subscription_plan(plan))
    return catalog_pb2.Model(
        id=spec.id,
        provider=spec.provider,
        name=spec.name,
        display_name=spec.display_name,
        aliases=catalog.aliases_of(spec.id),
        groups=catalog.groups_of(spec.id),
        context_window=spec.context_window or 0,
        max_output_tokens=spec.max_output_tokens or 0,
        capabilities=sorted(CAPABILITIES[c] for c in spec.capabilities or ()),
        pricing=prices,
        state=state,
        cost_capabilities=catalog_pb2.CostCapabilities(
            tracks_tokens=costs.tracks_tokens,
            token_caching=costs.token_caching,
            request_fees=costs.request_fees,
            billing_model=_BILLING[costs.billing_model.value],
        ),
    )


def subscription_plan(standing: PlanStanding) -> catalog_pb2.SubscriptionPlan:
    plan = standing.plan
    out = catalog_pb2.SubscriptionPlan(
        fee=format_decimal(plan.fee),
        period=plan.period.value,
        included_tokens=plan.included_tokens or 0,
        used_tokens=standing.tokens,
        calls=standing.calls,
    )
    out.period_start.FromDatetime(standing.period.start)
    out.period_end.FromDatetime(standing.period.end)
    return out


def model_state(latency: ModelLatency, breaker: ProviderBreaker, in_flight: int) -> catalog_pb2.ModelState:
    state = catalog_pb2.ModelState(
        circuit_state=_CIRCUIT[breaker.state],
        available=breaker.available,
        recent_calls=latency.recent_calls,
        in_flight=in_flight,
    )
    if latency.latency_p50 is not None:
        state.latency_p50.CopyFrom(duration(latency.latency_p50))
    if latency.time_to_first_token_p50 is not None:
        state.time_to_first_token_p50.CopyFrom(duration(latency.time_to_first_token_p50))
    return state


_POLICIES = {
    "weighted": catalog_pb2.LOAD_BALANCING_POLICY_WEIGHTED,
    "least_busy": catalog_pb2.LOAD_BALANCING_POLICY_LEAST_BUSY,
    "latency": catalog_pb2.LOAD_BALANCING_POLICY_LATENCY,
}


def model_group(
    group: GroupView, state: Callable[[ModelSpec], catalog_pb2.ModelState]
) -> catalog_pb2.ModelGroup:
    out = catalog_pb2.ModelGroup(name=group.name, policy=_POLICIES[group.policy])
    for deployment, spec in group.deployments:
        enabled = spec is not None
        shown = out.deployments.add(model=deployment.model, weight=deployment.weight, enabled=enabled)
        if spec is not None:
            shown.state.CopyFrom(state(spec))
    return out


def pricing(sheet: PriceSheet) -> catalog_pb2.ModelPricing:
    out = catalog_pb2.ModelPricing(
        currency=sheet.currency,
        status=_PRICING[sheet.status],
        price_source=sheet.source,
        tiered=sheet.tiered,
    )
    billing = sheet.billing_model
    if billing is not None:
        out.billing_model = _BILLING[billing.value]
    if sheet.status is PricingStatus.FREE:
        out.input_per_million = out.output_per_million = out.per_request = "0"
        return out
    for field, rate in (
        ("input_per_million", sheet.input),
        ("cached_input_per_million", sheet.cached_input),
        ("cache_write_per_million", sheet.cache_write),
        ("cache_write_1h_per_million", sheet.cache_write_1h),
        ("output_per_million", sheet.output),
    ):
        if rate is not None:
            setattr(out, field, format_decimal(rate.base))
    if sheet.status is PricingStatus.PRICED:
        out.per_request = format_decimal(sheet.per_request)
    return out


_COUNT_METHOD = {
    CountMethod.EXACT: catalog_pb2.TOKEN_COUNT_METHOD_EXACT,
    CountMethod.PROVIDER: catalog_pb2.TOKEN_COUNT_METHOD_PROVIDER,
    CountMethod.APPROXIMATE: catalog_pb2.TOKEN_COUNT_METHOD_APPROXIMATE,
}


def estimate(e: Estimate) -> catalog_pb2.CostEstimate:
    return catalog_pb2.CostEstimate(
        model=e.model.id,
        provider=e.model.provider,
        prompt_tokens=e.prompt_tokens,
        token_count_method=_COUNT_METHOD[e.method],
        expected_output_tokens=e.expected_output_tokens,
        worst_case_output_tokens=e.worst_case_output_tokens,
        expected_cost=cost(e.expected_cost),
        worst_case_cost=cost(e.worst_case_cost),
        fits_context_window=e.fits_context_window,
        within_budget=e.within_budget,
    )


def duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    _duration_into(out, seconds)
    return out


def _duration_into(out: duration_pb2.Duration, seconds: float) -> None:
    out.seconds, out.nanos = divmod(round(seconds * 1e9), 1_000_000_000)


def timestamp(unix: float) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    _time_into(out, unix)
    return out


def _time_into(out: timestamp_pb2.Timestamp, unix: float) -> None:
    out.seconds, out.nanos = divmod(round(unix * 1e9), 1_000_000_000)
