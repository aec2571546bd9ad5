"""A budget held by three gateway processes sharing one PostgreSQL (budgets and ledger) and one
Redis: 300 concurrent calls spread over the replicas against a budget of 50 calls' worst case."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal
from pathlib import Path

import asyncpg
import grpc

from llm_gateway.ledger.sql import TABLE
from tests.budget_calls import ADMIN, create_budget, one_call, settled, worst_case
from tests.fleet import three_gateways
from tests.postgres import cluster
from tests.redis_server import redis_server


async def test_three_replicas_never_overspend_a_budget_and_keep_every_call_once(tmp_path: Path) -> None:
    url = cluster().new_database()
    with redis_server() as redis:
        toml = f"""
[fleet]
redis_url = "{redis.url}"
[ledger]
url = "{url}"
flush_interval = 0.05
[budgets]
refresh_interval = 0.2
[[auth.keys]]
name = "ops"
key = "{ADMIN}"
role = "admin"
[providers.mock]
chunk_delay = 0.001
"""
        async with three_gateways(tmp_path, toml) as fleet:
            worst = await worst_case(fleet.stubs[0])
            limit = worst * 50
            async with grpc.aio.insecure_channel(
                fleet.gateways[0].address
            ) as channel:  # created on one replica, read by all three
                budgets = await create_budget(channel, limit, ["50"])
                await asyncio.sleep(0.6)  # past every replica's refresh_interval
                outcomes = await asyncio.gather(
                    *(one_call(fleet.stubs[n % 3], n, request_id=f"fleet-{n}") for n in range(300))
                )
                shown = await settled(budgets)
            # Read while the replicas run: their ledger writers are a moment behind the replies.
            watcher = await asyncpg.connect(url)
            try:
                rows: list[asyncpg.Record] = []
                for _ in range(200):
                    rows = await watcher.fetch(f"SELECT request_id, status, cost_total FROM {TABLE}")
                    if len(rows) >= 300:
                        break
                    await asyncio.sleep(0.05)
            finally:
                await watcher.close()
            per_replica = [
                sum(1 for line in g.log_lines() if line.get("event") == "access") for g in fleet.gateways
            ]
        served = {o.request_id: o.cost for o in outcomes if o.cost is not None}
        refusals = [o.refusal for o in outcomes if o.refusal is not None]
        spent = sum(served.values(), Decimal(0))
    print(
        f"\nthree replicas, one budget of {limit} USD: {len(served)} served, {len(refusals)} refused, "
        f"spent {spent} ({spent / limit:.1%}); calls per replica {per_replica}"
    )
    assert Decimal(shown.spent_usd) == spent  # what the callers were told, to the last digit
    assert spent <= limit
    assert len(served) >= 50
    assert len(refusals) == 300 - len(served)
    for refusal in refusals:  # each refusal was due when it was made
        assert Decimal(refusal["spent_usd"]) + Decimal(refusal["reserved_usd"]) + worst > limit, refusal
    assert all(n >= 50 for n in per_replica), per_replica  # every replica took its share
    # The ledger has every call once: the served at the cost their callers were told, the refused.
    ids = Counter(row["request_id"] for row in rows)
    assert set(ids) == {f"fleet-{n}" for n in range(300)}
    assert set(ids.values()) == {1}
    for row in rows:
        if row["request_id"] in served:
            assert (row["status"], Decimal(row["cost_total"])) == ("OK", served[row["request_id"]])
        else:
            assert row["status"] == "RESOURCE_EXHAUSTED", dict(row)
