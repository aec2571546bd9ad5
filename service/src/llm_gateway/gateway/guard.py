"""What stands between a call and one provider: its circuit breaker, rate limiter, retry policy and
timeouts, built from the provider's config."""

from __future__ import annotations

import math
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
    # Batches' items pass this too: their share of the provider's limit (None: no limit to share).
    batch_limiter: Limiter | None = None

    @classmethod
    def from_config(
        cls,
        name: str,
        config: ProviderConfig,
        limiter_of: LimiterFactory = local_limiter,
        batch_share: float = 1.0,
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
            batch_limiter=_batch_limiter(name, config.rate_limit, batch_share, limiter_of),
        )


# How long a batch's item waits in line for its share before its batch waits instead.
BATCH_WAIT = 30.0


def _batch_limiter(
    name: str, limits: RateLimitConfig, share: float, limiter_of: LimiterFactory
) -> Limiter | None:
    """Batches' share of a provider's limit, so that interactive calls keep the rest of it."""
    if share >= 1 or not (limits.requests_per_minute or limits.tokens_per_minute):
        return None

    def part(per_minute: int | None) -> int | None:
        return None if per_minute is None else max(1, math.floor(per_minute * share))

    scaled = RateLimitConfig(
        requests_per_minute=part(limits.requests_per_minute),
        tokens_per_minute=part(limits.tokens_per_minute),
        max_wait=BATCH_WAIT,
    )
    refusal = _refusal(
        f"batches' share of provider {name!r}",
        reason="BATCH_RATE_LIMITED",
        metadata={"provider": name},
        retryable=False,
    )
    return limiter_of("batch", name, scaled, refusal)


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
