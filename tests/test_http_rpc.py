"""UsageService and BudgetService through the HTTP door as JSON: each answer equals, in protobuf's
JSON mapping, what the gRPC method answers the same key; errors come back in the HTTP door's shape
with the reason and the field at fault."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from llmgateway.v1 import (
    budget_service_pb2,
    budget_service_pb2_grpc,
    budgets_pb2,
    usage_pb2,
    usage_service_pb2_grpc,
)
from tests.conftest import RunningGateway, chat, running_gateway

ADMIN, TEAM = "rpc-admin-key-0123456789ab", "rpc-team-key-0123456789abc"
KEYS = f"""
[[auth.keys]]
name = "ops"
key = "{ADMIN}"
role = "admin"

[[auth.keys]]
name = "team"
key = "{TEAM}"
"""


def grpc_key(key: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {key}"),)


def as_json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


async def post(
    http: aiohttp.ClientSession, gw: RunningGateway, method: str, body: object, key: str = TEAM
) -> tuple[int, dict[str, Any]]:
    async with http.post(
        f"{gw.http_url}/api/llmgateway.v1.{method}",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        return response.status, await response.json()


async def test_usage_over_http_is_what_the_grpc_method_answers() -> None:
    async with running_gateway(KEYS) as gw, aiohttp.ClientSession() as http:
        for text in ("one", "two", "three"):
            await gw.stub.Chat(chat("mock:echo", text), metadata=grpc_key(TEAM))
        await gw.stub.Chat(chat("mock:echo", "theirs"), metadata=grpc_key(ADMIN))
        start, end = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
        start.FromDatetime(datetime.now(UTC) - timedelta(hours=1))
        end.FromDatetime(datetime.now(UTC) + timedelta(hours=1))
        period = usage_pb2.UsageFilter(start_time=start, end_time=end)
        asked = usage_pb2.GetUsageSummaryRequest(filter=period, group_by=["provider"])
        usage = usage_service_pb2_grpc.UsageServiceStub(gw.channel)
        async with asyncio.timeout(10):
            while True:  # the ledger's writer flushes in the background
                seen = await usage.GetUsageSummary(asked, metadata=grpc_key(ADMIN))
                if seen.total.requests == 4:
                    break
                await asyncio.sleep(0.05)
        over_grpc = await usage.GetUsageSummary(asked, metadata=grpc_key(TEAM))
        status, over_http = await post(http, gw, "UsageService/GetUsageSummary", as_json(asked))
        assert status == 200
        assert over_http == as_json(over_grpc)
        assert over_http["total"]["requests"] == "3"  # the team key's own calls only
        # The admin sees every call; records page the same way.
        _, everyone = await post(http, gw, "UsageService/GetUsageSummary", as_json(asked), key=ADMIN)
        assert everyone["total"]["requests"] == "4"
        records = usage_pb2.ListUsageRecordsRequest(
            filter=usage_pb2.UsageFilter(start_time=start), page_size=2
        )
        status, page = await post(http, gw, "UsageService/ListUsageRecords", as_json(records))
        assert status == 200
        assert len(page["records"]) == 2
        assert page["next_page_token"]
        # Another key's calls are refused, as over gRPC.
        status, refused = await post(
            http,
            gw,
            "UsageService/GetUsageSummary",
            {**as_json(asked), "filter": {**as_json(asked)["filter"], "api_key": "ops"}},
        )
        assert status == 403
        assert refused["error"]["code"] == "usage_access_denied"


async def test_budgets_over_http_are_what_the_grpc_methods_answer() -> None:
    async with running_gateway(KEYS) as gw, aiohttp.ClientSession() as http:
        budget = {
            "budget": {
                "id": "team-month",
                "scope": "key:team",
                "limit_usd": "25",
                "period": "BUDGET_PERIOD_MONTH",
            }
        }
        status, created = await post(http, gw, "BudgetService/CreateBudget", budget, key=ADMIN)
        assert status == 200, created
        assert created["id"] == "team-month"
        assert created["limit_usd"] == "25"
        await gw.stub.Chat(chat("mock:echo", "spend a little"), metadata=grpc_key(TEAM))
        assert gw.server.runtime.budgets is not None
        await gw.server.runtime.budgets.flush()  # its cost settled: both answers see the same spend
        budgets = budget_service_pb2_grpc.BudgetServiceStub(gw.channel)
        listed = await budgets.ListBudgets(budget_service_pb2.ListBudgetsRequest(), metadata=grpc_key(TEAM))
        status, over_http = await post(http, gw, "BudgetService/ListBudgets", {})
        assert status == 200
        assert over_http == as_json(listed)
        assert [b["id"] for b in over_http["budgets"]] == ["team-month"]
        # A key that is not an admin may not create one; the reason and field come back.
        status, refused = await post(http, gw, "BudgetService/CreateBudget", budget)
        assert (status, refused["error"]["code"]) == (403, "admin_required")
        status, bad = await post(
            http,
            gw,
            "BudgetService/CreateBudget",
            {"budget": {"id": "x", "scope": "nobody", "limit_usd": "1"}},
            key=ADMIN,
        )
        assert (status, bad["error"]["code"], bad["error"]["param"]) == (
            400,
            "invalid_request",
            "budget.scope",
        )
        # An empty body is the empty message.
        async with http.post(
            f"{gw.http_url}/api/llmgateway.v1.BudgetService/ListBudgets",
            headers={"Authorization": f"Bearer {TEAM}"},
        ) as response:
            assert response.status == 200
            assert (await response.json()) == as_json(listed)
        fetched = await budgets.GetBudget(
            budget_service_pb2.GetBudgetRequest(id="team-month"), metadata=grpc_key(ADMIN)
        )
        assert isinstance(fetched, budgets_pb2.Budget)


async def test_what_the_json_route_refuses() -> None:
    async with running_gateway(KEYS) as gw, aiohttp.ClientSession() as http:
        url = f"{gw.http_url}/api/llmgateway.v1.UsageService/GetUsageSummary"
        team = {"Authorization": f"Bearer {TEAM}"}
        async with http.post(url, data=b"{not json", headers=team) as response:
            assert response.status == 400
            assert (await response.json())["error"]["code"] == "invalid_request"
        async with http.post(url, json={"colour": "blue"}, headers=team) as response:
            assert response.status == 400
            assert "colour" in (await response.json())["error"]["message"]
        async with http.post(url, json={}) as response:  # no key
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "missing_api_key"
        for path in ("llmgateway.v1.UsageService/Nope", "llmgateway.v1.GatewayService/Chat"):
            async with http.post(f"{gw.http_url}/api/{path}", json={}, headers=team) as response:
                assert response.status == 404
                error = (await response.json())["error"]
            assert error["code"] == "method_not_found"
            assert error["metadata"]["method"] == path
        async with http.post(url, json={}, headers=team) as response:  # the period is required
            assert response.status == 400
            assert (await response.json())["error"]["param"] == "filter.start_time"
