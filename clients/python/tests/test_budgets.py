"""BudgetService through the connection's `budgets` stub, against a live gateway (mock provider)."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time

import grpc
import pytest

from llmgateway import AsyncConnection, connect, connect_async, error_info, user
from llmgateway.v1 import budget_service_pb2, budgets_pb2, chat_pb2

TIMEOUT = 10.0  # seconds, for every call


def count_this_call(project: str) -> chat_pb2.ChatRequest:
    """A call in `project`: its worst case on mock:echo-large is 0.0000775 USD, its cost 0.0000675."""
    request = chat_pb2.ChatRequest(model="mock:echo-large", messages=[user("Count this call")])
    request.generation.max_tokens = 5
    request.caller.project = project
    return request


async def test_budget_counts_a_call_then_refuses_the_next(
    address: str, api_key: str, admin_key: str | None, gateway: AsyncConnection
) -> None:
    # A budget of its own, for a project no other call names: 0.0001 USD a day, alert at 50 %.
    budget_id = f"py-test-{secrets.token_hex(6)}"
    budget = budgets_pb2.Budget(
        id=budget_id,
        scope=f"project:{budget_id}",
        limit_usd="0.0001",
        period=budgets_pb2.BUDGET_PERIOD_DAY,
        thresholds=["50"],
    )
    async with connect_async(address, admin_key or api_key) as admin:
        created = await admin.budgets.CreateBudget(
            budget_service_pb2.CreateBudgetRequest(budget=budget), timeout=TIMEOUT
        )
        deleted = False
        try:
            assert created.id == budget_id
            assert (created.spent_usd, created.remaining_usd) == ("0", "0.0001")
            assert created.source == budgets_pb2.BUDGET_SOURCE_API

            # One call in the budget's project: its worst case fits, and it costs 0.0000675.
            call = gateway.stub.Chat(count_this_call(budget_id), timeout=TIMEOUT)
            reply = await call
            trailers = await call.trailing_metadata()
            assert reply.cost.total == "0.0000675"
            assert trailers is not None
            assert trailers["x-budget-remaining-usd"] == "0.0000325"
            assert trailers["x-budget-id"] == budget_id

            # The settlement is written in the background just after the reply: wait for the hold.
            request = budget_service_pb2.GetBudgetRequest(id=budget_id)
            deadline = time.monotonic() + 3
            now = await admin.budgets.GetBudget(request, timeout=TIMEOUT)
            while now.reserved_usd != "0" and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                now = await admin.budgets.GetBudget(request, timeout=TIMEOUT)
            assert now.reserved_usd == "0", "the call's hold was not settled within 3 s"
            assert now.spent_usd == "0.0000675"

            # The same call again does not fit what is left: refused before anything goes upstream.
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await gateway.stub.Chat(count_this_call(budget_id), timeout=TIMEOUT)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            info = error_info(caught.value)
            assert info is not None
            assert info.reason == "BUDGET_EXHAUSTED"
            assert info.domain == "llmgateway.v1"
            assert info.metadata["budget_id"] == budget_id

            await admin.budgets.DeleteBudget(
                budget_service_pb2.DeleteBudgetRequest(id=budget_id), timeout=TIMEOUT
            )
            deleted = True
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await admin.budgets.GetBudget(request, timeout=TIMEOUT)
            assert caught.value.code() == grpc.StatusCode.NOT_FOUND
            info = error_info(caught.value)
            assert info is not None
            assert info.reason == "BUDGET_NOT_FOUND"
        finally:
            if not deleted:  # the test failed half-way: leave nothing behind
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await admin.budgets.DeleteBudget(
                        budget_service_pb2.DeleteBudgetRequest(id=budget_id), timeout=TIMEOUT
                    )


def test_sync_budgets_stub(address: str, api_key: str, admin_key: str | None) -> None:
    # The sync connection has the stub too, on the same channel and key; its errors carry details.
    with connect(address, admin_key or api_key) as gateway:
        with pytest.raises(grpc.RpcError) as caught:
            gateway.budgets.GetBudget(
                budget_service_pb2.GetBudgetRequest(id=f"py-none-{secrets.token_hex(6)}"), timeout=TIMEOUT
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        info = error_info(caught.value)
        assert info is not None
        assert info.reason == "BUDGET_NOT_FOUND"
