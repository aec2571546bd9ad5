"""The fake Anthropic server against the oracle: the official `anthropic` SDK parses every body and
event stream the fake sends, and its pydantic types validate every builder's output strictly (no
field the SDK does not know, no value it would have to coerce)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import anthropic
import httpx2
import pytest
from anthropic.types import (
    ErrorResponse,
    Message,
    MessageParam,
    RawMessageStreamEvent,
    TextBlock,
    ThinkingBlock,
    ToolParam,
    ToolUseBlock,
)

from tests.fakes.anthropic import (
    ERROR_STATUS,
    MESSAGE_ID,
    MODEL_SNAPSHOT,
    REQUEST_ID,
    Event,
    FakeAnthropic,
    Reply,
    content_block_start,
    content_block_stop,
    error_body,
    error_reply,
    message,
    message_delta,
    message_start,
    message_stop,
    ping,
    sse_bytes,
    stream_error,
    text_block,
    text_delta,
    text_events,
    thinking_block,
    thinking_events,
    tool_use_block,
    tool_use_events,
    usage,
)
from tests.sdk_shapes import strictly

# A current model id: the SDK warns about deprecated ones (claude-sonnet-4-5 among them).
REQUEST_MODEL = "claude-sonnet-4-6"
USER: list[MessageParam] = [{"role": "user", "content": "What is the weather in Oslo?"}]
WEATHER_TOOL: ToolParam = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
async def client(fake_anthropic: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    sdk = anthropic.AsyncAnthropic(base_url=fake_anthropic.base_url, api_key="sk-ant-test", max_retries=0)
    try:
        yield sdk
    finally:
        await sdk.close()


async def read_stream(client: anthropic.AsyncAnthropic, seen: list[str]) -> None:
    """Stream a reply with the SDK's helper, noting the type of every event it yields."""
    async with client.messages.stream(model=REQUEST_MODEL, max_tokens=64, messages=USER) as stream:
        async for event in stream:
            seen.append(event.type)


# --- Shapes, validated by the SDK's types -------------------------------------------------------


def test_message_and_usage_shapes_validate_strictly() -> None:
    body = message(
        [
            thinking_block("Oslo is in Norway.", "EqQBCgIYAhIM"),
            text_block("Let me check."),
            tool_use_block("toolu_01A09q90qw90lq917835lq9", "get_weather", {"city": "Oslo"}),
        ],
        "tool_use",
        usage(100, 20, cache_read=64, cache_creation=30, cache_creation_1h=10),
    )
    parsed = strictly(Message, body)
    assert isinstance(parsed, Message)
    assert parsed.usage.cache_creation is not None
    assert parsed.usage.cache_creation.ephemeral_5m_input_tokens == 20
    assert parsed.usage.cache_creation.ephemeral_1h_input_tokens == 10
    assert parsed.usage.service_tier == "standard"
    assert body["usage"] == {
        "input_tokens": 100,
        "cache_creation_input_tokens": 30,
        "cache_read_input_tokens": 64,
        "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 10},
        "output_tokens": 20,
        "service_tier": "standard",
    }


@pytest.mark.parametrize(
    "events",
    [
        text_events(["Hel", "lo"], usage(9, 2, cache_read=4)),
        tool_use_events(["Checking."], "toolu_01", "get_weather", ['{"city": ', '"Oslo"}']),
        thinking_events(["Hmm", "."], "EqQBCgIYAhIM", ["Sunny."]),
        [
            message_delta(
                "max_tokens", 7, input_tokens=3, cache_read_input_tokens=2, cache_creation_input_tokens=1
            )
        ],
    ],
    ids=["text", "tool_use", "thinking", "message_delta_with_input_counts"],
)
def test_stream_events_validate_strictly(events: list[Event]) -> None:
    for name, data in events:
        assert data["type"] == name, "the SSE event name is the data's type"
        if name != "ping":  # the SDK drops pings by event name before parsing
            strictly(RawMessageStreamEvent, data)


def test_exact_shapes_of_a_message_and_of_message_delta() -> None:
    """Fields the SDK treats as optional but Anthropic always sends, such as stop_sequence: null."""
    assert message([text_block("Hi")], usage_=usage(3, 1)) == {
        "id": MESSAGE_ID,
        "type": "message",
        "role": "assistant",
        "model": MODEL_SNAPSHOT,
        "content": [{"type": "text", "text": "Hi"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage(3, 1),
    }
    assert message_delta("end_turn", 15) == (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 15},
        },
    )


def test_tool_input_starts_with_an_empty_json_delta() -> None:
    events = tool_use_events(["Hi"], "toolu_01", "get_weather", ['{"city": ', '"Oslo"}'], usage(5, 9))
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert events[5][1]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_01",
        "name": "get_weather",
        "input": {},
    }
    tool_deltas = [
        data["delta"] for name, data in events if name == "content_block_delta" and data["index"] == 1
    ]
    assert tool_deltas == [
        {"type": "input_json_delta", "partial_json": ""},
        {"type": "input_json_delta", "partial_json": '{"city": '},
        {"type": "input_json_delta", "partial_json": '"Oslo"}'},
    ]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"] == {"output_tokens": 9}


def test_message_start_has_empty_content_and_one_output_token() -> None:
    name, data = message_start(usage(25, 40, cache_read=5))
    assert name == "message_start"
    assert data["message"]["content"] == []
    assert data["message"]["stop_reason"] is None
    assert data["message"]["usage"]["input_tokens"] == 25
    assert data["message"]["usage"]["cache_read_input_tokens"] == 5
    assert data["message"]["usage"]["output_tokens"] == 1


@pytest.mark.parametrize("kind", sorted(ERROR_STATUS))
def test_error_bodies_validate_strictly(kind: str) -> None:
    body = error_body(kind, "Something went wrong")
    if kind == "request_too_large":
        # What the API sends with a 413; the SDK's ErrorObject union does not list it.
        assert body == {
            "type": "error",
            "error": {"type": kind, "message": "Something went wrong"},
            "request_id": REQUEST_ID,
        }
        return
    parsed = strictly(ErrorResponse, body)
    assert parsed.error.type == kind
    assert parsed.request_id == REQUEST_ID


def test_stream_error_event_validates_strictly() -> None:
    name, data = stream_error("overloaded_error", "Overloaded")
    assert name == "error"
    assert data == {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    strictly(ErrorResponse, data)


async def test_sse_framing_is_anthropics(fake_anthropic: FakeAnthropic) -> None:
    events = [ping(), content_block_stop(0), message_stop()]
    fake_anthropic.script(Reply(events=events))
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{fake_anthropic.base_url}/v1/messages", json={"stream": True}) as response,
    ):
        assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
        assert response.headers["request-id"] == REQUEST_ID
        raw = await response.read()
    assert raw == sse_bytes(events)
    assert raw == (
        b'event: ping\ndata: {"type":"ping"}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )


# --- Unary, through the SDK ---------------------------------------------------------------------


async def test_sdk_parses_a_text_message_with_cache_usage(
    fake_anthropic: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake_anthropic.script(
        Reply(
            json_body=message(
                [text_block("It is sunny in Oslo.")],
                usage_=usage(100, 20, cache_read=64, cache_creation=30, cache_creation_1h=10),
            )
        )
    )
    reply = await client.messages.create(
        model=REQUEST_MODEL, max_tokens=256, system="Be brief.", messages=USER
    )
    assert reply.id == MESSAGE_ID
    assert reply.model == MODEL_SNAPSHOT
    assert reply.role == "assistant"
    assert reply.stop_reason == "end_turn"
    assert reply.stop_sequence is None
    [block] = reply.content
    assert isinstance(block, TextBlock)
    assert block.text == "It is sunny in Oslo."
    assert reply.usage.input_tokens == 100
    assert reply.usage.output_tokens == 20
    assert reply.usage.cache_read_input_tokens == 64
    assert reply.usage.cache_creation_input_tokens == 30
    assert reply.usage.cache_creation is not None
    assert reply.usage.cache_creation.ephemeral_5m_input_tokens == 20
    assert reply.usage.cache_creation.ephemeral_1h_input_tokens == 10
    assert reply.usage.service_tier == "standard"
    assert reply._request_id == REQUEST_ID


async def test_sdk_parses_thinking_text_and_tool_use_blocks(
    fake_anthropic: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    tool_input = {"city": "Oslo", "days": [1, 2], "units": {"temp": "C"}}
    fake_anthropic.script(
        Reply(
            json_body=message(
                [
                    thinking_block("The user wants Oslo's weather.", "EqQBCgIYAhIM"),
                    text_block("Let me check."),
                    tool_use_block("toolu_01A09q90qw90lq917835lq9", "get_weather", tool_input),
                ],
                "tool_use",
                usage(50, 30),
            )
        )
    )
    reply = await client.messages.create(model=REQUEST_MODEL, max_tokens=2048, messages=USER)
    thinking, text, tool = reply.content
    assert isinstance(thinking, ThinkingBlock)
    assert (thinking.thinking, thinking.signature) == ("The user wants Oslo's weather.", "EqQBCgIYAhIM")
    assert isinstance(text, TextBlock)
    assert text.text == "Let me check."
    assert isinstance(tool, ToolUseBlock)
    assert (tool.id, tool.name, tool.input) == ("toolu_01A09q90qw90lq917835lq9", "get_weather", tool_input)
    assert reply.stop_reason == "tool_use"
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (50, 30)


async def test_the_fake_records_what_the_sdk_sent(
    fake_anthropic: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake_anthropic.script(Reply(json_body=message([text_block("ok")])))
    await client.messages.create(
        model=REQUEST_MODEL,
        max_tokens=256,
        system="Be brief.",
        messages=USER,
        stop_sequences=["END"],
        tools=[WEATHER_TOOL],
    )
    [sent] = fake_anthropic.requests
    assert (sent.method, sent.path, sent.query) == ("POST", "/v1/messages", {})
    assert sent.body == {
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "What is the weather in Oslo?"}],
        "model": REQUEST_MODEL,
        "system": "Be brief.",
        "stop_sequences": ["END"],
        "tools": [WEATHER_TOOL],
    }
    assert sent.headers["content-type"] == "application/json"
    # anthropic 2.12.0 sends the API key as a bearer token, not `x-api-key`, and a newer
    # anthropic-version than 2023-06-01.
    assert sent.headers["authorization"] == "Bearer sk-ant-test"
    assert "x-api-key" not in sent.headers
    assert sent.headers["anthropic-version"] == "2026-10-21"


async def test_unscripted_requests_echo_the_last_user_message(
    fake_anthropic: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    messages: list[MessageParam] = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": [{"type": "text", "text": "echo"}, {"type": "text", "text": "me back"}]},
    ]
    reply = await client.messages.create(model=REQUEST_MODEL, max_tokens=64, messages=messages)
    [block] = reply.content
    assert isinstance(block, TextBlock)
    assert block.text == "echo me back"
    assert reply.stop_reason == "end_turn"
    assert reply.usage.output_tokens == 3

    async with client.messages.stream(model=REQUEST_MODEL, max_tokens=64, messages=messages) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert pieces == ["echo ", "me ", "back"]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 3
    assert fake_anthropic.requests[1].body["stream"] is True


# --- Streams, through the SDK -------------------------------------------------------------------


async def test_sdk_streams_text_events(
    fake_anthropic: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake_anthropic.script(Reply(events=text_events(["Hello", ", ", "world"], usage(25, 12, cache_read=7))))
    async with client.messages.stream(model=REQUEST_MODEL, max_tokens=64, messages=USER) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    assert pieces == ["Hello", ", ", "world"]
    [block] = final.content
    assert isinstance(block, TextBlock)
    assert block.text == "Hello, world"
    assert final.id == MESSAGE_ID
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 12  # from message_delta; message_start said 1
    assert final.usage.input_tokens == 25
    assert final.usage.cache_read_input_tokens == 7
    assert fake_anthropic.requests[0].body["stream"] is True


async def test_sdk_raw_stream_sees_every_event_but_the_ping(
    fake_anthropic: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake_anthropic.script(Reply(events=text_events(["a", "b"], usage(3, 2))))
    stream = await client.messages.create(
        model=REQUEST_MODEL,
        max_tokens=64,
        messages=USER,
        stream=True,
    )
    types = [event.type async for event in stream]
    assert types == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


async def test_sdk_assembles_tool_input_from_json_deltas(
    fake_anthropic: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    json_pieces = ['{"city": ', '"Oslo", "da', 'ys": [1, 2], "units"', ': {"temp": "C"}}']
    fake_anthropic.script(
        Reply(
            events=tool_use_events(
                ["Let me ", "check."], "toolu_01", "get_weather", json_pieces, usage(40, 55)
            )
        )
    )
    async with client.messages.stream(model=REQUEST_MODEL, max_tokens=64, messages=USER) as stream:
        final = await stream.get_final_message()
    text, tool = final.content
    assert isinstance(text, TextBlock)
    assert text.text == "Let me check."
    assert isinstance(tool, ToolUseBlock)
    assert (tool.id, tool.name) == ("toolu_01", "get_weather")
    assert tool.input == {"city": "Oslo", "days": [1, 2], "units": {"temp": "C"}}
    assert final.stop_reason == "tool_use"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (40, 55)


async def test_sdk_assembles_thinking_and_its_signature(
    fake_anthropic: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake_anthropic.script(
        Reply(events=thinking_events(["Oslo is ", "in Norway."], "EqQBCgIYAhIM", ["Sunny."]))
    )
    async with client.messages.stream(model=REQUEST_MODEL, max_tokens=64, messages=USER) as stream:
        final = await stream.get_final_message()
    thinking, text = final.content
    assert isinstance(thinking, ThinkingBlock)
    assert (thinking.thinking, thinking.signature) == ("Oslo is in Norway.", "EqQBCgIYAhIM")
    assert isinstance(text, TextBlock)
    assert text.text == "Sunny."


async def test_message_delta_input_and_cache_counts_overwrite_message_starts(
    fake_anthropic: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    events = [
        message_start(usage(5, 0, cache_read=1, cache_creation=2)),
        content_block_start(0, text_block("")),
        text_delta(0, "ok"),
        content_block_stop(0),
        message_delta(
            "max_tokens", 9, input_tokens=6, cache_creation_input_tokens=40, cache_read_input_tokens=300
        ),
        message_stop(),
    ]
    fake_anthropic.script(Reply(events=events))
    async with client.messages.stream(model=REQUEST_MODEL, max_tokens=9, messages=USER) as stream:
        final = await stream.get_final_message()
    assert final.stop_reason == "max_tokens"
    assert final.usage.input_tokens == 6
    assert final.usage.output_tokens == 9
    assert final.usage.cache_creation_input_tokens == 40
    assert final.usage.cache_read_input_tokens == 300


async def test_an_error_event_in_a_200_stream_raises_api_status_error(
    fake_anthropic: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    events = [*text_events(["Hel", "lo"])[:4], stream_error("overloaded_error", "Overloaded")]
    fake_anthropic.script(Reply(events=events))
    seen: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as caught:
        await read_stream(client, seen)
    # The plain APIStatusError (the HTTP status is 200, so no subclass matches), not OverloadedError.
    assert type(caught.value) is anthropic.APIStatusError
    assert caught.value.status_code == 200
    assert caught.value.type == "overloaded_error"
    assert caught.value.api_message == "Overloaded"
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert caught.value.request_id == REQUEST_ID  # from the response header
    assert seen == ["message_start", "content_block_start", "content_block_delta", "text"]


async def test_end_early_drops_the_connection_before_the_stop(
    fake_anthropic: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake_anthropic.script(Reply(events=text_events(["Hel", "lo"]), end_early=True))
    seen: list[str] = []
    with pytest.raises(httpx2.RemoteProtocolError):
        await read_stream(client, seen)
    assert "message_delta" not in seen
    assert "message_stop" not in seen
    assert seen[-1] == "content_block_stop"


async def test_a_client_going_away_is_counted_as_a_disconnect(
    fake_anthropic: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake_anthropic.script(Reply(events=text_events([f"w{i} " for i in range(200)]), chunk_delay=0.02))
    async with client.messages.stream(model=REQUEST_MODEL, max_tokens=64, messages=USER) as stream:
        async for text in stream.text_stream:
            assert text == "w0 "
            break
    await fake_anthropic.disconnected()
    assert fake_anthropic.disconnects == 1


# --- HTTP errors, through the SDK ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "status", "error_type"),
    [
        ("invalid_request_error", 400, anthropic.BadRequestError),
        ("authentication_error", 401, anthropic.AuthenticationError),
        ("permission_error", 403, anthropic.PermissionDeniedError),
        ("not_found_error", 404, anthropic.NotFoundError),
        ("rate_limit_error", 429, anthropic.RateLimitError),
        ("api_error", 500, anthropic.InternalServerError),
        ("overloaded_error", 529, anthropic.OverloadedError),
    ],
)
async def test_http_errors_raise_the_sdks_matching_exception(
    fake_anthropic: FakeAnthropic,
    client: anthropic.AsyncAnthropic,
    kind: str,
    status: int,
    error_type: type[anthropic.APIStatusError],
) -> None:
    fake_anthropic.script(error_reply(kind, f"{kind} happened", retry_after=7 if status == 429 else None))
    with pytest.raises(anthropic.APIStatusError) as caught:
        await client.messages.create(model=REQUEST_MODEL, max_tokens=64, messages=USER)
    assert type(caught.value) is error_type
    assert caught.value.status_code == status
    assert caught.value.type == kind
    assert caught.value.api_message == f"{kind} happened"
    assert caught.value.request_id == REQUEST_ID
    assert caught.value.body == error_body(kind, f"{kind} happened")
    assert caught.value.response.headers.get("retry-after") == ("7" if status == 429 else None)
    assert len(fake_anthropic.requests) == 1  # max_retries=0


async def test_an_http_error_before_a_stream_raises_before_any_event(
    fake_anthropic: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake_anthropic.script(error_reply("overloaded_error", "Overloaded"))
    with pytest.raises(anthropic.OverloadedError):
        async with client.messages.stream(model=REQUEST_MODEL, max_tokens=64, messages=USER):
            pytest.fail("the stream must not open")


async def test_a_non_json_error_reaches_the_sdk_as_text(
    fake_anthropic: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake_anthropic.script(
        Reply(status=502, raw=b"<html>Bad Gateway</html>", headers={"Content-Type": "text/html"})
    )
    with pytest.raises(anthropic.InternalServerError) as caught:
        await client.messages.create(model=REQUEST_MODEL, max_tokens=64, messages=USER)
    assert caught.value.status_code == 502
    assert caught.value.body == "<html>Bad Gateway</html>"
    assert caught.value.type is None
