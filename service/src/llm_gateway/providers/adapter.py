"""The base of every adapter for an HTTP JSON API: where a call goes, how it authenticates, and the
unary exchange. Subclasses give the URL, the body and the reply parser, and decode their own
streams (SSE or NDJSON) with the exchanges in `providers.http`."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import aiohttp

from llm_gateway import json_codec
from llm_gateway.config.schema import TimeoutConfig
from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.domain.results import Completion, StreamEvent
from llm_gateway.providers.base import NO_RULES, OptionRules, UpstreamCall
from llm_gateway.providers.errors import UpstreamContext, upstream_errors
from llm_gateway.providers.http import client_timeout, post_json, post_ndjson, post_sse
from llm_gateway.providers.sse import ServerSentEvent
from llm_gateway.untrusted import Scrubber


def bearer(api_key: str) -> dict[str, str]:
    """The `Authorization` header for a bearer key; none without a key (local servers)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class HttpAdapter:
    option_rules: OptionRules = NO_RULES

    def __init__(
        self,
        name: str,
        http: aiohttp.ClientSession,
        headers: Mapping[str, str],
        secrets: Sequence[str],
        timeout: TimeoutConfig,
        url: str = "",
    ) -> None:
        self.name = name
        self._endpoint = url  # the one URL every call goes to; adapters without one override _url
        self._http = http
        self._headers = {"Content-Type": "application/json", **headers}
        # Every piece of upstream text in an error passes through it (providers/untrusted.py).
        self._scrubber = Scrubber(secrets)
        self._timeout = client_timeout(timeout)

    def _url(self, call: UpstreamCall, *, stream: bool) -> str:
        return self._endpoint

    def _body(self, call: UpstreamCall, *, stream: bool) -> dict[str, Any]:
        raise NotImplementedError

    def _parse(self, reply: Any) -> Completion:
        raise NotImplementedError

    def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        raise NotImplementedError

    def _context(self, call: UpstreamCall) -> UpstreamContext:
        return UpstreamContext(self.name, call.model.id, self._scrubber)

    def _encode(self, call: UpstreamCall, *, stream: bool) -> bytes:
        return json_codec.dumps(self._body(call, stream=stream))

    async def chat(self, call: UpstreamCall) -> Completion:
        ctx = self._context(call)
        content = self._encode(call, stream=False)
        reply = await post_json(
            self._http,
            self._url(call, stream=False),
            content,
            headers=self._headers,
            timeouts=self._timeout,
            ctx=ctx,
        )
        with upstream_errors(ctx):
            return self._parse(reply)

    def _sse(self, call: UpstreamCall, ctx: UpstreamContext) -> AsyncGenerator[ServerSentEvent, None]:
        """The call's stream request; use with `aclosing`."""
        content = self._encode(call, stream=True)
        url = self._url(call, stream=True)
        return post_sse(self._http, url, content, headers=self._headers, timeouts=self._timeout, ctx=ctx)

    def _ndjson(self, call: UpstreamCall, ctx: UpstreamContext) -> AsyncGenerator[Any, None]:
        """The call's stream request, one parsed JSON value per line; use with `aclosing`."""
        content = self._encode(call, stream=True)
        url = self._url(call, stream=True)
        return post_ndjson(self._http, url, content, headers=self._headers, timeouts=self._timeout, ctx=ctx)

    def _stream_error(
        self, ctx: UpstreamContext, message: str, *, kind: str = "", retryable: bool = True
    ) -> GatewayError:
        """An error the provider reported inside a successful (HTTP 200) stream."""
        return ctx.error(
            f"provider {self.name!r} reported an error mid-stream: {message}",
            code=Code.UNAVAILABLE,
            reason="UPSTREAM_STREAM_ERROR",
            retryable=retryable,
            extra={"upstream_code": kind} if kind else None,
        )

    async def aclose(self) -> None:
        return None
