"""Routing strategies for `model: "auto"` over a catalog of fake OpenAI-wire providers with known
prices and scripted latencies: cost picks the cheapest eligible model, speed the fastest once
measured, quality the best scored; constraints pass models over, an open circuit is skipped, and
the reply's `routing.considered` says why."""

from __future__ import annotations

from decimal import Decimal

import grpc
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from llmgateway.v1 import chat_pb2
from tests.conftest import OPENAI_TEST_KEY, chat, error_details, running_gateway, violated_fields
from tests.fakes.openai import FakeOpenAI, Reply, completion, error_body

# Three providers on the same fake upstream; prices per million tokens (input, output).
MODELS = {
    "budget": ("small", "0.10", "0.40", '["streaming"]', 16_000),
    "middle": ("medium", "1.00", "4.00", '["streaming", "tools"]', 128_000),
    "premium": ("large", "5.00", "15.00", '["streaming", "tools", "vision"]', 200_000),
}


def catalog(base_url: str, extra: str = "") -> str:
    toml = "[providers.mock]\nenabled = false\n[routing]\nexploration = 0\n"
    toml += '[routing.quality]\n"budget:small" = 0.5\n"middle:medium" = 0.7\n"premium:large" = 0.95\n'
    for provider, (model, inp, out, capabilities, window) in MODELS.items():
        toml += f"""
[providers.{provider}]
kind = "openai"
base_url = "{base_url}"
api_key = "{OPENAI_TEST_KEY}"
retry = {{ max_retries = 0 }}
circuit_breaker = {{ failure_threshold = 1, reset_timeout = 60 }}
[providers.{provider}.models.{model}]
capabilities = {capabilities}
context_window = {window}
price = {{ input_per_million = "{inp}", output_per_million = "{out}" }}
"""
    return toml + extra


def auto(strategy: int = chat_pb2.ROUTING_STRATEGY_COST, **options: object) -> chat_pb2.ChatRequest:
    routing = chat_pb2.RoutingOptions(strategy=strategy, **options)  # type: ignore[arg-type]
    return chat("auto", "Route me", routing=routing)


async def test_cost_picks_the_cheapest_eligible_model_and_says_what_it_considered(
    fake_openai: FakeOpenAI,
) -> None:
    async with running_gateway(catalog(fake_openai.base_url)) as gw:
        cheapest = await gw.stub.Chat(auto())
        with_tools = await gw.stub.Chat(auto(required_capabilities=["tools"]))
        capped = await gw.stub.Chat(auto(max_cost_per_1k_tokens="0.001", preferred_providers=["premium"]))
    assert (cheapest.model, cheapest.routing.reason) == ("budget:small", "strategy:cost")
    assert [c.model for c in cheapest.routing.considered] == [
        "budget:small",
        "middle:medium",
        "premium:large",
    ]
    costs = [Decimal(c.expected_cost) for c in cheapest.routing.considered]
    assert costs == sorted(costs)
    assert all(not c.passed_over for c in cheapest.routing.considered)
    assert list(cheapest.routing.candidates) == ["budget:small", "middle:medium", "premium:large"]
    # A required capability passes the model without it over, and says so.
    assert with_tools.model == "middle:medium"
    passed = {c.model: c.passed_over for c in with_tools.routing.considered if c.passed_over}
    assert passed == {"budget:small": "lacks tools"}
    # A cap on the cost per 1,000 tokens leaves only the cheapest, whatever the preference.
    assert capped.model == "budget:small"
    over = {c.model: c.passed_over for c in capped.routing.considered if c.passed_over}
    assert set(over) == {"middle:medium", "premium:large"}
    assert all(why.startswith("over max_cost_per_1k_tokens") for why in over.values())


async def test_quality_picks_the_best_scored_and_preferred_providers_come_first(
    fake_openai: FakeOpenAI,
) -> None:
    async with running_gateway(catalog(fake_openai.base_url)) as gw:
        best = await gw.stub.Chat(auto(chat_pb2.ROUTING_STRATEGY_QUALITY))
        preferred = await gw.stub.Chat(auto(preferred_providers=["middle"]))
    assert best.model == "premium:large"
    assert [c.quality for c in best.routing.considered] == [0.95, 0.7, 0.5]
    assert preferred.model == "middle:medium"  # before the cheaper budget model


async def test_speed_picks_the_fastest_once_measured_and_max_latency_passes_the_slow_over(
    fake_openai: FakeOpenAI,
) -> None:
    async with running_gateway(catalog(fake_openai.base_url)) as gw:
        # Warm-up: each model once, named; the premium one answers fastest.
        for model, delay in [("budget:small", 0.30), ("middle:medium", 0.15), ("premium:large", 0.02)]:
            fake_openai.script(Reply(delay=delay, json_body=completion("warm")))
            await gw.stub.Chat(chat(model, "warm up"))
        fastest = await gw.stub.Chat(auto(chat_pb2.ROUTING_STRATEGY_SPEED))
        bounded = await gw.stub.Chat(auto(max_latency_ms=200))
    assert fastest.model == "premium:large"
    latencies = [c.latency.ToNanoseconds() / 1e9 for c in fastest.routing.considered]
    assert latencies == sorted(latencies)
    assert latencies[-1] >= 0.3
    assert bounded.model == "middle:medium"  # the cheapest of those fast enough
    slow = {c.model: c.passed_over for c in bounded.routing.considered if c.passed_over}
    assert list(slow) == ["budget:small"]
    assert slow["budget:small"].startswith("recent latency over max_latency_ms")


async def test_an_open_circuit_is_passed_over(fake_openai: FakeOpenAI) -> None:
    async with running_gateway(catalog(fake_openai.base_url)) as gw:
        fake_openai.script(Reply(status=500, json_body=error_body("down", "server_error")))
        with pytest.raises(grpc.aio.AioRpcError):
            await gw.stub.Chat(chat("budget:small", "fail once"))  # threshold 1: the circuit opens
        routed = await gw.stub.Chat(auto())
    assert routed.model == "middle:medium"
    assert {c.model: c.passed_over for c in routed.routing.considered if c.passed_over} == {
        "budget:small": "circuit open"
    }


async def test_no_model_meeting_the_options_is_refused_and_bad_options_name_their_field(
    fake_openai: FakeOpenAI,
) -> None:
    async with running_gateway(catalog(fake_openai.base_url)) as gw:
        with pytest.raises(grpc.aio.AioRpcError) as none:
            await gw.stub.Chat(auto(min_context_window=1_000_000))
        details = error_details(none.value)
        assert (details.code, details.info.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "NO_MODEL_AVAILABLE",
        )
        assert "min_context_window" in details.message
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await gw.stub.Chat(
                auto(max_cost_per_1k_tokens="cheap", required_capabilities=["telepathy"], max_latency_ms=0)
            )
        assert sorted(violated_fields(error_details(bad.value))) == [
            "routing.max_cost_per_1k_tokens",
            "routing.max_latency_ms",
            "routing.required_capabilities[0]",
        ]
    assert not fake_openai.requests


async def test_the_openai_door_takes_the_same_routing_options(fake_openai: FakeOpenAI) -> None:
    async with running_gateway(catalog(fake_openai.base_url)) as gw:
        client = openai.AsyncOpenAI(base_url=f"{gw.http_url}/v1", api_key="unused", max_retries=0)
        messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Route me"}]
        routing = {"strategy": "cost", "required_capabilities": ["vision"]}
        reply = await client.chat.completions.create(
            model="auto", messages=messages, extra_body={"routing": routing}
        )
        with pytest.raises(openai.BadRequestError) as refused:
            await client.chat.completions.create(
                model="auto", messages=messages, extra_body={"routing": {"strategy": "fastest"}}
            )
    extra = reply.model_extra or {}
    assert reply.model == "premium:large"
    assert extra["routing"]["routing_reason"] == "strategy:cost"
    considered = {c["model"]: c["passed_over"] for c in extra["routing"]["considered"]}
    assert considered == {
        "premium:large": None,
        "budget:small": "lacks vision",
        "middle:medium": "lacks vision",
    }
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["param"] == "routing.strategy"
