"""A gateway key may be limited to some models or providers: any other is PERMISSION_DENIED where
the caller named it, left out where the gateway would have chosen it, and not listed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from llm_gateway.config import ConfigError, load_config
from llmgateway.v1 import catalog_pb2, chat_pb2
from tests.conftest import RunningGateway, chat, error_details, running_gateway

KEYS = """
[routing]
auto = ["mock:echo-large", "mock:echo"]

[providers.mock.models.echo-free]
fallbacks = ["mock:echo-large", "mock:echo"]

[[auth.keys]]
name = "limited"
key = "limited-key-0123456789ab"
models = ["mock:echo", "mock:echo-free"]
[[auth.keys]]
name = "mock-only"
key = "mock-only-key-0123456789"
providers = ["mock"]
"""
LIMITED = (("authorization", "Bearer limited-key-0123456789ab"),)
MOCK_ONLY = (("authorization", "Bearer mock-only-key-0123456789"),)


@pytest.fixture
async def gateway() -> AsyncIterator[RunningGateway]:
    async with running_gateway(KEYS) as gw:
        yield gw


async def refused(call: object) -> tuple[str, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    details = error_details(caught.value)
    assert details.code is grpc.StatusCode.PERMISSION_DENIED
    return details.info.reason, details.info.metadata["field"]


async def test_a_model_the_key_may_not_use_is_refused_naming_the_field(gateway: RunningGateway) -> None:
    reply = await gateway.stub.Chat(chat("mock:echo", "allowed"), metadata=LIMITED)
    assert reply.model == "mock:echo"
    assert await refused(gateway.stub.Chat(chat("mock:echo-large"), metadata=LIMITED)) == (
        "MODEL_NOT_ALLOWED",
        "model",
    )
    assert await refused(
        gateway.stub.Chat(chat("mock:echo", fallback_models=["mock:echo-large"]), metadata=LIMITED)
    ) == ("MODEL_NOT_ALLOWED", "fallback_models[0]")
    stream = gateway.stub.ChatStream(
        chat_pb2.ChatStreamRequest(request=chat("mock:echo-large")), metadata=LIMITED
    )

    async def drain() -> None:
        async for _ in stream:
            pass

    assert await refused(drain()) == ("MODEL_NOT_ALLOWED", "request.model")
    estimate = catalog_pb2.EstimateCostRequest(
        request=chat("mock:echo"), candidate_models=["mock:echo", "mock:echo-large"]
    )
    assert await refused(gateway.stub.EstimateCost(estimate, metadata=LIMITED)) == (
        "MODEL_NOT_ALLOWED",
        "candidate_models[1]",
    )


async def test_models_the_gateway_chooses_are_only_those_the_key_may_use(gateway: RunningGateway) -> None:
    auto = await gateway.stub.Chat(chat("auto"), metadata=LIMITED)
    assert auto.model == "mock:echo"  # mock:echo-large, first for "auto", is not the key's
    assert [c for c in auto.routing.candidates] == ["mock:echo"]
    free = await gateway.stub.Chat(chat("mock:echo-free"), metadata=LIMITED)
    assert list(free.routing.candidates) == ["mock:echo-free", "mock:echo"]  # a configured fallback left out
    unlimited = await gateway.stub.Chat(chat("mock:echo-free"), metadata=MOCK_ONLY)
    assert list(unlimited.routing.candidates) == ["mock:echo-free", "mock:echo-large", "mock:echo"]


async def test_list_models_shows_a_key_what_it_may_use(gateway: RunningGateway) -> None:
    limited = await gateway.stub.ListModels(catalog_pb2.ListModelsRequest(), metadata=LIMITED)
    assert sorted(m.id for m in limited.models) == ["mock:echo", "mock:echo-free"]
    assert limited.total_size == 2
    mock_only = await gateway.stub.ListModels(catalog_pb2.ListModelsRequest(), metadata=MOCK_ONLY)
    assert {m.id.partition(":")[0] for m in mock_only.models} == {"mock"}


def test_a_model_entry_must_name_its_provider(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[[auth.keys]]\nname = "k"\nkey = "k-0123456789abcdef"\nmodels = ["gpt-4o"]\n')
    with pytest.raises(ConfigError, match=r"models\[0\]: 'gpt-4o' is not 'provider:model'"):
        load_config(config)
