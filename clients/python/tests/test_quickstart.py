"""The quickstart and the client helpers against a live gateway (mock provider, authentication on)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import grpc
import pytest
import quickstart

from llmgateway import (
    AsyncConnection,
    bad_request,
    connect,
    connect_async,
    error_info,
    rpc_status,
    system,
    text,
    to_decimal,
    user,
)
from llmgateway.v1 import accounting_pb2, catalog_pb2, chat_pb2, content_pb2, usage_pb2

TIMEOUT = 10.0  # seconds, for every call
USER_TEXT = "Hello from Python, gateway!"
MOCK_MODELS = {"mock:echo", "mock:echo-large", "mock:echo-free"}
PLAIN_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")


def todays_usage() -> usage_pb2.GetUsageSummaryRequest:
    """The day's summary, built here independently of the quickstart's own request."""
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    request = usage_pb2.GetUsageSummaryRequest(granularity=usage_pb2.GRANULARITY_DAY)
    request.filter.start_time.FromDatetime(start)
    request.filter.end_time.FromDatetime(start + timedelta(days=1))
    return request


def chat_request(model: str = "mock:echo", user_text: str = USER_TEXT) -> chat_pb2.ChatRequest:
    return chat_pb2.ChatRequest(model=model, messages=[system("Be brief."), user(user_text)])


def positive_amount(amount: str) -> bool:
    """True for a plain-notation decimal string greater than zero."""
    return PLAIN_DECIMAL.fullmatch(amount) is not None and Decimal(amount) > 0


def assert_priced(cost: accounting_pb2.Cost) -> None:
    assert cost.status == accounting_pb2.PRICING_STATUS_PRICED
    assert cost.currency == "USD"
    assert positive_amount(cost.total), cost.total
    assert to_decimal(cost.total) == to_decimal(cost.input) + to_decimal(cost.output) + to_decimal(
        cost.cached_input
    ) + to_decimal(cost.cache_write) + to_decimal(cost.request_fee)


# --- The quickstart -----------------------------------------------------------------------------


async def test_quickstart_run(address: str, api_key: str) -> None:
    out = io.StringIO()
    result = await quickstart.run(address, api_key, "mock:echo", out)

    assert text(result.chat.message) == USER_TEXT
    assert result.chat.model == "mock:echo"
    assert result.chat_request_id
    assert result.chat_request_id == result.chat.request_id
    assert_priced(result.chat.cost)

    kinds = [e.WhichOneof("event") for e in result.stream_events]
    assert kinds[0] == "start"
    assert kinds[-1] == "finish"
    assert kinds.count("text_delta") >= 2
    assert result.streamed_text == USER_TEXT

    assert [e.model for e in result.estimate.estimates] == ["mock:echo"]
    assert {m.id for m in result.models} >= MOCK_MODELS

    printed = out.getvalue()
    assert USER_TEXT in printed
    assert result.chat.cost.total in printed
    assert "mock:echo-large" in printed


async def test_quickstart_usage_summary(address: str, api_key: str, gateway: AsyncConnection) -> None:
    # What the ledger holds for this key today before the quickstart runs (it only grows).
    baseline = (await gateway.usage.GetUsageSummary(todays_usage(), timeout=TIMEOUT)).total
    out = io.StringIO()
    result = await quickstart.run(address, api_key, "mock:echo", out)
    printed = out.getvalue()

    # The day, 00:00 UTC to 00:00 UTC the next day, in one bucket.
    assert result.usage_request.filter == todays_usage().filter
    assert result.usage_request.granularity == usage_pb2.GRANULARITY_DAY

    # The summary counts the quickstart's two ledgered calls, Chat and ChatStream, on top of the
    # baseline: their tokens, and their costs as exact decimals.
    summary = result.usage
    total = summary.total
    finish = result.stream_events[-1].finish
    assert total.requests >= baseline.requests + 2
    assert result.usage_before.total.requests >= baseline.requests
    assert total.requests >= result.usage_before.total.requests + 2
    assert total.prompt_tokens >= (
        baseline.prompt_tokens + result.chat.usage.prompt_tokens + finish.usage.prompt_tokens
    )
    assert total.completion_tokens >= (
        baseline.completion_tokens + result.chat.usage.completion_tokens + finish.usage.completion_tokens
    )
    assert PLAIN_DECIMAL.fullmatch(total.cost), total.cost
    calls_cost = to_decimal(result.chat.cost.total) + to_decimal(finish.cost.total)
    assert calls_cost > 0
    assert to_decimal(total.cost) >= to_decimal(baseline.cost) + calls_cost
    assert summary.currency == result.chat.cost.currency == "USD"

    # One daily bucket, starting at the period's start, holding the whole period.
    [bucket] = summary.buckets
    assert bucket.start_time == result.usage_request.filter.start_time
    assert (bucket.stats.requests, bucket.stats.cost) == (total.requests, total.cost)

    # mock:echo served both calls.
    by_model = {m.model: m for m in summary.top_models_by_cost}
    assert by_model["mock:echo"].requests >= 2
    assert to_decimal(by_model["mock:echo"].cost) >= calls_cost

    # Printed as received: counts, tokens, and the cost string with its currency.
    assert "has not recorded" not in printed
    assert (
        f"  {total.requests} calls ({total.errors} failed), {total.prompt_tokens} prompt +"
        f" {total.completion_tokens} completion tokens, cost {total.cost} USD\n"
    ) in printed
    # Other tests' calls (test_budgets.py's on mock:echo-large) may rank above mock:echo.
    assert re.search(
        rf"  top models by cost: (.*, )?mock:echo {re.escape(by_model['mock:echo'].cost)} USD \(", printed
    ), printed


@pytest.mark.parametrize("with_key", [True, False])
def test_quickstart_script(address: str, api_key: str, with_key: bool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_GATEWAY_")}
    env["LLM_GATEWAY_ADDR"] = address
    if with_key:
        env["LLM_GATEWAY_API_KEY"] = api_key
    done = subprocess.run(
        [sys.executable, quickstart.__file__],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if with_key:
        assert done.returncode == 0, done.stderr
        assert USER_TEXT in done.stdout
        assert "ListModels" in done.stdout
        assert re.search(
            r"GetUsageSummary \(\d{4}-\d{2}-\d{2}, UTC\):\n"
            r"  [1-9][0-9]* calls \([0-9]+ failed\), [0-9]+ prompt \+ [0-9]+ completion tokens,"
            r" cost [0-9]+(\.[0-9]+)? USD\n"
            r"  top models by cost: (.*, )?mock:echo ",
            done.stdout,
        ), done.stdout
    else:
        assert done.returncode == 1
        assert "UNAUTHENTICATED MISSING_API_KEY" in done.stderr


# --- Chat ---------------------------------------------------------------------------------------


async def test_chat(gateway: AsyncConnection) -> None:
    call = gateway.stub.Chat(chat_request(), timeout=TIMEOUT)
    reply = await call
    trailers = await call.trailing_metadata()

    assert reply.message.role == content_pb2.ROLE_ASSISTANT
    assert text(reply.message) == USER_TEXT
    assert reply.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert reply.usage.prompt_tokens > 0
    assert reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert_priced(reply.cost)
    assert reply.latency.total.ToNanoseconds() > 0
    assert reply.model == "mock:echo"
    assert reply.provider == "mock"
    assert reply.request_id
    assert trailers is not None
    assert trailers["x-request-id"] == reply.request_id


async def test_chat_keeps_the_callers_request_id(gateway: AsyncConnection) -> None:
    call = gateway.stub.Chat(chat_request(), metadata=[("x-request-id", "py-test-123")], timeout=TIMEOUT)
    reply = await call
    trailers = await call.trailing_metadata()
    assert reply.request_id == "py-test-123"
    assert trailers is not None
    assert trailers["x-request-id"] == "py-test-123"


def test_sync_connect(address: str, api_key: str) -> None:
    with connect(address, api_key) as gateway:
        reply, call = gateway.stub.Chat.with_call(chat_request(), timeout=TIMEOUT)
        assert text(reply.message) == USER_TEXT
        assert reply.finish_reason == chat_pb2.FINISH_REASON_STOP
        assert positive_amount(reply.cost.total)
        assert dict(call.trailing_metadata())["x-request-id"] == reply.request_id

        # The UsageService stub shares the connection and its key.
        summary = gateway.usage.GetUsageSummary(todays_usage(), timeout=TIMEOUT)
        assert summary.currency == "USD"
        assert PLAIN_DECIMAL.fullmatch(summary.total.cost), summary.total.cost

        # Errors of sync calls carry the same details.
        with pytest.raises(grpc.RpcError) as caught:
            gateway.stub.Chat(
                chat_request("nosuch:model"), metadata=(("x-request-id", "py-sync-1"),), timeout=TIMEOUT
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        info = error_info(caught.value)
        assert info is not None
        assert info.reason == "MODEL_NOT_FOUND"
        assert info.domain == "llmgateway.v1"
        assert info.metadata["request_id"] == "py-sync-1"


# --- ChatStream ---------------------------------------------------------------------------------


async def test_chat_stream(gateway: AsyncConnection) -> None:
    events = [
        event
        async for event in gateway.stub.ChatStream(
            chat_pb2.ChatStreamRequest(request=chat_request()), timeout=TIMEOUT
        )
    ]
    kinds = [e.WhichOneof("event") for e in events]

    assert kinds[0] == "start"
    assert events[0].start.model == "mock:echo"
    assert events[0].start.provider == "mock"
    assert events[0].start.request_id

    deltas = [e.text_delta.text for e in events if e.HasField("text_delta")]
    assert len(deltas) >= 2
    assert "".join(deltas) == USER_TEXT
    assert set(kinds[1:-1]) == {"text_delta"}

    assert kinds.count("finish") == 1
    assert kinds[-1] == "finish"
    finish = events[-1].finish
    assert finish.finish_reason == chat_pb2.FINISH_REASON_STOP
    assert finish.usage.completion_tokens > 0
    assert_priced(finish.cost)


async def test_chat_stream_error(gateway: AsyncConnection) -> None:
    stream = gateway.stub.ChatStream(
        chat_pb2.ChatStreamRequest(request=chat_request("nosuch:model")),
        metadata=[("x-request-id", "py-stream-1")],
        timeout=TIMEOUT,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stream:
            pass
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(caught.value)
    assert info is not None
    assert info.reason == "MODEL_NOT_FOUND"
    assert info.metadata["request_id"] == "py-stream-1"


# --- EstimateCost and ListModels ----------------------------------------------------------------


async def test_estimate_cost_ranks_candidates(gateway: AsyncConnection) -> None:
    response = await gateway.stub.EstimateCost(
        catalog_pb2.EstimateCostRequest(
            request=chat_request(), candidate_models=["mock:echo-large", "mock:echo"]
        ),
        timeout=TIMEOUT,
    )
    assert [e.model for e in response.estimates] == ["mock:echo", "mock:echo-large"]
    for estimate in response.estimates:
        assert estimate.provider == "mock"
        assert estimate.prompt_tokens > 0
        assert positive_amount(estimate.expected_cost.total)
        assert positive_amount(estimate.worst_case_cost.total)
        assert to_decimal(estimate.worst_case_cost.total) >= to_decimal(estimate.expected_cost.total)
    cheap, large = response.estimates
    assert to_decimal(cheap.expected_cost.total) <= to_decimal(large.expected_cost.total)


async def test_list_models_pages(gateway: AsyncConnection) -> None:
    ids: list[str] = []
    total_sizes: set[int] = set()
    page_token = ""
    for _ in range(1000):  # a bound, so a broken page token cannot loop forever
        page = await gateway.stub.ListModels(
            catalog_pb2.ListModelsRequest(page_size=1, page_token=page_token), timeout=TIMEOUT
        )
        assert len(page.models) <= 1
        ids.extend(m.id for m in page.models)
        total_sizes.add(page.total_size)
        page_token = page.next_page_token
        if not page_token:
            break
    else:
        pytest.fail("ListModels never returned an empty next_page_token")

    assert len(ids) == len(set(ids)), ids
    assert set(ids) >= MOCK_MODELS
    assert total_sizes == {len(ids)}
    assert ids == sorted(ids)


async def test_list_models_by_provider(gateway: AsyncConnection) -> None:
    page = await gateway.stub.ListModels(catalog_pb2.ListModelsRequest(provider="mock"), timeout=TIMEOUT)
    assert {m.id for m in page.models} == MOCK_MODELS
    assert {m.provider for m in page.models} == {"mock"}
    assert page.total_size == len(page.models)
    assert not page.next_page_token


# --- Errors -------------------------------------------------------------------------------------


async def call_error(
    connection: AsyncConnection, request: chat_pb2.ChatRequest, request_id: str, auth: str | None = None
) -> grpc.aio.AioRpcError:
    metadata = [("x-request-id", request_id)]
    if auth is not None:
        metadata.append(("authorization", auth))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await connection.stub.Chat(request, metadata=metadata, timeout=TIMEOUT)
    return caught.value


async def test_invalid_argument(gateway: AsyncConnection) -> None:
    request = chat_request()
    request.generation.temperature = 7
    err = await call_error(gateway, request, "py-bad-1")

    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    info = error_info(err)
    assert info is not None
    assert info.reason == "INVALID_REQUEST"
    assert info.domain == "llmgateway.v1"
    assert info.metadata["request_id"] == "py-bad-1"
    violations = bad_request(err)
    assert violations is not None
    assert "generation.temperature" in [v.field for v in violations.field_violations]

    status = rpc_status(err)
    assert status is not None
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]


async def test_model_not_found(gateway: AsyncConnection) -> None:
    err = await call_error(gateway, chat_request("nosuch:model"), "py-missing-1")
    assert err.code() == grpc.StatusCode.NOT_FOUND
    info = error_info(err)
    assert info is not None
    assert info.reason == "MODEL_NOT_FOUND"
    assert info.domain == "llmgateway.v1"
    assert info.metadata["request_id"] == "py-missing-1"
    assert bad_request(err) is None


async def test_missing_api_key(anonymous: AsyncConnection) -> None:
    err = await call_error(anonymous, chat_request(), "py-auth-1")
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    info = error_info(err)
    assert info is not None
    assert info.reason == "MISSING_API_KEY"
    assert info.domain == "llmgateway.v1"
    assert info.metadata["request_id"] == "py-auth-1"


async def test_wrong_api_key(address: str) -> None:
    async with connect_async(address, "wrong") as wrong:
        err = await call_error(wrong, chat_request(), "py-auth-2")
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    info = error_info(err)
    assert info is not None
    assert info.reason == "INVALID_API_KEY"
    assert info.metadata["request_id"] == "py-auth-2"


async def test_call_metadata_overrides_the_connection_key(gateway: AsyncConnection) -> None:
    err = await call_error(gateway, chat_request(), "py-auth-3", auth="Bearer wrong")
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    info = error_info(err)
    assert info is not None
    assert info.reason == "INVALID_API_KEY"
    assert info.metadata["request_id"] == "py-auth-3"
