"""Rate limits: requests and tokens per minute with a bounded wait in line, for each provider and
each gateway key, and the pause a provider's 429 Retry-After asks for.

The buckets are aiolimiter's leaky buckets: a full minute's worth may go at once, then capacity
drips back at the configured rate. A call waits in line up to `max_wait`, never past the caller's
deadline; still without room then, it is refused with RESOURCE_EXHAUSTED and a RetryInfo: a caller
(or the gateway's next candidate) does better elsewhere than in a long queue. A pause the provider
asked for that outlasts the bound is refused at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from aiolimiter import AsyncLimiter

from llm_gateway.config.schema import RateLimitConfig
from llm_gateway.domain.errors import GatewayError

# The longest a provider's Retry-After pauses it: a wrong header must not take it out for hours.
MAX_PAUSE = 60.0
_MINUTE = 60.0
# What a call held back by a provider's Retry-After is refused for.
PAUSED = "paused by the provider's Retry-After"
# Less than this in line is not a wait (the bucket's own bookkeeping).
_NO_WAIT = 0.001

# Builds the refusal: (what is limited, seconds after which a retry may pass).
Refusal = Callable[[str, float], GatewayError]


class Limiter(Protocol):
    """A provider's or gateway key's rate limiter: this process's own (`RateLimiter`), or one
    shared by a fleet of replicas (`llm_gateway.fleet.SharedRateLimiter`)."""

    # Since start (metrics read them): calls that waited for room, their seconds, refusals.
    @property
    def waits(self) -> int: ...

    @property
    def waited(self) -> float: ...

    @property
    def refusals(self) -> int: ...

    @property
    def counts_tokens(self) -> bool: ...

    def pause(self, seconds: float) -> None: ...

    def has_room(self) -> bool:
        """Whether a call would be admitted now without waiting (as far as this process knows,
        without asking any store): a balancer's hint, not a reservation."""
        ...

    async def acquire(self, tokens: int, deadline: float | None) -> None: ...


# Builds a limiter: (kind, name, its limits, its refusal).
LimiterFactory = Callable[[str, str, RateLimitConfig, Refusal], Limiter]


def local_limiter(kind: str, name: str, config: RateLimitConfig, refusal: Refusal) -> Limiter:
    """This process's own limiter (kind and name matter only to a shared one, which keys on them)."""
    return RateLimiter(config, refusal)


class RateLimiter:
    def __init__(self, config: RateLimitConfig, refusal: Refusal) -> None:
        rpm, tpm = config.requests_per_minute, config.tokens_per_minute
        self._requests = AsyncLimiter(rpm, _MINUTE) if rpm else None
        self._tokens = AsyncLimiter(tpm, _MINUTE) if tpm else None
        self._max_wait = config.max_wait
        self._refusal = refusal
        self._paused_until = 0.0  # time.monotonic(), the event loop's clock
        # Since start (metrics read them): calls that waited for room, their seconds, refusals.
        self.waits = 0
        self.waited = 0.0
        self.refusals = 0

    @property
    def counts_tokens(self) -> bool:
        """Whether `acquire` needs the call's token estimate."""
        return self._tokens is not None

    def paused_for(self, now: float) -> float:
        """Seconds from `now` (time.monotonic()) until a Retry-After pause ends; <= 0: none."""
        return self._paused_until - now

    def pause(self, seconds: float) -> None:
        """Holds every call back for `seconds` (at most MAX_PAUSE), as a provider's 429 asked."""
        until = time.monotonic() + min(seconds, MAX_PAUSE)
        self._paused_until = max(self._paused_until, until)

    def has_room(self) -> bool:
        if self._paused_until > time.monotonic():
            return False
        return all(bucket is None or bucket.has_capacity(1) for bucket in (self._requests, self._tokens))

    async def acquire(self, tokens: int, deadline: float | None) -> None:
        """Waits for one request and `tokens` tokens of capacity (a call larger than a minute's
        tokens takes all of them), or raises the refusal when that would take longer than
        `max_wait` or pass `deadline` (time.monotonic())."""
        now = time.monotonic()
        limit = now + self._max_wait if deadline is None else min(now + self._max_wait, deadline)
        paused = self._paused_until - now
        if paused <= 0 and self._requests is None and self._tokens is None:
            return  # no limit, no pause: nothing to wait for
        if paused > 0:
            if now + paused > limit:
                self.refusals += 1
                raise self._refusal(PAUSED, paused)
            await asyncio.sleep(paused)
        for bucket, amount, what in (
            (self._requests, 1.0, "requests per minute"),
            (self._tokens, float(tokens), "tokens per minute"),
        ):
            if bucket is None:
                continue
            amount = min(amount, bucket.max_rate)
            if bucket.has_capacity(amount):
                await bucket.acquire(amount)  # at once
                continue
            try:
                async with asyncio.timeout_at(limit):
                    await bucket.acquire(amount)
            except TimeoutError:
                self.refusals += 1
                # Roughly when that much capacity will have dripped back.
                raise self._refusal(what, amount * _MINUTE / bucket.max_rate) from None
        waited = time.monotonic() - now
        if waited > _NO_WAIT:
            self.waits += 1
            self.waited += waited
