"""OpenAI's adapters: Chat Completions (`POST {base_url}/chat/completions`) for OpenAI and every
compatible server, and for OpenAI and Azure the Responses API (`POST {base_url}/responses`) for the
models that use it; unary and SSE."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from typing import Any

import aiohttp

from llm_gateway import json_codec
from llm_gateway.config.schema import (
    OpenAIApi,
    OpenAICompatibleProviderConfig,
    OpenAIModelConfig,
    OpenAIProviderConfig,
    TimeoutConfig,
)
from llm_gateway.domain.results import Completion, StreamEvent
from llm_gateway.providers.adapter import HttpAdapter, bearer
from llm_gateway.providers.base import OptionRules, UpstreamCall
from llm_gateway.providers.errors import stream_interrupted, upstream_errors
from llm_gateway.providers.http import post_json
from llm_gateway.providers.openai import responses
from llm_gateway.providers.openai.batches import OpenAIBatches
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


class EitherApiProvider(ChatCompletionsProvider):
    """OpenAI's two APIs behind one provider: Chat Completions, or the Responses API for the
    models configured for it (the provider's `api`, a model's own) and those only it serves."""

    def __init__(
        self,
        name: str,
        http: aiohttp.ClientSession,
        headers: Mapping[str, str],
        secrets: Sequence[str],
        timeout: TimeoutConfig,
        *,
        url: str,
        responses_url: str,
        api: OpenAIApi,
        models: Mapping[str, OpenAIModelConfig],
    ) -> None:
        super().__init__(name, http, headers, secrets, timeout, url=url)
        self._responses_url = responses_url
        self._api = api
        # gateway model name -> its own api, for listed models that set one
        self._apis = {key: model.api for key, model in models.items() if model.api is not None}

    def uses_responses(self, call: UpstreamCall) -> bool:
        own = self._apis.get(call.model.id.partition(":")[2])
        return (own or self._api) == "responses" or (
            own is None and responses.responses_only(call.model.name)
        )

    def _upstream_model(self, call: UpstreamCall) -> str:
        """The model the body names."""
        return call.model.name

    def _url(self, call: UpstreamCall, *, stream: bool) -> str:
        return self._responses_url if self.uses_responses(call) else self._endpoint

    def _body(self, call: UpstreamCall, *, stream: bool) -> dict[str, Any]:
        if self.uses_responses(call):
            return responses.build_body(call, stream=stream, model=self._upstream_model(call))
        return super()._body(call, stream=stream)

    async def chat(self, call: UpstreamCall) -> Completion:
        if not self.uses_responses(call):
            return await super().chat(call)
        ctx = self._context(call)
        reply = await post_json(
            self._http,
            self._responses_url,
            self._encode(call, stream=False),
            headers=self._headers,
            timeouts=self._timeout,
            ctx=ctx,
        )
        with upstream_errors(ctx):
            if reply.get("status") == "failed":
                error = reply.get("error") or {}
                raise self._stream_error(ctx, str(error.get("message") or "the response failed"))
            return responses.parse_response(reply)

    def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        return self._responses_stream(call) if self.uses_responses(call) else super().stream(call)

    async def _responses_stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        ctx = self._context(call)
        decoder = responses.EventDecoder()
        async with aclosing(self._sse(call, ctx)) as events:
            with upstream_errors(ctx):
                async for sse in events:
                    if not sse.data:
                        continue
                    for event in decoder.feed(json_codec.loads(sse.data)):
                        yield event
                    if decoder.error is not None:
                        error = decoder.error
                        raise self._stream_error(
                            ctx, str(error.get("message") or error), kind=str(error.get("code") or "")
                        )
                    if decoder.finished:
                        break
        if not decoder.finished:
            raise stream_interrupted(ctx)
        yield decoder.done()


class OpenAIProvider(EitherApiProvider):
    """OpenAI, or any server that speaks its API at `base_url`, with a bearer key."""

    def __init__(self, name: str, config: OpenAIProviderConfig, http: aiohttp.ClientSession) -> None:
        api_key = config.api_key.get_secret_value() if config.api_key else ""
        headers = bearer(api_key)
        if config.organization:
            headers["OpenAI-Organization"] = config.organization
        if config.project:
            headers["OpenAI-Project"] = config.project
        super().__init__(
            name,
            http,
            headers,
            (api_key,),
            config.timeout,
            url=f"{config.base_url}/chat/completions",
            responses_url=f"{config.base_url}/responses",
            api=config.api,
            models=config.models,
        )

    def batch_api(self) -> OpenAIBatches:
        return OpenAIBatches(self)
