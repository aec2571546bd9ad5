"""Domain requests to Anthropic Messages bodies, and stream events back, as pure functions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llm_gateway.catalog import ModelSpec
from llm_gateway.domain.errors import GatewayError
from llm_gateway.domain.messages import (
    Caller,
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
from llm_gateway.providers.anthropic.mapping import build_body, map_usage, parse_message
from llm_gateway.providers.anthropic.stream import EventDecoder
from llm_gateway.providers.base import UpstreamCall

SPEC = ModelSpec(
    id="anthropic:claude-haiku-4-5",
    provider="anthropic",
    name="claude-haiku-4-5",
    display_name="Claude Haiku 4.5",
    context_window=200_000,
    max_output_tokens=64_000,
    capabilities=frozenset({"streaming", "tools", "vision"}),
    price=UNKNOWN_PRICE,
)
WEATHER = Tool(
    "get_weather", "Weather for a city", {"type": "object", "properties": {"city": {"type": "string"}}}
)


def body_for(
    *messages: Message, spec: ModelSpec = SPEC, stream: bool = False, **fields: Any
) -> dict[str, Any]:
    return build_body(
        UpstreamCall(ChatRequest(model=spec.id, messages=messages, **fields), spec), stream=stream
    )


def user(text: str) -> Message:
    return Message(Role.USER, (TextPart(text),))


def test_system_moves_to_the_top_and_max_tokens_defaults_to_the_model_max() -> None:
    body = body_for(Message(Role.SYSTEM, (TextPart("Be brief."),)), user("Hi"), stream=True)
    assert body == {
        "model": "claude-haiku-4-5",
        "max_tokens": 64_000,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "stream": True,
    }


def test_an_unknown_model_max_gets_the_documented_default() -> None:
    unlisted = ModelSpec("anthropic:x", "anthropic", "x", "x", None, None, None, UNKNOWN_PRICE, listed=False)
    assert body_for(user("Hi"), spec=unlisted)["max_tokens"] == 4096


def test_sampling_stop_and_user_are_mapped() -> None:
    gen = GenerationConfig(temperature=0.3, top_p=0.9, top_k=40, max_tokens=100, stop=("END",))
    body = body_for(user("Hi"), generation=gen, caller=Caller(user="u-42"))
    assert {
        k: body[k] for k in ("temperature", "top_p", "top_k", "max_tokens", "stop_sequences", "metadata")
    } == {
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 40,
        "max_tokens": 100,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-42"},
    }


def test_what_anthropic_cannot_honour_is_refused_naming_every_field() -> None:
    gen = GenerationConfig(temperature=1.5, seed=7, presence_penalty=0.1, frequency_penalty=0.2)
    with pytest.raises(GatewayError) as caught:
        body_for(user("Hi"), generation=gen, response_format=ResponseFormat(ResponseFormatType.JSON_OBJECT))
    fields = [v.field for v in caught.value.violations]
    assert fields == [
        "generation.temperature",
        "generation.seed",
        "generation.presence_penalty",
        "generation.frequency_penalty",
        "response_format",
    ]


def test_a_tool_conversation_becomes_tool_use_and_merged_tool_results() -> None:
    calls = (
        ToolCall("toolu_1", "get_weather", '{"city": "Paris"}'),
        ToolCall("toolu_2", "get_weather", '{"city": "Oslo"}'),
    )
    body = body_for(
        user("Weather in Paris and Oslo?"),
        Message(Role.ASSISTANT, (TextPart("Checking."),), tool_calls=calls),
        Message(Role.TOOL, (TextPart("18C"),), tool_call_id="toolu_1"),
        Message(Role.TOOL, (TextPart("9C"),), tool_call_id="toolu_2"),
        tools=(WEATHER,),
        tool_choice=ToolChoice(ToolChoiceMode.REQUIRED),
        parallel_tool_calls=False,
    )
    assert body["tools"] == [
        {"description": "Weather for a city", "name": "get_weather", "input_schema": WEATHER.parameters}
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Oslo"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "9C"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (ToolChoice(ToolChoiceMode.AUTO), {"type": "auto"}),
        (ToolChoice(ToolChoiceMode.NONE), {"type": "none"}),
        (ToolChoice(ToolChoiceMode.NAMED, "get_weather"), {"type": "tool", "name": "get_weather"}),
    ],
)
def test_tool_choice_modes(choice: ToolChoice, expected: dict[str, Any]) -> None:
    assert body_for(user("Hi"), tools=(WEATHER,), tool_choice=choice)["tool_choice"] == expected


def test_tool_call_arguments_that_are_not_an_object_are_refused() -> None:
    bad = Message(Role.ASSISTANT, tool_calls=(ToolCall("t", "get_weather", "[1, 2]"),))
    with pytest.raises(GatewayError) as caught:
        body_for(user("Hi"), bad)
    assert [v.field for v in caught.value.violations] == ["messages[1].tool_calls[0].arguments"]


def test_images_by_url_and_inline_bytes() -> None:
    parts = (
        TextPart("What is this?"),
        ImagePart(url="https://example.com/cat.png"),
        ImagePart(data=b"\x89PNG", mime_type="image/png"),
    )
    content = body_for(Message(Role.USER, parts))["messages"][0]["content"]
    assert content[1:] == [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw=="}},
    ]


def test_provider_options_are_merged_verbatim() -> None:
    call = UpstreamCall(
        ChatRequest(model=SPEC.id, messages=(user("Hi"),)),
        SPEC,
        {"thinking": {"type": "enabled", "budget_tokens": 2048}},
    )
    assert build_body(call, stream=False)["thinking"] == {"type": "enabled", "budget_tokens": 2048}


def test_usage_sums_uncached_written_and_read_input() -> None:
    usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 200,
        "cache_read_input_tokens": 3000,
        "output_tokens": 7,
    }
    assert map_usage(usage) == Usage(
        prompt_tokens=3210, completion_tokens=7, cache_read_tokens=3000, cache_write_tokens=200
    )


def test_a_reply_with_thinking_text_and_a_tool_call() -> None:
    completion = parse_message(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5-20251001",
            "content": [
                {"type": "thinking", "thinking": "Let me see.", "signature": "sig"},
                {"type": "text", "text": "I'll check."},
                {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Paris"}},
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 20, "output_tokens": 30},
        }
    )
    assert completion.text == "I'll check."
    assert [(c.id, c.name, json.loads(c.arguments)) for c in completion.tool_calls] == [
        ("toolu_9", "get_weather", {"city": "Paris"})
    ]
    assert completion.finish_reason is FinishReason.TOOL_CALLS
    assert completion.provider_model == "claude-haiku-4-5-20251001"


def block_start(index: int, block: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}


def block_delta(index: int, delta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}


def test_stream_events_decode_to_deltas_and_final_usage() -> None:
    decoder = EventDecoder()
    start_usage = {"input_tokens": 12, "cache_read_input_tokens": 100, "output_tokens": 1}
    sequence: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {"type": "message_start", "message": {"id": "msg_2", "model": "m", "usage": start_usage}},
        ),
        ("ping", {"type": "ping"}),
        block_start(0, {"type": "thinking", "thinking": ""}),
        block_delta(0, {"type": "thinking_delta", "thinking": "hmm"}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        block_start(1, {"type": "text", "text": ""}),
        block_delta(1, {"type": "text_delta", "text": "Hi"}),
        block_start(2, {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}}),
        block_delta(2, {"type": "input_json_delta", "partial_json": ""}),
        block_delta(2, {"type": "input_json_delta", "partial_json": '{"a": '}),
        block_delta(2, {"type": "input_json_delta", "partial_json": "1}"}),
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 42}},
        ),
        ("message_stop", {"type": "message_stop"}),
    ]
    events = [e for kind, data in sequence for e in decoder.feed(kind, data)]
    assert events == [
        TextDelta("Hi"),
        ToolCallDelta(index=0, id="toolu_1", name="f"),
        ToolCallDelta(index=0, arguments='{"a": '),
        ToolCallDelta(index=0, arguments="1}"),
    ]
    assert decoder.stopped
    done = decoder.done()
    assert done.finish_reason is FinishReason.TOOL_CALLS
    assert done.usage == Usage(prompt_tokens=112, completion_tokens=42, cache_read_tokens=100)
    assert (done.response_id, done.provider_model) == ("msg_2", "m")


def test_an_error_event_is_kept_for_the_adapter() -> None:
    decoder = EventDecoder()
    decoder.feed("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert decoder.error == {"type": "overloaded_error", "message": "Overloaded"}


def test_a_json_schema_goes_to_output_config_and_strict_tools_stay_strict() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "additionalProperties": False}
    strict_tool = Tool("get_weather", "", {"type": "object", "properties": {}}, strict=True)
    body = body_for(
        user("Hi"),
        tools=(strict_tool,),
        response_format=ResponseFormat(ResponseFormatType.JSON_SCHEMA, schema, "city"),
    )
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert body["tools"] == [
        {"name": "get_weather", "input_schema": {"type": "object", "properties": {}}, "strict": True}
    ]


@pytest.mark.parametrize(
    ("reasoning", "thinking"),
    [
        (Reasoning(budget_tokens=3000), {"type": "enabled", "budget_tokens": 3000}),
        (
            Reasoning(ReasoningEffort.MEDIUM),
            {"type": "enabled", "budget_tokens": 8192},
        ),
        (Reasoning(ReasoningEffort.HIGH, budget_tokens=5000), {"type": "enabled", "budget_tokens": 5000}),
        (Reasoning(ReasoningEffort.NONE), {"type": "disabled"}),
    ],
)
def test_reasoning_becomes_extended_thinking(reasoning: Reasoning, thinking: dict[str, Any]) -> None:
    assert body_for(user("Hi"), reasoning=reasoning)["thinking"] == thinking


def test_a_thinking_budget_past_the_default_output_limit_raises_the_limit() -> None:
    unlisted = ModelSpec("anthropic:x", "anthropic", "x", "x", None, None, None, UNKNOWN_PRICE, listed=False)
    body = body_for(user("Hi"), spec=unlisted, reasoning=Reasoning(budget_tokens=8000))
    assert body["max_tokens"] == 8000 + 4096
    with pytest.raises(GatewayError) as caught:
        body_for(
            user("Hi"), reasoning=Reasoning(budget_tokens=8000), generation=GenerationConfig(max_tokens=8000)
        )
    assert [v.field for v in caught.value.violations] == ["reasoning"]


def test_what_thinking_rules_out_is_refused_or_dropped_by_policy() -> None:
    gen = GenerationConfig(temperature=0.5, top_k=5, top_p=0.5)
    fields: dict[str, Any] = {
        "generation": gen,
        "reasoning": Reasoning(ReasoningEffort.LOW),
        "tools": (WEATHER,),
        "tool_choice": ToolChoice(ToolChoiceMode.REQUIRED),
    }
    with pytest.raises(GatewayError) as caught:
        body_for(user("Hi"), **fields)
    expected = ["generation.temperature", "generation.top_p", "generation.top_k", "tool_choice"]
    assert [v.field for v in caught.value.violations] == expected
    assert all("LENIENT" in v.description for v in caught.value.violations)

    call = UpstreamCall(ChatRequest(model=SPEC.id, messages=(user("Hi"),), lenient=True, **fields), SPEC)
    body = build_body(call, stream=False)
    assert call.dropped == expected
    assert not {"temperature", "top_p", "top_k", "tool_choice"} & body.keys()
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}


def test_a_budget_below_the_minimum_is_refused() -> None:
    with pytest.raises(GatewayError) as caught:
        body_for(user("Hi"), reasoning=Reasoning(budget_tokens=500))
    assert [v.field for v in caught.value.violations] == ["reasoning.budget_tokens"]


def test_thinking_tokens_are_reasoning_tokens() -> None:
    usage = map_usage(
        {"input_tokens": 10, "output_tokens": 300, "output_tokens_details": {"thinking_tokens": 250}}
    )
    assert usage == Usage(prompt_tokens=10, completion_tokens=300, reasoning_tokens=250)
