"""The UsageService over the gateway's own ledger, on SQLite and on a real PostgreSQL server: what
callers were told their calls cost adds up, to the last decimal, in the summary; every call is
listed once; a key that is not an admin key sees only its own calls."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import pytest
from google.protobuf import timestamp_pb2

from llmgateway.v1 import chat_pb2, usage_pb2, usage_service_pb2_grpc
from tests.conftest import RunningGateway, chat, error_details, openai_toml, read_event, running_gateway
from tests.fakes.openai import FakeOpenAI, Reply, error_body, text_chunks, usage
from tests.ledgers import backend_url  # noqa: F401 (a fixture)

KEYS = """
[[auth.keys]]
name = "ops"
key = "ops-key-0123456789abcdef"
role = "admin"
[[auth.keys]]
name = "team-a"
key = "team-a-key-0123456789ab"
[[auth.keys]]
name = "team-b"
key = "team-b-key-0123456789ab"
"""
OPS = (("authorization", "Bearer ops-key-0123456789abcdef"),)
TEAM_A = (("authorization", "Bearer team-a-key-0123456789ab"),)
TEAM_B = (("authorization", "Bearer team-b-key-0123456789ab"),)


@dataclass(frozen=True)
class Told:
    key: str
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal


@pytest.fixture
async def usage_gateway(
    fake_openai: FakeOpenAI,
    backend_url: str,  # noqa: F811
) -> AsyncIterator[tuple[RunningGateway, usage_service_pb2_grpc.UsageServiceAsyncStub]]:
    ledger = f'[ledger]\nurl = "{backend_url}"\nflush_interval = 0.05\n'
    async with running_gateway(openai_toml(fake_openai.base_url) + KEYS + ledger) as gw:
        yield gw, usage_service_pb2_grpc.UsageServiceStub(gw.channel)


# The period every query here covers: from an hour before the tests to an hour after.
_NOW = datetime.now(UTC)


def period(**extra: object) -> usage_pb2.UsageFilter:
    start, end = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    start.FromDatetime(_NOW - timedelta(hours=1))
    end.FromDatetime(_NOW + timedelta(hours=1))
    return usage_pb2.UsageFilter(start_time=start, end_time=end, **extra)  # type: ignore[arg-type]


async def all_records(
    usage_stub: usage_service_pb2_grpc.UsageServiceAsyncStub,
    metadata: tuple[tuple[str, str], ...],
    page_size: int = 7,
    **filters: object,
) -> list[usage_pb2.UsageRecord]:
    records: list[usage_pb2.UsageRecord] = []
    token = ""
    while True:
        page = await usage_stub.ListUsageRecords(
            usage_pb2.ListUsageRecordsRequest(
                filter=period(**filters), page_size=page_size, page_token=token
            ),
            metadata=metadata,
        )
        records.extend(page.records)
        token = page.next_page_token
        if not token:
            return records


async def written(
    usage_stub: usage_service_pb2_grpc.UsageServiceAsyncStub, count: int
) -> list[usage_pb2.UsageRecord]:
    """The ledger's records once `count` calls are in it (the writer flushes every 50 ms)."""
    for _ in range(100):
        records = await all_records(usage_stub, OPS, page_size=1000)
        if len(records) >= count:
            return records
        await asyncio.sleep(0.05)
    raise AssertionError(f"{len(records)} of {count} calls reached the ledger")


async def test_summaries_add_up_what_callers_were_told_and_keys_see_their_own(
    usage_gateway: tuple[RunningGateway, usage_service_pb2_grpc.UsageServiceAsyncStub],
    fake_openai: FakeOpenAI,
) -> None:
    gw, usage_stub = usage_gateway
    told: dict[str, Told] = {}
    calls = 0

    async def unary(
        key: tuple[tuple[str, str], ...], name: str, request_id: str, request: chat_pb2.ChatRequest
    ) -> None:
        nonlocal calls
        calls += 1
        try:
            reply = await gw.stub.Chat(request, metadata=(*key, ("x-request-id", request_id)))
        except grpc.aio.AioRpcError:
            return
        told[request_id] = Told(
            name, reply.usage.prompt_tokens, reply.usage.completion_tokens, Decimal(reply.cost.total)
        )

    for i in range(6):
        await unary(TEAM_A, "team-a", f"a-mock-{i}", chat("mock:echo", f"team a asks {i} " * (i + 1)))
        await unary(TEAM_B, "team-b", f"b-large-{i}", chat("mock:echo-large", f"team b asks {i}"))
    for i in range(3):
        await unary(TEAM_A, "team-a", f"a-openai-{i}", chat("openai:gpt-4o-mini", f"openai {i}"))
    fake_openai.script(Reply(status=503, json_body=error_body("Overloaded", "server_error")))
    await unary(TEAM_B, "team-b", "b-failed", chat("openai:gpt-4o-mini", retry_less := "fails"))
    assert retry_less
    await unary(OPS, "ops", "ops-dry", chat("mock:echo-large", "estimate only", dry_run=True))

    # A stream to its end, and one the caller cancels midway (told nothing, recorded all the same).
    calls += 2
    fake_openai.script(Reply(sse=text_chunks(["one ", "two"], usage(9, 2))))
    stream = gw.stub.ChatStream(
        chat_pb2.ChatStreamRequest(request=chat("openai:gpt-4o-mini")),
        metadata=(*TEAM_A, ("x-request-id", "a-stream")),
    )
    events = [event async for event in stream]
    finish = events[-1].finish
    told["a-stream"] = Told(
        "team-a", finish.usage.prompt_tokens, finish.usage.completion_tokens, Decimal(finish.cost.total)
    )
    fake_openai.script(Reply(sse=text_chunks([f"w{i} " for i in range(40)], usage(5, 40)), chunk_delay=0.05))
    cut = gw.stub.ChatStream(
        chat_pb2.ChatStreamRequest(request=chat("openai:gpt-4o-mini")),
        metadata=(*TEAM_B, ("x-request-id", "b-cut")),
    )
    for _ in range(3):
        assert await read_event(cut) is not None
    cut.cancel()

    records = await written(usage_stub, calls)
    assert len(records) == calls
    by_id = {r.request_id: r for r in records}
    assert len(by_id) == calls  # each call once
    for request_id, expected in told.items():
        record = by_id[request_id]
        assert record.api_key == expected.key
        assert (record.usage.prompt_tokens, record.usage.completion_tokens) == (
            expected.prompt_tokens,
            expected.completion_tokens,
        )
        assert Decimal(record.cost.total) == expected.cost
    assert (by_id["b-failed"].status, by_id["b-failed"].reason) == ("UNAVAILABLE", "UPSTREAM_UNAVAILABLE")
    assert by_id["b-cut"].status == "CANCELLED"
    assert by_id["b-cut"].usage.estimated
    assert by_id["ops-dry"].dry_run
    assert [r.start_time.ToNanoseconds() for r in records] == sorted(
        (r.start_time.ToNanoseconds() for r in records), reverse=True
    )

    summary = await usage_stub.GetUsageSummary(
        usage_pb2.GetUsageSummaryRequest(filter=period(), group_by=["api_key"]), metadata=OPS
    )
    every_cost = sum(
        (Decimal(r.cost.total) for r in records if r.HasField("cost") and r.cost.total), Decimal(0)
    )
    assert summary.total.requests == calls
    assert summary.total.errors == 2  # the 503, the cancel
    assert Decimal(summary.total.cost) == every_cost
    assert summary.total.prompt_tokens == sum(r.usage.prompt_tokens for r in records)
    per_key = {bucket.group[0]: bucket.stats for bucket in summary.buckets}
    for key in ("team-a", "team-b"):
        key_records = [r for r in records if r.api_key == key]
        assert per_key[key].requests == len(key_records)
        assert Decimal(per_key[key].cost) == sum(
            (Decimal(r.cost.total) for r in key_records if r.cost.total), Decimal(0)
        )
    assert Decimal(summary.total.cost) == sum((Decimal(b.stats.cost) for b in summary.buckets), Decimal(0))
    assert {p.provider for p in summary.cost_by_provider} == {"mock", "openai"}
    assert {m.model: m.requests for m in summary.top_models_by_calls} == {
        "mock:echo-large": 7,  # six calls and the dry run
        "mock:echo": 6,
        "openai:gpt-4o-mini": 6,  # three replies, a 503, two streams
    }
    assert summary.top_models_by_calls[0].model == "mock:echo-large"
    assert summary.currency == "USD"

    mine = await all_records(usage_stub, TEAM_A)
    assert {r.api_key for r in mine} == {"team-a"}
    assert len(mine) == sum(1 for r in records if r.api_key == "team-a")
    own = await usage_stub.GetUsageSummary(usage_pb2.GetUsageSummaryRequest(filter=period()), metadata=TEAM_A)
    assert own.total.requests == len(mine)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await usage_stub.ListUsageRecords(
            usage_pb2.ListUsageRecordsRequest(filter=period(api_key="team-b")), metadata=TEAM_A
        )
    denied = error_details(caught.value)
    assert (denied.code, denied.info.reason, denied.info.metadata["field"]) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "USAGE_ACCESS_DENIED",
        "filter.api_key",
    )


async def test_bad_usage_queries_name_the_field(
    usage_gateway: tuple[RunningGateway, usage_service_pb2_grpc.UsageServiceAsyncStub],
) -> None:
    gw, usage_stub = usage_gateway
    await gw.stub.Chat(chat("mock:echo"), metadata=OPS)
    cases = [
        (usage_pb2.GetUsageSummaryRequest(), "filter.start_time"),
        (usage_pb2.GetUsageSummaryRequest(filter=period(), group_by=["colour"]), "group_by[0]"),
        (usage_pb2.GetUsageSummaryRequest(filter=period(), top_models=5000), "top_models"),
        (usage_pb2.GetUsageSummaryRequest(filter=period(), granularity=9), "granularity"),  # type: ignore[arg-type]
    ]
    for request, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await usage_stub.GetUsageSummary(request, metadata=OPS)
        details = error_details(caught.value)
        assert details.code is grpc.StatusCode.INVALID_ARGUMENT
        assert details.bad_request is not None
        assert [v.field for v in details.bad_request.field_violations] == [field]
    await written(usage_stub, 1)
    first = await usage_stub.ListUsageRecords(
        usage_pb2.ListUsageRecordsRequest(filter=period(), page_size=1), metadata=OPS
    )
    await gw.stub.Chat(chat("mock:echo"), metadata=OPS)
    await written(usage_stub, 2)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await usage_stub.ListUsageRecords(
            usage_pb2.ListUsageRecordsRequest(
                filter=period(user="other"), page_token=first.next_page_token or "x"
            ),
            metadata=OPS,
        )
    assert error_details(caught.value).info.reason == "INVALID_REQUEST"


async def test_without_a_ledger_usage_is_a_failed_precondition() -> None:
    async with running_gateway("[ledger]\nenabled = false\n") as gw:
        usage_stub = usage_service_pb2_grpc.UsageServiceStub(gw.channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await usage_stub.GetUsageSummary(usage_pb2.GetUsageSummaryRequest(filter=period()))
        details = error_details(caught.value)
        assert (details.code, details.info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "LEDGER_DISABLED")


async def llm_gateway_usage(*args: str) -> tuple[int, str, str]:
    """`llm-gateway usage ARGS` as a separate process (it is a synchronous gRPC client)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llm_gateway",
        "usage",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_usage_command_prints_the_days_table(
    usage_gateway: tuple[RunningGateway, usage_service_pb2_grpc.UsageServiceAsyncStub],
) -> None:
    gw, usage_stub = usage_gateway
    costs = []
    for i in range(3):
        reply = await gw.stub.Chat(
            chat("mock:echo", f"tagged call {i} " * (i + 1), tags={"team": "cli"}), metadata=TEAM_A
        )
        costs.append(Decimal(reply.cost.total))
    await gw.stub.Chat(chat("mock:echo-large", "not tagged"), metadata=TEAM_A)
    await written(usage_stub, 4)

    status, out, err = await llm_gateway_usage(
        "--address",
        gw.address,
        "--api-key",
        OPS[0][1].removeprefix("Bearer "),
        "--tag",
        "team=cli",
        "--by",
        "model",
    )
    assert (status, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"Usage {datetime.now(UTC).date()} (UTC), by day"
    assert lines[1].startswith(f"3 calls, 0 failed; {format(sum(costs, Decimal(0)), 'f')} USD; ")
    header, row = lines[3].split(), lines[4].split()
    assert header[:4] == ["day", "model", "calls", "failed"]
    assert row[1:4] == ["mock:echo", "3", "0"]

    # A key that is not an admin key may not ask for another's calls; a bad tag is a usage error.
    status, out, err = await llm_gateway_usage(
        "--address", gw.address, "--api-key", TEAM_A[0][1].removeprefix("Bearer "), "--key", "team-b"
    )
    assert (status, out) == (1, "")
    assert "PERMISSION_DENIED" in err
    status, _, err = await llm_gateway_usage("--address", gw.address, "--tag", "team")
    assert status == 2
    assert "'team' is not KEY=VALUE" in err
