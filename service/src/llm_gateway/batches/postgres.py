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
    BatchMode,
    BatchStatus,
    BatchView,
    Claim,
    ItemError,
    ItemFormat,
    ItemStatus,
    ItemView,
    Job,
    JobView,
    NewBatch,
    Outcome,
    caller_of,
    caller_text,
)
from llm_gateway.batches.store import HELD_BY_JOB, BatchFinishedError, completed_event, counted, job_of
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
        paused_until double precision NOT NULL DEFAULT 0,
        mode text NOT NULL DEFAULT 'live'
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
        provider text NOT NULL DEFAULT '',
        job integer,
        PRIMARY KEY (batch_id, seq)
    )""",
    "CREATE INDEX IF NOT EXISTS batch_items_open ON batch_items (batch_id, status, seq)",
    "CREATE INDEX IF NOT EXISTS batch_items_by_job ON batch_items (batch_id, job)",
    """CREATE TABLE IF NOT EXISTS batch_jobs (
        batch_id text NOT NULL,
        number integer NOT NULL,
        provider text NOT NULL,
        state text NOT NULL,
        items integer NOT NULL,
        attempt integer NOT NULL DEFAULT 0,
        lease_until double precision NOT NULL DEFAULT 0,
        upstream_id text NOT NULL DEFAULT '',
        upstream_status text NOT NULL DEFAULT '',
        submitted_at double precision NOT NULL DEFAULT 0,
        next_poll double precision NOT NULL DEFAULT 0,
        cancel_sent boolean NOT NULL DEFAULT false,
        PRIMARY KEY (batch_id, number)
    )""",
)
_BATCH_COLUMNS = (
    "id, key_name, status, max_concurrent, return_costs, webhook, caller, tags, total, cost, "
    "created_at, started_at, finished_at, paused_reason, mode"
)
_JOB_COLUMNS = (
    "j.batch_id, j.number, j.provider, b.key_name, j.state, j.attempt, j.upstream_id, j.submitted_at, "
    "b.status = 'cancelling', j.cancel_sent"
)
_ITEM_CLAIM = "seq, custom_id, request, attempts, format"
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
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, 0, $10, NULL, NULL, '', $11)",
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
                batch.mode.value,
            )
            await connection.copy_records_to_table(
                "batch_items",
                columns=["batch_id", "seq", "custom_id", "request", "format", "status", "provider"],
                records=[
                    (batch.id, seq, i.custom_id, i.request, i.format.value, "pending", i.provider)
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
            f"SELECT id FROM batches WHERE {_ACTIVE} AND paused_until <= $1 AND mode = 'live' "
            "ORDER BY created_at",
            now,
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

    # -- provider mode ---------------------------------------------------------------------------

    async def claim_job(self, now: float, lease: float) -> Job | None:
        pool = await self._connections()
        async with pool.acquire() as connection, connection.transaction():
            while True:  # a stale job of a batch being cancelled is ended, and the next one looked at
                stale = await connection.fetchrow(
                    "SELECT j.batch_id, j.number, b.status FROM batch_jobs j JOIN batches b "
                    "ON b.id = j.batch_id WHERE j.state = 'preparing' AND j.lease_until <= $1 "
                    "LIMIT 1 FOR UPDATE OF b, j SKIP LOCKED",
                    now,
                )
                if stale is None:
                    break
                batch_id, number = stale[0], int(stale[1])
                if BatchStatus(stale[2]) is BatchStatus.CANCELLING:
                    await connection.execute(
                        "UPDATE batch_items SET status = 'cancelled', lease_until = 0 "
                        "WHERE batch_id = $1 AND job = $2 AND status = 'running'",
                        batch_id,
                        number,
                    )
                    await connection.execute(
                        "UPDATE batch_jobs SET state = 'done' WHERE batch_id = $1 AND number = $2",
                        batch_id,
                        number,
                    )
                    await _end_if_done(connection, batch_id, now)
                    continue
                await connection.execute(
                    "UPDATE batch_items SET attempts = attempts + 1 "
                    "WHERE batch_id = $1 AND job = $2 AND status = 'running'",
                    batch_id,
                    number,
                )
                return await _lease_job(connection, batch_id, number, now + lease)
            fresh = await connection.fetchrow(
                "SELECT b.id, (SELECT i.provider FROM batch_items i WHERE i.batch_id = b.id "
                "AND i.status = 'pending' AND i.job IS NULL LIMIT 1) FROM batches b "
                "WHERE b.mode = 'provider' AND b.status IN ('queued', 'running', 'paused') "
                "AND b.paused_until <= $1 AND EXISTS (SELECT 1 FROM batch_items i WHERE "
                "i.batch_id = b.id AND i.status = 'pending' AND i.job IS NULL) "
                "ORDER BY b.created_at LIMIT 1 FOR UPDATE OF b SKIP LOCKED",
                now,
            )
            if fresh is None or fresh[1] is None:
                return None
            batch_id, provider = fresh[0], fresh[1]
            number = int(
                await connection.fetchval(
                    "SELECT coalesce(max(number), 0) + 1 FROM batch_jobs WHERE batch_id = $1", batch_id
                )
            )
            moved = await connection.execute(
                "UPDATE batch_items SET job = $1, status = 'running', attempts = attempts + 1, "
                "lease_until = $2 WHERE batch_id = $3 AND provider = $4 AND status = 'pending' "
                "AND job IS NULL",
                number,
                HELD_BY_JOB,
                batch_id,
                provider,
            )
            await connection.execute(
                "INSERT INTO batch_jobs (batch_id, number, provider, state, items) "
                "VALUES ($1, $2, $3, 'preparing', $4)",
                batch_id,
                number,
                provider,
                int(moved.split()[-1]),
            )
            await connection.execute(
                "UPDATE batches SET status = 'running', started_at = coalesce(started_at, $2), "
                "paused_reason = '' WHERE id = $1",
                batch_id,
                now,
            )
            return await _lease_job(connection, batch_id, number, now + lease)

    async def renew_job(self, job: Job, until: float) -> None:
        pool = await self._connections()
        await pool.execute(
            "UPDATE batch_jobs SET lease_until = $1 WHERE batch_id = $2 AND number = $3 "
            "AND state = 'preparing' AND attempt = $4",
            until,
            job.batch_id,
            job.number,
            job.attempt,
        )

    async def submitted(self, job: Job, upstream_id: str, status: str, now: float, poll_at: float) -> bool:
        pool = await self._connections()
        done = await pool.execute(
            "UPDATE batch_jobs SET state = 'submitted', upstream_id = $1, upstream_status = $2, "
            "submitted_at = $3, next_poll = $4 WHERE batch_id = $5 AND number = $6 "
            "AND state = 'preparing' AND attempt = $7",
            upstream_id,
            status,
            now,
            poll_at,
            job.batch_id,
            job.number,
            job.attempt,
        )
        return bool(done == "UPDATE 1")

    async def release_job(self, job: Job, reason: str, until: float) -> None:
        pool = await self._connections()
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT 1 FROM batches WHERE id = $1 FOR UPDATE", job.batch_id)
            gone = await connection.execute(
                "DELETE FROM batch_jobs WHERE batch_id = $1 AND number = $2 AND state = 'preparing' "
                "AND attempt = $3",
                job.batch_id,
                job.number,
                job.attempt,
            )
            if gone != "DELETE 1":
                return
            await connection.execute(
                "UPDATE batch_items SET status = 'pending', job = NULL, attempts = attempts - 1, "
                "lease_until = 0 WHERE batch_id = $1 AND job = $2 AND status = 'running'",
                job.batch_id,
                job.number,
            )
            await connection.execute(
                "UPDATE batches SET status = 'paused', paused_reason = $2, paused_until = $3 "
                "WHERE id = $1 AND status IN ('queued', 'running', 'paused')",
                job.batch_id,
                reason,
                until,
            )

    async def due_jobs(self, now: float, poll_at: float, most: int) -> list[Job]:
        pool = await self._connections()
        async with pool.acquire() as connection, connection.transaction():
            rows = await connection.fetch(
                f"SELECT {_JOB_COLUMNS} FROM batch_jobs j JOIN batches b ON b.id = j.batch_id "
                "WHERE j.state = 'submitted' AND j.next_poll <= $1 ORDER BY j.next_poll LIMIT $2 "
                "FOR UPDATE OF j SKIP LOCKED",
                now,
                most,
            )
            await connection.executemany(
                "UPDATE batch_jobs SET next_poll = $1 WHERE batch_id = $2 AND number = $3",
                [(poll_at, row[0], row[1]) for row in rows],
            )
            return [job_of(row) for row in rows]

    async def polled(self, job: Job, status: str, cancel_sent: bool, poll_at: float) -> None:
        pool = await self._connections()
        await pool.execute(
            "UPDATE batch_jobs SET upstream_status = coalesce(nullif($1, ''), upstream_status), "
            "cancel_sent = $2, next_poll = $3 "
            "WHERE batch_id = $4 AND number = $5 AND state = 'submitted'",
            status,
            cancel_sent,
            poll_at,
            job.batch_id,
            job.number,
        )

    async def job_items(self, job: Job) -> list[Claim]:
        pool = await self._connections()
        rows = await pool.fetch(
            f"SELECT {_ITEM_CLAIM} FROM batch_items WHERE batch_id = $1 AND job = $2 "
            "AND status = 'running' ORDER BY seq",
            job.batch_id,
            job.number,
        )
        return [_claim(job.batch_id, row) for row in rows]

    async def finish_job(self, job: Job, outcomes: dict[int, Outcome], now: float) -> bool:
        pool = await self._connections()
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT 1 FROM batches WHERE id = $1 FOR UPDATE", job.batch_id)
            ended = await connection.execute(
                "UPDATE batch_jobs SET state = 'done' WHERE batch_id = $1 AND number = $2 "
                "AND state = 'submitted'",
                job.batch_id,
                job.number,
            )
            if ended != "UPDATE 1":
                return False
            rows = [
                (
                    seq,
                    outcome.status.value,
                    outcome.response,
                    (outcome.error or ItemError("", "", "")).code,
                    (outcome.error or ItemError("", "", "")).reason,
                    (outcome.error or ItemError("", "", "")).message,
                    outcome.cost,
                )
                for seq, outcome in outcomes.items()
            ]
            kept = await connection.fetchval(
                "WITH given AS (SELECT * FROM unnest($1::int[], $2::text[], $3::bytea[], $4::text[], "
                "$5::text[], $6::text[], $7::numeric[]) AS g(seq, status, response, code, reason, "
                "message, cost)), kept AS (UPDATE batch_items i SET status = g.status, "
                "response = g.response, error_code = g.code, error_reason = g.reason, "
                "error_message = g.message, cost = g.cost, finished_at = $8, lease_until = 0 "
                "FROM given g WHERE i.batch_id = $9 AND i.seq = g.seq AND i.job = $10 "
                "AND i.status = 'running' RETURNING i.cost) SELECT coalesce(sum(cost), 0) FROM kept",
                *[list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 7,
                now,
                job.batch_id,
                job.number,
            )
            await connection.execute("UPDATE batches SET cost = cost + $2 WHERE id = $1", job.batch_id, kept)
            await _end_if_done(connection, job.batch_id, now)
            return True

    async def close(self) -> None:
        await self._pool.close()


def _claim(batch_id: str, row: Any) -> Claim:
    return Claim(batch_id, int(row[0]), row[1], bytes(row[2]), int(row[3]), ItemFormat(row[4]))


async def _lease_job(connection: Db, batch_id: str, number: int, until: float) -> Job:
    """The job, leased to this process until `until` (its attempt counted), with its items."""
    await connection.execute(
        "UPDATE batch_jobs SET lease_until = $1, attempt = attempt + 1 WHERE batch_id = $2 AND number = $3",
        until,
        batch_id,
        number,
    )
    row = await connection.fetchrow(
        f"SELECT {_JOB_COLUMNS} FROM batch_jobs j JOIN batches b ON b.id = j.batch_id "
        "WHERE j.batch_id = $1 AND j.number = $2",
        batch_id,
        number,
    )
    items = await connection.fetch(
        f"SELECT {_ITEM_CLAIM} FROM batch_items WHERE batch_id = $1 AND job = $2 "
        "AND status = 'running' ORDER BY seq",
        batch_id,
        number,
    )
    return job_of(row, tuple(_claim(batch_id, item) for item in items))


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
    jobs = await connection.fetch(
        "SELECT provider, upstream_id, upstream_status, items FROM batch_jobs "
        "WHERE batch_id = $1 ORDER BY number",
        batch_id,
    )
    views = tuple(JobView(job[0], job[1], job[2], int(job[3])) for job in jobs)
    return _batch(row, counted([(s[0], int(s[1])) for s in statuses], int(row[8])), views)


def _batch(row: Any, counts: Any, jobs: tuple[JobView, ...] = ()) -> BatchView:
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
        mode=BatchMode(row[14]),
        jobs=jobs,
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
