"""A provider's circuit shared by every replica: failures counted fleet-wide, the circuit opened
for all of them at once, and exactly one probe across the fleet once the reset timeout is over.

Each replica keeps its own breaker (`gateway/breaker.py`) and decides every call on it, as on one
machine, with no Redis call on the way. What it counts it reports to Redis in the background: a
failure increments the fleet's count of consecutive failures (which opens the shared circuit at
the threshold), a success clears a count it knows to be there, a probe's outcome closes or reopens
the shared circuit. Every POLL seconds each replica reads the shared circuit and follows it: open
there, it opens here (health turns NOT_SERVING with it); closed there, it closes here. When a
replica's own breaker goes half-open, the call it would let through as the probe first claims the
fleet's one probe lease; a replica that does not get it answers CIRCUIT_OPEN.

While Redis is unreachable (`fleet.breakers_when_down`): "local" lets every replica's breaker work
on its own, as on one machine; "refuse" fails the provider's calls with UNAVAILABLE /
CIRCUIT_STORE_UNAVAILABLE until Redis is back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.fleet.store import DOWN, LUA_NOW, RedisState

# The longest a probe's lease is held: a replica that dies while probing lets another probe then.
PROBE_LEASE_MS = 60_000

# KEYS: failures, open; ARGV: threshold. Counts a failure; opens the circuit at the threshold.
_FAILED = (
    LUA_NOW
    + """
local n = redis.call('INCR', KEYS[1])
if n >= tonumber(ARGV[1]) and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], string.format('%.0f', now))
end
return n
"""
)

# KEYS: open, probe; ARGV: reset timeout (microseconds), lease (milliseconds).
# 2: the circuit is closed fleet-wide; 1: this replica probes; 0: not this one (or not yet).
_CLAIM = (
    LUA_NOW
    + """
local opened = redis.call('GET', KEYS[1])
if not opened then return 2 end
if now - tonumber(opened) < tonumber(ARGV[1]) then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""
)

# KEYS: failures, open, probe; ARGV: 1 when the probe succeeded, the threshold. Closes the circuit,
# or reopens it from now; a probe sent while the fleet's circuit was closed counts as a failure.
_PROBED = (
    LUA_NOW
    + """
if ARGV[1] == '1' then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return 0
end
redis.call('DEL', KEYS[3])
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('INCR', KEYS[1]) >= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], string.format('%.0f', now))
end
return 0
"""
)

SCRIPTS = (_FAILED, _CLAIM, _PROBED)


class SharedCircuit:
    """One provider's shared circuit, attached to its breaker (`ProviderBreaker.shared`)."""

    def __init__(
        self,
        redis: RedisState,
        provider: str,
        threshold: int,
        reset_timeout: float,
        when_down: Literal["local", "refuse"] = "local",
    ) -> None:
        self._redis = redis
        self._provider = provider
        self._refuse_when_down = when_down == "refuse"
        tag = f"{redis.prefix}:{{breaker:{provider}}}"
        self._failures, self._open, self._probe = f"{tag}:failures", f"{tag}:open", f"{tag}:probe"
        self._threshold = threshold
        self._reset_us = math.ceil(reset_timeout * 1_000_000)
        self._failed = redis.client.register_script(_FAILED)
        self._claim = redis.client.register_script(_CLAIM)
        self._probed = redis.client.register_script(_PROBED)
        self._known_failures = 0  # the fleet's count as last seen: a success clears it if not 0

    def watch(self, follow: Callable[[float | None], None]) -> None:
        """Has `follow(open_for)` called every POLL seconds with how long the shared circuit has
        been open (None: closed)."""

        def seen(now: int, values: list[bytes | None]) -> None:
            opened, failures = values
            self._known_failures = int(failures) if failures is not None else 0
            follow(None if opened is None else max(now - int(opened), 0) / 1_000_000)

        self._redis.watch([self._open, self._failures], seen)

    def failed(self) -> None:
        async def report() -> None:
            counted = await self._failed(keys=[self._failures, self._open], args=[self._threshold])
            self._known_failures = int(counted)

        self._redis.write_behind("breakers", report)

    def succeeded(self) -> None:
        if self._known_failures:
            self._known_failures = 0
            self._redis.write_behind("breakers", lambda: self._redis.client.delete(self._failures))

    def probed(self, ok: bool) -> None:
        self._known_failures = 0 if ok else self._known_failures
        keys = [self._failures, self._open, self._probe]
        args = ["1" if ok else "0", self._threshold]
        self._redis.write_behind("breakers", lambda: self._probed(keys=keys, args=args))

    def check(self) -> None:
        """Raises CIRCUIT_STORE_UNAVAILABLE while Redis is down, if the policy is to refuse."""
        if self._refuse_when_down and self._redis.down:
            raise GatewayError(
                f"provider {self._provider!r}'s circuit is shared through the fleet's Redis, which is "
                'unreachable, and fleet.breakers_when_down is "refuse": the call was not sent',
                code=Code.UNAVAILABLE,
                reason="CIRCUIT_STORE_UNAVAILABLE",
                metadata={"provider": self._provider},
            )

    async def claim_probe(self) -> bool:
        """Whether this replica may send the probe (Redis unreachable: its own breaker decides)."""
        claimed = await self._redis.call(
            "breakers",
            lambda: self._claim(keys=[self._open, self._probe], args=[self._reset_us, PROBE_LEASE_MS]),
        )
        return claimed is DOWN or int(claimed) != 0
