"""The one pooled HTTP client every adapter shares, the exchanges adapters make with it, and
per-attempt upstream timing.

aiohttp, not httpx: on this workload (many concurrent calls over kept-alive connections to a few
hosts) httpx spends about 2.4 ms of CPU per upstream call and aiohttp about 0.2 ms; see
bench/NOTES.md for the side-by-side figures that made the choice.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.typedefs import StrOrURL
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from llm_gateway import json_codec
from llm_gateway.config.schema import TimeoutConfig
from llm_gateway.providers.errors import (
    UpstreamContext,
    bad_response,
    http_error,
    stream_body_errors,
    upstream_errors,
)
from llm_gateway.providers.sse import ServerSentEvent, SSEDecoder


@dataclass(slots=True)
class UpstreamTiming:
    """Filled in while one upstream attempt runs; read by the gateway afterwards."""

    first_byte: float | None = None  # time.perf_counter() when response headers arrived


current_timing: ContextVar[UpstreamTiming | None] = ContextVar("upstream_timing", default=None)


def mark_first_byte() -> None:
    """Adapters call this as soon as an upstream reply's headers have arrived."""
    timing = current_timing.get()
    if timing is not None and timing.first_byte is None:
        timing.first_byte = time.perf_counter()


_PROPAGATOR = TraceContextTextMapPropagator()


def traced(headers: Mapping[str, str]) -> Mapping[str, str]:
    """`headers` with the W3C `traceparent` of the current span (the attempt's, when tracing is
    on), so the provider's side of the call joins the caller's trace; as they are otherwise."""
    if not trace.get_current_span().get_span_context().is_valid:
        return headers
    carrier = dict(headers)
    _PROPAGATOR.inject(carrier)
    return carrier


def create_http_client() -> aiohttp.ClientSession:
    """No cap on connections (aiohttp's default is 100): a call in flight holds at most one
    upstream connection, so the calls in flight bound them already, and a cap would make open
    streams past it wait for others to end (the open-file limit is the real bound). Timeouts are
    set per request by each adapter (`client_timeout`). Must be called with the event loop running."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        headers={"User-Agent": "llm-gateway"},
        # Upstream JSON is parsed by the adapters; cookies are never wanted.
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def client_timeout(t: TimeoutConfig) -> aiohttp.ClientTimeout:
    """`connect` covers waiting for a pooled connection and opening one; `read` is the longest
    silence between two reads. The caller's deadline bounds the whole call from outside."""
    return aiohttp.ClientTimeout(
        total=None, connect=t.pool + t.connect, sock_connect=t.connect, sock_read=t.read
    )


async def post_json(
    http: aiohttp.ClientSession,
    url: StrOrURL,
    content: bytes,
    *,
    headers: Mapping[str, str],
    timeouts: aiohttp.ClientTimeout,
    ctx: UpstreamContext,
) -> Any:
    """POSTs a JSON body and returns the parsed JSON reply; HTTP and transport failures and an
    unparseable body become gateway errors."""
    with upstream_errors(ctx):
        async with http.post(url, data=content, headers=traced(headers), timeout=timeouts) as response:
            mark_first_byte()
            body = await response.read()
            if response.status >= 400:
                raise http_error(ctx, response.status, body, response.headers)
        return json_codec.loads(body)


async def get_bytes(
    http: aiohttp.ClientSession,
    url: StrOrURL,
    *,
    headers: Mapping[str, str],
    timeouts: aiohttp.ClientTimeout,
    ctx: UpstreamContext,
) -> bytes:
    """GETs a resource (a batch's state, a results file) and returns its body; HTTP and transport
    failures become gateway errors."""
    with upstream_errors(ctx):
        async with http.get(url, headers=traced(headers), timeout=timeouts) as response:
            body = await response.read()
            if response.status >= 400:
                raise http_error(ctx, response.status, body, response.headers)
            return body


async def get_json(
    http: aiohttp.ClientSession,
    url: StrOrURL,
    *,
    headers: Mapping[str, str],
    timeouts: aiohttp.ClientTimeout,
    ctx: UpstreamContext,
) -> Any:
    """GETs a JSON resource and returns it parsed; an unparseable body is a bad response."""
    body = await get_bytes(http, url, headers=headers, timeouts=timeouts, ctx=ctx)
    with upstream_errors(ctx):
        return json_codec.loads(body)


async def post_sse(
    http: aiohttp.ClientSession,
    url: StrOrURL,
    content: bytes,
    *,
    headers: Mapping[str, str],
    timeouts: aiohttp.ClientTimeout,
    ctx: UpstreamContext,
) -> AsyncGenerator[ServerSentEvent, None]:
    """POSTs a JSON body and yields the reply's server-sent events as they arrive. Closing the
    generator early (the caller stopped or was cancelled) closes the upstream connection."""
    with upstream_errors(ctx):
        async with http.post(url, data=content, headers=traced(headers), timeout=timeouts) as response:
            mark_first_byte()
            if response.status >= 400:
                raise http_error(ctx, response.status, await response.read(), response.headers)
            if response.content_type != "text/event-stream":
                raise bad_response(ctx, f"not an event stream (content type {response.content_type!r})")
            events = SSEDecoder()
            with stream_body_errors(ctx):
                async for chunk in response.content.iter_any():
                    for sse in events.feed(chunk):
                        yield sse


async def post_bytes(
    http: aiohttp.ClientSession,
    url: StrOrURL,
    content: bytes,
    *,
    headers: Mapping[str, str],
    timeouts: aiohttp.ClientTimeout,
    ctx: UpstreamContext,
) -> AsyncGenerator[bytes, None]:
    """POSTs a JSON body and yields the reply's bytes as they arrive, for a binary stream (AWS's
    event-stream framing); closing the generator early closes the upstream connection."""
    with upstream_errors(ctx):
        async with http.post(url, data=content, headers=traced(headers), timeout=timeouts) as response:
            mark_first_byte()
            if response.status >= 400:
                raise http_error(ctx, response.status, await response.read(), response.headers)
            with stream_body_errors(ctx):
                async for chunk in response.content.iter_any():
                    yield chunk


async def post_ndjson(
    http: aiohttp.ClientSession,
    url: StrOrURL,
    content: bytes,
    *,
    headers: Mapping[str, str],
    timeouts: aiohttp.ClientTimeout,
    ctx: UpstreamContext,
) -> AsyncGenerator[Any, None]:
    """POSTs a JSON body and yields each line of a newline-delimited JSON reply, parsed, as it
    arrives (Ollama's streams). Blank lines are skipped; a line that is not JSON is a bad response."""
    with upstream_errors(ctx):
        async with http.post(url, data=content, headers=traced(headers), timeout=timeouts) as response:
            mark_first_byte()
            if response.status >= 400:
                raise http_error(ctx, response.status, await response.read(), response.headers)
            pending = b""
            with stream_body_errors(ctx):
                async for chunk in response.content.iter_any():
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield json_codec.loads(line)
            if pending.strip():
                yield json_codec.loads(pending)
