"""Domain requests to Gemini generateContent bodies, and replies and stream chunks back, as pure
functions."""

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
from llm_gateway.domain.results import FinishReason, StreamEvent, TextDelta, ToolCallDelta, Usage
from llm_gateway.pricing.sheet import UNKNOWN_PRICE
from llm_gateway.providers.base import UpstreamCall
from llm_gateway.providers.gemini.mapping import (
    EFFORT_BUDGETS,
    SKIP_THOUGHT_SIGNATURE,
    build_body,
    finish_reason,
    map_usage,
    parse_response,
)
from llm_gateway.providers.gemini.stream import ChunkDecoder
from tests.fakes.gemini import (
    blocked_response,
    candidate,
    function_call_part,
    response,
    stream_error,
    text_chunks,
    text_part,
    tool_call_chunks,
    usage_metadata,
)

SPEC = ModelSpec(
    id="gemini:gemini-2.5-flash",
    provider="gemini",
    name="gemini-2.5-flash",
    display_name="gemini-2.5-flash",
    context_window=None,
    max_output_tokens=None,
    capabilities=None,
    price=UNKNOWN_PRICE,
    listed=False,
)
WEATHER = Tool(
    "get_weather", "Weather for a city", {"type": "object", "properties": {"city": {"type": "string"}}}
)
SYNTHETIC_ID = re.compile(r"^call_(\d+)_[0-9a-f]{12}$")


def call_for(*messages: Message, lenient: bool = False, **fields: Any) -> UpstreamCall:
    return UpstreamCall(ChatRequest(model=SPEC.id, messages=messages, lenient=lenient, **fields), SPEC)


def body_for(*messages: Message, **fields: Any) -> dict[str, Any]:
    return build_body(call_for(*messages, **fields))


def refused_fields(*messages: Message, **fields: Any) -> list[str]:
    with pytest.raises(GatewayError) as caught:
        body_for(*messages, **fields)
    assert caught.value.code == "INVALID_ARGUMENT"
    return [v.field for v in caught.value.violations]


def user(text: str) -> Message:
    return Message(Role.USER, (TextPart(text),))


def assistant(text: str = "", *calls: ToolCall) -> Message:
    return Message(Role.ASSISTANT, (TextPart(text),) if text else (), tool_calls=calls)


def tool_result(call_id: str, text: str) -> Message:
    return Message(Role.TOOL, (TextPart(text),), tool_call_id=call_id)


# --- Requests -----------------------------------------------------------------------------------


def test_system_text_is_the_system_instruction_and_turns_alternate() -> None:
    body = body_for(
        Message(Role.SYSTEM, (TextPart("Be brief."),)),
        user("Hi"),
        user("Are you there?"),
        assistant("Yes."),
        Message(Role.SYSTEM, (TextPart("Answer in French."),)),
        user("Why?"),
    )
    assert body == {
        "systemInstruction": {"parts": [{"text": "Be brief.\n\nAnswer in French."}]},
        "contents": [
            {"role": "user", "parts": [{"text": "Hi"}, {"text": "Are you there?"}]},
            {"role": "model", "parts": [{"text": "Yes."}]},
            {"role": "user", "parts": [{"text": "Why?"}]},
        ],
    }


def test_sampling_settings_go_in_generation_config() -> None:
    gen = GenerationConfig(
        temperature=1.7,  # Gemini takes up to 2
        top_p=0.9,
        top_k=40,
        max_tokens=300,
        stop=("END", "STOP"),
        seed=7,
        presence_penalty=0.5,
        frequency_penalty=-0.25,
    )
    assert body_for(user("Hi"), generation=gen)["generationConfig"] == {
        "temperature": 1.7,
        "topP": 0.9,
        "topK": 40,
        "maxOutputTokens": 300,
        "stopSequences": ["END", "STOP"],
        "seed": 7,
        "presencePenalty": 0.5,
        "frequencyPenalty": -0.25,
    }


def test_no_output_limit_is_sent_unless_asked_for() -> None:
    assert "generationConfig" not in body_for(user("Hi"))


def test_more_than_five_stop_sequences_are_refused() -> None:
    gen = GenerationConfig(stop=("a", "b", "c", "d", "e", "f"))
    assert refused_fields(user("Hi"), generation=gen) == ["generation.stop"]


def test_tools_are_function_declarations_with_a_json_schema() -> None:
    bare = Tool("now")
    body = body_for(user("Hi"), tools=(WEATHER, bare))
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
                {"name": "now"},
            ]
        }
    ]
    assert "toolConfig" not in body  # no tool_choice: Gemini's default (AUTO)


@pytest.mark.parametrize(
    ("choice", "strict", "expected"),
    [
        (ToolChoice(ToolChoiceMode.AUTO), False, {"mode": "AUTO"}),
        (ToolChoice(ToolChoiceMode.NONE), False, {"mode": "NONE"}),
        (ToolChoice(ToolChoiceMode.REQUIRED), False, {"mode": "ANY"}),
        (
            ToolChoice(ToolChoiceMode.NAMED, "get_weather"),
            False,
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
        (None, True, {"mode": "VALIDATED"}),
        (ToolChoice(ToolChoiceMode.AUTO), True, {"mode": "VALIDATED"}),
        (ToolChoice(ToolChoiceMode.REQUIRED), True, {"mode": "ANY"}),
    ],
)
def test_tool_choice_is_the_function_calling_mode(
    choice: ToolChoice | None, strict: bool, expected: dict[str, Any]
) -> None:
    tool = Tool(WEATHER.name, WEATHER.description, WEATHER.parameters, strict=strict)
    body = body_for(user("Hi"), tools=(tool,), tool_choice=choice)
    assert body["toolConfig"] == {"functionCallingConfig": expected}


def test_parallel_tool_calls_off_is_refused_or_dropped() -> None:
    assert refused_fields(user("Hi"), tools=(WEATHER,), parallel_tool_calls=False) == ["parallel_tool_calls"]
    call = call_for(user("Hi"), lenient=True, tools=(WEATHER,), parallel_tool_calls=False)
    body = build_body(call)
    assert call.dropped == ["parallel_tool_calls"]
    assert "parallel" not in json.dumps(body).lower()
    # Nothing to honour: parallel calls on (Gemini's way), or no tool may be called at all.
    assert "toolConfig" not in body_for(user("Hi"), tools=(WEATHER,), parallel_tool_calls=True)
    choice = ToolChoice(ToolChoiceMode.NONE)
    body_for(user("Hi"), tools=(WEATHER,), tool_choice=choice, parallel_tool_calls=False)


def test_a_tool_conversation_becomes_function_calls_and_named_responses() -> None:
    calls = (
        ToolCall("call_a", "get_weather", '{"city": "Paris"}'),
        ToolCall("call_b", "get_time", ""),
    )
    body = body_for(
        user("Weather and time in Paris?"),
        assistant("Checking.", *calls),
        tool_result("call_b", "14:05"),
        tool_result("call_a", '{"temp_c": 18, "sky": "clear"}'),
        user("Thanks. And Oslo?"),
        assistant("", ToolCall("call_c", "get_weather", '{"city": "Oslo"}')),
        tool_result("call_c", "9C"),
    )
    assert body["contents"][1:] == [
        {
            "role": "model",
            "parts": [
                {"text": "Checking."},
                # The stand-in signature on the first call of each model turn; ids are never sent.
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                    "thoughtSignature": SKIP_THOUGHT_SIGNATURE,
                },
                {"functionCall": {"name": "get_time", "args": {}}},
            ],
        },
        {
            "role": "user",
            "parts": [
                {"functionResponse": {"name": "get_time", "response": {"output": "14:05"}}},
                {"functionResponse": {"name": "get_weather", "response": {"temp_c": 18, "sky": "clear"}}},
                {"text": "Thanks. And Oslo?"},
            ],
        },
        {
            "role": "model",
            "parts": [
                {
                    "functionCall": {"name": "get_weather", "args": {"city": "Oslo"}},
                    "thoughtSignature": SKIP_THOUGHT_SIGNATURE,
                }
            ],
        },
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": "9C"}}}],
        },
    ]


def test_a_tool_result_must_answer_an_earlier_call() -> None:
    fields = refused_fields(
        user("Hi"),
        tool_result("call_x", "orphan"),
        assistant("", ToolCall("call_x", "get_weather", "{}")),
    )
    assert fields == ["messages[1].tool_call_id"]


def test_tool_call_arguments_that_are_not_an_object_are_refused() -> None:
    bad = assistant("", ToolCall("t", "get_weather", "[1, 2]"))
    assert refused_fields(user("Hi"), bad, tool_result("t", "x")) == ["messages[1].tool_calls[0].arguments"]


def test_an_empty_message_is_refused() -> None:
    assert refused_fields(user("Hi"), user("")) == ["messages[1].content"]


def test_images_inline_and_by_url() -> None:
    parts = (
        TextPart("Compare these."),
        ImagePart(data=b"\x89PNG", mime_type="image/png"),
        ImagePart(url="https://example.com/photos/cat.JPG?size=large"),
        ImagePart(url="https://example.com/render", mime_type="image/webp"),
    )
    assert body_for(Message(Role.USER, parts))["contents"] == [
        {
            "role": "user",
            "parts": [
                {"text": "Compare these."},
                {"inlineData": {"mimeType": "image/png", "data": "iVBORw=="}},
                {
                    "fileData": {
                        "mimeType": "image/jpeg",
                        "fileUri": "https://example.com/photos/cat.JPG?size=large",
                    }
                },
                {"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/render"}},
            ],
        }
    ]


def test_an_image_url_of_unknown_type_is_refused() -> None:
    parts = (TextPart("What is it?"), ImagePart(url="https://example.com/image?id=42"))
    assert refused_fields(Message(Role.USER, parts)) == ["messages[0].content[1].image.mime_type"]


def test_image_detail_is_the_requests_media_resolution() -> None:
    low = ImagePart(url="https://example.com/a.png", detail="low")
    auto = ImagePart(url="https://example.com/b.png", detail="auto")
    body = body_for(Message(Role.USER, (low, auto)))
    assert body["generationConfig"] == {"mediaResolution": "MEDIA_RESOLUTION_LOW"}
    assert "mediaResolution" not in json.dumps(body["contents"])

    high = ImagePart(url="https://example.com/c.png", detail="high")
    assert refused_fields(Message(Role.USER, (low, high))) == ["messages[0].content[1].image.detail"]


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        (ResponseFormat(ResponseFormatType.TEXT), None),
        (ResponseFormat(ResponseFormatType.JSON_OBJECT), {"responseMimeType": "application/json"}),
        (
            ResponseFormat(
                ResponseFormatType.JSON_SCHEMA,
                {"type": "object", "properties": {"n": {"type": "integer"}}, "additionalProperties": False},
                "count",
                strict=True,
            ),
            {
                "responseMimeType": "application/json",
                "responseJsonSchema": {
                    "type": "object",
                    "properties": {"n": {"type": "integer"}},
                    "additionalProperties": False,
                },
            },
        ),
    ],
)
def test_response_formats(fmt: ResponseFormat, expected: dict[str, Any] | None) -> None:
    assert body_for(user("Hi"), response_format=fmt).get("generationConfig") == expected


@pytest.mark.parametrize(
    ("reasoning", "budget"),
    [
        (Reasoning(ReasoningEffort.NONE), 0),
        (Reasoning(ReasoningEffort.MINIMAL), 1024),
        (Reasoning(ReasoningEffort.LOW), 2048),
        (Reasoning(ReasoningEffort.MEDIUM), 8192),
        (Reasoning(ReasoningEffort.HIGH), 24576),
        (Reasoning(budget_tokens=3000), 3000),
        (Reasoning(ReasoningEffort.LOW, budget_tokens=3000), 3000),  # a budget wins over the level
    ],
)
def test_reasoning_is_a_thinking_budget(reasoning: Reasoning, budget: int) -> None:
    body = body_for(user("Hi"), reasoning=reasoning)
    assert body["generationConfig"] == {"thinkingConfig": {"thinkingBudget": budget}}
    if reasoning.budget_tokens is None:
        assert reasoning.effort is not None
        assert EFFORT_BUDGETS[reasoning.effort] == budget


def test_provider_options_are_merged_last_and_generation_config_adds_to_the_mapped_one() -> None:
    call = UpstreamCall(
        ChatRequest(model=SPEC.id, messages=(user("Hi"),), generation=GenerationConfig(temperature=0.2)),
        SPEC,
        {
            "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
            "generationConfig": {"responseLogprobs": True},
        },
    )
    body = build_body(call)
    assert body["safetySettings"] == [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
    assert body["generationConfig"] == {"temperature": 0.2, "responseLogprobs": True}


# --- Replies ------------------------------------------------------------------------------------


def test_usage_counts_thoughts_as_completion_and_tool_use_as_prompt() -> None:
    meta = usage_metadata(1200, 40, cached=1000, thoughts=300, tool_use_prompt=50)
    assert map_usage(meta) == Usage(
        prompt_tokens=1250, completion_tokens=340, cache_read_tokens=1000, reasoning_tokens=300
    )
    assert map_usage(usage_metadata(8, None)) == Usage(prompt_tokens=8)
    assert map_usage(None) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("STOP", FinishReason.STOP),
        ("MAX_TOKENS", FinishReason.LENGTH),
        ("SAFETY", FinishReason.CONTENT_FILTER),
        ("RECITATION", FinishReason.CONTENT_FILTER),
        ("BLOCKLIST", FinishReason.CONTENT_FILTER),
        ("PROHIBITED_CONTENT", FinishReason.CONTENT_FILTER),
        ("SPII", FinishReason.CONTENT_FILTER),
        ("IMAGE_SAFETY", FinishReason.CONTENT_FILTER),
        ("MALFORMED_FUNCTION_CALL", FinishReason.OTHER),
        ("LANGUAGE", FinishReason.OTHER),
        ("OTHER", FinishReason.OTHER),
        (None, FinishReason.OTHER),
    ],
)
def test_finish_reasons(value: str | None, expected: FinishReason) -> None:
    assert finish_reason(value) is expected


def test_a_reply_with_a_thought_summary_text_and_parallel_calls() -> None:
    data = response(
        [
            candidate(
                [
                    text_part("The user wants two cities.", thought=True),
                    text_part("Checking both.", signature="CiQB0e2Kb7"),
                    function_call_part("get_weather", {"city": "Paris"}),
                    function_call_part("get_weather", {"city": "Oslo", "units": {"temp": "C"}}),
                    function_call_part("get_time", {}, call_id="fc_77"),
                ]
            )
        ],
        usage_metadata(30, 25, thoughts=12),
    )
    completion = parse_response(data)
    assert completion.text == "Checking both."
    assert completion.finish_reason is FinishReason.TOOL_CALLS
    first, second, third = completion.tool_calls
    assert [(c.name, c.arguments) for c in completion.tool_calls] == [
        ("get_weather", '{"city":"Paris"}'),
        ("get_weather", '{"city":"Oslo","units":{"temp":"C"}}'),
        ("get_time", "{}"),
    ]
    first_match, second_match = SYNTHETIC_ID.match(first.id), SYNTHETIC_ID.match(second.id)
    assert first_match is not None
    assert second_match is not None
    assert (first_match[1], second_match[1]) == ("0", "1")
    assert third.id == "fc_77"  # Gemini's own id when it sends one
    assert parse_response(data).tool_calls[0].id != first.id  # unique across replies
    assert completion.usage == Usage(prompt_tokens=30, completion_tokens=37, reasoning_tokens=12)
    assert (completion.response_id, completion.provider_model) == (
        "8pADaZXBMuqlz7IPx56J8QU",
        "gemini-2.5-flash",
    )


def test_a_blocked_prompt_is_a_content_filtered_empty_completion() -> None:
    completion = parse_response(blocked_response("PROHIBITED_CONTENT", prompt_tokens=9))
    assert (completion.text, completion.tool_calls) == ("", [])
    assert completion.finish_reason is FinishReason.CONTENT_FILTER
    assert completion.usage == Usage(prompt_tokens=9)


def test_a_candidate_stopped_for_safety_has_no_content() -> None:
    completion = parse_response(response([candidate(None, "SAFETY")]))
    assert (completion.text, completion.finish_reason) == ("", FinishReason.CONTENT_FILTER)


def test_a_reply_without_candidates_or_block_reason_is_malformed() -> None:
    with pytest.raises(ValueError, match="no candidates"):
        parse_response({"usageMetadata": usage_metadata(5, 0), "modelVersion": "gemini-2.5-flash"})


# --- Streams ------------------------------------------------------------------------------------


def decode(chunks: list[dict[str, Any]]) -> tuple[ChunkDecoder, list[StreamEvent]]:
    decoder = ChunkDecoder()
    return decoder, [event for chunk in chunks for event in decoder.feed(chunk)]


def test_stream_chunks_decode_to_text_deltas_and_the_last_usage() -> None:
    thinking = response([candidate([text_part("Hmm.", thought=True)], None)], usage_metadata(7, 0))
    chunks = [thinking, *text_chunks(["Hel", "lo"], usage_metadata(7, 2, cached=4, thoughts=9))]
    decoder, events = decode(chunks[:-1])
    assert events == [TextDelta("Hel")]
    assert not decoder.finished
    decoder, events = decode(chunks)
    assert events == [TextDelta("Hel"), TextDelta("lo")]
    assert decoder.finished
    done = decoder.done()
    assert done.finish_reason is FinishReason.STOP
    assert done.usage == Usage(prompt_tokens=7, completion_tokens=11, cache_read_tokens=4, reasoning_tokens=9)
    assert (done.response_id, done.provider_model) == ("8pADaZXBMuqlz7IPx56J8QU", "gemini-2.5-flash")


def test_streamed_calls_arrive_whole_and_match_the_unary_parse() -> None:
    calls = [
        function_call_part("get_weather", {"city": "Paris"}),
        function_call_part("get_weather", {"city": "Oslo", "days": [1, 2]}),
    ]
    decoder, events = decode(tool_call_chunks(["Checking."], calls))
    unary = parse_response(response([candidate([text_part("Checking."), *calls])]))
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert [(d.index, d.name, d.arguments) for d in deltas] == [
        (i, c.name, c.arguments) for i, c in enumerate(unary.tool_calls)
    ]
    assert all(SYNTHETIC_ID.match(d.id) for d in deltas)
    assert len({d.id for d in deltas}) == 2
    assert decoder.done().finish_reason is FinishReason.TOOL_CALLS


def test_an_error_chunk_is_kept_for_the_adapter() -> None:
    decoder, events = decode([*text_chunks(["a", "b"])[:1], stream_error("INTERNAL", "Internal error")])
    assert events == [TextDelta("a")]
    assert decoder.error == {"code": 500, "message": "Internal error", "status": "INTERNAL"}
    assert not decoder.finished


def test_a_blocked_prompt_finishes_the_stream() -> None:
    decoder, events = decode([blocked_response("SAFETY")])
    assert events == []
    assert decoder.finished
    assert decoder.done().finish_reason is FinishReason.CONTENT_FILTER
