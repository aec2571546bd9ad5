"""Load balancing across a model group's deployments (docs/routing.md), and the calls in flight
per model it reads.

Each call orders the group's deployments afresh; the first is tried first, the others follow when
it fails or has no room. A deployment whose circuit is open, or whose rate limit has no room right
now, goes after those that can take the call. The policies:

- weighted: a random order in which each deployment comes first in proportion to its weight
  (Efraimidis and Spirakis' weighted sampling without replacement: key u^(1/w), largest first);
- least_busy: fewest calls in flight in this process first, ties in random order;
- latency: two deployments drawn at random, the one with the lower recent latency first (power of
  two choices: it avoids herding every call onto the single fastest one); one without recent
  latency counts as fastest, so it gets measured. The others follow by latency.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence

from llm_gateway.config.schema import ModelGroupConfig
from llm_gateway.gateway.strategy import Considered
from llm_gateway.router import Route


class InFlight:
    """Calls in flight per model id in this process: each call counts on the model it is trying
    now, from when the balancer picks it (or its attempt begins) until the call ends."""

    __slots__ = ("_by_call", "_counts")

    def __init__(self) -> None:
        self._by_call: dict[str, str] = {}
        self._counts: dict[str, int] = {}

    def enter(self, call_id: str, model_id: str) -> None:
        """The call is on `model_id` now (moved from the model it was on, if any)."""
        previous = self._by_call.get(call_id)
        if previous == model_id:
            return
        if previous is not None:
            self._drop(previous)
        self._by_call[call_id] = model_id
        self._counts[model_id] = self._counts.get(model_id, 0) + 1

    def leave(self, call_id: str) -> None:
        """The call has ended."""
        model_id = self._by_call.pop(call_id, None)
        if model_id is not None:
            self._drop(model_id)

    def of(self, model_id: str) -> int:
        return self._counts.get(model_id, 0)

    def _drop(self, model_id: str) -> None:
        left = self._counts[model_id] - 1
        if left:
            self._counts[model_id] = left
        else:
            del self._counts[model_id]


class Balancer:
    """Orders a group's deployments for one call by the group's policy."""

    def __init__(
        self,
        in_flight: InFlight,
        latency: Callable[[str, bool], float | None],
        unready: Callable[[str], str],
        rng: random.Random | None = None,
    ) -> None:
        self._in_flight = in_flight
        self._latency = latency  # (model id, stream) -> recent latency in seconds, or None
        self._unready = unready  # model id -> why it cannot take a call now, or ""
        self._rng = rng or random.Random()

    def order(
        self, group: ModelGroupConfig, routes: Sequence[Route], stream: bool
    ) -> tuple[list[Route], list[Considered]]:
        """`routes` (the group's deployments, then any other candidates, which keep their order)
        with the deployments in the order to try them, and what was seen of each, in that order."""
        weights = {d.model: d.weight for d in group.deployments}
        head = [r for r in routes if r.reason == "group" and r.spec.id in weights]
        seen = [
            Considered(
                r.spec.id,
                passed_over=self._unready(r.spec.id),
                latency=self._latency(r.spec.id, stream),
                in_flight=self._in_flight.of(r.spec.id),
                weight=weights[r.spec.id],
            )
            for r in head
        ]
        scores = self._scores(group.policy, seen)
        ranked = sorted(zip(head, seen, scores, strict=True), key=lambda x: (x[1].passed_over != "", x[2]))
        order = [route for route, _, _ in ranked]
        shown = [dataclasses.replace(view, score=score) for _, view, score in ranked]
        return order + [r for r in routes if r not in head], shown

    def _scores(self, policy: str, seen: Sequence[Considered]) -> list[float]:
        rng = self._rng
        if policy == "weighted":
            # -u^(1/w): the lowest score (largest key) comes first with probability w / sum(w).
            return [-(rng.random() ** (1.0 / view.weight)) if view.weight else 1.0 for view in seen]
        if policy == "least_busy":
            # Calls in flight, a random fraction below 1 breaking ties.
            return [(view.in_flight or 0) + rng.random() for view in seen]
        # latency: unknown counts as 0 (measure it); the faster of two random draws goes first.
        scores = [view.latency or 0.0 for view in seen]
        ready = [i for i, view in enumerate(seen) if not view.passed_over]
        if len(ready) >= 2:
            a, b = rng.sample(ready, 2)
            scores[a if scores[a] <= scores[b] else b] = -1.0
        return scores
