"""Observed latency per model over a recent window, for ListModels' live state: an observer of
finished calls (`record.py`)."""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llm_gateway.gateway.record import CallRecord

# The window: calls of the last five minutes, at most the last 256 of each kind per model.
WINDOW_SECONDS = 300.0
WINDOW_CALLS = 256


@dataclass(frozen=True, slots=True)
class ModelLatency:
    latency_p50: float | None  # seconds, unary calls
    time_to_first_token_p50: float | None  # seconds, streams
    recent_calls: int


class _Window:
    __slots__ = ("_samples",)

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque(maxlen=WINDOW_CALLS)  # (when, seconds)

    def add(self, now: float, seconds: float) -> None:
        self._samples.append((now, seconds))

    def recent(self, now: float) -> list[float]:
        while self._samples and self._samples[0][0] < now - WINDOW_SECONDS:
            self._samples.popleft()
        return [seconds for _, seconds in self._samples]


class LiveLatency:
    """Successful upstream latencies per model id: whole unary calls, and streams' time to their
    first token (a stream's full length says more about its output than about the model)."""

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, listed: Callable[[str], bool] = lambda _: True
    ) -> None:
        self._clock = clock
        self._listed = listed  # the models to keep (the catalog's: unlisted ones are unbounded)
        self._calls: dict[str, _Window] = {}
        self._first_tokens: dict[str, _Window] = {}

    def call_ended(self, record: CallRecord) -> None:
        """Keeps the serving attempt's latency of a call a model served: a unary call's whole
        attempt, a stream's time to its first event (not a provider batch's item: its latency is
        the provider's queue)."""
        if record.status != "OK" or record.dry_run or record.deferred or not record.attempts:
            return
        served = record.attempts[-1]
        if served.code != "OK" or not self._listed(served.model):
            return
        if record.streamed:
            if served.first_token is not None:
                self.first_token(served.model, served.first_token)
        else:
            self.call(served.model, served.latency)

    def call(self, model_id: str, seconds: float) -> None:
        self._calls.setdefault(model_id, _Window()).add(self._clock(), seconds)

    def first_token(self, model_id: str, seconds: float) -> None:
        self._first_tokens.setdefault(model_id, _Window()).add(self._clock(), seconds)

    def of(self, model_id: str) -> ModelLatency:
        now = self._clock()
        calls = self._recent(self._calls, model_id, now)
        firsts = self._recent(self._first_tokens, model_id, now)
        return ModelLatency(
            statistics.median(calls) if calls else None,
            statistics.median(firsts) if firsts else None,
            len(calls) + len(firsts),
        )

    @staticmethod
    def _recent(windows: dict[str, _Window], model_id: str, now: float) -> list[float]:
        window = windows.get(model_id)
        return window.recent(now) if window is not None else []
