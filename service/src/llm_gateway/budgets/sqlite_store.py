"""The budget store on the ledger's SQLite file: the counters (`sqlite.py`), the budgets created
through the API, the alerts raised and the webhook outbox, through one connection in a thread of
its own (the event loop never waits on the file). `synchronous=NORMAL`: in WAL mode a commit
survives a crash of the process; a power cut may lose the last moments, which the ledger (kept
with `synchronous=FULL`) can rebuild."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from llm_gateway.budgets import sqlite as counters
from llm_gateway.budgets.counters import ZERO, Charge, Hold, Spend, Standing
from llm_gateway.budgets.model import Alert, Budget, Quota
from llm_gateway.budgets.periods import Period
from llm_gateway.budgets.scope import Scope, ScopeKind, parse_scope
from llm_gateway.budgets.store import BudgetExistsError, PlanPeriod, RaiseAlerts, Rebuilt, StoredAlert
from llm_gateway.budgets.webhooks import OutboxItem
from llm_gateway.ledger.rows import EXACT, micros
from llm_gateway.ledger.sql import TABLE
from llm_gateway.ledger.sqlite_thread import SqliteThread, connect, pause_after, pauses

T = TypeVar("T")


SCHEMA = (
    *counters.SCHEMA,
    """CREATE TABLE IF NOT EXISTS budgets (
        id TEXT PRIMARY KEY,
        scope TEXT NOT NULL,
        limit_usd TEXT NOT NULL,
        period TEXT NOT NULL,
        thresholds TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    ) STRICT""",
    """CREATE TABLE IF NOT EXISTS budget_alerts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        dedup TEXT NOT NULL UNIQUE,
        budget_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        payload TEXT NOT NULL
    ) STRICT""",
    "CREATE INDEX IF NOT EXISTS budget_alerts_by_budget ON budget_alerts (budget_id, seq)",
    """CREATE TABLE IF NOT EXISTS webhook_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        webhook TEXT NOT NULL,
        event_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        body BLOB NOT NULL,
        created_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL,
        lease_until REAL NOT NULL DEFAULT 0,
        delivered_at REAL,
        gave_up INTEGER NOT NULL DEFAULT 0,
        last_error TEXT NOT NULL DEFAULT '',
        UNIQUE (event_id, webhook)
    ) STRICT""",
    "CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (next_at) "
    "WHERE delivered_at IS NULL AND gave_up = 0",
    """CREATE TABLE IF NOT EXISTS plan_usage (
        plan TEXT NOT NULL,
        period_start TEXT NOT NULL,
        fee TEXT NOT NULL,
        tokens INTEGER NOT NULL,
        calls INTEGER NOT NULL,
        PRIMARY KEY (plan, period_start)
    ) STRICT""",
)


class SqliteBudgetStore:
    def __init__(self, path: Path, *, busy_timeout: float) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._worker = SqliteThread(lambda: connect(path), busy_timeout=busy_timeout, name="budgets")
        self._quick: sqlite3.Connection | None = None  # the event loop's, for reservations
        self._migrated = False

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` in its own transaction on the store's thread (`SqliteThread`)."""
        return await self._worker.run(work)

    async def migrate(self) -> None:
        def run(connection: sqlite3.Connection) -> None:
            connection.execute("BEGIN IMMEDIATE")
            try:
                for statement in SCHEMA:
                    connection.execute(statement)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

        await self._run(run)
        self._migrated = True

    async def reserve(
        self, call_id: str, holds: Sequence[Hold], *, now: datetime, expires_at: datetime
    ) -> list[Standing]:
        return await self._on_loop(
            lambda c: counters.reserve(c, call_id, holds, now=now, expires_at=expires_at)
        )

    async def add_plan_tokens(
        self, plan: str, period_key: str, tokens: int, fee: Decimal, calls: int = 1
    ) -> int:
        # One statement: SQLite's write lock orders every process's increments.
        return await self._on_loop(
            lambda c: int(
                c.execute(
                    "INSERT INTO plan_usage (plan, period_start, fee, tokens, calls) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (plan, period_start) DO UPDATE SET fee = excluded.fee, "
                    "tokens = tokens + excluded.tokens, calls = calls + excluded.calls RETURNING tokens",
                    (plan, period_key, str(fee), tokens, calls),
                ).fetchone()[0]
            )
        )

    async def plan_periods(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], PlanPeriod]:
        def run(connection: sqlite3.Connection) -> dict[tuple[str, str], PlanPeriod]:
            found = {}
            for plan, period_key in keys:
                row = connection.execute(
                    "SELECT fee, tokens, calls FROM plan_usage WHERE plan = ? AND period_start = ?",
                    (plan, period_key),
                ).fetchone()
                if row is not None:
                    found[plan, period_key] = PlanPeriod(Decimal(row[0]), int(row[1]), int(row[2]))
            return found

        return await self._run(run)

    async def _on_loop(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` on the event loop's own connection. Reservations and settlements are short
        transactions (about 100 µs, with no sync to disk in WAL mode at synchronous=NORMAL): cheaper
        run here than handed to a thread and back (about 100 µs of CPU each way on a small
        machine), and, both here, they never contend with each other. While another writer holds
        the lock (another worker, the ledger's commits) it tries again after a pause, without
        holding the loop up; past the busy timeout it fails."""
        if self._quick is None:
            if not self._migrated:
                return await self._run(work)
            self._quick = connect(self._path, checkpoints=False)
        waits = pauses(self._busy_timeout)
        while True:
            try:
                return work(self._quick)
            except sqlite3.OperationalError as exc:
                pause = pause_after(exc, waits)
            await asyncio.sleep(pause)

    async def settle(
        self,
        settlements: Sequence[tuple[str, Sequence[Hold]]],
        raise_alerts: RaiseAlerts,
        alerts: Sequence[Alert],
        webhooks: Sequence[str],
    ) -> list[Alert]:
        raised: list[Alert] = []

        def keep(connection: sqlite3.Connection, spends: list[Spend]) -> None:
            raised.clear()  # a transaction retried after a busy lock starts over
            for alert in [*raise_alerts(spends), *alerts]:
                cursor = connection.execute(
                    "INSERT INTO budget_alerts (id, dedup, budget_id, created_at, payload) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (dedup) DO NOTHING",
                    (alert.id, alert.dedup, alert.budget_id, alert.created_at, json.dumps(alert.payload)),
                )
                if cursor.rowcount != 1:
                    continue  # raised already (by another process, or an earlier settlement)
                raised.append(alert)
                connection.executemany(
                    "INSERT INTO webhook_outbox (webhook, event_id, event_type, body, created_at, next_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (name, alert.id, "cost_alert", alert.body, alert.created_at, alert.created_at)
                        for name in webhooks
                    ],
                )

        await self._on_loop(lambda c: counters.settle(c, settlements, lambda spends: keep(c, spends)))
        return raised

    async def standings(self, charges: Sequence[Charge], *, now: datetime) -> list[Standing]:
        return await self._run(lambda c: counters.standings(c, charges, now=now))

    async def budgets(self) -> list[Budget]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT id, scope, limit_usd, period, thresholds, created_at, updated_at "
                "FROM budgets ORDER BY id"
            ).fetchall()
        )
        return [
            Budget(
                row[0],
                parse_scope(row[1]),
                Decimal(row[2]),
                Period(row[3]),
                tuple(Decimal(t) for t in json.loads(row[4])),
                "api",
                row[5],
                row[6],
            )
            for row in rows
        ]

    async def create_budget(self, budget: Budget) -> None:
        def run(connection: sqlite3.Connection) -> None:
            try:
                connection.execute(
                    "INSERT INTO budgets (id, scope, limit_usd, period, thresholds, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    _budget_row(budget),
                )
            except sqlite3.IntegrityError:
                raise BudgetExistsError(budget.id) from None

        await self._run(run)

    async def update_budget(self, budget: Budget) -> bool:
        row = _budget_row(budget)
        cursor = await self._run(
            lambda c: c.execute(
                "UPDATE budgets SET scope = ?, limit_usd = ?, period = ?, thresholds = ?, updated_at = ? "
                "WHERE id = ?",
                (*row[1:5], row[6], row[0]),
            )
        )
        return cursor.rowcount == 1

    async def delete_budget(self, budget_id: str) -> bool:
        def run(connection: sqlite3.Connection) -> bool:
            connection.execute("BEGIN IMMEDIATE")
            try:
                found = connection.execute("DELETE FROM budgets WHERE id = ?", (budget_id,)).rowcount == 1
                if found:
                    connection.execute("DELETE FROM budget_spend WHERE budget_id = ?", (budget_id,))
                    connection.execute("DELETE FROM budget_reservations WHERE budget_id = ?", (budget_id,))
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return found

        return await self._run(run)

    async def alerts(self, budget_id: str, after_seq: int, limit: int) -> list[StoredAlert]:
        where, args = ["seq < ?"], [after_seq or 2**62]
        if budget_id:
            where.append("budget_id = ?")
            args.append(budget_id)  # type: ignore[arg-type]
        rows = await self._run(
            lambda c: c.execute(
                "SELECT seq, id, dedup, budget_id, created_at, payload FROM budget_alerts "
                f"WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?",
                (*args, limit),
            ).fetchall()
        )
        return [StoredAlert(r[0], Alert(r[1], r[2], r[3], r[4], json.loads(r[5]))) for r in rows]

    async def rebuild(
        self, budgets: Sequence[tuple[Budget, Charge]], quotas: Sequence[tuple[Quota, Charge]]
    ) -> list[Rebuilt]:
        def run(connection: sqlite3.Connection) -> list[Rebuilt]:
            connection.execute("BEGIN IMMEDIATE")
            try:
                done = [
                    _rebuild(connection, charge, _budget_total(connection, budget.scope, charge))
                    for budget, charge in budgets
                ]
                done += [
                    _rebuild(connection, charge, _quota_total(connection, quota, charge))
                    for quota, charge in quotas
                ]
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return done

        return await self._run(run)

    async def claim(self, now: float, limit: int, lease: float) -> list[OutboxItem]:
        def run(connection: sqlite3.Connection) -> list[OutboxItem]:
            rows = connection.execute(
                "UPDATE webhook_outbox SET lease_until = ? WHERE id IN (SELECT id FROM webhook_outbox "
                "WHERE delivered_at IS NULL AND gave_up = 0 AND next_at <= ? AND lease_until <= ? "
                "ORDER BY next_at, id LIMIT ?) "
                "RETURNING id, webhook, event_id, event_type, body, attempts, created_at",
                (now + lease, now, now, limit),
            ).fetchall()
            return sorted(
                (OutboxItem(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6]) for r in rows), key=_id
            )

        return await self._run(run)

    async def delivered(self, item_id: int, now: float) -> None:
        await self._run(
            lambda c: c.execute(
                "UPDATE webhook_outbox SET delivered_at = ?, attempts = attempts + 1, lease_until = 0 "
                "WHERE id = ?",
                (now, item_id),
            )
        )

    async def failed(self, item_id: int, now: float, retry_at: float | None, error: str) -> None:
        await self._run(
            lambda c: c.execute(
                "UPDATE webhook_outbox SET attempts = attempts + 1, lease_until = 0, last_error = ?, "
                "next_at = ?, gave_up = ? WHERE id = ?",
                (error, retry_at if retry_at is not None else now, int(retry_at is None), item_id),
            )
        )

    async def close(self) -> None:
        if self._quick is not None:
            self._quick.close()
            self._quick = None
        await self._worker.close()


def _id(item: OutboxItem) -> int:
    return item.id


def _budget_row(budget: Budget) -> tuple[Any, ...]:
    thresholds = json.dumps([str(t) for t in budget.thresholds])
    return (
        budget.id,
        str(budget.scope),
        str(budget.limit),
        budget.period.value,
        thresholds,
        budget.created_at,
        budget.updated_at,
    )


def _scope_filter(scope: Scope) -> tuple[str, tuple[str, ...]]:
    """The ledger's calls in `scope`, as SQL."""
    match scope.kind:
        case ScopeKind.GATEWAY:
            return "1 = 1", ()
        case ScopeKind.KEY:
            return "key_name = ?", (scope.value,)
        case ScopeKind.USER:
            return "caller_user = ?", (scope.value,)
        case ScopeKind.PROJECT:
            return "caller_project = ?", (scope.value,)
        case ScopeKind.TENANT:
            return "caller_tenant = ?", (scope.value,)
        case ScopeKind.TAG:
            return (
                f"EXISTS (SELECT 1 FROM json_each({TABLE}.tags) AS t WHERE t.key = ? AND t.value = ?)",
                (scope.tag, scope.value),
            )


def _in_window(charge: Charge) -> tuple[str, tuple[int, int]]:
    start, end = charge.window.start.timestamp(), charge.window.end.timestamp()
    return "dry_run = 0 AND started_at >= ? AND started_at < ?", (
        micros(start),
        micros(min(end, 253402300799)),
    )


def _budget_total(connection: sqlite3.Connection, scope: Scope, charge: Charge) -> Decimal:
    where, args = _scope_filter(scope)
    window, bounds = _in_window(charge)
    total = ZERO
    for (cost,) in connection.execute(
        f"SELECT cost_total FROM {TABLE} WHERE {where} AND {window} AND cost_total IS NOT NULL",
        (*args, *bounds),
    ):
        total = EXACT.add(total, Decimal(cost))
    return total


def _quota_total(connection: sqlite3.Connection, quota: Quota, charge: Charge) -> Decimal:
    window, bounds = _in_window(charge)
    what = (
        "count(*)"
        if quota.what == "requests"
        else "sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0))"
    )
    (value,) = connection.execute(
        f"SELECT coalesce({what}, 0) FROM {TABLE} WHERE key_name = ? AND {window}", (quota.key, *bounds)
    ).fetchone()
    return Decimal(value)


def _rebuild(connection: sqlite3.Connection, charge: Charge, total: Decimal) -> Rebuilt:
    row = connection.execute(
        "SELECT spent FROM budget_spend WHERE budget_id = ? AND window_start = ?",
        (charge.budget_id, charge.window_key),
    ).fetchone()
    connection.execute(
        "INSERT INTO budget_spend (budget_id, window_start, spent) VALUES (?, ?, ?) "
        "ON CONFLICT (budget_id, window_start) DO UPDATE SET spent = excluded.spent",
        (charge.budget_id, charge.window_key, str(total)),
    )
    return Rebuilt(charge.budget_id, charge.window.start, Decimal(row[0]) if row else ZERO, total)
