"""Cohere through the gateway, against the fake Chat v2 server: the exact translated request,
normalised replies and streams (text, tool calls, images, JSON output, thinking, usage with cache
hits, cost), the policy for settings Cohere cannot honour, and errors mapped to gRPC statuses."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import grpc
import pytest

from llmgateway.v1 import accounting_pb2, chat_pb2, content_pb2
from tests.conftest import (
    NO_RETRIES,
    RunningGateway,
    chat,
    error_details,
    reply_text,
    running_gateway,
    violated_fields,
)
from tests.fakes.cohere import (
    TEMPLATE_TOKENS,
    FakeCohere,
    Reply,
    chat_response,
    error_reply,
    message_end,
    message_start,
    text_events,
    text_item,
    tool_call,
    tool_call_events,
    usage,
)

COHERE_KEY = "co-test-0123456789abcdefSECRET"
MODEL = "cohere:command-a-03-2025"  # genai-prices: $2.50 per million input tokens, $10 output
VISION_MODEL = "cohere:command-a-vision-07-2025"
REASONING_MODEL = "cohere:command-a-reasoning-08-2025"
LENIENT = chat_pb2.UNSUPPORTED_PARAMETER_POLICY_LENIENT
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


def cohere_toml(base_url: str) -> str:
    return f"""
[providers.cohere]
base_url = "{base_url}"
api_key = "{COHERE_KEY}"
timeout = {{ connect = 2.0, read = 5.0 }}
{NO_RETRIES}
"""


@pytest.fixture
async def gateway(fake_cohere: FakeCohere) -> AsyncIterator[RunningGateway]:
    async with running_gateway(cohere_toml(fake_cohere.base_url)) as gw:
        yield gw


def weather_request(text: str = "Weather in Paris and Oslo?") -> chat_pb2.ChatRequest:
    request = chat(MODEL, text)
    request.messages.insert(
        0, content_pb2.Message(role=content_pb2.ROLE_SYSTEM, content=[content_pb2.Part(text="Be brief.")])
    )
    tool = request.tools.add(name="get_weather", description="Weather for a city")
    tool.parameters.update(WEATHER_SCHEMA)
    return request


async def stream_events(
    gw: RunningGateway, request: chat_pb2.ChatRequest
) -> list[chat_pb2.ChatStreamResponse]:
    return [event async for event in gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request))]


async def test_unary_request_is_translated_and_the_reply_normalised_and_priced(
    gateway: RunningGateway, fake_cohere: FakeCohere
) -> None:
    # 1420 model input tokens, 1400 of them Cohere's unbilled template: 10 of the 1410 cache hits
    # are certainly among the 20 billed ones.
    fake_cohere.script(
        Reply(json_body=chat_response([text_item("Sunny.")], usage_=usage(20, 5, cached_tokens=1410)))
    )
    reply = await gateway.stub.Chat(weather_request())

    assert reply_text(reply.message) == "Sunny."
    assert reply.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert reply.provider_response_id == "1f476b96-75b3-4223-a19b-cccf591d161c"
    assert reply.provider_model == ""
    u = reply.usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.cache_read_tokens, u.estimated) == (
        20,
        5,
        25,
        10,
        False,
    )
    # Cohere has no cached-input price: all 20 input tokens at $2.50 per million, 5 output at $10.
    assert reply.cost.status == accounting_pb2.PRICING_STATUS_PRICED
    assert Decimal(reply.cost.total) == (20 * Decimal("2.5") + 5 * Decimal(10)) / 10**6

    [sent] = fake_cohere.requests
    assert (sent.method, sent.path) == ("POST", "/v2/chat")
    assert sent.headers["authorization"] == f"Bearer {COHERE_KEY}"
    assert sent.headers["content-type"] == "application/json"
    assert sent.body == {
        "model": "command-a-03-2025",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris and Oslo?"},
        ],
        "stream": False,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": WEATHER_SCHEMA,
                },
            }
        ],
    }


async def test_two_streamed_tool_calls_assemble_into_the_unary_ones(
    gateway: RunningGateway, fake_cohere: FakeCohere
) -> None:
    plan = "I will check both cities."
    use = usage(119, 52, cached_tokens=1504, model_input_tokens=1549, model_output_tokens=103)
    fake_cohere.script(
        Reply(
            json_body=chat_response(
                finish_reason="TOOL_CALL",
                tool_plan=plan,
                tool_calls=[
                    tool_call("get_weather_dqgshstja6p9", "get_weather", '{"city": "Paris"}'),
                    tool_call("get_weather_dcxfx4myvx68", "get_weather", '{"city": "Oslo"}'),
                ],
                usage_=use,
            )
        ),
        Reply(
            events=tool_call_events(
                ["I will ", "check both ", "cities."],
                [
                    ("get_weather_dqgshstja6p9", "get_weather", ['{"', "city", '": "', "Paris", '"}']),
                    ("get_weather_dcxfx4myvx68", "get_weather", ['{"city": ', '"Oslo"}']),
                ],
                use,
            )
        ),
    )
    unary = await gateway.stub.Chat(weather_request())
    events = await stream_events(gateway, weather_request())

    assert reply_text(unary.message) == plan
    assert [(c.id, c.name, c.arguments) for c in unary.message.tool_calls] == [
        ("get_weather_dqgshstja6p9", "get_weather", '{"city": "Paris"}'),
        ("get_weather_dcxfx4myvx68", "get_weather", '{"city": "Oslo"}'),
    ]
    text = "".join(e.text_delta.text for e in events if e.HasField("text_delta"))
    assert text == plan
    pieces = [e.tool_call_delta for e in events if e.HasField("tool_call_delta")]
    firsts = [(p.index, p.id, p.name) for p in pieces if p.id]
    assert firsts == [
        (0, "get_weather_dqgshstja6p9", "get_weather"),
        (1, "get_weather_dcxfx4myvx68", "get_weather"),
    ]
    assembled = [
        (call.id, call.name, "".join(p.arguments for p in pieces if p.index == i))
        for i, call in enumerate(unary.message.tool_calls)
    ]
    assert assembled == [(c.id, c.name, c.arguments) for c in unary.message.tool_calls]
    finish = events[-1].finish
    assert finish.finish_reason == unary.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    assert finish.usage == unary.usage
    assert (finish.usage.prompt_tokens, finish.usage.completion_tokens, finish.usage.cache_read_tokens) == (
        119,
        52,
        74,
    )
    assert finish.provider_response_id == unary.provider_response_id
    assert [r.body["stream"] for r in fake_cohere.requests] == [False, True]


async def test_a_tool_conversation_sends_the_plan_calls_and_results(
    gateway: RunningGateway, fake_cohere: FakeCohere
) -> None:
    request = weather_request()
    calls = [
        content_pb2.ToolCall(id="get_weather_1", name="get_weather", arguments='{"city": "Paris"}'),
        content_pb2.ToolCall(id="get_weather_2", name="get_weather", arguments='{"city": "Oslo"}'),
    ]
    request.messages.append(
        content_pb2.Message(
            role=content_pb2.ROLE_ASSISTANT,
            content=[content_pb2.Part(text="I will check both.")],
            tool_calls=calls,
        )
    )
    for call_id, result in (("get_weather_1", "18C"), ("get_weather_2", "9C")):
        request.messages.append(
            content_pb2.Message(
                role=content_pb2.ROLE_TOOL, tool_call_id=call_id, content=[content_pb2.Part(text=result)]
            )
        )
    fake_cohere.script(Reply(json_body=chat_response([text_item("Paris 18C, Oslo 9C.")])))
    reply = await gateway.stub.Chat(request)
    assert reply_text(reply.message) == "Paris 18C, Oslo 9C."
    assert fake_cohere.requests[0].body["messages"][2:] == [
        {
            "role": "assistant",
            "tool_plan": "I will check both.",
            "tool_calls": [
                tool_call("get_weather_1", "get_weather", '{"city": "Paris"}'),
                tool_call("get_weather_2", "get_weather", '{"city": "Oslo"}'),
            ],
        },
        {"role": "tool", "tool_call_id": "get_weather_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "get_weather_2", "content": "9C"},
    ]


async def test_images_go_as_image_url_parts_with_inline_bytes_as_data_urls(
    gateway: RunningGateway, fake_cohere: FakeCohere
) -> None:
    request = chat(VISION_MODEL, "What is in these pictures?")
    request.messages[0].content.add(image=content_pb2.Image(data=b"\xff\xd8\xff\xe0", mime_type="image/jpeg"))
    request.messages[0].content.add(
        image=content_pb2.Image(url="https://example.com/cat.png", detail=content_pb2.IMAGE_DETAIL_HIGH)
    )
    reply = await gateway.stub.Chat(request)
    assert reply_text(reply.message) == "What is in these pictures?"  # the fake echoes the text parts
    assert fake_cohere.requests[0].body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these pictures?"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4A=="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
            ],
        }
    ]


async def test_json_schema_output_sampling_and_thinking_are_sent_as_cohere_takes_them(
    gateway: RunningGateway, fake_cohere: FakeCohere
) -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
    }
    request = chat(REASONING_MODEL, "What is 2 + 2? Answer in JSON.")
    request.response_format.type = content_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
    request.response_format.json_schema.update(schema)
    request.reasoning.budget_tokens = 3000
    request.generation.temperature = 0.2
    request.generation.top_p = 0.9
    request.generation.top_k = 40
    request.generation.max_tokens = 200
    request.generation.stop.append("END")
    request.generation.seed = 7
    request.generation.frequency_penalty = 0.5
    request.provider_options["cohere"].update({"safety_mode": "STRICT"})
    fake_cohere.script(Reply(json_body=chat_response([text_item('{"answer": 4}')])))
    reply = await gateway.stub.Chat(request)
    assert json.loads(reply_text(reply.message)) == {"answer": 4}

    body = fake_cohere.requests[0].body
    del body["messages"]
    assert body == {
        "model": "command-a-reasoning-08-2025",
        "stream": False,
        "temperature": 0.2,
        "p": 0.9,
        "k": 40,
        "max_tokens": 200,
        "stop_sequences": ["END"],
        "seed": 7,
        "frequency_penalty": 0.5,
        "response_format": {"type": "json_object", "json_schema": schema},
        "thinking": {"type": "enabled", "token_budget": 3000},
        "safety_mode": "STRICT",
    }


async def test_stream_text_and_usage(gateway: RunningGateway, fake_cohere: FakeCohere) -> None:
    fake_cohere.script(
        Reply(events=text_events(["Hel", "lo"], usage(8, 2, cached_tokens=TEMPLATE_TOKENS + 4)))
    )
    events = await stream_events(gateway, chat(MODEL))
    assert events[0].start.model == MODEL
    assert [e.text_delta.text for e in events if e.HasField("text_delta")] == ["Hel", "lo"]
    finish = events[-1].finish
    assert finish.finish_reason == chat_pb2.FINISH_REASON_STOP
    u = finish.usage
    assert (u.prompt_tokens, u.completion_tokens, u.cache_read_tokens, u.estimated) == (8, 2, 4, False)
    assert finish.cost.status == accounting_pb2.PRICING_STATUS_PRICED
    assert Decimal(finish.cost.total) == (8 * Decimal("2.5") + 2 * Decimal(10)) / 10**6
    assert fake_cohere.requests[0].body["stream"] is True


async def test_the_unscripted_echo_round_trips(gateway: RunningGateway, fake_cohere: FakeCohere) -> None:
    reply = await gateway.stub.Chat(chat(MODEL, "echo me back"))
    events = await stream_events(gateway, chat(MODEL, "echo me back"))
    assert reply_text(reply.message) == "echo me back"
    assert [e.text_delta.text for e in events if e.HasField("text_delta")] == ["echo ", "me ", "back"]
    assert events[-1].finish.usage == reply.usage
    assert reply.usage.completion_tokens == 3


async def test_a_named_tool_choice_is_refused_when_strict_and_dropped_when_lenient(
    gateway: RunningGateway, fake_cohere: FakeCohere
) -> None:
    request = weather_request()
    request.tool_choice.tool_name = "get_weather"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(request)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(details) == ["tool_choice"]
    assert fake_cohere.requests == []

    request.unsupported_parameters = LENIENT
    reply = await gateway.stub.Chat(request)
    assert list(reply.dropped_parameters) == ["tool_choice"]
    [sent] = fake_cohere.requests
    assert "tool_choice" not in sent.body
    assert sent.body["tools"][0]["function"]["name"] == "get_weather"

    events = await stream_events(gateway, request)
    assert list(events[-1].finish.dropped_parameters) == ["tool_choice"]


async def test_required_tool_choice_and_out_of_range_settings(
    gateway: RunningGateway, fake_cohere: FakeCohere
) -> None:
    request = weather_request()
    request.tool_choice.mode = content_pb2.TOOL_CHOICE_MODE_REQUIRED
    request.generation.top_p = 1.0
    request.generation.presence_penalty = -0.5
    request.parallel_tool_calls = False
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(request)
    assert violated_fields(error_details(caught.value)) == [
        "generation.top_p",
        "generation.presence_penalty",
        "parallel_tool_calls",
    ]
    request.unsupported_parameters = LENIENT
    reply = await gateway.stub.Chat(request)
    assert list(reply.dropped_parameters) == [
        "generation.top_p",
        "generation.presence_penalty",
        "parallel_tool_calls",
    ]
    [sent] = fake_cohere.requests
    assert sent.body["tool_choice"] == "REQUIRED"
    assert not {"p", "presence_penalty", "parallel_tool_calls"} & sent.body.keys()


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (400, grpc.StatusCode.INVALID_ARGUMENT, "UPSTREAM_INVALID_REQUEST"),
        (401, grpc.StatusCode.FAILED_PRECONDITION, "PROVIDER_AUTH_FAILED"),
        (402, grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_QUOTA_EXCEEDED"),  # out of credit
        (404, grpc.StatusCode.NOT_FOUND, "UPSTREAM_NOT_FOUND"),
        (429, grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED"),
        (500, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    ],
)
async def test_http_errors_map_to_grpc_statuses_and_never_show_the_key(
    gateway: RunningGateway, fake_cohere: FakeCohere, status: int, code: grpc.StatusCode, reason: str
) -> None:
    message = f"request failed for api key {COHERE_KEY}"
    fake_cohere.script(
        error_reply(status, message, retry_after=12 if status == 429 else None, error_id="5a3ad4d1-1f0c-4e1f")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat(MODEL))
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (code, reason)
    assert details.info.metadata["upstream_status"] == str(status)
    assert details.info.metadata["provider"] == "cohere"
    assert COHERE_KEY not in details.message
    if status != 401:  # the auth error names the config to fix instead of Cohere's message
        assert "request failed for api key [REDACTED]" in details.message
    if status == 429:
        assert details.retry is not None
        assert details.retry.retry_delay.seconds == 12


async def test_a_dropped_stream_is_interrupted_not_finished(
    gateway: RunningGateway, fake_cohere: FakeCohere
) -> None:
    fake_cohere.script(Reply(events=text_events(["one", " two"]), end_early=True))
    stream = gateway.stub.ChatStream(chat_pb2.ChatStreamRequest(request=chat(MODEL)))
    received: list[chat_pb2.ChatStreamResponse] = []

    async def read_all() -> None:
        async for event in stream:
            received.append(event)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read_all()
    assert [e.text_delta.text for e in received if e.HasField("text_delta")] == ["one", " two"]
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_INTERRUPTED")


async def test_an_error_finish_inside_a_200_stream_is_an_error(
    gateway: RunningGateway, fake_cohere: FakeCohere
) -> None:
    fake_cohere.script(
        Reply(events=[message_start(), message_end("ERROR", usage(5, 0), error="internal error")])
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream_events(gateway, chat(MODEL))
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_ERROR")
    assert details.info.metadata["upstream_code"] == "ERROR"
    assert "internal error" in details.message


async def test_malformed_event_data_is_a_bad_response(
    gateway: RunningGateway, fake_cohere: FakeCohere
) -> None:
    fake_cohere.script(Reply(events=[message_start(), "{not json"]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream_events(gateway, chat(MODEL))
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_BAD_RESPONSE")
