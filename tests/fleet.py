"""Several gateway processes started from one configuration, as the replicas of a fleet."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from llmgateway.v1 import gateway_service_pb2_grpc
from tests.conftest import GatewayProcess, gateway_process


@dataclass
class Fleet:
    """Three gateway processes started from one configuration, and a gRPC stub for each."""

    gateways: list[GatewayProcess]
    stubs: list[gateway_service_pb2_grpc.GatewayServiceAsyncStub]


@asynccontextmanager
async def three_gateways(tmp_path: Path, toml: str) -> AsyncIterator[Fleet]:
    for name in "abc":
        (tmp_path / name).mkdir()
    async with (
        gateway_process(tmp_path / "a", toml) as a,
        gateway_process(tmp_path / "b", toml) as b,
        gateway_process(tmp_path / "c", toml) as c,
    ):
        channels = [grpc.aio.insecure_channel(g.address) for g in (a, b, c)]
        try:
            yield Fleet([a, b, c], [gateway_service_pb2_grpc.GatewayServiceStub(ch) for ch in channels])
        finally:
            for channel in channels:
                await channel.close(None)
