"""The GatewayService servicer: protobuf in, domain calls, protobuf out."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Collection
from contextlib import aclosing
from typing import TYPE_CHECKING

from llm_gateway.budgets.trailers import call_headers
from llm_gateway.catalog import ModelSpec
from llm_gateway.domain.errors import Code, GatewayError, invalid_field
from llm_gateway.domain.messages import ChatRequest
from llm_gateway.domain.results import TextDelta, ToolCallDelta
from llm_gateway.gateway import ChatOutcome, Gateway, StreamFinished, StreamStarted
from llm_gateway.gateway.outcome import CallSummary
from llm_gateway.gateway.record import ANONYMOUS
from llm_gateway.gateway.scope import CallScope
from llm_gateway.gateway.subscriptions import PlanStanding
from llm_gateway.server import encode
from llm_gateway.server.boundary import ErrorBoundary
from llm_gateway.server.context import (
    call_var,
    received_at_var,
    request_bytes_var,
    request_id_var,
)
from llm_gateway.server.decode import decode_chat_request
from llm_gateway.server.paging import page_position, page_size, page_token
from llmgateway.v1 import catalog_pb2, chat_pb2, gateway_service_pb2_grpc

if TYPE_CHECKING:
    from llm_gateway.server.context import Context

_log = logging.getLogger("llm_gateway.server")
# Requests larger than this (in bytes, as received) are validated off the event loop.
_OFFLOAD_BYTES = 256 * 1024
# Room for everything in a reply or event besides its text (usage, cost, routing...).
_ENVELOPE_BYTES = 64 * 1024
_CAPABILITY_NAMES = {number: name for name, number in encode.CAPABILITIES.items()}


class GatewayServicer(gateway_service_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self, gateway: Gateway, providers: Collection[str], max_reply_bytes: int = 32 * 1024 * 1024
    ) -> None:
        self._gateway = gateway
        self._providers = frozenset(providers)
        # gRPC refuses to send a message over its send limit, with a bare status; a reply that
        # could be that large is measured first, and a streamed delta is sent in pieces under it.
        self._max_reply = max_reply_bytes
        self._max_piece = max((max_reply_bytes - _ENVELOPE_BYTES) // 4, 1)  # UTF-8: 4 bytes a character

    async def Chat(  # noqa: N802 (gRPC method name)
        self, request: chat_pb2.ChatRequest, context: Context
    ) -> chat_pb2.ChatResponse:
        async with ErrorBoundary(context):
            chat = await self._decode(request)
            outcome = await self._gateway.chat(chat, _scope(context))
            reply = encode.chat_response(outcome)
            self._check_size(reply, outcome)
            self._standing(context, outcome.header.id, outcome.summary)
            return reply

    async def ChatStream(  # noqa: N802
        self, request: chat_pb2.ChatStreamRequest, context: Context
    ) -> AsyncIterator[chat_pb2.ChatStreamResponse]:
        async with ErrorBoundary(context, "request."):
            if not request.HasField("request"):
                raise invalid_field("", "must be set: the chat request")
            chat = await self._decode(request.request)
            stream = self._gateway.chat_stream(chat, _scope(context))
            # Closed here, not whenever it is collected, so a cut-short stream is accounted before
            # the call's record is ended.
            async with aclosing(stream):
                async for event in stream:
                    if isinstance(event, StreamStarted):
                        call_id = event.header.id
                        yield encode.stream_start(event.header)
                    elif isinstance(event, StreamFinished):
                        self._standing(context, call_id, event.summary)
                        yield encode.stream_finish(event.summary, event.dry_run)
                    else:
                        for piece in split_delta(event, self._max_piece):
                            yield encode.stream_delta(piece)

    async def EstimateCost(  # noqa: N802
        self, request: catalog_pb2.EstimateCostRequest, context: Context
    ) -> catalog_pb2.EstimateCostResponse:
        async with ErrorBoundary(context, "request."):
            if not request.HasField("request"):
                raise invalid_field("", "must be set: the chat request")
            chat = await self._decode(request.request)
        async with ErrorBoundary(context):
            expected = None
            if request.HasField("expected_output_tokens"):
                expected = request.expected_output_tokens
                if expected < 0:
                    raise invalid_field("expected_output_tokens", "must not be negative")
            estimates = await self._gateway.estimate_cost(
                chat, expected, list(request.candidate_models), _scope(context).principal
            )
            return catalog_pb2.EstimateCostResponse(estimates=[encode.estimate(e) for e in estimates])

    async def ListModels(  # noqa: N802
        self, request: catalog_pb2.ListModelsRequest, context: Context
    ) -> catalog_pb2.ListModelsResponse:
        async with ErrorBoundary(context):
            size = page_size(request.page_size)
            capabilities = []
            for i, number in enumerate(request.capabilities):
                name = _CAPABILITY_NAMES.get(number)
                if name is None:
                    raise invalid_field(f"capabilities[{i}]", "unknown capability")
                capabilities.append(name)
            provider = request.provider
            if provider and provider not in self._providers:
                configured = ", ".join(sorted(self._providers))
                raise invalid_field("provider", f"unknown provider {provider!r}; configured: {configured}")
            fingerprint = _filter_fingerprint(provider, capabilities)
            offset = page_position(request.page_token, fingerprint)
            if provider and not self._gateway.catalog.is_enabled(provider):
                # An empty list would read as "this provider has no models"; say how to turn it on.
                env = f"LLM_GATEWAY__PROVIDERS__{provider.upper()}__ENABLED=true"
                raise GatewayError(
                    f"provider: {provider!r} is configured but not enabled; a hosted provider is "
                    f"enabled by setting its API key, any provider by providers.{provider}.enabled = "
                    f"true in the config or {env} in the environment",
                    code=Code.FAILED_PRECONDITION,
                    reason="PROVIDER_DISABLED",
                    metadata={"field": "provider", "provider": provider},
                )
            principal = _scope(context).principal
            models = self._gateway.list_models(provider, capabilities, principal)
            page = models[offset : offset + size]
            gateway = self._gateway
            end = offset + len(page)

            def state(spec: ModelSpec) -> catalog_pb2.ModelState:
                return encode.model_state(
                    gateway.live.of(spec.id), gateway.breakers[spec.provider], gateway.in_flight.of(spec.id)
                )

            meter = gateway.subscriptions
            if meter is not None:  # the plans' periods as every process has counted them
                await meter.refresh()

            def plan(spec: ModelSpec) -> PlanStanding | None:
                return None if meter is None else meter.standing(spec.provider)

            return catalog_pb2.ListModelsResponse(
                models=[encode.model(spec, gateway.catalog, state(spec), plan(spec)) for spec in page],
                next_page_token=page_token(end, fingerprint) if end < len(models) else "",
                total_size=len(models),
                groups=[encode.model_group(g, state) for g in gateway.list_groups(provider, principal)],
            )

    def _standing(self, context: Context, call_id: str, summary: CallSummary) -> None:
        """Adds where the call leaves its budgets and its key's quotas to the trailing metadata."""
        headers = call_headers(self._gateway.budgets, call_id, summary)
        if headers:
            context.set_trailing_metadata((*(context.trailing_metadata() or ()), *headers))

    def _check_size(self, reply: chat_pb2.ChatResponse, outcome: ChatOutcome) -> None:
        """Refuses a reply over the send limit with a status of the gateway's own: the provider
        was called (and charged), so the error carries the usage and cost."""
        completion = outcome.completion
        produced = len(completion.text) + sum(len(c.arguments) for c in completion.tool_calls)
        if produced * 4 + _ENVELOPE_BYTES <= self._max_reply:
            return  # cannot be over, whatever the characters
        size = reply.ByteSize()
        if size > self._max_reply:
            raise GatewayError(
                f"the reply is {size} bytes, over the gateway's limit of {self._max_reply} "
                "(server.max_message_bytes); ask for it with ChatStream, which sends it in pieces",
                code=Code.RESOURCE_EXHAUSTED,
                reason="REPLY_TOO_LARGE",
                metadata={"reply_bytes": str(size), **outcome.summary.spent()},
            )

    async def _decode(self, request: chat_pb2.ChatRequest) -> ChatRequest:
        # A large request is validated in a worker thread: the event loop keeps serving other
        # calls meanwhile (the thread yields the GIL every few milliseconds).
        if request_bytes_var.get() > _OFFLOAD_BYTES:
            return await asyncio.to_thread(decode_chat_request, request, self._providers)
        return decode_chat_request(request, self._providers)


def _scope(context: Context) -> CallScope:
    """The call as the gateway sees it: its id, when it arrived, its deadline, who is calling, and
    its record (opened by the pipeline)."""
    remaining = context.time_remaining()
    call = call_var.get()
    return CallScope(
        request_id=request_id_var.get(),
        received_at=received_at_var.get(),
        deadline=None if remaining is None else time.monotonic() + remaining,
        principal=call.principal if call is not None else ANONYMOUS,
        call=call,
    )


def split_delta(event: TextDelta | ToolCallDelta, size: int) -> list[TextDelta | ToolCallDelta]:
    """`event` as deltas of at most `size` characters of text or arguments (mostly just itself)."""
    if isinstance(event, TextDelta):
        if len(event.text) <= size:
            return [event]
        return [TextDelta(event.text[i : i + size]) for i in range(0, len(event.text), size)]
    if len(event.arguments) <= size:
        return [event]
    pieces: list[TextDelta | ToolCallDelta] = [
        ToolCallDelta(event.index, arguments=event.arguments[i : i + size])
        for i in range(0, len(event.arguments), size)
    ]
    pieces[0] = ToolCallDelta(event.index, event.id, event.name, event.arguments[:size])
    return pieces


def _filter_fingerprint(provider: str, capabilities: list[str]) -> str:
    return hashlib.sha256(f"{provider}|{','.join(sorted(capabilities))}".encode()).hexdigest()[:12]
