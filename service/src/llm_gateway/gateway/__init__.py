"""The gateway core: planning, attempts, and usage, cost and latency accounting."""

from llm_gateway.gateway.core import Gateway
from llm_gateway.gateway.estimate import Estimate
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

__all__ = [
    "Attempt",
    "CallHeader",
    "CallSummary",
    "ChatOutcome",
    "Estimate",
    "Gateway",
    "GatewayEvent",
    "Latency",
    "RoutingInfo",
    "StreamFinished",
    "StreamStarted",
]
