"""Rate limits and Retry-After pauses shared by every replica: one Redis round trip per admission
to a provider (or with a key) that has limits; none for one without, whose pauses other replicas
saw are read in the background every quarter second.

Each bucket is a GCRA (generic cell rate algorithm) cell: one number, the bucket's theoretical
arrival time, on Redis's own clock (so replicas' clocks need not agree). A bucket of N per minute
lets a full minute's worth go at once, then one more every 60/N seconds, as the per-process
leaky buckets do. The script checks the provider's (or key's) shared pause and every bucket, and
takes the call's share of all of them or of none; when there is no room it says how long until
there is, and the call waits in line within the same bound as one process's limiter
(`max_wait`, the caller's deadline) before it is refused with the same RetryInfo.

While Redis is unreachable (`fleet.limits_when_down`): "local" falls back to this process's own
limiter, "refuse" fails the calls a limit or pause covers with UNAVAILABLE /
LIMIT_STORE_UNAVAILABLE. A Retry-After this process saw itself holds either way.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from redis.commands.core import AsyncScript

from llm_gateway.config.schema import RateLimitConfig
from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.fleet.store import DOWN, LUA_NOW, RedisState
from llm_gateway.gateway.limits import MAX_PAUSE, PAUSED, Limiter, LimiterFactory, RateLimiter, Refusal

_MINUTE_US = 60_000_000
_NO_WAIT = 0.001

# KEYS[1]: the pause (microseconds on Redis's clock until which calls are held back);
# KEYS[2..]: the buckets. ARGV: per bucket, microseconds per unit, then the units to take.
# Returns {0, 0} when taken, else {which, microseconds until there is room}: which = 1 for the
# pause, 1 + n for the n-th bucket.
_ADMIT = (
    LUA_NOW
    + """
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
if paused > now then return {1, math.ceil(paused - now)} end
local burst = 60000000
local tats = {}
local which, wait = 0, 0
for i = 2, #KEYS do
  local per_unit = tonumber(ARGV[2 * i - 3])
  local units = tonumber(ARGV[2 * i - 2])
  local tat = math.max(tonumber(redis.call('GET', KEYS[i]) or '0'), now)
  local new_tat = tat + per_unit * units
  local room_in = new_tat - burst - now
  if room_in > wait then which, wait = i, room_in end
  tats[i] = new_tat
end
if which > 0 then return {which, math.ceil(wait)} end
for i = 2, #KEYS do
  local ttl_ms = math.ceil((tats[i] - now) / 1000) + 1
  redis.call('SET', KEYS[i], string.format('%.0f', math.ceil(tats[i])), 'PX', ttl_ms)
end
return {0, 0}
"""
)

# KEYS[1]: the pause; ARGV[1]: its length in microseconds. Only ever lengthens it.
_PAUSE = (
    LUA_NOW
    + """
local until_us = now + tonumber(ARGV[1])
if until_us > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], string.format('%.0f', until_us), 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1)
end
return 0
"""
)


class SharedRateLimiter:
    """A provider's or gateway key's limiter shared through Redis; the same interface as the
    per-process `RateLimiter`, which it keeps for when Redis is down."""

    def __init__(
        self,
        kind: str,
        name: str,
        config: RateLimitConfig,
        refusal: Refusal,
        redis: RedisState,
        when_down: Literal["local", "refuse"],
    ) -> None:
        self._local = RateLimiter(config, refusal)
        self._redis = redis
        self._when_down = when_down
        self._refusal = refusal
        self._max_wait = config.max_wait
        # One hash tag per limiter: its keys stay in one Redis Cluster slot, as a script needs.
        tag = f"{redis.prefix}:{{{kind}:{name}}}"
        self._keys = [f"{tag}:pause"]
        self._buckets: list[tuple[str, int, str]] = []  # (what, per minute, kind of unit)
        for what, per_minute, unit in (
            ("requests per minute", config.requests_per_minute, "requests"),
            ("tokens per minute", config.tokens_per_minute, "tokens"),
        ):
            if per_minute:
                self._keys.append(f"{tag}:{unit}")
                self._buckets.append((what, per_minute, unit))
        if not self._buckets:  # only a shared pause to heed: learnt in the background, not per call
            redis.watch_pause(self._keys[0], self._local.pause)
        self._admit: AsyncScript = redis.client.register_script(_ADMIT)
        self._pause: AsyncScript = redis.client.register_script(_PAUSE)
        self._waits = 0
        self._waited = 0.0
        self._refusals = 0

    # Both ways of limiting counted: shared, and this process's own while Redis is down.
    @property
    def waits(self) -> int:
        return self._waits + self._local.waits

    @property
    def waited(self) -> float:
        return self._waited + self._local.waited

    @property
    def refusals(self) -> int:
        return self._refusals + self._local.refusals

    @property
    def counts_tokens(self) -> bool:
        return self._local.counts_tokens

    def pause(self, seconds: float) -> None:
        """Holds this process's calls back at once and every replica's as soon as Redis has it."""
        self._local.pause(seconds)
        length_us = round(min(seconds, MAX_PAUSE) * 1_000_000)
        self._redis.write_behind("limits", lambda: self._pause(keys=self._keys[:1], args=[length_us]))

    async def acquire(self, tokens: int, deadline: float | None) -> None:
        if not self._buckets:  # the pauses other replicas saw reach the local limiter (watch_pause)
            await self._local.acquire(tokens, deadline)
            return
        start = time.monotonic()
        limit = start + self._max_wait if deadline is None else min(start + self._max_wait, deadline)
        args: list[int | float] = []
        for _, per_minute, unit in self._buckets:
            args += [_MINUTE_US / per_minute, 1 if unit == "requests" else min(tokens, per_minute)]
        while True:
            now = time.monotonic()
            paused = self._local.paused_for(now)
            if paused > 0:  # this process's own Retry-After, whatever Redis says
                await self._wait_or_refuse(now, paused, limit, PAUSED)
                continue
            verdict = await self._redis.call("limits", lambda: self._admit(keys=self._keys, args=args))
            if verdict is DOWN:
                if self._when_down == "refuse":  # (a limiter without buckets never gets here)
                    self._refusals += 1
                    raise _store_unavailable()
                await self._local.acquire(tokens, deadline)
                return
            which, wait_us = int(verdict[0]), int(verdict[1])
            if which == 0:
                break
            what = PAUSED if which == 1 else self._buckets[which - 2][0]
            await self._wait_or_refuse(time.monotonic(), wait_us / 1_000_000, limit, what)
        waited = time.monotonic() - start
        if waited > _NO_WAIT:
            self._waits += 1
            self._waited += waited

    async def _wait_or_refuse(self, now: float, wait: float, limit: float, what: str) -> None:
        if now + wait > limit:
            self._refusals += 1
            raise self._refusal(what, wait)
        await asyncio.sleep(wait)


def _store_unavailable() -> GatewayError:
    return GatewayError(
        "the fleet's shared rate-limit store (Redis) is unreachable and fleet.limits_when_down is "
        '"refuse": the call was not sent',
        code=Code.UNAVAILABLE,
        reason="LIMIT_STORE_UNAVAILABLE",
        retryable=True,
    )


# What a process loads into Redis before its first call (`RedisState.warm_up`).
SCRIPTS = (_ADMIT, _PAUSE)


def shared_limiters(redis: RedisState, when_down: Literal["local", "refuse"]) -> LimiterFactory:
    """Builds every limiter of a process on `redis`."""

    def build(kind: str, name: str, config: RateLimitConfig, refusal: Refusal) -> Limiter:
        return SharedRateLimiter(kind, name, config, refusal, redis, when_down)

    return build
