"""The recent-latency window behind ListModels' live state."""

from __future__ import annotations

import pytest

from llm_gateway.gateway.live import WINDOW_CALLS, WINDOW_SECONDS, LiveLatency


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_medians_per_model_and_kind() -> None:
    clock = Clock()
    live = LiveLatency(clock)
    for seconds in (0.3, 0.1, 0.2, 5.0):
        live.call("p:a", seconds)
    live.first_token("p:a", 0.04)
    live.first_token("p:a", 0.06)
    a = live.of("p:a")
    assert a.latency_p50 == pytest.approx(0.25)  # median of 0.1, 0.2, 0.3, 5.0
    assert a.time_to_first_token_p50 == pytest.approx(0.05)
    assert a.recent_calls == 6
    b = live.of("p:b")
    assert (b.latency_p50, b.time_to_first_token_p50, b.recent_calls) == (None, None, 0)


def test_old_calls_leave_the_window() -> None:
    clock = Clock()
    live = LiveLatency(clock)
    live.call("p:a", 9.0)
    clock.now += WINDOW_SECONDS / 2
    live.call("p:a", 1.0)
    assert live.of("p:a").recent_calls == 2
    clock.now += WINDOW_SECONDS / 2 + 1
    recent = live.of("p:a")
    assert (recent.latency_p50, recent.recent_calls) == (1.0, 1)
    clock.now += WINDOW_SECONDS
    assert live.of("p:a").latency_p50 is None


def test_the_window_keeps_only_the_latest_calls() -> None:
    live = LiveLatency(Clock())
    for _ in range(WINDOW_CALLS):
        live.call("p:a", 10.0)
    for _ in range(WINDOW_CALLS):
        live.call("p:a", 1.0)
    latest = live.of("p:a")
    assert (latest.latency_p50, latest.recent_calls) == (1.0, WINDOW_CALLS)
