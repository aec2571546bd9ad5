"""The fake Cohere server against the oracle: the official `cohere` SDK (v2 client) parses every body
and event stream the fake sends, its pydantic types validate every builder's output (no field it
does not know but the few the API is seen to send beyond them, no value it would have to coerce),
and the request the adapter builds is the one the SDK sends for the same conversation."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any, cast

import aiohttp
import cohere
import httpx
import pydantic
import pytest
from cohere.types import TextAssistantMessageResponseContentItem, ThinkingAssistantMessageResponseContentItem
from cohere.v2.types import V2ChatResponse, V2ChatStreamResponse

from llm_gateway.catalog import ModelSpec
from llm_gateway.domain.messages import (
    ChatRequest,
    GenerationConfig,
    ImagePart,
    Message,
    Reasoning,
    ResponseFormat,
    ResponseFormatType,
    Role,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
)
from llm_gateway.pricing.sheet import UNKNOWN_PRICE
from llm_gateway.providers.base import UpstreamCall
from llm_gateway.providers.cohere.mapping import build_body
from tests.fakes.cohere import (
    RESPONSE_ID,
    FakeCohere,
    Reply,
    chat_response,
    citation_end,
    citation_start,
    content_end,
    error_body,
    error_reply,
    message_end,
    message_start,
    sse_bytes,
    text_events,
    text_item,
    thinking_events,
    thinking_item,
    tool_call,
    tool_call_events,
    usage,
)

# cohere 7.3.1 reads a pydantic v1 attribute while parsing unions; its warning is not the fake's.
pytestmark = pytest.mark.filterwarnings("ignore:The `__fields__` attribute is deprecated")

MODEL = "command-a-03-2025"
USER: list[Any] = [{"role": "user", "content": "What is the weather in Oslo?"}]
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
# What the API sends in message-start beyond the SDK's type for it (which declares `role` only).
MESSAGE_START_EXTRAS = {"content": [], "tool_plan": "", "tool_calls": [], "citations": []}


@pytest.fixture
async def client(fake_cohere: FakeCohere) -> AsyncIterator[cohere.AsyncClientV2]:
    async with cohere.AsyncClientV2(api_key="co-test", base_url=fake_cohere.base_url, max_retries=0) as sdk:
        yield sdk


def unknown_fields(value: object, where: str = "$") -> dict[str, Any]:
    """Every key the SDK's types do not declare (its models allow extras), by path."""
    found: dict[str, Any] = {}
    if isinstance(value, pydantic.BaseModel):
        for key, extra in (value.model_extra or {}).items():
            found[f"{where}.{key}"] = extra
        for name in type(value).model_fields:
            found.update(unknown_fields(getattr(value, name), f"{where}.{name}"))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found.update(unknown_fields(item, f"{where}[{i}]"))
    return found


def strictly(type_: Any, data: dict[str, Any]) -> Any:
    """`data` validated by the SDK's type, with no value coerced and no unknown field but the
    message-start extras."""
    parsed = pydantic.TypeAdapter(type_).validate_python(data)
    extras = unknown_fields(parsed)
    if data.get("type") == "message-start":
        assert extras == {f"$.delta.message.{k}": v for k, v in MESSAGE_START_EXTRAS.items()}
    else:
        assert extras == {}
    assert parsed.model_dump(mode="json", exclude_unset=True) == data
    return parsed


# --- Shapes, validated by the SDK's types -------------------------------------------------------


def test_chat_response_shapes_validate_strictly() -> None:
    text = strictly(
        V2ChatResponse,
        chat_response(
            [thinking_item("Oslo is in Norway."), text_item("Sunny.")],
            usage_=usage(8, 50, cached_tokens=1360),
        ),
    )
    assert text.usage.cached_tokens == 1360
    tools = strictly(
        V2ChatResponse,
        chat_response(
            finish_reason="TOOL_CALL",
            tool_plan="I will check.",
            tool_calls=[tool_call("get_weather_1", "get_weather", '{"city":"Oslo"}')],
        ),
    )
    assert tools.message.tool_calls[0].function.arguments == '{"city":"Oslo"}'
    assert tools.message.content is None  # a tool-calling turn has no content, as the API sends it


@pytest.mark.parametrize(
    "events",
    [
        text_events(["Hel", "lo"], usage(9, 2, cached_tokens=4)),
        tool_call_events(
            ["I will ", "check."], [("a_1", "get_weather", ['{"city"', ': "Oslo"}']), ("b_2", "f", [])]
        ),
        thinking_events(["Hmm", "."], ["Sunny."]),
        [citation_start(0, "18C", 0, 3, "get_weather_1:0"), citation_end(0)],
        [message_end("ERROR", usage(5, 0), error="internal error")],
    ],
    ids=["text", "tool_calls", "thinking", "citations", "error"],
)
def test_stream_events_validate_strictly(events: list[dict[str, Any]]) -> None:
    for event in events:
        strictly(V2ChatStreamResponse, event)


def test_message_start_has_the_fields_the_api_sends() -> None:
    assert message_start() == {
        "id": RESPONSE_ID,
        "type": "message-start",
        "delta": {"message": {"role": "assistant", **MESSAGE_START_EXTRAS}},
    }


def test_usage_counts_the_prompt_template_only_in_model_tokens() -> None:
    assert usage(20, 5, cached_tokens=1410) == {
        "billed_units": {"input_tokens": 20, "output_tokens": 5},
        "tokens": {"input_tokens": 1420, "output_tokens": 5},
        "cached_tokens": 1410,
    }


async def test_sse_framing_is_coheres(fake_cohere: FakeCohere) -> None:
    events = [message_start(), content_end(0)]
    fake_cohere.script(Reply(events=events))
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{fake_cohere.base_url}/v2/chat", json={"stream": True}) as response,
    ):
        assert response.headers["Content-Type"] == "text/event-stream"
        raw = await response.read()
    assert raw == sse_bytes(events)
    assert raw.endswith(b'event: content-end\ndata: {"type":"content-end","index":0}\n\n')
    assert raw.startswith(b'event: message-start\ndata: {"id":"' + RESPONSE_ID.encode())


# --- The adapter's request is the SDK's ---------------------------------------------------------

SPEC = ModelSpec(
    f"cohere:{MODEL}", "cohere", MODEL, "Command A", None, None, None, UNKNOWN_PRICE, listed=False
)
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}}
# The same calls, as SDK arguments and as domain requests. (Cohere takes no JSON output together
# with tools, which the adapter checks and the SDK does not, hence two calls.)
SAME_CALLS: list[tuple[dict[str, Any], ChatRequest]] = [
    (
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Weather here?"},
                        {
                            "type": "image_url",
                            "image_url": {"url": "data:image/png;base64,iVBORw0K", "detail": "low"},
                        },
                    ],
                },
                {
                    "role": "assistant",
                    "tool_plan": "I will check.",
                    "tool_calls": [
                        {
                            "id": "get_weather_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "get_weather_1", "content": "9C"},
                {"role": "assistant", "content": "It is 9C."},
                {"role": "user", "content": "And tomorrow?"},
            ],
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
            "strict_tools": True,
            "tool_choice": "REQUIRED",
        },
        ChatRequest(
            model=SPEC.id,
            messages=(
                Message(Role.SYSTEM, (TextPart("Be brief."),)),
                Message(
                    Role.USER,
                    (
                        TextPart("Weather here?"),
                        ImagePart(data=b"\x89PNG\r\n", mime_type="image/png", detail="low"),
                    ),
                ),
                Message(
                    Role.ASSISTANT,
                    (TextPart("I will check."),),
                    tool_calls=(ToolCall("get_weather_1", "get_weather", '{"city": "Oslo"}'),),
                ),
                Message(Role.TOOL, (TextPart("9C"),), tool_call_id="get_weather_1"),
                Message(Role.ASSISTANT, (TextPart("It is 9C."),)),
                Message(Role.USER, (TextPart("And tomorrow?"),)),
            ),
            tools=(Tool("get_weather", "Weather for a city", WEATHER_SCHEMA, strict=True),),
            tool_choice=ToolChoice(ToolChoiceMode.REQUIRED),
        ),
    ),
    (
        {
            "messages": [{"role": "user", "content": "Answer in JSON."}],
            "temperature": 0.2,
            "p": 0.9,
            "k": 40,
            "max_tokens": 100,
            "stop_sequences": ["END"],
            "seed": 7,
            "frequency_penalty": 0.1,
            "presence_penalty": 0.2,
            "response_format": {"type": "json_object", "json_schema": SCHEMA},
            "thinking": {"type": "enabled", "token_budget": 3000},
        },
        ChatRequest(
            model=SPEC.id,
            messages=(Message(Role.USER, (TextPart("Answer in JSON."),)),),
            generation=GenerationConfig(
                temperature=0.2,
                top_p=0.9,
                top_k=40,
                max_tokens=100,
                stop=("END",),
                seed=7,
                frequency_penalty=0.1,
                presence_penalty=0.2,
            ),
            response_format=ResponseFormat(ResponseFormatType.JSON_SCHEMA, SCHEMA),
            reasoning=Reasoning(budget_tokens=3000),
        ),
    ),
]


@pytest.mark.parametrize(
    ("sdk_arguments", "request_"), SAME_CALLS, ids=["conversation_and_tools", "settings"]
)
@pytest.mark.parametrize("stream", [False, True])
async def test_the_adapter_builds_the_body_the_sdk_sends(
    fake_cohere: FakeCohere,
    client: cohere.AsyncClientV2,
    sdk_arguments: dict[str, Any],
    request_: ChatRequest,
    stream: bool,
) -> None:
    if stream:
        _ = [event async for event in client.chat_stream(model=MODEL, **sdk_arguments)]
    else:
        await client.chat(model=MODEL, **sdk_arguments)
    [sent] = fake_cohere.requests
    assert build_body(UpstreamCall(request_, SPEC), stream=stream) == sent.body
    assert sent.headers["authorization"] == "Bearer co-test"


# --- Unary, through the SDK ---------------------------------------------------------------------


async def test_sdk_parses_a_text_reply_with_thinking_and_usage(
    fake_cohere: FakeCohere, client: cohere.AsyncClientV2
) -> None:
    fake_cohere.script(
        Reply(
            json_body=chat_response(
                [thinking_item("Oslo is in Norway."), text_item("It is sunny in Oslo.")],
                usage_=usage(8, 50, cached_tokens=1360, model_input_tokens=1394, model_output_tokens=54),
            )
        )
    )
    reply = await client.chat(model=MODEL, messages=USER)
    assert reply.id == RESPONSE_ID
    assert reply.finish_reason == "COMPLETE"
    assert reply.message.content is not None
    thinking, text = reply.message.content
    assert isinstance(thinking, ThinkingAssistantMessageResponseContentItem)
    assert thinking.thinking == "Oslo is in Norway."
    assert isinstance(text, TextAssistantMessageResponseContentItem)
    assert text.text == "It is sunny in Oslo."
    assert reply.usage is not None
    assert reply.usage.billed_units is not None
    assert reply.usage.tokens is not None
    assert (reply.usage.billed_units.input_tokens, reply.usage.billed_units.output_tokens) == (8, 50)
    assert (reply.usage.tokens.input_tokens, reply.usage.tokens.output_tokens) == (1394, 54)
    assert reply.usage.cached_tokens == 1360


async def test_sdk_parses_a_tool_plan_and_two_tool_calls(
    fake_cohere: FakeCohere, client: cohere.AsyncClientV2
) -> None:
    fake_cohere.script(
        Reply(
            json_body=chat_response(
                finish_reason="TOOL_CALL",
                tool_plan="I will check both cities.",
                tool_calls=[
                    tool_call("get_weather_1", "get_weather", '{"city":"Oslo"}'),
                    tool_call("get_weather_2", "get_weather", '{"city":"Paris"}'),
                ],
            )
        )
    )
    reply = await client.chat(model=MODEL, messages=USER)
    assert reply.finish_reason == "TOOL_CALL"
    assert reply.message.tool_plan == "I will check both cities."
    calls = reply.message.tool_calls or []
    assert [(c.id, c.function.name, c.function.arguments) for c in calls if c.function] == [
        ("get_weather_1", "get_weather", '{"city":"Oslo"}'),
        ("get_weather_2", "get_weather", '{"city":"Paris"}'),
    ]


async def test_unscripted_requests_echo_the_last_user_message(
    fake_cohere: FakeCohere, client: cohere.AsyncClientV2
) -> None:
    messages: list[Any] = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "reply"},
        {"role": "user", "content": [{"type": "text", "text": "echo"}, {"type": "text", "text": "me back"}]},
    ]
    reply = await client.chat(model=MODEL, messages=messages)
    assert reply.message.content is not None
    assert [c.text for c in reply.message.content if c.type == "text"] == ["echo me back"]
    pieces = []
    async for event in client.chat_stream(model=MODEL, messages=messages):
        if (
            event.type == "content-delta"
            and event.delta
            and event.delta.message
            and event.delta.message.content
        ):
            pieces.append(event.delta.message.content.text)
    assert pieces == ["echo ", "me ", "back"]
    assert [r.body["stream"] for r in fake_cohere.requests] == [False, True]


# --- Streams, through the SDK -------------------------------------------------------------------


async def sdk_stream(client: cohere.AsyncClientV2, seen: list[dict[str, Any]]) -> None:
    """Stream a reply with the SDK, noting every event it parsed (as its fields that are set)."""
    async for event in client.chat_stream(model=MODEL, messages=USER):
        seen.append(event.model_dump(mode="json", exclude_none=True))


async def test_sdk_streams_text_and_the_final_usage(
    fake_cohere: FakeCohere, client: cohere.AsyncClientV2
) -> None:
    fake_cohere.script(Reply(events=text_events(["Hello", ", ", "world"], usage(25, 12, cached_tokens=7))))
    seen: list[dict[str, Any]] = []
    await sdk_stream(client, seen)
    assert [e["type"] for e in seen] == [
        "message-start",
        "content-start",
        "content-delta",
        "content-delta",
        "content-delta",
        "content-end",
        "message-end",
    ]
    text = "".join(e["delta"]["message"]["content"]["text"] for e in seen if e["type"] == "content-delta")
    assert text == "Hello, world"
    final = seen[-1]["delta"]
    assert final["finish_reason"] == "COMPLETE"
    assert final["usage"] == {
        "billed_units": {"input_tokens": 25, "output_tokens": 12},
        "tokens": {"input_tokens": 1425, "output_tokens": 12},
        "cached_tokens": 7,
    }


async def test_sdk_streams_tool_calls_whose_pieces_assemble(
    fake_cohere: FakeCohere, client: cohere.AsyncClientV2
) -> None:
    fake_cohere.script(
        Reply(
            events=tool_call_events(
                ["I will ", "check."],
                [
                    ("get_weather_1", "get_weather", ['{"', "city", '": "', "Oslo", '"}']),
                    ("now_2", "now", []),
                ],
            )
        )
    )
    seen: list[dict[str, Any]] = []
    await sdk_stream(client, seen)
    plan = "".join(e["delta"]["message"]["tool_plan"] for e in seen if e["type"] == "tool-plan-delta")
    starts = {e["index"]: e["delta"]["message"]["tool_calls"] for e in seen if e["type"] == "tool-call-start"}
    arguments = {i: [call["function"]["arguments"]] for i, call in starts.items()}
    for event in seen:
        if event["type"] == "tool-call-delta":
            arguments[event["index"]].append(event["delta"]["message"]["tool_calls"]["function"]["arguments"])
    assert plan == "I will check."
    assert {i: (call["id"], call["function"]["name"]) for i, call in starts.items()} == {
        0: ("get_weather_1", "get_weather"),
        1: ("now_2", "now"),
    }
    assert {i: "".join(pieces) for i, pieces in arguments.items()} == {0: '{"city": "Oslo"}', 1: ""}
    assert [e["index"] for e in seen if e["type"] == "tool-call-end"] == [0, 1]
    assert seen[-1]["delta"]["finish_reason"] == "TOOL_CALL"


async def test_end_early_drops_the_connection_before_message_end(
    fake_cohere: FakeCohere, client: cohere.AsyncClientV2
) -> None:
    fake_cohere.script(Reply(events=text_events(["Hel", "lo"]), end_early=True))
    seen: list[dict[str, Any]] = []
    with pytest.raises(httpx.RemoteProtocolError):
        await sdk_stream(client, seen)
    assert [e["type"] for e in seen] == [
        "message-start",
        "content-start",
        "content-delta",
        "content-delta",
        "content-end",
    ]


async def test_a_client_going_away_is_counted_as_a_disconnect(
    fake_cohere: FakeCohere, client: cohere.AsyncClientV2
) -> None:
    fake_cohere.script(Reply(events=text_events([f"w{i} " for i in range(200)]), chunk_delay=0.02))
    # The SDK's chat_stream is an async generator: closing it closes the connection.
    stream = cast(AsyncGenerator[Any, None], client.chat_stream(model=MODEL, messages=USER))
    async with aclosing(stream):
        async for event in stream:
            if event.type == "content-delta":
                break
    await fake_cohere.disconnected()
    assert fake_cohere.disconnects == 1


# --- HTTP errors, through the SDK ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, cohere.BadRequestError),
        (401, cohere.UnauthorizedError),
        (404, cohere.NotFoundError),
        (429, cohere.TooManyRequestsError),
        (500, cohere.InternalServerError),
    ],
)
async def test_http_errors_raise_the_sdks_matching_exception(
    fake_cohere: FakeCohere, client: cohere.AsyncClientV2, status: int, error_type: type[cohere.core.ApiError]
) -> None:
    fake_cohere.script(error_reply(status, f"{status} happened", retry_after=7 if status == 429 else None))
    with pytest.raises(cohere.core.ApiError) as caught:
        await client.chat(model=MODEL, messages=USER)
    assert type(caught.value) is error_type
    assert caught.value.status_code == status
    assert caught.value.body == error_body(f"{status} happened")
    assert (caught.value.headers or {}).get("retry-after") == ("7" if status == 429 else None)
    assert len(fake_cohere.requests) == 1  # max_retries=0


async def test_an_http_error_before_a_stream_raises_before_any_event(
    fake_cohere: FakeCohere, client: cohere.AsyncClientV2
) -> None:
    fake_cohere.script(error_reply(500, "internal error", error_id="5a3ad4d1"))
    seen: list[dict[str, Any]] = []
    with pytest.raises(cohere.InternalServerError) as caught:
        await sdk_stream(client, seen)
    assert seen == []
    assert caught.value.body == {"id": "5a3ad4d1", "message": "internal error"}
