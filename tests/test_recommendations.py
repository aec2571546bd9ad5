"""Cost recommendations from a known ledger, on SQLite and PostgreSQL: for each project and model,
the cheaper models with the same capabilities and a context window that held the longest prompt,
what the same calls would have cost on them to the last decimal (long-context tiers and request
fees included), and how they fared in the period; through UsageService and `llm-gateway usage
--recommend`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal

import grpc
import pytest

from llm_gateway.domain.results import Usage
from llm_gateway.gateway.outcome import Attempt
from llm_gateway.gateway.record import CallRecord
from llm_gateway.ledger import open_store, parse_url
from llm_gateway.ledger.rows import encode
from llmgateway.v1 import usage_pb2, usage_service_pb2_grpc
from tests.conftest import error_details, running_gateway, violated_fields
from tests.ledgers import backend_url, record  # noqa: F401 (a fixture)
from tests.test_usage_service import period

ADMIN = (("authorization", "Bearer ops-key-0123456789abcdef"),)
MEMBER = (("authorization", "Bearer team-a-key-0123456789ab"),)
M = Decimal(1_000_000)


def catalog(ledger_url: str) -> str:
    toml = f"""
[providers.mock]
enabled = false
[ledger]
url = "{ledger_url}"
flush_interval = 0.05
[[auth.keys]]
name = "ops"
key = "ops-key-0123456789abcdef"
role = "admin"
[[auth.keys]]
name = "team-a"
key = "team-a-key-0123456789ab"
"""
    # (model, capabilities, context window, price table); none is ever called.
    models = {
        "premium": (
            "large",
            '["streaming", "tools", "vision"]',
            200_000,
            'input_per_million = "5", output_per_million = "15"',
        ),
        "middle": (
            "medium",
            '["streaming", "tools", "vision", "reasoning"]',
            200_000,
            'input_per_million = { base = "1", tiers = [{ start = 100000, price = "2" }] }, '
            'output_per_million = { base = "4", tiers = [{ start = 100000, price = "8" }] }, '
            'cached_input_per_million = "0.5", per_request = "0.001"',
        ),
        "budget": (
            "small",
            '["streaming"]',
            128_000,
            'input_per_million = "0.1", output_per_million = "0.4"',
        ),
        "local": ("tiny", '["streaming", "tools", "vision"]', 8_000, "free = true"),
        "mystery": ("x", '["streaming", "tools", "vision"]', 200_000, None),
    }
    for provider, (model, capabilities, window, price) in models.items():
        toml += f"""
[providers.{provider}]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-test-0123456789abcdef"
[providers.{provider}.models.{model}]
capabilities = {capabilities}
context_window = {window}
"""
        if price is not None:
            toml += f"price = {{ {price} }}\n"
    return toml


def call(
    project: str,
    model: str,
    prompt: int,
    completion: int,
    cost: str,
    *,
    cached: int = 0,
    key: str = "ops",
    status: str = "OK",
    latency: float = 1.0,
    dry_run: bool = False,
) -> CallRecord:
    at = datetime.now(UTC).timestamp()
    usage = Usage(prompt_tokens=prompt, completion_tokens=completion, cache_read_tokens=cached)
    made = record(
        at=at,
        key=key,
        project=project,
        model=model,
        status=status,
        reason="" if status == "OK" else "UPSTREAM_UNAVAILABLE",
        # A call that failed before any model produced anything has neither.
        cost=Decimal(cost) if prompt else None,
        usage=usage if prompt else None,
        latency=latency,
        dry_run=dry_run,
        attempts=(Attempt(model.partition(":")[0], model, status, "", "", latency),),
    )
    return made


@pytest.fixture
async def ledger_calls(backend_url: str) -> str:  # noqa: F811
    """A known ledger: the calls below, straight into the database the gateway will read."""
    calls = [
        # search on premium:large: three calls, one past middle's 100,000-token tier.
        call("search", "premium:large", 1_000, 500, "0.0125", latency=2.0),
        call("search", "premium:large", 150_000, 1_000, "0.765", cached=50_000, latency=4.0),
        call("search", "premium:large", 2_000, 100, "0.0115", latency=3.0),
        # Not weighed: a dry run, and a call that failed with nothing to count (it still shows
        # in premium's error rate).
        call("search", "premium:large", 5_000, 5_000, "0.1", dry_run=True),
        call("search", "premium:large", 0, 0, "0", status="UNAVAILABLE", latency=0.5),
        # analytics on premium:large: short prompts, so the 8,000-token free model fits too.
        call("analytics", "premium:large", 4_000, 1_000, "0.035", key="team-a", latency=1.5),
        # middle:medium's own record in the period: four calls, one failed.
        *(call("other", "middle:medium", 100, 10, "0.00114", latency=s) for s in (0.2, 0.4, 0.6)),
        call("other", "middle:medium", 100, 0, "0.0011", status="UNAVAILABLE", latency=0.8),
    ]
    store = open_store(parse_url(backend_url), timeout=5.0)
    try:
        await store.migrate()
        await store.insert([encode(c) for c in calls])
    finally:
        await store.close()
    return backend_url


async def test_recommendations_price_the_same_calls_exactly_on_cheaper_capable_models(
    ledger_calls: str,
) -> None:
    async with running_gateway(catalog(ledger_calls)) as gw:
        usage = usage_service_pb2_grpc.UsageServiceStub(gw.channel)
        reply = await usage.GetCostRecommendations(
            usage_pb2.GetCostRecommendationsRequest(filter=period()), metadata=ADMIN
        )
        own = await usage.GetCostRecommendations(
            usage_pb2.GetCostRecommendationsRequest(filter=period(), max_alternatives=1), metadata=MEMBER
        )
    found = {(r.project, r.model): r for r in reply.recommendations}
    search = found[("search", "premium:large")]
    assert (search.requests, search.prompt_tokens, search.completion_tokens, search.cache_read_tokens) == (
        3,
        153_000,
        1_600,
        50_000,
    )
    assert Decimal(search.cost) == Decimal("0.0125") + Decimal("0.765") + Decimal("0.0115")
    # middle:medium, call by call: base rates for the short prompts, the tier for the long one
    # (cache reads at their own price), and a request fee each. budget:small lacks tools,
    # local:tiny's window cannot hold 150,000 tokens, mystery:x has no price.
    middle = (
        (1_000 * Decimal(1) + 500 * Decimal(4)) / M
        + (100_000 * Decimal(2) + 50_000 * Decimal("0.5") + 1_000 * Decimal(8)) / M
        + (2_000 * Decimal(1) + 100 * Decimal(4)) / M
        + 3 * Decimal("0.001")
    )
    assert [(a.model, Decimal(a.cost)) for a in search.alternatives] == [("middle:medium", middle)]
    (alternative,) = search.alternatives
    assert Decimal(alternative.savings) == Decimal(search.cost) - middle
    assert alternative.savings_fraction == pytest.approx(
        float((Decimal(search.cost) - middle) / Decimal(search.cost))
    )
    # How each fared in the period, over every project: premium 5 calls (the dry run aside), 1
    # failed, latencies 2, 4, 3, 0.5 and 1.5 s; middle 4 calls, 1 failed, 0.2 to 0.8 s.
    assert (search.observed.requests, search.observed.error_rate) == (5, 0.2)
    assert search.observed.latency_p50.ToTimedelta().total_seconds() == pytest.approx(2.0)
    assert (alternative.observed.requests, alternative.observed.error_rate) == (4, 0.25)
    assert alternative.observed.latency_p50.ToTimedelta().total_seconds() == pytest.approx(0.5)

    analytics = found[("analytics", "premium:large")]
    assert [(a.model, Decimal(a.cost)) for a in analytics.alternatives] == [
        ("local:tiny", Decimal(0)),
        ("middle:medium", (4_000 * Decimal(1) + 1_000 * Decimal(4)) / M + Decimal("0.001")),
    ]
    # The model already cheapest for its calls has nothing to suggest, and comes last.
    assert reply.recommendations[-1].model == "middle:medium"
    assert list(reply.recommendations[-1].alternatives) == []
    assert reply.recommendations[0].project == "search"  # the largest saving first
    assert Decimal(reply.total_cost) == sum(Decimal(r.cost) for r in reply.recommendations)
    assert Decimal(reply.potential_savings) == Decimal(search.cost) - middle + Decimal("0.035")
    assert reply.currency == "USD"

    # A key that is not an admin key sees its own calls only, and what it asked for.
    assert [(r.project, r.model, [a.model for a in r.alternatives]) for r in own.recommendations] == [
        ("analytics", "premium:large", ["local:tiny"])
    ]


async def test_a_bad_request_names_its_field(ledger_calls: str) -> None:
    async with running_gateway(catalog(ledger_calls)) as gw:
        usage = usage_service_pb2_grpc.UsageServiceStub(gw.channel)
        with pytest.raises(grpc.aio.AioRpcError) as no_period:
            await usage.GetCostRecommendations(usage_pb2.GetCostRecommendationsRequest(), metadata=ADMIN)
        with pytest.raises(grpc.aio.AioRpcError) as too_many:
            await usage.GetCostRecommendations(
                usage_pb2.GetCostRecommendationsRequest(filter=period(), max_alternatives=21), metadata=ADMIN
            )
        with pytest.raises(grpc.aio.AioRpcError) as other_key:
            await usage.GetCostRecommendations(
                usage_pb2.GetCostRecommendationsRequest(filter=period(api_key="ops")), metadata=MEMBER
            )
    assert violated_fields(error_details(no_period.value)) == ["filter.start_time"]
    assert violated_fields(error_details(too_many.value)) == ["max_alternatives"]
    assert other_key.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_the_cli_prints_the_recommendations(ledger_calls: str) -> None:
    async with running_gateway(catalog(ledger_calls)) as gw:
        today = datetime.now(UTC).date().isoformat()
        done = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "llm_gateway",
                "usage",
                "--recommend",
                "--address",
                gw.address,
                "--api-key",
                "ops-key-0123456789abcdef",
                "--from",
                today,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"Cost recommendations {today} (UTC)")
    row = next(line for line in lines if line.startswith("search"))
    assert row.split()[:3] == ["search", "premium:large", "3"]
    assert "middle:medium" in row
