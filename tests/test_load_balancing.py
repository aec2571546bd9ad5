"""Model groups: one name, several deployments of the same model, each its own provider entry
with its own key, limits and circuit. Weighted random spreads calls in proportion to the weights,
least-busy spreads a burst evenly, latency prefers the faster deployment; a deployment that fails
or has no rate-limit room is skipped for the next, and its circuit opens alone. ListModels and
the OpenAI door's model list show each group's deployments and their state."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from pathlib import Path

import grpc
import httpx
import openai
import pytest

from llm_gateway.config import ConfigError, load_config
from llmgateway.v1 import catalog_pb2
from tests.conftest import chat, error_details, running_gateway
from tests.fakes.openai import FakeOpenAI, Reply, error_body

KEY = "sk-lb-test-0123456789abcdef"


def mock_group(weights: dict[str, int], policy: str = "weighted") -> str:
    """A group of mock deployments (one provider entry each), named `echo`."""
    toml = ""
    for name in weights:
        toml += f'[providers.{name}]\nkind = "mock"\n[providers.{name}.models.echo]\n'
    deployments = ", ".join(f'{{ model = "{n}:echo", weight = {w} }}' for n, w in weights.items())
    return toml + f'[groups.echo]\npolicy = "{policy}"\ndeployments = [{deployments}]\n'


def fake_group(
    fakes: dict[str, FakeOpenAI], policy: str, weights: dict[str, int] | None = None, extra: str = ""
) -> str:
    """A group `gpt` of OpenAI-wire deployments, each on its own fake upstream with its own key."""
    toml = "[providers.mock]\nenabled = false\n"
    for name, fake in fakes.items():
        toml += f"""
[providers.{name}]
kind = "openai"
base_url = "{fake.base_url}"
api_key = "sk-{name}-0123456789abcdef"
retry = {{ max_retries = 2, initial_backoff = 0 }}
circuit_breaker = {{ failure_threshold = 2, reset_timeout = 60 }}
{extra.replace("NAME", name)}
[providers.{name}.models.gpt-4o]
price = {{ input_per_million = "2.50", output_per_million = "10.00" }}
"""
    weights = weights or {name: 1 for name in fakes}
    deployments = ", ".join(f'{{ model = "{n}:gpt-4o", weight = {weights[n]} }}' for n in fakes)
    return toml + f'[groups.gpt]\npolicy = "{policy}"\ndeployments = [{deployments}]\n'


async def test_weighted_spreads_ten_thousand_calls_in_proportion_to_the_weights() -> None:
    weights = {"east": 5, "west": 3, "north": 2, "standby": 0}
    async with running_gateway(mock_group(weights)) as gw:
        served: Counter[str] = Counter()
        for _ in range(100):
            replies = await asyncio.gather(*(gw.stub.Chat(chat("echo", "hi")) for _ in range(100)))
            served.update(reply.model for reply in replies)
        last = replies[-1]
    calls, total = 10_000, sum(weights.values())
    assert sum(served.values()) == calls
    for name, weight in weights.items():
        p = weight / total
        expected, sigma = calls * p, math.sqrt(calls * p * (1 - p))
        # Five standard deviations: a correct balancer fails this about once in two million runs.
        assert abs(served[f"{name}:echo"] - expected) <= 5 * sigma + 0.5, (name, served)
    assert served["standby:echo"] == 0
    assert last.routing.reason == "group:weighted"
    assert sorted((c.model, c.weight) for c in last.routing.considered) == sorted(
        (f"{name}:echo", weight) for name, weight in weights.items()
    )
    assert last.routing.considered[-1].model == "standby:echo"  # a standby comes last


async def test_least_busy_spreads_a_burst_evenly_and_list_models_shows_the_calls_in_flight() -> None:
    fakes = {name: FakeOpenAI() for name in ("east", "west", "north")}
    for fake in fakes.values():
        await fake.start()
        fake.script(*[Reply(echo=True, delay=0.5)] * 10)
    try:
        async with running_gateway(fake_group(fakes, "least_busy")) as gw:
            burst = [asyncio.ensure_future(gw.stub.Chat(chat("gpt", f"call {i}"))) for i in range(30)]
            for fake in fakes.values():
                await fake.received(10)
            listed = await gw.stub.ListModels(catalog_pb2.ListModelsRequest())
            replies = await asyncio.gather(*burst)
    finally:
        for fake in fakes.values():
            await fake.stop()
    # Each call counts on its deployment from the moment it is chosen: 30 calls, 10 each.
    assert {name: len(fake.requests) for name, fake in fakes.items()} == {"east": 10, "west": 10, "north": 10}
    assert Counter(reply.model for reply in replies) == {
        "east:gpt-4o": 10,
        "west:gpt-4o": 10,
        "north:gpt-4o": 10,
    }
    assert {r.routing.reason for r in replies} == {"group:least_busy"}
    (group,) = listed.groups
    assert group.name == "gpt"
    assert group.policy == catalog_pb2.LOAD_BALANCING_POLICY_LEAST_BUSY
    assert [(d.model, d.enabled, d.state.in_flight) for d in group.deployments] == [
        ("east:gpt-4o", True, 10),
        ("west:gpt-4o", True, 10),
        ("north:gpt-4o", True, 10),
    ]
    in_flight = {m.id: m.state.in_flight for m in listed.models}
    assert in_flight == {"east:gpt-4o": 10, "west:gpt-4o": 10, "north:gpt-4o": 10}
    assert {m.id: list(m.groups) for m in listed.models}["east:gpt-4o"] == ["gpt"]


async def test_latency_prefers_the_faster_deployment_once_both_are_measured() -> None:
    fakes = {"slow": FakeOpenAI(), "fast": FakeOpenAI()}
    for fake in fakes.values():
        await fake.start()
    fakes["slow"].script(*[Reply(echo=True, delay=0.2)] * 20)
    try:
        async with running_gateway(fake_group(fakes, "latency")) as gw:
            served = [(await gw.stub.Chat(chat("gpt", f"call {i}"))).model for i in range(12)]
            last = await gw.stub.Chat(chat("gpt", "last"))
    finally:
        for fake in fakes.values():
            await fake.stop()
    # The first two calls measure both (a deployment without recent latency goes first); then
    # the power of two choices over two deployments always picks the faster.
    assert sorted(served[:2]) == ["fast:gpt-4o", "slow:gpt-4o"]
    assert served[2:] == ["fast:gpt-4o"] * 10
    assert last.routing.reason == "group:latency"
    slow, fast = {c.model: c for c in last.routing.considered}["slow:gpt-4o"], last.routing.considered[0]
    assert fast.model == "fast:gpt-4o"
    assert slow.latency.ToTimedelta().total_seconds() >= 0.2 > fast.latency.ToTimedelta().total_seconds()


async def test_a_failing_deployment_is_skipped_for_the_next_and_its_circuit_opens_alone() -> None:
    fakes = {"broken": FakeOpenAI(), "healthy": FakeOpenAI()}
    for fake in fakes.values():
        await fake.start()
    fakes["broken"].script(*[Reply(status=500, json_body=error_body("server_error", "boom"))] * 10)
    try:
        toml = fake_group(fakes, "weighted", {"broken": 1000, "healthy": 1})
        async with running_gateway(toml) as gw:
            replies = [await gw.stub.Chat(chat("gpt", f"call {i}")) for i in range(6)]
            listed = await gw.stub.ListModels(catalog_pb2.ListModelsRequest())
    finally:
        for fake in fakes.values():
            await fake.stop()
    assert [r.model for r in replies] == ["healthy:gpt-4o"] * 6
    # Not retried on the broken deployment (another one was there to try): one request per call
    # until its circuit (threshold 2) opened; after that it is not tried first, or at all.
    assert len(fakes["broken"].requests) == 2
    assert len(fakes["healthy"].requests) == 6
    first = replies[0].routing
    assert first.fallback_used
    assert [a.model for a in first.attempts] == ["broken:gpt-4o", "healthy:gpt-4o"]
    later = replies[-1].routing
    assert [a.model for a in later.attempts] == ["healthy:gpt-4o"]
    assert [(c.model, c.passed_over) for c in later.considered] == [
        ("healthy:gpt-4o", ""),
        ("broken:gpt-4o", "circuit open"),
    ]
    states = {d.model: d.state.circuit_state for d in listed.groups[0].deployments}
    assert states == {
        "broken:gpt-4o": catalog_pb2.CIRCUIT_STATE_OPEN,
        "healthy:gpt-4o": catalog_pb2.CIRCUIT_STATE_CLOSED,
    }


async def test_a_deployment_without_rate_limit_room_is_skipped_without_waiting() -> None:
    fakes = {"small": FakeOpenAI(), "large": FakeOpenAI()}
    for fake in fakes.values():
        await fake.start()
    try:
        limit = "rate_limit = { requests_per_minute = 2, max_wait = 5 }"
        toml = fake_group(fakes, "weighted", {"small": 1000, "large": 1}, extra="")
        toml = toml.replace("[providers.small.models", f"{limit}\n[providers.small.models")
        async with running_gateway(toml) as gw:
            loop = asyncio.get_running_loop()
            started = loop.time()
            replies = [await gw.stub.Chat(chat("gpt", f"call {i}")) for i in range(6)]
            took = loop.time() - started
    finally:
        for fake in fakes.values():
            await fake.stop()
    assert [r.model for r in replies] == ["small:gpt-4o"] * 2 + ["large:gpt-4o"] * 4
    assert ("small:gpt-4o", "no rate-limit room now") in [
        (c.model, c.passed_over) for c in replies[-1].routing.considered
    ]
    assert took < 5  # none waited out the small deployment's max_wait


async def test_groups_through_the_openai_door_and_a_group_with_no_enabled_deployment() -> None:
    toml = (
        mock_group({"east": 1, "west": 1})
        + f"""
[providers.offline]
kind = "mock"
enabled = false
[providers.offline.models.echo]
[groups.dark]
deployments = [{{ model = "offline:echo" }}]
[[auth.keys]]
name = "app"
key = "{KEY}"
"""
    )
    async with running_gateway(toml) as gw:
        client = openai.AsyncOpenAI(base_url=f"{gw.http_url}/v1", api_key=KEY, max_retries=0, timeout=30)
        reply = await client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "hi"}]
        )
        extra = reply.model_extra or {}
        listed = await client.models.list()
        async with httpx.AsyncClient(
            base_url=gw.http_url, headers={"authorization": f"Bearer {KEY}"}
        ) as http:
            one = (await http.get("/v1/models/echo")).json()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gw.stub.Chat(chat("dark", "hi"), metadata=[("authorization", f"Bearer {KEY}")])
        grpc_listed = await gw.stub.ListModels(
            catalog_pb2.ListModelsRequest(), metadata=[("authorization", f"Bearer {KEY}")]
        )
    assert reply.model in ("east:echo", "west:echo")
    assert extra["routing"]["routing_reason"] == "group:weighted"
    assert {c["model"] for c in extra["routing"]["considered"]} == {"east:echo", "west:echo"}
    assert all(c["weight"] == 1 and c["in_flight"] >= 0 for c in extra["routing"]["considered"])
    groups = {m.id: m.model_extra or {} for m in listed.data if (m.model_extra or {}).get("type") == "group"}
    assert set(groups) == {"echo", "dark"}
    assert [(d["model"], d["enabled"]) for d in groups["dark"]["deployments"]] == [("offline:echo", False)]
    assert one["id"] == "echo"
    assert one["policy"] == "weighted"
    assert [d["model"] for d in one["deployments"]] == ["east:echo", "west:echo"]
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(refused.value).info.reason == "NO_MODEL_AVAILABLE"
    dark = {g.name: g for g in grpc_listed.groups}["dark"]
    assert [(d.model, d.enabled, d.HasField("state")) for d in dark.deployments] == [
        ("offline:echo", False, False)
    ]


async def test_a_group_is_a_fallback_like_any_model(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(Reply(status=503, json_body=error_body("server_error", "down")))
    toml = (
        mock_group({"east": 1, "west": 1})
        + f"""
[providers.openai]
base_url = "{fake_openai.base_url}"
api_key = "sk-test-0123456789abcdef"
retry = {{ max_retries = 0 }}
[providers.openai.models.gpt-4o-mini]
fallbacks = ["echo"]
"""
    )
    async with running_gateway(toml) as gw:
        reply = await gw.stub.Chat(chat("openai:gpt-4o-mini", "hi"))
    assert reply.routing.fallback_used
    assert reply.model in ("east:echo", "west:echo")
    assert list(reply.routing.candidates)[1:] in (
        ["east:echo", "west:echo"],
        ["west:echo", "east:echo"],
    )


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        ('[groups.g]\ndeployments = [{ model = "nowhere:echo" }]', "groups.g.deployments[0].model"),
        (
            '[groups.g]\ndeployments = [{ model = "mock:echo" }, { model = "mock:echo" }]',
            "each model may appear once",
        ),
        ('[groups.g]\ndeployments = [{ model = "mock:echo", weight = 0 }]', "at least one weight"),
        ("[groups.g]\ndeployments = []", "deployments"),
        ('[groups."a:b"]\ndeployments = [{ model = "mock:echo" }]', "a group's name has no ':'"),
        (
            '[aliases]\ng = "mock:echo"\n[groups.g]\ndeployments = [{ model = "mock:echo" }]',
            "the name is an alias too",
        ),
        ('[groups.g]\npolicy = "round_robin"\ndeployments = [{ model = "mock:echo" }]', "policy"),
    ],
)
def test_bad_groups_are_refused_at_load_naming_the_field(tmp_path: Path, groups: str, message: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(groups + "\n")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(path, {})
