"""Upstream text is untrusted: a provider key echoed in an upstream error body, whole, truncated or
in pieces, in any field, never reaches the caller (message, ErrorInfo metadata, trailers, the
attempts listed in a reply), a log line, or anywhere else; nor do file paths or other credentials.

The upstream here is a hostile server on loopback that answers every request with a scripted
status and body, so each provider kind's own error mapping (JSON errors, Google's error details,
errors inside a 200 stream) is driven with the same canaries."""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, cast

import grpc
import pytest
from aiohttp import web

from llm_gateway.untrusted import REDACTED, Scrubber
from llmgateway.v1 import chat_pb2
from tests.conftest import chat, error_details, running_gateway

KEY = "sk-canary-7Hq2RkT9vXz4Lm8Pw3Nd6Bf1Yc5"
PIECE = 8  # any run of this many characters of the key counts as a leak


def leaks(text: str) -> list[str]:
    return [KEY[i : i + PIECE] for i in range(len(KEY) - PIECE + 1) if KEY[i : i + PIECE] in text]


# The key as providers have been seen to echo it.
VARIANTS = {
    "exact": KEY,
    "truncated": KEY[:-2],
    "middle": KEY[6:-6],
    "prefixed": "Bearer " + KEY,
}


@dataclass
class Scripted:
    status: int
    body: bytes
    content_type: str = "application/json"


class HostileUpstream:
    """Answers every POST, on any path, with the next scripted reply."""

    def __init__(self) -> None:
        self.replies: deque[Scripted] = deque()
        self.received = 0
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def __aenter__(self) -> HostileUpstream:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.received += 1
        reply = self.replies.popleft()
        return web.Response(status=reply.status, body=reply.body, content_type=reply.content_type)


@pytest.fixture
async def hostile() -> AsyncIterator[HostileUpstream]:
    async with HostileUpstream() as upstream:
        yield upstream


NO_RETRY = "retry = { max_retries = 0 }\ncircuit_breaker = { failure_threshold = 10000 }"


def providers_toml(port: int) -> str:
    base = f"http://127.0.0.1:{port}"
    return f"""
[providers.openai]
base_url = "{base}/v1"
api_key = "{KEY}"
{NO_RETRY}

[providers.azure]
kind = "azure_openai"
endpoint = "{base}"
api_key = "{KEY}"
{NO_RETRY}
models = {{ gpt-4o-mini = {{ deployment = "prod" }} }}

[providers.anthropic]
kind = "anthropic"
base_url = "{base}"
api_key = "{KEY}"
{NO_RETRY}

[providers.gemini]
kind = "gemini"
base_url = "{base}"
api_key = "{KEY}"
{NO_RETRY}

[providers.ollama]
kind = "ollama"
base_url = "{base}"
api_key = "{KEY}"
enabled = true
{NO_RETRY}

[providers.cohere]
kind = "cohere"
base_url = "{base}"
api_key = "{KEY}"
{NO_RETRY}
"""


MODELS = {
    "openai": "openai:gpt-4o-mini",
    "azure": "azure:gpt-4o-mini",
    "anthropic": "anthropic:claude-haiku-4-5",
    "gemini": "gemini:gemini-2.5-flash",
    "ollama": "ollama:llama3.2",
    "cohere": "cohere:command-a-03-2025",
}


def error_bodies(secret: str) -> list[bytes]:
    """Error bodies with `secret` in every field a provider's error object has."""
    return [
        json.dumps(
            {"error": {"message": f"Incorrect API key provided: {secret}", "type": secret, "code": secret}}
        ).encode(),
        json.dumps(
            {
                "error": {
                    "code": 400,
                    "message": f"key {secret} rejected",
                    "status": secret,
                    "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": secret}],
                }
            }
        ).encode(),
        json.dumps({"type": "error", "error": {"type": secret, "message": secret}}).encode(),
        json.dumps({"error": secret}).encode(),
        json.dumps({"message": f"invalid api token {secret}"}).encode(),
        f"upstream proxy said: Authorization: Bearer {secret} is not allowed".encode(),
    ]


def exposed_text(err: grpc.aio.AioRpcError) -> str:
    """Everything a caller can read from a failed call."""
    details = error_details(err)
    parts = [err.details() or "", *details.info.metadata.keys(), *details.info.metadata.values()]
    for key, value in cast(Iterable[tuple[str, str | bytes]], err.trailing_metadata() or ()):
        parts.append(key)
        parts.append(value.decode("latin-1") if isinstance(value, bytes) else value)
    return "\n".join(parts)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 429, 500, 503, 529])
async def test_a_key_echoed_in_an_error_body_never_reaches_the_caller_or_the_log(
    hostile: HostileUpstream, status: int, log_lines: list[str]
) -> None:
    async with running_gateway(providers_toml(hostile.port)) as gw:
        for provider, model in MODELS.items():
            for variant, secret in VARIANTS.items():
                for body in error_bodies(secret):
                    hostile.replies.append(Scripted(status, body))
                    with pytest.raises(grpc.aio.AioRpcError) as caught:
                        await gw.stub.Chat(chat(model, "hello"))
                    seen = exposed_text(caught.value)
                    assert not leaks(seen), (provider, variant, status, seen)
    assert hostile.received == len(MODELS) * len(VARIANTS) * 6
    assert not leaks("\n".join(log_lines))


def stream_error(provider: str, secret: str) -> Scripted:
    """A 200 stream that starts, then reports an error carrying `secret` in every field."""
    start: dict[str, Any]
    error: dict[str, Any]
    if provider in ("openai", "azure"):
        start = {"id": "c", "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]}
        error = {"error": {"message": secret, "type": secret, "code": secret}}
        text = f"data: {json.dumps(start)}\n\ndata: {json.dumps(error)}\n\n"
    elif provider == "anthropic":
        start = {"type": "message_start", "message": {"id": "m", "model": "x", "usage": {"input_tokens": 3}}}
        delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}
        error = {"type": "error", "error": {"type": secret, "message": secret}}
        text = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in (start, delta, error))
    elif provider == "gemini":
        start = {"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}}]}
        error = {"error": {"code": 500, "message": secret, "status": secret}}
        text = f"data: {json.dumps(start)}\n\ndata: {json.dumps(error)}\n\n"
    elif provider == "cohere":
        start = {"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": "Hi"}}}}
        end = {"type": "message-end", "delta": {"finish_reason": "ERROR", "error": secret}}
        text = f"data: {json.dumps(start)}\n\ndata: {json.dumps(end)}\n\n"
    else:  # ollama: NDJSON
        start = {"model": "llama3.2", "message": {"role": "assistant", "content": "Hi"}, "done": False}
        lines = f"{json.dumps(start)}\n{json.dumps({'error': secret})}\n"
        return Scripted(200, lines.encode(), "application/x-ndjson")
    return Scripted(200, text.encode(), "text/event-stream")


async def test_a_key_in_an_error_inside_a_stream_never_reaches_the_caller(
    hostile: HostileUpstream, log_lines: list[str]
) -> None:
    async with running_gateway(providers_toml(hostile.port)) as gw:
        for provider, model in MODELS.items():
            for variant, secret in VARIANTS.items():
                hostile.replies.append(stream_error(provider, secret))
                call = gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=chat(model, "hello")))
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    async for _ in call:
                        pass
                seen = exposed_text(caught.value)
                assert error_details(caught.value).info.reason == "UPSTREAM_STREAM_ERROR", seen
                assert not leaks(seen), (provider, variant, seen)
    assert not leaks("\n".join(log_lines))


async def test_attempts_listed_in_a_fallback_reply_are_scrubbed(hostile: HostileUpstream) -> None:
    hostile.replies.append(Scripted(500, error_bodies(KEY[:-2])[0]))
    async with running_gateway(providers_toml(hostile.port)) as gw:
        reply = await gw.stub.Chat(chat("openai:gpt-4o-mini", "hello", fallback_models=["mock:echo"]))
    assert reply.routing.fallback_used
    failed = reply.routing.attempts[0]
    assert failed.reason == "UPSTREAM_UNAVAILABLE"
    assert REDACTED in failed.message
    assert not leaks(str(reply))


async def test_server_file_paths_and_long_bodies_are_cut(hostile: HostileUpstream) -> None:
    trace = 'Traceback: File "/opt/venv/lib/python3.11/site-packages/llama_cpp/server/app.py", line 231\n'
    hostile.replies.append(Scripted(500, json.dumps({"error": {"message": trace + "x" * 10_000}}).encode()))
    async with running_gateway(providers_toml(hostile.port)) as gw:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.stub.Chat(chat("openai:gpt-4o-mini", "hello"))
    message = caught.value.details() or ""
    assert "/opt/venv" not in message
    assert "site-packages" not in message
    assert "[path]" in message
    assert len(message) < 700
    assert "\n" not in message.partition("failed: ")[2]


@pytest.mark.parametrize(
    ("text", "kept", "gone"),
    [
        (f"Incorrect API key provided: {KEY}.", "Incorrect API key provided", KEY[:PIECE]),
        (f"key {KEY[:-2]} bad", "bad", KEY[2 : 2 + PIECE]),
        (f"in the middle {KEY[10:20]} here", "here", KEY[10:18]),
        ("other secrets: AIzaSyA1234567890abcdefghijklmnopqrstu", "other secrets", "AIzaSy"),
        ("api_key=hunter2hunter2&x=1", "api_key=", "hunter2"),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.sig", "jwt", "eyJhbGci"),
        ("see https://platform.openai.com/docs/guides/error-codes", "https://platform.openai.com/docs", ""),
        ("The model gpt-4o-mini-2024-07-18 does not exist", "gpt-4o-mini-2024-07-18", ""),
        ("a\x00b\x1bc", "a b c", "\x00"),
    ],
)
def test_the_scrubber_keeps_what_is_useful_and_drops_what_is_secret(text: str, kept: str, gone: str) -> None:
    cleaned = Scrubber([KEY]).text(text)
    assert kept in cleaned
    if gone:
        assert gone not in cleaned


def test_an_upstream_code_is_passed_on_only_as_a_plain_identifier() -> None:
    scrubber = Scrubber([KEY])
    assert scrubber.code("rate_limit_exceeded") == "rate_limit_exceeded"
    assert scrubber.code("RESOURCE_EXHAUSTED") == "RESOURCE_EXHAUSTED"
    assert scrubber.code(KEY) == ""
    assert scrubber.code(KEY[:-2]) == ""
    assert scrubber.code("has spaces in it") == ""
    assert scrubber.code("x" * 65) == ""


def test_scrubbing_a_huge_body_costs_no_more_than_a_bounded_one() -> None:
    cleaned = Scrubber([KEY]).text(("y" * 100 + KEY) * 100_000)
    assert len(cleaned) <= 500
    assert not leaks(cleaned)


async def test_concurrent_failures_keep_their_own_scrubbed_messages(hostile: HostileUpstream) -> None:
    for i in range(20):
        hostile.replies.append(Scripted(400, error_bodies(f"{KEY} #{i}")[0]))
    async with running_gateway(providers_toml(hostile.port)) as gw:
        results = await asyncio.gather(
            *(gw.stub.Chat(chat("openai:gpt-4o-mini", "hello")) for _ in range(20)), return_exceptions=True
        )
    assert all(isinstance(r, grpc.aio.AioRpcError) for r in results)
    assert not leaks("\n".join(exposed_text(r) for r in results if isinstance(r, grpc.aio.AioRpcError)))
