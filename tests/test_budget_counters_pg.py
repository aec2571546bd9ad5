"""Budget counters on a real PostgreSQL server: the same rules as on SQLite, with forty sessions
reserving against one budget at once."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from llm_gateway.budgets import Period, window
from llm_gateway.budgets.counters import BudgetRefusedError, Charge, each
from llm_gateway.budgets.postgres import migrate, reserve, settle, standings, sweep
from tests.postgres import cluster

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=10)
DAY = window(Period.DAY, ZoneInfo("Europe/Paris"), NOW)


@pytest.fixture
async def pool() -> AsyncIterator[asyncpg.Pool]:
    url = cluster().new_database()
    async with asyncpg.create_pool(url, min_size=1, max_size=40) as opened:
        async with opened.acquire() as connection:
            await migrate(connection)
            await migrate(connection)  # again: nothing changes
        yield opened


async def test_reserve_settle_refuse_expire(pool: asyncpg.Pool) -> None:
    roomy, tight = Charge("a-roomy", Decimal(10), DAY), Charge("b-tight", Decimal("0.50"), DAY)
    async with pool.acquire() as db:
        await reserve(db, "c1", each([roomy, tight], Decimal("0.30")), now=NOW, expires_at=LATER)
        with pytest.raises(BudgetRefusedError) as refused:
            await reserve(db, "c2", each([tight, roomy], Decimal("0.30")), now=NOW, expires_at=LATER)
        assert refused.value.standing.charge.budget_id == "b-tight"
        assert refused.value.standing.reserved == Decimal("0.30")
        assert [s.reserved for s in await standings(db, [roomy, tight], now=NOW)] == [Decimal("0.30")] * 2
        # A fallback raises the call's own hold; it is not counted twice.
        await reserve(db, "c1", each([roomy, tight], Decimal("0.50")), now=NOW, expires_at=LATER)
        with pytest.raises(BudgetRefusedError):
            await reserve(db, "c3", each([tight], Decimal("0.000000000000000001")), now=NOW, expires_at=LATER)
        await settle(db, [("c1", each([roomy, tight], Decimal("0.000123456789012345")))])
        after = await standings(db, [roomy, tight], now=NOW)
        assert [(s.spent, s.reserved) for s in after] == [(Decimal("0.000123456789012345"), Decimal(0))] * 2
        # A dead process's hold stops counting when it expires, and is swept.
        await reserve(
            db, "dead", each([tight], Decimal("0.49")), now=NOW, expires_at=NOW + timedelta(seconds=30)
        )
        with pytest.raises(BudgetRefusedError):
            await reserve(
                db, "c4", each([tight], Decimal("0.4")), now=NOW + timedelta(seconds=29), expires_at=LATER
            )
        await reserve(
            db, "c4", each([tight], Decimal("0.4")), now=NOW + timedelta(seconds=30), expires_at=LATER
        )
        assert await sweep(db, LATER) == 1  # c4's own hold expires at LATER too
        # The next local day (Paris) starts afresh.
        tomorrow = Charge("b-tight", Decimal("0.50"), window(Period.DAY, ZoneInfo("Europe/Paris"), DAY.end))
        await reserve(
            db,
            "c5",
            each([tomorrow], Decimal("0.50")),
            now=DAY.end,
            expires_at=DAY.end + timedelta(minutes=1),
        )


LIMIT, WORST = Decimal("0.05"), Decimal("0.001")


async def test_forty_sessions_at_once_never_overspend(pool: asyncpg.Pool) -> None:
    team = Charge("team", LIMIT, DAY)
    settled: list[Decimal] = []
    problems: list[str] = []

    async def caller(n: int) -> None:
        rng = random.Random(n)
        for i in range(10):
            call_id = f"s{n}-{i}"
            async with pool.acquire() as db:
                try:
                    await reserve(db, call_id, each([team], WORST), now=NOW, expires_at=LATER)
                except BudgetRefusedError as refused:
                    s = refused.standing
                    if s.spent + s.reserved + WORST <= LIMIT:
                        problems.append(f"{call_id} refused with {s.spent} spent, {s.reserved} reserved")
                    continue
            await asyncio.sleep(rng.random() / 100)  # the call itself
            cost = (WORST * Decimal(rng.randint(1, 10**6)) / Decimal(10**6)).quantize(Decimal("1e-12"))
            async with pool.acquire() as db:
                await settle(db, [(call_id, each([team], cost))])
            settled.append(cost)

    await asyncio.gather(*(caller(n) for n in range(40)))
    async with pool.acquire() as db:
        (final,) = await standings(db, [team], now=NOW)
    assert not problems, problems[:5]
    assert final.reserved == 0
    assert final.spent == sum(settled, Decimal(0))
    assert final.spent <= LIMIT
    assert len(settled) > LIMIT / WORST
    assert LIMIT - final.spent < WORST


async def test_a_settlement_retried_after_its_commit_adds_nothing_again(pool: asyncpg.Pool) -> None:
    """The gateway retries a settlement whose commit it did not hear of (the connection dropped as
    it committed): the call is already settled, and its cost is not counted twice."""
    budget = Charge("retried", Decimal(10), DAY)
    async with pool.acquire() as db:
        await reserve(db, "r1", each([budget], Decimal("0.5")), now=NOW, expires_at=LATER)
        first = await settle(db, [("r1", each([budget], Decimal("0.25")))])
        again = await settle(
            db, [("r1", each([budget], Decimal("0.25"))), ("r2", each([budget], Decimal("0.5")))]
        )
        (standing,) = await standings(db, [budget], now=NOW)
    assert [(s.before, s.after) for s in first] == [(Decimal(0), Decimal("0.25"))]
    assert [(s.before, s.after) for s in again] == [(Decimal("0.25"), Decimal("0.75"))]  # r2 only
    assert (standing.spent, standing.reserved) == (Decimal("0.75"), Decimal(0))
