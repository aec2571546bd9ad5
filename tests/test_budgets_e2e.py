"""Budgets across real `llm-gateway serve` processes sharing the ledger's SQLite file, with alert
webhooks received by a real HTTP server on loopback that checks every signature.

On SQLite and on a real PostgreSQL server:

1. 200 concurrent calls (unary and streamed) through two workers against a budget whose limit is
   50 calls' worst case: the settled spend is exactly what the served calls cost and never passes
   the limit, every refusal happened when spent + reserved + the call's worst case would have, and
   each threshold crossed reaches the webhook exactly once.
2. The webhook receiver is down while alerts are raised and the gateway is killed meanwhile: a new
   gateway process delivers every alert from the outbox once the receiver is back, each once.
3. A worker killed in the middle of a stream leaves its reservation behind: it holds the budget
   (a new process refuses a call that does not fit beside it) until `reservation_ttl`, then frees
   it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import grpc
from aiohttp import web

from llm_gateway.budgets.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, verify
from llmgateway.v1 import (
    budget_service_pb2,
    chat_pb2,
    gateway_service_pb2_grpc,
)
from tests.budget_calls import ADMIN, admin, create_budget, load_call, one_call, settled, worst_case
from tests.conftest import error_details, gateway_process, read_event
from tests.ledger_traffic import own_channel
from tests.ledgers import backend_url  # noqa: F401 (a fixture)

SECRET = "whsec-0123456789abcdef"


@dataclass
class Receiver:
    """A webhook receiver: checks each delivery's signature, and keeps the alerts by event id."""

    port: int = 0
    alerts: dict[str, dict[str, object]] = field(default_factory=dict)
    deliveries: Counter[str] = field(default_factory=Counter)
    bad_signatures: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not verify(SECRET.encode(), request.headers.get(SIGNATURE_HEADER, ""), body, now=time.time()):
            self.bad_signatures += 1
            return web.Response(status=401)
        event_id = request.headers[EVENT_ID_HEADER]
        self.deliveries[event_id] += 1
        self.alerts[event_id] = json.loads(body)
        return web.Response(status=204)

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        app = web.Application()
        app.router.add_post("/hooks/budget", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self.port = runner.addresses[0][1]
        try:
            yield
        finally:
            await runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/budget"

    async def wait_for(self, count: int, within: float) -> None:
        deadline = time.monotonic() + within
        while len(self.alerts) < count and time.monotonic() < deadline:  # noqa: ASYNC110 (a deadline too)
            await asyncio.sleep(0.05)


def config(receiver_url: str, extra: str = "", ledger: Path | None = None, url: str = "") -> str:
    """The gateway's config; with `ledger`, a ledger that several gateway processes share in turn
    (at `url`, or a SQLite file in `ledger`)."""
    shared = ""
    if ledger is not None:
        url = url or f"sqlite:///{ledger}/ledger.db"
        shared = f'[ledger]\nurl = "{url}"\nspool_dir = "{ledger}/spool"\n'
    return (
        shared
        + f"""
[[auth.keys]]
name = "ops"
key = "{ADMIN}"
role = "admin"

[providers.mock]
chunk_delay = 0.001

[budgets]
refresh_interval = 0.2
{extra}

[[webhooks]]
name = "budget-hook"
url = "{receiver_url}"
secret = "{SECRET}"
"""
    )


async def test_two_hundred_concurrent_calls_through_two_workers_never_overspend(
    tmp_path: Path,
    backend_url: str,  # noqa: F811
) -> None:
    receiver = Receiver()
    (tmp_path / "serve").mkdir()
    async with receiver.serving():
        toml = config(receiver.url, ledger=tmp_path, url=backend_url)
        async with gateway_process(tmp_path / "serve", toml, "--workers", "2") as gateway:
            channels = [own_channel(gateway.address) for _ in range(16)]
            try:
                stubs = [gateway_service_pb2_grpc.GatewayServiceStub(c) for c in channels]
                worst = await worst_case(stubs[0])
                limit = worst * 50
                budgets = await create_budget(channels[0], limit, ["25", "50", "75"])
                await asyncio.sleep(0.6)  # every worker reads the new budget within refresh_interval
                outcomes = await asyncio.gather(*(one_call(stubs[n % len(stubs)], n) for n in range(200)))
                shown = await settled(budgets)
            finally:
                for channel in channels:
                    await channel.close(None)
            workers = Counter(line["worker"] for line in gateway.log_lines() if line.get("event") == "access")
        served = [o.cost for o in outcomes if o.cost is not None]
        refusals = [o.refusal for o in outcomes if o.refusal is not None]
        spent = sum(served, Decimal(0))
        # Exact: the budget's spend is what the callers were told their calls cost, to the last digit.
        assert Decimal(shown.spent_usd) == spent
        assert spent <= limit
        # Every refusal was due: what was spent and held then, plus the call's worst case, was over.
        for refusal in refusals:
            assert refusal["budget_id"] == "load"
            assert Decimal(refusal["requested_usd"]) == worst
            held = Decimal(refusal["spent_usd"]) + Decimal(refusal["reserved_usd"])
            assert held + worst > limit, refusal
        assert len(served) >= 50
        assert refusals, "a budget of 50 worst cases must turn some of 200 calls away"
        assert len(workers) == 2, f"calls per worker: {workers}"
        # One webhook per threshold crossed, each once, signed; none for a threshold not reached.
        crossed = [t for t in ("25", "50", "75") if limit * Decimal(t) / 100 <= spent]
        await receiver.wait_for(len(crossed), within=10)
        await asyncio.sleep(0.5)  # anything sent twice would arrive by now
        assert receiver.bad_signatures == 0
        assert sorted(str(a["threshold_percent"]) for a in receiver.alerts.values()) == sorted(crossed)
        assert set(receiver.deliveries.values()) == {1}
        for alert in receiver.alerts.values():
            assert alert["type"] == "cost_alert"
            assert (alert["budget_id"], alert["project_id"], alert["period"]) == ("load", "load", "month")
            assert Decimal(str(alert["threshold"])) <= Decimal(str(alert["current_cost"])) <= spent
    print(
        f"\n{backend_url.partition(':')[0]}: {len(served)} served, {len(refusals)} refused; "
        f"spent {spent} of {limit} "
        f"({spent / limit:.1%}); calls per worker {dict(workers)}"
    )


async def test_alerts_wait_in_the_outbox_for_a_receiver_that_is_down_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    receiver = Receiver()
    async with receiver.serving():
        pass  # its port, now closed: deliveries are refused until it serves again
    toml = config(receiver.url, ledger=tmp_path)
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    async with gateway_process(tmp_path / "first", toml) as gateway:
        channel = own_channel(gateway.address)
        stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        limit = await worst_case(stub) * 4
        budgets = await create_budget(channel, limit, ["10", "20", "30"])
        for n in range(3):
            await stub.Chat(load_call(n), metadata=admin())
        for _ in range(100):
            listed = await budgets.ListBudgetAlerts(
                budget_service_pb2.ListBudgetAlertsRequest(budget_id="load"), metadata=admin()
            )
            if len(listed.alerts) == 3:
                break
            await asyncio.sleep(0.05)
        raised = {a.id for a in listed.alerts}
        assert len(raised) == 3
        await channel.close(None)
        # Killed once every alert has failed to reach the receiver at least once. A retry the kill
        # cuts short keeps its lease (30 s) in the outbox, so the next process may wait that long.
        for _ in range(200):
            tried = {
                line.get("event_id") for line in gateway.log_lines() if line.get("event") == "webhook_failed"
            }
            if raised <= tried:
                break
            await asyncio.sleep(0.02)
        gateway.process.send_signal(signal.SIGKILL)
        await gateway.process.wait()
    log = [line for line in gateway.log_lines() if line.get("event") == "webhook_failed"]
    assert log, "the sender tried the receiver while it was down"
    assert not any(receiver.url.split("//")[1] in json.dumps(line) for line in log)
    async with receiver.serving(), gateway_process(tmp_path / "second", toml):
        await receiver.wait_for(3, within=45)
        await asyncio.sleep(0.5)
    assert set(receiver.alerts) == raised
    assert set(receiver.deliveries.values()) == {1}
    assert receiver.bad_signatures == 0


async def test_a_killed_workers_reservation_expires(tmp_path: Path, backend_url: str) -> None:  # noqa: F811
    toml = config(
        "http://127.0.0.1:9/unused", "reservation_ttl = 5", ledger=tmp_path, url=backend_url
    ).replace("chunk_delay = 0.001", "chunk_delay = 0.5")
    (tmp_path / "first").mkdir()
    (tmp_path / "second").mkdir()
    async with gateway_process(tmp_path / "first", toml) as gateway:
        channel = own_channel(gateway.address)
        stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        worst = await worst_case(stub)
        budgets = await create_budget(channel, worst * Decimal("1.5"), [])
        stream = stub.ChatStream(chat_pb2.ChatStreamRequest(request=load_call(1)), metadata=admin())
        first = await read_event(stream)
        assert first is not None
        assert first.HasField("start")
        held = await budgets.GetBudget(budget_service_pb2.GetBudgetRequest(id="load"), metadata=admin())
        assert Decimal(held.reserved_usd) == worst
        gateway.process.send_signal(signal.SIGKILL)
        await gateway.process.wait()
        killed_at = time.monotonic()
        await channel.close(None)
    async with gateway_process(tmp_path / "second", toml) as gateway:
        channel = own_channel(gateway.address)
        stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        # The dead call's hold still counts: a second worst case does not fit beside it.
        try:
            await stub.Chat(load_call(2), metadata=admin())
            refused = None
        except grpc.aio.AioRpcError as err:
            refused = error_details(err)
        assert time.monotonic() - killed_at < 4.5, "the second gateway took too long to start"
        assert refused is not None
        assert Decimal(refused.info.metadata["reserved_usd"]) == worst
        await asyncio.sleep(max(0.0, 5.2 - (time.monotonic() - killed_at)))
        reply = await stub.Chat(load_call(3), metadata=admin())
        assert Decimal(reply.cost.total) > 0
        await channel.close(None)
