"""A fake Cohere Chat API v2 server (`POST /v2/chat`) on loopback, speaking the real wire format.

It records every request it receives. Replies are scripted per test (JSON, SSE events, error bodies
with headers, raw bytes) or, when nothing is scripted, an echo of the last user message: a chat
response, or (when the body has `"stream": true`) the event sequence Cohere streams for text:
`message-start`, `content-start`, `content-delta`s, `content-end`, `message-end`.

Each SSE event is written as Cohere writes it: `event: <type>\\ndata: <compact json>\\n\\n`, the JSON
carrying the same `type`. Builders return plain dicts of Cohere's shapes, taken from replies the
API sent (checked against the official SDK's types in tests/test_fake_cohere.py). Usage is realistic:
`tokens.input_tokens` includes the prompt template Cohere adds (`TEMPLATE_TOKENS`), which
`billed_units` leaves out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiohttp import web

from tests.fakes.server import FakeServer, last_user_text, words

RESPONSE_ID = "1f476b96-75b3-4223-a19b-cccf591d161c"
TEMPLATE_TOKENS = 1400  # what Cohere's prompt template adds to the model's input count

_dumps = partial(json.dumps, separators=(",", ":"))

# What a Reply may script: a str is sent verbatim as the data (for malformed-data tests).
ScriptedEvent = dict[str, Any] | str


@dataclass
class Reply:
    status: int = 200
    json_body: Any = None
    events: Sequence[ScriptedEvent] | None = None  # SSE, written as `event: <type>\ndata: <json>\n\n`
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunk_delay: float = 0.0
    # SSE: send the events before `message-end`, then drop the connection (no finish reason, no
    # usage), as a failing upstream would.
    end_early: bool = False


# --- Bodies -------------------------------------------------------------------------------------


def usage(
    input_tokens: int,
    output_tokens: int,
    *,
    cached_tokens: int | None = None,
    model_input_tokens: int | None = None,
    model_output_tokens: int | None = None,
) -> dict[str, Any]:
    """A `usage` object: billed units, the model's token counts (by default the billed ones plus
    the prompt template's input) and, when given, the prompt cache hits."""
    body: dict[str, Any] = {
        "billed_units": {"input_tokens": input_tokens, "output_tokens": output_tokens},
        "tokens": {
            "input_tokens": model_input_tokens
            if model_input_tokens is not None
            else input_tokens + TEMPLATE_TOKENS,
            "output_tokens": model_output_tokens if model_output_tokens is not None else output_tokens,
        },
    }
    if cached_tokens is not None:
        body["cached_tokens"] = cached_tokens
    return body


def text_item(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def thinking_item(thinking: str) -> dict[str, Any]:
    return {"type": "thinking", "thinking": thinking}


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    """A tool call; `arguments` is JSON text, as Cohere sends it."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def chat_response(
    content: Sequence[dict[str, Any]] = (),
    finish_reason: str = "COMPLETE",
    usage_: dict[str, Any] | None = None,
    *,
    tool_plan: str | None = None,
    tool_calls: Sequence[dict[str, Any]] = (),
    response_id: str = RESPONSE_ID,
) -> dict[str, Any]:
    """A chat response. As Cohere sends them, a text turn has `content` and a tool-calling turn
    has `tool_plan` and `tool_calls` instead."""
    message: dict[str, Any] = {"role": "assistant"}
    if tool_plan is not None:
        message["tool_plan"] = tool_plan
    if tool_calls:
        message["tool_calls"] = list(tool_calls)
    if content or not tool_calls:
        message["content"] = list(content)
    return {
        "id": response_id,
        "message": message,
        "finish_reason": finish_reason,
        "usage": usage_ if usage_ is not None else usage(10, 5),
    }


def error_body(message: str, error_id: str | None = None) -> dict[str, Any]:
    """Cohere's error body: `{"message": ...}`, with an `id` on some errors."""
    return {"id": error_id, "message": message} if error_id else {"message": message}


def error_reply(
    status: int,
    message: str,
    *,
    retry_after: int | None = None,
    headers: Mapping[str, str] | None = None,
    error_id: str | None = None,
) -> Reply:
    extra = {"retry-after": str(retry_after)} if retry_after is not None else {}
    return Reply(status=status, json_body=error_body(message, error_id), headers={**extra, **(headers or {})})


# --- Stream events ------------------------------------------------------------------------------


def message_start(response_id: str = RESPONSE_ID) -> dict[str, Any]:
    """The first event. Its empty message has more fields than the SDK's type declares (role only):
    these are the ones the API sends."""
    message = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
    return {"id": response_id, "type": "message-start", "delta": {"message": message}}


def content_start(index: int, kind: str = "text") -> dict[str, Any]:
    """The start of a content item: kind "text" or "thinking", with its empty value."""
    return {
        "type": "content-start",
        "index": index,
        "delta": {"message": {"content": {"type": kind, kind: ""}}},
    }


def content_delta(index: int, text: str) -> dict[str, Any]:
    return {"type": "content-delta", "index": index, "delta": {"message": {"content": {"text": text}}}}


def thinking_delta(index: int, thinking: str) -> dict[str, Any]:
    return {
        "type": "content-delta",
        "index": index,
        "delta": {"message": {"content": {"thinking": thinking}}},
    }


def content_end(index: int) -> dict[str, Any]:
    return {"type": "content-end", "index": index}


def tool_plan_delta(text: str) -> dict[str, Any]:
    return {"type": "tool-plan-delta", "delta": {"message": {"tool_plan": text}}}


def tool_call_start(index: int, call_id: str, name: str, arguments: str = "") -> dict[str, Any]:
    call = tool_call(call_id, name, arguments)
    return {"type": "tool-call-start", "index": index, "delta": {"message": {"tool_calls": call}}}


def tool_call_delta(index: int, arguments: str) -> dict[str, Any]:
    return {
        "type": "tool-call-delta",
        "index": index,
        "delta": {"message": {"tool_calls": {"function": {"arguments": arguments}}}},
    }


def tool_call_end(index: int) -> dict[str, Any]:
    return {"type": "tool-call-end", "index": index}


def citation_start(index: int, text: str, start: int, end: int, source_id: str) -> dict[str, Any]:
    citation = {
        "start": start,
        "end": end,
        "text": text,
        "sources": [{"type": "tool", "id": source_id, "tool_output": {"temperature": "18C"}}],
        "type": "TEXT_CONTENT",
    }
    return {"type": "citation-start", "index": index, "delta": {"message": {"citations": citation}}}


def citation_end(index: int) -> dict[str, Any]:
    return {"type": "citation-end", "index": index}


def message_end(
    finish_reason: str = "COMPLETE", usage_: dict[str, Any] | None = None, *, error: str | None = None
) -> dict[str, Any]:
    """The last event: the finish reason and the usage (and, when the generation failed, `error`)."""
    delta: dict[str, Any] = {
        "finish_reason": finish_reason,
        "usage": usage_ if usage_ is not None else usage(10, 5),
    }
    if error is not None:
        delta["error"] = error
    return {"type": "message-end", "delta": delta}


def text_events(
    pieces: Sequence[str], usage_: dict[str, Any] | None = None, *, finish_reason: str = "COMPLETE"
) -> list[dict[str, Any]]:
    """A streamed text reply."""
    return [
        message_start(),
        content_start(0),
        *(content_delta(0, piece) for piece in pieces),
        content_end(0),
        message_end(finish_reason, usage_ if usage_ is not None else usage(10, max(len(pieces), 1))),
    ]


def tool_call_events(
    plan_pieces: Sequence[str],
    calls: Sequence[tuple[str, str, Sequence[str]]],
    usage_: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """A streamed tool-calling turn: the plan, then per (id, name, argument pieces) a call whose
    arguments arrive as tool-call-delta pieces (the start carries empty arguments, as Cohere sends)."""
    events = [message_start(), *(tool_plan_delta(piece) for piece in plan_pieces)]
    for index, (call_id, name, pieces) in enumerate(calls):
        events.append(tool_call_start(index, call_id, name))
        events.extend(tool_call_delta(index, piece) for piece in pieces)
        events.append(tool_call_end(index))
    events.append(message_end("TOOL_CALL", usage_ if usage_ is not None else usage(30, 20)))
    return events


def thinking_events(
    thinking_pieces: Sequence[str], text_pieces: Sequence[str], usage_: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """A reasoning model's streamed reply: a thinking item, then a text item."""
    return [
        message_start(),
        content_start(0, "thinking"),
        *(thinking_delta(0, piece) for piece in thinking_pieces),
        content_end(0),
        content_start(1),
        *(content_delta(1, piece) for piece in text_pieces),
        content_end(1),
        message_end("COMPLETE", usage_ if usage_ is not None else usage(8, 50)),
    ]


def sse_bytes(events: Sequence[ScriptedEvent]) -> bytes:
    """The bytes the fake writes for `events`."""
    return b"".join(_frame(event) for event in events)


def _frame(event: ScriptedEvent) -> bytes:
    if isinstance(event, str):
        return f"event: content-delta\ndata: {event}\n\n".encode()
    return f"event: {event['type']}\ndata: {_dumps(event)}\n\n".encode()


# --- Server -------------------------------------------------------------------------------------


class FakeCohere(FakeServer[Reply]):
    def __init__(self) -> None:
        super().__init__(["/v2/chat"])

    @property
    def base_url(self) -> str:
        """The API root: clients append `/v2/chat`."""
        return f"http://127.0.0.1:{self.port}"

    async def _reply(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        if reply.raw is not None:
            return web.Response(status=reply.status, body=reply.raw, headers=reply.headers)
        if reply.events is None:
            return web.json_response(
                reply.json_body, status=reply.status, headers=reply.headers, dumps=_dumps
            )
        response = web.StreamResponse(
            status=reply.status,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **reply.headers},
        )
        events = list(reply.events)
        if reply.end_early:  # no message-end: the connection drops
            events = [e for e in events if isinstance(e, str) or e.get("type") != "message-end"]
        frames = (_frame(event) for event in events)
        return await self._stream(
            request, response, frames, chunk_delay=reply.chunk_delay, drop=reply.end_early
        )

    def _echo(self, body: dict[str, Any]) -> Reply:
        text = last_user_text(body)
        prompt = max(sum(len(json.dumps(m.get("content") or "")) for m in body.get("messages", [])) // 4, 1)
        use = usage(prompt, max(len(text) // 4, 1))
        if body.get("stream"):
            return Reply(events=text_events(words(text), use))
        return Reply(json_body=chat_response([text_item(text)], usage_=use))
