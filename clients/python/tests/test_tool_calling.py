"""A tool-calling conversation against a live gateway (mock provider): a forced tool call, the tool's
result sent back, the final answer; and the first turn streamed as tool-call deltas."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from decimal import Decimal
from typing import Any

import pytest
import tool_calling

from llmgateway import text, to_decimal
from llmgateway.v1 import accounting_pb2, chat_pb2, content_pb2


@pytest.fixture(scope="module")
async def conversation(address: str, api_key: str) -> tuple[tool_calling.Result, str]:
    """The example's conversation, run once, and what it printed."""
    out = io.StringIO()
    result = await tool_calling.run(address, api_key, "mock:echo", out)
    return result, out.getvalue()


def only_call(reply: chat_pb2.ChatResponse) -> content_pb2.ToolCall:
    assert reply.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    assert reply.message.role == content_pb2.ROLE_ASSISTANT
    assert len(reply.message.tool_calls) == 1, reply.message.tool_calls
    return reply.message.tool_calls[0]


def arguments(call: content_pb2.ToolCall) -> dict[str, Any]:
    parsed = json.loads(call.arguments)
    assert isinstance(parsed, dict), call.arguments
    return parsed


def test_first_turn_calls_the_tool(conversation: tuple[tool_calling.Result, str]) -> None:
    result, _ = conversation
    call = only_call(result.first)
    assert call.name == "get_weather"
    assert call.id
    # The mock fills a string argument with the name the question ends on.
    assert arguments(call) == {"city": "Paris"}
    assert result.first.usage.prompt_tokens > 0


def test_tool_result_goes_back(conversation: tuple[tool_calling.Result, str]) -> None:
    result, _ = conversation
    call = only_call(result.first)

    # The follow-up carries the assistant's tool call, then the tool's answer to that call id.
    *_, sent_call, sent_result = result.followup.messages
    assert sent_call.role == content_pb2.ROLE_ASSISTANT
    assert list(sent_call.tool_calls) == [call]
    assert sent_result.role == content_pb2.ROLE_TOOL
    assert sent_result.tool_call_id == call.id
    tool_output = text(sent_result)
    assert json.loads(tool_output) == tool_calling.get_weather(arguments(call)["city"])
    assert not result.followup.HasField("tool_choice")


def test_final_answer_uses_the_tool_result(conversation: tuple[tool_calling.Result, str]) -> None:
    result, printed = conversation
    tool_output = text(result.followup.messages[-1])
    final = result.final

    assert final.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert not final.message.tool_calls
    # The mock answers a tool result with "Tool result: <its text>".
    assert tool_output in text(final.message)
    # The second turn resends the whole conversation, so its prompt is larger.
    assert final.usage.prompt_tokens > result.first.usage.prompt_tokens
    assert final.cost.status == accounting_pb2.PRICING_STATUS_PRICED
    assert to_decimal(final.cost.total) > Decimal(0)
    assert text(final.message) in printed


def test_streamed_deltas_assemble_into_the_same_call(conversation: tuple[tool_calling.Result, str]) -> None:
    result, _ = conversation
    call = only_call(result.first)
    kinds = [e.WhichOneof("event") for e in result.stream_events]
    assert kinds[0] == "start"
    assert kinds[-1] == "finish"
    assert result.stream_events[-1].finish.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS

    deltas = [e.tool_call_delta for e in result.stream_events if e.HasField("tool_call_delta")]
    assert deltas
    assert {d.index for d in deltas} == {0}
    assert deltas[0].id
    assert deltas[0].name == call.name
    assert "".join(d.arguments for d in deltas) == call.arguments

    # The example's assembly agrees.
    [streamed] = result.streamed_calls
    assert (streamed.id, streamed.name, streamed.arguments) == (deltas[0].id, call.name, call.arguments)


def test_tool_calling_script(address: str, api_key: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_GATEWAY_")}
    env.update(LLM_GATEWAY_ADDR=address, LLM_GATEWAY_API_KEY=api_key)
    done = subprocess.run(
        [sys.executable, tool_calling.__file__],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "get_weather(" in done.stdout
    assert "FINISH_REASON_STOP" in done.stdout
