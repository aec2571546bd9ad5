"""The budget store on the ledger's PostgreSQL database: the counters (`postgres.py`), the budgets
created through the API, the alerts raised and the webhook outbox, through a small asyncpg pool of
each process's own. Every worker and replica shares the tables, so what must happen once (an
alert raised, an outbox item sent) is decided by the database: a unique key, a row lock, or
`SKIP LOCKED`, never by a process's memory."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import asyncpg

from llm_gateway.budgets import postgres as counters
from llm_gateway.budgets.counters import ZERO, Charge, Hold, Standing
from llm_gateway.budgets.model import Alert, Budget, Quota
from llm_gateway.budgets.periods import Period
from llm_gateway.budgets.scope import Scope, ScopeKind, parse_scope
from llm_gateway.budgets.store import BudgetExistsError, PlanPeriod, RaiseAlerts, Rebuilt, StoredAlert
from llm_gateway.budgets.webhooks import OutboxItem
from llm_gateway.ledger.pg_pool import LazyPool
from llm_gateway.ledger.sql import TABLE

if TYPE_CHECKING:
    from llm_gateway.budgets.postgres import Db

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS budgets (
        id text PRIMARY KEY,
        scope text NOT NULL,
        limit_usd numeric NOT NULL,
        period text NOT NULL,
        thresholds text[] NOT NULL,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS budget_alerts (
        seq bigserial PRIMARY KEY,
        id text NOT NULL UNIQUE,
        dedup text NOT NULL UNIQUE,
        budget_id text NOT NULL,
        created_at double precision NOT NULL,
        payload jsonb NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS budget_alerts_by_budget ON budget_alerts (budget_id, seq)",
    """CREATE TABLE IF NOT EXISTS webhook_outbox (
        id bigserial PRIMARY KEY,
        webhook text NOT NULL,
        event_id text NOT NULL,
        event_type text NOT NULL,
        body bytea NOT NULL,
        created_at double precision NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_at double precision NOT NULL,
        lease_until double precision NOT NULL DEFAULT 0,
        delivered_at double precision,
        gave_up boolean NOT NULL DEFAULT false,
        last_error text NOT NULL DEFAULT '',
        UNIQUE (event_id, webhook)
    )""",
    "CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (next_at) "
    "WHERE delivered_at IS NULL AND NOT gave_up",
    """CREATE TABLE IF NOT EXISTS plan_usage (
        plan text NOT NULL,
        period_start text NOT NULL,
        fee numeric NOT NULL,
        tokens bigint NOT NULL,
        calls bigint NOT NULL,
        PRIMARY KEY (plan, period_start)
    )""",
)

_BUDGET_COLUMNS = "id, scope, limit_usd, period, thresholds, created_at, updated_at"
_QUEUE = (
    "INSERT INTO webhook_outbox (webhook, event_id, event_type, body, created_at, next_at) "
    "VALUES ($1, $2, $3, $4, $5, $6)"
)


class PostgresBudgetStore:
    def __init__(self, url: str, *, timeout: float, pool_size: int = 4) -> None:
        self._pool = LazyPool(url, timeout=timeout, size=pool_size, name="llm-gateway budgets")

    async def _connections(self) -> asyncpg.Pool:
        return await self._pool.get()

    async def migrate(self) -> None:
        pool = await self._connections()
        async with pool.acquire() as connection, connection.transaction():
            # The counters' migrate takes the budgets' advisory lock; it is held (past its savepoint)
            # until this transaction ends, so concurrent processes create these tables in turn too.
            await counters.migrate(connection)
            for statement in SCHEMA:
                await connection.execute(statement)

    async def reserve(
        self, call_id: str, holds: Sequence[Hold], *, now: datetime, expires_at: datetime
    ) -> list[Standing]:
        pool = await self._connections()
        async with pool.acquire() as connection:
            return await counters.reserve(connection, call_id, holds, now=now, expires_at=expires_at)

    async def settle(
        self,
        settlements: Sequence[tuple[str, Sequence[Hold]]],
        raise_alerts: RaiseAlerts,
        alerts: Sequence[Alert],
        webhooks: Sequence[str],
    ) -> list[Alert]:
        pool = await self._connections()
        async with pool.acquire() as connection, connection.transaction():
            # The counters' settle runs in a savepoint of this transaction: the spend, the alerts
            # it raises and their outbox items are committed together or not at all.
            spends = await counters.settle(connection, settlements)
            candidates = [*raise_alerts(spends), *alerts]
            kept: set[str] = set()
            # In dedup order, so two transactions raising the same alerts never wait crosswise.
            # A concurrent insert of the same dedup key waits for the other to commit, then does
            # nothing: each alert is raised once across every process.
            for alert in sorted(candidates, key=_dedup):
                inserted = await connection.fetchval(
                    "INSERT INTO budget_alerts (id, dedup, budget_id, created_at, payload) "
                    "VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (dedup) DO NOTHING RETURNING seq",
                    alert.id,
                    alert.dedup,
                    alert.budget_id,
                    alert.created_at,
                    json.dumps(alert.payload),
                )
                if inserted is None:
                    continue  # raised already (by another process, or an earlier settlement)
                kept.add(alert.id)
                if webhooks:
                    await connection.executemany(
                        _QUEUE,
                        [
                            (name, alert.id, "cost_alert", alert.body, alert.created_at, alert.created_at)
                            for name in webhooks
                        ],
                    )
        return [alert for alert in candidates if alert.id in kept]

    async def add_plan_tokens(
        self, plan: str, period_key: str, tokens: int, fee: Decimal, calls: int = 1
    ) -> int:
        pool = await self._connections()
        # The conflicting row's lock orders every replica's increments.
        after = await pool.fetchval(
            "INSERT INTO plan_usage (plan, period_start, fee, tokens, calls) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (plan, period_start) DO UPDATE SET fee = excluded.fee, "
            "tokens = plan_usage.tokens + excluded.tokens, calls = plan_usage.calls + excluded.calls "
            "RETURNING tokens",
            plan,
            period_key,
            fee,
            tokens,
            calls,
        )
        return int(after)

    async def plan_periods(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], PlanPeriod]:
        pool = await self._connections()
        rows = await pool.fetch(
            "SELECT plan, period_start, fee, tokens, calls FROM plan_usage "
            "WHERE (plan, period_start) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            [plan for plan, _ in keys],
            [period for _, period in keys],
        )
        return {(r[0], r[1]): PlanPeriod(Decimal(r[2]), int(r[3]), int(r[4])) for r in rows}

    async def standings(self, charges: Sequence[Charge], *, now: datetime) -> list[Standing]:
        pool = await self._connections()
        async with pool.acquire() as connection:
            return await counters.standings(connection, charges, now=now)

    async def budgets(self) -> list[Budget]:
        pool = await self._connections()
        async with pool.acquire() as connection:
            # By code point, as on SQLite, whatever collation the database has.
            rows = await connection.fetch(f'SELECT {_BUDGET_COLUMNS} FROM budgets ORDER BY id COLLATE "C"')
        return [
            Budget(
                row[0],
                parse_scope(row[1]),
                Decimal(row[2]),
                Period(row[3]),
                tuple(Decimal(t) for t in row[4]),
                "api",
                row[5],
                row[6],
            )
            for row in rows
        ]

    async def create_budget(self, budget: Budget) -> None:
        pool = await self._connections()
        async with pool.acquire() as connection:
            try:
                await connection.execute(
                    f"INSERT INTO budgets ({_BUDGET_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    *_budget_row(budget),
                )
            except asyncpg.UniqueViolationError:
                raise BudgetExistsError(budget.id) from None

    async def update_budget(self, budget: Budget) -> bool:
        row = _budget_row(budget)
        pool = await self._connections()
        async with pool.acquire() as connection:
            status = await connection.execute(
                "UPDATE budgets SET scope = $1, limit_usd = $2, period = $3, thresholds = $4, "
                "updated_at = $5 WHERE id = $6",
                *row[1:5],
                row[6],
                row[0],
            )
        return _count(status) == 1

    async def delete_budget(self, budget_id: str) -> bool:
        pool = await self._connections()
        async with pool.acquire() as connection, connection.transaction():
            found = _count(await connection.execute("DELETE FROM budgets WHERE id = $1", budget_id)) == 1
            if found:
                await connection.execute("DELETE FROM budget_spend WHERE budget_id = $1", budget_id)
                await connection.execute("DELETE FROM budget_reservations WHERE budget_id = $1", budget_id)
        return found

    async def alerts(self, budget_id: str, after_seq: int, limit: int) -> list[StoredAlert]:
        where, args = ["seq < $1"], list[object]([after_seq or 2**62])
        if budget_id:
            where.append("budget_id = $2")
            args.append(budget_id)
        pool = await self._connections()
        async with pool.acquire() as connection:
            rows = await connection.fetch(
                "SELECT seq, id, dedup, budget_id, created_at, payload FROM budget_alerts "
                f"WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ${len(args) + 1}",
                *args,
                limit,
            )
        return [StoredAlert(r[0], Alert(r[1], r[2], r[3], r[4], json.loads(r[5]))) for r in rows]

    async def rebuild(
        self, budgets: Sequence[tuple[Budget, Charge]], quotas: Sequence[tuple[Quota, Charge]]
    ) -> list[Rebuilt]:
        pool = await self._connections()
        async with pool.acquire() as connection, connection.transaction():
            # Every window's spend row is locked first, in the order reservations and settlements
            # lock them (so none waits crosswise with this), and stays locked until the new
            # totals are written: a settlement of these budgets meanwhile waits, then adds on top.
            charges = {(c.budget_id, c.window.start): c for _, c in [*budgets, *quotas]}
            before = {key: await _lock(connection, charges[key]) for key in sorted(charges)}
            totals = [
                (charge, await _budget_total(connection, budget.scope, charge)) for budget, charge in budgets
            ]
            totals += [(charge, await _quota_total(connection, quota, charge)) for quota, charge in quotas]
            await connection.executemany(
                "UPDATE budget_spend SET spent = $3 WHERE budget_id = $1 AND window_start = $2",
                [(charge.budget_id, charge.window.start, total) for charge, total in totals],
            )
        return [
            Rebuilt(
                charge.budget_id, charge.window.start, before[charge.budget_id, charge.window.start], total
            )
            for charge, total in totals
        ]

    async def claim(self, now: float, limit: int, lease: float) -> list[OutboxItem]:
        pool = await self._connections()
        async with pool.acquire() as connection:
            # SKIP LOCKED: a row another process is claiming right now is passed over, not waited
            # for; one it claimed and committed is re-checked against the lease and left out.
            rows = await connection.fetch(
                "UPDATE webhook_outbox SET lease_until = $1 WHERE id IN (SELECT id FROM webhook_outbox "
                "WHERE delivered_at IS NULL AND NOT gave_up AND next_at <= $2 AND lease_until <= $2 "
                "ORDER BY next_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) "
                "RETURNING id, webhook, event_id, event_type, body, attempts, created_at",
                now + lease,
                now,
                limit,
            )
        return sorted((OutboxItem(r[0], r[1], r[2], r[3], bytes(r[4]), r[5], r[6]) for r in rows), key=_id)

    async def delivered(self, item_id: int, now: float) -> None:
        pool = await self._connections()
        async with pool.acquire() as connection:
            await connection.execute(
                "UPDATE webhook_outbox SET delivered_at = $1, attempts = attempts + 1, lease_until = 0 "
                "WHERE id = $2",
                now,
                item_id,
            )

    async def failed(self, item_id: int, now: float, retry_at: float | None, error: str) -> None:
        pool = await self._connections()
        async with pool.acquire() as connection:
            await connection.execute(
                "UPDATE webhook_outbox SET attempts = attempts + 1, lease_until = 0, last_error = $1, "
                "next_at = $2, gave_up = $3 WHERE id = $4",
                error,
                retry_at if retry_at is not None else now,
                retry_at is None,
                item_id,
            )

    async def close(self) -> None:
        await self._pool.close()


def _id(item: OutboxItem) -> int:
    return item.id


def _dedup(alert: Alert) -> str:
    return alert.dedup


def _count(status: str) -> int:
    """The row count of a command's status ("UPDATE 1", "DELETE 0")."""
    return int(status.rsplit(" ", 1)[-1])


def _budget_row(budget: Budget) -> tuple[Any, ...]:
    return (
        budget.id,
        str(budget.scope),
        budget.limit,
        budget.period.value,
        [str(t) for t in budget.thresholds],
        budget.created_at,
        budget.updated_at,
    )


def _scope_filter(scope: Scope) -> tuple[str, tuple[str, ...]]:
    """The ledger's calls in `scope`, as SQL whose parameters start at $3 (after the window's)."""
    match scope.kind:
        case ScopeKind.GATEWAY:
            return "true", ()
        case ScopeKind.KEY:
            return "key_name = $3", (scope.value,)
        case ScopeKind.USER:
            return "caller_user = $3", (scope.value,)
        case ScopeKind.PROJECT:
            return "caller_project = $3", (scope.value,)
        case ScopeKind.TENANT:
            return "caller_tenant = $3", (scope.value,)
        case ScopeKind.TAG:
            return "tags ->> $3 = $4", (scope.tag, scope.value)


# The window's calls, with its bounds as $1 and $2: times compared as timestamptz, exactly.
_IN_WINDOW = "NOT dry_run AND started_at >= $1 AND started_at < $2"


async def _budget_total(connection: Db, scope: Scope, charge: Charge) -> Decimal:
    where, args = _scope_filter(scope)
    # numeric sums exactly, whatever the number of digits.
    total = await connection.fetchval(
        f"SELECT sum(cost_total) FROM {TABLE} WHERE {_IN_WINDOW} AND {where} AND cost_total IS NOT NULL",
        charge.window.start,
        charge.window.end,
        *args,
    )
    return ZERO if total is None else Decimal(total)


async def _quota_total(connection: Db, quota: Quota, charge: Charge) -> Decimal:
    what = (
        "count(*)"
        if quota.what == "requests"
        else "sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0))"
    )
    value = await connection.fetchval(
        f"SELECT coalesce({what}, 0) FROM {TABLE} WHERE {_IN_WINDOW} AND key_name = $3",
        charge.window.start,
        charge.window.end,
        quota.key,
    )
    return Decimal(value)


async def _lock(connection: Db, charge: Charge) -> Decimal:
    """The window's spend, its row locked until the transaction ends (created at 0 first, so there
    is always a row to lock)."""
    await connection.execute(
        "INSERT INTO budget_spend (budget_id, window_start, spent) VALUES ($1, $2, 0) ON CONFLICT DO NOTHING",
        charge.budget_id,
        charge.window.start,
    )
    spent = await connection.fetchval(
        "SELECT spent FROM budget_spend WHERE budget_id = $1 AND window_start = $2 FOR UPDATE",
        charge.budget_id,
        charge.window.start,
    )
    return Decimal(spent)
