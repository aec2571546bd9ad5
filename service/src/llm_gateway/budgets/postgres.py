"""Budget counters on PostgreSQL: money as NUMERIC, each budget's spend row locked (`FOR UPDATE`,
in budget-id order, so two calls never wait on each other crosswise) while its reservations are
summed and the new one added: the processes and replicas sharing the database take turns per
budget, not for the whole database."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    import asyncpg
    from asyncpg.pool import PoolConnectionProxy

    # A connection of its own or one lent by a pool.
    Db: TypeAlias = asyncpg.Connection[Any] | PoolConnectionProxy[Any]

from llm_gateway.budgets.counters import BudgetRefusedError, Charge, Hold, Spend, Standing, summed
from llm_gateway.ledger.rows import EXACT

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS budget_spend (
        budget_id text NOT NULL,
        window_start timestamptz NOT NULL,
        spent numeric NOT NULL DEFAULT 0,
        PRIMARY KEY (budget_id, window_start)
    )""",
    """CREATE TABLE IF NOT EXISTS budget_reservations (
        call_id text NOT NULL,
        budget_id text NOT NULL,
        window_start timestamptz NOT NULL,
        amount numeric NOT NULL,
        expires_at timestamptz NOT NULL,
        PRIMARY KEY (call_id, budget_id)
    )""",
    "CREATE INDEX IF NOT EXISTS budget_reservations_by_window "
    "ON budget_reservations (budget_id, window_start)",
    "CREATE INDEX IF NOT EXISTS budget_reservations_by_expiry ON budget_reservations (expires_at)",
    # The calls settled lately: a settlement retried after its commit was not acknowledged (the
    # connection dropped as it committed) finds its call here and adds nothing again.
    """CREATE TABLE IF NOT EXISTS budget_settled (
        call_id text PRIMARY KEY,
        settled_at timestamptz NOT NULL DEFAULT now()
    )""",
    "CREATE INDEX IF NOT EXISTS budget_settled_by_time ON budget_settled (settled_at)",
)
# Settled call ids are kept this long (far longer than any retry), pruned now and then.
_SETTLED_KEPT = "2 days"
_PRUNE_EVERY = 100


async def migrate(connection: Db) -> None:
    async with connection.transaction():
        # One process at a time creates the tables (CREATE ... IF NOT EXISTS races otherwise).
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext('llm_gateway.budgets'))")
        for statement in SCHEMA:
            await connection.execute(statement)


async def reserve(
    connection: Db,
    call_id: str,
    holds: Sequence[Hold],
    *,
    now: datetime,
    expires_at: datetime,
) -> list[Standing]:
    """As `sqlite.reserve`: all of `holds` or none; `BudgetRefusedError` names the first budget
    (by id) its amount does not fit; a second reservation for the same call replaces the first."""
    ordered = sorted(holds, key=lambda h: h.charge.budget_id)
    async with connection.transaction():
        standings = []
        for charge, amount in ordered:
            standing = await _locked(connection, charge, excluding=call_id, now=now)
            if not standing.fits(amount):
                raise BudgetRefusedError(standing, amount)
            standings.append(Standing(charge, standing.spent, EXACT.add(standing.reserved, amount)))
        await connection.executemany(
            "INSERT INTO budget_reservations (call_id, budget_id, window_start, amount, expires_at) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (call_id, budget_id) DO UPDATE SET "
            "amount = excluded.amount, expires_at = excluded.expires_at",
            [(call_id, c.budget_id, c.window.start, amount, expires_at) for c, amount in ordered],
        )
        # Expired holds of this budget's window go as they are passed over (and `sweep` for all).
        await connection.executemany(
            "DELETE FROM budget_reservations WHERE budget_id = $1 AND window_start = $2 AND expires_at <= $3",
            [(c.budget_id, c.window.start, now) for c, _ in ordered],
        )
    return standings


async def settle(connection: Db, settlements: Iterable[tuple[str, Sequence[Hold]]]) -> list[Spend]:
    """As `sqlite.settle`: releases each call's reservations and adds what it cost to the spend of
    every budget it reserved against, in one transaction; returns the spend before and after. A
    call settled before (a retry of a settlement whose commit was not acknowledged) adds nothing."""
    settlements = list(settlements)
    changes = []
    async with connection.transaction():
        rows = await connection.fetch(
            "INSERT INTO budget_settled (call_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING "
            "RETURNING call_id",
            [call_id for call_id, _ in settlements],
        )
        fresh = {row[0] for row in rows}
        calls, added = summed((call_id, holds) for call_id, holds in settlements if call_id in fresh)
        if random.randrange(_PRUNE_EVERY) == 0:
            await connection.execute(
                f"DELETE FROM budget_settled WHERE settled_at < now() - interval '{_SETTLED_KEPT}'"
            )
        await connection.execute("DELETE FROM budget_reservations WHERE call_id = ANY($1::text[])", calls)
        # In budget order, like reservations take their locks.
        for charge, amount in added:
            after = await connection.fetchval(
                "INSERT INTO budget_spend (budget_id, window_start, spent) VALUES ($1, $2, $3) "
                "ON CONFLICT (budget_id, window_start) DO UPDATE SET spent = budget_spend.spent + "
                "excluded.spent RETURNING spent",
                charge.budget_id,
                charge.window.start,
                amount,
            )
            changes.append(Spend(charge, Decimal(after) - amount, Decimal(after)))
    return changes


async def standings(connection: Db, charges: Sequence[Charge], *, now: datetime) -> list[Standing]:
    """Where each budget stands now (live reservations only), in one snapshot."""
    async with connection.transaction(isolation="repeatable_read", readonly=True):
        return [await _read(connection, c, excluding="", now=now) for c in charges]


async def sweep(connection: Db, now: datetime) -> int:
    """Removes every expired reservation; returns how many."""
    result = await connection.execute("DELETE FROM budget_reservations WHERE expires_at <= $1", now)
    return int(result.split()[-1])


async def _locked(connection: Db, charge: Charge, *, excluding: str, now: datetime) -> Standing:
    """The budget's standing with its spend row locked until the transaction ends (created at 0
    first, so there is always a row to lock)."""
    await connection.execute(
        "INSERT INTO budget_spend (budget_id, window_start, spent) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
        charge.budget_id,
        charge.window.start,
    )
    await connection.execute(
        "SELECT 1 FROM budget_spend WHERE budget_id = $1 AND window_start = $2 FOR UPDATE",
        charge.budget_id,
        charge.window.start,
    )
    return await _read(connection, charge, excluding=excluding, now=now)


async def _read(connection: Db, charge: Charge, *, excluding: str, now: datetime) -> Standing:
    row = await connection.fetchrow(
        "SELECT coalesce((SELECT spent FROM budget_spend WHERE budget_id = $1 AND window_start = $2), 0), "
        "coalesce((SELECT sum(amount) FROM budget_reservations WHERE budget_id = $1 AND window_start = $2 "
        "AND call_id != $3 AND expires_at > $4), 0)",
        charge.budget_id,
        charge.window.start,
        excluding,
        now,
    )
    assert row is not None
    return Standing(charge, Decimal(row[0]), Decimal(row[1]))
