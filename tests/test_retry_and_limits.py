"""The retry policy and the rate limiter on their own: backoff with full jitter, Retry-After and the
deadline; waiting in line, refusing past the wait bound, and pausing on a provider's Retry-After."""

from __future__ import annotations

import random
import time

import pytest

from llm_gateway.config.schema import RateLimitConfig, RetryConfig
from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.gateway.limits import MAX_PAUSE, RateLimiter
from llm_gateway.gateway.retry import RetryPolicy

CONFIG = RetryConfig(max_retries=3, initial_backoff=0.5, max_backoff=2.0, max_retry_after=10.0)


def upstream(reason: str, retry_after: float | None = None) -> GatewayError:
    return GatewayError(
        "failed", code=Code.UNAVAILABLE, reason=reason, retry_after=retry_after, retryable=True
    )


def test_backoff_is_exponential_with_full_jitter() -> None:
    policy = RetryPolicy(CONFIG, random.Random(7))
    err = upstream("UPSTREAM_UNAVAILABLE")
    for retries_done, ceiling in [(0, 0.5), (1, 1.0), (2, 2.0)]:
        delays = [policy.delay(retries_done, err, None) for _ in range(2000)]
        values = [d for d in delays if d is not None]
        assert len(values) == 2000
        assert 0 <= min(values) < ceiling * 0.01
        assert ceiling * 0.99 < max(values) <= ceiling
        assert abs(sum(values) / len(values) - ceiling / 2) < ceiling * 0.05  # uniform: mean at half
    assert policy.delay(3, err, None) is None  # max_retries spent


def test_retry_after_is_honoured_up_to_its_cap_and_never_past_the_deadline() -> None:
    policy = RetryPolicy(CONFIG, random.Random(7))
    assert policy.delay(0, upstream("UPSTREAM_RATE_LIMITED", 3.0), None) == 3.0
    assert policy.delay(0, upstream("UPSTREAM_RATE_LIMITED", 10.5), None) is None  # over the cap
    assert policy.delay(0, upstream("UPSTREAM_RATE_LIMITED", 3.0), time_left=2.9) is None
    assert policy.delay(0, upstream("UPSTREAM_RATE_LIMITED", 3.0), time_left=3.5) == 3.0
    delay = policy.delay(0, upstream("UPSTREAM_TIMEOUT"), time_left=0.01)
    assert delay is None or delay < 0.01


@pytest.mark.parametrize("reason", ["CIRCUIT_OPEN", "PROVIDER_RATE_LIMITED", "UPSTREAM_INVALID_REQUEST"])
def test_failures_a_retry_cannot_help_move_on(reason: str) -> None:
    assert RetryPolicy(CONFIG).delay(0, upstream(reason), None) is None


def refusal(what: str, retry_after: float) -> GatewayError:
    return GatewayError(what, code=Code.RESOURCE_EXHAUSTED, reason="LIMITED", retry_after=retry_after)


async def test_a_call_waits_for_capacity_within_the_bound() -> None:
    limiter = RateLimiter(RateLimitConfig(requests_per_minute=600, max_wait=1.0), refusal)  # 1 per 0.1 s
    for _ in range(600):
        await limiter.acquire(0, None)
    started = time.perf_counter()
    await limiter.acquire(0, None)
    assert 0.08 <= time.perf_counter() - started < 0.3


async def test_past_the_bound_or_the_deadline_it_is_refused_with_when_to_retry() -> None:
    limiter = RateLimiter(RateLimitConfig(tokens_per_minute=6000, max_wait=0.05), refusal)
    await limiter.acquire(6000, None)
    started = time.perf_counter()
    with pytest.raises(GatewayError) as caught:
        await limiter.acquire(1000, None)
    assert 0.04 <= time.perf_counter() - started < 0.3
    assert caught.value.message == "tokens per minute"
    assert caught.value.retry_after == pytest.approx(10.0)  # 1000 tokens drip back in 10 s

    patient = RateLimiter(RateLimitConfig(requests_per_minute=1, max_wait=60), refusal)
    await patient.acquire(0, None)
    started = time.perf_counter()
    with pytest.raises(GatewayError):
        await patient.acquire(0, deadline=time.monotonic() + 0.05)
    assert time.perf_counter() - started < 0.3


async def test_a_call_larger_than_a_minute_takes_the_whole_bucket() -> None:
    limiter = RateLimiter(RateLimitConfig(tokens_per_minute=100, max_wait=0), refusal)
    await limiter.acquire(5000, None)
    with pytest.raises(GatewayError):
        await limiter.acquire(1, None)


async def test_a_pause_holds_calls_back_or_refuses_them_at_once() -> None:
    limiter = RateLimiter(RateLimitConfig(max_wait=0.5), refusal)  # no buckets: only the pause
    limiter.pause(0.2)
    started = time.perf_counter()
    await limiter.acquire(0, None)
    assert 0.19 <= time.perf_counter() - started < 0.4

    limiter.pause(2.0)
    started = time.perf_counter()
    with pytest.raises(GatewayError) as caught:
        await limiter.acquire(0, None)
    assert time.perf_counter() - started < 0.05
    assert caught.value.retry_after is not None
    assert 1.9 < caught.value.retry_after <= 2.0

    limiter.pause(3600)  # a provider's wrong header cannot take it out for an hour
    with pytest.raises(GatewayError) as caught:
        await limiter.acquire(0, None)
    assert caught.value.retry_after is not None
    assert caught.value.retry_after <= MAX_PAUSE
