"""What a call does with the response cache: its mode and TTL (the call's, else the config's), its
key, and the lookups and stores, counted for the metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

from llm_gateway.cache.entry import CachedReply
from llm_gateway.cache.key import call_key
from llm_gateway.cache.stores import ReplyCache
from llm_gateway.config.schema import CacheConfig
from llm_gateway.domain.errors import FieldViolation, invalid_request
from llm_gateway.domain.messages import CacheMode, ChatRequest
from llm_gateway.domain.principal import Principal

_log = logging.getLogger("llm_gateway.cache")


@dataclass(frozen=True, slots=True)
class CacheUse:
    """How one call uses the cache."""

    key: str
    reads: bool
    writes: bool
    ttl: float


class ResponseCache:
    def __init__(self, config: CacheConfig, store: ReplyCache) -> None:
        self.config = config
        self.store = store
        self._default = CacheMode(config.mode)
        # Since start (metrics read them).
        self.hits = self.misses = self.stored = 0
        self.saved = Decimal(0)

    def use(self, request: ChatRequest, models: Sequence[str], principal: Principal) -> CacheUse | None:
        """How `request` uses the cache, or None when it does not; INVALID_ARGUMENT for a TTL over
        `cache.max_ttl`."""
        options = request.cache
        mode = self._default if options is None or options.mode is None else options.mode
        ttl = self.config.ttl if options is None or options.ttl is None else options.ttl
        if ttl > self.config.max_ttl:
            raise invalid_request(
                [FieldViolation("cache.ttl", f"must be at most cache.max_ttl ({self.config.max_ttl:g} s)")]
            )
        if mode is CacheMode.OFF or request.dry_run:
            return None
        key = None if self.config.share_across_keys else principal.key
        return CacheUse(
            call_key(request, models, request.caller.tenant, key),
            reads=mode in (CacheMode.ON, CacheMode.READ_ONLY),
            writes=mode in (CacheMode.ON, CacheMode.WRITE_ONLY),
            ttl=ttl,
        )

    async def lookup(self, use: CacheUse) -> CachedReply | None:
        data = await self.store.get(use.key)
        if data is not None:
            try:
                return CachedReply.loads(data)
            except (ValueError, KeyError, TypeError, IndexError):
                _log.warning({"event": "cache_entry_unreadable", "key": use.key[:16]})
        self.misses += 1
        return None

    def hit(self, saved: Decimal) -> None:
        self.hits += 1
        self.saved += saved

    async def keep(self, use: CacheUse, reply: CachedReply) -> None:
        data = replace(reply, stored_at=time.time()).dumps()
        if len(data) > self.config.max_entry_bytes:
            return
        await self.store.put(use.key, data, use.ttl)
        self.stored += 1
