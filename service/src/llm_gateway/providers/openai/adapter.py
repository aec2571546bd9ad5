"""The OpenAI Chat Completions adapter (`POST {base_url}/chat/completions`), unary and SSE."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator

import httpx
from httpx_sse import EventSource, SSEError

from llm_gateway.config.schema import OpenAIProviderConfig
from llm_gateway.domain.errors import Code
from llm_gateway.domain.results import Completion, StreamEvent
from llm_gateway.providers.base import UpstreamCall
from llm_gateway.providers.errors import (
    UpstreamContext,
    bad_response,
    http_error,
    upstream_errors,
)
from llm_gateway.providers.openai.mapping import build_body, parse_completion
from llm_gateway.providers.openai.stream import ChunkDecoder


class OpenAIProvider:
    def __init__(self, name: str, config: OpenAIProviderConfig, http: httpx.AsyncClient) -> None:
        self.name = name
        self._http = http
        self._url = f"{config.base_url}/chat/completions"
        self._api_key = config.api_key.get_secret_value() if config.api_key else ""
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        if config.organization:
            headers["OpenAI-Organization"] = config.organization
        if config.project:
            headers["OpenAI-Project"] = config.project
        self._headers = headers
        t = config.timeout
        self._timeout = httpx.Timeout(connect=t.connect, read=t.read, write=t.write, pool=t.pool)

    def _context(self, call: UpstreamCall) -> UpstreamContext:
        return UpstreamContext(self.name, call.model.id, (self._api_key,))

    def _encode(self, call: UpstreamCall, *, stream: bool) -> bytes:
        return json.dumps(build_body(call, stream=stream), separators=(",", ":")).encode()

    async def chat(self, call: UpstreamCall) -> Completion:
        ctx = self._context(call)
        content = self._encode(call, stream=False)
        with upstream_errors(ctx):
            response = await self._http.post(
                self._url, content=content, headers=self._headers, timeout=self._timeout
            )
            if response.status_code >= 400:
                raise http_error(ctx, response.status_code, response.content, response.headers)
            return parse_completion(response.json())

    async def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        ctx = self._context(call)
        content = self._encode(call, stream=True)
        decoder = ChunkDecoder()
        saw_done = False
        with upstream_errors(ctx):
            async with self._http.stream(
                "POST", self._url, content=content, headers=self._headers, timeout=self._timeout
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    raise http_error(ctx, response.status_code, response.content, response.headers)
                try:
                    async for sse in EventSource(response).aiter_sse():
                        if sse.data == "[DONE]":
                            saw_done = True
                            break
                        if not sse.data:
                            continue
                        for event in decoder.feed(json.loads(sse.data)):
                            yield event
                        if decoder.error is not None:
                            raise ctx.error(
                                f"provider {self.name!r} reported an error mid-stream: "
                                f"{decoder.error.get('message') or decoder.error}",
                                code=Code.UNAVAILABLE,
                                reason="UPSTREAM_STREAM_ERROR",
                                retryable=True,
                            )
                except SSEError as exc:
                    raise bad_response(ctx, f"not an event stream ({exc})") from None
        if not saw_done and not decoder.finished:
            raise ctx.error(
                f"provider {self.name!r} ended the stream before it finished",
                code=Code.UNAVAILABLE,
                reason="UPSTREAM_STREAM_INTERRUPTED",
                retryable=True,
            )
        yield decoder.done()

    async def aclose(self) -> None:
        return None
