"""Gateway API keys, request ids and the JSON access log."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmgateway.v1 import catalog_pb2, chat_pb2
from tests.conftest import RunningGateway, chat, error_details, metadata_value, running_gateway

KEY = "team-a-key-0123456789abcdef"
OTHER_KEY = "team-b-key-abcdef0123456789"
AUTH_TOML = f"""
[auth]
keys = [
  {{ name = "team-a", key = "${{TEAM_A_KEY}}" }},
  {{ name = "team-b", sha256 = "{hashlib.sha256(OTHER_KEY.encode()).hexdigest()}" }},
]
"""


@pytest.fixture
async def keyed() -> AsyncIterator[RunningGateway]:
    async with running_gateway(AUTH_TOML, env={"TEAM_A_KEY": KEY}) as gw:
        yield gw


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ((), "MISSING_API_KEY"),
        (bearer("wrong-key"), "INVALID_API_KEY"),
        ((("authorization", f"Basic {KEY}"),), "INVALID_API_KEY"),
        ((("authorization", "Bearer "),), "INVALID_API_KEY"),
    ],
)
async def test_missing_or_wrong_key_is_unauthenticated(
    keyed: RunningGateway, metadata: tuple[tuple[str, str], ...], reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await keyed.stub.Chat(chat("mock:echo"), metadata=metadata)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.UNAUTHENTICATED
    assert details.info.reason == reason
    assert KEY not in details.message

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in keyed.stub.ChatStream(
            chat_pb2.ChatStreamRequest(request=chat("mock:echo")), metadata=metadata
        ):
            pass
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_plain_and_hashed_keys_both_work(keyed: RunningGateway) -> None:
    for key in (KEY, OTHER_KEY):
        reply = await keyed.stub.Chat(chat("mock:echo"), metadata=bearer(key))
        assert reply.model == "mock:echo"
    models = await keyed.stub.ListModels(catalog_pb2.ListModelsRequest(), metadata=bearer(KEY))
    assert models.total_size > 0


async def test_health_and_reflection_need_no_key(keyed: RunningGateway) -> None:
    reply = await health_pb2_grpc.HealthStub(keyed.channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(keyed.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = [r async for r in stub.ServerReflectionInfo(iter([request]))]
    names = {s.name for s in responses[0].list_services_response.service}
    assert "llmgateway.v1.GatewayService" in names


async def test_request_id_is_taken_from_the_caller(gateway: RunningGateway) -> None:
    call = gateway.stub.Chat(chat("mock:echo"), metadata=(("x-request-id", "caller-id-42"),))
    reply = await call
    assert reply.request_id == "caller-id-42"
    assert metadata_value(await call.trailing_metadata(), "x-request-id") == "caller-id-42"

    stream = gateway.stub.ChatStream(
        chat_pb2.ChatStreamRequest(request=chat("mock:echo")), metadata=(("x-request-id", "stream-id-7"),)
    )
    events = [e async for e in stream]
    assert events[0].start.request_id == "stream-id-7"
    assert metadata_value(await stream.trailing_metadata(), "x-request-id") == "stream-id-7"


async def test_request_id_is_minted_when_missing_or_invalid(gateway: RunningGateway) -> None:
    minted = {(await gateway.stub.Chat(chat("mock:echo"))).request_id for _ in range(3)}
    assert len(minted) == 3
    assert all(len(i) == 32 for i in minted)
    too_long = await gateway.stub.Chat(chat("mock:echo"), metadata=(("x-request-id", "x" * 129),))
    assert too_long.request_id != "x" * 129
    assert len(too_long.request_id) == 32
    spaced = await gateway.stub.Chat(chat("mock:echo"), metadata=(("x-request-id", "has space"),))
    assert spaced.request_id != "has space"


async def test_errors_carry_the_request_id(keyed: RunningGateway) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await keyed.stub.Chat(chat("mock:echo"), metadata=(("x-request-id", "err-id-1"),))
    assert error_details(caught.value).info.metadata["request_id"] == "err-id-1"
    assert metadata_value(caught.value.trailing_metadata(), "x-request-id") == "err-id-1"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await keyed.stub.Chat(
            chat("mock:echo", generation=chat_pb2.GenerationConfig(temperature=7)),
            metadata=(("x-request-id", "err-id-2"), *bearer(KEY)),
        )
    assert error_details(caught.value).info.metadata["request_id"] == "err-id-2"


async def test_access_log_has_one_json_line_per_call_and_no_secret(
    keyed: RunningGateway, log_lines: list[str]
) -> None:
    request = chat("mock:echo", caller=chat_pb2.CallerMetadata(user="u-1", project="p-9"))
    await keyed.stub.Chat(request, metadata=(("x-request-id", "log-id-1"), *bearer(KEY)))
    with pytest.raises(grpc.aio.AioRpcError):
        await keyed.stub.Chat(
            chat("mock:echo"), metadata=(("x-request-id", "log-id-2"), *bearer("nope-nope"))
        )
    events = [
        e
        async for e in keyed.stub.ChatStream(
            chat_pb2.ChatStreamRequest(request=chat("mock:echo")),
            metadata=(("x-request-id", "log-id-3"), *bearer(OTHER_KEY)),
        )
    ]
    assert events

    access = [json.loads(line) for line in log_lines if '"event":"access"' in line]
    by_id = {entry["request_id"]: entry for entry in access}
    assert len(access) == 3
    assert set(by_id) == {"log-id-1", "log-id-2", "log-id-3"}

    ok = by_id["log-id-1"]
    assert ok["method"] == "Chat"
    assert ok["status"] == "OK"
    assert (ok["model"], ok["provider"], ok["api_key"]) == ("mock:echo", "mock", "team-a")
    assert ok["prompt_tokens"] > 0
    assert ok["completion_tokens"] > 0
    assert Decimal(ok["cost"]) > 0
    assert ok["cost_status"] == "priced"
    assert (ok["user"], ok["project"]) == ("u-1", "p-9")
    assert ok["duration_ms"] >= 0

    denied = by_id["log-id-2"]
    assert denied["status"] == "UNAUTHENTICATED"
    assert "api_key" not in denied

    streamed = by_id["log-id-3"]
    assert (streamed["method"], streamed["status"], streamed["api_key"]) == ("ChatStream", "OK", "team-b")

    everything = "\n".join(log_lines)
    for secret in (KEY, OTHER_KEY, "nope-nope"):
        assert secret not in everything
