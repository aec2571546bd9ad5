"""The OpenAI adapter when things go wrong: upstream errors, malformed replies, dropped streams,
fallbacks and cancellation, against the fake OpenAI server on loopback."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from llmgateway.v1 import chat_pb2
from tests.conftest import (
    OPENAI_TEST_KEY,
    RunningGateway,
    chat,
    error_details,
    openai_toml,
    read_event,
    reply_text,
    running_gateway,
    stream_past_first_delta,
)
from tests.fakes.openai import FakeOpenAI, Reply, chunk, error_body, text_chunks, usage
from tests.test_openai import stream_events


@pytest.mark.parametrize(
    ("status", "body", "headers", "code", "reason"),
    [
        (
            400,
            error_body("Invalid 'messages'", "invalid_request_error", param="messages"),
            {},
            grpc.StatusCode.INVALID_ARGUMENT,
            "UPSTREAM_INVALID_REQUEST",
        ),
        (
            422,
            error_body("Unprocessable", "invalid_request_error"),
            {},
            grpc.StatusCode.INVALID_ARGUMENT,
            "UPSTREAM_INVALID_REQUEST",
        ),
        (
            401,
            error_body(
                f"Incorrect API key provided: {OPENAI_TEST_KEY}", "invalid_request_error", "invalid_api_key"
            ),
            {},
            grpc.StatusCode.FAILED_PRECONDITION,
            "PROVIDER_AUTH_FAILED",
        ),
        (
            403,
            error_body("Country not supported", "permission_error"),
            {},
            grpc.StatusCode.PERMISSION_DENIED,
            "PROVIDER_PERMISSION_DENIED",
        ),
        (
            404,
            error_body("The model does not exist", "invalid_request_error", "model_not_found"),
            {},
            grpc.StatusCode.NOT_FOUND,
            "UPSTREAM_NOT_FOUND",
        ),
        (
            429,
            error_body("Rate limit reached", "requests", "rate_limit_exceeded"),
            {"retry-after": "7"},
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "UPSTREAM_RATE_LIMITED",
        ),
        (
            429,
            error_body("You exceeded your current quota", "insufficient_quota", "insufficient_quota"),
            {},
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "UPSTREAM_QUOTA_EXCEEDED",
        ),
        (
            500,
            error_body("The server had an error", "server_error"),
            {},
            grpc.StatusCode.UNAVAILABLE,
            "UPSTREAM_UNAVAILABLE",
        ),
        (
            503,
            error_body("Overloaded", "server_error"),
            {"retry-after-ms": "1500"},
            grpc.StatusCode.UNAVAILABLE,
            "UPSTREAM_UNAVAILABLE",
        ),
    ],
)
async def test_upstream_errors_map_to_canonical_codes(
    openai_gateway: RunningGateway,
    fake_openai: FakeOpenAI,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str],
    code: grpc.StatusCode,
    reason: str,
) -> None:
    for _ in range(2):
        fake_openai.script(Reply(status=status, json_body=body, headers=headers))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await openai_gateway.stub.Chat(chat("openai:gpt-4o-mini"))
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (code, reason)
    assert details.info.metadata["provider"] == "openai"
    assert details.info.metadata["model"] == "openai:gpt-4o-mini"
    assert details.info.metadata["upstream_status"] == str(status)
    assert OPENAI_TEST_KEY not in details.message
    assert OPENAI_TEST_KEY not in str(details.info)
    if "retry-after" in headers:
        assert details.retry is not None
        assert details.retry.retry_delay.seconds == 7
    if "retry-after-ms" in headers:
        assert details.retry is not None
        assert details.retry.retry_delay.ToMilliseconds() == 1500

    # Streams fail the same way before their first event; except that after a 429 saying when to
    # retry, the gateway holds its own calls to the provider back until then, refusing at once
    # what would wait longer than rate_limit.max_wait (5 s), without a request upstream.
    sent = len(fake_openai.requests)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream_events(openai_gateway, chat("openai:gpt-4o-mini"))
    stream_error = error_details(caught.value)
    if reason == "UPSTREAM_RATE_LIMITED":
        assert stream_error.info.reason == "PROVIDER_RATE_LIMITED"
        assert stream_error.retry is not None
        assert 6 < stream_error.retry.retry_delay.ToMilliseconds() / 1000 <= 7
        assert len(fake_openai.requests) == sent
    else:
        assert stream_error.info.reason == reason


async def test_malformed_bodies_are_unavailable_not_unknown(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        Reply(raw=b"{not json", headers={"Content-Type": "application/json"}),
        Reply(json_body={"object": "chat.completion", "choices": []}),
        Reply(sse=[chunk({"content": "partial"}), "{broken json"]),
    )
    for _ in range(2):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await openai_gateway.stub.Chat(chat("openai:gpt-4o-mini"))
        details = error_details(caught.value)
        assert (details.code, details.info.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_BAD_RESPONSE")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream_events(openai_gateway, chat("openai:gpt-4o-mini"))
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_BAD_RESPONSE")


async def test_error_event_inside_a_200_stream(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        Reply(
            sse=[
                chunk({"content": "Hel"}),
                {"error": {"message": "server overloaded", "type": "server_error"}},
            ]
        )
    )
    call = await stream_past_first_delta(openai_gateway, chat("openai:gpt-4o-mini"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read_event(call)
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_ERROR")
    assert "server overloaded" in details.message


async def test_stream_dropped_before_finishing(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        Reply(sse=[chunk({"content": "Hel"}), chunk({"content": "lo"}), "[DONE]"], end_early=True)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream_events(openai_gateway, chat("openai:gpt-4o-mini"))
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.UNAVAILABLE
    assert details.info.reason == "UPSTREAM_STREAM_INTERRUPTED"


async def test_a_stream_ended_by_done_without_a_finish_reason_is_interrupted_not_ok(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    """Some servers end a running stream early with `[DONE]` (llama-cpp-python does when another
    request arrives): without the finish reason, the stream did not finish."""
    fake_openai.script(Reply(sse=[chunk({"content": "Hel"}), chunk({"content": "lo"}), "[DONE]"]))
    call = openai_gateway.stub.ChatStream(chat_pb2.ChatStreamRequest(request=chat("openai:gpt-4o-mini")))
    texts: list[str] = []

    async def read_all() -> None:
        while (event := await read_event(call)) is not None:
            texts.append(event.text_delta.text)

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await read_all()
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_INTERRUPTED")
    assert "".join(texts) == "Hello"
    assert details.info.metadata["usage_estimated"] == "true"
    assert int(details.info.metadata["completion_tokens"]) >= 1


async def test_unreachable_provider_is_unavailable() -> None:
    async with running_gateway(openai_toml("http://127.0.0.1:9/v1")) as gw:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.stub.Chat(chat("openai:gpt-4o-mini"), timeout=10)
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE")


async def test_retryable_failure_falls_back_to_the_next_model(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Reply(status=503, json_body=error_body("Overloaded", "server_error")))
    reply = await openai_gateway.stub.Chat(
        chat("openai:gpt-4o-mini", "fall back please", fallback_models=["mock:echo"])
    )
    assert reply.model == "mock:echo"
    assert reply_text(reply.message) == "fall back please"
    assert reply.routing.fallback_used
    assert reply.routing.reason == "fallback"
    assert [(a.model, a.code) for a in reply.routing.attempts] == [
        ("openai:gpt-4o-mini", "UNAVAILABLE"),
        ("mock:echo", "OK"),
    ]
    assert reply.latency.upstream.ToTimedelta() >= reply.routing.attempts[0].latency.ToTimedelta()

    fake_openai.script(Reply(status=503, json_body=error_body("Overloaded", "server_error")))
    events = await stream_events(openai_gateway, chat("openai:gpt-4o-mini", fallback_models=["mock:echo"]))
    assert events[0].start.model == "mock:echo"
    assert events[-1].finish.routing.fallback_used


async def test_caller_errors_do_not_fall_back(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Reply(status=400, json_body=error_body("Bad", "invalid_request_error")))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await openai_gateway.stub.Chat(chat("openai:gpt-4o-mini", fallback_models=["mock:echo"]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(fake_openai.requests) == 1


async def test_client_cancel_closes_the_upstream_request(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        Reply(sse=text_chunks([f"w{i} " for i in range(200)], usage(5, 200)), chunk_delay=0.02)
    )
    call = await stream_past_first_delta(openai_gateway, chat("openai:gpt-4o-mini"))
    call.cancel()
    await fake_openai.disconnected()
    assert fake_openai.disconnects == 1
