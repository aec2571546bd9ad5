"""Subscription billing: a provider billed by a flat fee per period with a token quota. A call costs
its marginal price, counted across every worker through the ledger's database, so the call that
crosses the quota pays for exactly its tokens past it; ListModels shows the plan, and usage
summaries spread the fee over the period's calls."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import openai
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from llm_gateway.budgets.periods import Period, Window
from llm_gateway.config.loader import ConfigError
from llm_gateway.domain.results import Usage
from llm_gateway.pricing import PriceSheet, PricingStatus, Rate
from llm_gateway.pricing.subscription import Plan, marginal_cost, overage_usage
from llmgateway.v1 import (
    accounting_pb2,
    catalog_pb2,
    chat_pb2,
    gateway_service_pb2_grpc,
    usage_pb2,
    usage_service_pb2_grpc,
)
from tests.conftest import chat, gateway_process, openai_toml, running_gateway
from tests.fakes.openai import FakeOpenAI
from tests.ledger_traffic import own_channel
from tests.ledgers import backend_url  # noqa: F401 (a fixture)
from tests.postgres import PostgresCluster
from tests.test_usage_service import llm_gateway_usage

MILLION = Decimal(1_000_000)
SHEET = PriceSheet(
    status=PricingStatus.PRICED,
    source="config",
    input=Rate(Decimal(2)),
    cached_input=Rate(Decimal(1)),
    output=Rate(Decimal(10)),
    per_request=Decimal("0.001"),
)
PERIOD = Window(datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))


def plan(included: int | None) -> Plan:
    return Plan("ptu", Decimal(500), Period.MONTH, included, ZoneInfo("UTC"))


def test_a_call_within_the_quota_costs_nothing_and_one_past_it_pays_the_models_price() -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=300, cache_read_tokens=400, reasoning_tokens=100)
    within = marginal_cost(SHEET, usage, plan(10_000).charge(PERIOD, 0, usage.total_tokens))
    assert (within.total, within.status, within.source) == (Decimal(0), PricingStatus.PRICED, "subscription")
    assert within.plan is not None
    assert (within.plan.included, within.plan.overage) == (1300, 0)
    past = marginal_cost(SHEET, usage, plan(10_000).charge(PERIOD, 10_000, usage.total_tokens))
    assert past.total == SHEET.cost(usage).total  # every token, and the request fee
    assert past.request_fee == Decimal("0.001")
    unlimited = marginal_cost(SHEET, usage, plan(None).charge(PERIOD, 10**12, usage.total_tokens))
    assert unlimited.total == 0
    assert unlimited.plan is not None
    assert unlimited.plan.overage == 0


def test_the_call_that_crosses_the_quota_pays_for_its_last_tokens_only() -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=300, cache_read_tokens=400, reasoning_tokens=100)
    # 500 of its 1,300 tokens fit: the last 800 are the 300 output tokens and 500 uncached input.
    charge = plan(1_000).charge(PERIOD, 500, usage.total_tokens)
    assert (charge.before, charge.included, charge.overage) == (500, 500, 800)
    over = overage_usage(usage, charge.overage)
    assert (over.completion_tokens, over.reasoning_tokens, over.prompt_tokens, over.cache_read_tokens) == (
        300,
        100,
        500,
        0,
    )
    cost = marginal_cost(SHEET, usage, charge)
    assert cost.total == (500 * Decimal(2) + 300 * Decimal(10)) / MILLION  # no request fee: it began covered
    assert cost.request_fee == 0
    # Past all of the uncached input, the overage reaches the cache reads, at their own price.
    deep = overage_usage(usage, 1_200)
    assert (deep.prompt_tokens, deep.cache_read_tokens) == (900, 300)
    assert (
        marginal_cost(SHEET, usage, plan(100).charge(PERIOD, 0, 1300)).total
        == (600 * Decimal(2) + 300 * Decimal(1) + 300 * Decimal(10)) / MILLION
    )


def test_calls_in_order_pay_exactly_for_the_tokens_past_the_quota() -> None:
    """However calls of any sizes fall around the quota, their costs add up to the price of the
    tokens past it."""
    quota = 5_000
    before, total = 0, Decimal(0)
    for n in range(40):
        usage = Usage(prompt_tokens=100 + 37 * n, completion_tokens=50 + 11 * n)
        cost = marginal_cost(SHEET, usage, plan(quota).charge(PERIOD, before, usage.total_tokens))
        total += cost.total
        before += usage.total_tokens
    assert before > quota
    # Every call here has more prompt than overage at the crossing, so only output and input tokens
    # are past it; check against the sum computed token by token.
    expected = Decimal(0)
    used = 0
    for n in range(40):
        usage = Usage(prompt_tokens=100 + 37 * n, completion_tokens=50 + 11 * n)
        for i in range(usage.total_tokens):
            if used + i >= quota:
                rate = Decimal(2) if i < usage.prompt_tokens else Decimal(10)
                expected += rate / MILLION
        if used >= quota:
            expected += Decimal("0.001")  # wholly past the quota: its request fee too
        used += usage.total_tokens
    assert total == expected


def subscription_toml(included: int, url: str, directory: Path) -> str:
    return f"""
[ledger]
url = "{url}"
spool_dir = "{directory}/spool"

[providers.mock]
chunk_delay = 0.001

[providers.mock.subscription]
fee_usd = "100"
period = "month"
included_tokens = {included}
overage = {{ input_per_million = "3", output_per_million = "12" }}
"""


def _decimal(text: str) -> Decimal:
    return Decimal(text or "0")


async def _call(
    stub: gateway_service_pb2_grpc.GatewayServiceAsyncStub, n: int
) -> tuple[accounting_pb2.Usage, accounting_pb2.Cost]:
    words = " ".join(f"w{n}x{i}" for i in range(5 + n % 23))
    request = chat("mock:echo", words, caller=chat_pb2.CallerMetadata(project="ptu"))
    if n % 2:
        reply = await stub.Chat(request, timeout=30)
        return reply.usage, reply.cost
    finish = None
    async for event in stub.ChatStream(chat_pb2.ChatStreamRequest(request=request), timeout=30):
        if event.HasField("finish"):
            finish = event.finish
    assert finish is not None
    return finish.usage, finish.cost


async def _summary_of(
    usage: usage_service_pb2_grpc.UsageServiceAsyncStub, calls: int, now: datetime
) -> usage_pb2.GetUsageSummaryResponse:
    """The summary by provider of the last 40 days, once the ledger holds `calls` calls (each worker
    writes its own calls out every flush interval)."""
    start, end = Timestamp(), Timestamp()
    start.FromDatetime(now - timedelta(days=40))
    end.FromDatetime(now + timedelta(minutes=1))
    request = usage_pb2.GetUsageSummaryRequest(
        filter=usage_pb2.UsageFilter(start_time=start, end_time=end), group_by=["provider"]
    )
    for _ in range(100):
        summary = await usage.GetUsageSummary(request, timeout=10)
        if summary.total.requests >= calls:
            return summary
        await asyncio.sleep(0.05)
    raise AssertionError(f"{summary.total.requests} of {calls} calls reached the ledger")


def _price(usage: Usage, per_million: tuple[str, str] = ("0.15", "0.60")) -> Decimal:
    """At mock:echo's configured prices (defaults.toml), or others (input, output per million)."""
    rate_in, rate_out = (Decimal(rate) for rate in per_million)
    return (usage.prompt_tokens * rate_in + usage.completion_tokens * rate_out) / MILLION


OVERAGE = ("3", "12")  # the plan's own price past its quota


async def test_two_workers_cross_the_quota_exactly_once_and_the_summary_spreads_the_fee(
    tmp_path: Path,
    backend_url: str,  # noqa: F811
) -> None:
    included = 6_000
    toml = subscription_toml(included, backend_url, tmp_path)
    async with gateway_process(tmp_path, toml, "--workers", "2") as gateway:
        channels = [own_channel(gateway.address) for _ in range(12)]
        try:
            stubs = [gateway_service_pb2_grpc.GatewayServiceStub(c) for c in channels]
            replies = await asyncio.gather(*(_call(stubs[n % len(stubs)], n) for n in range(160)))
            listed = await stubs[0].ListModels(catalog_pb2.ListModelsRequest(provider="mock"), timeout=10)
            now = datetime.now(UTC)
            summary = await _summary_of(usage_service_pb2_grpc.UsageServiceStub(channels[0]), 160, now)
        finally:
            for channel in channels:
                await channel.close(None)
        workers = Counter(line["worker"] for line in await gateway.access_lines(160))
    assert len(workers) == 2, f"calls per worker: {workers}"

    # One order across both workers: each call's period count starts where the previous one's ended.
    charges = sorted((cost.subscription.tokens_before, usage, cost) for usage, cost in replies)
    position = 0
    for before, usage, cost in charges:
        tokens = usage.prompt_tokens + usage.completion_tokens
        assert before == position
        assert cost.subscription.plan == "mock"
        assert cost.subscription.included_tokens == min(tokens, max(included - before, 0))
        assert cost.subscription.overage_tokens == tokens - cost.subscription.included_tokens
        position += tokens
    assert position > included, "the calls must use up the quota"
    crossing = [c for _, _, c in charges if c.subscription.included_tokens and c.subscription.overage_tokens]
    # The quota ends inside one call, or exactly between two.
    assert len(crossing) == 1 or included in {before for before, _, _ in charges}
    assert len(crossing) <= 1
    # Within the quota nothing; past it the model's prices; across it, only its tokens past it.
    for _, usage, cost in charges:
        mine = Usage(usage.prompt_tokens, usage.completion_tokens)
        if not cost.subscription.overage_tokens:
            assert _decimal(cost.total) == 0
        elif not cost.subscription.included_tokens:
            assert _decimal(cost.total) == _price(mine, OVERAGE)
        else:
            assert _decimal(cost.total) == _price(
                overage_usage(mine, cost.subscription.overage_tokens), OVERAGE
            )
    reply_total = sum((_decimal(c.total) for _, _, c in charges), Decimal(0))
    past = position - included
    assert reply_total > 0
    assert sum(c.subscription.overage_tokens for _, _, c in charges) == past

    # ListModels shows the plan and the period's count as every worker added to it.
    echo = next(m for m in listed.models if m.id == "mock:echo")
    assert echo.pricing.billing_model == catalog_pb2.BILLING_MODEL_SUBSCRIPTION
    assert (echo.pricing.input_per_million, echo.pricing.output_per_million) == OVERAGE
    assert echo.cost_capabilities.billing_model == catalog_pb2.BILLING_MODEL_SUBSCRIPTION
    shown = echo.pricing.subscription
    assert (shown.fee, shown.period, shown.included_tokens) == ("100", "month", included)
    assert (shown.used_tokens, shown.calls) == (position, 160)
    assert shown.period_start.ToDatetime(UTC) <= now < shown.period_end.ToDatetime(UTC)

    # The ledger holds the marginal costs to the digit, and the period's whole fee spread over
    # its calls, every one of which this summary selects.
    assert _decimal(summary.total.cost) == reply_total
    assert _decimal(summary.total.amortized_cost) == Decimal(100)
    (mock,) = [p for p in summary.cost_by_provider if p.provider == "mock"]
    assert _decimal(mock.amortized_cost) == Decimal(100)
    assert sum(_decimal(b.stats.amortized_cost) for b in summary.buckets) == Decimal(100)


async def test_estimates_and_dry_runs_price_a_plans_calls_from_the_periods_count() -> None:
    toml = """
[providers.mock.subscription]
fee_usd = "20"
period = "day"
included_tokens = 2000
"""
    async with running_gateway(toml) as gw:
        request = chat("mock:echo", "one two three four five six")
        estimate = await gw.stub.EstimateCost(catalog_pb2.EstimateCostRequest(request=request), timeout=10)
        (only,) = estimate.estimates
        # Expected: within the untouched quota nothing; worst case: the model's own price, as the
        # quota may be gone by the time the call ends.
        assert _decimal(only.expected_cost.total) == 0
        assert _decimal(only.worst_case_cost.total) > 0
        worst = only.worst_case_cost.subscription
        assert (worst.included_tokens, worst.overage_tokens) == (
            0,
            only.prompt_tokens + only.worst_case_output_tokens,
        )
        first = await gw.stub.Chat(request, timeout=10)
        second = await gw.stub.Chat(request, timeout=10)
        tokens = first.usage.prompt_tokens + first.usage.completion_tokens
        assert first.cost.subscription.tokens_before == 0
        assert second.cost.subscription.tokens_before == tokens
        dry = await gw.stub.Chat(chat("mock:echo", "one two three four five six", dry_run=True), timeout=10)
        assert dry.cost.estimated
        assert dry.cost.subscription.tokens_before == 2 * tokens
        third = await gw.stub.Chat(request, timeout=10)
        assert third.cost.subscription.tokens_before == 2 * tokens  # a dry run counts nothing


async def test_a_plan_is_validated() -> None:
    for bad, field in (
        ('fee_usd = "1"\noverage = { input_per_million = "1" }', "included_tokens"),
        ('fee_usd = "1"\nincluded_tokens = 5\noverage = { input_per_million = "-1" }', "input_per_million"),
        ('fee_usd = "-1"', "fee_usd"),
        ('fee_usd = "1"\nincluded_tokens = 0', "included_tokens"),
        ('fee_usd = "1"\nperiod = "fortnight"', "period"),
    ):
        with pytest.raises(ConfigError, match=field):
            async with running_gateway(f"[providers.mock.subscription]\n{bad}\n"):
                pass


async def test_without_a_ledger_a_process_counts_its_own_period() -> None:
    toml = """
[ledger]
enabled = false

[providers.mock.subscription]
fee_usd = "5"
included_tokens = 10
"""
    async with running_gateway(toml) as gw:
        first = await gw.stub.Chat(chat("mock:echo", "alpha beta gamma"), timeout=10)
        second = await gw.stub.Chat(chat("mock:echo", "alpha beta gamma"), timeout=10)
    tokens = first.usage.prompt_tokens + first.usage.completion_tokens
    assert tokens > 10  # the first call crosses the quota itself
    assert first.cost.subscription.included_tokens == 10
    assert first.cost.subscription.overage_tokens == tokens - 10
    assert second.cost.subscription.tokens_before == tokens
    assert second.cost.subscription.included_tokens == 0
    assert _decimal(second.cost.total) == _price(
        Usage(second.usage.prompt_tokens, second.usage.completion_tokens)
    )


async def test_the_openai_door_shows_the_plan_and_where_each_call_fell(fake_openai: FakeOpenAI) -> None:
    """A provisioned OpenAI deployment behind the gateway: the reply's cost object says where the
    call fell in the plan, and /v1/models shows the plan with the period's count."""
    toml = openai_toml(fake_openai.base_url) + (
        '\n[providers.openai.subscription]\nfee_usd = "2500"\nperiod = "month"\nincluded_tokens = 30\n'
    )
    async with running_gateway(toml) as gw:
        client = openai.AsyncOpenAI(base_url=f"{gw.http_url}/v1", api_key="unused", max_retries=0, timeout=30)
        first = await client.chat.completions.create(
            model="openai:gpt-4o-mini", messages=[{"role": "user", "content": "one two three four five"}]
        )
        second = await client.chat.completions.create(
            model="openai:gpt-4o-mini", messages=[{"role": "user", "content": "one two three four five"}]
        )
        async with aiohttp.ClientSession() as http, http.get(f"{gw.http_url}/v1/models") as listed:
            models = {m["id"]: m for m in (await listed.json())["data"]}
    assert first.usage is not None
    assert second.usage is not None
    costs = [(reply.model_extra or {})["cost"] for reply in (first, second)]
    tokens = first.usage.total_tokens
    assert costs[0]["subscription"]["tokens_before"] == 0
    assert costs[1]["subscription"]["tokens_before"] == tokens
    assert costs[0]["subscription"]["plan"] == "openai"
    for cost in costs:
        charge = cost["subscription"]
        assert charge["included_tokens"] + charge["overage_tokens"] == tokens
        assert charge["included_tokens"] == min(tokens, max(30 - charge["tokens_before"], 0))
    pricing = models["openai:gpt-4o-mini"]["pricing"]
    assert pricing["billing_model"] == "subscription"
    plan = pricing["subscription"]
    assert (plan["fee"], plan["period"], plan["included_tokens"]) == ("2500", "month", 30)
    assert (plan["used_tokens"], plan["calls"]) == (2 * tokens, 2)


async def test_the_usage_command_shows_the_fees_beside_the_costs() -> None:
    toml = """
[providers.mock.subscription]
fee_usd = "7.5"
included_tokens = 15
"""
    async with running_gateway(toml) as gw:
        replies = [await gw.stub.Chat(chat("mock:echo", f"call number {i}"), timeout=10) for i in range(3)]
        status, out, err = await llm_gateway_usage("--address", gw.address, "--by", "model")
    assert (status, err) == (0, "")
    spent = sum((_decimal(r.cost.total) for r in replies), Decimal(0))
    assert spent > 0  # the quota of 15 tokens ran out in the second call
    lines = out.splitlines()
    assert lines[1].startswith("3 calls, 0 failed; ")
    assert lines[1].split("; ")[1].endswith(" USD (and 7.5 USD of subscription fees)")
    assert Decimal(lines[1].split("; ")[1].split(" ")[0]) == spent
    header, row = lines[3].split(), lines[4].split()
    assert header[2:] == [
        "calls",
        "failed",
        "tokens",
        "in",
        "tokens",
        "out",
        "cost",
        "(USD)",
        "fees",
        "(USD)",
        "p50",
    ]
    assert (row[1], row[2], row[7]) == ("mock:echo", "3", "7.5")
    assert Decimal(row[6]) == spent


async def test_with_the_database_down_calls_are_priced_here_and_counted_once_it_is_back(
    log_lines: list[str],
) -> None:
    """PostgreSQL stopped mid-period: calls are served without waiting on it, priced from this
    process's count and marked estimated; once it is back, the period holds every call's tokens."""
    server = PostgresCluster()
    try:
        url = server.new_database()
        toml = f"""
[ledger]
url = "{url}"
write_timeout = 0.5

[providers.mock.subscription]
fee_usd = "10"
included_tokens = 1000000
"""
        async with running_gateway(toml) as gw:
            first = await gw.stub.Chat(chat("mock:echo", "before the outage"), timeout=10)
            await asyncio.to_thread(server.stop)
            during = [await gw.stub.Chat(chat("mock:echo", f"outage call {n}"), timeout=10) for n in range(5)]
            await asyncio.to_thread(server.start)
            await asyncio.sleep(1.1)  # past the one try a second while it was down
            after = await gw.stub.Chat(chat("mock:echo", "after the outage"), timeout=10)
            listed = await gw.stub.ListModels(catalog_pb2.ListModelsRequest(provider="mock"), timeout=10)
    finally:
        server.destroy()
    assert not first.cost.estimated
    assert all(reply.cost.estimated for reply in during)
    events = [json.loads(line).get("event") for line in log_lines if "subscription_store" in line]
    assert events == ["subscription_store_unreachable", "subscription_store_recovered"]  # once each
    assert not after.cost.estimated
    replies = [first, *during, after]
    total = sum(r.usage.prompt_tokens + r.usage.completion_tokens for r in replies)
    # The call after the outage was counted after the outage's calls, which reached the database first.
    assert after.cost.subscription.tokens_before == total - (
        after.usage.prompt_tokens + after.usage.completion_tokens
    )
    echo = next(m for m in listed.models if m.id == "mock:echo")
    assert (echo.pricing.subscription.used_tokens, echo.pricing.subscription.calls) == (total, 7)
