"""The Gemini API adapter: `POST {base_url}/{api_version}/models/{model}:generateContent`, and
`:streamGenerateContent?alt=sse` for streams, authenticated by the `x-goog-api-key` header."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any
from urllib.parse import quote

import aiohttp

from llm_gateway import json_codec
from llm_gateway.config.schema import GeminiProviderConfig
from llm_gateway.domain.errors import GatewayError
from llm_gateway.domain.results import Completion, StreamEvent
from llm_gateway.providers.adapter import HttpAdapter
from llm_gateway.providers.base import OptionRules, UpstreamCall
from llm_gateway.providers.errors import UpstreamContext, stream_interrupted, upstream_errors
from llm_gateway.providers.gemini.mapping import build_body, parse_response
from llm_gateway.providers.gemini.stream import ChunkDecoder

# google.rpc status names that mean "try again later" when they arrive inside a 200 stream.
_RETRYABLE_STREAM_ERRORS = frozenset(
    {"UNAVAILABLE", "INTERNAL", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "ABORTED"}
)


def _both_cases(*names: str) -> frozenset[str]:
    """Each camelCase field name and its snake_case twin: the API takes either."""
    return frozenset(names) | {re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), n) for n in names}


class GeminiProvider(HttpAdapter):
    # `generationConfig` adds to the mapped one (`{"generationConfig": {"responseLogprobs": true}}`).
    option_rules = OptionRules(
        _both_cases("contents", "systemInstruction", "tools", "toolConfig") | {"generation_config"},
        {
            "generationConfig": _both_cases(
                "temperature", "topP", "topK", "maxOutputTokens", "stopSequences", "seed",
                "presencePenalty", "frequencyPenalty", "responseMimeType", "responseSchema",
                "responseJsonSchema", "thinkingConfig", "candidateCount", "mediaResolution",
            )
        },
    )  # fmt: skip

    def __init__(self, name: str, config: GeminiProviderConfig, http: aiohttp.ClientSession) -> None:
        api_key = config.api_key.get_secret_value() if config.api_key else ""
        super().__init__(name, http, {"x-goog-api-key": api_key}, (api_key,), config.timeout)
        self._models_url = f"{config.base_url}/{config.api_version}/models/"

    def _url(self, call: UpstreamCall, *, stream: bool) -> str:
        # Quoted whole, so a model name can never reach another path of the API with the key.
        model = quote(call.model.name.removeprefix("models/"), safe="")
        if stream:
            return f"{self._models_url}{model}:streamGenerateContent?alt=sse"
        return f"{self._models_url}{model}:generateContent"

    def _body(self, call: UpstreamCall, *, stream: bool) -> dict[str, Any]:
        return build_body(call)

    def _parse(self, reply: Any) -> Completion:
        return parse_response(reply)

    async def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        ctx = self._context(call)
        decoder = ChunkDecoder()
        async with aclosing(self._sse(call, ctx)) as events:
            with upstream_errors(ctx):
                async for sse in events:
                    for event in decoder.feed(json_codec.loads(sse.data)):
                        yield event
                    if decoder.error is not None:
                        raise self._error_in_stream(ctx, decoder.error)
        if not decoder.finished:
            raise stream_interrupted(ctx)
        yield decoder.done()

    def _error_in_stream(self, ctx: UpstreamContext, error: dict[str, Any]) -> GatewayError:
        """Google's error object: {"code": <HTTP status>, "message", "status": <google.rpc code>}."""
        status, code = error.get("status"), error.get("code")
        server_side = isinstance(code, int) and (code == 429 or code >= 500)
        retryable = status in _RETRYABLE_STREAM_ERRORS or server_side
        return self._stream_error(
            ctx, str(error.get("message") or error), kind=str(status or code or ""), retryable=retryable
        )
