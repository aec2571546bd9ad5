"""What stands between a call and one provider: its circuit breaker, rate limiter, retry policy and
timeouts, built from the provider's config."""

from __future__ import annotations

from dataclasses import dataclass

from llm_gateway.config.schema import ProviderConfig, RateLimitConfig, TimeoutConfig
from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.gateway.breaker import ProviderBreaker
from llm_gateway.gateway.limits import Limiter, LimiterFactory, Refusal, local_limiter
from llm_gateway.gateway.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class ProviderGuard:
    breaker: ProviderBreaker
    limiter: Limiter
    retry: RetryPolicy
    timeouts: TimeoutConfig

    @classmethod
    def from_config(
        cls, name: str, config: ProviderConfig, limiter_of: LimiterFactory = local_limiter
    ) -> ProviderGuard:
        # Retryable: another candidate may have room.
        refusal = _refusal(
            f"provider {name!r}", reason="PROVIDER_RATE_LIMITED", metadata={"provider": name}, retryable=True
        )
        breaker = config.circuit_breaker
        return cls(
            breaker=ProviderBreaker(
                name, breaker.failure_threshold, breaker.reset_timeout, caller_window=breaker.caller_window
            ),
            limiter=limiter_of("provider", name, config.rate_limit, refusal),
            retry=RetryPolicy(config.retry),
            timeouts=config.timeout,
        )


def key_limiter(
    key_name: str, config: RateLimitConfig, limiter_of: LimiterFactory = local_limiter
) -> Limiter:
    """The limiter of one gateway API key; its refusal is final (another model would not help)."""
    refusal = _refusal(
        f"gateway key {key_name!r}",
        reason="KEY_RATE_LIMITED",
        metadata={"api_key": key_name},
        retryable=False,
    )
    return limiter_of("key", key_name, config, refusal)


def _refusal(subject: str, *, reason: str, metadata: dict[str, str], retryable: bool) -> Refusal:
    def refuse(what: str, retry_after: float) -> GatewayError:
        return GatewayError(
            f"{subject} is at its rate limit ({what}): no room for the call within the wait allowed",
            code=Code.RESOURCE_EXHAUSTED,
            reason=reason,
            metadata=metadata,
            retry_after=retry_after,
            retryable=retryable,
        )

    return refuse
