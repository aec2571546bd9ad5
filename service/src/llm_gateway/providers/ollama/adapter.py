"""The Ollama native chat adapter (`POST {base_url}/api/chat`), unary and NDJSON streams."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import aiohttp

from llm_gateway.config.schema import OllamaProviderConfig
from llm_gateway.domain.results import Completion, StreamEvent
from llm_gateway.providers.adapter import HttpAdapter, bearer
from llm_gateway.providers.base import OptionRules, UpstreamCall
from llm_gateway.providers.errors import stream_interrupted, upstream_errors
from llm_gateway.providers.ollama.mapping import build_body, parse_chat
from llm_gateway.providers.ollama.stream import ChunkDecoder


class OllamaProvider(HttpAdapter):
    """A local Ollama needs no key; a hosted one takes `api_key` as a bearer token. Options add to
    the mapped sampling `options` (`{"options": {"num_ctx": 8192}}`) instead of replacing them."""

    option_rules = OptionRules(
        frozenset({"model", "messages", "stream", "format", "tools", "think", "keep_alive"}),
        {
            "options": frozenset(
                {
                    "temperature", "top_p", "top_k", "num_predict", "stop", "seed", "presence_penalty",
                    "frequency_penalty",
                }
            )
        },
    )  # fmt: skip

    def __init__(self, name: str, config: OllamaProviderConfig, http: aiohttp.ClientSession) -> None:
        api_key = config.api_key.get_secret_value() if config.api_key else ""
        url = f"{config.base_url}/api/chat"
        super().__init__(name, http, bearer(api_key), (api_key,), config.timeout, url)
        self._keep_alive = config.keep_alive

    def _body(self, call: UpstreamCall, *, stream: bool) -> dict[str, Any]:
        return build_body(call, stream=stream, keep_alive=self._keep_alive)

    def _parse(self, reply: Any) -> Completion:
        return parse_chat(reply)

    async def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        ctx = self._context(call)
        decoder = ChunkDecoder()
        async with aclosing(self._ndjson(call, ctx)) as lines:
            with upstream_errors(ctx):
                async for line in lines:
                    for event in decoder.feed(line):
                        yield event
                    if decoder.error is not None:
                        raise self._stream_error(ctx, decoder.error)
                    if decoder.finished:
                        break
        if not decoder.finished:
            raise stream_interrupted(ctx)
        yield decoder.done()
