"""Builds the gRPC server from configuration: gateway service, health, reflection, interceptors."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]

from llm_gateway.catalog import Catalog
from llm_gateway.config.schema import ApiKeyConfig, GatewayConfig
from llm_gateway.gateway import Gateway
from llm_gateway.gateway.guard import ProviderGuard, key_limiter
from llm_gateway.providers import Provider, build_providers, enabled_providers
from llm_gateway.providers.http import create_http_client
from llm_gateway.router import Router
from llm_gateway.server.health import CircuitHealth
from llm_gateway.server.interceptors import (
    AccessLogStep,
    AuthStep,
    DrainStep,
    Pipeline,
    RequestIdStep,
    Step,
)
from llm_gateway.server.memory import return_large_buffers
from llm_gateway.server.reflection import enable_reflection
from llm_gateway.server.servicer import GatewayServicer
from llmgateway.v1 import gateway_service_pb2, gateway_service_pb2_grpc

SERVICE_NAME = gateway_service_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name
_log = logging.getLogger("llm_gateway.server")


@dataclass
class GatewayServer:
    server: grpc.aio.Server
    port: int
    health: health_aio.HealthServicer
    circuits: CircuitHealth
    drain: DrainStep
    http: aiohttp.ClientSession
    providers: dict[str, Provider]
    catalog: Catalog

    def reload_prices(self) -> None:
        """Re-reads the price file (SIGHUP). Calls in flight keep the prices they looked up; an
        unusable file keeps the old prices. The catalog logs the outcome."""
        self.catalog.reload_prices()

    async def start(self) -> None:
        await self.server.start()
        await self.circuits.start()

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
        for provider in self.providers.values():
            await provider.aclose()
        await self.http.close()


def key_digests(keys: Sequence[ApiKeyConfig]) -> dict[bytes, str]:
    """Digest -> key name. Plaintext keys are hashed here and not kept."""
    digests = {}
    for key in keys:
        if key.sha256 is not None:
            digests[bytes.fromhex(key.sha256)] = key.name
        elif key.key is not None:
            digests[hashlib.sha256(key.key.get_secret_value().encode()).digest()] = key.name
    return digests


async def create_server(
    config: GatewayConfig, *, host: str | None = None, port: int | None = None, reuse_port: bool = False
) -> GatewayServer:
    """A bound, not yet started server. Port 0 binds a free port (see `GatewayServer.port`).
    `reuse_port` lets several worker processes bind the same port (see `llm_gateway.workers`)."""
    return_large_buffers()
    enabled = enabled_providers(config)
    http = create_http_client()
    providers = build_providers(enabled, http)
    catalog = Catalog(config, enabled)
    router = Router(catalog, config.aliases, config.routing.auto, list(config.providers))
    guards = {name: ProviderGuard.from_config(name, p) for name, p in enabled.items()}
    key_limiters = {k.name: key_limiter(k.name, k.rate_limit) for k in config.auth.keys if k.rate_limit}
    gateway = Gateway(router, catalog, providers, guards, key_limiters)

    drain = DrainStep()
    steps: list[Step] = [RequestIdStep()]
    if config.logging.access_log:
        steps.append(AccessLogStep(logging.getLogger("llm_gateway.access")))
    steps.append(drain)
    digests = key_digests(config.auth.keys)
    if digests:
        steps.append(AuthStep(digests))
    else:
        _log.warning("authentication is off: no API keys are configured (auth.keys)")

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
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    enable_reflection(server, [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name])

    host = config.server.host if host is None else host
    port = config.server.port if port is None else port
    bound = server.add_insecure_port(f"{host}:{port}")
    circuits = CircuitHealth(health, gateway.breakers, ["", SERVICE_NAME])
    return GatewayServer(server, bound, health, circuits, drain, http, providers, catalog)
