"""The gRPC front door on a runtime (`llm_gateway.runtime`): gateway service, health, reflection,
and the call pipeline."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from llm_gateway.catalog import Catalog
from llm_gateway.config.schema import GatewayConfig
from llm_gateway.edge import Drain, KeyCheck
from llm_gateway.providers import Provider
from llm_gateway.runtime import Runtime, build_runtime
from llm_gateway.server.batches import BatchServicer
from llm_gateway.server.budgets import BudgetServicer
from llm_gateway.server.health import CircuitHealth
from llm_gateway.server.interceptors import (
    AuthStep,
    CallStep,
    DrainStep,
    Pipeline,
    RequestIdStep,
    Step,
)
from llm_gateway.server.memory import return_large_buffers
from llm_gateway.server.reflection import enable_reflection
from llm_gateway.server.servicer import GatewayServicer
from llm_gateway.server.usage import UsageServicer
from llm_gateway.web.server import HttpDoor, MetricsDoor
from llmgateway.v1 import (
    batch_service_pb2,
    batch_service_pb2_grpc,
    budget_service_pb2,
    budget_service_pb2_grpc,
    gateway_service_pb2,
    gateway_service_pb2_grpc,
    usage_service_pb2,
    usage_service_pb2_grpc,
)

SERVICE_NAME = gateway_service_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name
USAGE_SERVICE_NAME = usage_service_pb2.DESCRIPTOR.services_by_name["UsageService"].full_name
BUDGET_SERVICE_NAME = budget_service_pb2.DESCRIPTOR.services_by_name["BudgetService"].full_name
BATCH_SERVICE_NAME = batch_service_pb2.DESCRIPTOR.services_by_name["BatchService"].full_name
_log = logging.getLogger("llm_gateway.server")


@dataclass
class GatewayServer:
    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    circuits: CircuitHealth
    drain: Drain
    runtime: Runtime
    owns_runtime: bool  # built for this server alone, so closed with it
    http: HttpDoor | None = None  # the HTTP door on its own port, started and drained with this
    reuse_port: bool = False  # worker processes share the ports
    metrics: MetricsDoor | None = None  # `GET /metrics` apart, when `metrics.port` is set

    @property
    def providers(self) -> dict[str, Provider]:
        return self.runtime.providers

    @property
    def catalog(self) -> Catalog:
        return self.runtime.catalog

    def reload_prices(self) -> None:
        """Re-reads the price file (SIGHUP). Calls in flight keep the prices they looked up; an
        unusable file keeps the old prices. The catalog logs the outcome."""
        self.catalog.reload_prices()

    async def start(self, http_host: str | None = None, http_port: int | None = None) -> None:
        if self.owns_runtime:
            await self.runtime.start()
        await self.server.start()
        await self.circuits.start()
        if self.http is not None:
            http = self.runtime.config.http
            await self.http.start(
                http.host if http_host is None else http_host,
                http.port if http_port is None else http_port,
                reuse_port=self.reuse_port,
            )
        if self.metrics is not None:
            config = self.runtime.config.metrics
            assert config.port is not None
            await self.metrics.start(config.host, config.port, reuse_port=self.reuse_port)

    async def stop(self, grace: float | None) -> None:
        """Drains: health turns NOT_SERVING, new gateway calls are refused (UNAVAILABLE,
        SHUTTING_DOWN), in-flight calls and streams get up to `grace` seconds to finish (None: no
        limit), then whatever is left (health watches, overdue calls) is cancelled and upstream
        connections close. Shutdown does not wait for health watchers, which never end."""
        await self.health.enter_graceful_shutdown()
        self.drain.start_draining()
        try:
            async with asyncio.timeout(grace):
                await self.drain.idle()
        except TimeoutError:
            # Cut off with a status of their own (GRACE_PERIOD_EXPIRED), given a moment to send it.
            cut = self.drain.cut_off()
            _log.warning({"event": "drain_timeout", "cancelled_calls": cut})
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.drain.idle()
        await self.server.stop(0)
        if self.http is not None:
            await self.http.stop()
        if self.metrics is not None:
            await self.metrics.stop()
        if self.owns_runtime:
            await self.runtime.aclose()


async def create_server(
    config: GatewayConfig,
    *,
    host: str | None = None,
    port: int | None = None,
    reuse_port: bool = False,
    runtime: Runtime | None = None,
) -> GatewayServer:
    """A bound, not yet started gRPC door on `runtime` (built from `config` when not given, and then
    closed with the server). Port 0 binds a free port (see `GatewayServer.port`). `reuse_port`
    lets several worker processes bind the same port (see `llm_gateway.workers`)."""
    return_large_buffers()
    owned = runtime is None
    runtime = build_runtime(config) if runtime is None else runtime
    gateway = runtime.gateway

    drain = runtime.drain
    steps: list[Step] = [RequestIdStep(), CallStep(gateway, runtime.principals.of), DrainStep(drain)]
    if runtime.principals.enabled:
        steps.append(AuthStep(KeyCheck(runtime.principals.digests)))

    limit = config.server.max_message_bytes
    server = grpc.aio.server(
        interceptors=[Pipeline(steps)],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            # Refuse to share a port by accident; worker processes opt in explicitly.
            ("grpc.so_reuseport", int(reuse_port)),
            # Calls that arrived faster than the server picks them up wait in gRPC's own queue. Its
            # default drops them at random past 1,000 and all past 3,000, as CANCELLED, before the
            # gateway sees them: a burst of stream opens lost hundreds that way. One explicit
            # bound instead, past which calls are refused (docs/errors.md).
            ("grpc.server.max_pending_requests", config.server.max_pending_calls),
            ("grpc.server.max_pending_requests_hard_limit", config.server.max_pending_calls),
        ],
    )
    gateway_service_pb2_grpc.add_GatewayServiceServicer_to_server(
        GatewayServicer(gateway, list(config.providers), limit), server
    )
    ledger = runtime.ledger
    usage_service_pb2_grpc.add_UsageServiceServicer_to_server(
        UsageServicer(
            ledger.queries if ledger is not None else None,
            lambda principal: gateway.list_models(principal=principal),
        ),
        server,
    )
    budget_service_pb2_grpc.add_BudgetServiceServicer_to_server(BudgetServicer(runtime.budgets), server)
    batch_service_pb2_grpc.add_BatchServiceServicer_to_server(
        BatchServicer(runtime.batch_book, list(config.providers)), server
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    enable_reflection(
        server,
        [
            SERVICE_NAME,
            USAGE_SERVICE_NAME,
            BUDGET_SERVICE_NAME,
            BATCH_SERVICE_NAME,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        ],
    )

    host = config.server.host if host is None else host
    port = config.server.port if port is None else port
    bound = server.add_insecure_port(f"{host}:{port}")
    circuits = CircuitHealth(health, gateway.breakers, ["", SERVICE_NAME])
    door = HttpDoor(runtime) if config.http.enabled else None
    apart = None
    if runtime.metrics is not None and config.metrics.port is not None:
        apart = MetricsDoor(runtime.metrics)
    return GatewayServer(server, bound, health, circuits, drain, runtime, owned, door, reuse_port, apart)
