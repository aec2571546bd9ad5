"""Fault injection against a fake OpenAI server on loopback: retries and Retry-After, the gateway's
own rate limits, fallbacks, deadlines and timeouts, cancellation, and broken replies. Timings that
matter are printed (`pytest -s`) and checked only against generous bounds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from llmgateway.v1 import chat_pb2
from tests.conftest import (
    RunningGateway,
    chat,
    error_details,
    openai_toml,
    read_event,
    reply_text,
    running_gateway,
    stream_past_first_delta,
)
from tests.fakes.openai import FakeOpenAI, Reply, error_body, text_chunks, usage
from tests.test_openai import stream_events

MODEL = "openai:gpt-4o-mini"
RETRIES = "retry = { max_retries = 2, initial_backoff = 0.05, max_backoff = 0.2, max_retry_after = 1.0 }"


def overloaded(**headers: str) -> Reply:
    return Reply(status=503, json_body=error_body("Overloaded", "server_error"), headers=headers)


def rate_limited(**headers: str) -> Reply:
    body = error_body("Rate limit reached for requests", "requests", "rate_limit_exceeded")
    return Reply(status=429, json_body=body, headers=headers)


@pytest.fixture
async def gateway(fake_openai: FakeOpenAI) -> AsyncIterator[RunningGateway]:
    async with running_gateway(openai_toml(fake_openai.base_url, retry=RETRIES)) as gw:
        yield gw


def attempts(reply: chat_pb2.ChatResponse | chat_pb2.StreamFinish) -> list[tuple[str, str]]:
    return [(a.model, a.code) for a in reply.routing.attempts]


# Retries


async def test_5xx_is_retried_with_backoff_then_served(
    gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(overloaded(), overloaded())
    reply = await gateway.stub.Chat(chat(MODEL, "third time lucky"))
    assert reply_text(reply.message) == "third time lucky"
    assert attempts(reply) == [(MODEL, "UNAVAILABLE"), (MODEL, "UNAVAILABLE"), (MODEL, "OK")]
    assert not reply.routing.fallback_used
    gaps = [b.at - a.at for a, b in zip(fake_openai.requests, fake_openai.requests[1:], strict=False)]
    # Full jitter: retry n waits a random time in [0, min(0.2, 0.05 * 2**n)].
    assert all(gap <= 0.2 + 0.1 for gap in gaps), gaps
    print(f"\nbackoff gaps between attempts: {[round(g * 1000, 1) for g in gaps]} ms")


async def test_retries_spent_then_the_fallback_serves(
    gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(overloaded(), overloaded(), overloaded())
    reply = await gateway.stub.Chat(chat(MODEL, "fall back", fallback_models=["mock:echo"]))
    assert reply.model == "mock:echo"
    assert reply.routing.fallback_used
    assert attempts(reply) == [(MODEL, "UNAVAILABLE")] * 3 + [("mock:echo", "OK")]
    assert len(fake_openai.requests) == 3


async def test_caller_errors_are_not_retried(gateway: RunningGateway, fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Reply(status=400, json_body=error_body("Bad", "invalid_request_error")))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat(MODEL, fallback_models=["mock:echo"]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(fake_openai.requests) == 1


async def test_a_stream_is_retried_before_its_first_event_only(
    gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(overloaded())
    events = await stream_events(gateway, chat(MODEL, "streamed after a retry"))
    assert "".join(e.text_delta.text for e in events if e.HasField("text_delta")) == "streamed after a retry"
    assert attempts(events[-1].finish) == [(MODEL, "UNAVAILABLE"), (MODEL, "OK")]

    # Dropped after deltas reached the caller: not retried, the caller gets the error.
    fake_openai.requests.clear()
    fake_openai.script(Reply(sse=text_chunks(["Hel", "lo"], usage(5, 2)), end_early=True))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream_events(gateway, chat(MODEL))
    assert error_details(caught.value).info.reason == "UPSTREAM_STREAM_INTERRUPTED"
    assert len(fake_openai.requests) == 1


# 429 storms and Retry-After


async def test_429_is_retried_after_the_time_it_asked_for(
    gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(rate_limited(**{"retry-after-ms": "300"}), rate_limited(**{"retry-after-ms": "200"}))
    started = time.perf_counter()
    reply = await gateway.stub.Chat(chat(MODEL, "patience"))
    elapsed = time.perf_counter() - started
    assert reply_text(reply.message) == "patience"
    assert attempts(reply) == [(MODEL, "RESOURCE_EXHAUSTED"), (MODEL, "RESOURCE_EXHAUSTED"), (MODEL, "OK")]
    first, second, third = (r.at for r in fake_openai.requests)
    assert second - first >= 0.3 - 0.01
    assert third - second >= 0.2 - 0.01
    print(f"\n429 retried after {second - first:.3f} s and {third - second:.3f} s; call took {elapsed:.3f} s")


async def test_a_429_holds_back_the_gateways_other_calls_to_the_provider(
    gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    """The limiter slows the gateway's own sending: after a 429 with Retry-After, calls already on
    their way wait until then instead of hitting the provider at once."""
    fake_openai.script(rate_limited(**{"retry-after-ms": "400"}))
    first = asyncio.ensure_future(gateway.stub.Chat(chat(MODEL, "first")))
    await asyncio.sleep(0.1)  # the 429 has been answered (in a few ms on loopback)
    limited_at = fake_openai.requests[0].at
    others = await asyncio.gather(*(gateway.stub.Chat(chat(MODEL, f"call {i}")) for i in range(5)))
    assert [reply_text(r.message) for r in others] == [f"call {i}" for i in range(5)]
    assert reply_text((await first).message) == "first"
    held = [r.at - limited_at for r in fake_openai.requests[1:]]
    assert len(held) == 6
    assert min(held) >= 0.4 - 0.01, held
    print(f"\nafter a 429 (Retry-After 400 ms) the next request went out {min(held) * 1000:.0f} ms later")


async def test_a_retry_after_beyond_the_cap_falls_back_at_once(
    gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(rate_limited(**{"retry-after": "30"}))
    started = time.perf_counter()
    reply = await gateway.stub.Chat(chat(MODEL, "elsewhere", fallback_models=["mock:echo"]))
    assert time.perf_counter() - started < 0.5
    assert reply.model == "mock:echo"
    assert attempts(reply) == [(MODEL, "RESOURCE_EXHAUSTED"), ("mock:echo", "OK")]

    # Without a fallback the caller gets the 429 and when to come back; the provider is paused,
    # so the next call is refused without a request upstream.
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat(MODEL))
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "PROVIDER_RATE_LIMITED",
    )
    assert details.retry is not None
    assert 29 < details.retry.retry_delay.ToMilliseconds() / 1000 <= 30
    assert len(fake_openai.requests) == 1


async def test_no_call_waits_beyond_its_deadline(gateway: RunningGateway, fake_openai: FakeOpenAI) -> None:
    """A Retry-After within the cap (1 s) but past the caller's deadline (0.5 s) is not waited for."""
    fake_openai.script(rate_limited(**{"retry-after-ms": "900"}))
    started = time.perf_counter()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat(MODEL), timeout=0.5)
    elapsed = time.perf_counter() - started
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "UPSTREAM_RATE_LIMITED",
    )
    assert elapsed < 0.4
    assert len(fake_openai.requests) == 1
    print(f"\n429 with Retry-After past the deadline answered in {elapsed * 1000:.1f} ms")


# The gateway's own rate limits


async def test_requests_per_minute_refuse_past_the_wait_bound_then_fall_back() -> None:
    toml = (
        "[providers.mock]\nrate_limit = { requests_per_minute = 2, max_wait = 0.2 }\n"
        '[providers.backup]\nkind = "mock"\n[providers.backup.models.echo]\n'
    )
    async with running_gateway(toml) as gw:
        for _ in range(2):
            await gw.stub.Chat(chat("mock:echo"))
        started = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.stub.Chat(chat("mock:echo"))
        waited = time.perf_counter() - started
        details = error_details(caught.value)
        assert (details.code, details.info.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "PROVIDER_RATE_LIMITED",
        )
        assert details.info.metadata["provider"] == "mock"
        assert details.retry is not None
        assert details.retry.retry_delay.seconds == 30  # one request drips back every 30 s
        assert 0.2 <= waited < 1.0
        print(f"\nrefused after waiting in line {waited * 1000:.0f} ms (max_wait 200 ms)")

        reply = await gw.stub.Chat(chat("mock:echo", "queued out", fallback_models=["backup:echo"]))
        assert reply.model == "backup:echo"
        assert attempts(reply) == [("mock:echo", "RESOURCE_EXHAUSTED"), ("backup:echo", "OK")]


async def test_a_call_waits_in_line_for_capacity() -> None:
    """120 requests per minute: a burst of 120 goes at once, then one every 0.5 s."""
    toml = "[providers.mock]\nrate_limit = { requests_per_minute = 120, max_wait = 5 }\n"
    async with running_gateway(toml) as gw:
        started = time.perf_counter()
        burst = await asyncio.gather(*(gw.stub.Chat(chat("mock:echo")) for _ in range(120)))
        burst_time = time.perf_counter() - started
        queued = time.perf_counter()
        late = await asyncio.gather(*(gw.stub.Chat(chat("mock:echo")) for _ in range(2)))
        waited = time.perf_counter() - queued
    assert len(burst) == 120
    assert len(late) == 2
    # Two more: 0.5 s and 1.0 s after the bucket filled, which was during the burst.
    assert 0.9 <= burst_time + waited < 2.0
    print(f"\nburst of 120 in {burst_time:.2f} s; two more waited {waited:.2f} s for capacity")


async def test_tokens_per_minute_count_each_calls_estimate(fake_openai: FakeOpenAI) -> None:
    """A call takes its prompt (about 12 tokens here) plus its max_tokens from the bucket."""

    def capped(max_tokens: int) -> chat_pb2.ChatRequest:
        return chat(MODEL, generation=chat_pb2.GenerationConfig(max_tokens=max_tokens))

    limit = "rate_limit = { tokens_per_minute = 1000, max_wait = 0.1 }"
    async with running_gateway(openai_toml(fake_openai.base_url, limit)) as gw:
        await gw.stub.Chat(capped(600))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.stub.Chat(capped(600))
        details = error_details(caught.value)
        assert details.info.reason == "PROVIDER_RATE_LIMITED"
        assert "tokens per minute" in details.message
        await gw.stub.Chat(capped(300))  # the rest of the minute still fits
    assert len(fake_openai.requests) == 2


KEYS = """
[[auth.keys]]
name = "batch"
key = "batch-key-0123456789"
rate_limit = { requests_per_minute = 2, max_wait = 0 }
[[auth.keys]]
name = "web"
key = "web-key-0123456789ab"
"""


async def test_a_gateway_key_over_its_limit_is_refused_and_others_are_not() -> None:
    async with running_gateway(KEYS) as gw:
        batch = (("authorization", "Bearer batch-key-0123456789"),)
        web = (("authorization", "Bearer web-key-0123456789ab"),)
        for _ in range(2):
            await gw.stub.Chat(chat("mock:echo"), metadata=batch)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.stub.Chat(chat("mock:echo", fallback_models=["mock:echo-free"]), metadata=batch)
        details = error_details(caught.value)
        assert (details.code, details.info.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "KEY_RATE_LIMITED")
        assert details.info.metadata["api_key"] == "batch"
        assert details.retry is not None
        for _ in range(5):
            await gw.stub.Chat(chat("mock:echo"), metadata=web)
        # A dry run spends nothing, so it is not limited.
        dry = await gw.stub.Chat(chat("mock:echo", dry_run=True), metadata=batch)
        assert dry.usage.estimated


# Deadlines and timeouts


@pytest.mark.parametrize("streaming", [False, True])
async def test_a_hanging_upstream_is_cut_at_the_callers_deadline(
    gateway: RunningGateway, fake_openai: FakeOpenAI, streaming: bool
) -> None:
    fake_openai.script(Reply(delay=30))
    started = time.perf_counter()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_once(gateway, chat(MODEL), streaming, deadline=0.5)
    elapsed = time.perf_counter() - started
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.45 <= elapsed < 0.7
    closed = await fake_openai.disconnected(1.0)
    assert closed is not None, "the upstream connection stayed open"
    assert len(fake_openai.requests) == 1
    kind = "stream" if streaming else "unary"
    print(
        f"\n{kind}: DEADLINE_EXCEEDED in {elapsed * 1000:.0f} ms; upstream closed in {closed * 1000:.1f} ms"
    )


async def test_a_started_stream_is_cut_at_the_callers_deadline(
    gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        Reply(sse=text_chunks([f"w{i} " for i in range(100)], usage(5, 100)), chunk_delay=0.05)
    )
    started = time.perf_counter()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call_once(gateway, chat(MODEL), streaming=True, deadline=0.5)
    elapsed = time.perf_counter() - started
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert 0.45 <= elapsed < 0.7
    closed = await fake_openai.disconnected(1.0)
    assert closed is not None
    print(f"\nstream past its first event: upstream closed {closed * 1000:.1f} ms after DEADLINE_EXCEEDED")


async def call_once(
    gw: RunningGateway, request: chat_pb2.ChatRequest, streaming: bool, deadline: float
) -> None:
    """One Chat, or one ChatStream read to its end, with a gRPC deadline of `deadline` seconds."""
    if streaming:
        async for _ in gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request), timeout=deadline):
            pass
    else:
        await gw.stub.Chat(request, timeout=deadline)


async def read_texts(call: grpc.aio.UnaryStreamCall[Any, Any], texts: list[str]) -> None:
    """Reads a stream to its end (or its error), adding each text delta to `texts`."""
    while (event := await read_event(call)) is not None:
        if event.HasField("text_delta"):
            texts.append(event.text_delta.text)


async def test_first_token_timeout_moves_on_to_the_fallback(fake_openai: FakeOpenAI) -> None:
    toml = openai_toml(fake_openai.base_url, "timeout.first_token = 0.3", retry="retry = { max_retries = 0 }")
    toml = toml.replace("timeout = { connect = 2.0, read = 5.0 }", "")
    async with running_gateway(toml) as gw:
        fake_openai.script(Reply(delay=30))
        started = time.perf_counter()
        events = await stream_events(gw, chat(MODEL, "on time", fallback_models=["mock:echo"]))
        elapsed = time.perf_counter() - started
        assert events[0].start.model == "mock:echo"
        finish = events[-1].finish
        assert [(a.model, a.code, a.reason) for a in finish.routing.attempts] == [
            (MODEL, "DEADLINE_EXCEEDED", "UPSTREAM_TIMEOUT"),
            ("mock:echo", "OK", ""),
        ]
        assert 0.3 <= elapsed < 0.6
        assert await fake_openai.disconnected(1.0) is not None

        # Without a fallback: the provider's timeout, named.
        fake_openai.script(Reply(delay=30))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stream_events(gw, chat(MODEL))
        details = error_details(caught.value)
        assert (details.code, details.info.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT")
        assert "first_token" in details.message


async def test_total_timeout_cuts_a_slow_stream_and_accounts_what_was_sent(fake_openai: FakeOpenAI) -> None:
    toml = openai_toml(fake_openai.base_url, "timeout.total = 0.4", retry="retry = { max_retries = 0 }")
    toml = toml.replace("timeout = { connect = 2.0, read = 5.0 }", "")
    async with running_gateway(toml) as gw:
        fake_openai.script(
            Reply(sse=text_chunks([f"w{i} " for i in range(40)], usage(5, 40)), chunk_delay=0.05)
        )
        call = gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=chat(MODEL)))
        texts: list[str] = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await read_texts(call, texts)
        details = error_details(caught.value)
        assert (details.code, details.info.reason) == (grpc.StatusCode.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT")
        assert "timeout.total" in details.message
        assert 3 <= len(texts) < 40
        assert details.info.metadata["usage_estimated"] == "true"
        assert int(details.info.metadata["completion_tokens"]) > 0
        assert await fake_openai.disconnected(1.0) is not None


async def test_a_client_cancel_closes_the_upstream_request_within_100_ms(
    gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        Reply(sse=text_chunks([f"w{i} " for i in range(500)], usage(5, 500)), chunk_delay=0.01)
    )
    call = await stream_past_first_delta(gateway, chat(MODEL))
    call.cancel()
    closed = await fake_openai.disconnected(1.0)
    assert closed is not None
    assert closed < 0.1
    print(f"\nclient cancel: upstream closed {closed * 1000:.1f} ms later")


# Broken replies: a clear status, fast, never UNKNOWN


BROKEN: list[tuple[str, Reply, str]] = [
    (
        "dropped midway",
        Reply(sse=text_chunks(["Hel", "lo"], usage(5, 2)), end_early=True),
        "UPSTREAM_STREAM_INTERRUPTED",
    ),
    (
        "malformed JSON",
        Reply(raw=b'{"id": "chatcmpl-1", "choices": [', headers={"Content-Type": "application/json"}),
        "UPSTREAM_BAD_RESPONSE",
    ),
    ("bad SSE line", Reply(sse=["{not json"]), "UPSTREAM_BAD_RESPONSE"),
    (
        "error event in a 200 stream",
        Reply(sse=[{"error": {"message": "The server had an error", "type": "server_error"}}]),
        "UPSTREAM_STREAM_ERROR",
    ),
]


@pytest.mark.parametrize(("fault", "reply", "reason"), BROKEN, ids=[b[0] for b in BROKEN])
async def test_broken_replies_get_a_clear_status(
    fake_openai: FakeOpenAI, fault: str, reply: Reply, reason: str
) -> None:
    async with running_gateway(openai_toml(fake_openai.base_url)) as gw:
        fake_openai.script(reply)
        started = time.perf_counter()
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call_once(gw, chat(MODEL), reply.sse is not None, deadline=5)
        elapsed = time.perf_counter() - started
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (grpc.StatusCode.UNAVAILABLE, reason), fault
    assert elapsed < 1.0


# Fallbacks configured per model


async def test_configured_fallbacks_follow_the_requests_own(fake_openai: FakeOpenAI) -> None:
    models = """
[providers.openai.models."gpt-4o-mini"]
fallbacks = ["cheap", "anthropic:claude-haiku-4-5", "mock:echo"]
[providers.backup]
kind = "mock"
[providers.backup.models.echo]
[aliases]
cheap = "backup:echo"
"""
    toml = openai_toml(fake_openai.base_url, models) + '[providers.anthropic]\nkind = "anthropic"\n'
    async with running_gateway(toml) as gw:
        fake_openai.script(overloaded())
        reply = await gw.stub.Chat(chat(MODEL, "configured"))
        # The alias resolves; anthropic has no key, so it is skipped.
        assert reply.model == "backup:echo"
        assert list(reply.routing.candidates) == [MODEL, "backup:echo", "mock:echo"]
        assert reply.routing.fallback_used

        fake_openai.script(overloaded())
        reply = await gw.stub.Chat(chat(MODEL, "mine first", fallback_models=["mock:echo"]))
        assert reply.model == "mock:echo"
        assert list(reply.routing.candidates) == [MODEL, "mock:echo", "backup:echo"]
