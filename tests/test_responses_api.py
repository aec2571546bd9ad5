"""OpenAI's Responses API through the gateway, against a fake that speaks its wire format (checked
with the official `openai` SDK as the oracle): the exact request (input items, flat strict tools,
`text.format`, `reasoning.effort`, `store: false`), unary replies and typed event streams with
text, tool calls, cached and reasoning tokens and exact cost; models only it serves use it by
default; a model's own `api` overrides its provider's; Azure's v1 route takes the deployment as
the model; errors inside a stream; through the gRPC stubs and the OpenAI door."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import grpc
import openai
import pytest

from llmgateway.v1 import chat_pb2, content_pb2
from tests.conftest import chat, error_details, reply_text, running_gateway, violated_fields
from tests.fakes.openai import FakeOpenAI
from tests.fakes.responses import (
    FakeResponses,
    Reply,
    error_body,
    failed_events,
    function_call_events,
    function_call_item,
    message_item,
    reasoning_item,
    response,
    text_events,
    usage,
)
from tests.test_openai import struct

KEY = "sk-test-responses-0123456789abcdef"
# Configured prices, per million tokens, so costs are checked exactly.
PRICES = (
    'price = { input_per_million = "1.25", cached_input_per_million = "0.125", output_per_million = "10" }'
)


def toml(base_url: str, api: str = "responses", extra: str = "") -> str:
    return f"""
[providers.openai]
base_url = "{base_url}"
api_key = "{KEY}"
api = "{api}"
retry = {{ max_retries = 0 }}
[providers.openai.models.gpt-5]
capabilities = ["streaming", "tools", "vision", "json_schema", "reasoning"]
{PRICES}
{extra}
"""


@pytest.fixture
async def fake() -> AsyncIterator[FakeResponses]:
    async with FakeResponses() as server:
        yield server


async def test_the_fake_speaks_what_the_official_sdk_parses(fake: FakeResponses) -> None:
    client = openai.AsyncOpenAI(base_url=fake.base_url, api_key=KEY, max_retries=0)
    fake.script(
        Reply(
            json_body=response(
                [reasoning_item(), message_item("Hi there")], usage(20, 8, cached=4, reasoning=3)
            )
        ),
        Reply(events=function_call_events("call_1", "get_weather", ['{"city":', ' "Paris"}'], usage(30, 12))),
    )
    unary = await client.responses.create(model="gpt-5", input="Hello")
    assert unary.output_text == "Hi there"
    assert unary.usage is not None
    assert (
        unary.usage.input_tokens_details.cached_tokens,
        unary.usage.output_tokens_details.reasoning_tokens,
    ) == (4, 3)
    stream = await client.responses.create(model="gpt-5", input="Weather?", stream=True)
    kinds = [event.type async for event in stream]
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"
    assert kinds.count("response.function_call_arguments.delta") == 2
    echoed = await client.responses.create(model="gpt-5", input=[{"role": "user", "content": "echo me"}])
    assert echoed.output_text == "echo me"


async def test_request_translation_is_exact(fake: FakeResponses) -> None:
    request = chat_pb2.ChatRequest(
        model="openai:gpt-5",
        messages=[
            content_pb2.Message(role=content_pb2.ROLE_SYSTEM, content=[content_pb2.Part(text="Be brief.")]),
            content_pb2.Message(
                role=content_pb2.ROLE_USER, content=[content_pb2.Part(text="Weather in Paris?")]
            ),
            content_pb2.Message(
                role=content_pb2.ROLE_ASSISTANT,
                tool_calls=[
                    content_pb2.ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
                ],
            ),
            content_pb2.Message(
                role=content_pb2.ROLE_TOOL, tool_call_id="call_1", content=[content_pb2.Part(text="18C")]
            ),
        ],
        tools=[
            content_pb2.Tool(
                name="get_weather",
                description="Weather for a city",
                parameters=struct({"type": "object", "properties": {"city": {"type": "string"}}}),
            )
        ],
        generation=chat_pb2.GenerationConfig(max_tokens=300, temperature=0.5),
        reasoning=chat_pb2.ReasoningConfig(effort=chat_pb2.REASONING_EFFORT_LOW),
        response_format=content_pb2.ResponseFormat(
            type=content_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            json_schema=struct({"type": "object"}),
            schema_name="answer",
            strict=True,
        ),
    )
    async with running_gateway(toml(fake.base_url)) as gw:
        await gw.stub.Chat(request)
    sent = fake.requests[-1]
    assert sent.path == "/v1/responses"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body == {
        "model": "gpt-5",
        "input": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
        ],
        "store": False,
        "max_output_tokens": 300,
        "temperature": 0.5,
        "tools": [
            {
                "type": "function",
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                "strict": False,
            }
        ],
        "text": {
            "format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}
        },
        "reasoning": {"effort": "low"},
    }


async def test_a_unary_reply_with_cached_and_reasoning_tokens_is_costed_exactly(fake: FakeResponses) -> None:
    fake.script(
        Reply(
            json_body=response(
                [reasoning_item(), message_item("Bonjour")], usage(2_000, 500, cached=1_500, reasoning=300)
            )
        )
    )
    async with running_gateway(toml(fake.base_url)) as gw:
        reply = await gw.stub.Chat(chat("openai:gpt-5", "Say hello in French"))
    assert reply_text(reply.message) == "Bonjour"
    assert reply.finish_reason == chat_pb2.FINISH_REASON_STOP
    u = reply.usage
    assert (u.prompt_tokens, u.completion_tokens, u.cache_read_tokens, u.reasoning_tokens) == (
        2_000,
        500,
        1_500,
        300,
    )
    million = Decimal(1_000_000)
    assert Decimal(reply.cost.input) == 500 * Decimal("1.25") / million
    assert Decimal(reply.cost.cached_input) == 1_500 * Decimal("0.125") / million
    assert Decimal(reply.cost.output) == 500 * Decimal(10) / million
    assert Decimal(reply.cost.total) == (500 * Decimal("1.25") + 1_500 * Decimal("0.125") + 5_000) / million
    assert reply.provider_response_id == "resp_fake0123456789"


async def test_tool_calls_refusals_and_incomplete_replies_map(fake: FakeResponses) -> None:
    fake.script(
        Reply(json_body=response([reasoning_item(), function_call_item("call_9", "lookup", '{"q": "x"}')])),
        Reply(json_body=response([message_item("I can't help with that.", refusal=True)])),
        Reply(
            json_body=response(
                [message_item("Cut")], status="incomplete", incomplete_reason="max_output_tokens"
            )
        ),
    )
    async with running_gateway(toml(fake.base_url)) as gw:
        called = await gw.stub.Chat(chat("openai:gpt-5", "Look it up"))
        refused = await gw.stub.Chat(chat("openai:gpt-5", "Something bad"))
        cut = await gw.stub.Chat(chat("openai:gpt-5", "Long story"))
    assert called.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    assert [(c.id, c.name, c.arguments) for c in called.message.tool_calls] == [
        ("call_9", "lookup", '{"q": "x"}')
    ]
    assert refused.finish_reason == chat_pb2.FINISH_REASON_CONTENT_FILTER
    assert reply_text(refused.message) == "I can't help with that."
    assert (cut.finish_reason, reply_text(cut.message)) == (chat_pb2.FINISH_REASON_LENGTH, "Cut")


async def stream_events(gw: Any, request: chat_pb2.ChatRequest) -> list[chat_pb2.ChatStreamResponse]:
    return [event async for event in gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request))]


async def test_streams_of_text_and_of_a_tool_call(fake: FakeResponses) -> None:
    fake.script(
        Reply(events=text_events(["Hel", "lo ", "there"], usage(12, 3, cached=0, reasoning=0))),
        Reply(
            events=function_call_events(
                "call_2", "get_weather", ['{"city"', ': "Oslo"}'], usage(20, 9, reasoning=4)
            )
        ),
    )
    async with running_gateway(toml(fake.base_url)) as gw:
        text = await stream_events(gw, chat("openai:gpt-5", "Say hello"))
        tool = await stream_events(gw, chat("openai:gpt-5", "Weather in Oslo?"))
    assert "".join(e.text_delta.text for e in text if e.HasField("text_delta")) == "Hello there"
    finish = text[-1].finish
    assert (finish.finish_reason, finish.usage.prompt_tokens, finish.usage.completion_tokens) == (
        chat_pb2.FINISH_REASON_STOP,
        12,
        3,
    )
    assert Decimal(finish.cost.total) == (12 * Decimal("1.25") + 3 * Decimal(10)) / Decimal(1_000_000)
    assert fake.requests[-1].body["stream"] is True
    pieces = [e.tool_call_delta for e in tool if e.HasField("tool_call_delta")]
    assert (pieces[0].id, pieces[0].name) == ("call_2", "get_weather")
    assert "".join(p.arguments for p in pieces) == '{"city": "Oslo"}'
    assert {p.index for p in pieces} == {0}  # the reasoning item before it does not take an index
    assert tool[-1].finish.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    assert tool[-1].finish.usage.reasoning_tokens == 4


async def test_a_failed_stream_and_http_errors_map_to_the_gateways_codes(fake: FakeResponses) -> None:
    fake.script(
        Reply(events=failed_events("The server had an error")),
        Reply(
            status=400, json_body=error_body("Invalid schema", "invalid_request_error", param="text.format")
        ),
        Reply(events=text_events(["cut"])[:5], end_early=True),
        # Last: its Retry-After pauses the provider for the calls after it.
        Reply(
            status=429,
            json_body=error_body("Rate limit reached", "requests", "rate_limit_exceeded"),
            headers={"retry-after": "30"},
        ),
    )
    async with running_gateway(toml(fake.base_url)) as gw:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stream_events(gw, chat("openai:gpt-5", "x"))
        with pytest.raises(grpc.aio.AioRpcError) as invalid:
            await gw.stub.Chat(chat("openai:gpt-5", "x"))
        with pytest.raises(grpc.aio.AioRpcError) as dropped:
            await stream_events(gw, chat("openai:gpt-5", "x"))
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await gw.stub.Chat(chat("openai:gpt-5", "x"))
    assert (failed.value.code(), error_details(failed.value).info.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "UPSTREAM_STREAM_ERROR",
    )
    assert "The server had an error" in (failed.value.details() or "")
    assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dropped.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_details(limited.value).info.reason == "UPSTREAM_RATE_LIMITED"


async def test_settings_the_responses_api_lacks_are_refused_before_the_call(fake: FakeResponses) -> None:
    async with running_gateway(toml(fake.base_url)) as gw:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gw.stub.Chat(
                chat("openai:gpt-5", "x", generation=chat_pb2.GenerationConfig(stop=["END"], seed=7))
            )
    assert violated_fields(error_details(refused.value)) == ["generation.seed", "generation.stop"]
    assert fake.requests == []


async def test_which_api_each_model_uses(fake: FakeResponses, fake_openai: FakeOpenAI) -> None:
    # One provider on Chat Completions; a model only the Responses API serves, and a model set to
    # it, go there. Both fakes share nothing, so each request's path says where it went.
    extra = """
[providers.openai.models.gpt-5-pro]
capabilities = ["streaming", "reasoning"]
price = { input_per_million = "15", output_per_million = "120" }
[providers.openai.models."gpt-4.1"]
api = "responses"
price = { input_per_million = "2", output_per_million = "8" }
"""
    chat_completions = toml(fake_openai.base_url, "chat_completions", extra)
    async with running_gateway(chat_completions) as gw:
        plain = await gw.stub.Chat(chat("openai:gpt-5", "plain"))
        with pytest.raises(grpc.aio.AioRpcError):  # the Chat Completions fake has no /responses
            await gw.stub.Chat(chat("openai:gpt-5-pro", "pro"))
        with pytest.raises(grpc.aio.AioRpcError):
            await gw.stub.Chat(chat("openai:gpt-4.1", "own api"))
    assert reply_text(plain.message) == "plain"
    assert [r.path for r in fake_openai.requests] == ["/v1/chat/completions"]
    # The same provider pointed at the Responses fake: both go there.
    async with running_gateway(toml(fake.base_url, "chat_completions", extra)) as gw:
        pro = await gw.stub.Chat(chat("openai:gpt-5-pro", "pro"))
        own = await gw.stub.Chat(chat("openai:gpt-4.1", "own api"))
    assert (reply_text(pro.message), reply_text(own.message)) == ("pro", "own api")
    assert [(r.path, r.body["model"]) for r in fake.requests] == [
        ("/v1/responses", "gpt-5-pro"),
        ("/v1/responses", "gpt-4.1"),
    ]


async def test_azure_takes_the_deployment_as_the_model_on_its_v1_route(fake: FakeResponses) -> None:
    azure = f"""
[providers.azure]
kind = "azure_openai"
endpoint = "{fake.azure_endpoint}"
api_key = "azure-key-0123456789abcdef"
api = "responses"
retry = {{ max_retries = 0 }}
[providers.azure.models.gpt-5]
deployment = "prod-gpt5"
{PRICES}
"""
    async with running_gateway(azure) as gw:
        reply = await gw.stub.Chat(chat("azure:gpt-5", "Hello Azure"))
        streamed = await stream_events(gw, chat("azure:gpt-5", "Hello again"))
    assert reply_text(reply.message) == "Hello Azure"
    assert "".join(e.text_delta.text for e in streamed if e.HasField("text_delta")) == "Hello again"
    first = fake.requests[0]
    assert (first.path, first.body["model"], first.headers["api-key"]) == (
        "/openai/v1/responses",
        "prod-gpt5",
        "azure-key-0123456789abcdef",
    )


async def test_the_openai_door_serves_a_responses_model(fake: FakeResponses) -> None:
    fake.script(Reply(json_body=response([message_item("From the Responses API")], usage(9, 4))))
    async with running_gateway(toml(fake.base_url)) as gw:
        client = openai.AsyncOpenAI(base_url=f"{gw.http_url}/v1", api_key="x", max_retries=0, timeout=30)
        unary = await client.chat.completions.create(
            model="openai:gpt-5", messages=[{"role": "user", "content": "Hi"}]
        )
        stream = await client.chat.completions.create(
            model="openai:gpt-5", messages=[{"role": "user", "content": "Streamed reply"}], stream=True
        )
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert unary.choices[0].message.content == "From the Responses API"
    assert unary.usage is not None
    assert (unary.usage.prompt_tokens, unary.usage.completion_tokens) == (9, 4)
    assert "".join(pieces) == "Streamed reply"
    assert json.loads(json.dumps(fake.requests[-1].body))["stream"] is True
