"""The gateway's answers in OpenAI's Chat Completions shapes: a `chat.completion`, the
`chat.completion.chunk` events of a stream, and errors, each with the seed documents' extensions
beside the standard fields (`provider`, `cost`, `latency`, `routing`). Money is exact decimal text;
latencies are milliseconds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.domain.results import FinishReason, TextDelta, ToolCallDelta, Usage
from llm_gateway.gateway.outcome import CallHeader, CallSummary, ChatOutcome
from llm_gateway.gateway.strategy import Considered
from llm_gateway.pricing import Cost, PricingStatus, format_decimal
from llm_gateway.web.fields import openai_param

# OpenAI has no "other": a provider's unmapped stop reason reads as a plain stop.
_FINISH = {
    FinishReason.STOP: "stop",
    FinishReason.LENGTH: "length",
    FinishReason.TOOL_CALLS: "tool_calls",
    FinishReason.CONTENT_FILTER: "content_filter",
    FinishReason.OTHER: "stop",
}

# The HTTP status and OpenAI error type of each canonical code (docs/errors.md).
STATUS: dict[Code, tuple[int, str]] = {
    Code.INVALID_ARGUMENT: (400, "invalid_request_error"),
    Code.UNAUTHENTICATED: (401, "authentication_error"),
    Code.PERMISSION_DENIED: (403, "permission_error"),
    Code.NOT_FOUND: (404, "not_found_error"),
    Code.ALREADY_EXISTS: (409, "conflict_error"),
    Code.FAILED_PRECONDITION: (400, "invalid_request_error"),
    Code.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    Code.CANCELLED: (499, "cancelled"),
    Code.DEADLINE_EXCEEDED: (504, "timeout_error"),
    Code.UNIMPLEMENTED: (501, "not_implemented_error"),
    Code.UNAVAILABLE: (503, "service_unavailable_error"),
    Code.INTERNAL: (500, "internal_error"),
}


@dataclass(frozen=True, slots=True)
class Include:
    """The seed documents' `response` flags: which extensions a reply carries."""

    usage: bool = True
    cost: bool = True
    latency: bool = True
    model_info: bool = False


EVERYTHING = Include()


def completion(
    outcome: ChatOutcome, dropped: tuple[str, ...] = (), include: Include = EVERYTHING
) -> dict[str, Any]:
    header, reply, summary = outcome.header, outcome.completion, outcome.summary
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None, "refusal": None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in reply.tool_calls
        ]
    return {
        "id": header.id,
        "object": "chat.completion",
        "created": int(header.created_at),
        "model": header.model.id,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": _FINISH.get(summary.finish_reason or reply.finish_reason, "stop"),
                "logprobs": None,
            }
        ],
        **({"usage": usage(summary.usage)} if include.usage else {}),
        "system_fingerprint": None,
        **extensions(summary, header, dropped, include),
    }


def chunk(header: CallHeader, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": header.id,
        "object": "chat.completion.chunk",
        "created": int(header.created_at),
        "model": header.model.id,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }


def first_chunk(header: CallHeader) -> dict[str, Any]:
    return chunk(header, {"role": "assistant", "content": ""})


def delta_chunk(header: CallHeader, event: TextDelta | ToolCallDelta) -> dict[str, Any]:
    if isinstance(event, TextDelta):
        return chunk(header, {"content": event.text})
    call: dict[str, Any] = {"index": event.index, "function": {"arguments": event.arguments}}
    if event.id:
        call["id"], call["type"] = event.id, "function"
    if event.name:
        call["function"]["name"] = event.name
    return chunk(header, {"tool_calls": [call]})


def final_chunks(
    header: CallHeader,
    summary: CallSummary,
    include_usage: bool,
    dropped: tuple[str, ...] = (),
    include: Include = EVERYTHING,
) -> list[dict[str, Any]]:
    """The finish chunk (with the gateway's extensions), and the usage chunk when asked for."""
    finish = chunk(header, {}, _FINISH.get(summary.finish_reason or FinishReason.STOP, "stop"))
    finish.update(extensions(summary, header, dropped, include))
    if not include_usage:
        return [finish]
    tail = chunk(header, {})
    tail["choices"] = []
    tail["usage"] = usage(summary.usage)
    return [finish, tail]


def usage(used: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": used.prompt_tokens,
        "completion_tokens": used.completion_tokens,
        "total_tokens": used.total_tokens,
        "prompt_tokens_details": {"cached_tokens": used.cache_read_tokens},
        "cache_hit_tokens": used.cache_read_tokens,
        "completion_tokens_details": {"reasoning_tokens": used.reasoning_tokens},
    }


def extensions(
    summary: CallSummary, header: CallHeader, dropped: tuple[str, ...] = (), include: Include = EVERYTHING
) -> dict[str, Any]:
    """The seed documents' fields beside OpenAI's, under their names: who served, what it cost,
    where the time went, how it was routed."""
    latency, routing, spec = summary.latency, summary.routing, header.model
    found: dict[str, Any] = {"provider": spec.provider}
    if include.cost:
        found["cost"] = cost(summary.cost, summary.usage)
    if include.latency:
        found["latency"] = {
            "total_time_ms": ms(latency.total),
            "ttfb_ms": ms(latency.time_to_first_byte),
            "ttft_ms": ms(latency.time_to_first_token),
            "processing_time_ms": ms(latency.gateway_overhead),
            "network_time_ms": ms(latency.upstream),
        }
    found["routing"] = {
        "selected_provider": spec.provider,
        "selected_model": routing.selected.id if routing.selected else spec.id,
        "routing_reason": routing.reason,
        "considered_models": list(routing.candidates),
        "fallback_used": routing.fallback_used,
        "cache_hit": routing.cache_hit,
        **({"considered": [_considered(c) for c in routing.considered]} if routing.considered else {}),
        "attempts": [
            {
                "provider": a.provider,
                "model": a.model,
                "code": a.code,
                "reason": a.reason,
                "latency_ms": ms(a.latency),
            }
            for a in routing.attempts
        ],
    }
    if include.model_info:
        found["model_info"] = {
            "id": spec.id,
            "provider": spec.provider,
            "name": spec.name,
            "display_name": spec.display_name,
            "context_window": spec.context_window,
            "max_output_tokens": spec.max_output_tokens,
            "provider_model": summary.provider_model,
        }
    found["usage_estimated"] = summary.usage.estimated
    left_out = (*summary.dropped_parameters, *dropped)
    if left_out:
        found["dropped_parameters"] = list(left_out)
    return found


def cost(spent: Cost, used: Usage) -> dict[str, Any]:
    """The seed documents' cost object; every amount exact decimal text (never a float)."""
    plan = None
    if spent.plan is not None:
        charge = spent.plan
        plan = {
            "plan": charge.plan,
            "period_start": charge.period_start.isoformat(),
            "tokens_before": charge.before,
            "included_tokens": charge.included,
            "overage_tokens": charge.overage,
        }
    if spent.status is PricingStatus.UNKNOWN:
        found: dict[str, Any] = {"status": spent.status.value, "currency": spent.currency, "total_cost": None}
        return found if plan is None else {**found, "subscription": plan}
    per_1k = spent.cost_per_1k_tokens
    priced = {
        "status": spent.status.value,
        "currency": spent.currency,
        "input_cost": format_decimal(spent.input),
        "cached_input_cost": format_decimal(spent.cached_input),
        "cache_write_cost": format_decimal(spent.cache_write),
        "output_cost": format_decimal(spent.output),
        "request_fee": format_decimal(spent.request_fee),
        "total_cost": format_decimal(spent.total),
        "cost_per_1k_tokens": None if per_1k is None else format_decimal(per_1k),
        "cache_savings": format_decimal(spent.cache_savings),
        "estimated": spent.estimated or used.estimated,
    }
    return priced if plan is None else {**priced, "subscription": plan}


def error(err: GatewayError, request_id: str) -> tuple[int, dict[str, Any]]:
    """The HTTP status and body of `err` in the seed documents' error format: OpenAI's `error`
    object (`message`, `type`, `param`, `code`) with the gateway's reason, provider and request
    id. `param` is the first field at fault; every one of them is in the message."""
    status, kind = STATUS.get(err.code, (500, "internal_error"))
    if err.reason == "UPSTREAM_QUOTA_EXCEEDED":
        kind = "insufficient_quota"
    body: dict[str, Any] = {
        "message": err.message,
        "type": kind,
        "param": openai_param(err.violations[0].field) if err.violations else err.metadata.get("field"),
        "code": err.reason.lower(),
        "request_id": request_id,
    }
    if "provider" in err.metadata:
        body["provider"] = err.metadata["provider"]
    details = {k: v for k, v in err.metadata.items() if k not in ("provider", "field")}
    if details:
        body["metadata"] = details
    return status, {"error": body}


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


def ms(seconds: float | None) -> float | None:
    """Seconds as milliseconds, to the microsecond."""
    return None if seconds is None else round(seconds * 1000, 3)


def _considered(c: Considered) -> dict[str, Any]:
    """A model a routing strategy looked at, as the door shows it."""
    return {
        "model": c.model,
        "passed_over": c.passed_over or None,
        "expected_cost": None if c.expected_cost is None else format_decimal(c.expected_cost),
        "cost_per_1k_tokens": None if c.cost_per_1k_tokens is None else format_decimal(c.cost_per_1k_tokens),
        "latency_ms": None if c.latency is None else round(c.latency * 1000, 3),
        "quality": c.quality,
        "score": c.score,
        **({"in_flight": c.in_flight, "weight": c.weight} if c.weight is not None else {}),
    }
