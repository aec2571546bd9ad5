"""OpenTelemetry traces, received by a real OTLP/gRPC server on loopback: a call with a fallback is
one server span in the caller's trace and two attempt spans with the GenAI attributes; the
upstream request carries its attempt's traceparent; log lines carry the trace; no secret is in
any span."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from llm_gateway.domain.messages import ChatRequest, ImagePart, Message, Role, TextPart, ToolCall
from llm_gateway.tracing import _input_messages
from llmgateway.v1 import chat_pb2, content_pb2
from tests.conftest import OPENAI_TEST_KEY, chat, openai_toml, running_gateway, text_message
from tests.fakes.openai import FakeOpenAI, Reply, completion, error_body, text_chunks, usage

KEY = "tracing-canary-key-5c1e8a93b27d4f06"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """A collector's OTLP/gRPC trace endpoint: keeps every export."""

    def __init__(self) -> None:
        self.exports: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def Export(  # noqa: N802 (the service's method name)
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        self.exports.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()

    def spans(self) -> list[trace_pb2.Span]:
        return [
            span
            for export in self.exports
            for resource in export.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    server = grpc.aio.server()
    found = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(found, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield found, port
    finally:
        await server.stop(None)


def attributes(span: trace_pb2.Span) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for attribute in span.attributes:
        value = attribute.value
        found[attribute.key] = getattr(value, value.WhichOneof("value") or "string_value")
    return found


async def test_a_call_with_a_fallback_is_a_server_span_and_two_attempt_spans(
    fake_openai: FakeOpenAI, receiver: tuple[Receiver, int], log_lines: list[str]
) -> None:
    collector, port = receiver
    toml = (
        f'[[auth.keys]]\nname = "traced"\nkey = "{KEY}"\n'
        + openai_toml(fake_openai.base_url)
        + '[providers.backup]\nkind = "mock"\n[providers.backup.models.echo]\n'
        + 'price = { input_per_million = "1", output_per_million = "2" }\n'
        + f'[tracing]\nenabled = true\nendpoint = "http://127.0.0.1:{port}"\n'
    )
    async with running_gateway(toml) as gw:
        fake_openai.script(Reply(status=503, json_body=error_body("Overloaded", "server_error")))
        reply = await gw.stub.Chat(
            chat_pb2.ChatRequest(
                model="openai:gpt-4o-mini",
                fallback_models=["backup:echo"],
                messages=chat("x", "trace me").messages,
                generation=chat_pb2.GenerationConfig(max_tokens=50, temperature=0.25, stop=["END"]),
            ),
            metadata=(("authorization", f"Bearer {KEY}"), ("traceparent", TRACEPARENT)),
        )
        assert reply.routing.fallback_used
        tracing = gw.server.runtime.tracing
        assert tracing is not None
        await asyncio.to_thread(tracing.flush)
        upstream_traceparent = fake_openai.requests[-1].headers["traceparent"]

    spans = collector.spans()
    assert len(spans) == 3
    (server,) = [s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER]
    attempts = sorted(
        (s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_CLIENT), key=lambda s: s.start_time_unix_nano
    )
    assert [s.name for s in attempts] == ["chat gpt-4o-mini", "chat echo"]
    # One trace, the caller's; the call's span under the caller's, the attempts under the call's.
    assert {s.trace_id.hex() for s in spans} == {TRACE_ID}
    assert server.parent_span_id.hex() == CALLER_SPAN
    assert server.name == "llmgateway.v1.GatewayService/Chat"
    assert all(s.parent_span_id == server.span_id for s in attempts)
    # The failed attempt's request carried its own span as the parent.
    assert upstream_traceparent == f"00-{TRACE_ID}-{attempts[0].span_id.hex()}-01"

    failed, served = (attributes(s) for s in attempts)
    assert failed["gen_ai.operation.name"] == "chat"
    assert failed["gen_ai.provider.name"] == "openai"
    assert failed["gen_ai.request.model"] == "gpt-4o-mini"
    assert failed["error.type"] == "UPSTREAM_UNAVAILABLE"
    assert failed["server.address"] == "127.0.0.1"
    assert attempts[0].status.code == trace_pb2.Status.STATUS_CODE_ERROR
    assert served["gen_ai.request.model"] == "echo"
    assert served["gen_ai.response.model"] == "echo"
    assert served["gen_ai.response.id"].startswith("mock-")  # the provider's id, not the gateway's
    assert served["gen_ai.response.finish_reasons"].values[0].string_value == "stop"
    for attempt in (failed, served):
        assert attempt["gen_ai.request.max_tokens"] == 50
        assert attempt["gen_ai.request.temperature"] == 0.25
        assert attempt["gen_ai.request.stop_sequences"].values[0].string_value == "END"
    assert served["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
    assert served["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens
    assert "error.type" not in served

    call = attributes(server)
    assert call["gen_ai.request.model"] == "openai:gpt-4o-mini"
    assert call["gen_ai.response.model"] == "backup:echo"
    assert call["llm_gateway.cost_usd"] == reply.cost.total
    assert call["llm_gateway.api_key_name"] == "traced"
    assert call["llm_gateway.fallback_used"] is True
    assert call["llm_gateway.call_id"] == reply.id
    assert "gen_ai.input.messages" not in served
    assert "gen_ai.output.messages" not in served

    # No secret in any span, nor the prompt or the reply (recorded only on opt-in, below).
    exported = b"".join(export.SerializeToString() for export in collector.exports)
    for secret in (KEY.encode(), OPENAI_TEST_KEY.encode(), b"trace me"):
        assert secret not in exported
    # The access log line carries the trace.
    (access,) = [line for line in log_lines if '"event":"access"' in line]
    assert f'"trace_id":"{TRACE_ID}"' in access
    assert f'"span_id":"{server.span_id.hex()}"' in access


async def test_an_http_call_joins_the_callers_trace(receiver: tuple[Receiver, int]) -> None:
    collector, port = receiver
    toml = f'[tracing]\nenabled = true\nendpoint = "http://127.0.0.1:{port}"\n'
    async with running_gateway(toml) as gw, aiohttp.ClientSession() as http:
        async with http.post(
            f"{gw.http_url}/v1/chat/completions",
            json={"model": "mock:echo", "messages": [{"role": "user", "content": "hi"}]},
            headers={"traceparent": TRACEPARENT},
        ) as response:
            assert response.status == 200
        tracing = gw.server.runtime.tracing
        assert tracing is not None
        await asyncio.to_thread(tracing.flush)
    spans = collector.spans()
    (server,) = [s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER]
    assert server.name == "POST /v1/chat/completions"
    assert server.trace_id.hex() == TRACE_ID
    assert [s.name for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_CLIENT] == ["chat echo"]


async def test_tracing_is_off_by_default() -> None:
    async with running_gateway("") as gw:
        assert gw.server.runtime.tracing is None
        assert gw.server.runtime.gateway.tracing is None


@pytest.mark.parametrize("streamed", [False, True])
async def test_prompts_and_replies_are_recorded_when_the_operator_opts_in(
    fake_openai: FakeOpenAI, receiver: tuple[Receiver, int], streamed: bool
) -> None:
    collector, port = receiver
    toml = (
        openai_toml(fake_openai.base_url)
        + f'[tracing]\nenabled = true\ncapture_content = true\nendpoint = "http://127.0.0.1:{port}"\n'
    )
    request = chat_pb2.ChatRequest(
        model="openai:gpt-4o-mini",
        messages=[
            text_message(content_pb2.ROLE_SYSTEM, "Be brief."),
            *chat("x", "What is 2+2?").messages,
        ],
    )
    async with running_gateway(toml) as gw:
        if streamed:
            fake_openai.script(Reply(sse=text_chunks(["Fo", "ur."], usage(12, 2))))
            replies = [r async for r in gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request))]
            assert replies[-1].WhichOneof("event") == "finish"
        else:
            fake_openai.script(Reply(json_body=completion("Four.")))
            await gw.stub.Chat(request)
        tracing = gw.server.runtime.tracing
        assert tracing is not None
        await asyncio.to_thread(tracing.flush)
    (attempt,) = [attributes(s) for s in collector.spans() if s.kind == trace_pb2.Span.SPAN_KIND_CLIENT]
    assert json.loads(attempt["gen_ai.system_instructions"]) == [{"type": "text", "content": "Be brief."}]
    assert json.loads(attempt["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "What is 2+2?"}]}
    ]
    assert json.loads(attempt["gen_ai.output.messages"]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "Four."}], "finish_reason": "stop"}
    ]
    assert attempt["gen_ai.response.id"] == "chatcmpl-fake123"


def test_recorded_messages_follow_the_genai_shape_and_never_copy_image_bytes() -> None:
    request = ChatRequest(
        model="openai:gpt-4o",
        messages=(
            Message(Role.USER, (TextPart("Look"), ImagePart(url="https://example.com/a.png"))),
            Message(Role.USER, (ImagePart(data=b"\x89PNG-secret-bytes", mime_type="image/png"),)),
            Message(Role.ASSISTANT, tool_calls=(ToolCall("call_1", "weather", '{"city":"Oslo"}'),)),
            Message(Role.TOOL, (TextPart("3 C"),), tool_call_id="call_1"),
        ),
    )
    found = _input_messages(request)
    assert "gen_ai.system_instructions" not in found
    assert json.loads(found["gen_ai.input.messages"]) == [
        {
            "role": "user",
            "parts": [
                {"type": "text", "content": "Look"},
                {"type": "uri", "modality": "image", "uri": "https://example.com/a.png"},
            ],
        },
        {"role": "user", "parts": [{"type": "blob", "modality": "image", "mime_type": "image/png"}]},
        {
            "role": "assistant",
            "parts": [
                {"type": "tool_call", "id": "call_1", "name": "weather", "arguments": '{"city":"Oslo"}'}
            ],
        },
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "3 C"}]},
    ]
