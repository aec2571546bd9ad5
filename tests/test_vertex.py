"""Google Vertex AI through the gateway, against a fake that speaks its wire format and its OAuth2
token exchange (checked with google-genai and AnthropicVertex as oracles): Gemini and Claude,
unary and streamed, on their Vertex URLs, with exact cost; a service-account key; the token
refreshed in the background before it expires while calls go on;
refused credentials and an expired token mapped; the global location; the OpenAI door."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest

from llmgateway.v1 import chat_pb2
from tests.conftest import chat, error_details, reply_text, running_gateway
from tests.fakes import anthropic as claude
from tests.fakes import gemini
from tests.fakes.vertex import (
    ANTHROPIC_VERSION,
    CLAUDE_MODEL,
    GEMINI_MODEL,
    LOCATION,
    PROJECT,
    FakeVertex,
    new_key,
)

GEMINI_PRICE = (
    'price = { input_per_million = "0.30", cached_input_per_million = "0.03", output_per_million = "2.50" }'
)
CLAUDE_PRICE = (
    'price = { input_per_million = "3", cached_input_per_million = "0.30", '
    'cache_write_per_million = "3.75", output_per_million = "15" }'
)


def toml(fake: FakeVertex, credentials_file: Path, location: str = LOCATION) -> str:
    return f"""
[providers.vertex]
project = "{PROJECT}"
location = "{location}"
base_url = "{fake.base_url}"
credentials_file = "{credentials_file}"
retry = {{ max_retries = 0 }}
[providers.vertex.models."{GEMINI_MODEL}"]
{GEMINI_PRICE}
[providers.vertex.models."{CLAUDE_MODEL}"]
{CLAUDE_PRICE}
"""


@pytest.fixture
async def fake() -> AsyncIterator[FakeVertex]:
    async with FakeVertex() as server:
        yield server


@pytest.fixture
def key_file(fake: FakeVertex, tmp_path: Path) -> Path:
    return fake.service_account_file(tmp_path / "key.json")


async def stream_events(gw: Any, request: chat_pb2.ChatRequest) -> list[chat_pb2.ChatStreamResponse]:
    return [event async for event in gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request))]


async def test_gemini_on_vertex_unary_and_streamed(fake: FakeVertex, key_file: Path) -> None:
    fake.script(
        gemini.Reply(json_body=gemini.text_response("Hallo", gemini.usage_metadata(2_000, 40, cached=1_500))),
        gemini.Reply(chunks=gemini.text_chunks(["Hal", "lo ", "again"], gemini.usage_metadata(12, 3))),
    )
    async with running_gateway(toml(fake, key_file)) as gw:
        reply = await gw.stub.Chat(chat(f"vertex:{GEMINI_MODEL}", "Say hello"))
        streamed = await stream_events(gw, chat(f"vertex:{GEMINI_MODEL}", "Again"))
    assert reply_text(reply.message) == "Hallo"
    million = Decimal(1_000_000)
    assert (
        Decimal(reply.cost.total)
        == (500 * Decimal("0.30") + 1_500 * Decimal("0.03") + 40 * Decimal("2.50")) / million
    )
    assert "".join(e.text_delta.text for e in streamed if e.HasField("text_delta")) == "Hallo again"
    unary, stream = fake.calls
    assert (unary.version, unary.project, unary.location, unary.publisher, unary.model, unary.api_method) == (
        "v1",
        PROJECT,
        LOCATION,
        "google",
        GEMINI_MODEL,
        "generateContent",
    )
    assert (stream.api_method, stream.query) == ("streamGenerateContent", {"alt": "sse"})
    assert unary.body["contents"] == [{"role": "user", "parts": [{"text": "Say hello"}]}]
    # One token exchange, its token on both calls.
    assert fake.token_exchanges == 1
    assert unary.token == stream.token == fake.exchanges[0].token


async def test_claude_on_vertex_unary_and_streamed(fake: FakeVertex, key_file: Path) -> None:
    fake.script(
        claude.Reply(
            json_body=claude.message(
                [claude.text_block("Bonjour")],
                usage_=claude.usage(100, 20, cache_read=3_000, cache_creation=500),
            )
        ),
        claude.Reply(events=claude.text_events(["Bon", "soir"], claude.usage(12, 2))),
    )
    async with running_gateway(toml(fake, key_file)) as gw:
        reply = await gw.stub.Chat(chat(f"vertex:{CLAUDE_MODEL}", "Say hello in French"))
        streamed = await stream_events(gw, chat(f"vertex:{CLAUDE_MODEL}", "Evening"))
    assert reply_text(reply.message) == "Bonjour"
    million = Decimal(1_000_000)
    expected = (
        100 * Decimal(3) + 3_000 * Decimal("0.30") + 500 * Decimal("3.75") + 20 * Decimal(15)
    ) / million
    assert Decimal(reply.cost.total) == expected
    assert "".join(e.text_delta.text for e in streamed if e.HasField("text_delta")) == "Bonsoir"
    unary, stream = fake.calls
    assert (unary.publisher, unary.model, unary.api_method, stream.api_method) == (
        "anthropic",
        CLAUDE_MODEL,
        "rawPredict",
        "streamRawPredict",
    )
    assert unary.body["anthropic_version"] == ANTHROPIC_VERSION
    assert "model" not in unary.body
    assert unary.body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Say hello in French"}]}
    ]
    assert stream.body["stream"] is True
    assert all(call.refused is None for call in fake.calls)


async def test_the_token_is_renewed_in_the_background_before_it_expires(
    fake: FakeVertex, key_file: Path
) -> None:
    # Two minutes of life: google-auth counts it as expiring (under 3m45s left), but it is still
    # good, so a call goes on with it while a new one is fetched.
    fake.expires_in = 120
    async with running_gateway(toml(fake, key_file)) as gw:
        await gw.stub.Chat(chat(f"vertex:{GEMINI_MODEL}", "one"))
        fake.expires_in = 3600  # the next token lasts
        await gw.stub.Chat(chat(f"vertex:{GEMINI_MODEL}", "two"))
        for _ in range(100):
            if fake.token_exchanges == 2:
                break
            await asyncio.sleep(0.02)
        await gw.stub.Chat(chat(f"vertex:{GEMINI_MODEL}", "three"))
    first, second = (e.token for e in fake.exchanges[:2])
    assert [c.token for c in fake.calls] == [first, first, second]
    assert fake.token_exchanges == 2


async def test_the_global_location(fake: FakeVertex, key_file: Path) -> None:
    async with running_gateway(toml(fake, key_file, location="global")) as gw:
        reply = await gw.stub.Chat(chat(f"vertex:{GEMINI_MODEL}", "from everywhere"))
    assert reply_text(reply.message) == "from everywhere"
    assert fake.calls[0].location == "global"


async def test_refused_credentials_and_an_expired_token_are_auth_failures(
    fake: FakeVertex, tmp_path: Path
) -> None:
    async with FakeVertex(key=new_key()) as other:
        foreign = other.service_account_file(tmp_path / "other.json")
        # Signed with another key, exchanged at this fake: refused.
        foreign.write_text(foreign.read_text().replace(other.token_uri, fake.token_uri))
    async with running_gateway(toml(fake, foreign)) as gw:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gw.stub.Chat(chat(f"vertex:{GEMINI_MODEL}", "x"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(refused.value).info.reason == "PROVIDER_AUTH_FAILED"
    assert fake.calls == []
    key_file = fake.service_account_file(tmp_path / "key.json")
    async with running_gateway(toml(fake, key_file)) as gw:
        await gw.stub.Chat(chat(f"vertex:{GEMINI_MODEL}", "ok"))
        fake.expire()  # revoked or expired at Google while the gateway still holds it
        with pytest.raises(grpc.aio.AioRpcError) as expired:
            await gw.stub.Chat(chat(f"vertex:{GEMINI_MODEL}", "x"))
        # The refused token is dropped: the next call exchanges for a new one and is served.
        served = await gw.stub.Chat(chat(f"vertex:{GEMINI_MODEL}", "again"))
    assert error_details(expired.value).info.reason == "PROVIDER_AUTH_FAILED"
    assert "must fix providers.vertex's Google credentials" in (expired.value.details() or "")
    assert [c.refused for c in fake.calls[-2:]] == ["ACCESS_TOKEN_EXPIRED", None]
    assert reply_text(served.message) == "again"
    assert fake.calls[-1].token != fake.calls[-2].token


async def test_the_openai_door_serves_claude_on_vertex(fake: FakeVertex, key_file: Path) -> None:
    async with running_gateway(toml(fake, key_file)) as gw:
        client = openai.AsyncOpenAI(base_url=f"{gw.http_url}/v1", api_key="x", max_retries=0, timeout=30)
        stream = await client.chat.completions.create(
            model=f"vertex:{CLAUDE_MODEL}",
            messages=[{"role": "user", "content": "Streamed from Vertex"}],
            stream=True,
        )
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(pieces) == "Streamed from Vertex"
    assert fake.calls[-1].api_method == "streamRawPredict"


async def test_a_credentials_file_that_cannot_be_read_is_an_auth_failure(
    fake: FakeVertex, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    for path in (tmp_path / "missing.json", broken):
        async with running_gateway(toml(fake, path)) as gw:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await gw.stub.Chat(chat(f"vertex:{GEMINI_MODEL}", "x"))
        assert (refused.value.code(), error_details(refused.value).info.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "PROVIDER_AUTH_FAILED",
        )
    assert fake.calls == []
