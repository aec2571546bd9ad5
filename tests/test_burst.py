"""A burst of calls larger than the server picks up at once: every call waits its turn up to
`server.max_pending_calls`, and past that bound is refused by gRPC before the gateway sees it (the
behaviour docs/errors.md describes), instead of gRPC's default of dropping calls at random past
1,000 waiting."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import grpc

from llmgateway.v1 import chat_pb2, gateway_service_pb2_grpc
from tests.conftest import chat, gateway_process


async def burst(address: str, count: int) -> collections.Counter[str]:
    """Opens `count` short streams at once, each read to its end; their final codes."""
    channel = grpc.aio.insecure_channel(address)
    stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
    request = chat_pb2.ChatStreamRequest(request=chat("mock:echo", "one two"))

    async def one() -> str:
        try:
            events = [event async for event in stub.ChatStream(request, timeout=60)]
        except grpc.aio.AioRpcError as err:
            return err.code().name
        assert events[-1].HasField("finish")
        return "OK"

    try:
        return collections.Counter(await asyncio.gather(*(one() for _ in range(count))))
    finally:
        await channel.close(None)


async def test_a_burst_of_5000_stream_opens_is_served_whole(tmp_path: Path) -> None:
    async with gateway_process(tmp_path, "[providers.mock]\nchunk_delay = 0.05\n") as gw:
        outcomes = await burst(gw.address, 5000)
        serving = next(line for line in gw.log_lines() if line.get("event") == "serving")
    print(f"\n5,000 stream opens at once: {dict(outcomes)}")
    assert outcomes == {"OK": 5000}
    assert serving["max_pending_calls"] == 20_000


async def test_past_max_pending_calls_a_burst_is_refused_before_the_gateway(tmp_path: Path) -> None:
    toml = "[server]\nmax_pending_calls = 50\n[providers.mock]\nchunk_delay = 0.05\n"
    async with gateway_process(tmp_path, toml) as gw:
        outcomes = await burst(gw.address, 3000)
        logged = await gw.access_lines(outcomes["OK"])
    print(f"\n3,000 stream opens at once, max_pending_calls = 50: {dict(outcomes)}")
    refused = outcomes["CANCELLED"] + outcomes["RESOURCE_EXHAUSTED"]
    assert refused > 0
    assert outcomes["OK"] + refused == 3000
    assert len(logged) == outcomes["OK"]  # the refused never reached the gateway
