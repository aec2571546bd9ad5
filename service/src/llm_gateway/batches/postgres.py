"""The batch store on the ledger's PostgreSQL database, through a small asyncpg pool of each
process's own. A claim locks its batch's row (`FOR UPDATE`), so the count of items in flight that
the concurrency cap is checked against is exact across every replica; an outcome is kept only for
the attempt that holds the item."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import asyncpg

from llm_gateway.batches.model import (
    BatchStatus,
    BatchView,
    Claim,
    ItemError,
    ItemFormat,
    ItemStatus,
    ItemView,
    NewBatch,
    Outcome,
    caller_of,
    caller_text,
)
from llm_gateway.batches.store import BatchFinishedError, completed_event, counted
from llm_gateway.budgets.postgres_store import SCHEMA as BUDGET_SCHEMA
from llm_gateway.ledger.pg_pool import LazyPool

if TYPE_CHECKING:
    from llm_gateway.budgets.postgres import Db

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS batches (
        id text PRIMARY KEY,
        key_name text NOT NULL,
        status text NOT NULL,
        max_concurrent integer NOT NULL,
        return_costs boolean NOT NULL,
        webhook text NOT NULL,
        caller text NOT NULL,
        tags jsonb NOT NULL,
        total integer NOT NULL,
        cost numeric NOT NULL DEFAULT 0,
        created_at double precision NOT NULL,
        started_at double precision,
        finished_at double precision,
        paused_reason text NOT NULL DEFAULT '',
        paused_until double precision NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS batches_by_key ON batches (key_name, created_at)",
    "CREATE INDEX IF NOT EXISTS batches_by_time ON batches (created_at)",
    """CREATE TABLE IF NOT EXISTS batch_items (
        batch_id text NOT NULL,
        seq integer NOT NULL,
        custom_id text NOT NULL,
        request bytea NOT NULL,
        format text NOT NULL DEFAULT 'grpc',
        status text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        lease_until double precision NOT NULL DEFAULT 0,
        response bytea,
        error_code text NOT NULL DEFAULT '',
        error_reason text NOT NULL DEFAULT '',
        error_message text NOT NULL DEFAULT '',
        cost numeric NOT NULL DEFAULT 0,
        finished_at double precision,
        PRIMARY KEY (batch_id, seq)
    )""",
    "CREATE INDEX IF NOT EXISTS batch_items_open ON batch_items (batch_id, status, seq)",
)
_BATCH_COLUMNS = (
    "id, key_name, status, max_concurrent, return_costs, webhook, caller, tags, total, cost, "
    "created_at, started_at, finished_at, paused_reason"
)
_ACTIVE = "status IN ('queued', 'running', 'paused', 'cancelling')"
_OUTBOX = (
    "INSERT INTO webhook_outbox (webhook, event_id, event_type, body, created_at, next_at) "
    "VALUES ($1, $2, 'batch_completed', $3, $4, $4) ON CONFLICT (event_id, webhook) DO NOTHING"
)


class PostgresBatchStore:
    def __init__(self, url: str, *, timeout: float, pool_size: int = 4) -> None:
        self._pool = LazyPool(url, timeout=timeout, size=pool_size, name="llm-gateway batches")

    async def _connections(self) -> asyncpg.Pool:
        return await self._pool.get()

    async def migrate(self) -> None:
        pool = await self._connections()
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(hashtext('llm_gateway.batches'))")
            # The outbox the completion webhooks go through is the budget alerts' one.
            for statement in (*SCHEMA, *BUDGET_SCHEMA):
                await connection.execute(statement)

    async def create(self, batch: NewBatch) -> None:
        pool = await self._connections()
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute(
                f"INSERT INTO batches ({_BATCH_COLUMNS}) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, 0, $10, NULL, NULL, '')",
                batch.id,
                batch.key_name,
                BatchStatus.QUEUED.value,
                batch.max_concurrent,
                batch.return_costs,
                batch.webhook,
                caller_text(batch.caller),
                json.dumps(batch.tags, sort_keys=True),
                len(batch.items),
                batch.created_at,
            )
            await connection.copy_records_to_table(
                "batch_items",
                columns=["batch_id", "seq", "custom_id", "request", "format", "status"],
                records=[
                    (batch.id, seq, i.custom_id, i.request, i.format.value, "pending")
                    for seq, i in enumerate(batch.items)
                ],
            )

    async def get(self, batch_id: str) -> BatchView | None:
        pool = await self._connections()
        async with pool.acquire() as connection:
            return await _view(connection, batch_id)

    async def batches(
        self, key_name: str | None, before: tuple[float, str] | None, limit: int
    ) -> list[BatchView]:
        pool = await self._connections()
        where: list[str] = []
        args: list[object] = []
        if key_name is not None:
            args.append(key_name)
            where.append(f"key_name = ${len(args)}")
        if before is not None:
            args.extend(before)
            where.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        async with pool.acquire() as connection:
            ids = await connection.fetch(
                f"SELECT id FROM batches {clause} ORDER BY created_at DESC, id DESC LIMIT ${len(args) + 1}",
                *args,
                limit,
            )
            return [view for row in ids if (view := await _view(connection, row[0])) is not None]

    async def results(self, batch_id: str, after_seq: int, limit: int) -> list[ItemView]:
        pool = await self._connections()
        rows = await pool.fetch(
            "SELECT seq, custom_id, status, attempts, response, error_code, error_reason, error_message "
            "FROM batch_items WHERE batch_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            batch_id,
            after_seq,
            limit,
        )
        return [_item(row) for row in rows]

    async def active(self, now: float) -> list[str]:
        pool = await self._connections()
        rows = await pool.fetch(
            f"SELECT id FROM batches WHERE {_ACTIVE} AND paused_until <= $1 ORDER BY created_at", now
        )
        return [row[0] for row in rows]

    async def claim(self, batch_id: str, now: float, lease: float, most: int) -> list[Claim]:
        pool = await self._connections()
        async with pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                "SELECT status, max_concurrent, paused_until FROM batches WHERE id = $1 FOR UPDATE", batch_id
            )
            if row is None:
                return []
            status = BatchStatus(row[0])
            if status is BatchStatus.CANCELLING:
                await connection.execute(
                    "UPDATE batch_items SET status = 'cancelled', lease_until = 0 "
                    "WHERE batch_id = $1 AND status = 'running' AND lease_until <= $2",
                    batch_id,
                    now,
                )
                await _end_if_done(connection, batch_id, now)
                return []
            if not status.active or float(row[2]) > now:
                return []
            running = await connection.fetchval(
                "SELECT count(*) FROM batch_items "
                "WHERE batch_id = $1 AND status = 'running' AND lease_until > $2",
                batch_id,
                now,
            )
            slots = min(most, int(row[1]) - int(running))
            if slots <= 0:
                return []
            rows = await connection.fetch(
                "UPDATE batch_items SET status = 'running', attempts = attempts + 1, lease_until = $3 "
                "WHERE batch_id = $1 AND seq IN (SELECT seq FROM batch_items WHERE batch_id = $1 AND "
                "(status = 'pending' OR (status = 'running' AND lease_until <= $2)) ORDER BY seq LIMIT $4) "
                "RETURNING seq, custom_id, request, attempts, format",
                batch_id,
                now,
                now + lease,
                slots,
            )
            if not rows:
                await _end_if_done(connection, batch_id, now)
                return []
            await connection.execute(
                "UPDATE batches SET status = 'running', started_at = coalesce(started_at, $2), "
                "paused_reason = '' WHERE id = $1",
                batch_id,
                now,
            )
            return sorted(
                (Claim(batch_id, r[0], r[1], bytes(r[2]), int(r[3]), ItemFormat(r[4])) for r in rows),
                key=lambda c: c.seq,
            )

    async def renew(self, claims: Sequence[Claim], until: float) -> None:
        if not claims:
            return
        pool = await self._connections()
        async with pool.acquire() as connection:
            await connection.executemany(
                "UPDATE batch_items SET lease_until = $1 WHERE batch_id = $2 AND seq = $3 AND attempts = $4 "
                "AND status = 'running'",
                [(until, claim.batch_id, claim.seq, claim.attempt) for claim in claims],
            )

    async def finish(self, claim: Claim, outcome: Outcome, now: float) -> bool:
        pool = await self._connections()
        error = outcome.error or ItemError("", "", "")
        async with pool.acquire() as connection, connection.transaction():
            # The batch's row first, as claims lock it: two transactions never wait crosswise.
            await connection.execute("SELECT 1 FROM batches WHERE id = $1 FOR UPDATE", claim.batch_id)
            kept = await connection.execute(
                "UPDATE batch_items SET status = $1, response = $2, error_code = $3, error_reason = $4, "
                "error_message = $5, cost = $6, finished_at = $7, lease_until = 0 "
                "WHERE batch_id = $8 AND seq = $9 AND attempts = $10 AND status = 'running'",
                outcome.status.value,
                outcome.response,
                error.code,
                error.reason,
                error.message,
                outcome.cost,
                now,
                claim.batch_id,
                claim.seq,
                claim.attempt,
            )
            if kept != "UPDATE 1":
                return False
            await connection.execute(
                "UPDATE batches SET cost = cost + $2 WHERE id = $1", claim.batch_id, outcome.cost
            )
            await _end_if_done(connection, claim.batch_id, now)
            return True

    async def pause(self, claim: Claim, reason: str, until: float) -> None:
        pool = await self._connections()
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT 1 FROM batches WHERE id = $1 FOR UPDATE", claim.batch_id)
            await connection.execute(
                "UPDATE batch_items SET status = 'pending', attempts = attempts - 1, lease_until = 0 "
                "WHERE batch_id = $1 AND seq = $2 AND attempts = $3 AND status = 'running'",
                claim.batch_id,
                claim.seq,
                claim.attempt,
            )
            await connection.execute(
                "UPDATE batches SET status = 'paused', paused_reason = $2, paused_until = $3 "
                "WHERE id = $1 AND status IN ('queued', 'running', 'paused')",
                claim.batch_id,
                reason,
                until,
            )

    async def cancel(self, batch_id: str, now: float) -> BatchView | None:
        pool = await self._connections()
        async with pool.acquire() as connection, connection.transaction():
            status = await connection.fetchval(
                "SELECT status FROM batches WHERE id = $1 FOR UPDATE", batch_id
            )
            if status is None:
                return None
            if not BatchStatus(status).active:
                raise BatchFinishedError(batch_id)
            await connection.execute(
                "UPDATE batch_items SET status = 'cancelled', lease_until = 0 WHERE batch_id = $1 "
                "AND (status = 'pending' OR (status = 'running' AND lease_until <= $2))",
                batch_id,
                now,
            )
            await connection.execute(
                "UPDATE batches SET status = 'cancelling', paused_reason = '' WHERE id = $1", batch_id
            )
            await _end_if_done(connection, batch_id, now)
            return await _view(connection, batch_id)

    async def close(self) -> None:
        await self._pool.close()


async def _end_if_done(connection: Db, batch_id: str, now: float) -> None:
    still = await connection.fetchval(
        "SELECT count(*) FROM batch_items WHERE batch_id = $1 AND status IN ('pending', 'running')", batch_id
    )
    if still:
        return
    ended = await connection.execute(
        "UPDATE batches SET status = CASE status WHEN 'cancelling' THEN 'cancelled' ELSE 'completed' END, "
        f"finished_at = $2 WHERE id = $1 AND {_ACTIVE}",
        batch_id,
        now,
    )
    view = await _view(connection, batch_id)
    if ended == "UPDATE 1" and view is not None and view.webhook:
        event_id, body = completed_event(view, now)
        await connection.execute(_OUTBOX, view.webhook, event_id, body, now)


async def _view(connection: Db, batch_id: str) -> BatchView | None:
    row = await connection.fetchrow(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE id = $1", batch_id)
    if row is None:
        return None
    statuses = await connection.fetch(
        "SELECT status, count(*) FROM batch_items WHERE batch_id = $1 GROUP BY status", batch_id
    )
    return _batch(row, counted([(s[0], int(s[1])) for s in statuses], int(row[8])))


def _batch(row: Any, counts: Any) -> BatchView:
    tags = row[7]
    return BatchView(
        id=row[0],
        key_name=row[1],
        status=BatchStatus(row[2]),
        max_concurrent=int(row[3]),
        return_costs=bool(row[4]),
        webhook=row[5],
        caller=caller_of(row[6]),
        tags=json.loads(tags) if isinstance(tags, str) else dict(tags),
        created_at=float(row[10]),
        started_at=None if row[11] is None else float(row[11]),
        finished_at=None if row[12] is None else float(row[12]),
        paused_reason=row[13],
        cost=Decimal(row[9]),
        counts=counts,
    )


def _item(row: Any) -> ItemView:
    seq, custom_id, status, attempts, response, code, reason, message = row
    return ItemView(
        seq=int(seq),
        custom_id=custom_id,
        status=ItemStatus(status),
        attempts=int(attempts),
        response=None if response is None else bytes(response),
        error=ItemError(code, reason, message) if code else None,
    )
