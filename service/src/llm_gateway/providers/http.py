"""The one pooled HTTP client every adapter shares, and per-attempt upstream timing.

aiohttp, not httpx: on this workload (many concurrent calls over kept-alive connections to a few
hosts) httpx spends about 2.4 ms of CPU per upstream call and aiohttp about 0.2 ms; see
bench/NOTES.md for the side-by-side figures that made the choice.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass

import aiohttp

from llm_gateway.config.schema import TimeoutConfig


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


def create_http_client() -> aiohttp.ClientSession:
    """Connection limits are raised well past aiohttp's defaults (100): a gateway multiplexes many
    concurrent calls and long streams onto few upstream hosts. Timeouts are set per request by each
    adapter (`client_timeout`). Must be called with the event loop running."""
    connector = aiohttp.TCPConnector(limit=4000, limit_per_host=0, keepalive_timeout=30)
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
