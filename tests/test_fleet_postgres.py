"""Every replica's worker processes share the ledger's PostgreSQL: each keeps its connections
within `ledger.pool_size` for the ledger and as many for budgets, named for what holds them."""

from __future__ import annotations

import asyncio

import asyncpg

from llm_gateway.ledger.sql import TABLE
from tests.conftest import chat, running_gateway
from tests.postgres import cluster


async def test_a_process_keeps_to_its_pool_size_under_load_and_names_its_connections() -> None:
    url = cluster().new_database()
    toml = f"""
[ledger]
url = "{url}"
pool_size = 2
flush_interval = 0.01
batch_size = 1
[[budgets.limits]]
id = "everything"
scope = "gateway"
limit_usd = "1000"
"""
    async with running_gateway(toml) as gw:
        await asyncio.gather(*(gw.stub.Chat(chat("mock:echo", f"call {n}")) for n in range(200)))
        watcher = await asyncpg.connect(url)
        try:
            rows = await watcher.fetch(
                "SELECT application_name, count(*) AS n FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE 'llm-gateway%' "
                "GROUP BY application_name"
            )
            kept = 0
            for _ in range(100):  # the writer is a moment behind the replies
                kept = await watcher.fetchval(f"SELECT count(*) FROM {TABLE}")
                if kept == 200:
                    break
                await asyncio.sleep(0.05)
        finally:
            await watcher.close()
    held = {row["application_name"]: row["n"] for row in rows}
    assert set(held) == {"llm-gateway ledger", "llm-gateway budgets"}, held
    assert all(1 <= n <= 2 for n in held.values()), held
    assert kept == 200
