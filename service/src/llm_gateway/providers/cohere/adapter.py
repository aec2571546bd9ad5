"""The Cohere Chat API v2 adapter (`POST {base_url}/v2/chat`), unary and SSE, with a bearer key."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import aiohttp

from llm_gateway import json_codec
from llm_gateway.config.schema import CohereProviderConfig
from llm_gateway.domain.results import Completion, StreamEvent
from llm_gateway.providers.adapter import HttpAdapter, bearer
from llm_gateway.providers.base import OptionRules, UpstreamCall
from llm_gateway.providers.cohere.mapping import build_body, parse_chat
from llm_gateway.providers.cohere.stream import EventDecoder
from llm_gateway.providers.errors import stream_interrupted, upstream_errors


class CohereProvider(HttpAdapter):
    option_rules = OptionRules(
        frozenset(
            {
                "model", "messages", "stream", "max_tokens", "temperature", "p", "k", "stop_sequences",
                "seed", "presence_penalty", "frequency_penalty", "tools", "tool_choice", "strict_tools",
                "response_format", "thinking",
            }
        )
    )  # fmt: skip

    def __init__(self, name: str, config: CohereProviderConfig, http: aiohttp.ClientSession) -> None:
        api_key = config.api_key.get_secret_value() if config.api_key else ""
        url = f"{config.base_url}/v2/chat"
        super().__init__(name, http, bearer(api_key), (api_key,), config.timeout, url)

    def _body(self, call: UpstreamCall, *, stream: bool) -> dict[str, Any]:
        return build_body(call, stream=stream)

    def _parse(self, reply: Any) -> Completion:
        return parse_chat(reply)

    async def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        ctx = self._context(call)
        decoder = EventDecoder()
        async with aclosing(self._sse(call, ctx)) as events:
            with upstream_errors(ctx):
                async for sse in events:
                    if sse.data == "[DONE]":  # the official SDK ends a stream here too
                        break
                    if not sse.data:
                        continue
                    for event in decoder.feed(json_codec.loads(sse.data)):
                        yield event
                    if decoder.ended:
                        break
        if not decoder.ended:
            raise stream_interrupted(ctx)
        if decoder.error is not None:
            # Cohere's ERROR finish reason is an internal failure of the generation: worth a retry.
            raise self._stream_error(ctx, decoder.error, kind="ERROR")
        yield decoder.done()
