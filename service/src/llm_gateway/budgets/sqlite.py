"""Budget counters on SQLite: money as exact decimal text, added in Python inside one
`BEGIN IMMEDIATE` transaction, which serializes the processes sharing the file.

Each budget window's row keeps what is spent and what calls in flight hold (`reserved`), so a
reservation reads and writes one row per budget whatever the number of calls in flight; the
reservation rows say which call holds what, so that settling, expiry and a second reservation of
the same call take exactly their own amount back off the total.
"""

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
        reserved TEXT NOT NULL DEFAULT '0',
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
        _release(
            connection,
            "DELETE FROM budget_reservations WHERE expires_at <= ? RETURNING budget_id, window_start, amount",
            (now.timestamp(),),
        )
        own = dict(
            connection.execute(
                "SELECT budget_id, amount FROM budget_reservations WHERE call_id = ?", (call_id,)
            ).fetchall()
        )
        standings = []
        for charge, amount in sorted(holds, key=lambda h: h.charge.budget_id):
            spent, reserved = _row(connection, charge)
            previous = own.get(charge.budget_id)
            others = reserved if previous is None else EXACT.subtract(reserved, Decimal(previous))
            standing = Standing(charge, spent, others)
            if not standing.fits(amount):
                raise BudgetRefusedError(standing, amount)
            standings.append(Standing(charge, spent, EXACT.add(others, amount)))
        connection.executemany(
            "INSERT INTO budget_spend (budget_id, window_start, spent, reserved) VALUES (?, ?, '0', ?) "
            "ON CONFLICT (budget_id, window_start) DO UPDATE SET reserved = excluded.reserved",
            [(s.charge.budget_id, s.charge.window_key, str(s.reserved)) for s in standings],
        )
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
        for call_id in calls:
            _release(
                connection,
                "DELETE FROM budget_reservations WHERE call_id = ? RETURNING budget_id, window_start, amount",
                (call_id,),
            )
        changes = []
        for charge, amount in added:
            before, reserved = _row(connection, charge)
            after = EXACT.add(before, amount)
            connection.execute(
                "INSERT INTO budget_spend (budget_id, window_start, spent, reserved) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (budget_id, window_start) DO UPDATE SET spent = excluded.spent",
                (charge.budget_id, charge.window_key, str(after), str(reserved)),
            )
            changes.append(Spend(charge, before, after))
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
        found = []
        for charge in charges:
            spent, reserved = _row(connection, charge)
            # Holds past their expiry that no reservation has swept away yet no longer count.
            for (amount,) in connection.execute(
                "SELECT amount FROM budget_reservations WHERE budget_id = ? AND window_start = ? "
                "AND expires_at <= ?",
                (charge.budget_id, charge.window_key, now.timestamp()),
            ):
                reserved = EXACT.subtract(reserved, Decimal(amount))
            found.append(Standing(charge, spent, reserved))
    finally:
        connection.execute("COMMIT")
    return found


def _row(connection: sqlite3.Connection, charge: Charge) -> tuple[Decimal, Decimal]:
    """A budget window's spent and reserved totals (0 and 0 before its first call)."""
    return _totals(connection, charge.budget_id, charge.window_key)


def _totals(connection: sqlite3.Connection, budget_id: str, window_start: str) -> tuple[Decimal, Decimal]:
    row = connection.execute(
        "SELECT spent, reserved FROM budget_spend WHERE budget_id = ? AND window_start = ?",
        (budget_id, window_start),
    ).fetchone()
    return (Decimal(row[0]), Decimal(row[1])) if row else (ZERO, ZERO)


def _release(connection: sqlite3.Connection, delete: str, args: tuple[object, ...]) -> None:
    """Deletes reservations (`delete` returns budget_id, window_start, amount) and takes each off
    its budget window's reserved total."""
    freed: dict[tuple[str, str], Decimal] = {}
    for budget_id, window_start, amount in connection.execute(delete, args).fetchall():
        key = (budget_id, window_start)
        freed[key] = EXACT.add(freed.get(key, ZERO), Decimal(amount))
    connection.executemany(
        "UPDATE budget_spend SET reserved = ? WHERE budget_id = ? AND window_start = ?",
        [
            (str(EXACT.subtract(_totals(connection, budget_id, start)[1], amount)), budget_id, start)
            for (budget_id, start), amount in sorted(freed.items())
        ],
    )
