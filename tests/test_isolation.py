"""One caller cannot hurt the others: provider options cannot override what the gateway controls,
failures that follow one caller's requests cannot open a provider's circuit while it serves others
(and are not retried when the provider answers them the same way again), and a dry run, streamed
or not, never reaches a provider or skips a key's rate limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from llmgateway.v1 import catalog_pb2, chat_pb2, content_pb2
from tests.conftest import (
    RunningGateway,
    chat,
    error_details,
    openai_toml,
    reply_text,
    running_gateway,
    violated_fields,
)
from tests.fakes.openai import FakeOpenAI, Reply, error_body

MODEL = "openai:gpt-4o-mini"


def options(**by_provider: dict[str, Any]) -> dict[str, struct_pb2.Struct]:
    out = {}
    for provider, fields in by_provider.items():
        struct = struct_pb2.Struct()
        struct.update(fields)
        out[provider] = struct
    return out


# --- provider_options -----------------------------------------------------------------------------

ALL_KINDS = """
[providers.anthropic]
api_key = "sk-ant-test-0123456789"
[providers.gemini]
api_key = "gemini-test-key-0123456789"
[providers.cohere]
api_key = "cohere-test-key-0123456789"
[providers.ollama]
enabled = true
"""


@pytest.mark.parametrize(
    ("model", "provider", "fields", "refused"),
    [
        (
            MODEL,
            "openai",
            {"stream": True, "stream_options": {"include_usage": False}, "n": 3, "logprobs": True},
            ["stream", "stream_options", "n"],
        ),
        (
            MODEL,
            "openai",
            {"model": "gpt-4o", "messages": [], "max_tokens": 99999},
            ["model", "messages", "max_tokens"],
        ),
        ("anthropic:claude-haiku-4-5", "anthropic", {"stream": False, "system": "x"}, ["stream", "system"]),
        (
            "gemini:gemini-2.5-flash",
            "gemini",
            {"generationConfig": {"maxOutputTokens": 5, "responseLogprobs": True}, "system_instruction": {}},
            ["system_instruction", "generationConfig.maxOutputTokens"],
        ),
        (
            "ollama:llama3.2",
            "ollama",
            {"stream": True, "options": {"num_predict": 9, "num_ctx": 8192}},
            ["stream", "options.num_predict"],
        ),
        ("cohere:command-a-03-2025", "cohere", {"stream": True, "k": 3}, ["stream", "k"]),
    ],
)  # fmt: skip
async def test_options_the_gateway_controls_are_refused_naming_each(
    fake_openai: FakeOpenAI, model: str, provider: str, fields: dict[str, Any], refused: list[str]
) -> None:
    async with running_gateway(openai_toml(fake_openai.base_url) + ALL_KINDS) as gw:
        request = chat(model, provider_options=options(**{provider: fields}))
        for call in (
            gw.stub.Chat(request),
            gw.stub.Chat(chat(model, dry_run=True, provider_options=options(**{provider: fields}))),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            details = error_details(caught.value)
            assert details.code is grpc.StatusCode.INVALID_ARGUMENT
            prefix = f"provider_options[{provider!r}]."
            assert sorted(violated_fields(details)) == sorted(prefix + key for key in refused)
            assert "cannot be overridden" in details.message
        stream = gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in stream:
                pass
        assert violated_fields(error_details(caught.value))[0].startswith(f"request.{prefix}")
    assert fake_openai.requests == []


async def test_options_the_gateway_does_not_control_still_reach_the_provider(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    await openai_gateway.stub.Chat(
        chat(MODEL, provider_options=options(openai={"logprobs": True, "service_tier": "flex"}))
    )
    body = fake_openai.requests[0].body
    assert (body["logprobs"], body["service_tier"], body["model"], "stream" in body) == (
        True,
        "flex",
        "gpt-4o-mini",
        False,
    )


async def test_a_caller_cannot_open_a_circuit_through_provider_options(fake_openai: FakeOpenAI) -> None:
    toml = openai_toml(fake_openai.base_url, "circuit_breaker = { failure_threshold = 2 }")
    async with running_gateway(toml) as gw:
        for _ in range(10):
            with pytest.raises(grpc.aio.AioRpcError):
                await gw.stub.Chat(chat(MODEL, provider_options=options(openai={"stream": True})))
            stream = gw.stub.ChatStream(
                chat_pb2.ChatStreamRequest(
                    request=chat(MODEL, provider_options=options(openai={"stream": False}))
                )
            )
            with pytest.raises(grpc.aio.AioRpcError):
                async for _ in stream:
                    pass
        reply = await gw.stub.Chat(chat(MODEL, "still served"))
        assert reply_text(reply.message) == "still served"
        listing = await gw.stub.ListModels(catalog_pb2.ListModelsRequest(provider="openai", page_size=1))
        assert listing.models[0].state.circuit_state == catalog_pb2.CIRCUIT_STATE_CLOSED


# --- A server that fails one kind of request ------------------------------------------------------


class PickyServer(FakeOpenAI):
    """Answers HTTP 500 (with its own file paths in the text, as llama-cpp-python's server does) to
    requests with a response format it cannot take, and echoes the rest; `down` makes it answer 503
    to everything, as a server that is really failing."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def _echo(self, body: dict[str, Any]) -> Reply:
        if self.down:
            return Reply(status=503, json_body=error_body("Service Unavailable", "server_error"))
        if "response_format" in body:
            message = (
                'File "/srv/llama/lib/python3.11/site-packages/llama_cpp/server/app.py", line 412: '
                "response_format type json_schema is not supported"
            )
            return Reply(status=500, json_body=error_body(message, "internal_server_error"))
        return super()._echo(body)


TENANTS = """
[[auth.keys]]
name = "tenant-a"
key = "tenant-a-key-0123456789"
[[auth.keys]]
name = "tenant-b"
key = "tenant-b-key-0123456789"
"""
A = (("authorization", "Bearer tenant-a-key-0123456789"),)
B = (("authorization", "Bearer tenant-b-key-0123456789"),)
PICKY = (
    "retry = { max_retries = 2, initial_backoff = 0.01, max_backoff = 0.02 }\n"
    "circuit_breaker = { failure_threshold = 3, reset_timeout = 30 }"
)


@pytest.fixture
async def picky() -> AsyncIterator[PickyServer]:
    async with PickyServer() as server:
        yield server


def json_schema_request(text: str) -> chat_pb2.ChatRequest:
    schema = struct_pb2.Struct()
    schema.update({"type": "object", "properties": {"answer": {"type": "string"}}})
    request = chat(MODEL, text)
    request.response_format.type = content_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
    request.response_format.json_schema.CopyFrom(schema)
    return request


def served(picky: PickyServer) -> tuple[int, int]:
    """Requests the server failed (with a response format) and answered."""
    bad = sum(1 for r in picky.requests if "response_format" in r.body)
    return bad, len(picky.requests) - bad


async def test_one_callers_failing_requests_cannot_take_the_provider_from_the_others(
    picky: PickyServer,
) -> None:
    async with running_gateway(openai_toml(picky.base_url, PICKY, retry="") + TENANTS) as gw:
        assert reply_text((await gw.stub.Chat(chat(MODEL, "before"), metadata=B)).message) == "before"
        failures = await asyncio.gather(
            *(gw.stub.Chat(json_schema_request(f"bad {i}"), metadata=A) for i in range(8)),
            return_exceptions=True,
        )
        for failure in failures:
            assert isinstance(failure, grpc.aio.AioRpcError)
            details = error_details(failure)
            assert details.info.reason == "UPSTREAM_UNAVAILABLE", details.message
            assert "site-packages" not in details.message
            assert "/srv/llama" not in details.message
        # The same answer twice: the request, not bad luck, is failing, so one retry and no more.
        assert served(picky) == (16, 1)
        # Tenant B is still served, and the circuit never opened.
        for i in range(3):
            reply = await gw.stub.Chat(chat(MODEL, f"after {i}"), metadata=B)
            assert reply_text(reply.message) == f"after {i}"
        listing = await gw.stub.ListModels(
            catalog_pb2.ListModelsRequest(provider="openai", page_size=1), metadata=B
        )
        assert listing.models[0].state.circuit_state == catalog_pb2.CIRCUIT_STATE_CLOSED

        # A provider that fails everyone's calls is still cut off.
        picky.down = True
        for metadata in (A, B, A, B):
            with pytest.raises(grpc.aio.AioRpcError):
                await gw.stub.Chat(chat(MODEL, "down"), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.stub.Chat(chat(MODEL, "down"), metadata=B)
        assert error_details(caught.value).info.reason == "CIRCUIT_OPEN"


async def test_a_lone_callers_failures_still_open_the_circuit(picky: PickyServer) -> None:
    """With no other caller to protect, one caller's failures open the circuit as before."""
    async with running_gateway(openai_toml(picky.base_url, PICKY, retry="")) as gw:
        for i in range(3):
            with pytest.raises(grpc.aio.AioRpcError):
                await gw.stub.Chat(json_schema_request(f"bad {i}"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.stub.Chat(chat(MODEL, "plain"))
        assert error_details(caught.value).info.reason == "CIRCUIT_OPEN"


async def test_an_identical_500_is_retried_once_and_an_overload_to_the_limit(fake_openai: FakeOpenAI) -> None:
    toml = openai_toml(
        fake_openai.base_url, retry="retry = { max_retries = 3, initial_backoff = 0.01, max_backoff = 0.02 }"
    )
    broken = Reply(status=500, json_body=error_body("The server had an error", "server_error"))
    busy = Reply(status=503, json_body=error_body("Overloaded", "server_error"))
    other = Reply(status=500, json_body=error_body("A different error", "server_error"))
    async with running_gateway(toml) as gw:
        fake_openai.script(broken, broken, broken, broken)
        with pytest.raises(grpc.aio.AioRpcError):
            await gw.stub.Chat(chat(MODEL))
        assert len(fake_openai.requests) == 2
        fake_openai.requests.clear()
        fake_openai._script.clear()

        fake_openai.script(broken, other, broken)  # different answers each time: bad luck, retried
        reply = await gw.stub.Chat(chat(MODEL, "fourth try"))
        assert reply_text(reply.message) == "fourth try"
        assert [a.code for a in reply.routing.attempts] == ["UNAVAILABLE"] * 3 + ["OK"]
        fake_openai.requests.clear()

        fake_openai.script(busy, busy, busy)
        reply = await gw.stub.Chat(chat(MODEL, "busy then served"))
        assert len(fake_openai.requests) == 4


# --- Dry runs -------------------------------------------------------------------------------------


async def test_a_streamed_dry_run_is_the_estimate_and_calls_no_one(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    request = chat(MODEL, "How much would this cost?", dry_run=True)
    unary = await openai_gateway.stub.Chat(request)
    events = [e async for e in openai_gateway.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request))]
    assert [e.WhichOneof("event") for e in events] == ["start", "finish"]
    finish = events[1].finish
    assert finish.dry_run
    assert unary.dry_run
    assert finish.usage == unary.usage
    assert finish.usage.estimated
    assert finish.cost.total == unary.cost.total
    assert finish.cost.total
    assert events[0].start.model == MODEL
    assert fake_openai.requests == []


LIMITED = """
[[auth.keys]]
name = "limited"
key = "limited-key-0123456789"
rate_limit = { requests_per_minute = 1, max_wait = 0 }
"""
LIMITED_KEY = (("authorization", "Bearer limited-key-0123456789"),)


@pytest.mark.parametrize("rpc", ["Chat", "ChatStream"])
async def test_a_one_a_minute_key_gets_one_real_call_whatever_the_request_says(
    fake_openai: FakeOpenAI, rpc: str
) -> None:
    async with running_gateway(openai_toml(fake_openai.base_url) + LIMITED) as gw:

        async def call(request: chat_pb2.ChatRequest) -> None:
            if rpc == "Chat":
                await gw.stub.Chat(request, metadata=LIMITED_KEY)
            else:
                stream = gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request), metadata=LIMITED_KEY)
                async for _ in stream:
                    pass

        for _ in range(5):  # estimates spend nothing and are not limited
            await call(chat(MODEL, dry_run=True))
        await call(chat(MODEL))
        for request in (chat(MODEL), chat(MODEL, fallback_models=["mock:echo"])):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(request)
            assert error_details(caught.value).info.reason == "KEY_RATE_LIMITED"
    assert len(fake_openai.requests) == 1
