"""`budgets.when_store_down`: what a gateway does with budgeted calls while the ledger's PostgreSQL
is down, on a real server stopped and started by the test."""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal

import grpc
import pytest

from llmgateway.v1 import budget_service_pb2, budget_service_pb2_grpc, catalog_pb2, gateway_service_pb2_grpc
from tests.budget_calls import ADMIN, admin, load_call
from tests.conftest import error_details, running_gateway
from tests.postgres import PostgresCluster


async def cost_of_a_call(stub: gateway_service_pb2_grpc.GatewayServiceAsyncStub) -> Decimal:
    reply = await stub.Chat(load_call(), metadata=admin(), timeout=5)
    return Decimal(reply.cost.total)


async def test_allow_lets_calls_through_within_the_local_allowance_and_counts_them_once_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The allowance is three calls' worst case: with the database down, three calls are served, the
    fourth is refused at once naming the budget; once the database is back, the budget's spend
    has every served call, those of the outage included, to the last digit."""
    server = PostgresCluster()
    try:
        url = server.new_database()
        async with running_gateway(f'[ledger]\nurl = "{url}"\nwrite_timeout = 0.5\n') as probe:
            estimate = await probe.stub.EstimateCost(
                catalog_pb2.EstimateCostRequest(request=load_call()), metadata=admin()
            )
        worst = Decimal(estimate.estimates[0].worst_case_cost.total)
        toml = f"""
[ledger]
url = "{url}"
write_timeout = 0.5
[[auth.keys]]
name = "ops"
key = "{ADMIN}"
role = "admin"
[budgets]
when_store_down = "allow"
local_allowance_usd = "{worst * 3}"
[[budgets.limits]]
id = "load"
scope = "project:load"
limit_usd = "10"
"""
        async with running_gateway(toml) as gw:
            costs = [await cost_of_a_call(gw.stub)]
            # The database stops as the first call's settlement is written: whether it committed
            # or not, it is counted once (a retry of a committed one adds nothing).
            await asyncio.to_thread(server.stop)
            for _ in range(3):
                costs.append(await cost_of_a_call(gw.stub))
            started = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await cost_of_a_call(gw.stub)
            refused_in = time.monotonic() - started
            details = error_details(refused.value)
            assert (details.code, details.info.reason) == (
                grpc.StatusCode.UNAVAILABLE,
                "BUDGET_STORE_UNAVAILABLE",
            )
            assert details.info.metadata["budget_id"] == "load"
            assert Decimal(details.info.metadata["local_allowance_usd"]) == worst * 3
            assert refused_in < 0.5, refused_in  # within the retry interval: no database call at all
            assert gw.server.runtime.budgets is not None
            assert gw.server.runtime.budgets.store_down_calls == {"allowed": 3, "refused": 1}

            await asyncio.to_thread(server.start)
            budgets = budget_service_pb2_grpc.BudgetServiceStub(gw.channel)
            spent = Decimal(-1)
            for _ in range(100):  # the queued settlements are retried until the database is back
                try:
                    shown = await budgets.GetBudget(
                        budget_service_pb2.GetBudgetRequest(id="load"), metadata=admin(), timeout=2
                    )
                    spent = Decimal(shown.spent_usd)
                except grpc.aio.AioRpcError:
                    pass
                if spent == sum(costs):
                    break
                await asyncio.sleep(0.1)
            assert spent == sum(costs)
            await asyncio.sleep(1.0)  # past the retry interval: the next call tries the database
            costs.append(await cost_of_a_call(gw.stub))
    finally:
        server.destroy()
    events = [
        r.msg["event"] for r in caplog.records if isinstance(r.msg, dict) and r.levelno >= logging.WARNING
    ]
    assert events.count("budget_store_unreachable") == 1
    assert "budget_store_recovered" in events
    assert "postgresql://" not in caplog.text
