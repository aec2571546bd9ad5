"""The response cache: exact repeats of a call answered without the provider (docs/cache.md)."""

from llm_gateway.cache.entry import CachedReply
from llm_gateway.cache.key import call_key
from llm_gateway.cache.policy import CacheUse, ResponseCache
from llm_gateway.cache.stores import MemoryCache, RedisCache, ReplyCache

__all__ = ["CacheUse", "CachedReply", "MemoryCache", "RedisCache", "ReplyCache", "ResponseCache", "call_key"]
