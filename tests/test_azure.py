"""Azure OpenAI through the gateway: deployment URLs, api-version, the api-key header, Azure's
stream shape (a leading prompt-filter chunk), content filtering and errors; the official SDK's
Azure client as an oracle for the fake."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import grpc
import openai
import pytest

from llm_gateway.config import ConfigError, load_config
from llmgateway.v1 import accounting_pb2, chat_pb2
from tests.conftest import NO_RETRIES, RunningGateway, chat, error_details, reply_text, running_gateway
from tests.fakes.openai import (
    FakeOpenAI,
    Reply,
    azure_prompt_filter_chunk,
    completion,
    error_body,
    text_chunks,
    usage,
)

AZURE_KEY = "azure-test-key-0123456789abcdef"


def azure_toml(endpoint: str, extra: str = "") -> str:
    return f"""
[providers.azure]
kind = "azure_openai"
endpoint = "{endpoint}"
api_key = "{AZURE_KEY}"
{NO_RETRIES}
{extra}
[providers.azure.models."gpt-4o-mini"]
deployment = "prod-4o-mini"
"""


@pytest.fixture
async def azure_gateway(fake_openai: FakeOpenAI) -> AsyncIterator[RunningGateway]:
    async with running_gateway(azure_toml(fake_openai.azure_endpoint)) as gw:
        yield gw


async def test_unary_goes_to_the_deployment_with_the_api_key_header(
    azure_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Reply(json_body=completion("Hello from Azure", usage_=usage(12, 4))))
    reply = await azure_gateway.stub.Chat(chat("azure:gpt-4o-mini"))
    assert reply_text(reply.message) == "Hello from Azure"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (12, 4)
    # Priced from the catalog's Azure entry for the deployment's model.
    assert reply.cost.status == accounting_pb2.PRICING_STATUS_PRICED
    assert Decimal(reply.cost.total) > 0

    [sent] = fake_openai.requests
    assert sent.path == "/openai/deployments/prod-4o-mini/chat/completions"
    assert sent.query == {"api-version": "2024-10-21"}
    assert sent.headers["api-key"] == AZURE_KEY
    assert "authorization" not in sent.headers
    assert sent.body["messages"] == [{"role": "user", "content": "Hello there, gateway"}]


async def test_an_unlisted_model_is_its_own_deployment(
    azure_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Reply(json_body=completion("ok")))
    await azure_gateway.stub.Chat(chat("azure:my-gpt-4o"))
    assert fake_openai.requests[0].path == "/openai/deployments/my-gpt-4o/chat/completions"


async def test_api_version_is_configurable(fake_openai: FakeOpenAI) -> None:
    toml = azure_toml(fake_openai.azure_endpoint, 'api_version = "2025-04-01-preview"')
    async with running_gateway(toml) as gw:
        fake_openai.script(Reply(json_body=completion("ok")))
        await gw.stub.Chat(chat("azure:gpt-4o-mini"))
    assert fake_openai.requests[0].query == {"api-version": "2025-04-01-preview"}


async def test_stream_passes_over_the_prompt_filter_chunk(
    azure_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    events = [azure_prompt_filter_chunk(), *text_chunks(["Hi", " from", " Azure"], usage(9, 3))]
    fake_openai.script(Reply(sse=events))
    stream = azure_gateway.stub.ChatStream(chat_pb2.ChatStreamRequest(request=chat("azure:gpt-4o-mini")))
    got = [event async for event in stream]
    assert got[0].start.model == "azure:gpt-4o-mini"
    assert [e.text_delta.text for e in got if e.HasField("text_delta")] == ["Hi", " from", " Azure"]
    finish = got[-1].finish
    assert (finish.usage.prompt_tokens, finish.usage.completion_tokens) == (9, 3)
    assert not finish.usage.estimated
    assert finish.provider_response_id == "chatcmpl-fake123"  # from the first chunk that has one
    assert fake_openai.requests[0].body["stream_options"] == {"include_usage": True}


async def test_content_filter_is_a_finish_reason(
    azure_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(Reply(json_body=completion(None, finish_reason="content_filter")))
    reply = await azure_gateway.stub.Chat(chat("azure:gpt-4o-mini"))
    assert reply.finish_reason == chat_pb2.FINISH_REASON_CONTENT_FILTER


async def test_a_rejected_key_is_an_operator_error_without_the_key(
    azure_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    body = {
        "error": {"code": "401", "message": f"Access denied due to invalid subscription key {AZURE_KEY}."}
    }
    fake_openai.script(Reply(status=401, json_body=body))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await azure_gateway.stub.Chat(chat("azure:gpt-4o-mini"))
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PROVIDER_AUTH_FAILED",
    )
    assert details.info.metadata["provider"] == "azure"
    assert AZURE_KEY not in details.message
    assert "providers.azure.api_key" in details.message


async def test_throttling_is_resource_exhausted_with_retry_info(
    azure_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        Reply(
            status=429,
            json_body=error_body("Rate limit exceeded", "rate_limit"),
            headers={"Retry-After": "7"},
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await azure_gateway.stub.Chat(chat("azure:gpt-4o-mini"))
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "UPSTREAM_RATE_LIMITED",
    )
    assert details.retry is not None
    assert details.retry.retry_delay.seconds == 7


async def test_the_official_azure_client_parses_the_fake(fake_openai: FakeOpenAI) -> None:
    """The oracle: the openai SDK's Azure client reads the fake's replies, unary and streamed."""
    client = openai.AsyncAzureOpenAI(
        azure_endpoint=fake_openai.azure_endpoint, api_key=AZURE_KEY, api_version="2024-10-21"
    )
    fake_openai.script(
        Reply(json_body=completion("unary", usage_=usage(3, 1))),
        Reply(sse=[azure_prompt_filter_chunk(), *text_chunks(["a", "b"], usage(3, 2))]),
    )
    reply = await client.chat.completions.create(
        model="prod-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.choices[0].message.content == "unary"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 1
    stream = await client.chat.completions.create(
        model="prod-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[0].choices == []
    assert chunks[0].usage is None
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "ab"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 2
    assert fake_openai.requests[0].path == "/openai/deployments/prod-4o-mini/chat/completions"
    await client.close()


def test_enabled_without_an_endpoint_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[providers.azure]\nkind = "azure_openai"\nenabled = true\napi_key = "k"\n')
    with pytest.raises(ConfigError, match="endpoint"):
        load_config(config, {})


def test_a_deployment_name_is_checked(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(azure_toml("https://x.openai.azure.com").replace("prod-4o-mini", "prod/4o"))
    with pytest.raises(ConfigError, match="deployment"):
        load_config(config, {})


def test_the_default_azure_entry_stays_off_until_its_variables_are_set() -> None:
    from llm_gateway.providers import enabled_providers

    assert "azure" not in enabled_providers(load_config(None, {}))
    env = {"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com", "AZURE_OPENAI_API_KEY": "k" * 32}
    assert "azure" in enabled_providers(load_config(None, env))
