"""The fake Ollama server and the adapter's request bodies against the oracle: the official `ollama`
SDK parses every reply and stream the fake sends (and its pydantic types validate each builder's
output with no field it does not know and no value it would coerce), and the SDK's request types
take the bodies the adapter builds without losing anything."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import ollama
import pydantic
import pytest
from ollama import ChatResponse, Image, Options

from llm_gateway.catalog import ModelSpec
from llm_gateway.domain.messages import (
    ChatRequest,
    GenerationConfig,
    ImagePart,
    Message,
    Reasoning,
    ReasoningEffort,
    ResponseFormat,
    ResponseFormatType,
    Role,
    TextPart,
    Tool,
    ToolCall,
)
from llm_gateway.pricing.sheet import UNKNOWN_PRICE
from llm_gateway.providers.base import UpstreamCall
from llm_gateway.providers.ollama.mapping import build_body
from tests.fakes.ollama import (
    CREATED_AT,
    MODEL,
    FakeOllama,
    Reply,
    chat_response,
    chunk,
    error_reply,
    final_chunk,
    message,
    text_lines,
    tool_call,
    tool_call_lines,
)

USER = [{"role": "user", "content": "What is the weather in Oslo?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALLS = [tool_call("get_weather", {"city": "Oslo"}), tool_call("get_time", {"city": "Oslo", "tz": "CET"})]


@pytest.fixture
async def client(fake_ollama: FakeOllama) -> AsyncIterator[ollama.AsyncClient]:
    sdk = ollama.AsyncClient(host=fake_ollama.base_url)
    try:
        yield sdk
    finally:
        await sdk.close()  # type: ignore[no-untyped-call]  # the SDK leaves close() unannotated


def strictly(data: dict[str, Any]) -> ChatResponse:
    """`data` as the SDK's ChatResponse, which must keep every field (its models drop unknown ones)
    without coercing any value."""
    parsed = ChatResponse.model_validate(data)
    assert parsed.model_dump(mode="json", exclude_unset=True) == data
    return parsed


# --- Shapes, validated by the SDK's types -------------------------------------------------------


def test_reply_shapes_validate_strictly() -> None:
    parsed = strictly(chat_response(message("", tool_calls=CALLS, thinking="Two lookups."), eval_count=33))
    assert parsed.message.thinking == "Two lookups."
    assert parsed.message.tool_calls is not None
    assert [(c.function.name, dict(c.function.arguments)) for c in parsed.message.tool_calls] == [
        ("get_weather", {"city": "Oslo"}),
        ("get_time", {"city": "Oslo", "tz": "CET"}),
    ]
    assert (parsed.done, parsed.done_reason, parsed.prompt_eval_count, parsed.eval_count) == (
        True,
        "stop",
        26,
        33,
    )
    assert parsed.created_at == CREATED_AT


def test_stream_line_shapes_validate_strictly() -> None:
    lines = [
        chunk(message("", thinking="Hmm.")),
        *text_lines(["Hel", "lo"]),
        *tool_call_lines(["Checking."], CALLS),
        final_chunk(done_reason="length", prompt_eval_count=None, eval_count=None),
    ]
    parsed = [strictly(line) for line in lines]
    assert [p.done for p in parsed[:3]] == [False, False, False]
    assert parsed[-1].done_reason == "length"
    # A zero count is left out, as Ollama's omitempty does; the SDK sees None.
    assert (parsed[-1].prompt_eval_count, parsed[-1].eval_count) == (None, None)


# --- The SDK against the fake -------------------------------------------------------------------


async def test_unary_chat_parses_the_default_echo(
    client: ollama.AsyncClient, fake_ollama: FakeOllama
) -> None:
    response = await client.chat(model=MODEL, messages=USER)
    assert response.message.role == "assistant"
    assert response.message.content == "What is the weather in Oslo?"
    assert response.done is True
    assert response.done_reason == "stop"
    assert response.prompt_eval_count is not None
    assert response.prompt_eval_count > 0
    assert response.eval_count == len("What is the weather in Oslo?") // 4
    [sent] = fake_ollama.requests
    assert sent.body["stream"] is False


async def test_unary_chat_parses_tool_calls(client: ollama.AsyncClient, fake_ollama: FakeOllama) -> None:
    fake_ollama.script(
        Reply(json_body=chat_response(message("", tool_calls=CALLS), prompt_eval_count=120, eval_count=33))
    )
    response = await client.chat(model=MODEL, messages=USER, tools=[WEATHER_TOOL])
    assert response.message.tool_calls is not None
    assert [(c.function.name, dict(c.function.arguments)) for c in response.message.tool_calls] == [
        ("get_weather", {"city": "Oslo"}),
        ("get_time", {"city": "Oslo", "tz": "CET"}),
    ]
    assert (response.prompt_eval_count, response.eval_count) == (120, 33)
    assert fake_ollama.requests[0].body["tools"] == [WEATHER_TOOL]


async def test_streamed_chat_parses_every_line(client: ollama.AsyncClient, fake_ollama: FakeOllama) -> None:
    fake_ollama.script(
        Reply(lines=tool_call_lines(["Let me ", "check."], CALLS, prompt_eval_count=120, eval_count=33))
    )
    parts = [
        part
        async for part in await client.chat(model=MODEL, messages=USER, tools=[WEATHER_TOOL], stream=True)
    ]
    assert "".join(p.message.content or "" for p in parts) == "Let me check."
    calls = [c for p in parts for c in p.message.tool_calls or ()]
    assert [(c.function.name, dict(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Oslo"}),
        ("get_time", {"city": "Oslo", "tz": "CET"}),
    ]
    last = parts[-1]
    assert (last.done, last.done_reason, last.prompt_eval_count, last.eval_count) == (True, "stop", 120, 33)
    assert all(not p.done for p in parts[:-1])
    assert fake_ollama.requests[0].body["stream"] is True


async def test_streamed_default_echo(client: ollama.AsyncClient) -> None:
    parts = [part async for part in await client.chat(model=MODEL, messages=USER, stream=True)]
    assert "".join(p.message.content or "" for p in parts) == "What is the weather in Oslo?"
    assert parts[-1].done


async def test_http_errors_reach_the_sdk_as_response_errors(
    client: ollama.AsyncClient, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script(error_reply(404, f'model "{MODEL}" not found, try pulling it first'))
    with pytest.raises(ollama.ResponseError) as caught:
        await client.chat(model=MODEL, messages=USER)
    assert (caught.value.status_code, caught.value.error) == (
        404,
        f'model "{MODEL}" not found, try pulling it first',
    )


async def test_an_error_line_inside_a_stream_reaches_the_sdk(
    client: ollama.AsyncClient, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script(
        Reply(lines=[chunk(message("Hel")), {"error": "model runner has unexpectedly stopped"}])
    )
    seen: list[str] = []

    async def read_all() -> None:
        async for part in await client.chat(model=MODEL, messages=USER, stream=True):
            seen.append(part.message.content or "")

    with pytest.raises(ollama.ResponseError) as caught:
        await read_all()
    assert seen == ["Hel"]
    assert caught.value.error == "model runner has unexpectedly stopped"


# --- The adapter's bodies, taken by the SDK's request types -------------------------------------


def sdk_round_trip(body: dict[str, Any]) -> dict[str, Any]:
    """`body` through the SDK's ChatRequest (messages through its Message, images through its
    Image), dumped as the SDK sends it. Fields the SDK does not know are dropped on the way."""
    messages = [
        ollama.Message.model_validate(
            {**m, **({"images": [Image(value=i) for i in m["images"]]} if "images" in m else {})}
        )
        for m in body["messages"]
    ]
    request = ollama._types.ChatRequest.model_validate({**body, "messages": messages})
    return request.model_dump(exclude_none=True)


def test_the_adapters_bodies_are_what_the_sdk_sends() -> None:
    spec = ModelSpec(
        "ollama:llama3.2", "ollama", "llama3.2", "llama3.2", None, None, None, UNKNOWN_PRICE, False
    )
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    request = ChatRequest(
        model=spec.id,
        messages=(
            Message(Role.SYSTEM, (TextPart("Be brief."),)),
            Message(
                Role.USER, (TextPart("Weather here?"), ImagePart(data=b"\x89PNG\r\n", mime_type="image/png"))
            ),
            Message(Role.ASSISTANT, tool_calls=(ToolCall("call_0_ab", "get_weather", '{"city": "Oslo"}'),)),
            Message(Role.TOOL, (TextPart("4C"),), tool_call_id="call_0_ab"),
        ),
        tools=(Tool("get_weather", "The weather in a city", schema),),
        response_format=ResponseFormat(ResponseFormatType.JSON_SCHEMA, schema),
        generation=GenerationConfig(
            temperature=0.2,
            top_p=0.9,
            top_k=20,
            max_tokens=64,
            stop=("END",),
            seed=1,
            presence_penalty=0.1,
            frequency_penalty=0.1,
        ),
        reasoning=Reasoning(ReasoningEffort.LOW),
    )
    for stream, keep_alive in ((False, "5m"), (True, "-1")):
        body = build_body(UpstreamCall(request, spec), stream=stream, keep_alive=keep_alive)
        assert sdk_round_trip(body) == body
        # Every option is one Ollama's Options type declares, with the type it declares.
        options = Options.model_validate(body["options"])
        assert options.model_dump(exclude_none=True) == body["options"]
    assert body["keep_alive"] == -1


def test_the_round_trip_would_notice_an_unknown_field() -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi", "name": "alice"}], "stream": False}
    assert sdk_round_trip(body) != body
    with pytest.raises(pydantic.ValidationError):
        Options.model_validate({"num_predict": "many"})
