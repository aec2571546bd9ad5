"""State shared by a fleet of replicas on Redis (docs/deployment.md): rate limits and the pauses a
provider's Retry-After asks for. Without `fleet.redis_url`, nothing here is used."""

from llm_gateway.fleet.limits import SCRIPTS, SharedRateLimiter, shared_limiters
from llm_gateway.fleet.store import DOWN, RedisState

__all__ = ["DOWN", "SCRIPTS", "RedisState", "SharedRateLimiter", "shared_limiters"]
