"""The fake Gemini server against the oracle: the google-genai SDK's pydantic types (which forbid
unknown fields) validate every builder's output, and the SDK's own client, pointed at the fake,
parses its unary replies, streams and errors and sees the same text, function calls and usage.
The SDK also builds the request the gateway's adapter builds, for the same conversation."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from google import genai
from google.genai import errors, types
from pydantic import alias_generators

from llmgateway.v1 import chat_pb2, content_pb2
from tests.conftest import reply_text, running_gateway
from tests.fakes.gemini import (
    ERROR_STATUS,
    MODEL_VERSION,
    RESPONSE_ID,
    FakeGemini,
    Reply,
    blocked_response,
    candidate,
    error_body,
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
from tests.test_gemini import gemini_toml

# google-genai subclasses aiohttp's ClientSession, which aiohttp deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")

MODEL = "gemini-2.5-flash"
SIGNATURE = base64.b64encode(b"\n$\x01\xd1\xed\x8a\x6f\xbbfake-thought-signature").decode()
WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


@pytest.fixture
async def client(fake_gemini: FakeGemini) -> AsyncIterator[genai.client.AsyncClient]:
    options = types.HttpOptions(base_url=fake_gemini.base_url, api_version="v1beta")
    sdk = genai.Client(api_key="test-gemini-key", http_options=options).aio
    try:
        yield sdk
    finally:
        await sdk.aclose()


async def read_stream(client: genai.client.AsyncClient, seen: list[str | None]) -> None:
    """Streams a reply with the SDK, noting each chunk's text."""
    async for chunk in await client.models.generate_content_stream(model=MODEL, contents="Hi"):
        seen.append(chunk.text)


def strictly(data: dict[str, Any]) -> types.GenerateContentResponse:
    """`data` parsed from JSON by the SDK's type (unknown fields are errors), and dumped back the
    same: nothing coerced, nothing lost."""
    parsed = types.GenerateContentResponse.model_validate_json(json.dumps(data))
    assert parsed.model_dump(mode="json", by_alias=True, exclude_none=True) == data
    return parsed


# --- Shapes, validated by the SDK's types -------------------------------------------------------


def test_a_full_response_validates_strictly() -> None:
    data = response(
        [
            candidate(
                [
                    text_part("The user wants Paris.", thought=True),
                    text_part("Checking.", signature=SIGNATURE),
                    function_call_part("get_weather", {"city": "Paris", "days": [1, 2]}, call_id="fc_1"),
                ]
            )
        ],
        usage_metadata(1200, 40, cached=1000, thoughts=300, tool_use_prompt=50),
    )
    parsed = strictly(data)
    assert parsed.response_id == RESPONSE_ID
    assert parsed.model_version == MODEL_VERSION
    [cand] = parsed.candidates or []
    assert cand.finish_reason == types.FinishReason.STOP
    assert cand.content is not None
    thought, text, call = cand.content.parts or []
    assert (thought.thought, thought.text) == (True, "The user wants Paris.")
    assert text.thought_signature == base64.b64decode(SIGNATURE)
    assert call.function_call is not None
    assert (call.function_call.id, call.function_call.name) == ("fc_1", "get_weather")
    assert call.function_call.args == {"city": "Paris", "days": [1, 2]}
    meta = parsed.usage_metadata
    assert meta is not None
    assert (meta.prompt_token_count, meta.candidates_token_count, meta.total_token_count) == (1200, 40, 1590)
    assert (meta.cached_content_token_count, meta.thoughts_token_count) == (1000, 300)
    assert meta.tool_use_prompt_token_count == 50


@pytest.mark.parametrize(
    "data",
    [
        text_response("Hi"),
        response([candidate(None, "SAFETY")]),
        blocked_response("PROHIBITED_CONTENT"),
        *text_chunks(["Hel", "lo"], usage_metadata(8, 2, thoughts=4)),
        *tool_call_chunks(["Let me check."], [function_call_part("get_weather", {"city": "Oslo"})]),
    ],
)
def test_every_builder_validates_strictly(data: dict[str, Any]) -> None:
    strictly(data)


def test_unknown_fields_are_what_the_oracle_catches() -> None:
    with pytest.raises(ValueError, match=r"finishReasons|finish_reasons"):
        types.GenerateContentResponse.model_validate_json(
            json.dumps({"candidates": [{"finishReasons": "STOP"}]})
        )


# --- Replies, through the SDK -------------------------------------------------------------------


async def test_sdk_parses_a_unary_reply(fake_gemini: FakeGemini, client: genai.client.AsyncClient) -> None:
    fake_gemini.script(
        Reply(json_body=text_response("It is sunny.", usage_metadata(20, 5, cached=8, thoughts=30)))
    )
    reply = await client.models.generate_content(model=MODEL, contents="Weather?")
    assert reply.text == "It is sunny."
    assert reply.candidates is not None
    assert reply.candidates[0].finish_reason == types.FinishReason.STOP
    assert (reply.response_id, reply.model_version) == (RESPONSE_ID, MODEL_VERSION)
    meta = reply.usage_metadata
    assert meta is not None
    assert (meta.prompt_token_count, meta.candidates_token_count, meta.thoughts_token_count) == (20, 5, 30)
    assert meta.cached_content_token_count == 8


async def test_sdk_parses_thoughts_and_parallel_function_calls(
    fake_gemini: FakeGemini, client: genai.client.AsyncClient
) -> None:
    parts = [
        text_part("Two cities.", thought=True),
        function_call_part("get_weather", {"city": "Paris"}, signature=SIGNATURE),
        function_call_part("get_weather", {"city": "Oslo", "units": {"temp": "C"}}),
    ]
    fake_gemini.script(Reply(json_body=response([candidate(parts)])))
    reply = await client.models.generate_content(model=MODEL, contents="Weather in Paris and Oslo?")
    assert [(c.name, c.args, c.id) for c in reply.function_calls or []] == [
        ("get_weather", {"city": "Paris"}, None),
        ("get_weather", {"city": "Oslo", "units": {"temp": "C"}}, None),
    ]
    assert reply.candidates is not None
    content = reply.candidates[0].content
    assert content is not None
    assert [p.thought for p in content.parts or []] == [True, None, None]


async def test_sdk_sees_a_blocked_prompt(fake_gemini: FakeGemini, client: genai.client.AsyncClient) -> None:
    fake_gemini.script(Reply(json_body=blocked_response("SAFETY", 9)))
    reply = await client.models.generate_content(model=MODEL, contents="something bad")
    assert reply.candidates is None
    assert reply.prompt_feedback is not None
    assert reply.prompt_feedback.block_reason == types.BlockedReason.SAFETY
    assert reply.text is None


async def test_sdk_streams_text_and_final_usage(
    fake_gemini: FakeGemini, client: genai.client.AsyncClient
) -> None:
    fake_gemini.script(
        Reply(chunks=text_chunks(["Hello", ", ", "world"], usage_metadata(25, 3, thoughts=10)))
    )
    chunks = [c async for c in await client.models.generate_content_stream(model=MODEL, contents="Hi")]
    assert [c.text for c in chunks] == ["Hello", ", ", "world"]
    finish = [c.candidates[0].finish_reason for c in chunks if c.candidates]
    assert finish == [None, None, types.FinishReason.STOP]
    meta = chunks[-1].usage_metadata
    assert meta is not None
    assert (meta.prompt_token_count, meta.candidates_token_count, meta.thoughts_token_count) == (25, 3, 10)
    assert chunks[0].usage_metadata is not None
    assert chunks[0].usage_metadata.candidates_token_count == 1  # counts so far


async def test_sdk_streams_whole_function_calls(
    fake_gemini: FakeGemini, client: genai.client.AsyncClient
) -> None:
    calls = [
        function_call_part("get_weather", {"city": "Paris"}, signature=SIGNATURE),
        function_call_part("get_time", {"zone": "Europe/Oslo"}),
    ]
    fake_gemini.script(Reply(chunks=tool_call_chunks(["Let me ", "check."], calls)))
    chunks = [c async for c in await client.models.generate_content_stream(model=MODEL, contents="Hi")]
    assert "".join(c.text or "" for c in chunks[:-1]) == "Let me check."
    assert [(c.name, c.args) for c in chunks[-1].function_calls or []] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"zone": "Europe/Oslo"}),
    ]


async def test_unscripted_requests_echo_the_last_user_turn(
    fake_gemini: FakeGemini, client: genai.client.AsyncClient
) -> None:
    contents = [
        types.Content(role="user", parts=[types.Part(text="first")]),
        types.Content(role="model", parts=[types.Part(text="reply")]),
        types.Content(role="user", parts=[types.Part(text="echo"), types.Part(text="me back")]),
    ]
    reply = await client.models.generate_content(model=MODEL, contents=contents)
    assert reply.text == "echo me back"
    chunks = [c async for c in await client.models.generate_content_stream(model=MODEL, contents=contents)]
    assert [c.text for c in chunks] == ["echo ", "me ", "back"]
    assert chunks[-1].usage_metadata == reply.usage_metadata


# --- Errors and broken streams, through the SDK -------------------------------------------------


@pytest.mark.parametrize("status", sorted(ERROR_STATUS))
async def test_http_errors_raise_the_sdks_matching_exception(
    fake_gemini: FakeGemini, client: genai.client.AsyncClient, status: str
) -> None:
    fake_gemini.script(error_reply(status, f"{status} happened"))
    with pytest.raises(errors.APIError) as caught:
        await client.models.generate_content(model=MODEL, contents="Hi")
    http_status = ERROR_STATUS[status]
    assert type(caught.value) is (errors.ClientError if http_status < 500 else errors.ServerError)
    assert (caught.value.code, caught.value.status, caught.value.message) == (
        http_status,
        status,
        f"{status} happened",
    )
    assert len(fake_gemini.requests) == 1  # the SDK does not retry by default


async def test_rate_limit_details_reach_the_sdk(
    fake_gemini: FakeGemini, client: genai.client.AsyncClient
) -> None:
    fake_gemini.script(error_reply("RESOURCE_EXHAUSTED", "Quota exceeded", retry_delay="37s"))
    with pytest.raises(errors.ClientError) as caught:
        await client.models.generate_content(model=MODEL, contents="Hi")
    assert caught.value.details == error_body("RESOURCE_EXHAUSTED", "Quota exceeded", retry_delay="37s")


async def test_an_error_chunk_in_a_200_stream_raises(
    fake_gemini: FakeGemini, client: genai.client.AsyncClient
) -> None:
    fake_gemini.script(
        Reply(chunks=[text_chunks(["Hel", "lo"])[0], stream_error("INTERNAL", "Internal error")])
    )
    seen: list[str | None] = []
    with pytest.raises(errors.ServerError) as caught:
        await read_stream(client, seen)
    assert seen == ["Hel"]
    assert (caught.value.code, caught.value.status, caught.value.message) == (
        500,
        "INTERNAL",
        "Internal error",
    )


async def test_a_dropped_stream_fails_in_the_sdk(
    fake_gemini: FakeGemini, client: genai.client.AsyncClient
) -> None:
    fake_gemini.script(Reply(chunks=text_chunks(["one", " two", " three"])[:2], drop=True))
    seen: list[str | None] = []
    with pytest.raises(aiohttp.ClientPayloadError):
        await read_stream(client, seen)
    assert seen == ["one", " two"]


# --- Requests: the SDK's and the gateway's ------------------------------------------------------


async def test_the_fake_records_what_the_sdk_sent(
    fake_gemini: FakeGemini, client: genai.client.AsyncClient
) -> None:
    await client.models.generate_content(model=MODEL, contents="Hi")
    _ = [c async for c in await client.models.generate_content_stream(model=MODEL, contents="Hi")]
    unary, streamed = fake_gemini.requests
    assert (unary.method, unary.path, unary.query) == ("POST", f"/v1beta/models/{MODEL}:generateContent", {})
    assert (streamed.path, streamed.query) == (
        f"/v1beta/models/{MODEL}:streamGenerateContent",
        {"alt": "sse"},
    )
    for sent in (unary, streamed):
        assert sent.headers["x-goog-api-key"] == "test-gemini-key"
        assert sent.body == {"contents": [{"parts": [{"text": "Hi"}], "role": "user"}]}


# Values Google reads as opaque JSON: their keys are data, not field names.
_OPAQUE = frozenset({"args", "response", "parametersJsonSchema", "responseJsonSchema"})


def camel_keys(value: Any) -> Any:
    """Field names in lowerCamelCase, as the gateway writes them; the SDK also writes snake_case,
    which Google's JSON parser accepts equally."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            name = alias_generators.to_camel(key)
            out[name] = item if name in _OPAQUE else camel_keys(item)
        return out
    if isinstance(value, list):
        return [camel_keys(item) for item in value]
    return value


async def test_the_sdk_builds_the_request_the_gateway_sends(
    fake_gemini: FakeGemini, client: genai.client.AsyncClient
) -> None:
    image = b"\x89PNG\r\n\x1a\n"
    request = chat_pb2.ChatRequest(
        model=f"gemini:{MODEL}",
        messages=[
            content_pb2.Message(role=content_pb2.ROLE_SYSTEM, content=[content_pb2.Part(text="Be brief.")]),
            content_pb2.Message(
                role=content_pb2.ROLE_USER,
                content=[
                    content_pb2.Part(text="Weather where these were taken?"),
                    content_pb2.Part(image=content_pb2.Image(data=image, mime_type="image/png")),
                    content_pb2.Part(image=content_pb2.Image(url="https://example.com/oslo.jpg")),
                ],
            ),
            content_pb2.Message(
                role=content_pb2.ROLE_ASSISTANT,
                content=[content_pb2.Part(text="Checking.")],
                tool_calls=[
                    content_pb2.ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}'),
                    content_pb2.ToolCall(id="call_2", name="get_weather", arguments='{"city": "Oslo"}'),
                ],
            ),
            content_pb2.Message(
                role=content_pb2.ROLE_TOOL, tool_call_id="call_1", content=[content_pb2.Part(text="18C")]
            ),
            content_pb2.Message(
                role=content_pb2.ROLE_TOOL,
                tool_call_id="call_2",
                content=[content_pb2.Part(text='{"temp_c": 9}')],
            ),
        ],
    )
    tool = request.tools.add(name="get_weather", description="Weather for a city")
    tool.parameters.update(WEATHER_SCHEMA)
    request.tool_choice.tool_name = "get_weather"
    gen = request.generation
    gen.temperature, gen.top_p, gen.top_k, gen.max_tokens, gen.seed = 0.5, 0.9, 40, 512, 7
    gen.presence_penalty, gen.frequency_penalty = 0.25, 0.5
    gen.stop.append("END")
    request.response_format.type = content_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
    request.response_format.json_schema.update(
        {"type": "object", "properties": {"summary": {"type": "string"}}}
    )
    request.reasoning.budget_tokens = 2048
    async with running_gateway(gemini_toml(fake_gemini.base_url)) as gw:
        reply = await gw.stub.Chat(request)
    assert reply_text(reply.message) == "Weather where these were taken?"  # the echo of the last user text

    config = types.GenerateContentConfig(
        system_instruction="Be brief.",
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        max_output_tokens=512,
        seed=7,
        presence_penalty=0.25,
        frequency_penalty=0.5,
        stop_sequences=["END"],
        response_mime_type="application/json",
        response_json_schema={"type": "object", "properties": {"summary": {"type": "string"}}},
        thinking_config=types.ThinkingConfig(thinking_budget=2048),
        tools=[
            types.Tool(
                function_declarations=[
                    types.FunctionDeclaration(
                        name="get_weather",
                        description="Weather for a city",
                        parameters_json_schema=WEATHER_SCHEMA,
                    )
                ]
            )
        ],
        tool_config=types.ToolConfig(
            function_calling_config=types.FunctionCallingConfig(
                mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["get_weather"]
            )
        ),
    )
    contents = [
        types.Content(
            role="user",
            parts=[
                types.Part(text="Weather where these were taken?"),
                types.Part.from_bytes(data=image, mime_type="image/png"),
                types.Part.from_uri(file_uri="https://example.com/oslo.jpg", mime_type="image/jpeg"),
            ],
        ),
        types.Content(
            role="model",
            parts=[
                types.Part(text="Checking."),
                types.Part(function_call=types.FunctionCall(name="get_weather", args={"city": "Paris"})),
                types.Part(function_call=types.FunctionCall(name="get_weather", args={"city": "Oslo"})),
            ],
        ),
        types.Content(
            role="user",
            parts=[
                types.Part.from_function_response(name="get_weather", response={"output": "18C"}),
                types.Part.from_function_response(name="get_weather", response={"temp_c": 9}),
            ],
        ),
    ]
    await client.models.generate_content(model=MODEL, contents=contents, config=config)

    gateway_body, sdk_body = (sent.body for sent in fake_gemini.requests)
    # The gateway adds the stand-in thought signature to the first replayed call, and leaves out
    # the system instruction's role, which Gemini ignores.
    signed = gateway_body["contents"][1]["parts"][1]
    assert signed.pop("thoughtSignature") == "skip_thought_signature_validator"
    assert sdk_body["systemInstruction"].pop("role") == "user"
    assert camel_keys(sdk_body) == gateway_body
