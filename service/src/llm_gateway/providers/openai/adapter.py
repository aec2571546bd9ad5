"""Chat Completions adapters: OpenAI (`POST {base_url}/chat/completions`), unary and SSE."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import aclosing

import aiohttp

from llm_gateway.config.schema import OpenAIProviderConfig, TimeoutConfig
from llm_gateway.domain.errors import Code
from llm_gateway.domain.results import Completion, StreamEvent
from llm_gateway.providers.base import UpstreamCall
from llm_gateway.providers.errors import UpstreamContext, stream_interrupted, upstream_errors
from llm_gateway.providers.http import client_timeout, post_json, post_sse
from llm_gateway.providers.openai.mapping import build_body, parse_completion
from llm_gateway.providers.openai.stream import ChunkDecoder


class ChatCompletionsProvider:
    """The Chat Completions wire format, unary and SSE. Subclasses say where requests go and how
    they authenticate; the body and the replies are the same everywhere it is spoken."""

    def __init__(
        self,
        name: str,
        http: aiohttp.ClientSession,
        headers: dict[str, str],
        api_key: str,
        timeout: TimeoutConfig,
    ) -> None:
        self.name = name
        self._http = http
        self._headers = {"Content-Type": "application/json", **headers}
        self._api_key = api_key
        self._timeout = client_timeout(timeout)

    def _url(self, call: UpstreamCall) -> str:
        raise NotImplementedError

    def _context(self, call: UpstreamCall) -> UpstreamContext:
        return UpstreamContext(self.name, call.model.id, (self._api_key,))

    def _encode(self, call: UpstreamCall, *, stream: bool) -> bytes:
        return json.dumps(build_body(call, stream=stream), separators=(",", ":")).encode()

    async def chat(self, call: UpstreamCall) -> Completion:
        ctx = self._context(call)
        content = self._encode(call, stream=False)
        reply = await post_json(
            self._http, self._url(call), content, headers=self._headers, timeouts=self._timeout, ctx=ctx
        )
        with upstream_errors(ctx):
            return parse_completion(reply)

    async def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        ctx = self._context(call)
        content = self._encode(call, stream=True)
        decoder = ChunkDecoder()
        saw_done = False
        events = post_sse(
            self._http, self._url(call), content, headers=self._headers, timeouts=self._timeout, ctx=ctx
        )
        async with aclosing(events):
            with upstream_errors(ctx):
                async for sse in events:
                    if sse.data == "[DONE]":
                        saw_done = True
                        break
                    if not sse.data:  # keep-alive events some compatible servers send
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
        if not saw_done and not decoder.finished:
            raise stream_interrupted(ctx)
        yield decoder.done()

    async def aclose(self) -> None:
        return None


class OpenAIProvider(ChatCompletionsProvider):
    """OpenAI, or any server that speaks its API at `base_url`, with a bearer key."""

    def __init__(self, name: str, config: OpenAIProviderConfig, http: aiohttp.ClientSession) -> None:
        api_key = config.api_key.get_secret_value() if config.api_key else ""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        if config.organization:
            headers["OpenAI-Organization"] = config.organization
        if config.project:
            headers["OpenAI-Project"] = config.project
        super().__init__(name, http, headers, api_key, config.timeout)
        self._chat_url = f"{config.base_url}/chat/completions"

    def _url(self, call: UpstreamCall) -> str:
        return self._chat_url
