"""Budget counters on SQLite: money as exact decimal text, summed in Python inside one
`BEGIN IMMEDIATE` transaction, which serializes the processes sharing the file."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal

from llm_gateway.budgets.counters import ZERO, BudgetRefusedError, Charge, Hold, Spend, Standing, summed
from llm_gateway.ledger.rows import EXACT

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS budget_spend (
        budget_id TEXT NOT NULL,
        window_start TEXT NOT NULL,
        spent TEXT NOT NULL,
        PRIMARY KEY (budget_id, window_start)
    ) STRICT""",
    """CREATE TABLE IF NOT EXISTS budget_reservations (
        call_id TEXT NOT NULL,
        budget_id TEXT NOT NULL,
        window_start TEXT NOT NULL,
        amount TEXT NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (call_id, budget_id)
    ) STRICT""",
    "CREATE INDEX IF NOT EXISTS budget_reservations_by_window "
    "ON budget_reservations (budget_id, window_start)",
    "CREATE INDEX IF NOT EXISTS budget_reservations_by_expiry ON budget_reservations (expires_at)",
)


def migrate(connection: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        connection.execute(statement)


def reserve(
    connection: sqlite3.Connection,
    call_id: str,
    holds: Sequence[Hold],
    *,
    now: datetime,
    expires_at: datetime,
) -> list[Standing]:
    """Reserves every one of `holds`, or none: raises `BudgetRefusedError` with the first budget
    (by id) its amount does not fit. Reserving again for the same call and budget replaces the
    reservation (a fallback to a dearer model). Returns the standings after it, in budget order."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute("DELETE FROM budget_reservations WHERE expires_at <= ?", (now.timestamp(),))
        standings = []
        for charge, amount in sorted(holds, key=lambda h: h.charge.budget_id):
            standing = _standing(connection, charge, excluding=call_id, now=now)
            if not standing.fits(amount):
                raise BudgetRefusedError(standing, amount)
            standings.append(Standing(charge, standing.spent, EXACT.add(standing.reserved, amount)))
        connection.executemany(
            "INSERT INTO budget_reservations (call_id, budget_id, window_start, amount, expires_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (call_id, budget_id) DO UPDATE SET "
            "amount = excluded.amount, expires_at = excluded.expires_at",
            [
                (call_id, c.budget_id, c.window_key, str(amount), expires_at.timestamp())
                for c, amount in holds
            ],
        )
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return standings


def settle(
    connection: sqlite3.Connection,
    settlements: Iterable[tuple[str, Sequence[Hold]]],
    then: Callable[[list[Spend]], object] | None = None,
) -> list[Spend]:
    """For each (call id, what it costs each budget): releases the call's reservations and adds
    the amounts to each budget's spend in the window it reserved in, in one transaction. Returns
    each changed budget's spend before and after; `then` gets them inside the transaction (the
    alerts their thresholds raise are written in it, so they are raised exactly once)."""
    calls, added = summed(settlements)
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.executemany("DELETE FROM budget_reservations WHERE call_id = ?", [(c,) for c in calls])
        changes = []
        for charge, amount in added:
            row = connection.execute(
                "SELECT spent FROM budget_spend WHERE budget_id = ? AND window_start = ?",
                (charge.budget_id, charge.window_key),
            ).fetchone()
            before = Decimal(row[0]) if row else ZERO
            connection.execute(
                "INSERT INTO budget_spend (budget_id, window_start, spent) VALUES (?, ?, ?) "
                "ON CONFLICT (budget_id, window_start) DO UPDATE SET spent = excluded.spent",
                (charge.budget_id, charge.window_key, str(EXACT.add(before, amount))),
            )
            changes.append(Spend(charge, before, EXACT.add(before, amount)))
        if then is not None:
            then(changes)
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return changes


def standings(connection: sqlite3.Connection, charges: Sequence[Charge], *, now: datetime) -> list[Standing]:
    """Where each budget stands now (live reservations only), read in one snapshot."""
    connection.execute("BEGIN")
    try:
        found = [_standing(connection, c, excluding="", now=now) for c in charges]
    finally:
        connection.execute("COMMIT")
    return found


def _standing(
    connection: sqlite3.Connection, charge: Charge, *, excluding: str, now: datetime | None = None
) -> Standing:
    row = connection.execute(
        "SELECT spent FROM budget_spend WHERE budget_id = ? AND window_start = ?",
        (charge.budget_id, charge.window_key),
    ).fetchone()
    amounts = connection.execute(
        "SELECT amount FROM budget_reservations WHERE budget_id = ? AND window_start = ? AND call_id != ? "
        "AND expires_at > ?",
        (charge.budget_id, charge.window_key, excluding, now.timestamp() if now else 0.0),
    ).fetchall()
    reserved = ZERO
    for (amount,) in amounts:
        reserved = EXACT.add(reserved, Decimal(amount))
    return Standing(charge, Decimal(row[0]) if row else ZERO, reserved)
