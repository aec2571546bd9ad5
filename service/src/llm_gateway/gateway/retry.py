"""When to try the same model again: retryable upstream failures, exponential backoff with full
jitter, a provider's Retry-After honoured up to a cap, and never past the caller's deadline."""

from __future__ import annotations

import random

from llm_gateway.config.schema import RetryConfig
from llm_gateway.domain.errors import GatewayError

# Failures the same model may get over. The others that are retryable (the circuit open, the
# gateway's own rate limit) move on to the next candidate at once: retrying would meet them again.
RETRIED_REASONS = frozenset(
    {
        "UPSTREAM_UNAVAILABLE",
        "UPSTREAM_TIMEOUT",
        "UPSTREAM_BAD_RESPONSE",
        "UPSTREAM_STREAM_ERROR",
        "UPSTREAM_STREAM_INTERRUPTED",
        "UPSTREAM_RATE_LIMITED",
    }
)


# Replies that say "busy, try later" rather than "this request fails": retried even when identical.
_OVERLOADED = frozenset({"502", "503", "504", "529"})


def same_answer(err: GatewayError, previous: GatewayError | None) -> bool:
    """Whether the provider answered this attempt exactly as the same call's previous one, with a
    reply that is about the request rather than about being busy (an HTTP 500, a malformed
    body, an error event): the request, not bad luck, is failing, and a retry would meet it
    again. No answer (a connection failure, a timeout, a cut stream) and overload answers (502,
    503, 504, 529, 429) are never the same answer."""
    if previous is None or err.reason != previous.reason or err.message != previous.message:
        return False
    if err.reason in ("UPSTREAM_BAD_RESPONSE", "UPSTREAM_STREAM_ERROR"):
        return True
    status = err.metadata.get("upstream_status")
    return (
        err.reason == "UPSTREAM_UNAVAILABLE"
        and status is not None
        and status == previous.metadata.get("upstream_status")
        and status not in _OVERLOADED
    )


class RetryPolicy:
    def __init__(self, config: RetryConfig, rng: random.Random | None = None) -> None:
        self._config = config
        self._random = rng or random.Random()

    def delay(
        self,
        retries_done: int,
        err: GatewayError,
        time_left: float | None,
        previous: GatewayError | None = None,
    ) -> float | None:
        """Seconds to wait before retrying after `err`, or None to move on: not a failure a retry
        can help, the same answer as the previous attempt (`previous`, see `same_answer`), the
        retries spent, a Retry-After over the cap, or no time left before the caller's deadline
        (`time_left` seconds; None: no deadline)."""
        config = self._config
        if err.reason not in RETRIED_REASONS or retries_done >= config.max_retries:
            return None
        if same_answer(err, previous):
            return None
        if err.retry_after is not None:
            if err.retry_after > config.max_retry_after:
                return None
            wait = err.retry_after
        else:
            ceiling = min(config.max_backoff, config.initial_backoff * 2**retries_done)
            wait = self._random.uniform(0, ceiling)
        if time_left is not None and wait >= time_left:
            return None
        return wait
