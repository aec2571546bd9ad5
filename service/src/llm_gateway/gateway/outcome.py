"""What the gateway hands back to the servicer: outcomes of calls and gateway-level stream events."""

from __future__ import annotations

from dataclasses import dataclass, field

from llm_gateway.catalog import ModelSpec
from llm_gateway.domain.results import Completion, FinishReason, TextDelta, ToolCallDelta, Usage
from llm_gateway.gateway.strategy import Considered
from llm_gateway.pricing import Cost, PricingStatus, format_decimal


@dataclass(frozen=True, slots=True)
class Latency:
    """Seconds. `time_to_first_token` is set on streams only."""

    total: float
    time_to_first_byte: float | None
    time_to_first_token: float | None
    upstream: float

    @property
    def gateway_overhead(self) -> float:
        return max(self.total - self.upstream, 0.0)


@dataclass(frozen=True, slots=True)
class Attempt:
    provider: str
    model: str
    code: str  # "OK" or a canonical status code name
    reason: str
    message: str
    latency: float
    # A stream's first event, seconds after the attempt was admitted (served streams only).
    first_token: float | None = None


@dataclass(slots=True)
class RoutingInfo:
    reason: str
    candidates: list[str]
    attempts: list[Attempt] = field(default_factory=list)
    selected: ModelSpec | None = None
    cache_hit: bool = False  # answered from the gateway's response cache
    considered: list[Considered] = field(default_factory=list)  # a routing strategy's view

    @property
    def fallback_used(self) -> bool:
        return self.selected is not None and bool(self.candidates) and self.selected.id != self.candidates[0]


@dataclass(frozen=True, slots=True)
class CallHeader:
    """Known once a model has started serving the call."""

    id: str
    request_id: str
    model: ModelSpec
    created_at: float  # Unix time in seconds


@dataclass(frozen=True, slots=True)
class CallSummary:
    """Known once the call has finished: what it used, cost and took."""

    finish_reason: FinishReason | None
    usage: Usage
    cost: Cost
    latency: Latency
    routing: RoutingInfo
    provider_model: str
    provider_response_id: str
    # Settings the serving model could not honour, left out under the LENIENT policy.
    dropped_parameters: tuple[str, ...] = ()

    def spent(self) -> dict[str, str]:
        """Usage and cost as ErrorInfo metadata, for a call that ended in an error after the
        provider had worked on it (a stream cut short, a reply too large to send)."""
        usage, cost = self.usage, self.cost
        spent = {
            "prompt_tokens": str(usage.prompt_tokens),
            "completion_tokens": str(usage.completion_tokens),
            "usage_estimated": "true" if usage.estimated else "false",
            "cost_status": cost.status.value,
        }
        if cost.status is not PricingStatus.UNKNOWN:
            spent["cost"] = format_decimal(cost.total)
            spent["cost_currency"] = cost.currency
        return spent


@dataclass(frozen=True, slots=True)
class ChatOutcome:
    header: CallHeader
    completion: Completion
    summary: CallSummary
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class StreamStarted:
    header: CallHeader


@dataclass(frozen=True, slots=True)
class StreamFinished:
    summary: CallSummary
    dry_run: bool = False


GatewayEvent = StreamStarted | TextDelta | ToolCallDelta | StreamFinished
