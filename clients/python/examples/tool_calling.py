"""A tool-calling conversation: the model asks for a tool, the tool runs here, and its result goes
back to the model for the final answer. The first turn is also streamed, to show how tool-call
deltas assemble into whole calls.

    .venv/bin/python clients/python/examples/tool_calling.py   # from the repository root

Environment: LLM_GATEWAY_ADDR (default localhost:50051), LLM_GATEWAY_API_KEY (optional),
LLM_GATEWAY_MODEL (default mock:echo; any model that supports tools).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TextIO

import grpc
from google.protobuf import struct_pb2

from llmgateway import connect_async, error_info, system, text, user
from llmgateway.v1 import chat_pb2, content_pb2

TIMEOUT = 30.0  # seconds, for every call
QUESTION = "What is the weather in Paris?"


def get_weather(city: str) -> dict[str, Any]:
    """The tool: a stand-in for a real weather service."""
    return {"city": city, "temp_c": 18}


def json_schema(schema: dict[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(schema)
    return struct


WEATHER_TOOL = content_pb2.Tool(
    name="get_weather",
    description="The current weather in a city.",
    parameters=json_schema(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    ),
)

# What runs when the model calls a tool, by tool name.
TOOLS: dict[str, Callable[..., dict[str, Any]]] = {"get_weather": get_weather}


def run_tool(call: content_pb2.ToolCall) -> str:
    """Runs the tool a call names with its arguments and returns the result as JSON text."""
    function = TOOLS[call.name]
    # Arguments are the model's JSON text, kept verbatim by the gateway: check before using them.
    arguments = json.loads(call.arguments)
    if not isinstance(arguments, dict):
        raise ValueError(f"{call.name} arguments are not a JSON object: {call.arguments}")
    return json.dumps(function(**arguments))


def tool_message(call_id: str, result: str) -> content_pb2.Message:
    """The answer to one tool call, for the next turn."""
    return content_pb2.Message(
        role=content_pb2.ROLE_TOOL, tool_call_id=call_id, content=[content_pb2.Part(text=result)]
    )


def assemble_tool_calls(events: Iterable[chat_pb2.ChatStreamResponse]) -> list[content_pb2.ToolCall]:
    """Joins a stream's tool-call deltas into calls: deltas with the same index are one call, the
    first carries its id and name, and the arguments are every delta's pieces in order."""
    calls: dict[int, content_pb2.ToolCall] = {}
    for event in events:
        if event.HasField("tool_call_delta"):
            delta = event.tool_call_delta
            call = calls.setdefault(delta.index, content_pb2.ToolCall())
            call.id = call.id or delta.id
            call.name = call.name or delta.name
            call.arguments += delta.arguments
    return [calls[index] for index in sorted(calls)]


@dataclass
class Result:
    """Both turns of the conversation, and the first turn streamed."""

    first: chat_pb2.ChatResponse
    # The second turn's request: the first one's messages, the assistant's tool calls, their results.
    followup: chat_pb2.ChatRequest
    final: chat_pb2.ChatResponse
    stream_events: list[chat_pb2.ChatStreamResponse]
    streamed_calls: list[content_pb2.ToolCall]


async def run(address: str, api_key: str | None, model: str, out: TextIO) -> Result:
    """Runs the conversation, printing each step to `out`."""
    request = chat_pb2.ChatRequest(
        model=model,
        messages=[system("Use the tools to answer."), user(QUESTION)],
        tools=[WEATHER_TOOL],
        tool_choice=content_pb2.ToolChoice(mode=content_pb2.TOOL_CHOICE_MODE_REQUIRED),
    )
    async with connect_async(address, api_key) as gateway:
        # Turn 1: tool choice REQUIRED, so the reply is a tool call instead of text.
        first = await gateway.stub.Chat(request, timeout=TIMEOUT)
        print(f"Chat: {chat_pb2.FinishReason.Name(first.finish_reason)}", file=out)
        if not first.message.tool_calls:
            raise RuntimeError(f"{model} answered without calling a tool: {text(first.message)!r}")

        # Run every call; the assistant's turn and one tool message per call extend the conversation.
        followup = chat_pb2.ChatRequest(model=model, messages=[*request.messages, first.message])
        followup.tools.extend(request.tools)  # no tool choice: the model may now answer
        for call in first.message.tool_calls:
            result = run_tool(call)
            print(f"  {call.name}({call.arguments}) [{call.id}] -> {result}", file=out)
            followup.messages.append(tool_message(call.id, result))

        # Turn 2: the model answers from the tool results.
        final = await gateway.stub.Chat(followup, timeout=TIMEOUT)
        print(f"Chat: {chat_pb2.FinishReason.Name(final.finish_reason)}", file=out)
        print(f"  {text(final.message)}", file=out)
        for turn, reply in (("turn 1", first), ("turn 2", final)):
            print(
                f"  {turn}: {reply.usage.prompt_tokens} prompt + {reply.usage.completion_tokens}"
                f" completion tokens, cost {reply.cost.total} {reply.cost.currency}",
                file=out,
            )

        # Turn 1 again, streamed: tool calls arrive as deltas to join by index.
        events = [
            event
            async for event in gateway.stub.ChatStream(
                chat_pb2.ChatStreamRequest(request=request), timeout=TIMEOUT
            )
        ]
        streamed = assemble_tool_calls(events)
        deltas = sum(event.HasField("tool_call_delta") for event in events)
        print(f"ChatStream: {deltas} tool-call deltas", file=out)
        for call in streamed:
            print(f"  {call.name}({call.arguments}) [{call.id}]", file=out)

    return Result(first=first, followup=followup, final=final, stream_events=events, streamed_calls=streamed)


def main() -> int:
    address = os.environ.get("LLM_GATEWAY_ADDR", "localhost:50051")
    api_key = os.environ.get("LLM_GATEWAY_API_KEY") or None
    model = os.environ.get("LLM_GATEWAY_MODEL", "mock:echo")
    try:
        asyncio.run(run(address, api_key, model, sys.stdout))
    except grpc.RpcError as err:
        info = error_info(err)
        reason = f" {info.reason}" if info is not None else ""
        print(f"error: {err.code().name}{reason}: {err.details()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
