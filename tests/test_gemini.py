"""Gemini through the gateway, against the fake Gemini API server: the exact translated request
(URL, key header, body), normalised replies and streams (text, parallel tool calls, usage with
cached and thought tokens, cost), refused and dropped settings, and errors mapped to gRPC
statuses."""

from __future__ import annotations

import json
import re
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
    stream_past_first_delta,
    violated_fields,
)
from tests.fakes.gemini import (
    MODEL_VERSION,
    RESPONSE_ID,
    FakeGemini,
    Reply,
    blocked_response,
    candidate,
    error_reply,
    function_call_part,
    response,
    stream_error,
    text_chunks,
    text_part,
    text_response,
    tool_call_chunks,
    usage_metadata,
)

GEMINI_KEY = "AIzaSyTEST-0123456789abcdefghijklmnopq"
MODEL = "gemini:gemini-2.5-flash"
PATH = "/v1beta/models/gemini-2.5-flash"
SKIP_SIGNATURE = "skip_thought_signature_validator"
SYNTHETIC_ID = re.compile(r"^call_\d+_[0-9a-f]{12}$")
LENIENT = chat_pb2.UNSUPPORTED_PARAMETER_POLICY_LENIENT
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


def gemini_toml(base_url: str) -> str:
    return f"""
[routing]
auto = ["mock:echo"]
[providers.gemini]
kind = "gemini"
base_url = "{base_url}"
api_key = "{GEMINI_KEY}"
timeout = {{ connect = 2.0, read = 5.0 }}
{NO_RETRIES}
"""


@pytest.fixture
async def gateway(fake_gemini: FakeGemini) -> AsyncIterator[RunningGateway]:
    async with running_gateway(gemini_toml(fake_gemini.base_url)) as gw:
        yield gw


def system(text: str) -> content_pb2.Message:
    return content_pb2.Message(role=content_pb2.ROLE_SYSTEM, content=[content_pb2.Part(text=text)])


def weather_request(text: str = "Weather in Paris and Oslo?") -> chat_pb2.ChatRequest:
    request = chat(MODEL, text)
    request.messages.insert(0, system("Be brief."))
    tool = request.tools.add(name="get_weather", description="Weather for a city")
    tool.parameters.update(WEATHER_SCHEMA)
    return request


async def stream_events(
    gw: RunningGateway, request: chat_pb2.ChatRequest
) -> list[chat_pb2.ChatStreamResponse]:
    return [event async for event in gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request))]


def assembled_calls(events: list[chat_pb2.ChatStreamResponse]) -> list[tuple[str, str, str]]:
    """(id, name, arguments) of each streamed tool call, its deltas joined by index."""
    calls: dict[int, list[str]] = {}
    for event in events:
        if event.HasField("tool_call_delta"):
            delta = event.tool_call_delta
            call = calls.setdefault(delta.index, ["", "", ""])
            call[0] += delta.id
            call[1] += delta.name
            call[2] += delta.arguments
    return [(c[0], c[1], c[2]) for _, c in sorted(calls.items())]


# --- Requests and replies -----------------------------------------------------------------------


async def test_unary_request_is_translated_and_the_reply_normalised(
    gateway: RunningGateway, fake_gemini: FakeGemini
) -> None:
    usage = usage_metadata(1200, 40, cached=1000, thoughts=300)
    fake_gemini.script(Reply(json_body=text_response("Sunny in Paris.", usage)))
    request = weather_request()
    request.generation.temperature = 1.5
    request.generation.max_tokens = 256
    request.generation.stop.append("END")
    reply = await gateway.stub.Chat(request)

    assert reply_text(reply.message) == "Sunny in Paris."
    assert reply.message.role == content_pb2.ROLE_ASSISTANT
    assert reply.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert (reply.model, reply.provider) == (MODEL, "gemini")
    assert (reply.provider_model, reply.provider_response_id) == (MODEL_VERSION, RESPONSE_ID)
    u = reply.usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (1200, 340, 1540)
    assert (u.cache_read_tokens, u.cache_write_tokens, u.reasoning_tokens, u.estimated) == (
        1000,
        0,
        300,
        False,
    )
    # gemini-2.5-flash per million: input 0.30, cached input 0.03, output (thoughts included) 2.50.
    expected = (200 * Decimal("0.3") + 1000 * Decimal("0.03") + 340 * Decimal("2.5")) / 10**6
    assert reply.cost.status == accounting_pb2.PRICING_STATUS_PRICED
    assert Decimal(reply.cost.total) == expected
    assert Decimal(reply.cost.cached_input) == 1000 * Decimal("0.03") / 10**6

    [sent] = fake_gemini.requests
    assert (sent.method, sent.path, sent.query) == ("POST", f"{PATH}:generateContent", {})
    assert sent.headers["x-goog-api-key"] == GEMINI_KEY
    assert sent.headers["content-type"] == "application/json"
    assert "authorization" not in sent.headers
    assert sent.body == {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": "Weather in Paris and Oslo?"}]}],
        "tools": [
            {
                "functionDeclarations": [
                    {
                        "name": "get_weather",
                        "description": "Weather for a city",
                        "parametersJsonSchema": WEATHER_SCHEMA,
                    }
                ]
            }
        ],
        "generationConfig": {"temperature": 1.5, "maxOutputTokens": 256, "stopSequences": ["END"]},
    }


async def test_stream_text_usage_and_the_same_body(gateway: RunningGateway, fake_gemini: FakeGemini) -> None:
    fake_gemini.script(
        Reply(json_body=text_response("Hello")),
        Reply(chunks=text_chunks(["Hel", "lo"], usage_metadata(8, 2, cached=4, thoughts=6))),
    )
    await gateway.stub.Chat(chat(MODEL))
    events = await stream_events(gateway, chat(MODEL))

    assert events[0].start.model == MODEL
    assert [e.text_delta.text for e in events if e.HasField("text_delta")] == ["Hel", "lo"]
    finish = events[-1].finish
    assert finish.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert (finish.provider_model, finish.provider_response_id) == (MODEL_VERSION, RESPONSE_ID)
    u = finish.usage
    assert (u.prompt_tokens, u.completion_tokens, u.cache_read_tokens, u.reasoning_tokens) == (8, 8, 4, 6)
    assert not u.estimated
    assert finish.cost.status == accounting_pb2.PRICING_STATUS_PRICED
    assert (
        Decimal(finish.cost.total) == (4 * Decimal("0.3") + 4 * Decimal("0.03") + 8 * Decimal("2.5")) / 10**6
    )

    unary, streamed = fake_gemini.requests
    assert (streamed.path, streamed.query) == (f"{PATH}:streamGenerateContent", {"alt": "sse"})
    assert streamed.headers["x-goog-api-key"] == GEMINI_KEY
    assert (
        streamed.body
        == unary.body
        == {"contents": [{"role": "user", "parts": [{"text": "Hello there, gateway"}]}]}
    )


async def test_the_unscripted_fake_echoes_through_both_paths(gateway: RunningGateway) -> None:
    reply = await gateway.stub.Chat(chat(MODEL, "echo me back"))
    events = await stream_events(gateway, chat(MODEL, "echo me back"))
    assert reply_text(reply.message) == "echo me back"
    assert [e.text_delta.text for e in events if e.HasField("text_delta")] == ["echo ", "me ", "back"]


async def test_parallel_tool_calls_stream_and_unary_assemble_the_same(
    gateway: RunningGateway, fake_gemini: FakeGemini
) -> None:
    calls = [
        function_call_part("get_weather", {"city": "Paris"}, signature="CiQB0e2Kb7"),
        function_call_part("get_weather", {"city": "Oslo", "days": [1, 2]}),
    ]
    usage = usage_metadata(40, 30, thoughts=20)
    fake_gemini.script(
        Reply(json_body=response([candidate([text_part("Checking both."), *calls])], usage)),
        Reply(chunks=tool_call_chunks(["Checking ", "both."], calls, usage)),
    )
    request = weather_request()
    request.tool_choice.mode = content_pb2.TOOL_CHOICE_MODE_REQUIRED
    unary = await gateway.stub.Chat(request)
    events = await stream_events(gateway, request)

    expected = [("get_weather", '{"city":"Paris"}'), ("get_weather", '{"city":"Oslo","days":[1,2]}')]
    assert [(c.name, c.arguments) for c in unary.message.tool_calls] == expected
    streamed = assembled_calls(events)
    assert [(name, arguments) for _, name, arguments in streamed] == expected
    ids = [c.id for c in unary.message.tool_calls] + [call_id for call_id, _, _ in streamed]
    assert all(SYNTHETIC_ID.match(call_id) for call_id in ids)
    assert len(set(ids)) == 4  # Gemini 2.5 sends no ids: the gateway's are unique per reply
    text = "".join(e.text_delta.text for e in events if e.HasField("text_delta"))
    assert text == reply_text(unary.message) == "Checking both."
    finish = events[-1].finish
    assert finish.finish_reason == unary.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    assert finish.usage.completion_tokens == unary.usage.completion_tokens == 50
    assert fake_gemini.requests[0].body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


async def test_gemini_call_ids_are_kept_in_unary_and_stream(
    gateway: RunningGateway, fake_gemini: FakeGemini
) -> None:
    calls = [function_call_part("get_weather", {"city": "Paris"}, call_id="q1w2e3r4")]
    fake_gemini.script(
        Reply(json_body=response([candidate(calls)])), Reply(chunks=tool_call_chunks([], calls))
    )
    unary = await gateway.stub.Chat(weather_request())
    events = await stream_events(gateway, weather_request())
    [call] = unary.message.tool_calls
    assert (
        assembled_calls(events)
        == [(call.id, call.name, call.arguments)]
        == [("q1w2e3r4", "get_weather", '{"city":"Paris"}')]
    )


async def test_a_tool_result_turn_becomes_a_named_function_response(
    gateway: RunningGateway, fake_gemini: FakeGemini
) -> None:
    request = weather_request("Weather in Paris?")
    call = content_pb2.ToolCall(id="call_0_abc", name="get_weather", arguments='{"city": "Paris"}')
    request.messages.append(content_pb2.Message(role=content_pb2.ROLE_ASSISTANT, tool_calls=[call]))
    request.messages.append(
        content_pb2.Message(
            role=content_pb2.ROLE_TOOL,
            tool_call_id="call_0_abc",
            content=[content_pb2.Part(text="18C, clear")],
        )
    )
    fake_gemini.script(Reply(json_body=text_response("18C and clear in Paris.")))
    reply = await gateway.stub.Chat(request)
    assert reply_text(reply.message) == "18C and clear in Paris."
    assert fake_gemini.requests[0].body["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                    "thoughtSignature": SKIP_SIGNATURE,
                }
            ],
        },
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "18C, clear"}}}],
        },
    ]


async def test_a_tool_result_for_an_unknown_call_is_refused(
    gateway: RunningGateway, fake_gemini: FakeGemini
) -> None:
    request = weather_request()
    request.messages.append(
        content_pb2.Message(
            role=content_pb2.ROLE_TOOL, tool_call_id="nope", content=[content_pb2.Part(text="x")]
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(request)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(details) == ["messages[2].tool_call_id"]
    assert fake_gemini.requests == []


async def test_images_json_schema_and_reasoning(gateway: RunningGateway, fake_gemini: FakeGemini) -> None:
    request = chat_pb2.ChatRequest(
        model=MODEL,
        messages=[
            content_pb2.Message(
                role=content_pb2.ROLE_USER,
                content=[
                    content_pb2.Part(text="Count the cats."),
                    content_pb2.Part(
                        image=content_pb2.Image(data=b"\xff\xd8\xff\xe0", mime_type="image/jpeg")
                    ),
                    content_pb2.Part(
                        image=content_pb2.Image(
                            url="https://example.com/cats.png", detail=content_pb2.IMAGE_DETAIL_HIGH
                        )
                    ),
                ],
            )
        ],
    )
    request.response_format.type = content_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
    request.response_format.schema_name = "count"
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"cats": {"type": "integer", "minimum": 0}},
        "required": ["cats"],
    }
    request.response_format.json_schema.update(schema)
    request.reasoning.effort = chat_pb2.REASONING_EFFORT_MEDIUM
    fake_gemini.script(Reply(json_body=text_response('{"cats": 3}', usage_metadata(600, 6, thoughts=200))))
    reply = await gateway.stub.Chat(request)

    assert json.loads(reply_text(reply.message)) == {"cats": 3}
    assert (reply.usage.completion_tokens, reply.usage.reasoning_tokens) == (206, 200)
    assert fake_gemini.requests[0].body == {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "Count the cats."},
                    {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4A=="}},
                    {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cats.png"}},
                ],
            }
        ],
        "generationConfig": {
            "responseMimeType": "application/json",
            "responseJsonSchema": schema,
            "thinkingConfig": {"thinkingBudget": 8192},
            "mediaResolution": "MEDIA_RESOLUTION_HIGH",
        },
    }


async def test_provider_options_are_merged_into_the_body(
    gateway: RunningGateway, fake_gemini: FakeGemini
) -> None:
    request = chat(MODEL)
    request.provider_options["gemini"].update(
        {"safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_ONLY_HIGH"}]}
    )
    fake_gemini.script(Reply(json_body=text_response("ok")))
    await gateway.stub.Chat(request)
    assert fake_gemini.requests[0].body["safetySettings"] == [
        {"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_ONLY_HIGH"}
    ]


async def test_a_blocked_prompt_finishes_as_content_filter(
    gateway: RunningGateway, fake_gemini: FakeGemini
) -> None:
    fake_gemini.script(
        Reply(json_body=blocked_response("SAFETY", 12)), Reply(chunks=[blocked_response("SAFETY", 12)])
    )
    reply = await gateway.stub.Chat(chat(MODEL))
    events = await stream_events(gateway, chat(MODEL))
    assert (reply_text(reply.message), reply.finish_reason) == ("", chat_pb2.FINISH_REASON_CONTENT_FILTER)
    assert reply.usage.prompt_tokens == 12
    assert not [e for e in events if e.HasField("text_delta")]
    assert events[-1].finish.finish_reason == chat_pb2.FINISH_REASON_CONTENT_FILTER


# --- Settings Gemini cannot honour --------------------------------------------------------------


async def test_parallel_tool_calls_off_is_refused_strictly_and_dropped_leniently(
    gateway: RunningGateway, fake_gemini: FakeGemini
) -> None:
    request = weather_request()
    request.parallel_tool_calls = False
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(request)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(details) == ["parallel_tool_calls"]
    assert details.bad_request is not None
    assert "LENIENT" in details.bad_request.field_violations[0].description
    assert fake_gemini.requests == []

    request.unsupported_parameters = LENIENT
    fake_gemini.script(Reply(json_body=text_response("ok")), Reply(chunks=text_chunks(["ok"])))
    reply = await gateway.stub.Chat(request)
    events = await stream_events(gateway, request)
    assert list(reply.dropped_parameters) == ["parallel_tool_calls"]
    assert list(events[-1].finish.dropped_parameters) == ["parallel_tool_calls"]
    for sent in fake_gemini.requests:
        assert "toolConfig" not in sent.body
        assert "parallel" not in json.dumps(sent.body).lower()


# --- Errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "http_status", "code", "reason"),
    [
        ("INVALID_ARGUMENT", 400, grpc.StatusCode.INVALID_ARGUMENT, "UPSTREAM_INVALID_REQUEST"),
        ("UNAUTHENTICATED", 401, grpc.StatusCode.FAILED_PRECONDITION, "PROVIDER_AUTH_FAILED"),
        ("PERMISSION_DENIED", 403, grpc.StatusCode.PERMISSION_DENIED, "PROVIDER_PERMISSION_DENIED"),
        ("NOT_FOUND", 404, grpc.StatusCode.NOT_FOUND, "UPSTREAM_NOT_FOUND"),
        ("RESOURCE_EXHAUSTED", 429, grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED"),
        ("INTERNAL", 500, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
        ("UNAVAILABLE", 503, grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    ],
)
async def test_http_errors_are_mapped(
    gateway: RunningGateway,
    fake_gemini: FakeGemini,
    status: str,
    http_status: int,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    fake_gemini.script(error_reply(status, f"{status.lower()} happened (key {GEMINI_KEY})"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat(MODEL))
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (code, reason)
    assert details.info.metadata["provider"] == "gemini"
    assert details.info.metadata["model"] == MODEL
    assert details.info.metadata["upstream_status"] == str(http_status)
    assert GEMINI_KEY not in details.message
    if code != grpc.StatusCode.FAILED_PRECONDITION:  # that one names the config key to fix instead
        assert f"{status.lower()} happened" in details.message
    assert len(fake_gemini.requests) == 1


async def test_a_bad_key_never_shows_the_key(gateway: RunningGateway, fake_gemini: FakeGemini) -> None:
    # What Google answers for a wrong API key: 400 INVALID_ARGUMENT with reason API_KEY_INVALID.
    fake_gemini.script(
        error_reply(
            "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID"
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat(MODEL))
    details = error_details(caught.value)
    # The operator's key is wrong, not the caller's request.
    assert (details.code, details.info.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PROVIDER_AUTH_FAILED",
    )
    assert "providers.gemini.api_key" in details.message
    assert GEMINI_KEY not in details.message
    assert all(GEMINI_KEY not in value for value in details.info.metadata.values())


async def test_rate_limit_retry_after_becomes_retry_info(
    gateway: RunningGateway, fake_gemini: FakeGemini
) -> None:
    fake_gemini.script(
        # Google sends no Retry-After header: the delay is a RetryInfo in the body.
        error_reply("RESOURCE_EXHAUSTED", "Quota exceeded for metric", retry_delay="12s")
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat(MODEL))
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "UPSTREAM_RATE_LIMITED",
    )
    assert details.info.metadata["upstream_code"] == "RESOURCE_EXHAUSTED"
    assert details.retry is not None
    assert details.retry.retry_delay.seconds == 12


async def test_an_overloaded_model_falls_back(gateway: RunningGateway, fake_gemini: FakeGemini) -> None:
    fake_gemini.script(error_reply("UNAVAILABLE", "The model is overloaded. Please try again later."))
    request = chat(MODEL)
    request.fallback_models.append("mock:echo")
    reply = await gateway.stub.Chat(request)
    assert reply.model == "mock:echo"
    attempt = reply.routing.attempts[0]
    assert (attempt.model, attempt.code) == (MODEL, "UNAVAILABLE")


async def test_an_http_error_on_a_stream_request(gateway: RunningGateway, fake_gemini: FakeGemini) -> None:
    fake_gemini.script(error_reply("NOT_FOUND", "models/gemini-9 is not found for API version v1beta"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream_events(gateway, chat("gemini:gemini-9"))
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (grpc.StatusCode.NOT_FOUND, "UPSTREAM_NOT_FOUND")
    assert fake_gemini.requests[0].path == "/v1beta/models/gemini-9:streamGenerateContent"


@pytest.mark.parametrize("drop", [True, False], ids=["connection-dropped", "closed-without-finish"])
async def test_a_stream_cut_short_is_interrupted_not_finished(
    gateway: RunningGateway, fake_gemini: FakeGemini, drop: bool
) -> None:
    fake_gemini.script(Reply(chunks=text_chunks(["one", " two", " three"])[:2], drop=drop))
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


async def test_a_caller_going_away_closes_the_upstream_stream(
    gateway: RunningGateway, fake_gemini: FakeGemini
) -> None:
    fake_gemini.script(Reply(chunks=text_chunks([f"w{i} " for i in range(200)]), chunk_delay=0.02))
    call = await stream_past_first_delta(gateway, chat(MODEL))
    call.cancel()
    await fake_gemini.disconnected()
    assert fake_gemini.disconnects == 1


async def test_an_error_inside_a_200_stream(gateway: RunningGateway, fake_gemini: FakeGemini) -> None:
    fake_gemini.script(
        Reply(chunks=[*text_chunks(["Hel", "lo"])[:1], stream_error("INTERNAL", "Internal error")])
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream_events(gateway, chat(MODEL))
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_ERROR")
    assert details.info.metadata["upstream_code"] == "INTERNAL"
    assert "Internal error" in details.message


async def test_a_malformed_chunk_is_a_bad_response(gateway: RunningGateway, fake_gemini: FakeGemini) -> None:
    fake_gemini.script(Reply(chunks=['{"candidates": [', *text_chunks(["ok"])]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream_events(gateway, chat(MODEL))
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_BAD_RESPONSE")
