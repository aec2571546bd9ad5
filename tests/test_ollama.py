"""Ollama through the gateway, against the fake /api/chat server: the exact translated request,
normalised replies and NDJSON streams (text, tool calls, images, JSON output), usage and the free
cost, settings Ollama cannot take, and errors mapped to gRPC statuses."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

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
from tests.fakes.ollama import (
    FakeOllama,
    Reply,
    chat_response,
    chunk,
    error_reply,
    message,
    text_lines,
    tool_call,
    tool_call_lines,
)

MODEL = "ollama:llama3.2"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
GENERATED_ID = re.compile(r"^call_\d+_[0-9a-f]{12}$")


def ollama_toml(base_url: str, extra: str = "") -> str:
    return f"""
[routing]
auto = ["mock:echo"]
[providers.ollama]
kind = "ollama"
enabled = true
base_url = "{base_url}"
timeout = {{ connect = 2.0, read = 5.0 }}
{NO_RETRIES}
{extra}
"""


@pytest.fixture
async def gateway(fake_ollama: FakeOllama) -> AsyncIterator[RunningGateway]:
    async with running_gateway(ollama_toml(fake_ollama.base_url, 'keep_alive = "10m"')) as gw:
        yield gw


def struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


WEATHER = content_pb2.Tool(
    name="get_weather",
    description="Weather for a city",
    parameters=struct({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
)
TIME = content_pb2.Tool(name="get_time", description="Local time in a city")


def tools_request(text: str = "Weather and time in Paris?") -> chat_pb2.ChatRequest:
    return chat(MODEL, text, tools=[WEATHER, TIME])


async def stream_events(
    gw: RunningGateway, request: chat_pb2.ChatRequest
) -> list[chat_pb2.ChatStreamResponse]:
    return [e async for e in gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request), timeout=10)]


async def test_unary_request_is_translated_and_the_reply_normalised(
    gateway: RunningGateway, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script(
        Reply(json_body=chat_response(message("A red square."), prompt_eval_count=42, eval_count=5))
    )
    request = chat_pb2.ChatRequest(
        model=MODEL,
        messages=[
            content_pb2.Message(role=content_pb2.ROLE_SYSTEM, content=[content_pb2.Part(text="Be brief.")]),
            content_pb2.Message(
                role=content_pb2.ROLE_USER,
                content=[
                    content_pb2.Part(text="What is this?"),
                    content_pb2.Part(image=content_pb2.Image(data=PNG, mime_type="image/png")),
                ],
            ),
        ],
        tools=[WEATHER],
        generation=chat_pb2.GenerationConfig(
            temperature=0.5,
            top_p=0.9,
            top_k=40,
            max_tokens=300,
            stop=["END"],
            seed=7,
            presence_penalty=0.1,
            frequency_penalty=-0.2,
        ),
        reasoning=chat_pb2.ReasoningConfig(effort=chat_pb2.REASONING_EFFORT_NONE),
    )
    reply = await gateway.stub.Chat(request, timeout=10)

    [sent] = fake_ollama.requests
    assert sent.path == "/api/chat"
    assert "authorization" not in sent.headers  # a local Ollama takes no key
    assert sent.body == {
        "model": "llama3.2",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is this?", "images": [base64.b64encode(PNG).decode()]},
        ],
        "stream": False,
        "options": {
            "temperature": 0.5,
            "top_p": 0.9,
            "top_k": 40,
            "seed": 7,
            "num_predict": 300,
            "presence_penalty": 0.1,
            "frequency_penalty": -0.2,
            "stop": ["END"],
        },
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                },
            }
        ],
        "think": False,
        "keep_alive": "10m",
    }

    assert reply_text(reply.message) == "A red square."
    assert reply.message.role == content_pb2.ROLE_ASSISTANT
    assert reply.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert (reply.model, reply.provider_model, reply.provider_response_id) == (MODEL, "llama3.2", "")
    u = reply.usage
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens, u.estimated) == (42, 5, 47, False)
    assert reply.cost.status == accounting_pb2.PRICING_STATUS_FREE
    assert not reply.cost.estimated
    assert list(reply.dropped_parameters) == []


async def test_two_tool_calls_in_one_turn_unary_and_streamed_assemble_alike(
    gateway: RunningGateway, fake_ollama: FakeOllama
) -> None:
    calls = [
        tool_call("get_weather", {"city": "Paris"}),
        tool_call("get_time", {"city": "Paris", "tz": "CET"}),
    ]
    fake_ollama.script(
        Reply(json_body=chat_response(message("", tool_calls=calls), prompt_eval_count=120, eval_count=33)),
        Reply(lines=tool_call_lines(["Let me check."], calls, prompt_eval_count=120, eval_count=33)),
    )
    unary = await gateway.stub.Chat(tools_request(), timeout=10)
    events = await stream_events(gateway, tools_request())

    assert unary.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    assert [(c.name, json.loads(c.arguments)) for c in unary.message.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_time", {"city": "Paris", "tz": "CET"}),
    ]
    assert unary.message.tool_calls[1].arguments == '{"city":"Paris","tz":"CET"}'
    unary_ids = [c.id for c in unary.message.tool_calls]
    assert all(GENERATED_ID.match(i) for i in unary_ids)
    assert len(set(unary_ids)) == 2

    assert events[0].start.model == MODEL
    text = "".join(e.text_delta.text for e in events if e.HasField("text_delta"))
    assert text == "Let me check."
    pieces = [e.tool_call_delta for e in events if e.HasField("tool_call_delta")]
    assert [p.index for p in pieces] == [0, 1]  # one whole delta per call
    assembled: dict[int, list[str]] = {}
    for p in pieces:
        entry = assembled.setdefault(p.index, ["", "", ""])
        entry[0] += p.id
        entry[1] += p.name
        entry[2] += p.arguments
    assert [(name, args) for _, name, args in assembled.values()] == [
        (c.name, c.arguments) for c in unary.message.tool_calls
    ]
    stream_ids = [i for i, _, _ in assembled.values()]
    assert all(GENERATED_ID.match(i) for i in stream_ids)
    assert len(set(stream_ids)) == 2
    finish = events[-1].finish
    assert finish.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    assert (finish.usage.prompt_tokens, finish.usage.completion_tokens, finish.usage.estimated) == (
        120,
        33,
        False,
    )

    for sent in fake_ollama.requests:
        assert [t["function"]["name"] for t in sent.body["tools"]] == ["get_weather", "get_time"]
        assert sent.body["tools"][1]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert [r.body["stream"] for r in fake_ollama.requests] == [False, True]


async def test_a_stream_of_text_with_usage_and_free_cost(
    gateway: RunningGateway, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script(
        Reply(
            lines=text_lines(["The", " sky", " is", " blue."], prompt_eval_count=26, eval_count=4),
            chunk_delay=0.01,
        )
    )
    events = await stream_events(gateway, chat(MODEL, "Why is the sky blue?"))

    assert events[0].HasField("start")
    assert [e.text_delta.text for e in events if e.HasField("text_delta")] == ["The", " sky", " is", " blue."]
    finish = events[-1].finish
    assert finish.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert (finish.usage.prompt_tokens, finish.usage.completion_tokens, finish.usage.estimated) == (
        26,
        4,
        False,
    )
    assert finish.cost.status == accounting_pb2.PRICING_STATUS_FREE
    assert finish.provider_model == "llama3.2"
    [sent] = fake_ollama.requests
    assert sent.body["stream"] is True
    assert sent.body["messages"] == [{"role": "user", "content": "Why is the sky blue?"}]


async def test_the_default_echo_answers_unary_and_streamed(
    gateway: RunningGateway, fake_ollama: FakeOllama
) -> None:
    unary = await gateway.stub.Chat(chat(MODEL, "one two three"), timeout=10)
    events = await stream_events(gateway, chat(MODEL, "one two three"))
    assert reply_text(unary.message) == "one two three"
    assert [e.text_delta.text for e in events if e.HasField("text_delta")] == ["one ", "two ", "three"]
    assert unary.usage.prompt_tokens == events[-1].finish.usage.prompt_tokens > 0
    assert not unary.usage.estimated


async def test_a_tool_conversation_names_each_result_by_its_tool(
    gateway: RunningGateway, fake_ollama: FakeOllama
) -> None:
    request = tools_request()
    request.messages.append(
        content_pb2.Message(
            role=content_pb2.ROLE_ASSISTANT,
            tool_calls=[
                content_pb2.ToolCall(id="call_0_aa", name="get_weather", arguments='{"city":"Paris"}'),
                content_pb2.ToolCall(id="call_1_aa", name="get_time", arguments='{"city":"Paris"}'),
            ],
        )
    )
    for call_id, result in (("call_1_aa", "14:05"), ("call_0_aa", "18C")):
        request.messages.append(
            content_pb2.Message(
                role=content_pb2.ROLE_TOOL, tool_call_id=call_id, content=[content_pb2.Part(text=result)]
            )
        )
    fake_ollama.script(Reply(json_body=chat_response(message("18C, 14:05."))))
    reply = await gateway.stub.Chat(request, timeout=10)
    assert reply_text(reply.message) == "18C, 14:05."
    assert fake_ollama.requests[0].body["messages"][1:] == [
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "get_time", "arguments": {"city": "Paris"}}},
            ],
        },
        {"role": "tool", "content": "14:05", "tool_name": "get_time"},
        {"role": "tool", "content": "18C", "tool_name": "get_weather"},
    ]


async def test_tool_choice_none_offers_no_tools(gateway: RunningGateway, fake_ollama: FakeOllama) -> None:
    request = tools_request()
    request.tool_choice.mode = content_pb2.TOOL_CHOICE_MODE_NONE
    await gateway.stub.Chat(request, timeout=10)
    assert "tools" not in fake_ollama.requests[0].body


async def test_json_schema_and_json_object_output(gateway: RunningGateway, fake_ollama: FakeOllama) -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    fake_ollama.script(
        Reply(json_body=chat_response(message('{"age": 22}'))), Reply(json_body=chat_response(message("{}")))
    )
    as_schema = chat(
        MODEL,
        "How old is Ollama?",
        response_format=content_pb2.ResponseFormat(
            type=content_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, json_schema=struct(schema), schema_name="age"
        ),
    )
    reply = await gateway.stub.Chat(as_schema, timeout=10)
    assert json.loads(reply_text(reply.message)) == {"age": 22}
    as_object = chat(
        MODEL,
        "JSON please",
        response_format=content_pb2.ResponseFormat(type=content_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT),
    )
    await gateway.stub.Chat(as_object, timeout=10)
    assert [r.body["format"] for r in fake_ollama.requests] == [schema, "json"]


async def test_reasoning_turns_think_on_and_thinking_is_not_the_answer(
    gateway: RunningGateway, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script(
        Reply(json_body=chat_response(message("42.", thinking="6 times 7."))),
        Reply(lines=[chunk(message("", thinking="6 times 7.")), *text_lines(["42."])]),
    )
    request = chat(MODEL, "6 x 7?", reasoning=chat_pb2.ReasoningConfig(effort=chat_pb2.REASONING_EFFORT_HIGH))
    reply = await gateway.stub.Chat(request, timeout=10)
    events = await stream_events(gateway, request)
    assert reply_text(reply.message) == "42."
    assert [e.text_delta.text for e in events if e.HasField("text_delta")] == ["42."]
    assert [r.body["think"] for r in fake_ollama.requests] == [True, True]


async def test_missing_counts_are_estimated_and_marked(
    gateway: RunningGateway, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script(
        Reply(json_body=chat_response(message("Cached prompt."), prompt_eval_count=None, eval_count=3)),
        Reply(lines=text_lines(["Cached", " prompt."], prompt_eval_count=None, eval_count=2)),
    )
    reply = await gateway.stub.Chat(chat(MODEL), timeout=10)
    events = await stream_events(gateway, chat(MODEL))
    for usage, cost in ((reply.usage, reply.cost), (events[-1].finish.usage, events[-1].finish.cost)):
        assert usage.estimated
        assert usage.prompt_tokens > 0  # estimated, not the 0 a missing count would suggest
        assert cost.status == accounting_pb2.PRICING_STATUS_FREE


@pytest.mark.parametrize(
    ("status", "text", "code", "reason"),
    [
        (
            400,
            'invalid option provided: option "tmp" must be of type float32',
            "INVALID_ARGUMENT",
            "UPSTREAM_INVALID_REQUEST",
        ),
        (404, 'model "llama3.2" not found, try pulling it first', "NOT_FOUND", "UPSTREAM_NOT_FOUND"),
        (500, "llama runner process has terminated: exit status 2", "UNAVAILABLE", "UPSTREAM_UNAVAILABLE"),
    ],
)
async def test_http_errors_are_mapped(
    gateway: RunningGateway, fake_ollama: FakeOllama, status: int, text: str, code: str, reason: str
) -> None:
    fake_ollama.script(error_reply(status, text), error_reply(status, text))
    for call in (
        gateway.stub.Chat(chat(MODEL), timeout=10),
        stream_events(gateway, chat(MODEL)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        details = error_details(caught.value)
        assert (details.code.name, details.info.reason) == (code, reason)
        assert text in details.message  # Ollama's {"error": "..."} message reaches the caller
        assert details.info.metadata["upstream_status"] == str(status)


async def test_an_image_url_is_refused_before_any_request(
    gateway: RunningGateway, fake_ollama: FakeOllama
) -> None:
    request = chat(MODEL, "What is this?")
    request.messages[0].content.append(
        content_pb2.Part(image=content_pb2.Image(url="https://example.com/cat.png"))
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(request, timeout=10)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(details) == ["messages[0].content[1].image"]
    assert fake_ollama.requests == []


async def test_a_lenient_request_drops_the_image_url_and_says_so(
    gateway: RunningGateway, fake_ollama: FakeOllama
) -> None:
    request = chat(
        MODEL, "What is this?", unsupported_parameters=chat_pb2.UNSUPPORTED_PARAMETER_POLICY_LENIENT
    )
    request.messages[0].content.extend(
        [
            content_pb2.Part(image=content_pb2.Image(url="https://example.com/cat.png")),
            content_pb2.Part(image=content_pb2.Image(data=PNG, mime_type="image/png")),
        ]
    )
    reply = await gateway.stub.Chat(request, timeout=10)
    events = await stream_events(gateway, request)
    assert list(reply.dropped_parameters) == ["messages[0].content[1].image"]
    assert list(events[-1].finish.dropped_parameters) == ["messages[0].content[1].image"]
    for sent in fake_ollama.requests:
        assert sent.body["messages"] == [
            {"role": "user", "content": "What is this?", "images": [base64.b64encode(PNG).decode()]}
        ]


async def test_a_stream_dropped_midway_is_interrupted_not_finished(
    gateway: RunningGateway, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script(Reply(lines=text_lines(["one", " two", " three"]), end_early=True))
    received: list[chat_pb2.ChatStreamResponse] = []

    async def read_all() -> None:
        async for event in gateway.stub.ChatStream(
            chat_pb2.ChatStreamRequest(request=chat(MODEL)), timeout=10
        ):
            received.append(event)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read_all()
    assert [e.text_delta.text for e in received if e.HasField("text_delta")] == ["one", " two", " three"]
    assert not any(e.HasField("finish") for e in received)
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_INTERRUPTED")


async def test_a_stream_that_ends_without_its_done_line_is_interrupted(
    gateway: RunningGateway, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script(Reply(lines=text_lines(["one", " two"])[:-1]))  # a clean end, but no done line
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream_events(gateway, chat(MODEL))
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_INTERRUPTED")


async def test_a_line_that_is_not_json_is_a_bad_response(
    gateway: RunningGateway, fake_ollama: FakeOllama
) -> None:
    fake_ollama.script(Reply(lines=["{not json", *text_lines(["Hi"])]))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream_events(gateway, chat(MODEL))
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_BAD_RESPONSE")


async def test_an_error_line_inside_a_200_stream(gateway: RunningGateway, fake_ollama: FakeOllama) -> None:
    fake_ollama.script(
        Reply(lines=[chunk(message("Hel")), {"error": "an error was encountered while running the model"}])
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream_events(gateway, chat(MODEL))
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_ERROR")
    assert "an error was encountered while running the model" in details.message


async def test_a_failed_first_line_falls_back(gateway: RunningGateway, fake_ollama: FakeOllama) -> None:
    fake_ollama.script(Reply(lines=[{"error": "model runner has unexpectedly stopped"}]))
    request = chat(MODEL, "hello")
    request.fallback_models.append("mock:echo")
    events = await stream_events(gateway, request)
    assert events[0].start.model == "mock:echo"
    assert [(a.model, a.code) for a in events[-1].finish.routing.attempts] == [
        (MODEL, "UNAVAILABLE"),
        ("mock:echo", "OK"),
    ]


async def test_an_api_key_is_sent_as_a_bearer_token(fake_ollama: FakeOllama) -> None:
    key = "ollama-test-key-0123456789"
    async with running_gateway(ollama_toml(fake_ollama.base_url, f'api_key = "{key}"')) as gw:
        reply = await gw.stub.Chat(chat(MODEL), timeout=10)
    assert reply.cost.status == accounting_pb2.PRICING_STATUS_FREE
    [sent] = fake_ollama.requests
    assert sent.headers["authorization"] == f"Bearer {key}"
    assert "keep_alive" not in sent.body


async def test_a_forced_tool_call_is_refused(gateway: RunningGateway, fake_ollama: FakeOllama) -> None:
    request = tools_request()
    request.tool_choice.tool_name = "get_weather"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(request, timeout=10)
    assert violated_fields(error_details(caught.value)) == ["tool_choice"]
    assert fake_ollama.requests == []
