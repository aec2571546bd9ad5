"""The provider adapter interface.

An adapter translates a domain request into its provider's HTTP request and the reply or stream
back into domain results. It never sleeps, retries, limits or prices: those wrap adapters from
outside. Cancellation is the caller's: cancelling the task that awaits `chat` or iterates `stream`
closes the upstream request at once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from llm_gateway.catalog import ModelSpec
from llm_gateway.domain.messages import ChatRequest
from llm_gateway.domain.results import Completion, StreamEvent


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    request: ChatRequest
    model: ModelSpec
    # The request's provider_options entry for this provider, merged verbatim into the body.
    options: Mapping[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    name: str

    async def chat(self, call: UpstreamCall) -> Completion:
        """One whole reply."""
        ...

    def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        """Deltas as they arrive, ending with exactly one `StreamDone`."""
        ...

    async def aclose(self) -> None:
        """Releases what the adapter owns (not the shared HTTP client)."""
        ...
