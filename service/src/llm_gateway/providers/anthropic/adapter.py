"""The Anthropic Messages adapter (`POST {base_url}/v1/messages`), unary and SSE."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

import aiohttp

from llm_gateway import json_codec
from llm_gateway.config.schema import AnthropicProviderConfig
from llm_gateway.domain.results import Completion, StreamEvent
from llm_gateway.providers.adapter import HttpAdapter
from llm_gateway.providers.anthropic.batches import AnthropicBatches
from llm_gateway.providers.anthropic.mapping import build_body, parse_message
from llm_gateway.providers.anthropic.stream import EventDecoder
from llm_gateway.providers.base import OptionRules, UpstreamCall
from llm_gateway.providers.errors import stream_interrupted, upstream_errors

# Anthropic's error types that mean "try again later" when they arrive inside a 200 stream.
_RETRYABLE_STREAM_ERRORS = frozenset({"overloaded_error", "api_error", "rate_limit_error"})


class AnthropicProvider(HttpAdapter):
    option_rules = OptionRules(
        frozenset(
            {
                "model", "messages", "system", "stream", "max_tokens", "temperature", "top_p", "top_k",
                "stop_sequences", "tools", "tool_choice", "thinking", "output_config", "output_format",
            }
        )
    )  # fmt: skip

    def __init__(self, name: str, config: AnthropicProviderConfig, http: aiohttp.ClientSession) -> None:
        api_key = config.api_key.get_secret_value() if config.api_key else ""
        headers = {"x-api-key": api_key, "anthropic-version": config.anthropic_version}
        super().__init__(name, http, headers, (api_key,), config.timeout, f"{config.base_url}/v1/messages")
        self._prompt_caching = config.prompt_caching

    def _body(self, call: UpstreamCall, *, stream: bool) -> dict[str, Any]:
        return build_body(call, stream=stream, prompt_caching=self._prompt_caching)

    def _parse(self, reply: Any) -> Completion:
        return parse_message(reply)

    def batch_api(self) -> AnthropicBatches:
        return AnthropicBatches(self)

    async def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        ctx = self._context(call)
        decoder = EventDecoder()
        async with aclosing(self._sse(call, ctx)) as events:
            with upstream_errors(ctx):
                async for sse in events:
                    for event in decoder.feed(sse.event, json_codec.loads(sse.data)):
                        yield event
                    if decoder.error is not None:
                        kind = str(decoder.error.get("type") or "")
                        raise self._stream_error(
                            ctx,
                            str(decoder.error.get("message") or decoder.error),
                            kind=kind,
                            retryable=kind in _RETRYABLE_STREAM_ERRORS,
                        )
                    if decoder.stopped:
                        break
        if not decoder.stopped:
            raise stream_interrupted(ctx)
        yield decoder.done()
