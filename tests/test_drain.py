"""Calls still running when the grace period runs out end with a status of their own, with an
ErrorInfo (and, for a stream, what it produced), and the access log says so."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmgateway.v1 import chat_pb2
from tests.conftest import chat, error_details, openai_toml, read_event, running_gateway
from tests.fakes.openai import FakeOpenAI, Reply, completion, text_chunks, usage


async def read_to_the_end(stream: grpc.aio.UnaryStreamCall[Any, Any]) -> None:
    while await read_event(stream) is not None:
        pass


async def test_calls_past_the_grace_period_end_grace_period_expired_and_watchers_are_not_waited_for(
    fake_openai: FakeOpenAI, log_lines: list[str]
) -> None:
    toml = openai_toml(fake_openai.base_url) + "[providers.mock]\nchunk_delay = 0.2\n"
    async with running_gateway(toml) as gw:
        watch = health_pb2_grpc.HealthStub(gw.channel).Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        long_text = " ".join(["slow"] * 100)  # 20 s of chunks
        stream = gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=chat("mock:echo", long_text)))
        for _ in range(3):  # the start and two words
            assert await read_event(stream) is not None
        fake_openai.script(Reply(delay=30))  # an upstream that never answers
        unary = asyncio.ensure_future(gw.stub.Chat(chat("openai:gpt-4o-mini", "waiting")))
        await fake_openai.received(1)
        assert gw.server.drain.in_flight == 2

        await asyncio.wait_for(gw.server.stop(0.5), 10)

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await read_to_the_end(stream)
        streamed = error_details(caught.value)
        assert (streamed.code, streamed.info.reason) == (grpc.StatusCode.UNAVAILABLE, "GRACE_PERIOD_EXPIRED")
        assert int(streamed.info.metadata["completion_tokens"]) >= 2
        assert streamed.info.metadata["usage_estimated"] == "true"
        assert streamed.info.metadata["request_id"]

        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unary
        waited = error_details(caught.value)
        assert (waited.code, waited.info.reason) == (grpc.StatusCode.UNAVAILABLE, "GRACE_PERIOD_EXPIRED")
        assert await fake_openai.disconnected() is not None  # the upstream request was closed

    access = [json.loads(line) for line in log_lines if '"access"' in line]
    assert sorted(entry["status"] for entry in access) == ["UNAVAILABLE", "UNAVAILABLE"]
    drain = [json.loads(line) for line in log_lines if "drain_timeout" in line]
    assert drain[0]["cancelled_calls"] == 2


async def test_a_call_whose_deadline_passed_is_logged_as_deadline_exceeded(
    fake_openai: FakeOpenAI, log_lines: list[str]
) -> None:
    async with running_gateway(openai_toml(fake_openai.base_url)) as gw:
        fake_openai.script(Reply(delay=5))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.stub.Chat(chat("openai:gpt-4o-mini"), timeout=0.3)
        assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        await asyncio.sleep(0.1)
    access = [json.loads(line) for line in log_lines if '"access"' in line]
    assert [entry["status"] for entry in access] == ["DEADLINE_EXCEEDED"]


async def test_a_reply_over_the_size_limit_is_refused_with_its_cost_and_streams_in_pieces(
    fake_openai: FakeOpenAI,
) -> None:
    toml = openai_toml(fake_openai.base_url) + "[server]\nmax_message_bytes = 100000\n"
    big = "word " * 30_000  # 150,000 characters
    async with running_gateway(toml) as gw:
        fake_openai.script(Reply(json_body=completion(big, usage_=usage(12, 30_000))))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.stub.Chat(chat("openai:gpt-4o-mini"))
        details = error_details(caught.value)
        assert (details.code, details.info.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "REPLY_TOO_LARGE")
        assert details.info.metadata["completion_tokens"] == "30000"
        assert details.info.metadata["usage_estimated"] == "false"
        assert details.info.metadata["cost"]  # the provider was called and charged
        assert int(details.info.metadata["reply_bytes"]) > 100_000

        fake_openai.script(Reply(sse=text_chunks([big], usage(12, 30_000))))
        events = [
            e
            async for e in gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=chat("openai:gpt-4o-mini")))
        ]
        deltas = [e.text_delta.text for e in events if e.HasField("text_delta")]
        assert len(deltas) > 1
        assert max(len(d) for d in deltas) < 100_000
        assert "".join(deltas) == big
        assert events[-1].finish.usage.completion_tokens == 30_000
