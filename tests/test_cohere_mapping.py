"""Domain requests to Cohere Chat v2 bodies, and replies and stream events back, as pure functions."""

from __future__ import annotations

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
from llm_gateway.domain.results import FinishReason, StreamDone, StreamEvent, TextDelta, ToolCallDelta, Usage
from llm_gateway.pricing.sheet import UNKNOWN_PRICE
from llm_gateway.providers.base import THINKING_BUDGETS, UpstreamCall
from llm_gateway.providers.cohere.mapping import build_body, map_usage, parse_chat
from llm_gateway.providers.cohere.stream import EventDecoder
from tests.fakes.cohere import (
    chat_response,
    citation_end,
    citation_start,
    content_delta,
    content_end,
    content_start,
    message_end,
    message_start,
    text_events,
    text_item,
    thinking_events,
    thinking_item,
    tool_call,
    tool_call_end,
    tool_call_events,
    tool_call_start,
    usage,
)

SPEC = ModelSpec(
    id="cohere:command-a-03-2025",
    provider="cohere",
    name="command-a-03-2025",
    display_name="Command A",
    context_window=256_000,
    max_output_tokens=8_000,
    capabilities=None,
    price=UNKNOWN_PRICE,
    listed=False,
)
PARAMETERS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = Tool("get_weather", "Weather for a city", PARAMETERS)


def call_for(*messages: Message, **fields: Any) -> UpstreamCall:
    return UpstreamCall(ChatRequest(model=SPEC.id, messages=messages, **fields), SPEC)


def body_for(*messages: Message, stream: bool = False, **fields: Any) -> dict[str, Any]:
    return build_body(call_for(*messages, **fields), stream=stream)


def refused(*messages: Message, **fields: Any) -> list[str]:
    """The fields a STRICT request is refused for."""
    with pytest.raises(GatewayError) as caught:
        body_for(*messages, **fields)
    assert all("LENIENT" in v.description for v in caught.value.violations)
    return [v.field for v in caught.value.violations]


def user(text: str) -> Message:
    return Message(Role.USER, (TextPart(text),))


def decode(events: list[dict[str, Any]]) -> tuple[list[StreamEvent], EventDecoder]:
    decoder = EventDecoder()
    out: list[StreamEvent] = []
    for event in events:
        out.extend(decoder.feed(event))
    return out, decoder


# --- Requests -----------------------------------------------------------------------------------


def test_a_plain_request_is_model_messages_and_stream() -> None:
    assert body_for(user("Hi"), stream=True) == {
        "model": "command-a-03-2025",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
    }
    assert body_for(user("Hi"))["stream"] is False


def test_system_messages_join_into_one_first_turn() -> None:
    body = body_for(
        Message(Role.SYSTEM, (TextPart("Be brief."),)),
        user("Hi"),
        Message(Role.ASSISTANT, (TextPart("Hello."),)),
        Message(Role.SYSTEM, (TextPart("Answer in French."),)),
        user("Weather?"),
    )
    assert body["messages"] == [
        {"role": "system", "content": "Be brief.\n\nAnswer in French."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Weather?"},
    ]


def test_images_are_image_url_parts_inline_bytes_as_data_urls() -> None:
    message = Message(
        Role.USER,
        (
            TextPart("What is in these?"),
            ImagePart(data=b"\x89PNG\r\n", mime_type="image/png"),
            ImagePart(url="https://example.com/cat.jpg", detail="low"),
            TextPart(""),
        ),
    )
    assert body_for(message)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in these?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}},
            ],
        }
    ]


def test_a_tool_turn_sends_its_text_as_the_tool_plan_and_results_as_tool_messages() -> None:
    calls = (
        ToolCall("get_weather_1", "get_weather", '{"city": "Paris"}'),
        ToolCall("get_time_2", "get_time", ""),
    )
    body = body_for(
        user("Weather and time in Paris?"),
        Message(Role.ASSISTANT, (TextPart("I will look both up."),), tool_calls=calls),
        Message(Role.TOOL, (TextPart("18C"),), tool_call_id="get_weather_1"),
        Message(Role.TOOL, (TextPart("14:00"),), tool_call_id="get_time_2"),
        Message(Role.ASSISTANT, (), tool_calls=calls[:1]),
    )
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "tool_plan": "I will look both up.",
            "tool_calls": [
                tool_call("get_weather_1", "get_weather", '{"city": "Paris"}'),
                tool_call("get_time_2", "get_time", "{}"),
            ],
        },
        {"role": "tool", "tool_call_id": "get_weather_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "get_time_2", "content": "14:00"},
        {"role": "assistant", "tool_calls": [tool_call("get_weather_1", "get_weather", '{"city": "Paris"}')]},
    ]


def test_sampling_settings_take_cohere_names() -> None:
    gen = GenerationConfig(
        temperature=0.3,
        top_p=0.9,
        top_k=40,
        max_tokens=100,
        stop=("END", "STOP"),
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.2,
    )
    body = body_for(user("Hi"), generation=gen)
    del body["messages"]
    assert body == {
        "model": "command-a-03-2025",
        "stream": False,
        "temperature": 0.3,
        "p": 0.9,
        "k": 40,
        "max_tokens": 100,
        "stop_sequences": ["END", "STOP"],
        "seed": 7,
        "frequency_penalty": 0.2,
        "presence_penalty": 0.1,
    }


def test_the_edges_of_cohere_ranges_are_sent() -> None:
    gen = GenerationConfig(
        temperature=1.0, top_p=0.01, top_k=500, presence_penalty=0.0, frequency_penalty=1.0
    )
    body = body_for(user("Hi"), generation=gen)
    assert (
        body["temperature"],
        body["p"],
        body["k"],
        body["presence_penalty"],
        body["frequency_penalty"],
    ) == (
        1.0,
        0.01,
        500,
        0.0,
        1.0,
    )


@pytest.mark.parametrize(
    ("gen", "field"),
    [
        (GenerationConfig(temperature=1.2), "generation.temperature"),
        (GenerationConfig(top_p=1.0), "generation.top_p"),
        (GenerationConfig(top_p=0.005), "generation.top_p"),
        (GenerationConfig(top_k=501), "generation.top_k"),
        (GenerationConfig(presence_penalty=-0.5), "generation.presence_penalty"),
        (GenerationConfig(frequency_penalty=1.5), "generation.frequency_penalty"),
    ],
)
def test_settings_outside_cohere_ranges_are_refused(gen: GenerationConfig, field: str) -> None:
    assert refused(user("Hi"), generation=gen) == [field]


def test_lenient_leaves_out_and_reports_every_setting_cohere_cannot_honour() -> None:
    fields: dict[str, Any] = {
        "generation": GenerationConfig(temperature=1.5, top_p=1.0, presence_penalty=-1.0, max_tokens=50),
        "tools": (WEATHER,),
        "tool_choice": ToolChoice(ToolChoiceMode.NAMED, "get_weather"),
        "parallel_tool_calls": False,
        "response_format": ResponseFormat(ResponseFormatType.JSON_OBJECT),
    }
    messages = (Message(Role.USER, (TextPart("Hi"),), name="alice"),)
    expected = [
        "messages[0].name",
        "generation.temperature",
        "generation.top_p",
        "generation.presence_penalty",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
    ]
    assert refused(*messages, **fields) == expected

    call = UpstreamCall(ChatRequest(model=SPEC.id, messages=messages, lenient=True, **fields), SPEC)
    body = build_body(call, stream=False)
    assert call.dropped == expected
    assert body == {
        "model": "command-a-03-2025",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": False,
        "max_tokens": 50,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": PARAMETERS,
                },
            }
        ],
    }


@pytest.mark.parametrize(
    ("choice", "sent"),
    [
        (ToolChoice(ToolChoiceMode.REQUIRED), "REQUIRED"),
        (ToolChoice(ToolChoiceMode.NONE), "NONE"),
        (ToolChoice(ToolChoiceMode.AUTO), None),
        (None, None),
    ],
)
def test_tool_choice_is_required_none_or_left_out(choice: ToolChoice | None, sent: str | None) -> None:
    body = body_for(user("Hi"), tools=(WEATHER,), tool_choice=choice, parallel_tool_calls=True)
    assert body.get("tool_choice") == sent
    assert "parallel_tool_calls" not in body  # parallel calls are Cohere's default, with no switch


def test_tool_choice_none_without_tools_needs_nothing_sent() -> None:
    assert "tool_choice" not in body_for(user("Hi"), tool_choice=ToolChoice(ToolChoiceMode.NONE))


def test_strict_tools_is_one_switch_for_all_tools() -> None:
    strict = Tool("get_time", "", None, strict=True)
    body = body_for(user("Hi"), tools=(strict, Tool("get_date", strict=True)))
    assert body["strict_tools"] is True
    assert body["tools"][0] == {
        "type": "function",
        "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
    }
    assert "strict_tools" not in body_for(user("Hi"), tools=(WEATHER,))
    assert refused(user("Hi"), tools=(WEATHER, strict)) == ["tools[1].strict"]


def test_json_output_is_json_object_with_the_schema_on_it() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    with_schema = ResponseFormat(ResponseFormatType.JSON_SCHEMA, schema, "answer", strict=True)
    assert body_for(user("Hi"), response_format=with_schema)["response_format"] == {
        "type": "json_object",
        "json_schema": schema,
    }
    json_object = ResponseFormat(ResponseFormatType.JSON_OBJECT)
    assert body_for(user("Hi"), response_format=json_object)["response_format"] == {"type": "json_object"}
    assert "response_format" not in body_for(
        user("Hi"), response_format=ResponseFormat(ResponseFormatType.TEXT)
    )
    assert refused(user("Hi"), response_format=with_schema, tools=(WEATHER,)) == ["response_format"]


@pytest.mark.parametrize(
    ("reasoning", "thinking"),
    [
        (Reasoning(budget_tokens=3000), {"type": "enabled", "token_budget": 3000}),
        (Reasoning(ReasoningEffort.HIGH, budget_tokens=500), {"type": "enabled", "token_budget": 500}),
        (Reasoning(ReasoningEffort.NONE), {"type": "disabled"}),
        *(
            (Reasoning(effort), {"type": "enabled", "token_budget": budget})
            for effort, budget in THINKING_BUDGETS.items()
        ),
    ],
)
def test_reasoning_becomes_thinking(reasoning: Reasoning, thinking: dict[str, Any]) -> None:
    assert body_for(user("Hi"), reasoning=reasoning)["thinking"] == thinking


def test_every_level_has_a_budget() -> None:
    assert set(THINKING_BUDGETS) == set(ReasoningEffort) - {ReasoningEffort.NONE}


def test_provider_options_merge_last_and_win() -> None:
    request = ChatRequest(model=SPEC.id, messages=(user("Hi"),), generation=GenerationConfig(temperature=0.2))
    options = {"temperature": 0.9, "safety_mode": "STRICT", "priority": 1}
    body = build_body(UpstreamCall(request, SPEC, options=options), stream=False)
    assert (body["temperature"], body["safety_mode"], body["priority"]) == (0.9, "STRICT", 1)


# --- Replies ------------------------------------------------------------------------------------


def test_a_text_reply_skips_thinking_and_bills_what_cohere_bills() -> None:
    data = chat_response(
        [thinking_item("2 + 2 is 4."), text_item("The answer "), text_item("is 4.")],
        usage_=usage(8, 50, cached_tokens=1360, model_input_tokens=1394, model_output_tokens=54),
    )
    completion = parse_chat(data)
    assert completion.text == "The answer is 4."
    assert completion.tool_calls == []
    assert completion.finish_reason is FinishReason.STOP
    assert completion.response_id == "1f476b96-75b3-4223-a19b-cccf591d161c"
    assert completion.provider_model == ""  # Cohere does not echo the model
    # All 1360 cache hits fit in the 1386 unbilled template tokens: none is certainly billed.
    assert completion.usage == Usage(prompt_tokens=8, completion_tokens=50, cache_read_tokens=0)


def test_a_tool_calling_reply_returns_its_plan_as_text() -> None:
    data = chat_response(
        finish_reason="TOOL_CALL",
        tool_plan="I will check the weather.",
        tool_calls=[
            tool_call("get_weather_dqgshstja6p9", "get_weather", '{"city":"Paris"}'),
            tool_call("get_weather_dcxfx4myvx68", "get_weather", '{"city":"Oslo"}'),
        ],
        usage_=usage(119, 52, cached_tokens=1504, model_input_tokens=1549, model_output_tokens=103),
    )
    completion = parse_chat(data)
    assert completion.text == "I will check the weather."
    assert completion.finish_reason is FinishReason.TOOL_CALLS
    assert [(c.id, c.name, c.arguments) for c in completion.tool_calls] == [
        ("get_weather_dqgshstja6p9", "get_weather", '{"city":"Paris"}'),
        ("get_weather_dcxfx4myvx68", "get_weather", '{"city":"Oslo"}'),
    ]
    # 1549 - 119 = 1430 unbilled input tokens, so at least 1504 - 1430 = 74 cache hits were billed.
    assert completion.usage == Usage(prompt_tokens=119, completion_tokens=52, cache_read_tokens=74)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("COMPLETE", FinishReason.STOP),
        ("STOP_SEQUENCE", FinishReason.STOP),
        ("MAX_TOKENS", FinishReason.LENGTH),
        ("TOOL_CALL", FinishReason.TOOL_CALLS),
        ("ERROR", FinishReason.OTHER),
        ("TIMEOUT", FinishReason.OTHER),
        ("SOMETHING_NEW", FinishReason.OTHER),
    ],
)
def test_finish_reasons(reason: str, expected: FinishReason) -> None:
    assert parse_chat(chat_response([text_item("x")], reason)).finish_reason is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ({}, None),
        ({"tokens": {"input_tokens": 500, "output_tokens": 5}, "cached_tokens": 448}, Usage(500, 5, 448)),
        ({"billed_units": {"input_tokens": 5, "output_tokens": 2}}, Usage(5, 2)),
        ({"billed_units": {"input_tokens": 20, "output_tokens": 2}, "cached_tokens": 30}, Usage(20, 2, 20)),
        (usage(100, 10, cached_tokens=1450), Usage(100, 10, 50)),
        (usage(100, 10, cached_tokens=1500), Usage(100, 10, 100)),
        ({"billed_units": {"input_tokens": 7.0, "output_tokens": 3.0}}, Usage(7, 3)),
    ],
)
def test_usage(raw: dict[str, Any] | None, expected: Usage | None) -> None:
    assert map_usage(raw) == expected


# --- Streams ------------------------------------------------------------------------------------


def test_a_streamed_text_reply() -> None:
    events, decoder = decode(text_events(["Hel", "lo"], usage(8, 2, cached_tokens=1404)))
    assert events == [TextDelta("Hel"), TextDelta("lo")]
    assert decoder.ended
    assert decoder.error is None
    assert decoder.done() == StreamDone(
        FinishReason.STOP, Usage(8, 2, 4), response_id="1f476b96-75b3-4223-a19b-cccf591d161c"
    )


def test_streamed_tool_calls_count_from_zero_and_carry_id_and_name_first() -> None:
    events, decoder = decode(
        tool_call_events(
            ["I will ", "check."],
            [("get_weather_1", "get_weather", ['{"city"', ': "Paris"}']), ("get_time_2", "get_time", [])],
        )
    )
    assert events == [
        TextDelta("I will "),
        TextDelta("check."),
        ToolCallDelta(0, "get_weather_1", "get_weather", ""),
        ToolCallDelta(0, arguments='{"city"'),
        ToolCallDelta(0, arguments=': "Paris"}'),
        ToolCallDelta(1, "get_time_2", "get_time", ""),
        ToolCallDelta(1, arguments="{}"),  # no arguments streamed: "{}" as in the unary reply
    ]
    assert decoder.done().finish_reason is FinishReason.TOOL_CALLS


def test_tool_calls_are_numbered_by_the_gateway_not_by_cohere_index() -> None:
    events, _ = decode([message_start(), tool_call_start(3, "a", "f", '{"x": 1}'), tool_call_end(3)])
    assert events == [ToolCallDelta(0, "a", "f", '{"x": 1}')]


def test_thinking_and_citations_are_left_out_of_the_stream() -> None:
    events, _ = decode(thinking_events(["Two ", "and two."], ["It is ", "4."]))
    assert events == [TextDelta("It is "), TextDelta("4.")]
    events, _ = decode(
        [
            message_start(),
            content_start(0),
            content_delta(0, "18C in Paris."),
            citation_start(0, "18C", 0, 3, "get_weather_1:0"),
            citation_end(0),
            content_end(0),
            message_end(),
        ]
    )
    assert events == [TextDelta("18C in Paris.")]


def test_an_error_finish_is_recorded_with_its_message() -> None:
    _, decoder = decode([message_start(), message_end("ERROR", error="internal error")])
    assert (decoder.ended, decoder.error) == (True, "internal error")
    _, decoder = decode([message_start(), message_end("ERROR")])
    assert decoder.error == "the generation failed (finish reason ERROR)"


def test_a_stream_without_message_end_has_not_ended() -> None:
    _, decoder = decode(text_events(["Hel", "lo"])[:-1])
    assert not decoder.ended
