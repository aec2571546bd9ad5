"""Where a call comes from and how long it may take, as the server hands it to the gateway."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CallScope:
    request_id: str
    # time.perf_counter() when the call reached the gateway; latency is measured from it.
    received_at: float | None = None
    # time.monotonic() (the event loop's clock) when the caller stops waiting; None: no deadline.
    deadline: float | None = None
    # The gateway API key's configured name ("" with authentication off), for its rate limit.
    api_key: str = ""
