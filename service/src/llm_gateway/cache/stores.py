"""Where replies are kept: this process's memory (an LRU bounded by bytes), or Redis, shared by
every replica. A store that fails is a miss, never a failed call."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol

from llm_gateway.fleet.store import DOWN, RedisState


class ReplyCache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float) -> None: ...


class MemoryCache:
    """Least recently used entries go first once `max_bytes` (values and keys) would be passed."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        value, expires = found
        if time.monotonic() >= expires:
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        size = len(value) + len(key)
        if size > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        while self.bytes + size > self.max_bytes:
            self._drop(next(iter(self._entries)))
        self._entries[key] = (value, time.monotonic() + ttl)
        self.bytes += size

    def _drop(self, key: str) -> None:
        value, _ = self._entries.pop(key)
        self.bytes -= len(value) + len(key)


class RedisCache:
    """Entries under `<key_prefix>:cache:<key>`, expiring in Redis; bounded by Redis's own memory
    policy (set `maxmemory-policy allkeys-lru` on a Redis that holds the cache)."""

    def __init__(self, redis: RedisState) -> None:
        self._redis = redis
        self._prefix = f"{redis.prefix}:cache:"

    async def get(self, key: str) -> bytes | None:
        found = await self._redis.call("cache", lambda: self._redis.client.get(self._prefix + key))
        if found is DOWN or found is None:
            return None
        return found if isinstance(found, bytes) else found.encode()

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        milliseconds = max(1, round(ttl * 1000))
        self._redis.write_behind(
            "cache", lambda: self._redis.client.set(self._prefix + key, value, px=milliseconds)
        )
