"""A fake OpenAI Chat Completions server on loopback, speaking the real wire format.

It records every request it receives. Replies are scripted per test (JSON, SSE, error bodies with
headers, raw bytes) or, when nothing is scripted, an echo of the last user message: a
`chat.completion` object, or `chat.completion.chunk` SSE events ending with a usage chunk (when
`stream_options.include_usage` is set) and `data: [DONE]`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.server import FakeServer, last_user_text, words

MODEL_SNAPSHOT = "gpt-4o-mini-2024-07-18"


@dataclass
class Reply:
    status: int = 200
    json_body: Any = None
    sse: Sequence[dict[str, Any] | str] | None = None  # str events are sent verbatim as data
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunk_delay: float = 0.0
    end_early: bool = False  # SSE: stop without [DONE] (a dropped stream)
    delay: float = 0.0  # seconds before anything is sent (a hanging upstream)
    echo: bool = False  # the unscripted echo (JSON or SSE, as the request asks), with chunk_delay


def usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def completion(
    content: str | None,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str = "stop",
    usage_: dict[str, Any] | None = None,
    completion_id: str = "chatcmpl-fake123",
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": 1_763_800_000,
        "model": MODEL_SNAPSHOT,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage_ if usage_ is not None else usage(10, 5),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def chunk(
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    *,
    usage_: dict[str, Any] | None = None,
    completion_id: str = "chatcmpl-fake123",
) -> dict[str, Any]:
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    )
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": 1_763_800_000,
        "model": MODEL_SNAPSHOT,
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
        "choices": choices,
        "usage": usage_,
    }


def text_chunks(pieces: Sequence[str], usage_: dict[str, Any] | None) -> list[dict[str, Any] | str]:
    """The event sequence of a streamed text reply, as OpenAI sends it."""
    events: list[dict[str, Any] | str] = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": piece}) for piece in pieces]
    events.append(chunk({}, "stop"))
    if usage_ is not None:
        events.append(chunk(None, usage_=usage_))
    events.append("[DONE]")
    return events


def azure_prompt_filter_chunk() -> dict[str, Any]:
    """The chunk Azure OpenAI streams first: prompt filter verdicts, no choices, empty ids."""
    safe = {"filtered": False, "severity": "safe"}
    categories = {"hate": safe, "self_harm": safe, "sexual": safe, "violence": safe}
    return {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": categories}],
    }


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class FakeOpenAI(FakeServer[Reply]):
    def __init__(self) -> None:
        # Azure OpenAI is the same wire format at a deployment's URL.
        super().__init__(["/v1/chat/completions", "/openai/deployments/{deployment}/chat/completions"])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def azure_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _reply(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        if reply.delay:
            await self._hang(reply.delay)
        if reply.echo:
            reply = dataclasses.replace(self._echo(await request.json()), chunk_delay=reply.chunk_delay)
        if reply.raw is not None:
            return web.Response(status=reply.status, body=reply.raw, headers=reply.headers)
        if reply.sse is None:
            return web.json_response(reply.json_body, status=reply.status, headers=reply.headers)
        response = web.StreamResponse(
            status=reply.status, headers={"Content-Type": "text/event-stream", **reply.headers}
        )
        events = reply.sse
        if reply.end_early:  # everything before [DONE], then the connection drops
            events = list(itertools.takewhile(lambda e: e != "[DONE]", events))
        frames = (f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events)
        return await self._stream(
            request, response, frames, chunk_delay=reply.chunk_delay, drop=reply.end_early
        )

    def _echo(self, body: dict[str, Any]) -> Reply:
        text = last_user_text(body)
        use = usage(10, max(len(text) // 4, 1))
        if body.get("stream"):
            include = (body.get("stream_options") or {}).get("include_usage")
            return Reply(sse=text_chunks(words(text), use if include else None))
        return Reply(json_body=completion(text, usage_=use))
