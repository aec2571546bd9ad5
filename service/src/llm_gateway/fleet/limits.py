"""Rate limits and Retry-After pauses shared by every replica.

Each bucket is a GCRA (generic cell rate algorithm) cell: one number, the bucket's theoretical
arrival time, on Redis's own clock (so replicas' clocks need not agree). A bucket of N per minute
lets a full minute's worth go at once, then one more every 60/N seconds, as the per-process
leaky buckets do. The script checks the provider's (or key's) shared pause and every bucket, and
takes the call's share of all of them or of none; when there is no room it says how long until
there is, and the call waits in line within the same bound as one process's limiter
(`max_wait`, the caller's deadline) before it is refused with the same RetryInfo.

A Redis call costs a Python process about 0.15 ms of CPU, so a busy replica takes a little more than
its call needs (a lease): as much as it admitted in the last LEASE seconds, at most LEASE_SHARE of
the limit, and admits the next calls from it without a round trip. What it has not used after
LEASE seconds it gives back to the bucket. The fleet never admits more than the limit: a lease
comes out of the shared bucket. A replica with little traffic, or a limit under 200 a minute,
takes exactly what each call needs. Pauses other replicas saw are read in the background every
POLL seconds.

While Redis is unreachable (`fleet.limits_when_down`): "local" falls back to this process's own
limiter, "refuse" fails the calls a limit or pause covers with UNAVAILABLE /
LIMIT_STORE_UNAVAILABLE. A Retry-After this process saw itself holds either way.
"""

from __future__ import annotations

import asyncio
import math
import time
from functools import partial
from typing import Literal

from redis.commands.core import AsyncScript

from llm_gateway.config.schema import RateLimitConfig
from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.fleet.store import DOWN, LUA_NOW, RedisState
from llm_gateway.gateway.limits import MAX_PAUSE, PAUSED, Limiter, LimiterFactory, RateLimiter, Refusal

_MINUTE_US = 60_000_000
_NO_WAIT = 0.001
# How long a replica keeps units it took ahead of its calls before it gives them back, in seconds;
# and the most of a limit one replica may hold ahead.
LEASE = 0.25
LEASE_SHARE = 0.01

# KEYS[1]: the pause (microseconds on Redis's clock until which calls are held back);
# KEYS[2..]: the buckets. ARGV: per bucket, microseconds per unit, the units the call needs, and
# the units wanted (as many as there is room for, at least those needed). Returns {0, 0, taken
# per bucket...} when taken, else {which, microseconds until the needed units fit}: which = 1 for
# the pause, 1 + n for the n-th bucket.
_ADMIT = (
    LUA_NOW
    + """
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
if paused > now then return {1, math.ceil(paused - now)} end
local burst = 60000000
local tats, taken = {}, {0, 0}
local which, wait = 0, 0
for i = 2, #KEYS do
  local per_unit = tonumber(ARGV[3 * i - 5])
  local need = tonumber(ARGV[3 * i - 4])
  local want = tonumber(ARGV[3 * i - 3])
  local tat = math.max(tonumber(redis.call('GET', KEYS[i]) or '0'), now)
  local room_in = tat + per_unit * need - burst - now
  if room_in > wait then which, wait = i, room_in end
  local units = math.max(need, math.min(want, math.floor((now + burst - tat) / per_unit)))
  tats[i] = tat + per_unit * units
  taken[i + 1] = units
end
if which > 0 then return {which, math.ceil(wait)} end
for i = 2, #KEYS do
  local ttl_ms = math.ceil((tats[i] - now) / 1000) + 1
  redis.call('SET', KEYS[i], string.format('%.0f', math.ceil(tats[i])), 'PX', ttl_ms)
end
return taken
"""
)

# KEYS: the buckets; ARGV: per bucket, microseconds per unit and the units given back. Makes room
# for what a replica took ahead and did not use (never earlier than now).
_GIVE_BACK = (
    LUA_NOW
    + """
for i = 1, #KEYS do
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  local back = tonumber(ARGV[2 * i - 1]) * tonumber(ARGV[2 * i])
  if tat > now and back > 0 then
    local new_tat = math.max(tat - back, now)
    local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
    redis.call('SET', KEYS[i], string.format('%.0f', math.ceil(new_tat)), 'PX', ttl_ms)
  end
end
return 0
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
        # Pauses other replicas saw reach the local limiter in the background: a call admitted
        # from a lease, or to a provider without buckets, heeds them without a Redis call.
        redis.watch_pause(self._keys[0], self._local.pause)
        self._per_unit = [_MINUTE_US / per_minute for _, per_minute, _ in self._buckets]
        self._most = [math.floor(per_minute * LEASE_SHARE) for _, per_minute, _ in self._buckets]
        # The lease: units taken ahead and not used yet, until when they may be, and what this
        # process admitted since it last asked Redis (for the next lease's size).
        self._left = [0] * len(self._buckets)
        self._lease_until = 0.0
        self._used = [0] * len(self._buckets)
        self._since = time.monotonic()
        self._leasing = False  # a call is asking for units ahead: the others ask for their own only
        self._expiry: asyncio.TimerHandle | None = None
        self._full_until = 0.0  # when Redis last said a bucket would have room again
        self._admit: AsyncScript = redis.client.register_script(_ADMIT)
        self._pause: AsyncScript = redis.client.register_script(_PAUSE)
        self._give_back: AsyncScript = redis.client.register_script(_GIVE_BACK)
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

    def has_room(self) -> bool:
        now = time.monotonic()
        return self._local.paused_for(now) <= 0 and now >= self._full_until

    async def acquire(self, tokens: int, deadline: float | None) -> None:
        if not self._buckets:  # the pauses other replicas saw reach the local limiter (watch_pause)
            await self._local.acquire(tokens, deadline)
            return
        start = time.monotonic()
        limit = start + self._max_wait if deadline is None else min(start + self._max_wait, deadline)
        need = [1 if unit == "requests" else min(tokens, per_minute) for _, per_minute, unit in self._buckets]
        while True:
            now = time.monotonic()
            paused = self._local.paused_for(now)
            if paused > 0:  # a Retry-After this process (or, read in the background, another) saw
                await self._wait_or_refuse(now, paused, limit, PAUSED)
                continue
            if self._from_lease(need, now):
                break
            want = self._lease_size(need, now) if not self._leasing else need
            leasing = want != need
            self._leasing |= leasing
            args: list[float] = []
            for per_unit, needed, wanted in zip(self._per_unit, need, want, strict=True):
                args += [per_unit, needed, wanted]
            try:
                verdict = await self._redis.call("limits", partial(self._admit, keys=self._keys, args=args))
            finally:
                self._leasing &= not leasing
            if verdict is DOWN:
                if self._when_down == "refuse":  # (a limiter without buckets never gets here)
                    self._refusals += 1
                    raise _store_unavailable()
                await self._local.acquire(tokens, deadline)
                return
            which, wait_us = int(verdict[0]), int(verdict[1])
            if which == 0:
                self._lease(need, [int(units) for units in verdict[2:]])
                break
            if self._from_lease(need, time.monotonic()):  # another call's lease came meanwhile
                break
            what = PAUSED if which == 1 else self._buckets[which - 2][0]
            self._full_until = time.monotonic() + wait_us / 1_000_000
            await self._wait_or_refuse(time.monotonic(), wait_us / 1_000_000, limit, what)
        for i, units in enumerate(need):
            self._used[i] += units
        waited = time.monotonic() - start
        if waited > _NO_WAIT:
            self._waits += 1
            self._waited += waited

    def _from_lease(self, need: list[int], now: float) -> bool:
        """Takes the call's units from what this process took ahead, if they are there."""
        if now >= self._lease_until:
            if any(self._left):
                self._give_back_left()
            return False
        if any(left < units for left, units in zip(self._left, need, strict=True)):
            return False
        for i, units in enumerate(need):
            self._left[i] -= units
        return True

    def _lease_size(self, need: list[int], now: float) -> list[int]:
        """What to ask for: the call's units, and as many more as this process admitted in the
        last LEASE seconds (at its recent pace), within LEASE_SHARE of each limit."""
        elapsed = max(now - self._since, 1e-3)
        used, self._used, self._since = self._used, [0] * len(self._used), now
        return [
            max(units, min(most, units + math.ceil(count * LEASE / elapsed)))
            for units, most, count in zip(need, self._most, used, strict=True)
        ]

    def _lease(self, need: list[int], taken: list[int]) -> None:
        extra = [got - units for got, units in zip(taken, need, strict=True)]
        if any(extra):
            self._left = [left + more for left, more in zip(self._left, extra, strict=True)]
            self._lease_until = time.monotonic() + LEASE
            if self._expiry is None:
                self._expiry = asyncio.get_running_loop().call_later(LEASE, self._expire)

    def _expire(self) -> None:
        """Gives back what is left of the lease once it is over, even if no call comes."""
        remaining = self._lease_until - time.monotonic()
        if remaining > 0:
            self._expiry = asyncio.get_running_loop().call_later(remaining, self._expire)
            return
        self._expiry = None
        if any(self._left):
            self._give_back_left()

    def _give_back_left(self) -> None:
        args: list[float] = []
        for per_unit, left in zip(self._per_unit, self._left, strict=True):
            args += [per_unit, left]
        self._left = [0] * len(self._left)
        keys = self._keys[1:]
        self._redis.write_behind("limits", lambda: self._give_back(keys=keys, args=args))

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
SCRIPTS = (_ADMIT, _PAUSE, _GIVE_BACK)


def shared_limiters(redis: RedisState, when_down: Literal["local", "refuse"]) -> LimiterFactory:
    """Builds every limiter of a process on `redis`."""

    def build(kind: str, name: str, config: RateLimitConfig, refusal: Refusal) -> Limiter:
        return SharedRateLimiter(kind, name, config, refusal, redis, when_down)

    return build
