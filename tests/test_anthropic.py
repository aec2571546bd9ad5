"""Anthropic through the gateway, against the fake Messages server: the exact translated request,
normalised replies and streams (text, tool calls, usage with cache reads and writes, cost), and
errors mapped to gRPC statuses."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import grpc
import pytest

from llmgateway.v1 import accounting_pb2, catalog_pb2, chat_pb2, content_pb2
from tests.conftest import (
    NO_RETRIES,
    RunningGateway,
    chat,
    error_details,
    reply_text,
    running_gateway,
    user,
    violated_fields,
)
from tests.fakes.anthropic import (
    MODEL_SNAPSHOT,
    FakeAnthropic,
    Reply,
    error_reply,
    message,
    message_start,
    stream_error,
    text_block,
    text_events,
    thinking_events,
    tool_use_block,
    tool_use_events,
    usage,
)

ANTHROPIC_KEY = "sk-ant-test-0123456789abcdef"


def anthropic_toml(base_url: str) -> str:
    return f"""
[routing]
auto = ["mock:echo"]
[providers.anthropic]
base_url = "{base_url}"
api_key = "{ANTHROPIC_KEY}"
{NO_RETRIES}
"""


@pytest.fixture
async def gateway(fake_anthropic: FakeAnthropic) -> AsyncIterator[RunningGateway]:
    async with running_gateway(anthropic_toml(fake_anthropic.base_url)) as gw:
        yield gw


def weather_request(model: str = "anthropic:claude-haiku-4-5") -> chat_pb2.ChatRequest:
    request = chat(model, "Weather in Paris?")
    request.messages.insert(
        0, content_pb2.Message(role=content_pb2.ROLE_SYSTEM, content=[content_pb2.Part(text="Be brief.")])
    )
    tool = request.tools.add(name="get_weather", description="Weather for a city")
    tool.parameters.update({"type": "object", "properties": {"city": {"type": "string"}}})
    return request


async def test_unary_request_is_translated_and_the_reply_normalised(
    gateway: RunningGateway, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(
        Reply(
            json_body=message(
                [text_block("Sunny.")], usage_=usage(20, 5, cache_read=1000, cache_creation=300)
            )
        )
    )
    reply = await gateway.stub.Chat(weather_request())
    assert reply_text(reply.message) == "Sunny."
    assert reply.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert reply.provider_model == MODEL_SNAPSHOT
    u = reply.usage
    assert (u.prompt_tokens, u.completion_tokens, u.cache_read_tokens, u.cache_write_tokens) == (
        1320,
        5,
        1000,
        300,
    )
    # Haiku 4.5 per million: input 1, cache read 0.10, cache write 1.25, output 5.
    expected = (20 * Decimal(1) + 1000 * Decimal("0.1") + 300 * Decimal("1.25") + 5 * Decimal(5)) / 10**6
    assert reply.cost.status == accounting_pb2.PRICING_STATUS_PRICED
    assert Decimal(reply.cost.total) == expected

    [sent] = fake_anthropic.requests
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body == {
        "model": "claude-haiku-4-5",
        "max_tokens": 64000,  # the catalog's max output: Anthropic requires max_tokens
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}],
        "tools": [
            {
                "description": "Weather for a city",
                "name": "get_weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            }
        ],
    }


async def test_streamed_tool_call_assembles_like_the_unary_one(
    gateway: RunningGateway, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(
        Reply(
            json_body=message(
                [text_block("Checking."), tool_use_block("toolu_01", "get_weather", {"city": "Paris"})],
                stop_reason="tool_use",
                usage_=usage(30, 12),
            )
        ),
        Reply(
            events=tool_use_events(["Check", "ing."], "toolu_01", "get_weather", ['{"city": ', '"Paris"}'])
        ),
    )
    unary = await gateway.stub.Chat(weather_request())
    stream = gateway.stub.ChatStream(chat_pb2.ChatStreamRequest(request=weather_request()))
    events = [event async for event in stream]

    text = "".join(e.text_delta.text for e in events if e.HasField("text_delta"))
    pieces = [e.tool_call_delta for e in events if e.HasField("tool_call_delta")]
    assert (pieces[0].index, pieces[0].id, pieces[0].name) == (0, "toolu_01", "get_weather")
    arguments = "".join(p.arguments for p in pieces)
    finish = events[-1].finish
    assert finish.finish_reason == unary.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    assert text == reply_text(unary.message) == "Checking."
    [call] = unary.message.tool_calls
    assert (call.id, call.name) == ("toolu_01", "get_weather")
    assert json.loads(arguments) == json.loads(call.arguments) == {"city": "Paris"}
    assert finish.usage.completion_tokens == 20  # the final message_delta's cumulative count


async def test_stream_text_and_usage(gateway: RunningGateway, fake_anthropic: FakeAnthropic) -> None:
    fake_anthropic.script(Reply(events=text_events(["Hel", "lo"], usage(8, 2, cache_read=64))))
    stream = gateway.stub.ChatStream(chat_pb2.ChatStreamRequest(request=chat("anthropic:claude-haiku-4-5")))
    events = [event async for event in stream]
    assert events[0].start.model == "anthropic:claude-haiku-4-5"
    assert [e.text_delta.text for e in events if e.HasField("text_delta")] == ["Hel", "lo"]
    u = events[-1].finish.usage
    assert (u.prompt_tokens, u.completion_tokens, u.cache_read_tokens, u.estimated) == (72, 2, 64, False)
    assert fake_anthropic.requests[0].body["stream"] is True


async def test_a_tool_conversation_sends_tool_use_and_tool_result_blocks(
    gateway: RunningGateway, fake_anthropic: FakeAnthropic
) -> None:
    request = weather_request()
    call = content_pb2.ToolCall(id="toolu_01", name="get_weather", arguments='{"city": "Paris"}')
    request.messages.append(content_pb2.Message(role=content_pb2.ROLE_ASSISTANT, tool_calls=[call]))
    request.messages.append(
        content_pb2.Message(
            role=content_pb2.ROLE_TOOL, tool_call_id="toolu_01", content=[content_pb2.Part(text="18C")]
        )
    )
    fake_anthropic.script(Reply(json_body=message([text_block("18C in Paris.")])))
    reply = await gateway.stub.Chat(request)
    assert reply_text(reply.message) == "18C in Paris."
    assert fake_anthropic.requests[0].body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}
            ],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "18C"}]},
    ]


async def test_overloaded_529_is_retryable_and_falls_back(
    gateway: RunningGateway, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(error_reply("overloaded_error", "Overloaded"))
    request = chat("anthropic:claude-haiku-4-5")
    request.fallback_models.append("mock:echo")
    reply = await gateway.stub.Chat(request)
    assert reply.model == "mock:echo"
    attempt = reply.routing.attempts[0]
    assert (attempt.model, attempt.code) == ("anthropic:claude-haiku-4-5", "UNAVAILABLE")


async def test_rate_limit_is_resource_exhausted_with_retry_info(
    gateway: RunningGateway, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(error_reply("rate_limit_error", "Slow down", retry_after=12))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat("anthropic:claude-haiku-4-5"))
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "UPSTREAM_RATE_LIMITED",
    )
    assert details.info.metadata["upstream_code"] == "rate_limit_error"
    assert details.retry is not None
    assert details.retry.retry_delay.seconds == 12


async def test_a_rejected_key_never_shows_the_key(
    gateway: RunningGateway, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(error_reply("authentication_error", f"invalid x-api-key {ANTHROPIC_KEY}"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat("anthropic:claude-haiku-4-5"))
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PROVIDER_AUTH_FAILED",
    )
    assert ANTHROPIC_KEY not in details.message


async def test_an_error_event_inside_a_200_stream(
    gateway: RunningGateway, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(
        Reply(events=[message_start(usage(5, 1)), stream_error("overloaded_error", "Overloaded")])
    )
    stream = gateway.stub.ChatStream(chat_pb2.ChatStreamRequest(request=chat("anthropic:claude-haiku-4-5")))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        _ = [event async for event in stream]
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_ERROR")
    assert details.info.metadata["upstream_code"] == "overloaded_error"


async def test_a_dropped_stream_is_interrupted_not_finished(
    gateway: RunningGateway, fake_anthropic: FakeAnthropic
) -> None:
    fake_anthropic.script(Reply(events=text_events(["one", " two"]), end_early=True))
    stream = gateway.stub.ChatStream(chat_pb2.ChatStreamRequest(request=chat("anthropic:claude-haiku-4-5")))
    received: list[chat_pb2.ChatStreamResponse] = []

    async def read_all() -> None:
        async for event in stream:
            received.append(event)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read_all()
    assert [e.text_delta.text for e in received if e.HasField("text_delta")] == ["one", " two"]
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_INTERRUPTED")


async def test_a_parameter_anthropic_cannot_honour_is_refused_before_any_request(
    gateway: RunningGateway, fake_anthropic: FakeAnthropic
) -> None:
    request = chat("anthropic:claude-haiku-4-5")
    request.generation.seed = 7
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(request)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.bad_request is not None
    assert [v.field for v in details.bad_request.field_violations] == ["generation.seed"]
    assert fake_anthropic.requests == []


async def test_user_helper_builds_plain_text(gateway: RunningGateway, fake_anthropic: FakeAnthropic) -> None:
    request = chat_pb2.ChatRequest(model="anthropic:claude-opus-4-5", messages=[user("Hi")])
    request.generation.max_tokens = 50
    fake_anthropic.script(Reply(json_body=message([text_block("Hello")])))
    await gateway.stub.Chat(request)
    assert fake_anthropic.requests[0].body["max_tokens"] == 50


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


async def test_images_by_url_and_bytes_become_image_blocks(
    gateway: RunningGateway, fake_anthropic: FakeAnthropic
) -> None:
    request = chat("anthropic:claude-haiku-4-5", "What differs?")
    request.messages[0].content.add(image=content_pb2.Image(url="https://example.com/a.jpg"))
    request.messages[0].content.add(image=content_pb2.Image(data=PNG, mime_type="image/png"))
    stream = gateway.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request))
    events = [event async for event in stream]
    await gateway.stub.Chat(request)
    assert events[-1].HasField("finish")
    streamed, unary = fake_anthropic.requests
    assert streamed.body["messages"] == unary.body["messages"]
    assert unary.body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What differs?"},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                {
                    "type": "image",
                    "source": {
                        "type": "base64",
                        "media_type": "image/png",
                        "data": base64.b64encode(PNG).decode(),
                    },
                },
            ],
        }
    ]


async def test_a_json_schema_goes_out_as_output_config(
    gateway: RunningGateway, fake_anthropic: FakeAnthropic
) -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }
    fake_anthropic.script(Reply(json_body=message([text_block('{"city":"Paris"}')])))
    request = chat("anthropic:claude-haiku-4-5", "Where is the Louvre?")
    request.response_format.type = content_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
    request.response_format.json_schema.update(schema)
    reply = await gateway.stub.Chat(request)
    assert json.loads(reply_text(reply.message)) == {"city": "Paris"}
    assert fake_anthropic.requests[0].body["output_config"] == {
        "format": {"type": "json_schema", "schema": schema}
    }

    request.response_format.Clear()
    request.response_format.type = content_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(request)
    assert violated_fields(error_details(caught.value)) == ["response_format"]


async def test_reasoning_streams_thinking_apart_and_counts_its_tokens(
    gateway: RunningGateway, fake_anthropic: FakeAnthropic
) -> None:
    use = usage(12, 300)
    use["output_tokens_details"] = {"thinking_tokens": 280}
    fake_anthropic.script(Reply(events=thinking_events(["Primes: 2, 3, 5"], "sig", ["Twenty-five."], use)))
    request = chat("anthropic:claude-haiku-4-5", "How many primes below 100?")
    request.reasoning.effort = chat_pb2.REASONING_EFFORT_MEDIUM
    request.generation.temperature = 0.2  # not allowed while thinking: dropped under LENIENT
    request.unsupported_parameters = chat_pb2.UNSUPPORTED_PARAMETER_POLICY_LENIENT
    stream = gateway.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request))
    events = [event async for event in stream]

    text = "".join(e.text_delta.text for e in events if e.HasField("text_delta"))
    assert text == "Twenty-five."  # the thinking is not the answer
    finish = events[-1].finish
    assert (finish.usage.completion_tokens, finish.usage.reasoning_tokens) == (300, 280)
    assert list(finish.dropped_parameters) == ["generation.temperature"]
    [sent] = fake_anthropic.requests
    assert sent.body["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert "temperature" not in sent.body


async def test_one_hour_cache_writes_are_reported_and_priced_apart(
    gateway: RunningGateway, fake_anthropic: FakeAnthropic
) -> None:
    use = usage(100, 10, cache_creation=4000, cache_creation_1h=1000)
    fake_anthropic.script(Reply(json_body=message([text_block("ok")], usage_=use)))
    reply = await gateway.stub.Chat(chat("anthropic:claude-haiku-4-5"))
    assert (reply.usage.cache_write_tokens, reply.usage.cache_write_1h_tokens) == (4000, 1000)
    # Haiku 4.5: five-minute writes $1.25 and one-hour writes $2 per million.
    assert Decimal(reply.cost.cache_write_1h) == Decimal("0.002")
    assert Decimal(reply.cost.cache_write) == Decimal("0.00375") + Decimal("0.002")


async def test_list_models_shows_the_one_hour_cache_write_price(gateway: RunningGateway) -> None:
    reply = await gateway.stub.ListModels(catalog_pb2.ListModelsRequest(provider="anthropic"))
    haiku = next(m for m in reply.models if m.id == "anthropic:claude-haiku-4-5")
    assert (haiku.pricing.cache_write_per_million, haiku.pricing.cache_write_1h_per_million) == ("1.25", "2")


@pytest.mark.parametrize("lifetime", ["off", "5m", "1h"])
async def test_prompt_caching_marks_the_tools_and_system_prompt_and_shows_the_saving(
    fake_anthropic: FakeAnthropic, lifetime: str
) -> None:
    toml = anthropic_toml(fake_anthropic.base_url) + f'prompt_caching = "{lifetime}"\n'
    system = "You are the support assistant of a large company. " * 200
    request = chat(
        "anthropic:claude-haiku-4-5",
        "Where is my order?",
        tools=[
            content_pb2.Tool(name="find_order", description="Finds an order"),
            content_pb2.Tool(name="refund", description="Refunds an order"),
        ],
    )
    request.messages.insert(
        0, content_pb2.Message(role=content_pb2.ROLE_SYSTEM, content=[content_pb2.Part(text=system)])
    )
    fake_anthropic.script(
        Reply(
            json_body=message(
                [text_block("Looking.")], usage_=usage(40, 10, cache_creation=3000, cache_creation_1h=3000)
            )
        ),
        Reply(json_body=message([text_block("Found it.")], usage_=usage(40, 10, cache_read=3000))),
    )
    async with running_gateway(toml) as gw:
        first = await gw.stub.Chat(request)
        second = await gw.stub.Chat(request)
    sent = fake_anthropic.requests[-1].body
    if lifetime == "off":
        assert sent["system"] == system
        assert all("cache_control" not in tool for tool in sent["tools"])
    else:
        mark = {"type": "ephemeral", **({"ttl": "1h"} if lifetime == "1h" else {})}
        assert sent["system"] == [{"type": "text", "text": system, "cache_control": mark}]
        assert "cache_control" not in sent["tools"][0]
        assert sent["tools"][-1]["cache_control"] == mark
    # Priced from what the provider reports: the write at the one-hour price (2 USD per million
    # for Haiku 4.5), then the read at 0.10 instead of 1, the difference shown as saved.
    assert Decimal(first.cost.cache_write) == Decimal(3000) * 2 / 1_000_000
    assert Decimal(second.cost.cached_input) == Decimal(3000) * Decimal("0.1") / 1_000_000
    assert Decimal(second.cost.cache_savings) == Decimal(3000) * Decimal("0.9") / 1_000_000
    assert Decimal(second.cost.total) < Decimal(first.cost.total)
