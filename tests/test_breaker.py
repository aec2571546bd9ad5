"""The per-provider circuit breaker under concurrent coroutines (failing fast while open, one probe
when half-open, which failures count), and end to end through the stub."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.gateway.breaker import CircuitState, ProviderBreaker
from llmgateway.v1 import catalog_pb2, chat_pb2
from tests.conftest import (
    RunningGateway,
    chat,
    error_details,
    openai_toml,
    read_event,
    reply_text,
    running_gateway,
)
from tests.fakes.openai import FakeOpenAI, Reply, completion, error_body, text_chunks, usage
from tests.test_openai import stream_events


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def state(breaker: ProviderBreaker) -> CircuitState:
    return breaker.state  # read afresh each time: it changes under mypy's narrowing


def upstream(reason: str, code: Code = Code.UNAVAILABLE) -> GatewayError:
    return GatewayError("upstream failed", code=code, reason=reason, retryable=True)


def fail(breaker: ProviderBreaker, reason: str = "UPSTREAM_UNAVAILABLE") -> None:
    with pytest.raises(GatewayError) as caught, breaker.admit():
        raise upstream(reason)
    assert caught.value.reason == reason


def succeed(breaker: ProviderBreaker) -> None:
    with breaker.admit():
        pass


def rejected(breaker: ProviderBreaker) -> GatewayError:
    with pytest.raises(GatewayError) as caught, breaker.admit():
        raise AssertionError("an open circuit must not let the call through")
    return caught.value


def test_opens_after_consecutive_failures_only() -> None:
    breaker = ProviderBreaker("p", failure_threshold=3, reset_timeout=30, clock=Clock())
    fail(breaker)
    fail(breaker)
    succeed(breaker)  # a success resets the count
    fail(breaker)
    fail(breaker)
    assert state(breaker) is CircuitState.CLOSED
    fail(breaker, "UPSTREAM_TIMEOUT")
    assert state(breaker) is CircuitState.OPEN
    assert not breaker.available


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("UPSTREAM_INVALID_REQUEST", Code.INVALID_ARGUMENT),
        ("UPSTREAM_RATE_LIMITED", Code.RESOURCE_EXHAUSTED),
        ("PROVIDER_AUTH_FAILED", Code.FAILED_PRECONDITION),
        ("UPSTREAM_NOT_FOUND", Code.NOT_FOUND),
    ],
)
def test_caller_errors_and_rate_limits_never_count(reason: str, code: Code) -> None:
    breaker = ProviderBreaker("p", failure_threshold=2, reset_timeout=30, clock=Clock())
    for _ in range(5):
        with pytest.raises(GatewayError), breaker.admit():
            raise upstream(reason, code)
    assert state(breaker) is CircuitState.CLOSED


def test_an_open_circuit_fails_fast_without_calling() -> None:
    clock = Clock()
    breaker = ProviderBreaker("p", failure_threshold=1, reset_timeout=30, clock=clock)
    fail(breaker)
    started = time.perf_counter()
    for _ in range(1000):
        err = rejected(breaker)
    per_call = (time.perf_counter() - started) / 1000
    print(f"rejected call while open: {per_call * 1e6:.1f} µs")
    assert (err.code, err.reason, err.retryable) == (Code.UNAVAILABLE, "CIRCUIT_OPEN", True)
    assert err.metadata["provider"] == "p"
    assert "next probe in 30.0 s" in err.message


async def test_half_open_admits_exactly_one_probe_among_fifty_callers() -> None:
    clock = Clock()
    breaker = ProviderBreaker("p", failure_threshold=1, reset_timeout=30, clock=clock)
    fail(breaker)
    clock.now += 30
    assert state(breaker) is CircuitState.HALF_OPEN
    release = asyncio.Event()
    admitted: list[int] = []

    async def caller(i: int) -> str:
        try:
            with breaker.admit():
                admitted.append(i)
                await release.wait()
        except GatewayError as err:
            return err.reason
        return "OK"

    tasks = [asyncio.create_task(caller(i)) for i in range(50)]
    await asyncio.sleep(0)
    assert len(admitted) == 1
    assert not breaker.available  # the probe is in flight
    release.set()
    outcomes = await asyncio.gather(*tasks)
    assert outcomes.count("OK") == 1
    assert outcomes.count("CIRCUIT_OPEN") == 49
    assert state(breaker) is CircuitState.CLOSED  # the probe succeeded
    succeed(breaker)


def test_a_failed_probe_reopens_for_another_timeout() -> None:
    clock = Clock()
    breaker = ProviderBreaker("p", failure_threshold=1, reset_timeout=30, clock=clock)
    fail(breaker)
    clock.now += 31
    fail(breaker)  # the probe
    assert state(breaker) is CircuitState.OPEN
    clock.now += 29
    rejected(breaker)
    clock.now += 1
    succeed(breaker)
    assert state(breaker) is CircuitState.CLOSED


async def test_a_cancelled_probe_passes_the_turn_on() -> None:
    clock = Clock()
    breaker = ProviderBreaker("p", failure_threshold=1, reset_timeout=30, clock=clock)
    fail(breaker)
    clock.now += 30

    async def probe() -> None:
        with breaker.admit():
            await asyncio.sleep(10)

    task = asyncio.create_task(probe())
    await asyncio.sleep(0)
    rejected(breaker)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert state(breaker) is CircuitState.HALF_OPEN
    succeed(breaker)
    assert state(breaker) is CircuitState.CLOSED


async def test_calls_admitted_before_the_trip_do_not_decide_afterwards() -> None:
    clock = Clock()
    breaker = ProviderBreaker("p", failure_threshold=1, reset_timeout=30, clock=clock)
    finish = asyncio.Event()

    async def slow_success() -> None:
        with breaker.admit():
            await finish.wait()

    task = asyncio.create_task(slow_success())
    await asyncio.sleep(0)
    fail(breaker)
    assert state(breaker) is CircuitState.OPEN
    finish.set()
    await task
    assert state(breaker) is CircuitState.OPEN  # only a probe may close it


async def test_a_failing_provider_is_cut_off_then_probed_back(fake_openai: FakeOpenAI) -> None:
    """Through the stub against the fake OpenAI server: three 503s open the circuit; while open,
    calls fail fast or fall back without a request reaching the provider; after the reset timeout
    one probe succeeds and closes it."""
    toml = openai_toml(
        fake_openai.base_url, "circuit_breaker = { failure_threshold = 3, reset_timeout = 0.5 }"
    )
    overloaded = Reply(status=503, json_body=error_body("Overloaded", "server_error"))
    async with running_gateway(toml) as gw:

        async def circuit() -> tuple[int, bool]:
            reply = await gw.stub.ListModels(catalog_pb2.ListModelsRequest(provider="openai"))
            state = {m.id: m.state for m in reply.models}["openai:gpt-4o-mini"]
            return state.circuit_state, state.available

        fake_openai.script(overloaded, overloaded, overloaded)
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await gw.stub.Chat(chat("openai:gpt-4o-mini"))
            assert error_details(caught.value).info.reason == "UPSTREAM_UNAVAILABLE"
        assert len(fake_openai.requests) == 3
        assert await circuit() == (catalog_pb2.CIRCUIT_STATE_OPEN, False)

        started = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.stub.Chat(chat("openai:gpt-4o-mini"))
        elapsed = time.perf_counter() - started
        print(f"call rejected by the open circuit, through gRPC: {elapsed * 1000:.2f} ms")
        details = error_details(caught.value)
        assert (details.code, details.info.reason) == (grpc.StatusCode.UNAVAILABLE, "CIRCUIT_OPEN")
        assert details.info.metadata["provider"] == "openai"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream_events(gw, chat("openai:gpt-4o-mini"))
        assert error_details(caught.value).info.reason == "CIRCUIT_OPEN"
        fell_back = await gw.stub.Chat(chat("openai:gpt-4o-mini", fallback_models=["mock:echo"]))
        assert fell_back.model == "mock:echo"
        assert [(a.model, a.code, a.reason) for a in fell_back.routing.attempts] == [
            ("openai:gpt-4o-mini", "UNAVAILABLE", "CIRCUIT_OPEN"),
            ("mock:echo", "OK", ""),
        ]
        assert len(fake_openai.requests) == 3  # nothing reached the provider while open

        await asyncio.sleep(0.5)
        assert await circuit() == (catalog_pb2.CIRCUIT_STATE_HALF_OPEN, True)
        reply = await gw.stub.Chat(chat("openai:gpt-4o-mini", "back again"))  # the probe, echoed
        assert reply_text(reply.message) == "back again"
        assert await circuit() == (catalog_pb2.CIRCUIT_STATE_CLOSED, True)
        assert len(fake_openai.requests) == 4


async def test_health_follows_the_circuits(fake_openai: FakeOpenAI) -> None:
    """Each provider has a health service name; the overall status stays SERVING while any
    provider can serve, and comes back once a probe may go through."""
    breaker = "circuit_breaker = { failure_threshold = 1, reset_timeout = 0.3 }"
    overloaded = Reply(status=503, json_body=error_body("Overloaded", "server_error"))

    async def status(gw: RunningGateway, service: str) -> int:
        reply = await health_pb2_grpc.HealthStub(gw.channel).Check(
            health_pb2.HealthCheckRequest(service=service)
        )
        return int(reply.status)

    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    async with running_gateway(openai_toml(fake_openai.base_url, breaker)) as gw:
        assert await status(gw, "llmgateway.v1.provider.openai") == serving
        fake_openai.script(overloaded)
        with pytest.raises(grpc.aio.AioRpcError):
            await gw.stub.Chat(chat("openai:gpt-4o-mini"))
        await asyncio.sleep(0.05)
        assert await status(gw, "llmgateway.v1.provider.openai") == not_serving
        assert await status(gw, "llmgateway.v1.provider.mock") == serving
        assert await status(gw, "") == serving  # mock can still serve

    only_openai = openai_toml(fake_openai.base_url, breaker) + "\n[providers.mock]\nenabled = false\n"
    async with running_gateway(only_openai) as gw:
        fake_openai.script(overloaded)
        with pytest.raises(grpc.aio.AioRpcError):
            await gw.stub.Chat(chat("openai:gpt-4o-mini"))
        await asyncio.sleep(0.05)
        assert await status(gw, "") == not_serving
        assert await status(gw, "llmgateway.v1.GatewayService") == not_serving
        await asyncio.sleep(0.4)  # past the reset timeout: a probe may go through
        assert await status(gw, "") == serving
        assert await status(gw, "llmgateway.v1.provider.openai") == serving


async def open_then_wait(gw: RunningGateway, fake: FakeOpenAI, failure: Reply, wait: float) -> None:
    """Opens the circuit (`failure_threshold = 2`) with two failing calls, then waits `wait` s."""
    fake.script(failure, failure)
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError):
            await gw.stub.Chat(chat("openai:gpt-4o-mini"))
    await asyncio.sleep(wait)


async def test_half_open_lets_one_of_fifty_grpc_callers_probe(fake_openai: FakeOpenAI) -> None:
    """Two 529s (overloaded) open the circuit; after the reset timeout 50 concurrent calls arrive
    while the probe is still in flight: exactly one reaches the provider, the others fail fast."""
    toml = openai_toml(
        fake_openai.base_url, "circuit_breaker = { failure_threshold = 2, reset_timeout = 0.3 }"
    )
    overloaded = Reply(status=529, json_body=error_body("Overloaded", "overloaded_error"))
    async with running_gateway(toml) as gw:
        await open_then_wait(gw, fake_openai, overloaded, 0.3)
        # The probe takes 1 s: all 50 calls arrive while it is in flight, even on a loaded machine
        # (with 0.2 s, a run beside other work once saw it end before the last calls came).
        fake_openai.script(Reply(delay=1.0, json_body=completion("probe ok")))
        results = await asyncio.gather(
            *(gw.stub.Chat(chat("openai:gpt-4o-mini"), timeout=5) for _ in range(50)), return_exceptions=True
        )
        served = [r for r in results if isinstance(r, chat_pb2.ChatResponse)]
        rejected = [error_details(r).info.reason for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(served) == 1
        assert reply_text(served[0].message) == "probe ok"
        assert rejected == ["CIRCUIT_OPEN"] * 49
        assert len(fake_openai.requests) == 3  # two failures and the one probe
        reply = await gw.stub.Chat(chat("openai:gpt-4o-mini", "closed again"))
        assert reply_text(reply.message) == "closed again"


async def test_a_long_probe_stream_closes_the_circuit_at_its_first_event(fake_openai: FakeOpenAI) -> None:
    """The probe is a stream that answers at once and then runs for seconds: its first event shows
    the provider healthy, so the circuit closes then and other calls are served meanwhile."""
    toml = openai_toml(
        fake_openai.base_url, "circuit_breaker = { failure_threshold = 2, reset_timeout = 0.3 }"
    )
    overloaded = Reply(status=503, json_body=error_body("Overloaded", "server_error"))
    async with running_gateway(toml) as gw:
        await open_then_wait(gw, fake_openai, overloaded, 0.35)
        pieces = [f"w{i} " for i in range(20)]
        fake_openai.script(Reply(sse=text_chunks(pieces, usage(5, 20)), chunk_delay=0.2))  # about 4 s
        probe = gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=chat("openai:gpt-4o-mini")))
        start, first = await read_event(probe), await read_event(probe)
        assert start is not None
        assert start.HasField("start")
        assert first is not None
        assert first.HasField("text_delta")
        reply = await gw.stub.Chat(chat("openai:gpt-4o-mini", "served meanwhile"))
        assert reply_text(reply.message) == "served meanwhile"
        health = await health_pb2_grpc.HealthStub(gw.channel).Check(
            health_pb2.HealthCheckRequest(service="llmgateway.v1.provider.openai")
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        last = first
        while (event := await read_event(probe)) is not None:
            last = event
        assert last.HasField("finish")
