"""Where a call comes from and how long it may take, as a front door hands it to the gateway."""

from __future__ import annotations

from dataclasses import dataclass

from llm_gateway.gateway.record import ANONYMOUS, CallTracker, Principal


@dataclass(frozen=True, slots=True)
class CallScope:
    request_id: str
    # time.perf_counter() when the call reached the gateway; latency is measured from it.
    received_at: float | None = None
    # time.monotonic() (the event loop's clock) when the caller stops waiting; None: no deadline.
    deadline: float | None = None
    # Who is calling: the gateway key's name and role (anonymous with authentication off).
    principal: Principal = ANONYMOUS
    # The call's record, opened by the front door (which ends it with what the caller got); None
    # when the gateway is called directly, which then keeps the record itself.
    call: CallTracker | None = None
    # A batch's item: it also waits for the batches' share of its provider's rate limit.
    batch: bool = False
