"""The response cache through the gRPC door, against a fake OpenAI upstream that counts requests:
a repeated call (unary and streamed) is answered from the cache with no upstream request, the
original usage, cost zero and the saving shown; scopes never share; modes, TTLs and failures."""

from __future__ import annotations

import asyncio
import random
import re
from decimal import Decimal

import aiohttp
import grpc
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from llm_gateway.cache import MemoryCache
from llmgateway.v1 import chat_pb2, gateway_service_pb2_grpc, usage_pb2, usage_service_pb2_grpc
from tests.conftest import chat, error_details, openai_toml, reply_text, running_gateway, violated_fields
from tests.fakes.openai import FakeOpenAI, Reply, chunk, error_body
from tests.redis_server import redis_server

MODEL = "openai:gpt-4o-mini"
ON = chat_pb2.CacheOptions(mode=chat_pb2.CACHE_MODE_ON)
KEYS = """
[[auth.keys]]
name = "a"
key = "key-a-0123456789"
[[auth.keys]]
name = "b"
key = "key-b-0123456789"
"""


def as_key(name: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer key-{name}-0123456789"),)


def cached(text: str = "Tell me once", tenant: str = "", **fields: object) -> chat_pb2.ChatRequest:
    return chat(
        MODEL, text, cache=fields.pop("cache", ON), caller=chat_pb2.CallerMetadata(tenant=tenant), **fields
    )


async def streamed(
    stub: gateway_service_pb2_grpc.GatewayServiceAsyncStub, request: chat_pb2.ChatRequest, key: str = "a"
) -> tuple[list[str], chat_pb2.StreamFinish]:
    deltas, finish = [], None
    async for event in stub.ChatStream(chat_pb2.ChatStreamRequest(request=request), metadata=as_key(key)):
        if event.HasField("text_delta"):
            deltas.append(event.text_delta.text)
        elif event.HasField("finish"):
            finish = event.finish
    assert finish is not None
    return deltas, finish


async def test_a_repeated_call_is_answered_from_the_cache_at_no_cost(fake_openai: FakeOpenAI) -> None:
    async with (
        running_gateway(KEYS + openai_toml(fake_openai.base_url)) as gw,
        aiohttp.ClientSession() as http,
    ):
        first = await gw.stub.Chat(cached(), metadata=as_key("a"))
        second = await gw.stub.Chat(cached(), metadata=as_key("a"))
        kept = await ledger_record(gw.channel, second.id)
        metrics = ""
        for _ in range(40):  # sampled every second
            async with http.get(f"{gw.http_url}/metrics") as response:
                metrics = await response.text()
            if 'llm_gateway_cache_lookups_total{result="hit"} 1.0' in metrics:
                break
            await asyncio.sleep(0.1)
    # The ledger and the metrics record the hit and what it saved.
    assert (Decimal(kept.cost.total), Decimal(kept.cost.cache_savings)) == (
        Decimal(0),
        Decimal(first.cost.total),
    )
    assert 'llm_gateway_cache_lookups_total{result="hit"} 1.0' in metrics
    assert 'llm_gateway_cache_lookups_total{result="miss"} 1.0' in metrics
    saved = re.search(r"^llm_gateway_cache_savings_usd_total (\S+)$", metrics, re.M)
    assert saved is not None
    assert float(saved.group(1)) == pytest.approx(float(first.cost.total))
    assert len(fake_openai.requests) == 1  # the second never reached the provider
    assert reply_text(second.message) == reply_text(first.message) == "Tell me once"
    assert second.usage == first.usage  # the reply's own usage
    assert (first.routing.cache_hit, second.routing.cache_hit) == (False, True)
    assert second.routing.reason == "cache_hit"
    assert second.routing.selected_model == MODEL
    assert not second.routing.attempts
    assert Decimal(first.cost.total) > 0
    assert Decimal(second.cost.total) == 0
    assert Decimal(second.cost.cache_savings) == Decimal(first.cost.total)
    assert second.finish_reason == first.finish_reason
    assert second.latency.upstream.ToNanoseconds() == 0
    overhead_ms = second.latency.gateway_overhead.ToNanoseconds() / 1e6
    print(
        f"\ncache hit: {overhead_ms:.3f} ms of gateway time (miss: "
        f"{first.latency.gateway_overhead.ToNanoseconds() / 1e6:.3f} ms)"
    )


async def ledger_record(channel: grpc.aio.Channel, call_id: str) -> usage_pb2.UsageRecord:
    stub = usage_service_pb2_grpc.UsageServiceStub(channel)
    for _ in range(100):  # the ledger's writer is a moment behind the reply
        reply = await stub.ListUsageRecords(
            usage_pb2.ListUsageRecordsRequest(page_size=100), metadata=as_key("a")
        )
        found = [r for r in reply.records if r.id == call_id]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{call_id} is not in the ledger")


async def test_a_stream_is_replayed_with_the_same_events(fake_openai: FakeOpenAI) -> None:
    async with running_gateway(KEYS + openai_toml(fake_openai.base_url)) as gw:
        request = cached("one two three four five six")
        first_deltas, first = await streamed(gw.stub, request)
        again_deltas, again = await streamed(gw.stub, request)
        unary = await gw.stub.Chat(request, metadata=as_key("a"))  # the same call, unary: a hit too
    assert len(fake_openai.requests) == 1
    assert len(first_deltas) > 1
    assert again_deltas == first_deltas  # the same events, in the same pieces
    assert again.usage == first.usage
    assert again.routing.cache_hit
    assert Decimal(again.cost.total) == 0
    assert Decimal(again.cost.cache_savings) == Decimal(first.cost.total)
    assert reply_text(unary.message) == "".join(first_deltas)
    assert unary.routing.cache_hit


async def test_tenants_and_keys_never_share_an_entry_unless_keys_are_shared(fake_openai: FakeOpenAI) -> None:
    async with running_gateway(KEYS + openai_toml(fake_openai.base_url)) as gw:
        for tenant, key in [("t1", "a"), ("t2", "a"), ("t1", "b"), ("t1", "a")]:
            await gw.stub.Chat(cached(tenant=tenant), metadata=as_key(key))
    assert len(fake_openai.requests) == 3  # only the last repeats a scope
    async with running_gateway(
        KEYS + "[cache]\nshare_across_keys = true\n" + openai_toml(fake_openai.base_url)
    ) as gw:
        a = await gw.stub.Chat(cached(tenant="t9"), metadata=as_key("a"))
        b = await gw.stub.Chat(cached(tenant="t9"), metadata=as_key("b"))
        other = await gw.stub.Chat(cached(tenant="t8"), metadata=as_key("b"))
    assert (a.routing.cache_hit, b.routing.cache_hit, other.routing.cache_hit) == (False, True, False)


async def test_what_decides_the_reply_is_in_the_key_and_what_does_not_is_not(fake_openai: FakeOpenAI) -> None:
    async with running_gateway(KEYS + openai_toml(fake_openai.base_url)) as gw:
        await gw.stub.Chat(cached(), metadata=as_key("a"))
        hot = cached(generation=chat_pb2.GenerationConfig(temperature=1.5))
        tagged = cached(tags={"run": "7"}, max_cost="1")
        replies = [await gw.stub.Chat(r, metadata=as_key("a")) for r in (hot, tagged)]
    assert [r.routing.cache_hit for r in replies] == [False, True]


async def test_modes_ttl_and_the_config_default(fake_openai: FakeOpenAI) -> None:
    def mode(m: int, ttl: float | None = None) -> chat_pb2.CacheOptions:
        options = chat_pb2.CacheOptions(mode=m)  # type: ignore[arg-type]
        if ttl is not None:
            options.ttl.FromNanoseconds(int(ttl * 1e9))
        return options

    async with running_gateway(KEYS + openai_toml(fake_openai.base_url)) as gw:

        async def hit(text: str, options: chat_pb2.CacheOptions | None) -> bool:
            request = chat(MODEL, text) if options is None else cached(text, cache=options)
            return (await gw.stub.Chat(request, metadata=as_key("a"))).routing.cache_hit

        # read_only never stores; write_only stores but never reads; off does neither.
        assert [await hit("r", mode(chat_pb2.CACHE_MODE_READ_ONLY)) for _ in range(2)] == [False, False]
        assert await hit("w", mode(chat_pb2.CACHE_MODE_WRITE_ONLY)) is False
        assert await hit("w", mode(chat_pb2.CACHE_MODE_WRITE_ONLY)) is False
        assert await hit("w", mode(chat_pb2.CACHE_MODE_READ_ONLY)) is True
        assert await hit("w", mode(chat_pb2.CACHE_MODE_OFF)) is False
        # The default mode is "off": a call that does not ask neither reads nor stores.
        assert await hit("w", None) is False
        # A short TTL: gone once it is over.
        assert await hit("t", mode(chat_pb2.CACHE_MODE_ON, ttl=0.3)) is False
        assert await hit("t", ON) is True
        await asyncio.sleep(0.4)
        assert await hit("t", ON) is False
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await hit("x", mode(chat_pb2.CACHE_MODE_ON, ttl=30 * 86_400))
        assert violated_fields(error_details(refused.value)) == ["cache.ttl"]
    async with running_gateway(KEYS + '[cache]\nmode = "on"\n' + openai_toml(fake_openai.base_url)) as gw:
        replies = [await gw.stub.Chat(chat(MODEL, "default on"), metadata=as_key("a")) for _ in range(2)]
    assert [r.routing.cache_hit for r in replies] == [False, True]


async def test_errors_and_dry_runs_are_never_cached(fake_openai: FakeOpenAI) -> None:
    async with running_gateway(KEYS + openai_toml(fake_openai.base_url)) as gw:
        fake_openai.script(Reply(status=400, json_body=error_body("Bad", "invalid_request_error")))
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await gw.stub.Chat(cached("fails once"), metadata=as_key("a"))
        assert error_details(failed.value).code == grpc.StatusCode.INVALID_ARGUMENT
        served = await gw.stub.Chat(cached("fails once"), metadata=as_key("a"))
        dry = await gw.stub.Chat(cached("dry", dry_run=True), metadata=as_key("a"))
        real = await gw.stub.Chat(cached("dry"), metadata=as_key("a"))
    assert not served.routing.cache_hit
    assert not dry.routing.cache_hit
    assert not real.routing.cache_hit
    assert len(fake_openai.requests) == 3  # the failure, then each real call once


async def test_a_stream_cut_short_is_never_stored(fake_openai: FakeOpenAI) -> None:
    cut = Reply(sse=[chunk({"content": "Hel"}), chunk({"content": "lo"}), "[DONE]"])  # no finish reason
    async with running_gateway(KEYS + openai_toml(fake_openai.base_url)) as gw:
        fake_openai.script(cut)
        with pytest.raises(grpc.aio.AioRpcError) as interrupted:
            await streamed(gw.stub, cached("cut me short"))
        assert error_details(interrupted.value).info.reason == "UPSTREAM_STREAM_INTERRUPTED"
        deltas, finish = await streamed(gw.stub, cached("cut me short"))
    assert not finish.routing.cache_hit  # the cut stream left nothing to replay
    assert "".join(deltas) == "cut me short"
    assert len(fake_openai.requests) == 2


def test_the_memory_cache_stays_within_its_bound_under_100000_distinct_entries() -> None:
    cache = MemoryCache(max_bytes=1_000_000)
    rng = random.Random(7)

    async def fill() -> None:
        for n in range(100_000):
            await cache.put(f"{n:064x}", b"x" * rng.randint(100, 2_000), ttl=60)
            assert cache.bytes <= cache.max_bytes

    asyncio.run(fill())
    assert 0 < len(cache) < 100_000
    assert cache.bytes == sum(len(k) + len(v) for k, (v, _) in cache._entries.items())
    newest = f"{99_999:064x}"
    assert asyncio.run(cache.get(newest)) is not None
    assert asyncio.run(cache.get(f"{0:064x}")) is None  # the oldest went first


async def test_two_replicas_share_entries_through_redis(fake_openai: FakeOpenAI) -> None:
    with redis_server() as redis:
        toml = KEYS + f'[fleet]\nredis_url = "{redis.url}"\n[cache]\nbackend = "redis"\n'
        toml += openai_toml(fake_openai.base_url)
        async with running_gateway(toml) as a, running_gateway(toml) as b:
            first = await a.stub.Chat(cached("shared"), metadata=as_key("a"))
            for _ in range(50):  # stored in the background
                again = await b.stub.Chat(
                    cached("shared", cache=chat_pb2.CacheOptions(mode=chat_pb2.CACHE_MODE_READ_ONLY)),
                    metadata=as_key("a"),
                )
                if again.routing.cache_hit:
                    break
                await asyncio.sleep(0.02)
            redis.kill()  # a cache that cannot be reached is a miss, never a failed call
            missed = await b.stub.Chat(cached("shared"), metadata=as_key("a"))
    assert not first.routing.cache_hit
    assert again.routing.cache_hit
    assert reply_text(again.message) == "shared"
    assert not missed.routing.cache_hit
    assert reply_text(missed.message) == "shared"


async def test_the_openai_door_turns_caching_on_per_call(fake_openai: FakeOpenAI) -> None:
    """The OpenAI SDK as the client: `routing.enable_caching` (or `cache_mode`, `cache_ttl_seconds`)
    in the body; a hit says so in `routing.cache_hit` and costs nothing; a bad value names the field."""
    async with running_gateway(KEYS + openai_toml(fake_openai.base_url)) as gw:
        client = openai.AsyncOpenAI(base_url=f"{gw.http_url}/v1", api_key="key-a-0123456789", max_retries=0)
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Cache me over HTTP"}]
        body = {"routing": {"enable_caching": True}}
        first = await client.chat.completions.create(model=MODEL, messages=messages, extra_body=body)
        second = await client.chat.completions.create(model=MODEL, messages=messages, extra_body=body)
        stream = await client.chat.completions.create(
            model=MODEL,
            messages=messages,
            extra_body=body,
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        for bad, param in [
            ({"cache_mode": "sometimes"}, "routing.cache_mode"),
            ({"enable_caching": "yes"}, "routing.enable_caching"),
            ({"cache_ttl_seconds": 0}, "routing.cache_ttl_seconds"),
            ({"enable_caching": True, "cache_ttl_seconds": 30 * 86_400}, "routing.cache_ttl_seconds"),
        ]:
            with pytest.raises(openai.BadRequestError) as refused:
                await client.chat.completions.create(
                    model=MODEL, messages=messages, extra_body={"routing": bad}
                )
            assert isinstance(refused.value.body, dict)
            assert refused.value.body["param"] == param, refused.value.body
    first_extra, second_extra = first.model_extra or {}, second.model_extra or {}
    assert (first_extra["routing"]["cache_hit"], second_extra["routing"]["cache_hit"]) == (False, True)
    assert Decimal(str(second_extra["cost"]["total_cost"])) == 0
    assert second.choices[0].message.content == first.choices[0].message.content == "Cache me over HTTP"
    assert second.usage == first.usage
    assert "".join(pieces) == "Cache me over HTTP"
    assert len(fake_openai.requests) == 1  # the unary miss only: the stream was a hit too
