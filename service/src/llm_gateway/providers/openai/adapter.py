"""Chat Completions adapters: OpenAI (`POST {base_url}/chat/completions`), unary and SSE."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import Any

import aiohttp

from llm_gateway import json_codec
from llm_gateway.config.schema import OpenAICompatibleProviderConfig, OpenAIProviderConfig, TimeoutConfig
from llm_gateway.domain.results import Completion, StreamEvent
from llm_gateway.providers.adapter import HttpAdapter, bearer
from llm_gateway.providers.base import OptionRules, UpstreamCall
from llm_gateway.providers.errors import stream_interrupted, upstream_errors
from llm_gateway.providers.openai.mapping import Dialect, build_body, parse_completion
from llm_gateway.providers.openai.stream import ChunkDecoder

# Body keys the gateway sets or maps from the request; `n` and the legacy `functions` would change
# the reply's shape (and what it costs) behind the gateway's back.
_RESERVED = frozenset(
    {
        "model", "messages", "stream", "stream_options", "n", "max_tokens", "max_completion_tokens",
        "temperature", "top_p", "top_k", "stop", "seed", "presence_penalty", "frequency_penalty",
        "tools", "tool_choice", "parallel_tool_calls", "functions", "function_call", "response_format",
        "reasoning_effort", "reasoning",
    }
)  # fmt: skip


class ChatCompletionsProvider(HttpAdapter):
    """The Chat Completions wire format, unary and SSE. Subclasses say where requests go and how
    they authenticate; `dialect` says what the server behind them accepts."""

    def __init__(
        self,
        name: str,
        http: aiohttp.ClientSession,
        headers: Mapping[str, str],
        secrets: Sequence[str],
        timeout: TimeoutConfig,
        dialect: Dialect | None = None,
        url: str = "",
    ) -> None:
        super().__init__(name, http, headers, secrets, timeout, url)
        self._dialect = dialect or Dialect()
        self.option_rules = OptionRules(_RESERVED | {self._dialect.seed_field})

    def _body(self, call: UpstreamCall, *, stream: bool) -> dict[str, Any]:
        return build_body(call, stream=stream, dialect=self._dialect)

    def _parse(self, reply: Any) -> Completion:
        return parse_completion(reply, reasoning_in_completion=self._dialect.reasoning_in_completion)

    async def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        ctx = self._context(call)
        decoder = ChunkDecoder(reasoning_in_completion=self._dialect.reasoning_in_completion)
        async with aclosing(self._sse(call, ctx)) as events:
            with upstream_errors(ctx):
                async for sse in events:
                    if sse.data == "[DONE]":
                        break
                    if not sse.data:  # keep-alive events some compatible servers send
                        continue
                    for event in decoder.feed(json_codec.loads(sse.data)):
                        yield event
                    if decoder.error is not None:
                        raise self._stream_error(ctx, str(decoder.error.get("message") or decoder.error))
        # The end marker is the finish reason: `[DONE]` alone, or the connection closing, also
        # ends streams a server cut short (llama-cpp-python ends a running stream that way when
        # another request arrives).
        if not decoder.finished:
            raise stream_interrupted(ctx)
        yield decoder.done()


class OpenAICompatibleProvider(ChatCompletionsProvider):
    """A compatible server (a preset or one configured from scratch), with a bearer key if any."""

    def __init__(
        self, name: str, config: OpenAICompatibleProviderConfig, http: aiohttp.ClientSession
    ) -> None:
        api_key = config.api_key.get_secret_value() if config.api_key else ""
        url = f"{config.base_url}/chat/completions"
        super().__init__(name, http, bearer(api_key), (api_key,), config.timeout, config.dialect, url)


class OpenAIProvider(ChatCompletionsProvider):
    """OpenAI, or any server that speaks its API at `base_url`, with a bearer key."""

    def __init__(self, name: str, config: OpenAIProviderConfig, http: aiohttp.ClientSession) -> None:
        api_key = config.api_key.get_secret_value() if config.api_key else ""
        headers = bearer(api_key)
        if config.organization:
            headers["OpenAI-Organization"] = config.organization
        if config.project:
            headers["OpenAI-Project"] = config.project
        url = f"{config.base_url}/chat/completions"
        super().__init__(name, http, headers, (api_key,), config.timeout, url=url)
