"""Budgets and key quotas through the public gRPC interfaces, on the ledger's SQLite file: a call
reserves its worst case before any upstream request and settles at its exact cost; refusals carry
where the budget stands; trailing metadata tells the caller what is left; BudgetService creates,
reads, changes and deletes budgets for admins only; periods roll over on the local calendar."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2

from llm_gateway.budgets.keeper import BudgetKeeper
from llmgateway.v1 import (
    budget_service_pb2,
    budget_service_pb2_grpc,
    budgets_pb2,
    chat_pb2,
    usage_pb2,
    usage_service_pb2_grpc,
)
from tests.conftest import (
    RunningGateway,
    chat,
    error_details,
    metadata_value,
    openai_toml,
    read_event,
    running_gateway,
    violated_fields,
)
from tests.fakes.openai import FakeOpenAI, Reply, completion, error_body, text_chunks, usage

ADMIN, TEAM = "admin-key-0123456789", "team-key-0123456789"
KEYS = f"""
[[auth.keys]]
name = "ops"
key = "{ADMIN}"
role = "admin"

[[auth.keys]]
name = "team-a"
key = "{TEAM}"
"""


def as_key(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def keeper(gw: RunningGateway) -> BudgetKeeper:
    found = gw.server.runtime.budgets
    assert found is not None
    return found


def budgets(gw: RunningGateway) -> budget_service_pb2_grpc.BudgetServiceAsyncStub:
    return budget_service_pb2_grpc.BudgetServiceStub(gw.channel)


async def cost_of(gw: RunningGateway, call_id: str, key: str = ADMIN) -> Decimal:
    """A call's exact cost as the usage ledger kept it."""
    usage_stub = usage_service_pb2_grpc.UsageServiceStub(gw.channel)
    for _ in range(50):
        reply = await usage_stub.ListUsageRecords(
            usage_pb2.ListUsageRecordsRequest(page_size=1000), metadata=as_key(key)
        )
        found = [r for r in reply.records if r.id == call_id]
        if found:
            return Decimal(found[0].cost.total) if found[0].HasField("cost") else Decimal(0)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{call_id} is not in the ledger")


async def get(gw: RunningGateway, budget_id: str, key: str = ADMIN) -> budgets_pb2.Budget:
    await keeper(gw).flush()
    return await budgets(gw).GetBudget(
        budget_service_pb2.GetBudgetRequest(id=budget_id), metadata=as_key(key)
    )


PROJECT_BUDGET = """
[budgets]
time_zone = "Europe/Paris"

[[budgets.limits]]
id = "alpha"
scope = "project:alpha"
limit_usd = "0.01"
period = "day"
thresholds = [50, 80, 100]
"""


@pytest.fixture
async def gw() -> AsyncIterator[RunningGateway]:
    async with running_gateway(KEYS + PROJECT_BUDGET) as running:
        yield running


def alpha_call(text: str = "Hello there, gateway", **fields: Any) -> chat_pb2.ChatRequest:
    return chat("mock:echo", text, caller=chat_pb2.CallerMetadata(project="alpha"), **fields)


async def test_a_call_settles_at_its_exact_cost_and_the_caller_hears_what_is_left(gw: RunningGateway) -> None:
    call = gw.stub.Chat(
        alpha_call(generation=chat_pb2.GenerationConfig(max_tokens=100)), metadata=as_key(TEAM)
    )
    reply = await call
    trailers = await call.trailing_metadata()
    cost = Decimal(reply.cost.total)
    assert cost > 0
    shown = await get(gw, "alpha")
    assert Decimal(shown.spent_usd) == cost
    assert Decimal(shown.reserved_usd) == 0
    assert Decimal(shown.remaining_usd) == Decimal("0.01") - cost
    assert metadata_value(trailers, "x-budget-id") == "alpha"
    assert Decimal(str(metadata_value(trailers, "x-budget-remaining-usd"))) == Decimal("0.01") - cost
    # Midnight in Paris, in UTC.
    assert str(metadata_value(trailers, "x-budget-reset")).endswith(":00:00Z")
    assert shown.resets_at.ToDatetime(UTC) == datetime.fromisoformat(
        str(metadata_value(trailers, "x-budget-reset")).replace("Z", "+00:00")
    )
    # A call outside the scope holds nothing and hears nothing of it.
    other = gw.stub.Chat(chat("mock:echo"), metadata=as_key(TEAM))
    await other
    assert metadata_value(await other.trailing_metadata(), "x-budget-id") is None
    assert Decimal((await get(gw, "alpha")).spent_usd) == cost


async def test_a_call_that_does_not_fit_is_refused_with_where_the_budget_stands(gw: RunningGateway) -> None:
    # mock:echo-large costs 10 USD per million output tokens: its worst case (32,768 tokens, its
    # maximum) is over 0.32 USD, far over what is left of 0.01.
    first = await gw.stub.Chat(alpha_call(), metadata=as_key(TEAM))
    spent = Decimal(first.cost.total)
    large = chat("mock:echo-large", caller=chat_pb2.CallerMetadata(project="alpha"))
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gw.stub.Chat(large, metadata=as_key(TEAM))
    details = error_details(refused.value)
    assert details.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details.info.reason == "BUDGET_EXHAUSTED"
    meta = dict(details.info.metadata)
    assert meta["budget_id"] == "alpha"
    assert meta["scope"] == "project:alpha"
    assert Decimal(meta["limit_usd"]) == Decimal("0.01")
    assert Decimal(meta["spent_usd"]) == spent
    assert Decimal(meta["reserved_usd"]) == 0
    assert Decimal(meta["requested_usd"]) > Decimal("0.01") - spent
    assert meta["period"] == "day"
    assert meta["resets_at"].endswith("Z")
    assert meta["model"] == "mock:echo-large"
    assert "alpha" in details.message
    assert "max_tokens" in details.message
    # A smaller max_tokens fits (500 tokens: 0.005 USD).
    large.generation.max_tokens = 500
    await gw.stub.Chat(large, metadata=as_key(TEAM))


async def test_a_candidate_that_does_not_fit_is_passed_over_for_one_that_does(gw: RunningGateway) -> None:
    # echo-large's worst case (32,768 tokens at 10 USD per million) is far over 0.01 USD; echo fits.
    request = chat(
        "mock:echo-large",
        caller=chat_pb2.CallerMetadata(project="alpha"),
        fallback_models=["mock:echo"],
    )
    reply = await gw.stub.Chat(request, metadata=as_key(TEAM))
    assert reply.model == "mock:echo"
    attempts = [(a.model, a.reason) for a in reply.routing.attempts]
    assert attempts == [("mock:echo-large", "BUDGET_EXHAUSTED"), ("mock:echo", "")]
    assert Decimal((await get(gw, "alpha")).spent_usd) == Decimal(reply.cost.total)


async def test_a_streams_cancel_settles_at_what_it_produced() -> None:
    slow = "[providers.mock]\nchunk_delay = 0.05\n"
    async with running_gateway(KEYS + PROJECT_BUDGET + slow) as gw:
        words = " ".join(f"word{i}" for i in range(60))
        call = gw.stub.ChatStream(
            chat_pb2.ChatStreamRequest(
                request=alpha_call(words, generation=chat_pb2.GenerationConfig(max_tokens=200))
            ),
            metadata=as_key(TEAM),
        )
        start = await read_event(call)
        assert start is not None
        assert start.HasField("start")
        for _ in range(3):
            event = await read_event(call)
            assert event is not None
            assert event.HasField("text_delta")
        # In flight, the stream holds its worst case.
        held = await get(gw, "alpha")
        assert Decimal(held.reserved_usd) > 0
        call.cancel()
        await asyncio.sleep(0.3)
        cost = await cost_of(gw, start.start.id)
        assert cost > 0
        settled = await get(gw, "alpha")
        assert (Decimal(settled.spent_usd), Decimal(settled.reserved_usd)) == (cost, Decimal(0))


async def test_unknown_prices_are_refused_under_a_budget_unless_allowed(fake_openai: FakeOpenAI) -> None:
    unpriced = openai_toml(fake_openai.base_url, "allow_unlisted_models = true")
    request = chat("openai:some-unpriced-model", caller=chat_pb2.CallerMetadata(project="alpha"))
    async with running_gateway(KEYS + PROJECT_BUDGET + unpriced) as gw:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gw.stub.Chat(request, metadata=as_key(TEAM))
        details = error_details(refused.value)
        assert (details.code, details.info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PRICE_UNKNOWN")
        assert details.info.metadata["budget_id"] == "alpha"
        assert fake_openai.requests == []
        # A fallback to an unpriced model is passed over too, before any request to it.
        fake_openai.script(Reply(status=503, json_body=error_body("Overloaded", "server_error")))
        fallback = chat(
            "openai:gpt-4o-mini",
            caller=chat_pb2.CallerMetadata(project="alpha"),
            fallback_models=["openai:some-unpriced-model"],
        )
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await gw.stub.Chat(fallback, metadata=as_key(TEAM))
        assert error_details(failed.value).info.reason == "UPSTREAM_UNAVAILABLE"
        assert (
            "openai:some-unpriced-model FAILED_PRECONDITION"
            in error_details(failed.value).info.metadata["attempts"]
        )
        assert len(fake_openai.requests) == 1
        fake_openai.requests.clear()
    allowed = PROJECT_BUDGET.replace(
        'time_zone = "Europe/Paris"', 'time_zone = "Europe/Paris"\nunknown_prices = "allow"'
    )
    fake_openai.script(Reply(json_body=completion("hi", usage_=usage(5, 2))))
    async with running_gateway(KEYS + allowed + unpriced) as gw:
        await gw.stub.Chat(request, metadata=as_key(TEAM))
        assert len(fake_openai.requests) == 1
        assert Decimal((await get(gw, "alpha")).spent_usd) == 0  # uncounted, as configured


QUOTA = """
[[auth.keys]]
name = "tier"
key = "tier-key-0123456789"
quota = { requests_per_hour = 3, tokens_per_day = 100000 }
"""


async def test_a_keys_quota_counts_requests_and_tokens_and_refuses_past_it() -> None:
    async with running_gateway(QUOTA) as gw:
        left = []
        tokens_left = []
        for _ in range(3):
            call = gw.stub.Chat(
                chat("mock:echo", generation=chat_pb2.GenerationConfig(max_tokens=64)),
                metadata=as_key("tier-key-0123456789"),
            )
            reply = await call
            trailers = await call.trailing_metadata()
            assert metadata_value(trailers, "x-ratelimit-limit-requests") == "3"
            assert metadata_value(trailers, "x-ratelimit-limit-tokens") == "100000"
            reset = str(metadata_value(trailers, "x-ratelimit-reset-requests"))
            assert reset.endswith("s")
            left.append(metadata_value(trailers, "x-ratelimit-remaining-requests"))
            tokens_left.append(int(str(metadata_value(trailers, "x-ratelimit-remaining-tokens"))))
            used = reply.usage.prompt_tokens + reply.usage.completion_tokens
            assert used > 0
            # Until a call's settlement is written it holds its worst case: what the next call
            # hears then is less than what is left once it is.
            await keeper(gw).flush()
        assert left == ["2", "1", "0"]
        assert tokens_left[0] > tokens_left[1] > tokens_left[2]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gw.stub.Chat(chat("mock:echo"), metadata=as_key("tier-key-0123456789"))
        details = error_details(refused.value)
        assert (details.code, details.info.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "KEY_QUOTA_EXCEEDED",
        )
        assert details.info.metadata["quota"] == "requests_per_hour"
        # The third call's settlement may still be on its way: then it is held, not yet used.
        meta = details.info.metadata
        assert (int(meta["used"]) + int(meta["reserved"]), meta["requested"], meta["limit"]) == (3, "1", "3")
        assert details.retry is not None
        assert 0 < details.retry.retry_delay.seconds <= 3600


async def test_a_call_over_its_own_alert_threshold_raises_an_alert(gw: RunningGateway) -> None:
    reply = await gw.stub.Chat(chat("mock:echo", cost_alert_threshold="0.000000001"), metadata=as_key(TEAM))
    cheap = await gw.stub.Chat(chat("mock:echo", cost_alert_threshold="1"), metadata=as_key(TEAM))
    await keeper(gw).flush()
    alerts = (
        await budgets(gw).ListBudgetAlerts(
            budget_service_pb2.ListBudgetAlertsRequest(), metadata=as_key(ADMIN)
        )
    ).alerts
    assert [(a.call_id, a.scope, a.period) for a in alerts] == [(reply.id, "call", "call")]
    assert Decimal(alerts[0].current_cost_usd) == Decimal(reply.cost.total)
    assert alerts[0].threshold_usd == "0.000000001"
    payload = json.loads(alerts[0].payload_json)
    assert payload["type"] == "cost_alert"
    assert payload["key_name"] == "team-a"
    assert cheap.id not in {a.call_id for a in alerts}
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await gw.stub.Chat(chat("mock:echo", cost_alert_threshold="lots"), metadata=as_key(TEAM))
    assert violated_fields(error_details(bad.value)) == ["cost_alert_threshold"]


async def until_refused(
    gw: RunningGateway, request: chat_pb2.ChatRequest
) -> tuple[Decimal, grpc.aio.AioRpcError]:
    """Makes the call again and again; returns what the calls that were served cost, and the refusal."""
    spent = Decimal(0)
    while True:
        try:
            reply = await gw.stub.Chat(request, metadata=as_key(TEAM))
        except grpc.aio.AioRpcError as err:
            return spent, err
        spent += Decimal(reply.cost.total)


async def test_thresholds_raise_one_alert_each_per_period(gw: RunningGateway) -> None:
    # Calls of about 0.0006 USD each (about 1,000 tokens in and out) until the budget refuses one.
    request = alpha_call(" ".join(["word"] * 990), generation=chat_pb2.GenerationConfig(max_tokens=1000))
    spent, refused = await until_refused(gw, request)
    assert error_details(refused).info.reason == "BUDGET_EXHAUSTED"
    await keeper(gw).flush()
    listed = await budgets(gw).ListBudgetAlerts(
        budget_service_pb2.ListBudgetAlertsRequest(budget_id="alpha"), metadata=as_key(ADMIN)
    )
    crossed = [t for t in ("50", "80", "100") if Decimal("0.01") * Decimal(t) / 100 <= spent]
    assert crossed[:2] == ["50", "80"]
    # Newest first: one alert per threshold crossed, each at the spend that crossed it.
    assert [a.threshold_percent for a in reversed(listed.alerts)] == crossed
    for alert in listed.alerts:
        assert Decimal(alert.threshold_usd) <= Decimal(alert.current_cost_usd) <= spent
        assert (alert.limit_usd, alert.period, alert.budget_id) == ("0.01", "day", "alpha")
    assert Decimal((await get(gw, "alpha")).spent_usd) == spent <= Decimal("0.01")


async def test_budgets_roll_over_at_local_midnight() -> None:
    async with running_gateway(KEYS + PROJECT_BUDGET) as gw:
        clock = keeper(gw)
        # 23:59:30 in Paris on 2 December 2026 (CET, UTC+1), then 00:00:30 on the 3rd.
        before = datetime(2026, 12, 2, 22, 59, 30, tzinfo=UTC).timestamp()
        after = datetime(2026, 12, 2, 23, 0, 30, tzinfo=UTC).timestamp()
        clock.clock = lambda: before
        reply = await gw.stub.Chat(alpha_call(), metadata=as_key(TEAM))
        shown = await get(gw, "alpha")
        assert Decimal(shown.spent_usd) == Decimal(reply.cost.total)
        assert shown.resets_at.ToDatetime(UTC) == datetime(2026, 12, 2, 23, 0, tzinfo=UTC)
        clock.clock = lambda: after
        fresh = await get(gw, "alpha")
        assert Decimal(fresh.spent_usd) == 0
        assert fresh.window_start.ToDatetime(UTC) == datetime(2026, 12, 2, 23, 0, tzinfo=UTC)
        assert fresh.resets_at.ToDatetime(UTC) == datetime(2026, 12, 3, 23, 0, tzinfo=UTC)
        # Yesterday's spend does not hold today's calls back: a full worst case fits again.
        await gw.stub.Chat(alpha_call(), metadata=as_key(TEAM))


async def test_budget_service_is_for_admins_to_write_and_shows_a_key_its_own(gw: RunningGateway) -> None:
    stub = budgets(gw)
    created = await stub.CreateBudget(
        budget_service_pb2.CreateBudgetRequest(
            budget=budgets_pb2.Budget(
                id="team-a-weekly",
                scope="key:team-a",
                limit_usd="5",
                period=budgets_pb2.BUDGET_PERIOD_WEEK,
                thresholds=["80"],
            )
        ),
        metadata=as_key(ADMIN),
    )
    assert (created.source, created.spent_usd, created.remaining_usd, created.time_zone) == (
        budgets_pb2.BUDGET_SOURCE_API,
        "0",
        "5",
        "Europe/Paris",
    )
    assert (
        created.resets_at.ToDatetime(UTC).weekday() == 0 or created.resets_at.ToDatetime(UTC).weekday() == 6
    )
    # The new budget holds the key's calls at once in this process.
    reply = await gw.stub.Chat(chat("mock:echo"), metadata=as_key(TEAM))
    assert Decimal((await get(gw, "team-a-weekly", TEAM)).spent_usd) == Decimal(reply.cost.total)
    # A key reads the budgets of its own key scope only; writes are for admins.
    listed = await stub.ListBudgets(budget_service_pb2.ListBudgetsRequest(), metadata=as_key(TEAM))
    assert [b.id for b in listed.budgets] == ["team-a-weekly"]
    everything = await stub.ListBudgets(
        budget_service_pb2.ListBudgetsRequest(page_size=1), metadata=as_key(ADMIN)
    )
    assert ([b.id for b in everything.budgets], everything.total_size) == (["alpha"], 2)
    rest = await stub.ListBudgets(
        budget_service_pb2.ListBudgetsRequest(page_size=1, page_token=everything.next_page_token),
        metadata=as_key(ADMIN),
    )
    assert ([b.id for b in rest.budgets], rest.next_page_token) == (["team-a-weekly"], "")
    for attempt in (
        stub.GetBudget(budget_service_pb2.GetBudgetRequest(id="alpha"), metadata=as_key(TEAM)),
        stub.DeleteBudget(budget_service_pb2.DeleteBudgetRequest(id="nope"), metadata=as_key(ADMIN)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await attempt
        assert error_details(missing.value).info.reason == "BUDGET_NOT_FOUND"
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.DeleteBudget(
            budget_service_pb2.DeleteBudgetRequest(id="team-a-weekly"), metadata=as_key(TEAM)
        )
    assert (error_details(denied.value).code, error_details(denied.value).info.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "ADMIN_REQUIRED",
    )
    with pytest.raises(grpc.aio.AioRpcError) as exists:
        await stub.CreateBudget(
            budget_service_pb2.CreateBudgetRequest(
                budget=budgets_pb2.Budget(id="team-a-weekly", scope="gateway", limit_usd="1")
            ),
            metadata=as_key(ADMIN),
        )
    assert (exists.value.code(), error_details(exists.value).info.reason) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "BUDGET_EXISTS",
    )
    with pytest.raises(grpc.aio.AioRpcError) as read_only:
        await stub.UpdateBudget(
            budget_service_pb2.UpdateBudgetRequest(budget=budgets_pb2.Budget(id="alpha", limit_usd="100")),
            metadata=as_key(ADMIN),
        )
    assert error_details(read_only.value).info.reason == "BUDGET_READ_ONLY"
    # An update changes the fields its mask names, and keeps the spend.
    updated = await stub.UpdateBudget(
        budget_service_pb2.UpdateBudgetRequest(
            budget=budgets_pb2.Budget(id="team-a-weekly", limit_usd="7.5", scope="ignored:x"),
            update_mask=field_mask_pb2.FieldMask(paths=["limit_usd"]),
        ),
        metadata=as_key(ADMIN),
    )
    assert (updated.limit_usd, updated.scope, Decimal(updated.spent_usd)) == (
        "7.5",
        "key:team-a",
        Decimal(reply.cost.total),
    )
    await stub.DeleteBudget(
        budget_service_pb2.DeleteBudgetRequest(id="team-a-weekly"), metadata=as_key(ADMIN)
    )
    after = await stub.ListBudgets(budget_service_pb2.ListBudgetsRequest(), metadata=as_key(ADMIN))
    assert [b.id for b in after.budgets] == ["alpha"]


async def test_budget_service_names_the_fields_it_refuses(gw: RunningGateway) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await budgets(gw).CreateBudget(
            budget_service_pb2.CreateBudgetRequest(
                budget=budgets_pb2.Budget(
                    id="Bad Id", scope="team:x", limit_usd="-1", thresholds=["50", "50"]
                )
            ),
            metadata=as_key(ADMIN),
        )
    details = error_details(bad.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(violated_fields(details)) == [
        "budget.id",
        "budget.limit_usd",
        "budget.scope",
        "budget.thresholds",
    ]
    with pytest.raises(grpc.aio.AioRpcError) as no_limit:
        await budgets(gw).CreateBudget(
            budget_service_pb2.CreateBudgetRequest(
                budget=budgets_pb2.Budget(id="x", scope="gateway", limit_usd="ten")
            ),
            metadata=as_key(ADMIN),
        )
    assert violated_fields(error_details(no_limit.value)) == ["budget.limit_usd"]
    with pytest.raises(grpc.aio.AioRpcError) as token:
        await budgets(gw).ListBudgets(
            budget_service_pb2.ListBudgetsRequest(page_token="garbage"), metadata=as_key(ADMIN)
        )
    assert violated_fields(error_details(token.value)) == ["page_token"]


async def test_without_a_ledger_budget_service_says_so() -> None:
    async with running_gateway("[ledger]\nenabled = false\n") as gw:
        with pytest.raises(grpc.aio.AioRpcError) as off:
            await budgets(gw).ListBudgets(budget_service_pb2.ListBudgetsRequest())
        details = error_details(off.value)
        assert (details.code, details.info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LEDGER_DISABLED")


async def test_the_counters_can_be_rebuilt_from_the_ledger() -> None:
    async with running_gateway(KEYS + PROJECT_BUDGET + QUOTA) as gw:
        costs = [
            Decimal((await gw.stub.Chat(alpha_call(), metadata=as_key(TEAM))).cost.total) for _ in range(3)
        ]
        tier = [
            await gw.stub.Chat(chat("mock:echo"), metadata=as_key("tier-key-0123456789")) for _ in range(2)
        ]
        await keeper(gw).flush()
        ledger = gw.server.runtime.ledger
        assert ledger is not None
        await ledger.writer.flush()
        path = ledger.url.path
        assert path is not None
        with sqlite3.connect(path) as db:  # the counters lost (as if settlements never happened)
            db.execute("DELETE FROM budget_spend")
        assert Decimal((await get(gw, "alpha")).spent_usd) == 0
        config = str(path.parent / "gateway.toml")
        rebuilt = await llm_gateway_cli("budgets", "rebuild", "--config", config)
        assert Decimal((await get(gw, "alpha")).spent_usd) == sum(costs)
        assert "alpha: window from " in rebuilt
        assert f"-> {sum(costs)}" in rebuilt
        tokens = sum(r.usage.prompt_tokens + r.usage.completion_tokens for r in tier)
        assert "quota:tier:requests:hour: window from" in rebuilt
        assert f"-> {tokens}" in rebuilt
        listed = await llm_gateway_cli("budgets", "list", "--config", config)
        assert f"alpha (project:alpha, config): {sum(costs)} spent, 0 reserved of 0.01 USD per day" in listed
        assert "quota:tier:requests:hour: 2 used, 0 reserved of 3" in listed


async def llm_gateway_cli(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llm_gateway",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_a_stream_the_upstream_cuts_short_settles_at_what_it_produced(fake_openai: FakeOpenAI) -> None:
    pieces = [f" piece{i}" for i in range(20)]
    fake_openai.script(Reply(sse=text_chunks(pieces, usage(12, 20))[:12], end_early=True))
    async with running_gateway(KEYS + PROJECT_BUDGET + openai_toml(fake_openai.base_url)) as gw:
        request = chat("openai:gpt-4o-mini", caller=chat_pb2.CallerMetadata(project="alpha"))
        call = gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request), metadata=as_key(TEAM))
        start = await read_event(call)
        assert start is not None
        with pytest.raises(grpc.aio.AioRpcError) as cut:
            await drain(call)
        details = error_details(cut.value)
        assert details.info.reason == "UPSTREAM_STREAM_INTERRUPTED"
        told = Decimal(details.info.metadata["cost"])
        assert told > 0
        assert await cost_of(gw, start.start.id) == told
        settled = await get(gw, "alpha")
        assert (Decimal(settled.spent_usd), Decimal(settled.reserved_usd)) == (told, Decimal(0))


async def drain(call: object) -> None:
    """Reads a stream's events to its end."""
    while await read_event(call) is not None:
        pass
