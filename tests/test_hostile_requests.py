"""Large and hostile requests against the real `llm-gateway serve` process: a caller without a key
cannot make the gateway decode (or keep) a big body, and an authenticated one of a million tiny
messages is refused from its shape without stalling the other calls on the worker. Figures are
printed (`pytest -s`); the bounds asserted are generous: they separate a refusal from a parse of
the whole body (seconds, hundreds of megabytes), not one fast run from a slower one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

import grpc
import pytest

from llmgateway.v1 import chat_pb2, content_pb2, gateway_service_pb2_grpc
from tests.conftest import GatewayProcess, chat, error_details, gateway_process, violated_fields

KEY = "hostile-test-key-0123456789"
AUTH = (("authorization", f"Bearer {KEY}"),)
TOML = f"""
[[auth.keys]]
name = "tester"
key = "{KEY}"
"""
CHAT = "/llmgateway.v1.GatewayService/Chat"
STREAM = "/llmgateway.v1.GatewayService/ChatStream"


def many_messages(count: int, nested: bool = False) -> bytes:
    """A ChatRequest of `count` one-letter user messages, serialized without building them."""
    one = chat_pb2.ChatRequest(
        model="mock:echo",
        messages=[content_pb2.Message(role=content_pb2.ROLE_USER, content=[content_pb2.Part(text="a")])],
    ).SerializeToString()
    head = chat_pb2.ChatRequest(model="mock:echo").SerializeToString()
    body = head + one[len(head) :] * count
    if nested:  # ChatStreamRequest.request (field 1, length-delimited)
        return b"\x0a" + _varint(len(body)) + body
    return body


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


async def drain(stream: AsyncIterable[object]) -> None:
    async for _ in stream:
        pass


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[GatewayProcess, grpc.aio.Channel]]:
    async with gateway_process(tmp_path, TOML) as gw:
        channel = grpc.aio.insecure_channel(gw.address, options=[("grpc.max_send_message_length", 64 << 20)])
        try:
            yield gw, channel
        finally:
            await channel.close(None)


async def test_an_unauthenticated_large_body_is_refused_unread_and_memory_stays_flat(
    served: tuple[GatewayProcess, grpc.aio.Channel],
) -> None:
    gw, channel = served
    call = channel.unary_unary(CHAT, None, None)
    body = many_messages(1_600_000)  # about 15 MB
    assert len(body) > 14_000_000

    async def refused() -> float:
        started = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(body, timeout=30)
        assert error_details(caught.value).info.reason == "MISSING_API_KEY"
        return time.perf_counter() - started

    for _ in range(5):  # the allocator's and the transport's buffers settle
        await refused()
    await asyncio.sleep(0.2)
    before = rss_mb(gw.process.pid)
    took = [await refused() for _ in range(20)]
    await asyncio.sleep(0.2)
    after = rss_mb(gw.process.pid)
    print(f"\n20 unauthenticated 15 MB bodies: RSS {before:.1f} -> {after:.1f} MB, slowest {max(took):.3f} s")
    # Decoding each body held about 175 MB more, every time; without giving freed buffers back,
    # 20 to 40 MB stayed over the 20.
    assert after - before < 10


async def test_a_million_messages_are_refused_from_the_shape_while_other_calls_are_served(
    served: tuple[GatewayProcess, grpc.aio.Channel],
) -> None:
    _, channel = served
    stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
    unary = channel.unary_unary(CHAT, None, None)
    stream = channel.unary_stream(STREAM, None, None)
    latencies: list[float] = []
    stop = asyncio.Event()

    async def others() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            reply = await stub.Chat(chat("mock:echo", "still here"), metadata=AUTH, timeout=30)
            latencies.append(time.perf_counter() - started)
            assert reply.message.content[0].text == "still here"
            await asyncio.sleep(0.005)

    async def big(nested: bool) -> tuple[float, list[str]]:
        started = time.perf_counter()
        body = many_messages(1_000_000, nested)
        call = (
            drain(stream(body, metadata=AUTH, timeout=30))
            if nested
            else unary(body, metadata=AUTH, timeout=30)
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        details = error_details(caught.value)
        assert details.code is grpc.StatusCode.INVALID_ARGUMENT
        assert "got 1000000" in details.message
        return time.perf_counter() - started, violated_fields(details)

    background = asyncio.create_task(others())
    await asyncio.sleep(0.1)
    refusals = [await big(nested=False), await big(nested=True), await big(nested=False)]
    stop.set()
    await background
    print(
        f"\n1M-message refusals took {', '.join(f'{t:.3f}' for t, _ in refusals)} s; "
        f"{len(latencies)} other calls meanwhile, slowest {max(latencies):.3f} s"
    )
    assert [fields for _, fields in refusals] == [["messages"], ["request.messages"], ["messages"]]
    # Validating the decoded request took 6 to 8 s, and the other calls waited as long.
    assert max(t for t, _ in refusals) < 3
    assert max(latencies) < 3


async def test_a_message_of_a_million_parts_is_refused_before_validating_them(
    served: tuple[GatewayProcess, grpc.aio.Channel],
) -> None:
    _, channel = served
    stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
    message = content_pb2.Message(role=content_pb2.ROLE_USER)
    message.content.extend([content_pb2.Part(text="a")] * 200_000)
    tools = [content_pb2.Tool(name=f"t{i}") for i in range(5_000)]
    request = chat_pb2.ChatRequest(model="mock:echo", messages=[message], tools=tools)
    started = time.perf_counter()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Chat(request, metadata=AUTH, timeout=30)
    took = time.perf_counter() - started
    details = error_details(caught.value)
    assert sorted(violated_fields(details)) == ["messages", "tools"]
    assert "got 200000" in details.message
    assert "got 5000" in details.message
    print(f"\n200,000 parts and 5,000 tools refused in {took:.3f} s")
