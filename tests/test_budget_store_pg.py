"""The budget store on a real PostgreSQL server: budgets kept through the API, alerts raised once
while twenty stores (as twenty worker processes) settle at once, an outbox two senders share without
sending an item twice, and counters rebuilt from the ledger's calls to the last digit."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from llm_gateway.budgets import Period, parse_scope, window
from llm_gateway.budgets.counters import Charge, Spend, each
from llm_gateway.budgets.model import Alert, Budget, Quota, budget_alert
from llm_gateway.budgets.postgres_store import PostgresBudgetStore
from llm_gateway.budgets.store import BudgetExistsError, RaiseAlerts
from llm_gateway.domain.results import Usage
from llm_gateway.ledger import open_store, parse_url
from llm_gateway.ledger.rows import encode
from tests.ledgers import T0, record
from tests.postgres import cluster

UTC_ZONE = ZoneInfo("UTC")
NOW = datetime.fromtimestamp(T0, UTC)
LATER = NOW + timedelta(minutes=10)
DAY = window(Period.DAY, UTC_ZONE, NOW)
_alert_ids = itertools.count(1)


@pytest.fixture
def url() -> str:
    return cluster().new_database()


@pytest.fixture
async def store(url: str) -> AsyncIterator[PostgresBudgetStore]:
    opened = PostgresBudgetStore(url, timeout=5.0)
    await opened.migrate()
    try:
        yield opened
    finally:
        await opened.close()


def alert(budget_id: str = "", dedup: str = "", at: float = 1000.0) -> Alert:
    n = next(_alert_ids)
    return Alert(f"alert_{n}", dedup or f"call:c{n}", budget_id, at, {"type": "cost_alert", "n": n})


def alerts_of(budgets: Sequence[Budget], clock: float) -> RaiseAlerts:
    """A `RaiseAlerts` built as `BudgetKeeper._alerts_of` builds it."""
    by_id = {b.id: b for b in budgets}

    def raise_alerts(spends: list[Spend]) -> list[Alert]:
        raised: list[Alert] = []
        for spend in spends:
            budget = by_id.get(spend.charge.budget_id)
            if budget is not None:
                raised += [
                    budget_alert(budget, spend.charge.window, t, spend.after, clock)
                    for t in budget.crossed(spend)
                ]
        return raised

    return raise_alerts


def none_raised(spends: list[Spend]) -> list[Alert]:
    return []


async def test_migrate_twice_and_from_four_processes_at_once(url: str) -> None:
    stores = [PostgresBudgetStore(url, timeout=5.0) for _ in range(4)]
    try:
        await asyncio.gather(*(s.migrate() for s in stores))
        await stores[0].migrate()  # again: nothing changes
        assert await stores[1].budgets() == []
        assert await stores[2].alerts("", 0, 10) == []
        assert await stores[3].claim(0.0, 10, 60.0) == []
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_budgets_created_read_updated_and_deleted(store: PostgresBudgetStore) -> None:
    team = Budget(
        "team",
        parse_scope("tag:team=search"),
        Decimal("12.50"),
        Period.DAY,
        (Decimal(50), Decimal("80.5")),
        "api",
        1741964966.123456,
        1741964966.123456,
    )
    upper = Budget("Zeta", parse_scope("user:bob"), Decimal("0.000001"), Period.NONE, (), "api", 1.5, 2.5)
    await store.create_budget(team)
    await store.create_budget(upper)
    with pytest.raises(BudgetExistsError):
        await store.create_budget(team)
    assert await store.budgets() == [upper, team]  # by code point: capitals first

    changed = Budget(
        "team", parse_scope("gateway"), Decimal(3), Period.MONTH, (Decimal(100),), "api", 9.0, 10.25
    )
    assert await store.update_budget(changed)
    assert not await store.update_budget(Budget("missing", parse_scope("gateway"), Decimal(1), Period.DAY))
    # The creation time is kept; everything else is the update's.
    assert await store.budgets() == [upper, replace(changed, created_at=team.created_at)]

    # Deleting a budget removes its counters too.
    charge = Charge("team", Decimal(3), DAY)
    await store.reserve("c1", each([charge], Decimal("0.5")), now=NOW, expires_at=LATER)
    await store.reserve("c2", each([charge], Decimal("0.25")), now=NOW, expires_at=LATER)
    assert await store.settle([("c1", each([charge], Decimal("0.125")))], none_raised, [], []) == []
    (standing,) = await store.standings([charge], now=NOW)
    assert (standing.spent, standing.reserved) == (Decimal("0.125"), Decimal("0.25"))
    assert await store.delete_budget("team")
    assert not await store.delete_budget("team")
    (standing,) = await store.standings([charge], now=NOW)
    assert (standing.spent, standing.reserved) == (Decimal(0), Decimal(0))
    assert await store.budgets() == [upper]


LIMIT = Decimal("1.00")
COST = Decimal("0.011")  # 100 calls: 1.10, past every threshold


async def test_twenty_processes_settling_raise_each_alert_once(url: str) -> None:
    budget = Budget(
        "team", parse_scope("key:team-a"), LIMIT, Period.DAY, (Decimal(50), Decimal(80), Decimal(100))
    )
    stores = [PostgresBudgetStore(url, timeout=5.0) for _ in range(20)]
    raise_alerts = alerts_of([budget], T0)
    charge = budget.charge(UTC_ZONE, NOW)
    # The same call alert offered by two processes: kept once as well.
    twice = alert(dedup="call:expensive")
    try:
        await asyncio.gather(*(s.migrate() for s in stores))

        async def process(n: int, store: PostgresBudgetStore) -> list[Alert]:
            raised = []
            for i in range(5):
                offered = [alert(dedup="call:expensive")] if i == 2 and n in (3, 4) else []
                raised += await store.settle(
                    [(f"p{n}-{i}", each([charge], COST))], raise_alerts, offered, ["ops", "audit"]
                )
            return raised

        raised = [
            a for found in await asyncio.gather(*(process(n, s) for n, s in enumerate(stores))) for a in found
        ]
        (standing,) = await stores[0].standings([charge], now=NOW)
        stored = await stores[0].alerts("", 0, 100)
        items = await stores[1].claim(T0 + 1, 100, 60.0)
    finally:
        await asyncio.gather(*(s.close() for s in stores))

    assert standing.spent == COST * 100
    budget_alerts = sorted(
        (a for a in raised if a.budget_id), key=lambda a: Decimal(a.payload["threshold_percent"])
    )
    assert [a.payload["threshold_percent"] for a in budget_alerts] == ["50", "80", "100"]
    assert len({a.dedup for a in raised}) == len(raised) == 4
    assert twice.dedup in {a.dedup for a in raised}
    # Each alert was raised by the settlement that crossed it: the spend it reports is past it.
    for raised_alert in budget_alerts:
        assert Decimal(raised_alert.payload["current_cost"]) >= Decimal(raised_alert.payload["threshold"])
    assert {s.alert.id for s in stored} == {a.id for a in raised}
    assert [s.seq for s in stored] == sorted((s.seq for s in stored), reverse=True)
    assert {s.alert.id: s.alert.payload for s in stored} == {a.id: a.payload for a in raised}
    # One outbox item per alert and webhook, its body the alert's exactly.
    assert sorted((i.event_id, i.webhook) for i in items) == sorted(
        (a.id, name) for a in raised for name in ("ops", "audit")
    )
    bodies = {a.id: a.body for a in raised}
    assert all(
        i.body == bodies[i.event_id] and i.event_type == "cost_alert" and i.attempts == 0 for i in items
    )


async def test_two_senders_never_claim_the_same_item(url: str) -> None:
    stores = [PostgresBudgetStore(url, timeout=5.0) for _ in range(2)]
    try:
        await stores[0].migrate()
        await stores[0].settle([], none_raised, [alert() for _ in range(60)], ["a", "b", "c"])
        # Both pools connected first (nothing is due at 0), so neither sender starts late.
        assert await asyncio.gather(*(s.claim(0.0, 1, 60.0) for s in stores)) == [[], []]
        claims: list[list[int]] = [[], []]

        async def sender(n: int) -> None:
            while batch := await stores[n].claim(2000.0, 7, 60.0):
                claims[n] += [item.id for item in batch]
                await asyncio.sleep(0)

        await asyncio.gather(sender(0), sender(1))
        async with asyncpg.create_pool(url, min_size=1, max_size=1) as pool:
            total = await pool.fetchval("SELECT count(*) FROM webhook_outbox")
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    both = claims[0] + claims[1]
    assert total == 180
    assert len(both) == len(set(both)) == 180
    assert claims[0]
    assert claims[1]  # both senders had a share


async def test_delivered_failed_and_given_up(store: PostgresBudgetStore, url: str) -> None:
    t = 5000.0
    await store.settle([], none_raised, [alert(at=t), alert(at=t + 1)], ["ops"])
    first, second = await store.claim(t + 1, 10, 30.0)
    assert (first.created_at, second.created_at) == (t, t + 1)
    assert await store.claim(t + 1, 10, 30.0) == []  # leased
    # A lease that runs out (the sender died) makes the item due again.
    assert [i.id for i in await store.claim(t + 31, 10, 30.0)] == [first.id, second.id]

    await store.failed(first.id, t + 32, t + 100, "HTTP 503")
    await store.failed(second.id, t + 32, None, "ConnectionRefusedError")  # given up for good
    assert await store.claim(t + 99, 10, 30.0) == []
    (again,) = await store.claim(t + 100, 10, 30.0)
    assert (again.id, again.attempts) == (first.id, 1)
    await store.delivered(first.id, t + 101)
    assert await store.claim(t + 10_000, 10, 30.0) == []

    async with asyncpg.create_pool(url, min_size=1, max_size=1) as pool:
        rows = await pool.fetch(
            "SELECT attempts, delivered_at, gave_up, last_error, lease_until FROM webhook_outbox ORDER BY id"
        )
    assert [tuple(r) for r in rows] == [
        (2, t + 101, False, "HTTP 503", 0.0),
        (1, None, True, "ConnectionRefusedError", 0.0),
    ]


async def test_alerts_newest_first_in_pages(store: PostgresBudgetStore) -> None:
    offered = [alert("a") for _ in range(5)] + [alert("b") for _ in range(3)]
    # An alert raised again (same dedup key) is not kept twice.
    repeated = Alert("alert_again", offered[0].dedup, "a", 1.0, {})
    assert await store.settle([], none_raised, offered, []) == offered
    assert await store.settle([], none_raised, [repeated], []) == []

    page = await store.alerts("", 0, 3)
    assert [s.alert for s in page] == offered[::-1][:3]
    page = await store.alerts("", page[-1].seq, 3)
    assert [s.alert for s in page] == offered[::-1][3:6]
    assert [s.alert for s in await store.alerts("a", 0, 10)] == offered[:5][::-1]
    newest_a = (await store.alerts("a", 0, 1))[0]
    assert [s.alert for s in await store.alerts("a", newest_a.seq, 2)] == offered[2:4][::-1]
    assert await store.alerts("b", (await store.alerts("b", 0, 10))[-1].seq, 10) == []


TINY = Decimal("0.000123456789012345")


async def test_rebuild_sums_the_ledgers_calls_exactly(store: PostgresBudgetStore, url: str) -> None:
    start = DAY.start.timestamp()
    end = DAY.end.timestamp()
    calls = [
        record(at=start, cost=TINY, tags={"team": "search"}),  # the window's first instant counts
        record(at=T0, cost=TINY * 3, key="team-b", user="bob", tags={"team": "search"}),
        record(at=T0, cost=Decimal("1.5"), project="ads", tenant="other", usage=Usage(100, 23)),
        record(at=T0, cost=None),  # never priced: a request, no money, no tokens
        record(at=T0, cost=Decimal(7), dry_run=True),  # a dry run costs nothing
        record(at=end - 1e-6, cost=TINY, tags={"team": "ads"}),
        record(at=end, cost=Decimal(100)),  # the next day
        record(at=start - 1e-6, cost=Decimal(100)),  # the day before
    ]
    ledger = open_store(parse_url(url), timeout=5.0)
    try:
        await ledger.migrate()
        await ledger.insert([encode(c) for c in calls])
    finally:
        await ledger.close()

    def budget(budget_id: str, scope: str) -> tuple[Budget, Charge]:
        made = Budget(budget_id, parse_scope(scope), Decimal(1000), Period.DAY)
        return made, made.charge(UTC_ZONE, NOW)

    budgets = [
        budget("all", "gateway"),
        budget("key-a", "key:team-a"),
        budget("alice", "user:alice"),
        budget("ads", "project:ads"),
        budget("acme", "tenant:acme"),
        budget("search", "tag:team=search"),
        budget("nobody", "user:nobody"),
    ]
    quotas = [
        (q, Charge(q.id, Decimal(q.limit), window(q.period, UTC_ZONE, NOW)))
        for q in (Quota("team-a", "requests", Period.DAY, 100), Quota("team-a", "tokens", Period.DAY, 10**6))
    ]
    # A counter that drifted: rebuilt to what the calls say, and what it said is reported.
    await store.settle([("old", each([budgets[0][1]], Decimal("42.42")))], none_raised, [], [])

    rebuilt = await store.rebuild(budgets, quotas)

    a_tokens = Decimal(15 + 123 + 15)  # the default usage is 10 + 5 tokens
    expected = {
        "all": TINY * 5 + Decimal("1.5"),
        "key-a": TINY * 2 + Decimal("1.5"),
        "alice": TINY * 2 + Decimal("1.5"),
        "ads": Decimal("1.5"),
        "acme": TINY * 5,
        "search": TINY * 4,
        "nobody": Decimal(0),
        quotas[0][0].id: Decimal(4),
        quotas[1][0].id: a_tokens,
    }
    assert {r.budget_id: r.after for r in rebuilt} == expected
    assert [r.budget_id for r in rebuilt] == [b.id for b, _ in budgets] + [q.id for q, _ in quotas]
    assert {r.budget_id: r.before for r in rebuilt} == {name: Decimal(0) for name in expected} | {
        "all": Decimal("42.42")
    }
    assert all(r.window_start == DAY.start for r in rebuilt)
    standings = await store.standings([c for _, c in budgets] + [c for _, c in quotas], now=NOW)
    assert [s.spent for s in standings] == list(expected.values())
