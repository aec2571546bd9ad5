"""One Redis client per process, every call bounded by `fleet.timeout`. After a failure the
features fall back (or refuse, by their policy) for `fleet.retry_interval` before Redis is tried
again, so a dead Redis costs a replica one timeout per interval, not one per call."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum
from typing import TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from llm_gateway import background
from llm_gateway.config.schema import FleetConfig
from llm_gateway.ledger.url import redacted

_log = logging.getLogger("llm_gateway.fleet")
_CLOSE_WITHIN = 2.0  # seconds a process's shutdown waits for its Redis connections to close
# How often a process reads the state it watches (`RedisState.watch`), in seconds.
POLL = 0.25
T = TypeVar("T")


# Lua: `now`, Redis's own clock in microseconds (replicas' clocks need not agree). Scripts start
# with it.
LUA_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""


class _Down(Enum):
    DOWN = "down"


# What `RedisState.call` returns when Redis could not answer (now, or recently).
DOWN = _Down.DOWN


class RedisState:
    def __init__(self, config: FleetConfig) -> None:
        assert config.redis_url is not None
        url = config.redis_url.get_secret_value()
        self.where = redacted(url)  # for logs: never the password
        self.prefix = config.key_prefix
        # A call waits (within its bound) for one of `max_connections`, rather than failing at once
        # as the default pool does when a burst wants more; no retries inside the client: the
        # bound is the feature's, and a fallback beats a retry.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=config.max_connections,
            timeout=config.timeout,
            socket_timeout=config.timeout,
            socket_connect_timeout=config.timeout,
            retry=Retry(NoBackoff(), 0),
            client_name="llm-gateway",
        )
        self.client: Redis = Redis(connection_pool=pool)
        self._timeout = config.timeout
        self._retry_interval = config.retry_interval
        self._down_until = 0.0
        self._failed_at = 0.0
        self._down = False
        # Since start (metrics read them): calls Redis failed, by feature.
        self.failures: dict[str, int] = {}
        self._watched: list[tuple[list[str], Callable[[int, list[bytes | None]], None]]] = []
        self._poller: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[object]] = set()
        self._closed = False

    async def call(self, feature: str, operation: Callable[[], Awaitable[T]]) -> T | _Down:
        """`operation`'s result, or DOWN when Redis failed it (or failed within the retry interval)."""
        started = time.monotonic()
        if self._down and started < self._down_until:
            return DOWN
        try:
            async with asyncio.timeout(self._timeout):
                result = await operation()
        except (RedisError, OSError, TimeoutError) as error:
            self._failed(feature, error)
            return DOWN
        # Back only once a call begun after the last failure succeeds: one that was already under
        # way when another failed says nothing new (and would make the log flap).
        if self._down and started >= self._failed_at:
            self._down = False
            _log.warning({"event": "fleet_store_recovered", "store": "redis", "url": self.where})
        return result

    @property
    def down(self) -> bool:
        """Whether Redis failed the last call made to it (the background reads make one every POLL
        seconds, so this is never much older than that)."""
        return self._down

    def write_behind(self, feature: str, operation: Callable[[], Awaitable[object]]) -> None:
        """Runs `operation` as `call` does, in the background: what a replica tells the fleet
        (a pause, a failure, a probe's outcome) never holds up the call that learnt it. Nothing
        once the client is closed (a lease's give-back timer may still fire)."""
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self.call(feature, operation))
        self._writes.add(task)  # kept until done: the loop holds tasks only weakly
        task.add_done_callback(self._writes.discard)

    def _failed(self, feature: str, error: BaseException) -> None:
        self.failures[feature] = self.failures.get(feature, 0) + 1
        self._failed_at = time.monotonic()
        self._down_until = self._failed_at + self._retry_interval
        if not self._down:  # once per outage, not per call
            self._down = True
            _log.warning(
                {
                    "event": "fleet_store_unreachable",
                    "store": "redis",
                    "url": self.where,
                    "feature": feature,
                    "error": type(error).__name__,
                    "retry_in_s": self._retry_interval,
                }
            )

    def watch(self, keys: Sequence[str], seen: Callable[[int, list[bytes | None]], None]) -> None:
        """Has `seen(now, values)` called every POLL seconds with the values at `keys` and Redis's
        clock (microseconds): how state other replicas change reaches this one without a Redis
        call on every gateway call."""
        self._watched.append((list(keys), seen))

    def watch_pause(self, key: str, pause: Callable[[float], None]) -> None:
        """Has `pause(seconds)` called whenever the pause at `key` (microseconds on Redis's clock)
        is found in the future."""

        def seen(now: int, values: list[bytes | None]) -> None:
            if values[0] is not None and int(values[0]) > now:
                pause((int(values[0]) - now) / 1_000_000)

        self.watch([key], seen)

    async def start(self, scripts: Sequence[str]) -> None:
        """Warms the client up and starts reading what is watched (`watch`)."""
        await self.warm_up(scripts)
        if self._watched and self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll(), name="fleet-watch")

    async def _poll(self) -> None:
        keys = [key for watched, _ in self._watched for key in watched]

        async def read() -> tuple[int, list[bytes | None]]:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.time()
                pipe.mget(keys)
                (seconds, micros), values = await pipe.execute()
            return int(seconds) * 1_000_000 + int(micros), values

        while True:
            await asyncio.sleep(POLL)
            found = await self.call("watch", read)
            if found is DOWN:
                continue
            now, values = found
            at = 0
            for watched, seen in self._watched:
                try:
                    seen(now, values[at : at + len(watched)])
                except ValueError:  # a value not written by a gateway: skipped, the loop goes on
                    _log.warning({"event": "fleet_state_unreadable", "keys": watched})
                at += len(watched)

    async def warm_up(self, scripts: Sequence[str], connections: int = 8) -> None:
        """Loads `scripts` and opens a few connections before the first calls arrive: a burst on
        a cold client would spend its bound on connecting and on loading the scripts."""

        async def prepare() -> None:
            for source in scripts:
                await self.client.script_load(source)
            await asyncio.gather(*(self.client.ping() for _ in range(connections)))

        await self.call("warm_up", prepare)

    async def close(self) -> None:
        """Stops the background reads, lets the writes under way finish (within one timeout), and
        closes the client."""
        self._closed = True
        poller, self._poller = self._poller, None
        # redis-py can keep a cancelled read waiting on its connection: given up after a while.
        if not await background.stop(poller, within=_CLOSE_WITHIN):
            _log.warning({"event": "fleet_store_close_incomplete", "error": "the state reads did not stop"})
        if self._writes:
            await asyncio.wait(self._writes, timeout=self._timeout)
        # The client was given its pool, so closing it alone would leave the pool's connections
        # open. A Redis that is down or hung must not hold a shutdown up: the close is bounded,
        # and what it leaves is dropped with the process.
        try:
            async with asyncio.timeout(_CLOSE_WITHIN):
                await self.client.aclose(close_connection_pool=True)
        except (TimeoutError, RedisError, OSError) as exc:
            _log.warning({"event": "fleet_store_close_incomplete", "error": type(exc).__name__})
