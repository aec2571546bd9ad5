"""The Anthropic Messages adapter (`POST {base_url}/v1/messages`), unary and SSE."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import aclosing

import aiohttp

from llm_gateway.config.schema import AnthropicProviderConfig
from llm_gateway.domain.errors import Code
from llm_gateway.domain.results import Completion, StreamEvent
from llm_gateway.providers.anthropic.mapping import build_body, parse_message
from llm_gateway.providers.anthropic.stream import EventDecoder
from llm_gateway.providers.base import UpstreamCall
from llm_gateway.providers.errors import UpstreamContext, stream_interrupted, upstream_errors
from llm_gateway.providers.http import client_timeout, post_json, post_sse

# Anthropic's error types that mean "try again later" when they arrive inside a 200 stream.
_RETRYABLE_STREAM_ERRORS = frozenset({"overloaded_error", "api_error", "rate_limit_error"})


class AnthropicProvider:
    def __init__(self, name: str, config: AnthropicProviderConfig, http: aiohttp.ClientSession) -> None:
        self.name = name
        self._http = http
        self._url = f"{config.base_url}/v1/messages"
        self._api_key = config.api_key.get_secret_value() if config.api_key else ""
        self._headers = {
            "Content-Type": "application/json",
            "x-api-key": self._api_key,
            "anthropic-version": config.anthropic_version,
        }
        self._timeout = client_timeout(config.timeout)

    def _context(self, call: UpstreamCall) -> UpstreamContext:
        return UpstreamContext(self.name, call.model.id, (self._api_key,))

    def _encode(self, call: UpstreamCall, *, stream: bool) -> bytes:
        return json.dumps(build_body(call, stream=stream), separators=(",", ":")).encode()

    async def chat(self, call: UpstreamCall) -> Completion:
        ctx = self._context(call)
        content = self._encode(call, stream=False)
        reply = await post_json(
            self._http, self._url, content, headers=self._headers, timeouts=self._timeout, ctx=ctx
        )
        with upstream_errors(ctx):
            return parse_message(reply)

    async def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        ctx = self._context(call)
        content = self._encode(call, stream=True)
        decoder = EventDecoder()
        events = post_sse(
            self._http, self._url, content, headers=self._headers, timeouts=self._timeout, ctx=ctx
        )
        async with aclosing(events):
            with upstream_errors(ctx):
                async for sse in events:
                    for event in decoder.feed(sse.event, json.loads(sse.data)):
                        yield event
                    if decoder.error is not None:
                        kind = str(decoder.error.get("type") or "")
                        raise ctx.error(
                            f"provider {self.name!r} reported an error mid-stream: "
                            f"{decoder.error.get('message') or decoder.error}",
                            code=Code.UNAVAILABLE,
                            reason="UPSTREAM_STREAM_ERROR",
                            retryable=kind in _RETRYABLE_STREAM_ERRORS,
                            extra={"upstream_code": kind} if kind else None,
                        )
                    if decoder.stopped:
                        break
        if not decoder.stopped:
            raise stream_interrupted(ctx)
        yield decoder.done()

    async def aclose(self) -> None:
        return None
