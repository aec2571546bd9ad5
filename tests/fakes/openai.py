"""A fake OpenAI Chat Completions server on loopback, speaking the real wire format.

It records every request it receives. Replies are scripted per test (JSON, SSE, error bodies with
headers, raw bytes) or, when nothing is scripted, an echo of the last user message: a
`chat.completion` object, or `chat.completion.chunk` SSE events ending with a usage chunk (when
`stream_options.include_usage` is set) and `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MODEL_SNAPSHOT = "gpt-4o-mini-2024-07-18"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class Reply:
    status: int = 200
    json_body: Any = None
    sse: Sequence[dict[str, Any] | str] | None = None  # str events are sent verbatim as data
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunk_delay: float = 0.0
    end_early: bool = False  # SSE: stop without [DONE] (a dropped stream)


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


class FakeOpenAI:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.disconnects = 0
        self._script: deque[Reply] = deque()
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def azure_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *replies: Reply) -> None:
        self._script.extend(replies)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        # Azure OpenAI: the same wire format at a deployment's URL.
        app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                {k.lower(): v for k, v in request.headers.items()},
                body,
                dict(request.query),
            )
        )
        reply = self._script.popleft() if self._script else self._echo(body)
        if reply.raw is not None:
            return web.Response(status=reply.status, body=reply.raw, headers=reply.headers)
        if reply.sse is None:
            return web.json_response(reply.json_body, status=reply.status, headers=reply.headers)
        response = web.StreamResponse(
            status=reply.status, headers={"Content-Type": "text/event-stream", **reply.headers}
        )
        await response.prepare(request)
        try:
            for event in reply.sse:
                if event == "[DONE]" and reply.end_early:
                    break
                data = event if isinstance(event, str) else json.dumps(event)
                await response.write(f"data: {data}\n\n".encode())
                if reply.chunk_delay:
                    await asyncio.sleep(reply.chunk_delay)
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        if reply.end_early:
            # Drop the connection mid-stream, as a failing upstream would.
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write_eof()
        return response

    @staticmethod
    def _echo(body: dict[str, Any]) -> Reply:
        text = ""
        for message in reversed(body.get("messages", [])):
            if message.get("role") == "user":
                content = message.get("content")
                text = (
                    content
                    if isinstance(content, str)
                    else " ".join(p.get("text", "") for p in content if p.get("type") == "text")
                )
                break
        use = usage(10, max(len(text) // 4, 1))
        if body.get("stream"):
            include = (body.get("stream_options") or {}).get("include_usage")
            pieces = [w + " " for w in text.split(" ")[:-1]] + text.split(" ")[-1:]
            return Reply(sse=text_chunks(pieces, use if include else None))
        return Reply(json_body=completion(text, usage_=use))
