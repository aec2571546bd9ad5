"""Domain requests to Ollama /api/chat bodies, and replies and stream lines back, as pure functions."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from llm_gateway.catalog import ModelSpec
from llm_gateway.domain.errors import GatewayError
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
    ToolChoice,
    ToolChoiceMode,
)
from llm_gateway.domain.results import FinishReason, TextDelta, ToolCallDelta, Usage
from llm_gateway.pricing.sheet import UNKNOWN_PRICE
from llm_gateway.providers.base import UpstreamCall
from llm_gateway.providers.ollama.mapping import build_body, finish_reason, map_usage, parse_chat
from llm_gateway.providers.ollama.stream import ChunkDecoder
from tests.fakes.ollama import (
    chat_response,
    chunk,
    final_chunk,
    message,
    text_lines,
    tool_call,
    tool_call_lines,
)

SPEC = ModelSpec("ollama:llama3.2", "ollama", "llama3.2", "llama3.2", None, None, None, UNKNOWN_PRICE, False)
WEATHER = Tool(
    "get_weather", "Weather for a city", {"type": "object", "properties": {"city": {"type": "string"}}}
)
GENERATED_ID = re.compile(r"^call_(\d+)_[0-9a-f]{12}$")


def call_for(*messages: Message, options: dict[str, Any] | None = None, **fields: Any) -> UpstreamCall:
    return UpstreamCall(ChatRequest(model=SPEC.id, messages=messages, **fields), SPEC, options or {})


def body_for(*messages: Message, stream: bool = False, keep_alive: str | None = None, **fields: Any) -> Any:
    return build_body(call_for(*messages, **fields), stream=stream, keep_alive=keep_alive)


def user(text: str, *images: ImagePart) -> Message:
    return Message(Role.USER, (TextPart(text), *images))


def violations(caught: pytest.ExceptionInfo[GatewayError]) -> list[str]:
    return [v.field for v in caught.value.violations]


# --- Requests -----------------------------------------------------------------------------------


def test_a_plain_request_sends_the_stream_flag_either_way() -> None:
    system = Message(Role.SYSTEM, (TextPart("Be brief."),))
    assert body_for(system, user("Hi")) == {
        "model": "llama3.2",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        "stream": False,
    }
    assert body_for(user("Hi"), stream=True)["stream"] is True


def test_generation_settings_go_into_options_with_ollama_names() -> None:
    gen = GenerationConfig(
        temperature=0.3,
        top_p=0.9,
        top_k=40,
        max_tokens=100,
        stop=("END", "\n\n"),
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
    )
    assert body_for(user("Hi"), generation=gen)["options"] == {
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 40,
        "seed": 7,
        "num_predict": 100,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "stop": ["END", "\n\n"],
    }


def test_inline_images_become_base64_next_to_the_text() -> None:
    png = ImagePart(data=b"\x89PNG\r\n", mime_type="image/png")
    jpeg = ImagePart(data=b"\xff\xd8\xff", mime_type="image/jpeg", detail="high")
    [sent] = body_for(user("What differs?", png, jpeg))["messages"]
    assert sent == {"role": "user", "content": "What differs?", "images": ["iVBORw0K", "/9j/"]}


def test_an_image_url_is_refused_or_dropped_without_being_sent() -> None:
    parts = (TextPart("What is this?"), ImagePart(url="https://example.com/cat.png"))
    with pytest.raises(GatewayError) as caught:
        body_for(Message(Role.USER, parts))
    assert violations(caught) == ["messages[0].content[1].image"]
    assert "LENIENT" in caught.value.violations[0].description

    call = call_for(Message(Role.USER, parts), lenient=True)
    body = build_body(call, stream=False)
    assert call.dropped == ["messages[0].content[1].image"]
    assert body["messages"] == [{"role": "user", "content": "What is this?"}]


def test_a_tool_conversation_sends_argument_objects_and_tool_names() -> None:
    calls = (
        ToolCall("call_a", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_b", "get_time", ""),
    )
    body = body_for(
        user("Weather and time in Paris?"),
        Message(Role.ASSISTANT, (TextPart("Checking."),), tool_calls=calls),
        Message(Role.TOOL, (TextPart("18C"),), tool_call_id="call_a"),
        Message(Role.TOOL, (TextPart("14:05"),), tool_call_id="call_b"),
        Message(Role.TOOL, (TextPart("?"),), tool_call_id="call_unknown"),
        tools=(WEATHER,),
    )
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
                {"function": {"name": "get_time", "arguments": {}}},
            ],
        },
        {"role": "tool", "content": "18C", "tool_name": "get_weather"},
        {"role": "tool", "content": "14:05", "tool_name": "get_time"},
        {"role": "tool", "content": "?"},  # answers no call of this conversation: no name to give
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]


def test_tool_call_arguments_that_are_not_an_object_are_invalid_whatever_the_policy() -> None:
    bad = Message(
        Role.ASSISTANT,
        tool_calls=(ToolCall("t1", "get_weather", "[1, 2]"), ToolCall("t2", "get_weather", "{oops")),
    )
    for lenient in (False, True):
        with pytest.raises(GatewayError) as caught:
            body_for(user("Hi"), bad, lenient=lenient)
        assert violations(caught) == [
            "messages[1].tool_calls[0].arguments",
            "messages[1].tool_calls[1].arguments",
        ]


def test_a_tool_without_parameters_gets_an_empty_object_schema() -> None:
    body = body_for(user("Hi"), tools=(Tool("ping"),))
    assert body["tools"] == [
        {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}}
    ]


def test_tool_choice_none_is_honoured_by_not_offering_the_tools() -> None:
    body = body_for(user("Hi"), tools=(WEATHER,), tool_choice=ToolChoice(ToolChoiceMode.NONE))
    assert "tools" not in body
    auto = body_for(user("Hi"), tools=(WEATHER,), tool_choice=ToolChoice(ToolChoiceMode.AUTO))
    assert [t["function"]["name"] for t in auto["tools"]] == ["get_weather"]
    assert "tool_choice" not in auto


@pytest.mark.parametrize(
    "choice", [ToolChoice(ToolChoiceMode.REQUIRED), ToolChoice(ToolChoiceMode.NAMED, "get_weather")]
)
def test_a_forced_tool_call_is_refused_or_dropped(choice: ToolChoice) -> None:
    with pytest.raises(GatewayError) as caught:
        body_for(user("Hi"), tools=(WEATHER,), tool_choice=choice)
    assert violations(caught) == ["tool_choice"]

    call = call_for(user("Hi"), tools=(WEATHER,), tool_choice=choice, lenient=True)
    body = build_body(call, stream=False)
    assert call.dropped == ["tool_choice"]
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather"]  # offered, not forced


def test_only_turning_parallel_tool_calls_off_is_unsupported() -> None:
    with pytest.raises(GatewayError) as caught:
        body_for(user("Hi"), tools=(WEATHER,), parallel_tool_calls=False)
    assert violations(caught) == ["parallel_tool_calls"]
    # Several calls per turn is what Ollama does anyway.
    assert "parallel_tool_calls" not in body_for(user("Hi"), tools=(WEATHER,), parallel_tool_calls=True)


def test_response_formats() -> None:
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    as_schema = ResponseFormat(ResponseFormatType.JSON_SCHEMA, schema, "person", strict=True)
    assert body_for(user("Hi"), response_format=as_schema)["format"] == schema
    as_object = ResponseFormat(ResponseFormatType.JSON_OBJECT)
    assert body_for(user("Hi"), response_format=as_object)["format"] == "json"
    assert "format" not in body_for(user("Hi"), response_format=ResponseFormat(ResponseFormatType.TEXT))


@pytest.mark.parametrize(
    ("reasoning", "think"),
    [
        (Reasoning(ReasoningEffort.NONE), False),
        (Reasoning(ReasoningEffort.MINIMAL), True),
        (Reasoning(ReasoningEffort.LOW), True),
        (Reasoning(ReasoningEffort.HIGH), True),
        # A budget next to an effort is for providers that take budgets; Ollama uses the effort.
        (Reasoning(ReasoningEffort.MEDIUM, budget_tokens=2048), True),
    ],
)
def test_reasoning_effort_switches_think(reasoning: Reasoning, think: bool) -> None:
    assert body_for(user("Hi"), reasoning=reasoning)["think"] is think


def test_a_thinking_budget_alone_is_unsupported() -> None:
    with pytest.raises(GatewayError) as caught:
        body_for(user("Hi"), reasoning=Reasoning(budget_tokens=2048))
    assert violations(caught) == ["reasoning.budget_tokens"]
    call = call_for(user("Hi"), reasoning=Reasoning(budget_tokens=2048), lenient=True)
    assert "think" not in build_body(call, stream=False)
    assert call.dropped == ["reasoning.budget_tokens"]


def test_an_author_name_is_unsupported() -> None:
    with pytest.raises(GatewayError) as caught:
        body_for(Message(Role.USER, (TextPart("Hi"),), name="alice"))
    assert violations(caught) == ["messages[0].name"]


def test_every_unsupported_setting_is_named_at_once() -> None:
    with pytest.raises(GatewayError) as caught:
        body_for(
            user("Hi", ImagePart(url="https://example.com/a.png")),
            tools=(WEATHER,),
            tool_choice=ToolChoice(ToolChoiceMode.REQUIRED),
            parallel_tool_calls=False,
            reasoning=Reasoning(budget_tokens=100),
        )
    assert violations(caught) == [
        "messages[0].content[1].image",
        "tool_choice",
        "parallel_tool_calls",
        "reasoning.budget_tokens",
    ]


@pytest.mark.parametrize(
    ("configured", "sent"), [("5m", "5m"), ("90s", "90s"), ("0", 0), ("-1", -1), ("3600", 3600)]
)
def test_keep_alive_without_a_unit_is_sent_as_seconds(configured: str, sent: str | int) -> None:
    # Ollama parses a string with Go's time.ParseDuration, which refuses "3600" and "-1".
    assert body_for(user("Hi"), keep_alive=configured)["keep_alive"] == sent
    assert "keep_alive" not in body_for(user("Hi"))


def test_provider_options_merge_last_and_add_to_options() -> None:
    call = call_for(
        user("Hi"),
        generation=GenerationConfig(temperature=0.2, max_tokens=50),
        options={"options": {"num_ctx": 8192, "temperature": 0.0}, "think": "high", "truncate": False},
    )
    body = build_body(call, stream=True)
    assert body["options"] == {"temperature": 0.0, "num_predict": 50, "num_ctx": 8192}
    assert (body["think"], body["truncate"], body["stream"]) == ("high", False, True)


# --- Replies ------------------------------------------------------------------------------------


def test_a_text_reply() -> None:
    completion = parse_chat(chat_response(message("Hello!"), prompt_eval_count=26, eval_count=298))
    assert completion.text == "Hello!"
    assert completion.tool_calls == []
    assert completion.finish_reason is FinishReason.STOP
    assert completion.usage == Usage(prompt_tokens=26, completion_tokens=298)
    assert (completion.provider_model, completion.response_id) == ("llama3.2", "")


def test_a_reply_with_two_tool_calls_gets_unique_ids_and_compact_arguments() -> None:
    calls = [tool_call("get_weather", {"city": "Zürich", "unit": "C"}), tool_call("get_time", {})]
    completion = parse_chat(chat_response(message("", tool_calls=calls, thinking="Two lookups.")))
    assert completion.text == ""  # the thinking is not the answer
    assert completion.finish_reason is FinishReason.TOOL_CALLS  # Ollama says "stop"
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [
        ("get_weather", '{"city":"Zürich","unit":"C"}'),
        ("get_time", "{}"),
    ]
    matches = [GENERATED_ID.match(c.id) for c in completion.tool_calls]
    assert [m.group(1) if m else None for m in matches] == ["0", "1"]
    other = parse_chat(chat_response(message("", tool_calls=calls)))
    assert {c.id for c in completion.tool_calls}.isdisjoint(c.id for c in other.tool_calls)


def test_an_id_the_server_sends_is_kept() -> None:
    raw = {"id": "call_x1y2", "function": {"index": 0, "name": "get_time", "arguments": {}}}
    [call] = parse_chat(chat_response(message("", tool_calls=[raw]))).tool_calls
    assert call.id == "call_x1y2"


@pytest.mark.parametrize(
    ("done_reason", "has_calls", "expected"),
    [
        ("stop", False, FinishReason.STOP),
        ("stop", True, FinishReason.TOOL_CALLS),
        ("length", False, FinishReason.LENGTH),
        ("length", True, FinishReason.LENGTH),
        ("load", False, FinishReason.OTHER),
        ("unload", False, FinishReason.OTHER),
        (None, False, FinishReason.OTHER),
    ],
)
def test_done_reasons(done_reason: str | None, has_calls: bool, expected: FinishReason) -> None:
    assert finish_reason(done_reason, has_calls) is expected


def test_usage_is_unknown_without_a_prompt_count() -> None:
    assert map_usage({"prompt_eval_count": 12}) == Usage(prompt_tokens=12, completion_tokens=0)
    assert map_usage({"eval_count": 40}) is None  # the prompt was cached: 0 would be wrong
    assert parse_chat(chat_response(message("Hi"), prompt_eval_count=None, eval_count=40)).usage is None


# --- Streams ------------------------------------------------------------------------------------


def test_stream_lines_decode_to_text_and_final_usage() -> None:
    decoder = ChunkDecoder()
    lines = [
        chunk(message("", thinking="Hmm.")),
        *text_lines(["Hel", "lo"], prompt_eval_count=9, eval_count=2),
    ]
    events = [event for line in lines for event in decoder.feed(line)]
    assert events == [TextDelta("Hel"), TextDelta("lo")]
    assert decoder.finished
    done = decoder.done()
    assert done.finish_reason is FinishReason.STOP
    assert done.usage == Usage(prompt_tokens=9, completion_tokens=2)
    assert (done.provider_model, done.response_id) == ("llama3.2", "")


def test_streamed_tool_calls_are_whole_deltas_counting_up_across_lines() -> None:
    decoder = ChunkDecoder()
    lines = [
        *tool_call_lines(["Checking."], [tool_call("get_weather", {"city": "Paris"})])[:-1],
        chunk(message("", tool_calls=[tool_call("get_weather", {"city": "Oslo"})])),
        final_chunk(done_reason="stop", prompt_eval_count=120, eval_count=40),
    ]
    events = [event for line in lines for event in decoder.feed(line)]
    assert events[0] == TextDelta("Checking.")
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [(d.index, d.name, d.arguments) for d in deltas] == [
        (0, "get_weather", '{"city":"Paris"}'),
        (1, "get_weather", '{"city":"Oslo"}'),
    ]
    matches = [GENERATED_ID.match(d.id) for d in deltas]
    assert [m.group(1) if m else None for m in matches] == ["0", "1"]
    assert decoder.done().finish_reason is FinishReason.TOOL_CALLS


def test_a_stream_without_a_prompt_count_leaves_usage_unknown() -> None:
    decoder = ChunkDecoder()
    for line in text_lines(["Hi"], prompt_eval_count=None, eval_count=1):
        decoder.feed(line)
    assert decoder.done().usage is None


def test_an_error_line_is_kept_for_the_adapter() -> None:
    decoder = ChunkDecoder()
    assert decoder.feed(chunk(message("Hel"))) == [TextDelta("Hel")]
    assert decoder.feed({"error": "an error was encountered while running the model"}) == []
    assert decoder.error == "an error was encountered while running the model"
    assert not decoder.finished


def test_arguments_round_trip_as_the_same_json() -> None:
    arguments = {"query": "naïve café", "limit": 3, "filters": {"tags": ["a", "b"]}}
    [call] = parse_chat(chat_response(message("", tool_calls=[tool_call("search", arguments)]))).tool_calls
    assert json.loads(call.arguments) == arguments
    assert "naïve" in call.arguments  # not \u-escaped
