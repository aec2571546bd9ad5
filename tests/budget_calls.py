"""Calls against a budget, shared by the budget tests that run real gateway processes: the same
call every time (so the same worst case), the budget created through the API, and what each call
came to."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal

import grpc

from llmgateway.v1 import (
    budget_service_pb2,
    budget_service_pb2_grpc,
    budgets_pb2,
    catalog_pb2,
    chat_pb2,
    gateway_service_pb2_grpc,
)
from tests.conftest import chat, error_details

ADMIN = "admin-key-0123456789"
WORDS = " ".join(f"w{i}" for i in range(400))


def admin() -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {ADMIN}"),)


def load_call(n: int = 0) -> chat_pb2.ChatRequest:
    """The same call every time (`n` aside): the same worst case."""
    del n
    return chat(
        "mock:echo",
        WORDS,
        caller=chat_pb2.CallerMetadata(project="load"),
        generation=chat_pb2.GenerationConfig(max_tokens=500),
    )


async def worst_case(stub: gateway_service_pb2_grpc.GatewayServiceAsyncStub) -> Decimal:
    reply = await stub.EstimateCost(catalog_pb2.EstimateCostRequest(request=load_call(100)), metadata=admin())
    return Decimal(reply.estimates[0].worst_case_cost.total)


async def create_budget(
    channel: grpc.aio.Channel, limit: Decimal, thresholds: list[str], budget_id: str = "load"
) -> budget_service_pb2_grpc.BudgetServiceAsyncStub:
    budgets = budget_service_pb2_grpc.BudgetServiceStub(channel)
    await budgets.CreateBudget(
        budget_service_pb2.CreateBudgetRequest(
            budget=budgets_pb2.Budget(
                id=budget_id,
                scope="project:load",
                limit_usd=str(limit),
                period=budgets_pb2.BUDGET_PERIOD_MONTH,
                thresholds=thresholds,
            )
        ),
        metadata=admin(),
    )
    return budgets


async def settled(
    budgets: budget_service_pb2_grpc.BudgetServiceAsyncStub, budget_id: str = "load"
) -> budgets_pb2.Budget:
    """The budget once no call holds anything (every worker has settled its calls)."""
    for _ in range(200):
        shown = await budgets.GetBudget(budget_service_pb2.GetBudgetRequest(id=budget_id), metadata=admin())
        if Decimal(shown.reserved_usd) == 0:
            return shown
        await asyncio.sleep(0.05)
    raise AssertionError(f"reservations still held: {shown}")


@dataclass
class Outcome:
    request_id: str = ""
    cost: Decimal | None = None  # served: what the caller was told it cost
    refusal: dict[str, str] | None = None


async def one_call(
    stub: gateway_service_pb2_grpc.GatewayServiceAsyncStub, n: int, request_id: str = ""
) -> Outcome:
    """Call `n` (odd: unary, even: streamed), with `request_id` as its x-request-id if given."""
    metadata = admin() + ((("x-request-id", request_id),) if request_id else ())
    try:
        if n % 2:
            reply = await stub.Chat(load_call(n), metadata=metadata)
            return Outcome(request_id, cost=Decimal(reply.cost.total))
        cost = None
        async for event in stub.ChatStream(
            chat_pb2.ChatStreamRequest(request=load_call(n)), metadata=metadata
        ):
            if event.HasField("finish"):
                cost = Decimal(event.finish.cost.total)
        assert cost is not None
        return Outcome(request_id, cost=cost)
    except grpc.aio.AioRpcError as err:
        details = error_details(err)
        assert details.info.reason == "BUDGET_EXHAUSTED", details
        return Outcome(request_id, refusal=dict(details.info.metadata))
