"""The gateway as a process: graceful shutdown on SIGTERM, and the grpcurl session from the README."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmgateway.v1 import chat_pb2, gateway_service_pb2_grpc
from tests.conftest import (
    GatewayProcess,
    RunningGateway,
    chat,
    error_details,
    gateway_process,
    read_event,
    running_gateway,
)

ROOT = Path(__file__).resolve().parents[1]
GRPCURL = ROOT / ".tools" / "bin" / "grpcurl"


@pytest.fixture(name="gateway_process")
async def gateway_process_fixture(tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    toml = '[server]\nhost = "127.0.0.1"\ngrace_period = 10.0\n[providers.mock]\nchunk_delay = 0.05\n'
    async with gateway_process(tmp_path, toml) as process:
        yield process


Stream = grpc.aio.UnaryStreamCall[chat_pb2.ChatStreamRequest, chat_pb2.ChatStreamResponse]


async def open_stream(
    stub: gateway_service_pb2_grpc.GatewayServiceAsyncStub, text: str
) -> tuple[Stream, list[chat_pb2.ChatStreamResponse]]:
    """A mock:echo stream of `text` and its events so far: the start and the first text delta."""
    stream = stub.ChatStream(chat_pb2.ChatStreamRequest(request=chat("mock:echo", text)), timeout=30)
    events = [event for _ in range(2) if (event := await read_event(stream)) is not None]
    assert events[1].HasField("text_delta")
    return stream, events


async def read_to_the_end(stream: Stream, events: list[chat_pb2.ChatStreamResponse], text: str) -> None:
    """Reads the rest of `stream`, which must finish having sent all of `text`."""
    while (event := await read_event(stream)) is not None:
        events.append(event)
    assert events[-1].HasField("finish")
    assert "".join(e.text_delta.text for e in events if e.HasField("text_delta")) == text


async def log_after_exit(gateway: GatewayProcess) -> list[dict[str, Any]]:
    """The log of a gateway told to stop, once it has exited with status 0."""
    assert await asyncio.wait_for(gateway.process.wait(), 20) == 0
    return gateway.log_lines()


def chat_streams_logged(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in lines if e.get("event") == "access" and e.get("method") == "ChatStream"]


async def test_sigterm_drains_streams_refuses_new_calls_and_exits_zero(
    gateway_process: GatewayProcess,
) -> None:
    text = " ".join(f"word{i}" for i in range(30))  # 30 chunks, 50 ms apart
    async with grpc.aio.insecure_channel(gateway_process.address) as channel:
        stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING

        stream, events = await open_stream(stub, text)

        gateway_process.process.send_signal(signal.SIGTERM)
        assert (await asyncio.wait_for(watch.read(), 5)).status == health_pb2.HealthCheckResponse.NOT_SERVING

        refused = None
        for _ in range(50):  # the drain starts right after health turns NOT_SERVING
            try:
                await stub.Chat(chat("mock:echo"), timeout=5)
            except grpc.aio.AioRpcError as err:
                refused = error_details(err)
                break
            await asyncio.sleep(0.02)
        assert refused is not None
        assert (refused.code, refused.info.reason) == (grpc.StatusCode.UNAVAILABLE, "SHUTTING_DOWN")

        await read_to_the_end(stream, events, text)

    lines = await log_after_exit(gateway_process)
    assert [e.get("event") for e in lines if e.get("event") in ("serving", "draining", "stopped")] == [
        "serving",
        "draining",
        "stopped",
    ]
    assert [e["status"] for e in chat_streams_logged(lines)] == ["OK"]
    assert next(e for e in lines if e.get("event") == "serving")["event_loop"] == "uvloop"  # the default


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
async def test_serves_both_doors_and_drains_on_the_configured_event_loop(tmp_path: Path, loop: str) -> None:
    toml = f'[server]\nhost = "127.0.0.1"\nevent_loop = "{loop}"\n[providers.mock]\nchunk_delay = 0.01\n'
    text = "one two three four"
    async with gateway_process(tmp_path, toml) as gateway:
        async with grpc.aio.insecure_channel(gateway.address) as channel:
            stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
            stream, events = await open_stream(stub, text)
            await read_to_the_end(stream, events, text)
        serving = next(e for e in gateway.log_lines() if e.get("event") == "serving")
        url = f"http://127.0.0.1:{serving['http_port']}/v1/chat/completions"
        body = {"model": "mock:echo", "messages": [{"role": "user", "content": text}]}
        async with aiohttp.ClientSession() as http, http.post(url, json=body) as response:
            assert response.status == 200
            assert (await response.json())["choices"][0]["message"]["content"] == text
        gateway.process.send_signal(signal.SIGTERM)
        lines = await log_after_exit(gateway)
    assert serving["event_loop"] == loop
    assert [e["status"] for e in lines if e.get("event") == "access"] == ["OK", "OK"]


async def test_sigterm_with_100_streams_open_lets_all_finish_and_exits_zero(
    gateway_process: GatewayProcess,
) -> None:
    # Each stream is 60 chunks 50 ms apart, 3 s: well within the 10 s grace period, and long
    # enough that all 100 are still streaming when the signal arrives.
    texts = [" ".join(f"s{i}w{w}" for w in range(60)) for i in range(100)]
    async with grpc.aio.insecure_channel(gateway_process.address) as channel:
        stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        opened = await asyncio.wait_for(asyncio.gather(*(open_stream(stub, t) for t in texts)), 10)

        gateway_process.process.send_signal(signal.SIGTERM)
        finishing = (read_to_the_end(s, events, t) for (s, events), t in zip(opened, texts, strict=True))
        await asyncio.wait_for(asyncio.gather(*finishing), 20)

    lines = await log_after_exit(gateway_process)
    draining = next(i for i, e in enumerate(lines) if e.get("event") == "draining")
    # None had ended when the drain began; all ended after it, OK.
    assert chat_streams_logged(lines[:draining]) == []
    assert [e["status"] for e in chat_streams_logged(lines[draining:])] == ["OK"] * 100


async def test_shutdown_without_calls_in_flight_does_not_wait_for_the_grace_period() -> None:
    async with running_gateway() as gw:
        watch = health_pb2_grpc.HealthStub(gw.channel).Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        await gw.stub.Chat(chat("mock:echo"))
        # With a 60 s grace period and a watcher that never ends, stop returns once idle.
        await asyncio.wait_for(gw.server.stop(60), 10)


async def grpcurl(address: str, *args: str, data: str | None = None) -> str:
    assert GRPCURL.exists(), f"{GRPCURL} is missing: run `make deps`"
    argv = [str(GRPCURL), "-plaintext"]
    if data is not None:
        argv += ["-d", data]
    process = await asyncio.create_subprocess_exec(
        *argv,
        address,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HOME": str(ROOT)},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_grpcurl_session(gateway: RunningGateway) -> None:
    listed = (await grpcurl(gateway.address, "list")).split()
    assert listed == [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        "llmgateway.v1.BatchService",
        "llmgateway.v1.BudgetService",
        "llmgateway.v1.GatewayService",
        "llmgateway.v1.UsageService",
    ]
    described = await grpcurl(gateway.address, "describe", "llmgateway.v1.GatewayService")
    chat_stream = "rpc ChatStream ( .llmgateway.v1.ChatStreamRequest ) returns ( stream "
    assert chat_stream + ".llmgateway.v1.ChatStreamResponse );" in described
    # Reflection serves the contract with its comments: describe prints the API docs.
    method = await grpcurl(gateway.address, "describe", "llmgateway.v1.GatewayService.Chat")
    assert method.splitlines() == [
        "llmgateway.v1.GatewayService.Chat is a method:",
        "// Runs a chat completion and returns the whole reply.",
        "rpc Chat ( .llmgateway.v1.ChatRequest ) returns ( .llmgateway.v1.ChatResponse );",
    ]
    message = await grpcurl(gateway.address, "describe", "llmgateway.v1.ChatRequest")
    assert "// A chat completion request: one conversation and how to run it." in message
    assert "  // The conversation, oldest first. Required: at least one message." in message
    assert json.loads(await grpcurl(gateway.address, "grpc.health.v1.Health/Check")) == {"status": "SERVING"}

    request = {
        "model": "mock:echo",
        "messages": [{"role": "ROLE_USER", "content": [{"text": "Hello from grpcurl"}]}],
    }
    reply = json.loads(
        await grpcurl(gateway.address, "llmgateway.v1.GatewayService/Chat", data=json.dumps(request))
    )
    assert reply["message"]["content"] == [{"text": "Hello from grpcurl"}]
    assert reply["cost"]["status"] == "PRICING_STATUS_PRICED"
    assert reply["cost"]["currency"] == "USD"
    assert reply["usage"]["total_tokens"] > 0
    assert reply["latency"]["total"].endswith("s")

    out = await grpcurl(
        gateway.address, "llmgateway.v1.GatewayService/ChatStream", data=json.dumps({"request": request})
    )
    events = [json.loads(chunk) for chunk in out.replace("}\n{", "}\x00{").split("\x00")]
    assert list(events[0]) == ["start"]
    assert list(events[-1]) == ["finish"]
    assert "".join(e["text_delta"]["text"] for e in events if "text_delta" in e) == "Hello from grpcurl"


async def test_grpcurl_estimate_from_the_readme_cost_section() -> None:
    """The README's EstimateCost comparison, replayed: the figures it shows are what the gateway says."""
    env = {
        "OPENAI_API_KEY": "sk-estimate",
        "ANTHROPIC_API_KEY": "sk-ant-estimate",
        "GEMINI_API_KEY": "estimate",
    }
    request = {
        "request": {
            "model": "openai:gpt-4o-mini",
            "generation": {"max_tokens": 500},
            "messages": [
                {"role": "ROLE_SYSTEM", "content": [{"text": "You answer in one short paragraph."}]},
                {
                    "role": "ROLE_USER",
                    "content": [{"text": "Explain what a circuit breaker does in a service mesh."}],
                },
            ],
        },
        "expected_output_tokens": 200,
        "candidate_models": ["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5", "gemini:gemini-2.5-flash"],
    }
    async with running_gateway(env=env) as gw:
        out = await grpcurl(gw.address, "llmgateway.v1.GatewayService/EstimateCost", data=json.dumps(request))
    estimates = json.loads(out)["estimates"]
    shown = [
        (
            e["model"],
            e["prompt_tokens"],
            e["token_count_method"],
            e["expected_cost"]["total"],
            e["worst_case_cost"]["total"],
        )
        for e in estimates
    ]
    assert shown == [
        ("openai:gpt-4o-mini", 29, "TOKEN_COUNT_METHOD_EXACT", "0.00012435", "0.00030435"),
        ("gemini:gemini-2.5-flash", 34, "TOKEN_COUNT_METHOD_APPROXIMATE", "0.0005102", "0.0012602"),
        ("anthropic:claude-haiku-4-5", 34, "TOKEN_COUNT_METHOD_APPROXIMATE", "0.001034", "0.002534"),
    ]
