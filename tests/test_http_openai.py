"""The HTTP door's OpenAI-compatible API through the official `openai` SDK (async, sync, streaming,
tools, structured output), raw HTTP for what the SDK hides (status codes, headers, SSE framing),
and health and readiness, against the mock provider and a fake OpenAI upstream on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal

import aiohttp
import openai
import pytest
from pydantic import BaseModel

from llm_gateway.gateway.record import ANONYMOUS
from llm_gateway.ledger import RecordFilter
from tests.conftest import RunningGateway, openai_toml, running_gateway
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.anthropic import Reply as AnthropicReply
from tests.fakes.anthropic import message as anthropic_message
from tests.fakes.anthropic import text_block as anthropic_text
from tests.fakes.anthropic import usage as anthropic_usage
from tests.fakes.gemini import FakeGemini
from tests.fakes.gemini import Reply as GeminiReply
from tests.fakes.gemini import text_response as gemini_text
from tests.fakes.gemini import usage_metadata as gemini_usage
from tests.fakes.openai import FakeOpenAI, Reply, completion, text_chunks, tool_call, usage

KEY = "http-door-key-0123456789"
KEYS = f"""
[[auth.keys]]
name = "team-a"
key = "{KEY}"
"""


@pytest.fixture
async def gw() -> AsyncIterator[RunningGateway]:
    async with running_gateway(KEYS) as running:
        yield running


@pytest.fixture
def client(gw: RunningGateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.http_url}/v1", api_key=KEY, max_retries=0)


async def test_a_chat_completion_with_exact_usage_and_cost(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model="mock:echo", messages=[{"role": "user", "content": "Hello there, gateway"}]
    )
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chat_")
    assert reply.model == "mock:echo"
    assert reply.choices[0].message.content == "Hello there, gateway"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    extra = reply.model_extra or {}
    # mock:echo costs 0.15 USD per million prompt tokens and 0.60 per million completion tokens.
    expected = (
        Decimal(reply.usage.prompt_tokens) * Decimal("0.15")
        + Decimal(reply.usage.completion_tokens) * Decimal("0.60")
    ) / 1_000_000
    assert Decimal(extra["cost"]["total_cost"]) == expected
    assert extra["provider"] == "mock"
    assert extra["routing"]["selected_model"] == "mock:echo"
    latency = extra["latency"]
    assert latency["total_time_ms"] >= latency["network_time_ms"] >= 0
    assert latency["processing_time_ms"] >= 0
    assert extra["routing"]["routing_reason"] == "requested"


async def test_a_stream_sends_chunks_then_usage_then_done(
    gw: RunningGateway, client: openai.AsyncOpenAI
) -> None:
    stream = await client.chat.completions.create(
        model="mock:echo",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usages, finishes = "", [], []
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usages.append(chunk.usage)
        for choice in chunk.choices:
            text += choice.delta.content or ""
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    assert text == "one two three"
    assert finishes == ["stop"]
    assert len(usages) == 1
    # The SSE framing itself: data lines, the gateway's extensions on the finish chunk, [DONE] last.
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{gw.http_url}/v1/chat/completions",
            json={"model": "mock:echo", "messages": [{"role": "user", "content": "hi"}], "stream": True},
            headers={"authorization": f"Bearer {KEY}", "x-request-id": "my-request-7"},
        ) as response,
    ):
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["x-request-id"] == "my-request-7"
        events = [line for line in (await response.text()).split("\n\n") if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    finish = json.loads(events[-2][len("data: ") :])
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert Decimal(finish["cost"]["total_cost"]) > 0


async def test_the_sync_client_and_the_api_v1_prefix(gw: RunningGateway) -> None:
    def call() -> str | None:
        sync = openai.OpenAI(base_url=f"{gw.http_url}/api/v1", api_key=KEY, max_retries=0)
        reply = sync.chat.completions.create(
            model="mock:echo", messages=[{"role": "user", "content": "sync"}]
        )
        return reply.choices[0].message.content

    assert await asyncio.to_thread(call) == "sync"


class Answer(BaseModel):
    city: str
    population: int


async def test_tools_and_structured_output_through_a_fake_openai(fake_openai: FakeOpenAI) -> None:
    async with running_gateway(KEYS + openai_toml(fake_openai.base_url)) as gw:
        client = openai.AsyncOpenAI(base_url=f"{gw.http_url}/v1", api_key=KEY, max_retries=0)
        fake_openai.script(
            Reply(
                json_body=completion(
                    None,
                    tool_calls=[tool_call("call_1", "get_weather", '{"city": "Paris"}')],
                    finish_reason="tool_calls",
                    usage_=usage(20, 9),
                )
            )
        )
        reply = await client.chat.completions.create(
            model="openai:gpt-4o-mini",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                    },
                }
            ],
            tool_choice="required",
        )
        calls = reply.choices[0].message.tool_calls
        assert calls is not None
        assert isinstance(calls[0], openai.types.chat.ChatCompletionMessageFunctionToolCall)
        assert (calls[0].id, calls[0].function.name, calls[0].function.arguments) == (
            "call_1",
            "get_weather",
            '{"city": "Paris"}',
        )
        assert reply.choices[0].finish_reason == "tool_calls"
        sent = fake_openai.requests[-1].body
        assert sent["tool_choice"] == "required"
        assert sent["tools"][0]["function"]["name"] == "get_weather"

        fake_openai.script(
            Reply(json_body=completion('{"city": "Paris", "population": 2100000}', usage_=usage(30, 12)))
        )
        parsed = await client.beta.chat.completions.parse(
            model="openai:gpt-4o-mini",
            messages=[{"role": "user", "content": "Biggest French city?"}],
            response_format=Answer,
        )
        assert parsed.choices[0].message.parsed == Answer(city="Paris", population=2100000)
        assert fake_openai.requests[-1].body["response_format"]["type"] == "json_schema"

        fake_openai.script(Reply(sse=text_chunks(["Bon", "jour"], usage(5, 2))))
        stream = await client.chat.completions.create(
            model="openai:gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == "Bonjour"


async def test_errors_come_back_in_openai_shape_with_their_status(
    gw: RunningGateway, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(
            model="mock:echo", messages=[{"role": "user", "content": "x"}], temperature=7, logprobs=True
        )
    error = bad.value.body
    assert isinstance(error, dict)
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "temperature",
        "invalid_request",
    )
    assert "logprobs" in error["message"]
    assert error["request_id"]
    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="mock:nope", messages=[{"role": "user", "content": "x"}])
    assert isinstance(missing.value.body, dict)
    assert missing.value.body["code"] == "model_not_found"
    wrong = openai.AsyncOpenAI(
        base_url=f"{gw.http_url}/v1", api_key="not-a-key-of-this-gateway", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError) as refused:
        await wrong.chat.completions.create(model="mock:echo", messages=[{"role": "user", "content": "x"}])
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["code"] == "invalid_api_key"
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{gw.http_url}/v1/chat/completions",
            data=b"{not json",
            headers={"authorization": f"Bearer {KEY}"},
        ) as response,
    ):
        assert response.status == 400
        assert (await response.json())["error"]["type"] == "invalid_request_error"


async def test_models_health_and_readiness(gw: RunningGateway, client: openai.AsyncOpenAI) -> None:
    listed = await client.models.list()
    ids = [m.id for m in listed.data]
    assert "mock:echo" in ids
    one = await client.models.retrieve("mock:echo")
    extra = one.model_extra or {}
    assert extra["pricing"] == {
        "status": "priced",
        "currency": "USD",
        "input_per_million": "0.15",
        "output_per_million": "0.6",
    }
    assert "tools" in extra["capabilities"]
    assert extra["state"]["circuit"] == "closed"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gw.http_url}/health") as health:
            assert health.status == 200
            body = await health.json()
            assert body["status"] == "healthy"
            assert body["providers"]["mock"]["circuit"] == "closed"
        async with http.get(f"{gw.http_url}/ready") as ready:
            assert (ready.status, (await ready.json())["ready"]) == (200, True)
        gw.server.runtime.drain.start_draining()
        async with http.get(f"{gw.http_url}/ready") as draining:
            assert draining.status == 503
            assert (await draining.json())["reason"] == "draining"
        async with http.post(
            f"{gw.http_url}/v1/chat/completions",
            json={"model": "mock:echo", "messages": [{"role": "user", "content": "x"}]},
            headers={"authorization": f"Bearer {KEY}"},
        ) as refused:
            assert refused.status == 503
            assert (await refused.json())["error"]["code"] == "shutting_down"


async def test_a_client_leaving_a_stream_closes_the_upstream_request(fake_openai: FakeOpenAI) -> None:
    async with running_gateway(KEYS + openai_toml(fake_openai.base_url)) as gw:
        pieces = [f" w{i}" for i in range(200)]
        fake_openai.script(Reply(sse=text_chunks(pieces, usage(5, 200)), chunk_delay=0.02))
        async with aiohttp.ClientSession() as http:
            response = await http.post(
                f"{gw.http_url}/v1/chat/completions",
                json={
                    "model": "openai:gpt-4o-mini",
                    "messages": [{"role": "user", "content": "x"}],
                    "stream": True,
                },
                headers={"authorization": f"Bearer {KEY}"},
            )
            await response.content.readline()
            response.close()  # the client goes away mid-stream
        for _ in range(100):
            if fake_openai.disconnects:
                break
            await asyncio.sleep(0.02)
        assert fake_openai.disconnects == 1


async def test_http_calls_share_the_ledger_and_the_budgets_with_grpc() -> None:
    budget = """
[[budgets.limits]]
id = "tiny"
scope = "key:team-a"
limit_usd = "0.00001"
period = "day"
"""
    async with running_gateway(KEYS + budget) as gw:
        client = openai.AsyncOpenAI(base_url=f"{gw.http_url}/v1", api_key=KEY, max_retries=0)
        raw = await client.chat.completions.with_raw_response.create(
            model="mock:echo",
            max_tokens=5,
            messages=[{"role": "user", "content": "Count me"}],
            extra_headers={"x-request-id": "http-ledger-1"},
        )
        reply = raw.parse()
        assert raw.headers["x-request-id"] == "http-ledger-1"
        assert raw.headers["x-budget-id"] == "tiny"
        left = Decimal(raw.headers["x-budget-remaining-usd"])
        assert left == Decimal("0.00001") - Decimal((reply.model_extra or {})["cost"]["total_cost"])
        ledger = gw.server.runtime.ledger
        assert ledger is not None
        await ledger.writer.flush()
        page = await ledger.queries.list_records(ANONYMOUS, RecordFilter(key="team-a"))
        (record,) = [r for r in page.records if r.request_id == "http-ledger-1"]
        assert (record.id, record.principal.key, record.model, record.status) == (
            reply.id,
            "team-a",
            "mock:echo",
            "OK",
        )
        # A stream's headers go out first: what remains should it cost all it holds (its worst case).
        async with client.chat.completions.with_streaming_response.create(
            model="mock:echo",
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Count me"}],
        ) as streamed:
            held_left = Decimal(streamed.headers["x-budget-remaining-usd"])
            chunks = [chunk async for chunk in await streamed.parse()]
        extras = [chunk.model_extra or {} for chunk in chunks]
        (cost,) = [Decimal(extra["cost"]["total_cost"]) for extra in extras if "cost" in extra]
        assert 0 <= held_left <= left - cost
        assert streamed.headers["x-budget-id"] == "tiny"
        # A call the budget cannot hold is refused before any upstream request, in OpenAI's shape.
        with pytest.raises(openai.RateLimitError) as refused:
            await client.chat.completions.create(
                model="mock:echo", messages=[{"role": "user", "content": "Too much"}]
            )
        error = refused.value.body
        assert isinstance(error, dict)
        assert (error["code"], error["metadata"]["budget_id"]) == ("budget_exhausted", "tiny")


async def test_the_response_flags_choose_the_extensions(client: openai.AsyncOpenAI) -> None:
    bare = await client.chat.completions.create(
        model="mock:echo",
        messages=[{"role": "user", "content": "x"}],
        extra_body={
            "response": {"include_cost": False, "include_latency": False, "include_model_info": True}
        },
    )
    extra = bare.model_extra or {}
    assert "cost" not in extra
    assert "latency" not in extra
    assert extra["model_info"]["context_window"] == 128000
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(
            model="mock:echo",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"response": {"include_all": 1}},
        )
    assert isinstance(bad.value.body, dict)
    assert bad.value.body["param"] == "response.include_all"


async def test_anthropic_and_gemini_models_through_the_openai_door(
    fake_anthropic: FakeAnthropic, fake_gemini: FakeGemini
) -> None:
    upstreams = f"""
[providers.anthropic]
base_url = "{fake_anthropic.base_url}"
api_key = "sk-ant-test-0123456789abcdef"
retry = {{ max_retries = 0 }}
[providers.gemini]
kind = "gemini"
base_url = "{fake_gemini.base_url}"
api_key = "gemini-test-key-0123456789"
retry = {{ max_retries = 0 }}
"""
    async with running_gateway(KEYS + upstreams) as gw:
        client = openai.AsyncOpenAI(base_url=f"{gw.http_url}/v1", api_key=KEY, max_retries=0)
        fake_anthropic.script(
            AnthropicReply(
                json_body=anthropic_message(
                    [anthropic_text("Bonjour from Claude")], usage_=anthropic_usage(12, 4)
                )
            )
        )
        claude = await client.chat.completions.create(
            model="anthropic:claude-haiku-4-5", messages=[{"role": "user", "content": "Say hello"}]
        )
        assert claude.choices[0].message.content == "Bonjour from Claude"
        assert claude.usage is not None
        assert (claude.usage.prompt_tokens, claude.usage.completion_tokens) == (12, 4)
        assert (claude.model_extra or {})["provider"] == "anthropic"
        assert fake_anthropic.requests[-1].body["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "Say hello"}]}
        ]

        fake_gemini.script(GeminiReply(json_body=gemini_text("Hallo from Gemini", gemini_usage(9, 5))))
        gemini = await client.chat.completions.create(
            model="gemini:gemini-2.5-flash", messages=[{"role": "user", "content": "Say hello"}]
        )
        assert gemini.choices[0].message.content == "Hallo from Gemini"
        assert gemini.usage is not None
        assert (gemini.usage.prompt_tokens, gemini.usage.completion_tokens) == (9, 5)
        assert Decimal((gemini.model_extra or {})["cost"]["total_cost"]) > 0


async def test_lenient_by_header_drops_what_the_gateway_cannot_honour(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model="mock:echo",
        messages=[{"role": "user", "content": "x"}],
        logprobs=True,
        extra_headers={"x-unsupported-parameters": "lenient"},
    )
    assert (reply.model_extra or {})["dropped_parameters"] == ["logprobs"]
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model="mock:echo", messages=[{"role": "user", "content": "x"}], logprobs=True
        )
