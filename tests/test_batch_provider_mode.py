"""Batches in provider mode: items go to OpenAI's Batch API and Anthropic's Message Batches (the
fakes speak both), each answered item priced at the batch price (half the list price), with the
same results interface, ledger records and budgets as live batches; a restart polls the job it
submitted instead of submitting it again; a cancel reaches the provider."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from collections.abc import Mapping
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
    usage_pb2,
    usage_service_pb2_grpc,
)
from tests.conftest import RunningGateway, error_details, gateway_process, openai_toml, running_gateway
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.openai import FakeOpenAI, Reply, error_body
from tests.fakes.server import Recorded
from tests.ledger_traffic import own_channel
from tests.ledgers import backend_url  # noqa: F401 (a fixture)
from tests.test_batches import ADMIN, DONE, KEYS, TEAM, every_result, finished, item

PROVIDER = batches_pb2.BATCH_MODE_PROVIDER
GPT, CLAUDE = "openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"


def upstreams(openai: FakeOpenAI, anthropic: FakeAnthropic, batches: str = "") -> str:
    return (
        KEYS
        + openai_toml(openai.base_url)
        + f"""
[providers.anthropic]
base_url = "{anthropic.base_url}"
api_key = "sk-ant-test-0123456789abcdef"
retry = {{ max_retries = 0 }}

[batches]
upstream_poll = 0.1
{batches}
"""
    )


def live_calls(fake: FakeOpenAI | FakeAnthropic) -> list[Recorded]:
    """The requests the fake's live chat endpoint got (not its batch APIs)."""
    return [r for r in fake.requests if r.path in ("/v1/chat/completions", "/v1/messages")]


def stub(gw: RunningGateway) -> batch_service_pb2_grpc.BatchServiceAsyncStub:
    return batch_service_pb2_grpc.BatchServiceStub(gw.channel)


def items(count: int) -> list[batch_service_pb2.BatchRequestItem]:
    """Half for OpenAI, half for Anthropic, each text a different length (so a different cost)."""
    return [item(f"i{n}", GPT if n % 2 else CLAUDE, "word " * (n + 1)) for n in range(count)]


async def run(
    batches: batch_service_pb2_grpc.BatchServiceAsyncStub, mode: batches_pb2.BatchMode.ValueType, count: int
) -> tuple[batches_pb2.Batch, list[batches_pb2.BatchResult]]:
    created = await batches.CreateBatch(
        batch_service_pb2.CreateBatchRequest(
            requests=items(count), max_concurrent_requests=10, return_individual_costs=True, mode=mode
        ),
        metadata=TEAM,
    )
    batch = await finished(batches, created.id)
    return batch, await every_result(batches, created.id, page_size=1000)


async def test_a_hundred_items_cost_exactly_half_in_provider_mode(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    async with running_gateway(upstreams(fake_openai, fake_anthropic)) as gw:
        batches = stub(gw)
        live, live_results = await run(batches, batches_pb2.BATCH_MODE_LIVE, 100)
        live_requests = len(live_calls(fake_openai)), len(live_calls(fake_anthropic))
        assert live_requests == (50, 50)
        live_window = gw.server.runtime.gateway.live
        seen = [live_window.of(model).recent_calls for model in (GPT, CLAUDE)]
        provider, results = await run(batches, PROVIDER, 100)
        # Their hours in a provider's queue are not the models' latency (routing by speed uses it).
        assert [live_window.of(model).recent_calls for model in (GPT, CLAUDE)] == seen == [50, 50]

        assert provider.status == batches_pb2.BATCH_STATUS_COMPLETED
        assert provider.mode == PROVIDER
        assert live.mode == batches_pb2.BATCH_MODE_LIVE
        assert (provider.counts.succeeded, provider.counts.failed) == (100, 0)
        # Exactly half, as a whole and item by item; nothing reached the live endpoints.
        assert Decimal(live.cost) > 0
        assert Decimal(provider.cost) * 2 == Decimal(live.cost)
        by_id = {r.custom_id: r for r in live_results}
        for result in results:
            before = by_id[result.custom_id]
            assert result.response.message.content[0].text == before.response.message.content[0].text
            assert result.usage.prompt_tokens == before.usage.prompt_tokens
            assert result.usage.completion_tokens == before.usage.completion_tokens
            assert Decimal(result.cost.total) * 2 == Decimal(before.cost.total)
            assert Decimal(result.cost.output) * 2 == Decimal(before.cost.output)
            assert "batch price 50%" in result.cost.price_source
            assert result.response.routing.reason == "provider_batch"
            assert result.attempts == 1
        assert Decimal(provider.cost) == sum((Decimal(r.cost.total) for r in results), Decimal(0))
        assert (len(live_calls(fake_openai)), len(live_calls(fake_anthropic))) == live_requests

        # One job per provider, each holding its 50 items, the bodies the live endpoints got.
        jobs = {job.provider: job for job in provider.provider_jobs}
        assert {name: job.items for name, job in jobs.items()} == {"openai": 50, "anthropic": 50}
        (openai_job,) = fake_openai.batches.values()
        (anthropic_job,) = fake_anthropic.batches.values()
        assert jobs["openai"].upstream_id == openai_job.batch["id"]
        assert jobs["anthropic"].upstream_id == anthropic_job.batch["id"]
        assert jobs["openai"].upstream_status == "completed"
        assert jobs["anthropic"].upstream_status == "ended"
        assert openai_job.batch["metadata"] == {"gateway_batch": provider.id}
        assert len(openai_job.requests) == 50
        assert len(anthropic_job.requests) == 50
        live_bodies = {json.dumps(r.body, sort_keys=True) for r in live_calls(fake_openai)}
        assert {json.dumps(line["body"], sort_keys=True) for line in openai_job.requests} == live_bodies

        # Every item is one call in the ledger, at the price its result shows.
        usage = usage_service_pb2_grpc.UsageServiceStub(gw.channel)
        records = (
            await usage.ListUsageRecords(
                usage_pb2.ListUsageRecordsRequest(
                    filter=usage_pb2.UsageFilter(tags={"batch_id": provider.id}), page_size=1000
                ),
                metadata=ADMIN,
            )
        ).records
        assert Counter(r.tags["batch_item"] for r in records) == Counter(f"i{n}" for n in range(100))
        assert {r.tags["provider_batch"] for r in records} == {j.upstream_id for j in jobs.values()}
        costs = {r.custom_id: Decimal(r.cost.total) for r in results}
        assert {r.tags["batch_item"]: Decimal(r.cost.total) for r in records} == costs


async def test_the_http_door_runs_a_batch_in_provider_mode(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    async with running_gateway(upstreams(fake_openai, fake_anthropic)) as gw, aiohttp.ClientSession() as http:
        headers = {"Authorization": "Bearer batch-team-key-0123456789"}
        body = {
            "mode": "provider",
            "return_individual_costs": True,
            "requests": [
                {"custom_id": "a", "model": GPT, "messages": [{"role": "user", "content": "first one"}]},
                {
                    "custom_id": "b",
                    "model": CLAUDE,
                    "max_tokens": 50,
                    "messages": [{"role": "user", "content": "second"}],
                },
            ],
        }
        async with http.post(f"{gw.http_url}/api/v1/batches", json=body, headers=headers) as response:
            assert response.status == 200, await response.text()
            created = await response.json()
        assert created["mode"] == "provider"
        batch = await finished(stub(gw), created["id"])
        async with http.get(f"{gw.http_url}/api/v1/batches/{created['id']}", headers=headers) as response:
            shown = await response.json()
        async with http.get(
            f"{gw.http_url}/api/v1/batches/{created['id']}/results", headers=headers
        ) as response:
            results = (await response.json())["data"]
    assert batch.counts.succeeded == 2
    assert sorted(job["provider"] for job in shown["provider_jobs"]) == ["anthropic", "openai"]
    assert all(job["upstream_id"] and job["items"] == 1 for job in shown["provider_jobs"])
    assert [r["custom_id"] for r in results] == ["a", "b"]
    assert results[0]["response"]["message"]["content"][0]["text"] == "first one"
    assert Decimal(shown["total_cost"]) == sum((Decimal(r["cost"]["total"]) for r in results), Decimal(0))


async def test_what_provider_mode_cannot_send_is_refused_naming_the_item(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    async with running_gateway(upstreams(fake_openai, fake_anthropic)) as gw, aiohttp.ClientSession() as http:
        fallback = item("d", GPT)
        fallback.request.fallback_models.append(CLAUDE)
        by_task = item("e", "")
        by_task.request.task_type = "summarization"  # served by "auto" unless configured
        bad = [item("a", "mock:echo"), item("b", "auto"), item("c", GPT), fallback, by_task]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub(gw).CreateBatch(
                batch_service_pb2.CreateBatchRequest(requests=bad, mode=PROVIDER), metadata=TEAM
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        bad_request = error_details(refused.value).bad_request
        assert bad_request is not None
        fields = {v.field for v in bad_request.field_violations}
        assert fields == {
            "requests[0].request.model",
            "requests[1].request.model",
            "requests[3].request.fallback_models",
            "requests[4].request.task_type",
        }
        # The same items are fine for a live batch.
        live = await stub(gw).CreateBatch(
            batch_service_pb2.CreateBatchRequest(requests=bad[:3]), metadata=TEAM
        )
        assert live.mode == batches_pb2.BATCH_MODE_LIVE
        headers = {"Authorization": "Bearer batch-team-key-0123456789"}
        for given, field in (
            (
                {
                    "mode": "upstream",
                    "requests": [{"model": GPT, "messages": [{"role": "user", "content": "x"}]}],
                },
                "mode",
            ),
            (
                {
                    "mode": "provider",
                    "requests": [{"model": "mock:echo", "messages": [{"role": "user", "content": "x"}]}],
                },
                "requests[0].model",
            ),
        ):
            async with http.post(f"{gw.http_url}/api/v1/batches", json=given, headers=headers) as response:
                assert response.status == 400
                error = (await response.json())["error"]
            assert field in json.dumps(error)
    assert not fake_openai.batches
    assert not fake_anthropic.batches


async def test_item_errors_and_an_expired_window_fail_their_items_with_reasons(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_openai.batch_replies["item-1"] = Reply(
        status=400, json_body=error_body("bad request here", "invalid_request_error", code="invalid_value")
    )
    async with running_gateway(upstreams(fake_openai, fake_anthropic)) as gw:
        batches = stub(gw)
        created = await batches.CreateBatch(
            batch_service_pb2.CreateBatchRequest(
                requests=[item("ok", GPT), item("refused", GPT)], return_individual_costs=True, mode=PROVIDER
            ),
            metadata=TEAM,
        )
        done = await finished(batches, created.id)
        results = {r.custom_id: r for r in await every_result(batches, created.id, page_size=10)}
        assert (done.counts.succeeded, done.counts.failed) == (1, 1)
        assert results["refused"].error.code == "INVALID_ARGUMENT"
        assert "bad request here" in results["refused"].error.message
        assert Decimal(done.cost) == Decimal(results["ok"].cost.total) > 0

        fake_anthropic.hold_batches = True
        expiring = await batches.CreateBatch(
            batch_service_pb2.CreateBatchRequest(requests=[item("late", CLAUDE)], mode=PROVIDER),
            metadata=TEAM,
        )
        (upstream_id,) = await _submitted(fake_anthropic.batches, 1)
        fake_anthropic.hold_batches = False
        fake_anthropic.expire_batch(upstream_id)
        late = await finished(batches, expiring.id)
        (result,) = await every_result(batches, expiring.id, page_size=10)
    assert late.counts.failed == 1
    assert Decimal(late.cost) == 0
    assert (result.error.code, result.error.reason) == ("DEADLINE_EXCEEDED", "PROVIDER_BATCH_EXPIRED")


async def test_a_job_the_provider_refuses_whole_fails_its_items(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_openai.hold_batches = True
    async with running_gateway(upstreams(fake_openai, fake_anthropic)) as gw:
        batches = stub(gw)
        created = await batches.CreateBatch(
            batch_service_pb2.CreateBatchRequest(
                requests=[item(f"f{n}", GPT) for n in range(3)], mode=PROVIDER
            ),
            metadata=TEAM,
        )
        (upstream_id,) = await _submitted(fake_openai.batches, 1)
        fake_openai.fail_batch(upstream_id)
        fake_openai.hold_batches = False
        batch = await finished(batches, created.id)
        results = await every_result(batches, created.id, page_size=10)
    assert (batch.counts.failed, Decimal(batch.cost)) == (3, Decimal(0))
    assert {(r.error.code, r.error.reason) for r in results} == {("UNAVAILABLE", "PROVIDER_BATCH_FAILED")}
    assert all("'failed'" in r.error.message for r in results)


async def test_cancelling_a_provider_batch_cancels_the_upstream_job(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    fake_openai.hold_batches = True
    async with running_gateway(upstreams(fake_openai, fake_anthropic)) as gw:
        batches = stub(gw)
        created = await batches.CreateBatch(
            batch_service_pb2.CreateBatchRequest(
                requests=[item(f"c{n}", GPT) for n in range(5)], mode=PROVIDER
            ),
            metadata=TEAM,
        )
        (upstream_id,) = await _submitted(fake_openai.batches, 1)
        cancelling = await batches.CancelBatch(
            batch_service_pb2.CancelBatchRequest(id=created.id), metadata=TEAM
        )
        assert cancelling.status == batches_pb2.BATCH_STATUS_CANCELLING
        fake_openai.hold_batches = False
        batch = await finished(batches, created.id)
        results = await every_result(batches, created.id, page_size=10)
    assert batch.status == batches_pb2.BATCH_STATUS_CANCELLED, results
    assert batch.counts.cancelled == 5, [(r.error.reason, r.error.message) for r in results]
    assert Decimal(batch.cost) == 0
    assert fake_openai.batches[upstream_id].batch["status"] == "cancelled"
    assert [r.path for r in fake_openai.requests].count(f"/v1/batches/{upstream_id}/cancel") == 1


async def test_a_provider_batch_counts_against_its_budget_and_waits_when_it_would_not_fit(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic
) -> None:
    toml = (
        upstreams(fake_openai, fake_anthropic, "budget_pause = 0.2") + "\n[budgets]\nrefresh_interval = 0.1\n"
    )
    async with running_gateway(toml) as gw:
        budgets = budget_service_pb2_grpc.BudgetServiceStub(gw.channel)
        budget = budgets_pb2.Budget(id="offline", scope="key:team", limit_usd="0.000001")
        await budgets.CreateBudget(budget_service_pb2.CreateBudgetRequest(budget=budget), metadata=ADMIN)
        batches = stub(gw)
        created = await batches.CreateBatch(
            batch_service_pb2.CreateBatchRequest(
                requests=[item(f"b{n}", GPT) for n in range(4)], mode=PROVIDER
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
        assert "offline" in paused.paused_reason
        assert not fake_openai.batches  # nothing was submitted
        budget.limit_usd = "10"
        await budgets.UpdateBudget(budget_service_pb2.UpdateBudgetRequest(budget=budget), metadata=ADMIN)
        batch = await finished(batches, created.id)
        assert batch.counts.succeeded == 4
        async with asyncio.timeout(10):
            while True:  # settled in the background
                got = await budgets.GetBudget(
                    budget_service_pb2.GetBudgetRequest(id="offline"), metadata=ADMIN
                )
                if Decimal(got.spent_usd) > 0:
                    break
                await asyncio.sleep(0.05)
    assert Decimal(got.spent_usd) == Decimal(batch.cost)


async def test_a_gateway_killed_after_submitting_polls_the_same_job_after_a_restart(
    tmp_path: Path,
    fake_openai: FakeOpenAI,
    fake_anthropic: FakeAnthropic,
    backend_url: str,  # noqa: F811
) -> None:
    toml = (
        upstreams(fake_openai, fake_anthropic, "lease = 1.5")
        + f'\n[ledger]\nurl = "{backend_url}"\nspool_dir = "{tmp_path}/spool"\n'
    )
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    fake_openai.hold_batches = fake_anthropic.hold_batches = True
    async with gateway_process(first, toml) as gateway:
        async with own_channel(gateway.address) as channel:
            batches = batch_service_pb2_grpc.BatchServiceStub(channel)
            created = await batches.CreateBatch(
                batch_service_pb2.CreateBatchRequest(
                    requests=items(20), return_individual_costs=True, mode=PROVIDER
                ),
                metadata=TEAM,
            )
            await _submitted(fake_openai.batches, 1)
            await _submitted(fake_anthropic.batches, 1)
            async with asyncio.timeout(10):
                while True:  # both jobs' ids kept before the kill
                    shown = await batches.GetBatch(
                        batch_service_pb2.GetBatchRequest(id=created.id), metadata=TEAM
                    )
                    if sum(1 for job in shown.provider_jobs if job.upstream_id) == 2:
                        break
                    await asyncio.sleep(0.02)
        os.kill(gateway.process.pid, signal.SIGKILL)
        await gateway.process.wait()
    fake_openai.hold_batches = fake_anthropic.hold_batches = False
    async with gateway_process(second, toml) as gateway, own_channel(gateway.address) as channel:
        batches = batch_service_pb2_grpc.BatchServiceStub(channel)
        batch = await finished(batches, created.id)
        results = await every_result(batches, created.id, page_size=100)
    assert batch.counts.succeeded == 20
    # Submitted once to each provider: the restarted gateway polled the jobs it found.
    assert len(fake_openai.batches) == 1
    assert len(fake_anthropic.batches) == 1
    assert all(r.attempts == 1 for r in results)
    assert Decimal(batch.cost) == sum((Decimal(r.cost.total) for r in results), Decimal(0))
    assert batch.status in DONE


async def _submitted(store: Mapping[str, object], count: int) -> list[str]:
    """The ids of the fake's batches once it holds `count` of them."""
    async with asyncio.timeout(20):
        while len(store) < count:  # noqa: ASYNC110 (the gateway submits in the background)
            await asyncio.sleep(0.02)
    return list(store)


async def test_a_job_whose_id_could_not_be_kept_is_withdrawn_and_submitted_again(
    fake_openai: FakeOpenAI, fake_anthropic: FakeAnthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database fails just as the provider's job id is written: that job is cancelled at the
    provider (nobody would ever read it) and the items go in a job of their own later."""
    fake_openai.hold_batches = True
    async with running_gateway(upstreams(fake_openai, fake_anthropic, "budget_pause = 0.2")) as gw:
        runner = gw.server.runtime.batches
        assert runner is not None
        store = runner.store
        keep = store.submitted
        failures = [OSError("database is locked")]

        async def failing_once(*args: object, **kwargs: object) -> bool:
            if failures:
                raise failures.pop()
            return await keep(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(store, "submitted", failing_once)
        batches = stub(gw)
        created = await batches.CreateBatch(
            batch_service_pb2.CreateBatchRequest(
                requests=[item(f"w{n}", GPT) for n in range(3)], mode=PROVIDER
            ),
            metadata=TEAM,
        )
        first, second = await _submitted(fake_openai.batches, 2)
        fake_openai.hold_batches = False
        batch = await finished(batches, created.id)
        results = await every_result(batches, created.id, page_size=10)
    assert fake_openai.batches[first].batch["status"] in ("cancelling", "cancelled")
    assert batch.counts.succeeded == 3
    assert [job.upstream_id for job in batch.provider_jobs] == [second]
    assert all(r.attempts == 1 for r in results)  # the first job's start is not counted
