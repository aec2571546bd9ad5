"""State shared by a fleet of replicas on Redis (docs/deployment.md): rate limits, the pauses a
provider's Retry-After asks for, and circuit breakers. Without `fleet.redis_url`, nothing here is
used."""

from llm_gateway.fleet import breaker, limits
from llm_gateway.fleet.breaker import SharedCircuit
from llm_gateway.fleet.limits import SharedRateLimiter, shared_limiters
from llm_gateway.fleet.store import DOWN, RedisState

# What a process loads into Redis before its first call (`RedisState.start`).
SCRIPTS = limits.SCRIPTS + breaker.SCRIPTS

__all__ = ["DOWN", "SCRIPTS", "RedisState", "SharedCircuit", "SharedRateLimiter", "shared_limiters"]
