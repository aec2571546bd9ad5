"""The OpenAI adapter against a fake OpenAI server on loopback that speaks the real wire format."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from llmgateway.v1 import accounting_pb2, chat_pb2, content_pb2
from tests.conftest import (
    OPENAI_TEST_KEY,
    RunningGateway,
    chat,
    error_details,
    openai_toml,
    reply_text,
    running_gateway,
    user,
)
from tests.fakes.openai import (
    MODEL_SNAPSHOT,
    FakeOpenAI,
    Reply,
    chunk,
    completion,
    text_chunks,
    tool_call,
    usage,
)


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


WEATHER = content_pb2.Tool(
    name="get_weather",
    description="Current weather",
    parameters=struct(
        {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer", "maximum": 7}},
            "required": ["city"],
        }
    ),
    strict=True,
)


async def stream_events(
    gw: RunningGateway, request: chat_pb2.ChatRequest
) -> list[chat_pb2.ChatStreamResponse]:
    return [e async for e in gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request), timeout=10)]


async def test_request_translation_is_exact(openai_gateway: RunningGateway, fake_openai: FakeOpenAI) -> None:
    png = b"\x89PNG\r\n\x1a\n0000"
    request = chat_pb2.ChatRequest(
        model="openai:gpt-4o-mini",
        messages=[
            content_pb2.Message(role=content_pb2.ROLE_SYSTEM, content=[content_pb2.Part(text="Be terse.")]),
            content_pb2.Message(
                role=content_pb2.ROLE_USER,
                name="alice",
                content=[
                    content_pb2.Part(text="What is this?"),
                    content_pb2.Part(image=content_pb2.Image(url="https://example.com/cat.jpg")),
                    content_pb2.Part(
                        image=content_pb2.Image(
                            data=png, mime_type="image/png", detail=content_pb2.IMAGE_DETAIL_HIGH
                        )
                    ),
                ],
            ),
            content_pb2.Message(
                role=content_pb2.ROLE_ASSISTANT,
                tool_calls=[
                    content_pb2.ToolCall(id="call_1", name="get_weather", arguments='{"city":"Oslo"}')
                ],
            ),
            content_pb2.Message(
                role=content_pb2.ROLE_TOOL,
                tool_call_id="call_1",
                content=[content_pb2.Part(text='{"temp":4}')],
            ),
        ],
        tools=[WEATHER],
        tool_choice=content_pb2.ToolChoice(tool_name="get_weather"),
        parallel_tool_calls=False,
        response_format=content_pb2.ResponseFormat(
            type=content_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            json_schema=struct({"type": "object", "properties": {"a": {"type": "string"}}}),
            schema_name="answer",
            strict=True,
        ),
        generation=chat_pb2.GenerationConfig(
            temperature=0.5,
            top_p=0.9,
            max_tokens=300,
            stop=["END"],
            seed=7,
            presence_penalty=0.1,
            frequency_penalty=-0.2,
        ),
        provider_options={"openai": struct({"service_tier": "flex", "logprobs": True, "top_logprobs": 2})},
    )
    await openai_gateway.stub.Chat(request)

    [sent] = fake_openai.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {OPENAI_TEST_KEY}"
    assert sent.body == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {
                "role": "user",
                "name": "alice",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    {
                        "type": "image_url",
                        "image_url": {
                            "url": "data:image/png;base64," + base64.b64encode(png).decode(),
                            "detail": "high",
                        },
                    },
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp":4}'},
        ],
        "temperature": 0.5,
        "top_p": 0.9,
        "max_completion_tokens": 300,
        "seed": 7,
        "presence_penalty": 0.1,
        "frequency_penalty": -0.2,
        "stop": ["END"],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Current weather",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "maximum": 7}},
                        "required": ["city"],
                    },
                    "strict": True,
                },
            }
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {
                "name": "answer",
                "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
                "strict": True,
            },
        },
        "service_tier": "flex",
        "logprobs": True,
        "top_logprobs": 2,
    }
    # Integral numbers stay integers through google.protobuf.Struct (which carries doubles).
    assert isinstance(sent.body["tools"][0]["function"]["parameters"]["properties"]["days"]["maximum"], int)


async def test_unary_reply_is_normalised(openai_gateway: RunningGateway, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(
        Reply(
            json_body=completion(
                "Hi there!", usage_=usage(1200, 300, cached=1000, reasoning=120), completion_id="chatcmpl-42"
            )
        )
    )
    reply = await openai_gateway.stub.Chat(chat("openai:gpt-4o-mini"))
    assert reply_text(reply.message) == "Hi there!"
    assert reply.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert (reply.provider_model, reply.provider_response_id) == (MODEL_SNAPSHOT, "chatcmpl-42")
    u = reply.usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (1200, 300, 1500)
    assert (u.cache_read_tokens, u.reasoning_tokens, u.estimated) == (1000, 120, False)
    # gpt-4o-mini list prices: $0.15/M input, $0.075/M cached input, $0.60/M output.
    c = reply.cost
    assert Decimal(c.input) == Decimal("0.00003")  # 200 uncached x 0.15/M
    assert Decimal(c.cached_input) == Decimal("0.000075")  # 1000 x 0.075/M
    assert Decimal(c.output) == Decimal("0.00018")  # 300 x 0.60/M
    assert Decimal(c.total) == Decimal("0.000285")
    assert Decimal(c.cache_savings) == Decimal("0.000075")  # 1000 x (0.15 - 0.075)/M
    assert c.status == accounting_pb2.PRICING_STATUS_PRICED
    assert reply.latency.HasField("time_to_first_byte")
    assert reply.latency.time_to_first_byte.ToTimedelta() <= reply.latency.total.ToTimedelta()


@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        ("stop", chat_pb2.FINISH_REASON_STOP),
        ("length", chat_pb2.FINISH_REASON_LENGTH),
        ("tool_calls", chat_pb2.FINISH_REASON_TOOL_CALLS),
        ("content_filter", chat_pb2.FINISH_REASON_CONTENT_FILTER),
        ("something_new", chat_pb2.FINISH_REASON_OTHER),
    ],
)
async def test_finish_reasons_map(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI, upstream: str, expected: int
) -> None:
    fake_openai.script(Reply(json_body=completion("x", finish_reason=upstream)))
    assert (await openai_gateway.stub.Chat(chat("openai:gpt-4o-mini"))).finish_reason == expected


async def test_refusal_is_reported_as_content_filter(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    body = completion(None)
    body["choices"][0]["message"]["refusal"] = "I can't help with that."
    fake_openai.script(Reply(json_body=body))
    reply = await openai_gateway.stub.Chat(chat("openai:gpt-4o-mini"))
    assert reply_text(reply.message) == "I can't help with that."
    assert reply.finish_reason == chat_pb2.FINISH_REASON_CONTENT_FILTER


async def test_parallel_tool_calls_in_a_unary_reply(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    calls = [
        tool_call("call_a", "get_weather", '{"city":"Oslo"}'),
        tool_call("call_b", "get_weather", '{"city":"Rome"}'),
    ]
    fake_openai.script(Reply(json_body=completion(None, tool_calls=calls, finish_reason="tool_calls")))
    reply = await openai_gateway.stub.Chat(chat("openai:gpt-4o-mini", tools=[WEATHER]))
    assert [(c.id, c.name, c.arguments) for c in reply.message.tool_calls] == [
        ("call_a", "get_weather", '{"city":"Oslo"}'),
        ("call_b", "get_weather", '{"city":"Rome"}'),
    ]
    assert reply.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    assert not reply.message.content


async def test_stream_forwards_deltas_and_reports_usage(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        Reply(sse=text_chunks(["Hel", "lo, ", "world", "!"], usage(50, 4, cached=32, reasoning=0)))
    )
    events = await stream_events(openai_gateway, chat("openai:gpt-4o-mini"))
    assert events[0].start.model == "openai:gpt-4o-mini"
    assert [e.text_delta.text for e in events if e.HasField("text_delta")] == ["Hel", "lo, ", "world", "!"]
    finish = events[-1].finish
    assert finish.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert (finish.usage.prompt_tokens, finish.usage.completion_tokens, finish.usage.cache_read_tokens) == (
        50,
        4,
        32,
    )
    assert not finish.usage.estimated
    assert finish.provider_model == MODEL_SNAPSHOT
    assert (
        Decimal(finish.cost.total)
        == (18 * Decimal("0.15") + 32 * Decimal("0.075") + 4 * Decimal("0.6")) / 10**6
    )

    [sent] = fake_openai.requests
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}


async def test_stream_tool_call_deltas_assemble_like_the_unary_reply(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    sse: list[dict[str, Any] | str] = [
        chunk({"role": "assistant", "content": None}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Oslo"}'}}]}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": '{"city":"Rome"}'}}]}),
        chunk({}, "tool_calls"),
        chunk(None, usage_=usage(80, 30)),
        "[DONE]",
    ]
    fake_openai.script(Reply(sse=sse))
    events = await stream_events(openai_gateway, chat("openai:gpt-4o-mini", tools=[WEATHER]))
    assembled: dict[int, list[str]] = {}
    for e in events:
        if e.HasField("tool_call_delta"):
            d = e.tool_call_delta
            entry = assembled.setdefault(d.index, [d.id, d.name, ""])
            entry[2] += d.arguments
    assert assembled == {
        0: ["call_a", "get_weather", '{"city":"Oslo"}'],
        1: ["call_b", "get_weather", '{"city":"Rome"}'],
    }
    assert events[-1].finish.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS


async def test_stream_without_usage_is_estimated_and_marked(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Reply(sse=text_chunks(["four ", "words ", "right ", "here"], None)))
    finish = (await stream_events(openai_gateway, chat("openai:gpt-4o-mini")))[-1].finish
    assert finish.usage.estimated
    assert finish.cost.estimated
    # Counted with gpt-4o-mini's own encoding (o200k_base): "four", " words", " right", " here".
    assert finish.usage.completion_tokens == 4
    # The prompt too: 3 priming + 3 framing + "user" (1) + "Hello there, gateway" (4).
    assert finish.usage.prompt_tokens == 11


async def test_unsupported_parameter_is_refused_before_the_call(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await openai_gateway.stub.Chat(
            chat("openai:gpt-4o-mini", generation=chat_pb2.GenerationConfig(top_k=5))
        )
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in details.bad_request.field_violations] == ["generation.top_k"]  # type: ignore[union-attr]
    assert fake_openai.requests == []


async def test_budget_is_checked_before_any_upstream_request(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    request = chat("openai:gpt-4o", generation=chat_pb2.GenerationConfig(max_tokens=4000), max_cost="0.001")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await openai_gateway.stub.Chat(request)
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "BUDGET_EXCEEDED")
    # gpt-4o output is $10/M: 4000 output tokens alone cost $0.04.
    assert Decimal(details.info.metadata["estimated_cost"]) > Decimal("0.04")
    assert fake_openai.requests == []


async def test_unlisted_openai_model_is_served_and_priced_from_the_catalog(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    reply = await openai_gateway.stub.Chat(chat("openai:gpt-4o-2024-05-13"))
    assert fake_openai.requests[0].body["model"] == "gpt-4o-2024-05-13"
    assert reply.cost.status == accounting_pb2.PRICING_STATUS_PRICED

    reply = await openai_gateway.stub.Chat(chat("openai:my-finetune-xyz"))
    assert reply.cost.status == accounting_pb2.PRICING_STATUS_UNKNOWN
    assert reply.cost.total == ""  # unknown is never a silent zero


async def test_organization_and_project_headers() -> None:
    async with FakeOpenAI() as fake:
        toml = openai_toml(fake.base_url, 'organization = "org-123"\nproject = "proj_456"')
        async with running_gateway(toml) as gw:
            await gw.stub.Chat(chat("openai:gpt-4o-mini"))
        headers = fake.requests[0].headers
    assert (headers["openai-organization"], headers["openai-project"]) == ("org-123", "proj_456")


async def test_the_fake_speaks_what_the_official_sdk_parses(fake_openai: FakeOpenAI) -> None:
    """The official OpenAI SDK is the oracle: it parses every body the fake sends."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=fake_openai.base_url, api_key="sk-oracle", max_retries=0)
    calls = [tool_call("call_a", "get_weather", '{"city":"Oslo"}')]
    fake_openai.script(
        Reply(json_body=completion("Hi", usage_=usage(100, 20, cached=64, reasoning=8))),
        Reply(json_body=completion(None, tool_calls=calls, finish_reason="tool_calls")),
        Reply(sse=text_chunks(["Hel", "lo"], usage(9, 2))),
    )
    first = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert first.choices[0].message.content == "Hi"
    assert first.usage is not None
    assert first.usage.prompt_tokens_details is not None
    assert first.usage.prompt_tokens_details.cached_tokens == 64
    assert first.usage.completion_tokens_details is not None
    assert first.usage.completion_tokens_details.reasoning_tokens == 8

    second = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    tool_calls = second.choices[0].message.tool_calls
    assert tool_calls is not None
    assert json.loads(tool_calls[0].function.arguments) == {"city": "Oslo"}  # type: ignore[union-attr]

    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces, final_usage = [], None
    async for part in stream:
        if part.choices and part.choices[0].delta.content:
            pieces.append(part.choices[0].delta.content)
        if part.usage is not None:
            final_usage = part.usage
    assert "".join(pieces) == "Hello"
    assert final_usage is not None
    assert final_usage.total_tokens == 11
    await client.close()


def test_unary_and_echo_sse_bodies_round_trip_json() -> None:
    # The fake's own builders produce JSON-serialisable bodies (what aiohttp sends).
    assert json.loads(json.dumps(completion("x"))) == completion("x")
    assert user("x").role == content_pb2.ROLE_USER


async def test_stream_accepts_crlf_comments_and_empty_keep_alive_events(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    # What OpenAI-compatible servers send besides plain `data:` lines: CRLF line endings,
    # `:` comment lines and empty data events as keep-alives, an event type, a charset.
    events = [e if isinstance(e, str) else json.dumps(e) for e in text_chunks(["Hi", " there"], usage(5, 2))]
    body = ": connected\r\n\r\ndata:\r\n\r\n" + "".join(
        f"event: message\r\ndata: {data}\r\n\r\n: keep-alive\r\n\r\n" for data in events
    )
    headers = {"Content-Type": "text/event-stream; charset=utf-8"}
    fake_openai.script(Reply(raw=body.encode(), headers=headers))
    streamed = await stream_events(openai_gateway, chat("openai:gpt-4o-mini"))
    assert [e.text_delta.text for e in streamed if e.HasField("text_delta")] == ["Hi", " there"]
    assert streamed[-1].finish.usage.completion_tokens == 2
    assert not streamed[-1].finish.usage.estimated


async def test_stream_that_is_not_an_event_stream_is_a_bad_response(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Reply(raw=b'{"not": "a stream"}', headers={"Content-Type": "application/json"}))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream_events(openai_gateway, chat("openai:gpt-4o-mini"))
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_BAD_RESPONSE")
    assert "application/json" in details.message
