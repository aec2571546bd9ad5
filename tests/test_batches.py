"""BatchService: many calls as one durable job, each item through the same core as a live call,
at most `max_concurrent_requests` at once, every item answered or failed exactly once, its cost
exact and the batch's the sum of its items'."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import grpc
import pytest

from llmgateway.v1 import (
    batch_service_pb2,
    batch_service_pb2_grpc,
    batches_pb2,
    budget_service_pb2,
    budget_service_pb2_grpc,
    budgets_pb2,
    catalog_pb2,
    chat_pb2,
    usage_pb2,
    usage_service_pb2_grpc,
)
from tests.conftest import RunningGateway, chat, error_details, gateway_process, openai_toml, running_gateway
from tests.fakes.openai import FakeOpenAI, Reply
from tests.ledger_traffic import own_channel
from tests.ledgers import backend_url  # noqa: F401 (a fixture)
from tests.postgres import PostgresCluster
from tests.test_budgets_e2e import SECRET, Receiver

ADMIN = (("authorization", "Bearer batch-admin-key-0123456789"),)
TEAM = (("authorization", "Bearer batch-team-key-0123456789"),)
OTHER = (("authorization", "Bearer batch-other-key-012345678"),)
KEYS = """
[[auth.keys]]
name = "ops"
key = "batch-admin-key-0123456789"
role = "admin"

[[auth.keys]]
name = "team"
key = "batch-team-key-0123456789"

[[auth.keys]]
name = "other"
key = "batch-other-key-012345678"
"""
DONE = (batches_pb2.BATCH_STATUS_COMPLETED, batches_pb2.BATCH_STATUS_CANCELLED)


def item(custom_id: str, model: str = "mock:echo", text: str = "") -> batch_service_pb2.BatchRequestItem:
    return batch_service_pb2.BatchRequestItem(
        custom_id=custom_id, request=chat(model, text or f"item {custom_id}")
    )


def stub(gw: RunningGateway) -> batch_service_pb2_grpc.BatchServiceAsyncStub:
    return batch_service_pb2_grpc.BatchServiceStub(gw.channel)


async def finished(
    batches: batch_service_pb2_grpc.BatchServiceAsyncStub,
    batch_id: str,
    metadata: tuple[tuple[str, str], ...] = TEAM,
    within: float = 60,
) -> batches_pb2.Batch:
    async with asyncio.timeout(within):
        while True:
            batch = await batches.GetBatch(batch_service_pb2.GetBatchRequest(id=batch_id), metadata=metadata)
            if batch.status in DONE:
                return batch
            await asyncio.sleep(0.05)


async def every_result(
    batches: batch_service_pb2_grpc.BatchServiceAsyncStub,
    batch_id: str,
    page_size: int,
    metadata: tuple[tuple[str, str], ...] = TEAM,
) -> list[batches_pb2.BatchResult]:
    results: list[batches_pb2.BatchResult] = []
    token = ""
    while True:
        page = await batches.ListBatchResults(
            batch_service_pb2.ListBatchResultsRequest(id=batch_id, page_size=page_size, page_token=token),
            metadata=metadata,
        )
        results.extend(page.results)
        token = page.next_page_token
        if not token:
            return results


@pytest.fixture
async def gw() -> AsyncIterator[RunningGateway]:
    async with running_gateway(KEYS) as running:
        yield running


async def test_a_batch_runs_every_item_once_and_costs_the_sum_of_its_items(gw: RunningGateway) -> None:
    batches = stub(gw)
    created = await batches.CreateBatch(
        batch_service_pb2.CreateBatchRequest(
            requests=[item(f"q{i}") for i in range(25)],
            max_concurrent_requests=3,
            return_individual_costs=True,
            caller=chat_pb2.CallerMetadata(project="nightly"),
            tags={"job": "eval"},
        ),
        metadata=TEAM,
    )
    assert created.id.startswith("batch_")
    assert created.counts.total == 25
    assert created.key_name == "team"
    batch = await finished(batches, created.id)
    assert batch.status == batches_pb2.BATCH_STATUS_COMPLETED
    assert (batch.counts.succeeded, batch.counts.failed, batch.counts.pending, batch.counts.running) == (
        25,
        0,
        0,
        0,
    )
    assert batch.HasField("start_time")
    assert batch.HasField("end_time")

    results = await every_result(batches, created.id, page_size=7)
    assert [r.custom_id for r in results] == [f"q{i}" for i in range(25)]
    for result in results:
        assert result.status == batches_pb2.BATCH_ITEM_STATUS_SUCCEEDED
        assert result.response.message.content[0].text == f"item {result.custom_id}"
        assert result.attempts == 1
        assert result.cost.total == result.response.cost.total != ""
        assert result.usage.prompt_tokens > 0
    assert Decimal(batch.cost) == sum((Decimal(r.cost.total) for r in results), Decimal(0))

    # Each item is one call in the ledger, under the batch's caller and tags.
    usage = usage_service_pb2_grpc.UsageServiceStub(gw.channel)
    records = await usage.ListUsageRecords(
        usage_pb2.ListUsageRecordsRequest(
            filter=usage_pb2.UsageFilter(tags={"batch_id": created.id}), page_size=100
        ),
        metadata=ADMIN,
    )
    assert Counter(r.tags["batch_item"] for r in records.records) == Counter(f"q{i}" for i in range(25))
    assert {(r.caller.project, r.tags["job"], r.api_key) for r in records.records} == {
        ("nightly", "eval", "team")
    }


async def test_without_individual_costs_the_results_leave_them_out(gw: RunningGateway) -> None:
    batches = stub(gw)
    created = await batches.CreateBatch(
        batch_service_pb2.CreateBatchRequest(requests=[item("only")]), metadata=TEAM
    )
    assert created.max_concurrent_requests == 5  # the default
    batch = await finished(batches, created.id)
    (result,) = await every_result(batches, created.id, page_size=10)
    assert result.status == batches_pb2.BATCH_ITEM_STATUS_SUCCEEDED
    assert not result.HasField("cost")
    assert not result.response.HasField("cost")
    assert Decimal(batch.cost) > 0  # the batch's own total is always kept


async def test_a_bad_batch_is_refused_naming_each_field(gw: RunningGateway) -> None:
    batches = stub(gw)
    bad = batch_service_pb2.CreateBatchRequest(
        requests=[
            item("a"),
            item("a"),
            batch_service_pb2.BatchRequestItem(
                custom_id="b", request=chat_pb2.ChatRequest(model="mock:echo")
            ),
            batch_service_pb2.BatchRequestItem(custom_id="c"),
            batch_service_pb2.BatchRequestItem(custom_id="d", request=chat("mock:echo", "x", dry_run=True)),
            item(""),
        ],
        max_concurrent_requests=5000,
        webhook="nowhere",
        tags={"batch_id": "mine"},
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await batches.CreateBatch(bad, metadata=TEAM)
    details = error_details(refused.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.bad_request is not None
    fields = {v.field for v in details.bad_request.field_violations}
    assert {
        "max_concurrent_requests",
        "webhook",
        "tags[batch_id]",
        "requests[1].custom_id",
        "requests[2].request.messages",
        "requests[3].request",
        "requests[4].request.dry_run",
        "requests[5].custom_id",
    } <= fields, fields
    with pytest.raises(grpc.aio.AioRpcError) as empty:
        await batches.CreateBatch(batch_service_pb2.CreateBatchRequest(), metadata=TEAM)
    assert error_details(empty.value).code == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_key_sees_its_own_batches_and_an_admin_sees_every_one(gw: RunningGateway) -> None:
    batches = stub(gw)
    mine = await batches.CreateBatch(
        batch_service_pb2.CreateBatchRequest(requests=[item("1")]), metadata=TEAM
    )
    theirs = await batches.CreateBatch(
        batch_service_pb2.CreateBatchRequest(requests=[item("1")]), metadata=OTHER
    )
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await batches.GetBatch(batch_service_pb2.GetBatchRequest(id=theirs.id), metadata=TEAM)
    assert error_details(hidden.value).info.reason == "BATCH_NOT_FOUND"
    listed = await batches.ListBatches(batch_service_pb2.ListBatchesRequest(), metadata=TEAM)
    assert mine.id in {b.id for b in listed.batches}
    assert theirs.id not in {b.id for b in listed.batches}
    every = await batches.ListBatches(batch_service_pb2.ListBatchesRequest(page_size=1), metadata=ADMIN)
    assert len(every.batches) == 1
    assert every.batches[0].id == theirs.id  # newest first
    second = await batches.ListBatches(
        batch_service_pb2.ListBatchesRequest(page_size=1, page_token=every.next_page_token), metadata=ADMIN
    )
    assert second.batches[0].id == mine.id
    with pytest.raises(grpc.aio.AioRpcError) as foreign:  # a token of another listing
        await batches.ListBatches(
            batch_service_pb2.ListBatchesRequest(page_token=every.next_page_token), metadata=TEAM
        )
    assert error_details(foreign.value).code == grpc.StatusCode.INVALID_ARGUMENT
    await finished(batches, mine.id)
    await finished(batches, theirs.id, OTHER)


async def test_cancel_stops_items_not_started_and_keeps_those_done(fake_openai: FakeOpenAI) -> None:
    fake_openai.script(*[Reply(echo=True, delay=0.1) for _ in range(40)])
    async with running_gateway(KEYS + openai_toml(fake_openai.base_url)) as gw:
        batches = stub(gw)
        created = await batches.CreateBatch(
            batch_service_pb2.CreateBatchRequest(
                requests=[item(f"s{i}", "openai:gpt-4o-mini") for i in range(40)],
                max_concurrent_requests=2,
            ),
            metadata=TEAM,
        )
        await asyncio.sleep(0.5)
        cancelled = await batches.CancelBatch(
            batch_service_pb2.CancelBatchRequest(id=created.id), metadata=TEAM
        )
        assert cancelled.status in (batches_pb2.BATCH_STATUS_CANCELLING, batches_pb2.BATCH_STATUS_CANCELLED)
        batch = await finished(batches, created.id)
        assert batch.status == batches_pb2.BATCH_STATUS_CANCELLED
        counts = batch.counts
        assert counts.cancelled > 0
        assert counts.succeeded > 0
        assert counts.succeeded + counts.cancelled + counts.failed == 40
        results = await every_result(batches, created.id, page_size=100)
        assert Counter(r.status for r in results) == {
            batches_pb2.BATCH_ITEM_STATUS_SUCCEEDED: counts.succeeded,
            batches_pb2.BATCH_ITEM_STATUS_CANCELLED: counts.cancelled,
        }
        with pytest.raises(grpc.aio.AioRpcError) as again:
            await batches.CancelBatch(batch_service_pb2.CancelBatchRequest(id=created.id), metadata=TEAM)
        assert error_details(again.value).info.reason == "BATCH_FINISHED"


async def test_two_thousand_items_with_faults_each_end_once_within_the_concurrency_cap(
    fake_openai: FakeOpenAI,
) -> None:
    """Upstream faults (retried 500s, a 400 that fails its item) among 2,000 items: every item
    is answered or failed with its reason, once in the results and once in the ledger, and the
    fake never sees more than `max_concurrent_requests` at once."""
    faults = []
    for n in range(2400):
        if n % 97 == 13:
            faults.append(
                Reply(
                    status=400, json_body={"error": {"message": "bad item", "type": "invalid_request_error"}}
                )
            )
        elif n % 29 == 5:
            faults.append(Reply(status=500, json_body={"error": {"message": "boom", "type": "server_error"}}))
        else:
            faults.append(Reply(echo=True, delay=0.002))
    fake_openai.script(*faults)
    toml = openai_toml(
        fake_openai.base_url,
        retry="retry = { max_retries = 3, initial_backoff = 0.001, max_backoff = 0.002 }",
    )
    async with running_gateway(KEYS + toml) as gw:
        batches = stub(gw)
        created = await batches.CreateBatch(
            batch_service_pb2.CreateBatchRequest(
                requests=[item(f"n{i}", "openai:gpt-4o-mini") for i in range(2000)],
                max_concurrent_requests=16,
                return_individual_costs=True,
            ),
            metadata=TEAM,
        )
        batch = await finished(batches, created.id, within=240)
        results = await every_result(batches, created.id, page_size=1000)
        usage = usage_service_pb2_grpc.UsageServiceStub(gw.channel)
        records: list[usage_pb2.UsageRecord] = []
        token = ""
        while True:
            page = await usage.ListUsageRecords(
                usage_pb2.ListUsageRecordsRequest(
                    filter=usage_pb2.UsageFilter(tags={"batch_id": created.id}),
                    page_size=1000,
                    page_token=token,
                ),
                metadata=ADMIN,
            )
            records.extend(page.records)
            token = page.next_page_token
            if not token:
                break
    assert fake_openai.most_in_flight <= 16
    assert fake_openai.most_in_flight >= 8, "the cap was not reached: the test measures nothing"
    assert [r.custom_id for r in results] == [f"n{i}" for i in range(2000)]
    failed = [r for r in results if r.status == batches_pb2.BATCH_ITEM_STATUS_FAILED]
    succeeded = [r for r in results if r.status == batches_pb2.BATCH_ITEM_STATUS_SUCCEEDED]
    assert len(failed) + len(succeeded) == 2000
    assert failed, "the 400s must fail their items"
    for result in failed:
        assert result.error.code == "INVALID_ARGUMENT"
        assert result.error.reason
        assert "bad item" in result.error.message
    assert (batch.counts.succeeded, batch.counts.failed) == (len(succeeded), len(failed))
    assert Decimal(batch.cost) == sum((Decimal(r.cost.total or "0") for r in succeeded), Decimal(0))
    assert Counter(r.tags["batch_item"] for r in records) == Counter(f"n{i}" for i in range(2000))


def _item_of(body: dict[str, object]) -> str:
    """The custom id an upstream request was for ("item <id>" is its text)."""
    messages = body["messages"]
    assert isinstance(messages, list)
    return str(messages[-1]["content"]).removeprefix("item ")


async def test_a_gateway_killed_mid_batch_resumes_it_and_runs_no_finished_item_again(
    tmp_path: Path,
    fake_openai: FakeOpenAI,
    backend_url: str,  # noqa: F811
) -> None:
    fake_openai.script(*[Reply(echo=True, delay=0.05) for _ in range(400)])
    toml = (
        KEYS
        + openai_toml(fake_openai.base_url)
        + f'\n[ledger]\nurl = "{backend_url}"\nspool_dir = "{tmp_path}/spool"\n'
        + "\n[batches]\nlease = 1.5\n"
    )
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    async with gateway_process(first, toml) as gateway:
        async with own_channel(gateway.address) as channel:
            batches = batch_service_pb2_grpc.BatchServiceStub(channel)
            created = await batches.CreateBatch(
                batch_service_pb2.CreateBatchRequest(
                    requests=[item(f"k{i}", "openai:gpt-4o-mini") for i in range(120)],
                    max_concurrent_requests=6,
                    return_individual_costs=True,
                ),
                metadata=TEAM,
            )
            async with asyncio.timeout(60):
                while (  # noqa: ASYNC110 (polling another process)
                    await batches.GetBatch(batch_service_pb2.GetBatchRequest(id=created.id), metadata=TEAM)
                ).counts.succeeded < 30:
                    await asyncio.sleep(0.02)
            before = await every_result(batches, created.id, page_size=1000)
        os.kill(gateway.process.pid, signal.SIGKILL)
        await gateway.process.wait()
    done_before = {r.custom_id for r in before if r.status == batches_pb2.BATCH_ITEM_STATUS_SUCCEEDED}
    assert 30 <= len(done_before) < 120

    async with gateway_process(second, toml) as gateway, own_channel(gateway.address) as channel:
        batches = batch_service_pb2_grpc.BatchServiceStub(channel)
        batch = await finished(batches, created.id, within=60)
        results = await every_result(batches, created.id, page_size=1000)
    assert batch.status == batches_pb2.BATCH_STATUS_COMPLETED
    assert batch.counts.succeeded == 120
    sent = Counter(_item_of(r.body) for r in fake_openai.requests)
    # What had succeeded ran once; what was in flight at the kill ran again, and says so.
    assert all(sent[custom] == 1 for custom in done_before)
    rerun = {r.custom_id for r in results if r.attempts == 2}
    assert rerun, "items in flight at the kill must run again"
    # Each start sent its request, unless the kill came between the claim and the send.
    assert all(1 <= sent[custom] <= 2 for custom in rerun)
    assert sum(sent.values()) <= 120 + len(rerun)
    assert set(sent) == {f"k{i}" for i in range(120)}
    assert Decimal(batch.cost) == sum((Decimal(r.cost.total) for r in results), Decimal(0))


async def test_the_completion_webhook_arrives_once_signed() -> None:
    receiver = Receiver()
    async with receiver.serving():
        toml = (
            KEYS
            + f"""
[[webhooks]]
name = "batches"
url = "{receiver.url}"
secret = "{SECRET}"
events = ["batch_completed"]
"""
        )
        async with running_gateway(toml) as gw:
            batches = stub(gw)
            created = await batches.CreateBatch(
                batch_service_pb2.CreateBatchRequest(
                    requests=[item(f"w{i}") for i in range(6)], webhook="batches"
                ),
                metadata=TEAM,
            )
            batch = await finished(batches, created.id)
            await receiver.wait_for(1, within=10)
            await asyncio.sleep(1.5)  # a second delivery would arrive by now
    assert receiver.bad_signatures == 0
    (event_id,) = receiver.alerts
    assert receiver.deliveries[event_id] == 1
    event = receiver.alerts[event_id]
    assert event["type"] == "batch_completed"
    assert (event["batch_id"], event["status"]) == (created.id, "completed")
    assert (event["total_requests"], event["successful_requests"], event["failed_requests"]) == (6, 6, 0)
    assert Decimal(str(event["total_cost"])) == Decimal(batch.cost)


async def test_a_batch_over_its_budget_pauses_and_resumes_when_the_budget_allows() -> None:
    toml = (
        KEYS
        + """
[budgets]
refresh_interval = 0.1

[batches]
budget_pause = 0.3
"""
    )
    async with running_gateway(toml) as gw:
        budgets = budget_service_pb2_grpc.BudgetServiceStub(gw.channel)
        worst = await gw.stub.EstimateCost(
            catalog_pb2.EstimateCostRequest(request=item("x").request), metadata=TEAM
        )
        one = await gw.stub.Chat(item("x").request, metadata=TEAM)  # before the budget: not counted
        # A call fits while what is spent plus its worst case is within the limit: three fit.
        limit = Decimal(worst.estimates[0].worst_case_cost.total) + Decimal(one.cost.total) * Decimal("2.5")
        budget = budgets_pb2.Budget(id="nightly", scope="key:team", limit_usd=str(limit))
        await budgets.CreateBudget(budget_service_pb2.CreateBudgetRequest(budget=budget), metadata=ADMIN)
        await asyncio.sleep(0.3)
        batches = stub(gw)
        created = await batches.CreateBatch(
            batch_service_pb2.CreateBatchRequest(
                requests=[item(f"b{i}") for i in range(12)], max_concurrent_requests=1
            ),
            metadata=TEAM,
        )
        async with asyncio.timeout(20):
            while True:
                paused = await batches.GetBatch(
                    batch_service_pb2.GetBatchRequest(id=created.id), metadata=TEAM
                )
                if paused.status == batches_pb2.BATCH_STATUS_PAUSED:
                    break
                await asyncio.sleep(0.05)
        assert "nightly" in paused.paused_reason
        assert 0 < paused.counts.succeeded < 12
        assert paused.counts.failed == 0  # a budget's refusal fails nothing
        budget.limit_usd = str(limit * 100)
        await budgets.UpdateBudget(budget_service_pb2.UpdateBudgetRequest(budget=budget), metadata=ADMIN)
        batch = await finished(batches, created.id, within=30)
    assert batch.status == batches_pb2.BATCH_STATUS_COMPLETED
    assert (batch.counts.succeeded, batch.counts.failed) == (12, 0)
    assert batch.paused_reason == ""


async def test_the_http_door_takes_a_batch_in_the_seed_documents_shape(gw: RunningGateway) -> None:
    headers = {"authorization": TEAM[0][1]}
    body = {
        "requests": [
            {"model": "mock:echo", "messages": [{"role": "user", "content": "Summarize this: batches"}]},
            {
                "custom_id": "translate",
                "model": "mock:echo-large",
                "messages": [{"role": "user", "content": "Translate this: hello"}],
                "temperature": 0.2,
            },
        ],
        "max_concurrent_requests": 5,
        "return_individual_costs": True,
        "metadata": {"project": "docs"},
    }
    async with aiohttp.ClientSession(base_url=gw.http_url, headers=headers) as http:
        async with http.post("/api/v1/batches", json=body) as created:
            assert created.status == 200, await created.text()
            batch = await created.json()
        assert (batch["object"], batch["total_requests"], batch["metadata"]) == (
            "batch",
            2,
            {"project": "docs"},
        )
        async with asyncio.timeout(30):
            while batch["status"] != "completed":
                await asyncio.sleep(0.05)
                async with http.get(f"/api/v1/batches/{batch['id']}") as polled:
                    batch = await polled.json()
        async with http.get(f"/api/v1/batches/{batch['id']}/results", params={"page_size": "1"}) as first:
            page = await first.json()
        async with http.get(
            f"/v1/batches/{batch['id']}/results", params={"page_token": page["next_page_token"]}
        ) as second:
            rest = await second.json()
        results = page["data"] + rest["data"]
        assert rest["next_page_token"] is None
        assert [r["custom_id"] for r in results] == ["0", "translate"]
        assert [r["response"]["message"]["content"][0]["text"] for r in results] == [
            "Summarize this: batches",
            "Translate this: hello",
        ]
        assert Decimal(batch["total_cost"]) == sum((Decimal(r["cost"]["total"]) for r in results), Decimal(0))
        async with http.get("/api/v1/batches") as listed:
            assert batch["id"] in {b["id"] for b in (await listed.json())["data"]}
        async with http.post(f"/api/v1/batches/{batch['id']}/cancel") as late:
            assert late.status == 400
            assert (await late.json())["error"]["code"] == "batch_finished"
        bad = {
            "requests": [{"model": "mock:echo", "messages": [], "stream": True}],
            "max_concurrent_requests": "x",
        }
        async with http.post("/api/v1/batches", json=bad) as refused:
            assert refused.status == 400
            error = (await refused.json())["error"]
        for named in ("requests[0].stream", "requests[0].messages", "max_concurrent_requests"):
            assert named in error["message"]
        async with http.post("/api/v1/batches", json={"requests": "all of them"}) as not_a_list:
            assert not_a_list.status == 400
            assert (await not_a_list.json())["error"]["param"] == "requests"
    async with (
        aiohttp.ClientSession(base_url=gw.http_url) as anonymous,
        anonymous.get("/api/v1/batches") as denied,
    ):
        assert denied.status == 401


async def test_batches_keep_to_their_share_of_a_providers_limit(fake_openai: FakeOpenAI) -> None:
    """A provider limited to 60 calls a minute, batches to half of it: a batch of 50 items takes
    30 at once and then trickles, while 28 interactive calls right after all find room."""
    limits = "rate_limit = { requests_per_minute = 60, max_wait = 0 }"
    toml = KEYS + openai_toml(fake_openai.base_url, extra=limits) + "\n[batches]\nprovider_share = 0.5\n"
    async with running_gateway(toml) as gw:
        batches = stub(gw)
        created = await batches.CreateBatch(
            batch_service_pb2.CreateBatchRequest(
                requests=[item(f"r{i}", "openai:gpt-4o-mini") for i in range(50)], max_concurrent_requests=50
            ),
            metadata=TEAM,
        )
        async with asyncio.timeout(20):
            while True:
                batch = await batches.GetBatch(
                    batch_service_pb2.GetBatchRequest(id=created.id), metadata=TEAM
                )
                if batch.counts.succeeded >= 30:
                    break
                await asyncio.sleep(0.02)
        interactive = await asyncio.gather(
            *(gw.stub.Chat(chat("openai:gpt-4o-mini", f"now {n}"), metadata=TEAM) for n in range(28)),
            return_exceptions=True,
        )
        batch = await batches.GetBatch(batch_service_pb2.GetBatchRequest(id=created.id), metadata=TEAM)
        await batches.CancelBatch(batch_service_pb2.CancelBatchRequest(id=created.id), metadata=TEAM)
    refused = [r for r in interactive if isinstance(r, BaseException)]
    assert not refused, refused[:1]
    # Its share, and what dripped back since (one every 2 s).
    assert 30 <= batch.counts.succeeded <= 34
    assert batch.counts.failed == 0


async def test_a_database_that_cannot_be_reached_is_unavailable_and_an_unknown_batch_not_found() -> None:
    server = PostgresCluster()
    try:
        toml = KEYS + f'\n[ledger]\nurl = "{server.new_database()}"\nwrite_timeout = 0.5\n'
        async with running_gateway(toml) as gw, aiohttp.ClientSession(base_url=gw.http_url) as http:
            batches = stub(gw)
            created = await batches.CreateBatch(
                batch_service_pb2.CreateBatchRequest(requests=[item("u")]), metadata=TEAM
            )
            headers = {"authorization": TEAM[0][1]}
            async with http.get("/api/v1/batches/batch_000000000000000000000000", headers=headers) as missing:
                assert missing.status == 404
                assert (await missing.json())["error"]["code"] == "batch_not_found"
            await asyncio.to_thread(server.stop)
            with pytest.raises(grpc.aio.AioRpcError) as down:
                await batches.GetBatch(batch_service_pb2.GetBatchRequest(id=created.id), metadata=TEAM)
            details = error_details(down.value)
            assert (details.code, details.info.reason) == (
                grpc.StatusCode.UNAVAILABLE,
                "BATCH_STORE_UNAVAILABLE",
            )
            async with http.get(f"/api/v1/batches/{created.id}", headers=headers) as refused:
                assert refused.status == 503
                assert (await refused.json())["error"]["code"] == "batch_store_unavailable"
            await asyncio.to_thread(server.start)
            batch = await finished(batches, created.id, within=30)
        assert batch.counts.succeeded == 1
    finally:
        server.destroy()


async def test_an_item_the_gateway_itself_keeps_failing_on_ends_failed_after_three_starts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fault of the gateway's own (not an upstream's) leaves the item to its lease, so another
    start may succeed; one that recurs on every start fails the item rather than running it forever."""
    async with running_gateway(KEYS + "\n[batches]\nlease = 1.0\npoll_interval = 0.05\n") as gw:
        starts = []

        async def broken(*args: object, **kwargs: object) -> None:
            starts.append(args)
            raise RuntimeError("a fault of the gateway's own")

        monkeypatch.setattr(gw.server.runtime.gateway, "chat", broken)
        batches = stub(gw)
        created = await batches.CreateBatch(
            batch_service_pb2.CreateBatchRequest(requests=[item("z")]), metadata=TEAM
        )
        batch = await finished(batches, created.id, within=30)
        (result,) = await every_result(batches, created.id, page_size=10)
    assert batch.status == batches_pb2.BATCH_STATUS_COMPLETED
    assert (batch.counts.failed, len(starts), result.attempts) == (1, 3, 3)
    assert (result.error.code, result.error.reason) == ("INTERNAL", "INTERNAL")
    assert created.id in result.error.message
