"""Every call ends in exactly one `CallRecord` for the gateway's observers, however it ends: a reply,
a stream, a provider error, the caller's cancel or deadline, a refusal at the door, a dry run. Each
says who called, what was asked, what served it, every attempt, and what it used and cost, equal
to what the caller was told."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import grpc
import pytest

from llm_gateway.config import load_config
from llm_gateway.domain.errors import GatewayError
from llm_gateway.domain.messages import ChatRequest, Message, Role, TextPart
from llm_gateway.gateway.record import CallRecord
from llm_gateway.gateway.scope import CallScope
from llm_gateway.runtime import build_runtime
from llmgateway.v1 import catalog_pb2, chat_pb2
from tests.conftest import RunningGateway, chat, error_details, openai_toml, read_event, running_gateway
from tests.fakes.openai import FakeOpenAI, Reply, error_body, text_chunks, usage

MODEL = "openai:gpt-4o-mini"
KEYS = """
[[auth.keys]]
name = "ops"
key = "ops-key-0123456789abcdef"
role = "admin"
[[auth.keys]]
name = "team-a"
key = "team-a-key-0123456789ab"
"""
TEAM_A = (("authorization", "Bearer team-a-key-0123456789ab"),)


class Recorder:
    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def call_ended(self, record: CallRecord) -> None:
        self.records.append(record)

    async def soon(self, request_id: str) -> CallRecord:
        """The call's one record, waiting for it a little: the caller can hear of an error before
        the server's handler has finished (and ended the call's record)."""
        for _ in range(100):
            if any(r.request_id == request_id for r in self.records):
                break
            await asyncio.sleep(0.01)
        return self.one(request_id)

    def one(self, request_id: str) -> CallRecord:
        found = [r for r in self.records if r.request_id == request_id]
        assert len(found) == 1, f"{len(found)} records for {request_id}"
        return found[0]


@pytest.fixture
async def recorded(fake_openai: FakeOpenAI) -> AsyncIterator[tuple[RunningGateway, Recorder]]:
    toml = openai_toml(fake_openai.base_url) + KEYS
    async with running_gateway(toml) as gw:
        recorder = Recorder()
        gw.server.runtime.gateway.observers.add(recorder)
        yield gw, recorder


def with_id(request_id: str) -> tuple[tuple[str, str], ...]:
    return (*TEAM_A, ("x-request-id", request_id))


async def test_a_reply_is_recorded_once_as_the_caller_was_told(
    recorded: tuple[RunningGateway, Recorder], fake_openai: FakeOpenAI
) -> None:
    gw, recorder = recorded
    request = chat(MODEL, "Hello records", fallback_models=["mock:echo"])
    request.caller.user, request.caller.tenant = "u-1", "acme"
    request.tags["team"] = "search"
    fake_openai.script(Reply(status=503, json_body=error_body("Overloaded", "server_error")))
    reply = await gw.stub.Chat(request, metadata=with_id("rec-unary"))
    record = recorder.one("rec-unary")
    assert (record.operation, record.status, record.reason, record.is_chat) == ("Chat", "OK", "", True)
    assert (record.principal.key, record.principal.admin) == ("team-a", False)
    assert (record.caller.user, record.caller.tenant, dict(record.tags)) == (
        "u-1",
        "acme",
        {"team": "search"},
    )
    assert (record.requested_model, record.model, record.provider) == (MODEL, reply.model, reply.provider)
    assert record.id == reply.id
    assert record.usage is not None
    assert record.cost is not None
    assert (record.usage.prompt_tokens, record.usage.completion_tokens) == (
        reply.usage.prompt_tokens,
        reply.usage.completion_tokens,
    )
    assert record.cost.total == Decimal(reply.cost.total)
    assert [(a.model, a.code) for a in record.attempts] == [(a.model, a.code) for a in reply.routing.attempts]
    assert record.fallback_used == reply.routing.fallback_used
    assert record.started_at <= record.ended_at
    assert record.duration > 0


async def test_a_stream_is_recorded_with_its_first_token(
    recorded: tuple[RunningGateway, Recorder], fake_openai: FakeOpenAI
) -> None:
    gw, recorder = recorded
    fake_openai.script(Reply(sse=text_chunks(["Hi ", "there"], usage(7, 2))))
    stream = gw.stub.ChatStream(
        chat_pb2.ChatStreamRequest(request=chat(MODEL)), metadata=with_id("rec-stream")
    )
    events = [event async for event in stream]
    record = recorder.one("rec-stream")
    assert (record.operation, record.status, record.streamed) == ("ChatStream", "OK", True)
    assert record.usage is not None
    assert record.cost is not None
    assert (record.usage.prompt_tokens, record.usage.completion_tokens) == (7, 2)
    assert record.cost.total == Decimal(events[-1].finish.cost.total)
    assert record.attempts[-1].first_token is not None
    listing = await gw.stub.ListModels(catalog_pb2.ListModelsRequest(provider="openai"), metadata=TEAM_A)
    live = {m.id: m.state for m in listing.models}[MODEL]
    assert live.HasField("time_to_first_token_p50")  # the live window is an observer too


async def test_failures_cancels_and_refusals_are_recorded_with_their_status(
    recorded: tuple[RunningGateway, Recorder], fake_openai: FakeOpenAI
) -> None:
    gw, recorder = recorded
    fake_openai.script(Reply(status=503, json_body=error_body("Overloaded", "server_error")))
    with pytest.raises(grpc.aio.AioRpcError):
        await gw.stub.Chat(chat(MODEL), metadata=with_id("rec-503"))
    failed = await recorder.soon("rec-503")
    assert (failed.status, failed.reason, failed.model, failed.usage) == (
        "UNAVAILABLE",
        "UPSTREAM_UNAVAILABLE",
        MODEL,
        None,
    )
    assert [a.reason for a in failed.attempts] == ["UPSTREAM_UNAVAILABLE"]

    fake_openai.script(Reply(sse=text_chunks([f"w{i} " for i in range(50)], usage(5, 50)), chunk_delay=0.05))
    stream = gw.stub.ChatStream(
        chat_pb2.ChatStreamRequest(request=chat(MODEL)), metadata=with_id("rec-cancel")
    )
    for _ in range(4):
        assert await read_event(stream) is not None
    stream.cancel()
    await asyncio.sleep(0.2)
    cut = await recorder.soon("rec-cancel")
    assert cut.status == "CANCELLED"
    assert cut.usage is not None
    assert cut.usage.estimated
    assert cut.usage.completion_tokens >= 3

    fake_openai.script(Reply(delay=2))
    with pytest.raises(grpc.aio.AioRpcError):
        await gw.stub.Chat(chat(MODEL), metadata=with_id("rec-deadline"), timeout=0.2)
    assert (await recorder.soon("rec-deadline")).status == "DEADLINE_EXCEEDED"

    with pytest.raises(grpc.aio.AioRpcError):
        await gw.stub.Chat(chat(MODEL), metadata=(("x-request-id", "rec-nokey"),))
    refused = await recorder.soon("rec-nokey")
    assert (refused.status, refused.reason, refused.principal.key, refused.model) == (
        "UNAUTHENTICATED",
        "MISSING_API_KEY",
        "",
        "",
    )

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.stub.Chat(
            chat(MODEL, generation=chat_pb2.GenerationConfig(temperature=9)), metadata=with_id("rec-bad")
        )
    assert error_details(caught.value).info.reason == "INVALID_REQUEST"
    assert ((bad := await recorder.soon("rec-bad")).status, bad.reason) == (
        "INVALID_ARGUMENT",
        "INVALID_REQUEST",
    )
    # Calls that never reached a model have ids of their own all the same: the ledger keys on them.
    ids = [r.id for r in recorder.records]
    assert all(i.startswith("chat_") and len(i) == 29 for i in ids), ids
    assert len(set(ids)) == len(ids)


async def test_dry_runs_estimates_and_listings_are_recorded_but_not_as_chats(
    recorded: tuple[RunningGateway, Recorder],
) -> None:
    gw, recorder = recorded
    reply = await gw.stub.Chat(chat(MODEL, dry_run=True), metadata=with_id("rec-dry"))
    dry = recorder.one("rec-dry")
    assert (dry.status, dry.dry_run, dry.attempts) == ("OK", True, ())
    assert dry.cost is not None
    assert dry.cost.total == Decimal(reply.cost.total)
    await gw.stub.EstimateCost(
        catalog_pb2.EstimateCostRequest(request=chat(MODEL)), metadata=with_id("rec-est")
    )
    await gw.stub.ListModels(catalog_pb2.ListModelsRequest(), metadata=with_id("rec-list"))
    assert [(recorder.one(r).operation, recorder.one(r).is_chat) for r in ("rec-est", "rec-list")] == [
        ("EstimateCost", False),
        ("ListModels", False),
    ]


async def test_an_observer_that_fails_changes_nothing_for_the_caller(
    recorded: tuple[RunningGateway, Recorder], log_lines: list[str]
) -> None:
    gw, recorder = recorded

    class Broken:
        def call_ended(self, record: CallRecord) -> None:
            raise RuntimeError("observer bug")

    gw.server.runtime.gateway.observers.add(Broken())
    reply = await gw.stub.Chat(chat("mock:echo", "still fine"), metadata=with_id("rec-broken"))
    assert reply.message.content[0].text == "still fine"
    assert recorder.one("rec-broken").status == "OK"
    assert any("call observer Broken failed" in line for line in log_lines)


async def test_a_call_made_on_the_gateway_directly_keeps_its_own_record() -> None:
    """Without a front door's tracker, the gateway opens and ends one itself: once, even for a
    stream its consumer abandons."""
    runtime = build_runtime(load_config())
    recorder = Recorder()
    runtime.gateway.observers.add(recorder)
    request = ChatRequest(model="mock:echo", messages=(Message(Role.USER, (TextPart("one two three"),)),))
    try:
        await runtime.gateway.chat(request, CallScope("direct-unary"))
        stream = runtime.gateway.chat_stream(request, CallScope("direct-stream"))
        await anext(stream)
        await anext(stream)
        await stream.aclose()
        with pytest.raises(GatewayError, match="unknown provider"):
            await runtime.gateway.chat(
                ChatRequest(model="nope:x", messages=request.messages), CallScope("direct-missing")
            )
    finally:
        await runtime.aclose()
    assert [(r.request_id, r.status) for r in recorder.records] == [
        ("direct-unary", "OK"),
        ("direct-stream", "CANCELLED"),
        ("direct-missing", "NOT_FOUND"),
    ]
