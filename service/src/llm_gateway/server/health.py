"""The standard health service mirrors the providers' circuits.

Each enabled provider has its own health service name, `llmgateway.v1.provider.<name>`: SERVING
unless its circuit is open. The overall status ("" and the gateway service) stays SERVING while at
least one provider can serve, and turns NOT_SERVING only when every circuit is open. A circuit's
reset timeout is an event too: once it passes, a probe may go through, so the provider is shown
SERVING again (a readiness check that kept an instance out of rotation would otherwise never let a
probe reach it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from llm_gateway.gateway.breaker import ProviderBreaker

PROVIDER_SERVICE_PREFIX = "llmgateway.v1.provider."
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class CircuitHealth:
    def __init__(
        self, health: health_aio.HealthServicer, breakers: Mapping[str, ProviderBreaker], overall: list[str]
    ) -> None:
        self._health = health
        self._breakers = dict(breakers)
        self._overall = overall
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        for breaker in self._breakers.values():
            breaker.on_change = self._changed
        await self.publish()

    async def publish(self) -> None:
        any_available = not self._breakers
        for name, breaker in self._breakers.items():
            available = breaker.available
            any_available = any_available or available
            await self._health.set(PROVIDER_SERVICE_PREFIX + name, _SERVING if available else _NOT_SERVING)
        for service in self._overall:
            await self._health.set(service, _SERVING if any_available else _NOT_SERVING)

    def _changed(self, breaker: ProviderBreaker) -> None:
        loop = asyncio.get_running_loop()
        self._spawn()
        # Past the reset timeout a probe may go through: show it, though nothing else changes then.
        # Scheduled on every change (a spare republish is harmless): pybreaker calls listeners
        # before it stores the new state, so the breaker cannot be asked whether it just opened.
        loop.call_later(breaker.reset_timeout, self._spawn)

    def _spawn(self) -> None:
        task = asyncio.get_running_loop().create_task(self.publish())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
