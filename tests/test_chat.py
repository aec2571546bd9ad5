"""Chat and ChatStream end to end through the generated stub, served by the built-in mock provider."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from llm_gateway.tokens.approximate import prompt_tokens, text_tokens
from llmgateway.v1 import accounting_pb2, chat_pb2, content_pb2
from tests.conftest import RunningGateway, chat, error_details, reply_text, running_gateway, user

# The simulated prices of mock:echo in the embedded defaults, per million tokens.
ECHO_INPUT = Decimal("0.15")
ECHO_OUTPUT = Decimal("0.60")
MILLION = Decimal(1_000_000)


def expected_prompt_tokens(request: chat_pb2.ChatRequest) -> int:
    from llm_gateway.server.decode import decode_chat_request

    return prompt_tokens(decode_chat_request(request, ["mock", "openai"]))


async def test_chat_echoes_with_usage_cost_and_latency(gateway: RunningGateway) -> None:
    request = chat("mock:echo", "Hello from the test suite")
    reply = await gateway.stub.Chat(request, timeout=5)

    assert reply.model == "mock:echo"
    assert reply.provider == "mock"
    assert reply.message.role == content_pb2.ROLE_ASSISTANT
    assert reply_text(reply.message) == "Hello from the test suite"
    assert reply.finish_reason == chat_pb2.FINISH_REASON_STOP

    prompt = expected_prompt_tokens(request)
    completion = text_tokens("Hello from the test suite")
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt, completion)
    assert reply.usage.total_tokens == prompt + completion
    assert not reply.usage.estimated

    cost = reply.cost
    assert cost.status == accounting_pb2.PRICING_STATUS_PRICED
    assert cost.currency == "USD"
    assert Decimal(cost.input) == prompt * ECHO_INPUT / MILLION
    assert Decimal(cost.output) == completion * ECHO_OUTPUT / MILLION
    assert Decimal(cost.total) == Decimal(cost.input) + Decimal(cost.output)
    per_1k = Decimal(cost.total) * 1000 / (prompt + completion)
    assert Decimal(cost.cost_per_1k_tokens) == per_1k.quantize(Decimal("1e-12"))
    assert "E" not in cost.total
    assert "e" not in cost.total
    assert cost.price_source == "config"

    total = reply.latency.total.ToTimedelta()
    assert total.total_seconds() > 0
    assert reply.latency.gateway_overhead.ToTimedelta() <= total
    assert reply.routing.selected_model == "mock:echo"
    assert reply.routing.reason == "requested"
    assert [a.code for a in reply.routing.attempts] == ["OK"]
    assert reply.id.startswith("chat_")
    assert reply.request_id
    assert reply.create_time.seconds > 0


async def test_stream_sends_start_deltas_and_one_finish(gateway: RunningGateway) -> None:
    text = "Streaming is the primary path of this gateway"
    events = [
        e async for e in gateway.stub.ChatStream(chat_pb2.ChatStreamRequest(request=chat("mock:echo", text)))
    ]

    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "start"
    assert kinds[-1] == "finish"
    assert kinds.count("start") == 1
    assert kinds.count("finish") == 1
    deltas = [e.text_delta.text for e in events if e.HasField("text_delta")]
    assert len(deltas) == len(text.split())
    assert "".join(deltas) == text

    start, finish = events[0].start, events[-1].finish
    assert (start.model, start.provider) == ("mock:echo", "mock")
    assert start.request_id
    assert finish.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert finish.usage.completion_tokens == text_tokens(text)
    assert Decimal(finish.cost.total) > 0
    assert finish.latency.HasField("time_to_first_token")
    assert finish.latency.time_to_first_token.ToTimedelta() <= finish.latency.total.ToTimedelta()


async def test_stream_usage_and_cost_match_the_unary_reply(gateway: RunningGateway) -> None:
    request = chat("mock:echo", "Same conversation, both ways")
    unary = await gateway.stub.Chat(request)
    events = [e async for e in gateway.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request))]
    finish = events[-1].finish
    assert finish.usage == unary.usage
    assert finish.cost.total == unary.cost.total


async def test_tool_call_then_tool_result_conversation(gateway: RunningGateway) -> None:
    schema = struct_pb2.Struct()
    schema.update(
        {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        }
    )
    tool = content_pb2.Tool(name="get_weather", description="Weather for a city", parameters=schema)
    first = await gateway.stub.Chat(
        chat_pb2.ChatRequest(model="mock:echo", messages=[user("Use get_weather for Oslo")], tools=[tool])
    )
    assert first.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    [call] = first.message.tool_calls
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Oslo", "days": 0}

    second = await gateway.stub.Chat(
        chat_pb2.ChatRequest(
            model="mock:echo",
            tools=[tool],
            messages=[
                user("Use get_weather for Oslo"),
                content_pb2.Message(role=content_pb2.ROLE_ASSISTANT, tool_calls=[call]),
                content_pb2.Message(
                    role=content_pb2.ROLE_TOOL,
                    tool_call_id=call.id,
                    content=[content_pb2.Part(text='{"temp_c": 4}')],
                ),
            ],
        )
    )
    assert second.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert reply_text(second.message) == 'Tool result: {"temp_c": 4}'


async def test_streamed_tool_call_deltas_assemble_into_the_unary_call(gateway: RunningGateway) -> None:
    request = chat_pb2.ChatRequest(
        model="mock:echo",
        messages=[user("what now")],
        tools=[content_pb2.Tool(name="lookup")],
        tool_choice=content_pb2.ToolChoice(mode=content_pb2.TOOL_CHOICE_MODE_REQUIRED),
    )
    unary = await gateway.stub.Chat(request)
    events = [e async for e in gateway.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request))]
    pieces = [e.tool_call_delta for e in events if e.HasField("tool_call_delta")]
    assert len(pieces) >= 2
    assert {p.index for p in pieces} == {0}
    assembled = content_pb2.ToolCall(
        id=pieces[0].id, name=pieces[0].name, arguments="".join(p.arguments for p in pieces)
    )
    assert [assembled] == list(unary.message.tool_calls)
    assert events[-1].finish.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS


async def test_json_schema_output(gateway: RunningGateway) -> None:
    schema = struct_pb2.Struct()
    schema.update({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]})
    reply = await gateway.stub.Chat(
        chat(
            "mock:echo",
            "forty-two",
            response_format=content_pb2.ResponseFormat(
                type=content_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, json_schema=schema
            ),
        )
    )
    assert json.loads(reply_text(reply.message)) == {"answer": "forty-two"}


@pytest.mark.parametrize(
    ("schema", "reply"),
    [
        ({"type": "object", "properties": "answer"}, {}),
        ({"type": "object", "properties": {"a": "string", "b": None}}, {"a": "hi", "b": "hi"}),
        ({"type": "object", "properties": {"a": {}}, "required": ["a", 1, None]}, {"a": "hi"}),
        (
            {"type": "object", "properties": {"a": {"enum": 3}, "b": {"enum": {"x": 1}}}},
            {"a": "hi", "b": "hi"},
        ),
    ],
)
async def test_json_schema_keywords_of_the_wrong_type_are_ignored(
    gateway: RunningGateway, schema: dict[str, Any], reply: dict[str, Any]
) -> None:
    # The schema is the caller's and unchecked; these used to fail with INTERNAL.
    struct = struct_pb2.Struct()
    struct.update(schema)
    fmt = content_pb2.ResponseFormat(type=content_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, json_schema=struct)
    answer = await gateway.stub.Chat(chat("mock:echo", "hi", response_format=fmt), timeout=5)
    assert json.loads(reply_text(answer.message)) == reply
    tool_call = await gateway.stub.Chat(
        chat(
            "mock:echo",
            "hi",
            tools=[content_pb2.Tool(name="t", parameters=struct)],
            tool_choice=content_pb2.ToolChoice(mode=content_pb2.TOOL_CHOICE_MODE_REQUIRED),
        ),
        timeout=5,
    )
    assert json.loads(tool_call.message.tool_calls[0].arguments) == reply


async def test_max_tokens_truncates_with_finish_reason_length(gateway: RunningGateway) -> None:
    reply = await gateway.stub.Chat(
        chat(
            "mock:echo",
            "a rather long sentence that will not fit",
            generation=chat_pb2.GenerationConfig(max_tokens=2),
        )
    )
    assert reply.finish_reason == chat_pb2.FINISH_REASON_LENGTH
    assert reply.usage.completion_tokens == 2
    assert reply_text(reply.message) == "a rather"


async def test_stop_sequence_cuts_the_reply(gateway: RunningGateway) -> None:
    reply = await gateway.stub.Chat(
        chat("mock:echo", "first part STOP second part", generation=chat_pb2.GenerationConfig(stop=["STOP"]))
    )
    assert reply_text(reply.message) == "first part "
    assert reply.finish_reason == chat_pb2.FINISH_REASON_STOP


async def test_free_model_costs_zero_and_says_so(gateway: RunningGateway) -> None:
    reply = await gateway.stub.Chat(chat("mock:echo-free"))
    assert reply.cost.status == accounting_pb2.PRICING_STATUS_FREE
    assert (reply.cost.input, reply.cost.output, reply.cost.total) == ("0", "0", "0")
    assert reply.usage.prompt_tokens > 0


async def test_alias_bare_name_and_auto_resolve() -> None:
    toml = '[aliases]\ncheap = "mock:echo"\n[routing]\nauto = ["openai:gpt-4o-mini", "mock:echo-large"]\n'
    async with running_gateway(toml) as gw:
        by_alias = await gw.stub.Chat(chat("cheap"))
        assert (by_alias.model, by_alias.routing.reason) == ("mock:echo", "alias")
        by_name = await gw.stub.Chat(chat("echo-large"))
        assert (by_name.model, by_name.routing.reason) == ("mock:echo-large", "requested")
        # OpenAI has no key here, so "auto" skips it.
        auto = await gw.stub.Chat(chat("auto"))
        assert (auto.model, auto.routing.reason) == ("mock:echo-large", "auto")
        assert list(auto.routing.candidates) == ["mock:echo-large"]


async def test_auto_without_any_enabled_candidate_is_failed_precondition(gateway: RunningGateway) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat("auto"))
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.info.reason == "NO_MODEL_AVAILABLE"


async def test_dry_run_returns_the_estimate_without_calling(gateway: RunningGateway) -> None:
    text = "Estimate me please"
    request = chat("mock:echo", text, generation=chat_pb2.GenerationConfig(max_tokens=256))
    request.dry_run = True
    estimate = await gateway.stub.Chat(request)
    assert estimate.dry_run
    assert not estimate.HasField("message")
    assert estimate.finish_reason == chat_pb2.FINISH_REASON_UNSPECIFIED
    assert estimate.usage.estimated
    assert estimate.cost.estimated
    assert estimate.usage.prompt_tokens == expected_prompt_tokens(request)

    # When the real usage equals the estimate, the real call costs exactly what the dry run said.
    # The mock's output for this text is shorter than the 256 estimated tokens, so price the
    # estimate's token counts with the model's rates and compare.
    expected = (
        estimate.usage.prompt_tokens * ECHO_INPUT + estimate.usage.completion_tokens * ECHO_OUTPUT
    ) / MILLION
    assert Decimal(estimate.cost.total) == expected

    real = await gateway.stub.Chat(chat("mock:echo", text))
    assert real.usage.prompt_tokens == estimate.usage.prompt_tokens
    real_expected = (
        real.usage.prompt_tokens * ECHO_INPUT + real.usage.completion_tokens * ECHO_OUTPUT
    ) / MILLION
    assert Decimal(real.cost.total) == real_expected


async def test_dry_run_matches_the_real_cost_when_output_matches(gateway: RunningGateway) -> None:
    text = "twelve chars"  # 3 tokens of output from the mock
    dry = chat("mock:echo", text, generation=chat_pb2.GenerationConfig(max_tokens=3), dry_run=True)
    estimate = await gateway.stub.Chat(dry)
    real = await gateway.stub.Chat(
        chat("mock:echo", text, generation=chat_pb2.GenerationConfig(max_tokens=3))
    )
    assert (real.usage.prompt_tokens, real.usage.completion_tokens) == (
        estimate.usage.prompt_tokens,
        estimate.usage.completion_tokens,
    )
    assert real.cost.total == estimate.cost.total


async def test_max_cost_too_low_is_refused_before_the_call(gateway: RunningGateway) -> None:
    request = chat("mock:echo-large", "expensive", generation=chat_pb2.GenerationConfig(max_tokens=1000))
    request.max_cost = "0.0001"  # worst case: ~1000 output tokens at $10/M = $0.01
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(request)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.FAILED_PRECONDITION
    assert details.info.reason == "BUDGET_EXCEEDED"
    assert Decimal(details.info.metadata["estimated_cost"]) > Decimal("0.0001")
    assert details.info.metadata["max_cost"] == "0.0001"


async def test_max_cost_falls_back_to_a_candidate_within_budget(gateway: RunningGateway) -> None:
    request = chat("mock:echo-large", "hi", generation=chat_pb2.GenerationConfig(max_tokens=1000))
    request.max_cost = "0.001"
    request.fallback_models.append("mock:echo")
    reply = await gateway.stub.Chat(request)
    assert reply.model == "mock:echo"
    assert reply.routing.fallback_used
    assert [(a.model, a.code, a.reason) for a in reply.routing.attempts] == [
        ("mock:echo-large", "FAILED_PRECONDITION", "BUDGET_EXCEEDED"),
        ("mock:echo", "OK", ""),
    ]
