"""AWS Bedrock's Converse API through the gateway, against a fake that speaks its wire format and
verifies every SigV4 signature with botocore's own signer: the exact Converse body, unary and
event-stream replies (under every chunk split) with tool use, reasoning left with the model, cache
reads and writes and exact cost; errors and stream exceptions mapped; static keys, a session
token, a profile from the shared credentials file, a Bedrock API key; through the gRPC stubs and
the OpenAI door."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest

from llmgateway.v1 import chat_pb2, content_pb2
from tests.conftest import chat, error_details, reply_text, running_gateway, violated_fields
from tests.fakes.bedrock import (
    ACCESS_KEY_ID,
    INFERENCE_PROFILE_ID,
    MODEL_ID,
    SECRET_ACCESS_KEY,
    FakeBedrock,
    Reply,
    cache_detail,
    converse_response,
    error_reply,
    exception_frame,
    message_start,
    reasoning_block,
    text_block,
    text_delta,
    text_events,
    tool_use_block,
    tool_use_events,
    usage,
)
from tests.test_openai import struct

MODEL = f"bedrock:{MODEL_ID}"
PROFILE_MODEL = f"bedrock:{INFERENCE_PROFILE_ID}"
# Configured prices, per million tokens (Claude 3.5 Haiku's on Bedrock), so costs are exact.
PRICE = (
    'price = { input_per_million = "0.80", cached_input_per_million = "0.08", '
    'cache_write_per_million = "1.00", output_per_million = "4.00" }'
)


def toml(fake: FakeBedrock, credentials: str | None = None, extra: str = "") -> str:
    credentials = (
        credentials or f'access_key_id = "{ACCESS_KEY_ID}"\nsecret_access_key = "{SECRET_ACCESS_KEY}"'
    )
    return f"""
[providers.bedrock]
kind = "bedrock"
region = "us-east-1"
endpoint_url = "{fake.base_url}"
{credentials}
retry = {{ max_retries = 0 }}
{extra}
[providers.bedrock.models."{MODEL_ID}"]
capabilities = ["streaming", "tools", "vision", "json_schema", "reasoning"]
{PRICE}
[providers.bedrock.models."{INFERENCE_PROFILE_ID}"]
{PRICE}
"""


@pytest.fixture
async def fake() -> AsyncIterator[FakeBedrock]:
    async with FakeBedrock() as server:
        yield server


async def stream_events(gw: Any, request: chat_pb2.ChatRequest) -> list[chat_pb2.ChatStreamResponse]:
    return [event async for event in gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request))]


async def test_request_translation_is_exact_and_signed(fake: FakeBedrock) -> None:
    request = chat_pb2.ChatRequest(
        model=MODEL,
        messages=[
            content_pb2.Message(role=content_pb2.ROLE_SYSTEM, content=[content_pb2.Part(text="Be brief.")]),
            content_pb2.Message(
                role=content_pb2.ROLE_USER, content=[content_pb2.Part(text="Weather in Paris?")]
            ),
            content_pb2.Message(
                role=content_pb2.ROLE_ASSISTANT,
                tool_calls=[
                    content_pb2.ToolCall(id="tu_1", name="get_weather", arguments='{"city": "Paris"}')
                ],
            ),
            content_pb2.Message(
                role=content_pb2.ROLE_TOOL, tool_call_id="tu_1", content=[content_pb2.Part(text="18C")]
            ),
        ],
        tools=[
            content_pb2.Tool(
                name="get_weather",
                description="Weather for a city",
                parameters=struct({"type": "object", "properties": {"city": {"type": "string"}}}),
            )
        ],
        tool_choice=content_pb2.ToolChoice(mode=content_pb2.TOOL_CHOICE_MODE_REQUIRED),
        generation=chat_pb2.GenerationConfig(max_tokens=300, temperature=0.5, top_k=40, stop=["END"]),
        response_format=content_pb2.ResponseFormat(
            type=content_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            json_schema=struct({"type": "object"}),
            schema_name="answer",
        ),
    )
    async with running_gateway(toml(fake)) as gw:
        await gw.stub.Chat(request)
    sent = fake.calls[-1]
    assert sent.verified
    assert sent.scheme == "sigv4"
    assert (sent.operation, sent.model_id) == ("converse", MODEL_ID)
    assert sent.raw_path == "/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse"
    assert sent.body == {
        "messages": [
            {"role": "user", "content": [{"text": "Weather in Paris?"}]},
            {
                "role": "assistant",
                "content": [
                    {"toolUse": {"toolUseId": "tu_1", "name": "get_weather", "input": {"city": "Paris"}}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {"toolResult": {"toolUseId": "tu_1", "content": [{"text": "18C"}], "status": "success"}}
                ],
            },
        ],
        "system": [{"text": "Be brief."}],
        "inferenceConfig": {"maxTokens": 300, "temperature": 0.5, "stopSequences": ["END"]},
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "get_weather",
                        "description": "Weather for a city",
                        "inputSchema": {
                            "json": {"type": "object", "properties": {"city": {"type": "string"}}}
                        },
                    }
                }
            ],
            "toolChoice": {"any": {}},
        },
        "outputConfig": {
            "textFormat": {
                "type": "json_schema",
                "structure": {"jsonSchema": {"schema": '{"type": "object"}', "name": "answer"}},
            }
        },
        "additionalModelRequestFields": {"top_k": 40},
    }


async def test_a_unary_reply_with_cache_reads_and_writes_is_costed_exactly(fake: FakeBedrock) -> None:
    fake.script(
        Reply(
            json_body=converse_response(
                [reasoning_block("Let me think.", "sig"), text_block("Bonjour"), text_block("!")],
                usage_=usage(100, 20, cache_read=3_000, cache_write=500),
            )
        ),
        Reply(json_body=converse_response([tool_use_block("tu_9", "lookup", {"q": "x"})], "tool_use")),
        Reply(json_body=converse_response([text_block("Cut")], "max_tokens")),
    )
    async with running_gateway(toml(fake)) as gw:
        reply = await gw.stub.Chat(chat(MODEL, "Say hello in French"))
        called = await gw.stub.Chat(chat(MODEL, "Look it up"))
        cut = await gw.stub.Chat(chat(MODEL, "Long story"))
    assert (reply_text(reply.message), reply.finish_reason) == ("Bonjour!", chat_pb2.FINISH_REASON_STOP)
    u = reply.usage
    assert (u.prompt_tokens, u.completion_tokens, u.cache_read_tokens, u.cache_write_tokens) == (
        3_600,
        20,
        3_000,
        500,
    )
    million = Decimal(1_000_000)
    expected = (
        100 * Decimal("0.80") + 3_000 * Decimal("0.08") + 500 * Decimal("1.00") + 20 * Decimal("4.00")
    ) / million
    assert Decimal(reply.cost.total) == expected
    assert Decimal(reply.cost.cache_savings) == 3_000 * (Decimal("0.80") - Decimal("0.08")) / million
    assert called.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    assert [(c.id, c.name, json.loads(c.arguments)) for c in called.message.tool_calls] == [
        ("tu_9", "lookup", {"q": "x"})
    ]
    assert cut.finish_reason == chat_pb2.FINISH_REASON_LENGTH


@pytest.mark.parametrize("split", [(1,), (2, 3, 5), (13,), (4096,)])
async def test_streams_decode_under_every_chunk_split(fake: FakeBedrock, split: tuple[int, ...]) -> None:
    fake.script(
        Reply(frames=text_events(["Hel", "lo ", "there"], usage(12, 3)), chunk_sizes=split),
        Reply(
            frames=tool_use_events(
                ["Checking. "], "tu_2", "get_weather", ['{"city"', ': "Oslo"}'], usage(20, 9)
            ),
            chunk_sizes=split,
        ),
    )
    async with running_gateway(toml(fake)) as gw:
        text = await stream_events(gw, chat(MODEL, "Say hello"))
        tool = await stream_events(gw, chat(PROFILE_MODEL, "Weather in Oslo?"))
    assert "".join(e.text_delta.text for e in text if e.HasField("text_delta")) == "Hello there"
    finish = text[-1].finish
    assert (finish.finish_reason, finish.usage.prompt_tokens, finish.usage.completion_tokens) == (
        chat_pb2.FINISH_REASON_STOP,
        12,
        3,
    )
    assert Decimal(finish.cost.total) == (12 * Decimal("0.80") + 3 * Decimal("4.00")) / Decimal(1_000_000)
    pieces = [e.tool_call_delta for e in tool if e.HasField("tool_call_delta")]
    assert (pieces[0].id, pieces[0].name, {p.index for p in pieces}) == ("tu_2", "get_weather", {0})
    assert "".join(p.arguments for p in pieces) == '{"city": "Oslo"}'
    assert tool[-1].finish.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    assert fake.calls[-1].raw_path == "/model/us.anthropic.claude-sonnet-4-20250514-v1%3A0/converse-stream"
    assert all(call.verified for call in fake.calls)


async def test_errors_and_stream_exceptions_map_to_the_gateways_codes(fake: FakeBedrock) -> None:
    fake.script(
        Reply(
            frames=[
                message_start(),
                text_delta(0, "par"),
                exception_frame("modelStreamErrorException", "Model failed"),
            ]
        ),
        error_reply("ValidationException", "The provided model identifier is invalid."),
        error_reply("AccessDeniedException", "You don't have access to the model."),
        error_reply("ServiceUnavailableException", "Service unavailable"),
        error_reply("ThrottlingException", "Too many requests, please wait before trying again."),
    )
    async with running_gateway(toml(fake)) as gw:
        outcomes = []
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stream_events(gw, chat(MODEL, "x"))
        outcomes.append(failed.value)
        for _ in range(4):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await gw.stub.Chat(chat(MODEL, "x"))
            outcomes.append(err.value)
    got = [
        (e.code(), error_details(e).info.reason, error_details(e).info.metadata.get("upstream_code"))
        for e in outcomes
    ]
    assert got == [
        (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_STREAM_ERROR", "modelStreamErrorException"),
        (grpc.StatusCode.INVALID_ARGUMENT, "UPSTREAM_INVALID_REQUEST", "ValidationException"),
        (grpc.StatusCode.PERMISSION_DENIED, "PROVIDER_PERMISSION_DENIED", "AccessDeniedException"),
        (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE", "ServiceUnavailableException"),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED", "ThrottlingException"),
    ]


async def test_a_wrong_secret_is_refused_as_an_auth_failure_and_never_shown(fake: FakeBedrock) -> None:
    wrong = f'access_key_id = "{ACCESS_KEY_ID}"\nsecret_access_key = "wrong-secret-0123456789abcdefghij"'
    async with running_gateway(toml(fake, wrong)) as gw:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gw.stub.Chat(chat(MODEL, "x"))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(refused.value).info.reason == "PROVIDER_AUTH_FAILED"
    assert "wrong-secret" not in str(refused.value)
    assert "must fix providers.bedrock's AWS credentials" in (refused.value.details() or "")
    assert fake.calls[-1].auth_error == "InvalidSignatureException"


async def test_a_session_token_a_profile_and_an_api_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with FakeBedrock(
        session_token="session-token-0123456789", api_key="bedrock-api-key-0123456789"
    ) as fake:
        session = (
            f'access_key_id = "{ACCESS_KEY_ID}"\nsecret_access_key = "{SECRET_ACCESS_KEY}"\n'
            'session_token = "session-token-0123456789"'
        )
        shared = tmp_path / "credentials"
        shared.write_text(
            f"[team]\naws_access_key_id = {ACCESS_KEY_ID}\naws_secret_access_key = {SECRET_ACCESS_KEY}\n"
            "aws_session_token = session-token-0123456789\n"
        )
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
        for credentials in (session, 'profile = "team"', 'api_key = "bedrock-api-key-0123456789"'):
            async with running_gateway(toml(fake, credentials)) as gw:
                assert reply_text((await gw.stub.Chat(chat(MODEL, "hello"))).message) == "hello"
    assert [(c.scheme, c.verified) for c in fake.calls] == [
        ("sigv4", True),
        ("sigv4", True),
        ("bearer", True),
    ]
    assert fake.calls[0].headers["x-amz-security-token"] == "session-token-0123456789"


async def test_prompt_caching_puts_cache_points_after_the_system_prompt_and_tools(fake: FakeBedrock) -> None:
    request = chat(MODEL, "Hi", tools=[content_pb2.Tool(name="f", description="g")])
    request.messages.insert(
        0, content_pb2.Message(role=content_pb2.ROLE_SYSTEM, content=[content_pb2.Part(text="Sys")])
    )
    async with running_gateway(toml(fake, extra='prompt_caching = "1h"')) as gw:
        await gw.stub.Chat(request)
    body = fake.calls[-1].body
    point = {"cachePoint": {"type": "default", "ttl": "1h"}}
    assert body["system"] == [{"text": "Sys"}, point]
    assert body["toolConfig"]["tools"][-1] == point


async def test_settings_bedrock_lacks_are_refused_before_the_call(fake: FakeBedrock) -> None:
    image = content_pb2.Part(
        image=content_pb2.Image(url="https://example.com/cat.png", mime_type="image/png")
    )
    request = chat(MODEL, "x", generation=chat_pb2.GenerationConfig(seed=7))
    request.messages[0].content.append(image)
    async with running_gateway(toml(fake)) as gw:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gw.stub.Chat(request)
    assert violated_fields(error_details(refused.value)) == [
        "messages[0].content[1].image",
        "generation.seed",
    ]
    assert fake.calls == []


async def test_the_openai_door_serves_a_bedrock_model(fake: FakeBedrock) -> None:
    async with running_gateway(toml(fake)) as gw:
        client = openai.AsyncOpenAI(base_url=f"{gw.http_url}/v1", api_key="x", max_retries=0, timeout=30)
        unary = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Hi Bedrock"}]
        )
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Streamed from Bedrock"}], stream=True
        )
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert unary.choices[0].message.content == "Hi Bedrock"
    assert "".join(pieces) == "Streamed from Bedrock"
    assert [c.operation for c in fake.calls] == ["converse", "converse-stream"]


# Bedrock's on-demand price page, USD per million tokens (input, output, cache read, cache write
# 5 min, cache write 1 h); cross-region "us." profiles cost 10 % more than "global." ones.
PRICE_PAGE = {
    "global.anthropic.claude-haiku-4-5-20251001-v1:0": ("1", "5", "0.10", "1.25", "2"),
    "global.anthropic.claude-sonnet-4-5-20250929-v1:0": ("3", "15", "0.30", "3.75", "6"),
    "us.anthropic.claude-sonnet-4-5-20250929-v1:0": ("3.30", "16.50", "0.33", "4.125", "6.60"),
    "amazon.nova-pro-v1:0": ("0.80", "3.20", "0.20", "0", "0"),
    "meta.llama3-3-70b-instruct-v1:0": ("0.72", "0.72", "0", "0", "0"),
}


@pytest.mark.parametrize(
    ("model", "uncached", "output", "read", "written", "written_1h"),
    [
        ("global.anthropic.claude-haiku-4-5-20251001-v1:0", 1_000, 200, 5_000, 2_000, 0),
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", 100, 100, 0, 4_000, 4_000),
        ("us.anthropic.claude-sonnet-4-5-20250929-v1:0", 1_000, 500, 10_000, 0, 0),
        ("amazon.nova-pro-v1:0", 2_000, 1_000, 3_000, 0, 0),
        ("meta.llama3-3-70b-instruct-v1:0", 1_000, 1_000, 0, 0, 0),
    ],
)
async def test_catalog_prices_cost_each_call_exactly(
    fake: FakeBedrock, model: str, uncached: int, output: int, read: int, written: int, written_1h: int
) -> None:
    details = [cache_detail("1h", written_1h)] if written_1h else None
    fake.script(
        Reply(
            json_body=converse_response(
                [text_block("ok")],
                usage_=usage(uncached, output, cache_read=read, cache_write=written, cache_details=details),
            )
        )
    )
    credentials = f'access_key_id = "{ACCESS_KEY_ID}"\nsecret_access_key = "{SECRET_ACCESS_KEY}"'
    catalog_priced = f"""
[providers.bedrock]
endpoint_url = "{fake.base_url}"
{credentials}
retry = {{ max_retries = 0 }}
"""
    async with running_gateway(catalog_priced) as gw:
        reply = await gw.stub.Chat(chat(f"bedrock:{model}", "price me"))
    inp, out, cached, write_5m, write_1h = (Decimal(p) for p in PRICE_PAGE[model])
    expected = (
        uncached * inp
        + output * out
        + read * cached
        + (written - written_1h) * write_5m
        + written_1h * write_1h
    ) / Decimal(1_000_000)
    assert Decimal(reply.cost.total) == expected
    assert reply.cost.price_source.startswith("genai-prices")


async def test_a_profile_that_does_not_exist_is_an_auth_failure(
    fake: FakeBedrock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    async with running_gateway(toml(fake, 'profile = "nobody"')) as gw:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gw.stub.Chat(chat(MODEL, "x"))
    assert (refused.value.code(), error_details(refused.value).info.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PROVIDER_AUTH_FAILED",
    )
    assert fake.calls == []
