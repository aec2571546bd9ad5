"""The one pooled HTTP client every adapter shares, and per-attempt upstream timing."""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass

import httpx


@dataclass(slots=True)
class UpstreamTiming:
    """Filled in while one upstream attempt runs; read by the gateway afterwards."""

    first_byte: float | None = None  # time.perf_counter() when response headers arrived


current_timing: ContextVar[UpstreamTiming | None] = ContextVar("upstream_timing", default=None)


async def _on_response(response: httpx.Response) -> None:
    timing = current_timing.get()
    if timing is not None and timing.first_byte is None:
        timing.first_byte = time.perf_counter()


def create_http_client() -> httpx.AsyncClient:
    """Connection limits are raised well past httpx's defaults: a gateway multiplexes many
    concurrent calls onto few upstream hosts. Timeouts are set per request by each adapter."""
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=2000, max_keepalive_connections=500, keepalive_expiry=30),
        timeout=None,
        follow_redirects=False,
        event_hooks={"response": [_on_response]},
    )
