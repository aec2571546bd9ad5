"""Budget counters on SQLite: reservations all or none, replaced by the exact cost at the end,
expiring when their process is gone, and holding the limit when processes reserve at once."""

from __future__ import annotations

import multiprocessing
import random
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from llm_gateway.budgets import Period, window
from llm_gateway.budgets.counters import BudgetRefusedError, Charge, each
from llm_gateway.budgets.sqlite import migrate, reserve, settle, standings

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=10)
DAY = window(Period.DAY, ZoneInfo("UTC"), NOW)


def open_db(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    connection.execute("PRAGMA journal_mode = WAL")
    migrate(connection)
    return connection


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    connection = open_db(tmp_path / "ledger.db")
    yield connection
    connection.close()


def charge(budget_id: str, limit: str) -> Charge:
    return Charge(budget_id, Decimal(limit), DAY)


def test_a_call_reserves_then_settles_to_its_exact_cost(db: sqlite3.Connection) -> None:
    team = charge("team", "1.00")
    after = reserve(db, "c1", each([team], Decimal("0.40")), now=NOW, expires_at=LATER)
    assert [(s.spent, s.reserved, s.remaining) for s in after] == [
        (Decimal(0), Decimal("0.40"), Decimal("0.60"))
    ]
    settle(db, [("c1", each([team], Decimal("0.000123456789")))])
    (now,) = standings(db, [team], now=NOW)
    assert (now.spent, now.reserved) == (Decimal("0.000123456789"), Decimal(0))


def test_a_call_that_does_not_fit_one_budget_reserves_nothing(db: sqlite3.Connection) -> None:
    roomy, tight = charge("a-roomy", "10"), charge("b-tight", "0.50")
    reserve(db, "c1", each([roomy, tight], Decimal("0.30")), now=NOW, expires_at=LATER)
    with pytest.raises(BudgetRefusedError) as refused:
        reserve(db, "c2", each([roomy, tight], Decimal("0.30")), now=NOW, expires_at=LATER)
    standing = refused.value.standing
    assert (standing.charge.budget_id, standing.spent, standing.reserved) == (
        "b-tight",
        Decimal(0),
        Decimal("0.30"),
    )
    assert [s.reserved for s in standings(db, [roomy, tight], now=NOW)] == [Decimal("0.30")] * 2
    # Exactly to the limit fits; one unit of the last digit more does not.
    reserve(db, "c3", each([tight], Decimal("0.20")), now=NOW, expires_at=LATER)
    with pytest.raises(BudgetRefusedError):
        reserve(db, "c4", each([tight], Decimal("0.000000000000000001")), now=NOW, expires_at=LATER)


def test_a_fallback_raises_its_own_reservation_without_counting_it_twice(db: sqlite3.Connection) -> None:
    team = charge("team", "1.00")
    reserve(db, "c1", each([team], Decimal("0.60")), now=NOW, expires_at=LATER)
    reserve(db, "c1", each([team], Decimal("0.90")), now=NOW, expires_at=LATER)  # 0.60 + 0.90 would not fit
    assert standings(db, [team], now=NOW)[0].reserved == Decimal("0.90")
    with pytest.raises(BudgetRefusedError):
        reserve(db, "c1", each([team], Decimal("1.01")), now=NOW, expires_at=LATER)
    assert standings(db, [team], now=NOW)[0].reserved == Decimal("0.90")


def test_a_dead_process_reservation_expires_but_a_late_settlement_still_counts(
    db: sqlite3.Connection,
) -> None:
    team = charge("team", "1.00")
    reserve(db, "dead", each([team], Decimal("0.80")), now=NOW, expires_at=NOW + timedelta(seconds=30))
    with pytest.raises(BudgetRefusedError):
        reserve(db, "c2", each([team], Decimal("0.50")), now=NOW + timedelta(seconds=29), expires_at=LATER)
    reserve(db, "c2", each([team], Decimal("0.50")), now=NOW + timedelta(seconds=30), expires_at=LATER)
    settle(db, [("dead", each([team], Decimal("0.25"))), ("c2", each([team], Decimal("0.5")))])
    assert standings(db, [team], now=LATER)[0].spent == Decimal("0.75")


def test_each_window_has_its_own_spend(db: sqlite3.Connection) -> None:
    today, tomorrow = (
        charge("team", "1"),
        Charge("team", Decimal(1), window(Period.DAY, ZoneInfo("UTC"), DAY.end)),
    )
    reserve(db, "c1", each([today], Decimal("1")), now=NOW, expires_at=LATER)
    settle(db, [("c1", each([today], Decimal("1")))])
    with pytest.raises(BudgetRefusedError):
        reserve(db, "c2", each([today], Decimal("0.01")), now=NOW, expires_at=LATER)
    reserve(
        db, "c3", each([tomorrow], Decimal("0.99")), now=DAY.end, expires_at=DAY.end + timedelta(minutes=5)
    )


LIMIT = Decimal("0.05")
WORST = Decimal("0.001")  # about 50 worst cases fit


def _calls(path: str, worker: int, threads: int, calls: int, seed: int) -> tuple[list[Decimal], list[str]]:
    """One process: `threads` threads, each reserving, then settling at a random exact cost up to
    the worst case. Returns the costs settled and what was wrong with any refusal."""
    settled: list[Decimal] = []
    problems: list[str] = []
    lock = threading.Lock()
    team = Charge("team", LIMIT, DAY)

    def run(thread: int) -> None:
        rng = random.Random(seed * 1000 + worker * 100 + thread)
        connection = open_db(Path(path))
        for i in range(calls):
            call_id = f"w{worker}-t{thread}-{i}"
            try:
                reserve(connection, call_id, each([team], WORST), now=NOW, expires_at=LATER)
            except BudgetRefusedError as refused:
                s = refused.standing
                if s.spent + s.reserved + WORST <= LIMIT:
                    with lock:
                        problems.append(f"{call_id} refused with {s.spent} spent and {s.reserved} reserved")
                continue
            cost = (WORST * Decimal(rng.randint(1, 10**6)) / Decimal(10**6)).quantize(Decimal("1e-12"))
            settle(connection, [(call_id, each([team], cost))])
            with lock:
                settled.append(cost)
        connection.close()

    workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return settled, problems


def test_processes_reserving_at_once_never_overspend(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    open_db(path).close()
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = list(pool.map(_calls, [str(path)] * 2, [0, 1], [8, 8], [25, 25], [7, 7]))
    settled = [cost for costs, _ in results for cost in costs]
    problems = [p for _, found in results for p in found]
    db = open_db(path)
    (final,) = standings(db, [Charge("team", LIMIT, DAY)], now=NOW)
    assert not problems, problems[:5]
    assert final.reserved == 0
    assert final.spent == sum(settled, Decimal(0))  # exact: every settled cost counted once
    assert final.spent <= LIMIT
    # The limit was the only thing that stopped calls: more calls than 50 fit (costs are below the
    # worst case), and the spend came within one worst case of the limit.
    assert len(settled) > LIMIT / WORST
    assert LIMIT - final.spent < WORST
