"""Every replica's worker processes share the ledger's PostgreSQL: each keeps its connections
within `ledger.pool_size` for the ledger and as many for budgets, named for what holds them."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import asyncpg
import grpc

from llm_gateway.ledger.sql import TABLE
from llmgateway.v1 import gateway_service_pb2_grpc
from tests.conftest import chat, gateway_process, running_gateway
from tests.postgres import PostgresCluster, cluster


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
    # Each of the process's pools: the ledger's writer, the budgets', and the batch runner's.
    assert set(held) == {"llm-gateway ledger", "llm-gateway budgets", "llm-gateway batches"}, held
    assert all(1 <= n <= 2 for n in held.values()), held
    assert kept == 200


async def test_three_replicas_keep_every_call_through_a_postgres_restart(tmp_path: Path) -> None:
    """Three gateway processes on one ledger database under load; PostgreSQL is stopped for 1.5 s
    and started again. Every call a caller was answered for is in the ledger once, by its request
    id: the processes spooled what they could not write and wrote it when the database was back."""
    server = PostgresCluster()
    try:
        url = server.new_database()
        toml = f'[ledger]\nurl = "{url}"\nflush_interval = 0.05\nwrite_timeout = 0.5\n'
        for name in "abc":
            (tmp_path / name).mkdir()
        answered: list[str] = []
        async with (
            gateway_process(tmp_path / "a", toml) as a,
            gateway_process(tmp_path / "b", toml) as b,
            gateway_process(tmp_path / "c", toml) as c,
        ):
            channels = [grpc.aio.insecure_channel(g.address) for g in (a, b, c)]
            stubs = [gateway_service_pb2_grpc.GatewayServiceStub(ch) for ch in channels]
            stop_at = time.monotonic() + 4.0
            numbers = itertools.count()

            async def caller(stub: gateway_service_pb2_grpc.GatewayServiceAsyncStub) -> None:
                while time.monotonic() < stop_at:
                    request_id = f"restart-{next(numbers)}"
                    await stub.Chat(chat("mock:echo"), metadata=(("x-request-id", request_id),), timeout=5)
                    answered.append(request_id)

            async def outage() -> None:
                await asyncio.sleep(1.0)
                await asyncio.to_thread(server.stop)
                await asyncio.sleep(1.5)
                await asyncio.to_thread(server.start)

            try:
                await asyncio.gather(outage(), *(caller(stubs[n % 3]) for n in range(6)))
            finally:
                for channel in channels:
                    await channel.close(None)
            kept: list[str] = []
            watcher = await asyncpg.connect(url)
            try:
                for _ in range(300):  # the spools are written back within seconds of the restart
                    kept = [r["request_id"] for r in await watcher.fetch(f"SELECT request_id FROM {TABLE}")]
                    if len(kept) >= len(answered):
                        break
                    await asyncio.sleep(0.1)
            finally:
                await watcher.close()
            events = [[line.get("event") for line in g.log_lines()] for g in (a, b, c)]
    finally:
        server.destroy()
    print(f"\nPostgreSQL restarted under load: {len(answered)} calls answered, {len(kept)} kept")
    assert len(answered) > 100
    assert sorted(kept) == sorted(answered)  # each once, none lost
    for logged in events:  # each process met the outage, and saw the database back
        assert logged.index("ledger_available") > logged.index("ledger_unavailable")
