"""What stands between a call and one provider: its circuit breaker, rate limiter, retry policy and
timeouts, built from the provider's config."""

from __future__ import annotations

from dataclasses import dataclass

from llm_gateway.config.schema import ProviderConfig, RateLimitConfig, TimeoutConfig
from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.gateway.breaker import ProviderBreaker
from llm_gateway.gateway.limits import RateLimiter
from llm_gateway.gateway.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class ProviderGuard:
    breaker: ProviderBreaker
    limiter: RateLimiter
    retry: RetryPolicy
    timeouts: TimeoutConfig

    @classmethod
    def from_config(cls, name: str, config: ProviderConfig) -> ProviderGuard:
        def refusal(what: str, retry_after: float) -> GatewayError:
            return GatewayError(
                f"provider {name!r} is at its rate limit ({what}); the call would wait too long",
                code=Code.RESOURCE_EXHAUSTED,
                reason="PROVIDER_RATE_LIMITED",
                metadata={"provider": name},
                retry_after=retry_after,
                retryable=True,  # another candidate may have room
            )

        breaker = config.circuit_breaker
        return cls(
            breaker=ProviderBreaker(name, breaker.failure_threshold, breaker.reset_timeout),
            limiter=RateLimiter(config.rate_limit, refusal),
            retry=RetryPolicy(config.retry),
            timeouts=config.timeout,
        )


def key_limiter(key_name: str, config: RateLimitConfig) -> RateLimiter:
    """The limiter of one gateway API key; its refusal is final (another model would not help)."""

    def refusal(what: str, retry_after: float) -> GatewayError:
        return GatewayError(
            f"gateway key {key_name!r} is over its rate limit ({what})",
            code=Code.RESOURCE_EXHAUSTED,
            reason="KEY_RATE_LIMITED",
            metadata={"api_key": key_name},
            retry_after=retry_after,
        )

    return RateLimiter(config, refusal)
