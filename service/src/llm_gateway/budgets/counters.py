"""Budget counters: what each budget has spent in its current window and what calls in flight
have reserved, kept in a database every worker process shares, changed only in transactions.

A call reserves its worst-case cost against every budget that covers it, all or none, before its
first upstream request; it fits when, for each budget, spent + reserved + its amount <= limit. When
it ends, its reservations are replaced by its exact cost. A reservation whose process died expires
at `expires_at`; the cost of a call that outlives its reservation is still added when it settles
(the settling process names the budgets), so spend is never lost, only the hold is.

This module holds the SQLite counters: money as exact decimal text summed in Python inside one
`BEGIN IMMEDIATE` transaction, which serializes the processes sharing the file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from llm_gateway.budgets.periods import Window

ZERO = Decimal(0)

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


@dataclass(frozen=True, slots=True)
class Charge:
    """One budget a call counts against: its id, limit and current window."""

    budget_id: str
    limit: Decimal
    window: Window

    @property
    def window_key(self) -> str:
        return self.window.start.isoformat()


@dataclass(frozen=True, slots=True)
class Standing:
    """Where a budget stands in its window."""

    charge: Charge
    spent: Decimal
    reserved: Decimal

    @property
    def remaining(self) -> Decimal:
        """What is left for new calls: the limit less what is spent and reserved (never below 0)."""
        return max(self.charge.limit - self.spent - self.reserved, ZERO)


class BudgetRefusedError(Exception):
    """The call's amount does not fit `standing`'s budget (nothing was reserved anywhere)."""

    def __init__(self, standing: Standing, amount: Decimal) -> None:
        super().__init__(f"budget {standing.charge.budget_id}: {amount} does not fit")
        self.standing = standing
        self.amount = amount


def migrate(connection: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        connection.execute(statement)


def reserve(
    connection: sqlite3.Connection,
    call_id: str,
    charges: Sequence[Charge],
    amount: Decimal,
    *,
    now: datetime,
    expires_at: datetime,
) -> list[Standing]:
    """Reserves `amount` against every one of `charges`, or none: raises `BudgetRefusedError` with the
    first budget (by id) it does not fit. Reserving again for the same call and budget raises the
    reservation to `amount` (a fallback to a dearer model). Returns the standings after it."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        connection.execute("DELETE FROM budget_reservations WHERE expires_at <= ?", (now.timestamp(),))
        standings = []
        for charge in sorted(charges, key=lambda c: c.budget_id):
            standing = _standing(connection, charge, excluding=call_id)
            if standing.spent + standing.reserved + amount > charge.limit:
                raise BudgetRefusedError(standing, amount)
            standings.append(Standing(charge, standing.spent, standing.reserved + amount))
        connection.executemany(
            "INSERT INTO budget_reservations (call_id, budget_id, window_start, amount, expires_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (call_id, budget_id) DO UPDATE SET "
            "amount = excluded.amount, expires_at = excluded.expires_at",
            [(call_id, c.budget_id, c.window_key, str(amount), expires_at.timestamp()) for c in charges],
        )
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return standings


def settle(
    connection: sqlite3.Connection, settlements: Iterable[tuple[str, Sequence[Charge], Decimal]]
) -> None:
    """For each (call id, its charges, its exact cost): releases the call's reservations and adds
    the cost to each budget's spend in the window it reserved in, in one transaction."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        for call_id, charges, cost in settlements:
            connection.execute("DELETE FROM budget_reservations WHERE call_id = ?", (call_id,))
            if not cost:
                continue
            for charge in charges:
                row = connection.execute(
                    "SELECT spent FROM budget_spend WHERE budget_id = ? AND window_start = ?",
                    (charge.budget_id, charge.window_key),
                ).fetchone()
                spent = (Decimal(row[0]) if row else ZERO) + cost
                connection.execute(
                    "INSERT INTO budget_spend (budget_id, window_start, spent) VALUES (?, ?, ?) "
                    "ON CONFLICT (budget_id, window_start) DO UPDATE SET spent = excluded.spent",
                    (charge.budget_id, charge.window_key, str(spent)),
                )
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


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
    return Standing(charge, Decimal(row[0]) if row else ZERO, sum((Decimal(a) for (a,) in amounts), ZERO))
