"""A fake OpenAI Responses API server on loopback (`POST /v1/responses`, and Azure's v1 route
`/openai/v1/responses`), speaking the real wire format: `response` objects, and typed SSE events
(`event: <type>` and `data: {"type": ..., "sequence_number": n, ...}`) from `response.created` to
`response.completed`.

Replies are scripted per test; unscripted, the last user message is echoed as a message item.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.server import FakeServer, words

MODEL_SNAPSHOT = "gpt-5-pro-2025-10-06"
RESPONSE_ID = "resp_fake0123456789"


@dataclass
class Reply:
    status: int = 200
    json_body: Any = None
    events: Sequence[dict[str, Any]] | None = None  # a stream: each event's data, its type included
    headers: dict[str, str] = field(default_factory=dict)
    chunk_delay: float = 0.0
    end_early: bool = False  # drop the connection after the events, before the stream's end
    delay: float = 0.0


def usage(input_tokens: int, output_tokens: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": input_tokens + output_tokens,
    }


def message_item(text: str, item_id: str = "msg_fake1", *, refusal: bool = False) -> dict[str, Any]:
    part = (
        {"type": "refusal", "refusal": text}
        if refusal
        else {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    )
    return {"id": item_id, "type": "message", "status": "completed", "role": "assistant", "content": [part]}


def function_call_item(call_id: str, name: str, arguments: str, item_id: str = "fc_fake1") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": "completed",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def reasoning_item(item_id: str = "rs_fake1") -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": []}


def response(
    output: Sequence[dict[str, Any]],
    usage_: dict[str, Any] | None = None,
    *,
    status: str = "completed",
    incomplete_reason: str | None = None,
    model: str = MODEL_SNAPSHOT,
) -> dict[str, Any]:
    return {
        "id": RESPONSE_ID,
        "object": "response",
        "created_at": 1_763_800_000,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": list(output),
        "parallel_tool_calls": True,
        "temperature": 1.0,
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "store": False,
        "text": {"format": {"type": "text"}},
        "usage": usage_ if usage_ is not None else usage(10, 5),
    }


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def text_events(pieces: Sequence[str], usage_: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A streamed text reply's events, as OpenAI sends them."""
    text = "".join(pieces)
    item = message_item(text)
    opened = {**item, "status": "in_progress", "content": []}
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    events: list[dict[str, Any]] = [
        *_opening(),
        {"type": "response.output_item.added", "output_index": 0, "item": opened},
        {
            "type": "response.content_part.added",
            "item_id": item["id"],
            "output_index": 0,
            "content_index": 0,
            "part": part,
        },
    ]
    events += [
        {
            "type": "response.output_text.delta",
            "item_id": item["id"],
            "output_index": 0,
            "content_index": 0,
            "delta": piece,
            "logprobs": [],
        }
        for piece in pieces
    ]
    events += [
        {
            "type": "response.output_text.done",
            "item_id": item["id"],
            "output_index": 0,
            "content_index": 0,
            "text": text,
            "logprobs": [],
        },
        {
            "type": "response.content_part.done",
            "item_id": item["id"],
            "output_index": 0,
            "content_index": 0,
            "part": {**part, "text": text},
        },
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": response([item], usage_)},
    ]
    return events


def function_call_events(
    call_id: str, name: str, argument_pieces: Sequence[str], usage_: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """A streamed function call (after a reasoning item, as reasoning models send it)."""
    arguments = "".join(argument_pieces)
    thought = reasoning_item()
    item = function_call_item(call_id, name, arguments)
    events: list[dict[str, Any]] = [
        *_opening(),
        {"type": "response.output_item.added", "output_index": 0, "item": thought},
        {"type": "response.output_item.done", "output_index": 0, "item": thought},
        {
            "type": "response.output_item.added",
            "output_index": 1,
            "item": {**item, "status": "in_progress", "arguments": ""},
        },
    ]
    events += [
        {
            "type": "response.function_call_arguments.delta",
            "item_id": item["id"],
            "output_index": 1,
            "delta": piece,
        }
        for piece in argument_pieces
    ]
    events += [
        {
            "type": "response.function_call_arguments.done",
            "item_id": item["id"],
            "output_index": 1,
            "arguments": arguments,
            "name": name,
        },
        {"type": "response.output_item.done", "output_index": 1, "item": item},
        {"type": "response.completed", "response": response([thought, item], usage_)},
    ]
    return events


def failed_events(message: str, code: str = "server_error") -> list[dict[str, Any]]:
    failed = {
        **response([], None, status="failed"),
        "error": {"code": code, "message": message},
        "usage": None,
    }
    return [*_opening(), {"type": "response.failed", "response": failed}]


def _opening() -> list[dict[str, Any]]:
    started = {**response([], None, status="in_progress"), "usage": None}
    return [
        {"type": "response.created", "response": started},
        {"type": "response.in_progress", "response": started},
    ]


def last_input_text(body: dict[str, Any]) -> str:
    """The text of the last user input item (a string, or input_text parts)."""
    items = body.get("input")
    if isinstance(items, str):
        return items
    for item in reversed(items or []):
        if item.get("role") == "user":
            content = item.get("content")
            if isinstance(content, str):
                return content
            return " ".join(p.get("text", "") for p in content if p.get("type") == "input_text")
    return ""


class FakeResponses(FakeServer[Reply]):
    def __init__(self) -> None:
        super().__init__(["/v1/responses", "/openai/v1/responses"])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def azure_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _reply(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        if reply.delay:
            await self._hang(reply.delay)
        if reply.events is None:
            return web.json_response(reply.json_body, status=reply.status, headers=reply.headers)
        response_ = web.StreamResponse(
            status=reply.status, headers={"Content-Type": "text/event-stream", **reply.headers}
        )
        frames = (
            f"event: {event['type']}\ndata: {json.dumps({**event, 'sequence_number': n})}\n\n".encode()
            for n, event in enumerate(reply.events)
        )
        return await self._stream(
            request, response_, frames, chunk_delay=reply.chunk_delay, drop=reply.end_early
        )

    def _echo(self, body: dict[str, Any]) -> Reply:
        text = last_input_text(body)
        use = usage(10, max(len(text) // 4, 1))
        if body.get("stream"):
            return Reply(events=text_events(words(text), use))
        return Reply(json_body=response([message_item(text)], use))
