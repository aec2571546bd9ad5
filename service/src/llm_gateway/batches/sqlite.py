"""The batch store on the ledger's SQLite file, through one connection in a thread of its own.
Every change is one `BEGIN IMMEDIATE` transaction: SQLite's write lock orders the claims and
outcomes of every worker process sharing the file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypeVar

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
from llm_gateway.batches.store import (
    HELD_BY_JOB,
    BatchFinishedError,
    completed_event,
    counted,
    job_of,
)
from llm_gateway.budgets.sqlite_store import SCHEMA as BUDGET_SCHEMA
from llm_gateway.ledger.rows import EXACT
from llm_gateway.ledger.sqlite_thread import SqliteThread, connect

T = TypeVar("T")

JOBS_TABLE = """CREATE TABLE IF NOT EXISTS batch_jobs (
        batch_id TEXT NOT NULL,
        number INTEGER NOT NULL,
        provider TEXT NOT NULL,
        state TEXT NOT NULL,
        items INTEGER NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        lease_until REAL NOT NULL DEFAULT 0,
        upstream_id TEXT NOT NULL DEFAULT '',
        upstream_status TEXT NOT NULL DEFAULT '',
        submitted_at REAL NOT NULL DEFAULT 0,
        next_poll REAL NOT NULL DEFAULT 0,
        cancel_sent INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (batch_id, number)
    ) STRICT"""

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS batches (
        id TEXT PRIMARY KEY,
        key_name TEXT NOT NULL,
        status TEXT NOT NULL,
        max_concurrent INTEGER NOT NULL,
        return_costs INTEGER NOT NULL,
        webhook TEXT NOT NULL,
        caller TEXT NOT NULL,
        tags TEXT NOT NULL,
        total INTEGER NOT NULL,
        cost TEXT NOT NULL DEFAULT '0',
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        paused_reason TEXT NOT NULL DEFAULT '',
        paused_until REAL NOT NULL DEFAULT 0,
        mode TEXT NOT NULL DEFAULT 'live'
    ) STRICT""",
    "CREATE INDEX IF NOT EXISTS batches_by_key ON batches (key_name, created_at)",
    "CREATE INDEX IF NOT EXISTS batches_by_time ON batches (created_at)",
    """CREATE TABLE IF NOT EXISTS batch_items (
        batch_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        custom_id TEXT NOT NULL,
        request BLOB NOT NULL,
        format TEXT NOT NULL DEFAULT 'grpc',
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_until REAL NOT NULL DEFAULT 0,
        response BLOB,
        error_code TEXT NOT NULL DEFAULT '',
        error_reason TEXT NOT NULL DEFAULT '',
        error_message TEXT NOT NULL DEFAULT '',
        cost TEXT NOT NULL DEFAULT '0',
        finished_at REAL,
        provider TEXT NOT NULL DEFAULT '',
        job INTEGER,
        PRIMARY KEY (batch_id, seq)
    ) STRICT""",
    "CREATE INDEX IF NOT EXISTS batch_items_open ON batch_items (batch_id, status, seq)",
    "CREATE INDEX IF NOT EXISTS batch_items_by_job ON batch_items (batch_id, job)",
    JOBS_TABLE,
)
_BATCH_COLUMNS = (
    "id, key_name, status, max_concurrent, return_costs, webhook, caller, tags, total, cost, "
    "created_at, started_at, finished_at, paused_reason, mode"
)
# Items that still hold the batch open: not started, or started (the lease may have run out).
_OPEN = "status IN ('pending', 'running')"
_OUTBOX = (
    "INSERT INTO webhook_outbox (webhook, event_id, event_type, body, created_at, next_at) "
    "VALUES (?, ?, 'batch_completed', ?, ?, ?) ON CONFLICT (event_id, webhook) DO NOTHING"
)


class SqliteBatchStore:
    def __init__(self, path: Path, *, busy_timeout: float) -> None:
        self._worker = SqliteThread(lambda: connect(path), busy_timeout=busy_timeout, name="batches")

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._worker.run(work)

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` in one write transaction."""

        def run(connection: sqlite3.Connection) -> T:
            connection.execute("BEGIN IMMEDIATE")
            try:
                done = work(connection)
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")
            return done

        return await self._run(run)

    async def migrate(self) -> None:
        def run(connection: sqlite3.Connection) -> None:
            # The outbox the completion webhooks go through is the budget alerts' one.
            for statement in (*SCHEMA, *BUDGET_SCHEMA):
                connection.execute(statement)

        await self._write(run)

    async def create(self, batch: NewBatch) -> None:
        def run(connection: sqlite3.Connection) -> None:
            connection.execute(
                f"INSERT INTO batches ({_BATCH_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, '0', ?, NULL, NULL, '', ?)",
                (
                    batch.id,
                    batch.key_name,
                    BatchStatus.QUEUED.value,
                    batch.max_concurrent,
                    int(batch.return_costs),
                    batch.webhook,
                    caller_text(batch.caller),
                    json.dumps(batch.tags, sort_keys=True),
                    len(batch.items),
                    batch.created_at,
                    batch.mode.value,
                ),
            )
            connection.executemany(
                "INSERT INTO batch_items (batch_id, seq, custom_id, request, format, status, provider) "
                "VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                [
                    (batch.id, seq, item.custom_id, item.request, item.format.value, item.provider)
                    for seq, item in enumerate(batch.items)
                ],
            )

        await self._write(run)

    async def get(self, batch_id: str) -> BatchView | None:
        return await self._run(lambda c: _view(c, batch_id))

    async def batches(
        self, key_name: str | None, before: tuple[float, str] | None, limit: int
    ) -> list[BatchView]:
        def run(connection: sqlite3.Connection) -> list[BatchView]:
            where: list[str] = []
            args: list[object] = []
            if key_name is not None:
                where.append("key_name = ?")
                args.append(key_name)
            if before is not None:
                where.append("(created_at, id) < (?, ?)")
                args.extend(before)
            clause = f"WHERE {' AND '.join(where)}" if where else ""
            ids = connection.execute(
                f"SELECT id FROM batches {clause} ORDER BY created_at DESC, id DESC LIMIT ?", (*args, limit)
            ).fetchall()
            return [view for (found,) in ids if (view := _view(connection, found)) is not None]

        return await self._run(run)

    async def results(self, batch_id: str, after_seq: int, limit: int) -> list[ItemView]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT seq, custom_id, status, attempts, response, error_code, error_reason, error_message "
                "FROM batch_items WHERE batch_id = ? AND seq > ? ORDER BY seq LIMIT ?",
                (batch_id, after_seq, limit),
            ).fetchall()
        )
        return [_item(row) for row in rows]

    async def active(self, now: float) -> list[str]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT id FROM batches WHERE status IN ('queued', 'running', 'paused', 'cancelling') "
                "AND paused_until <= ? AND mode = 'live' ORDER BY created_at",
                (now,),
            ).fetchall()
        )
        return [row[0] for row in rows]

    async def claim(self, batch_id: str, now: float, lease: float, most: int) -> list[Claim]:
        def run(connection: sqlite3.Connection) -> list[Claim]:
            row = connection.execute(
                "SELECT status, max_concurrent, paused_until FROM batches WHERE id = ?", (batch_id,)
            ).fetchone()
            if row is None:
                return []
            status, cap, paused_until = BatchStatus(row[0]), int(row[1]), float(row[2])
            if status is BatchStatus.CANCELLING:
                # Items a process died running will not run again: the batch ends without them.
                connection.execute(
                    "UPDATE batch_items SET status = 'cancelled', lease_until = 0 "
                    "WHERE batch_id = ? AND status = 'running' AND lease_until <= ?",
                    (batch_id, now),
                )
                _end_if_done(connection, batch_id, now)
                return []
            if not status.active or paused_until > now:
                return []
            (running,) = connection.execute(
                "SELECT count(*) FROM batch_items "
                "WHERE batch_id = ? AND status = 'running' AND lease_until > ?",
                (batch_id, now),
            ).fetchone()
            slots = min(most, cap - int(running))
            if slots <= 0:
                return []
            rows = connection.execute(
                "SELECT seq, custom_id, request, attempts, format FROM batch_items WHERE batch_id = ? AND "
                "(status = 'pending' OR (status = 'running' AND lease_until <= ?)) ORDER BY seq LIMIT ?",
                (batch_id, now, slots),
            ).fetchall()
            if not rows:
                _end_if_done(connection, batch_id, now)
                return []
            connection.executemany(
                "UPDATE batch_items SET status = 'running', attempts = attempts + 1, lease_until = ? "
                "WHERE batch_id = ? AND seq = ?",
                [(now + lease, batch_id, row[0]) for row in rows],
            )
            connection.execute(
                "UPDATE batches SET status = 'running', started_at = coalesce(started_at, ?), "
                "paused_reason = '' WHERE id = ?",
                (now, batch_id),
            )
            return [
                Claim(batch_id, seq, custom, request, tries + 1, ItemFormat(form))
                for seq, custom, request, tries, form in rows
            ]

        return await self._write(run)

    async def renew(self, claims: Sequence[Claim], until: float) -> None:
        if not claims:
            return
        await self._write(
            lambda c: c.executemany(
                "UPDATE batch_items SET lease_until = ? WHERE batch_id = ? AND seq = ? AND attempts = ? "
                "AND status = 'running'",
                [(until, claim.batch_id, claim.seq, claim.attempt) for claim in claims],
            )
        )

    async def finish(self, claim: Claim, outcome: Outcome, now: float) -> bool:
        def run(connection: sqlite3.Connection) -> bool:
            if not _keep(connection, claim.batch_id, claim.seq, outcome, now, "attempts", claim.attempt):
                return False
            _add_cost(connection, claim.batch_id, outcome.cost)
            _end_if_done(connection, claim.batch_id, now)
            return True

        return await self._write(run)

    async def pause(self, claim: Claim, reason: str, until: float) -> None:
        def run(connection: sqlite3.Connection) -> None:
            connection.execute(
                "UPDATE batch_items SET status = 'pending', attempts = attempts - 1, lease_until = 0 "
                "WHERE batch_id = ? AND seq = ? AND attempts = ? AND status = 'running'",
                (claim.batch_id, claim.seq, claim.attempt),
            )
            connection.execute(
                "UPDATE batches SET status = 'paused', paused_reason = ?, paused_until = ? "
                "WHERE id = ? AND status IN ('queued', 'running', 'paused')",
                (reason, until, claim.batch_id),
            )

        await self._write(run)

    async def cancel(self, batch_id: str, now: float) -> BatchView | None:
        def run(connection: sqlite3.Connection) -> BatchView | None:
            found = connection.execute("SELECT status FROM batches WHERE id = ?", (batch_id,)).fetchone()
            if found is None:
                return None
            if not BatchStatus(found[0]).active:
                raise BatchFinishedError(batch_id)
            connection.execute(
                "UPDATE batch_items SET status = 'cancelled', lease_until = 0 WHERE batch_id = ? "
                "AND (status = 'pending' OR (status = 'running' AND lease_until <= ?))",
                (batch_id, now),
            )
            connection.execute(
                "UPDATE batches SET status = 'cancelling', paused_reason = '' WHERE id = ?", (batch_id,)
            )
            _end_if_done(connection, batch_id, now)
            return _view(connection, batch_id)

        return await self._write(run)

    # -- provider mode ---------------------------------------------------------------------------

    async def claim_job(self, now: float, lease: float) -> Job | None:
        def run(connection: sqlite3.Connection) -> Job | None:
            while True:  # a stale job of a batch being cancelled is ended, and the next one looked at
                stale = connection.execute(
                    "SELECT j.batch_id, j.number, j.provider, b.status FROM batch_jobs j "
                    "JOIN batches b ON b.id = j.batch_id "
                    "WHERE j.state = 'preparing' AND j.lease_until <= ? LIMIT 1",
                    (now,),
                ).fetchone()
                if stale is None:
                    break
                batch_id, number, provider, status = stale
                if BatchStatus(status) is BatchStatus.CANCELLING:
                    connection.execute(
                        "UPDATE batch_items SET status = 'cancelled', lease_until = 0 "
                        "WHERE batch_id = ? AND job = ? AND status = 'running'",
                        (batch_id, number),
                    )
                    connection.execute(
                        "UPDATE batch_jobs SET state = 'done' WHERE batch_id = ? AND number = ?",
                        (batch_id, number),
                    )
                    _end_if_done(connection, batch_id, now)
                    continue
                connection.execute(
                    "UPDATE batch_items SET attempts = attempts + 1 "
                    "WHERE batch_id = ? AND job = ? AND status = 'running'",
                    (batch_id, number),
                )
                return _lease_job(connection, batch_id, int(number), now + lease)
            fresh = connection.execute(
                "SELECT i.batch_id, i.provider FROM batches b JOIN batch_items i ON i.batch_id = b.id "
                "WHERE b.mode = 'provider' AND b.status IN ('queued', 'running', 'paused') "
                "AND b.paused_until <= ? AND i.status = 'pending' AND i.job IS NULL "
                "ORDER BY b.created_at LIMIT 1",
                (now,),
            ).fetchone()
            if fresh is None:
                return None
            batch_id, provider = fresh
            (number,) = connection.execute(
                "SELECT coalesce(max(number), 0) + 1 FROM batch_jobs WHERE batch_id = ?", (batch_id,)
            ).fetchone()
            items = connection.execute(
                "UPDATE batch_items SET job = ?, status = 'running', attempts = attempts + 1, "
                "lease_until = ? WHERE batch_id = ? AND provider = ? AND status = 'pending' "
                "AND job IS NULL",
                (number, HELD_BY_JOB, batch_id, provider),
            ).rowcount
            connection.execute(
                "INSERT INTO batch_jobs (batch_id, number, provider, state, items, lease_until) "
                "VALUES (?, ?, ?, 'preparing', ?, 0)",
                (batch_id, number, provider, items),
            )
            connection.execute(
                "UPDATE batches SET status = 'running', started_at = coalesce(started_at, ?), "
                "paused_reason = '' WHERE id = ?",
                (now, batch_id),
            )
            return _lease_job(connection, batch_id, int(number), now + lease)

        return await self._write(run)

    async def renew_job(self, job: Job, until: float) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE batch_jobs SET lease_until = ? WHERE batch_id = ? AND number = ? "
                "AND state = 'preparing' AND attempt = ?",
                (until, job.batch_id, job.number, job.attempt),
            )
        )

    async def submitted(self, job: Job, upstream_id: str, status: str, now: float, poll_at: float) -> bool:
        def run(connection: sqlite3.Connection) -> bool:
            return bool(
                connection.execute(
                    "UPDATE batch_jobs SET state = 'submitted', upstream_id = ?, upstream_status = ?, "
                    "submitted_at = ?, next_poll = ? WHERE batch_id = ? AND number = ? "
                    "AND state = 'preparing' AND attempt = ?",
                    (upstream_id, status, now, poll_at, job.batch_id, job.number, job.attempt),
                ).rowcount
            )

        return await self._write(run)

    async def release_job(self, job: Job, reason: str, until: float) -> None:
        def run(connection: sqlite3.Connection) -> None:
            gone = connection.execute(
                "DELETE FROM batch_jobs WHERE batch_id = ? AND number = ? AND state = 'preparing' "
                "AND attempt = ?",
                (job.batch_id, job.number, job.attempt),
            ).rowcount
            if not gone:
                return
            connection.execute(
                "UPDATE batch_items SET status = 'pending', job = NULL, attempts = attempts - 1, "
                "lease_until = 0 WHERE batch_id = ? AND job = ? AND status = 'running'",
                (job.batch_id, job.number),
            )
            connection.execute(
                "UPDATE batches SET status = 'paused', paused_reason = ?, paused_until = ? "
                "WHERE id = ? AND status IN ('queued', 'running', 'paused')",
                (reason, until, job.batch_id),
            )

        await self._write(run)

    async def due_jobs(self, now: float, poll_at: float, most: int) -> list[Job]:
        def run(connection: sqlite3.Connection) -> list[Job]:
            rows = connection.execute(
                f"SELECT {_JOB_COLUMNS} FROM batch_jobs j JOIN batches b ON b.id = j.batch_id "
                "WHERE j.state = 'submitted' AND j.next_poll <= ? ORDER BY j.next_poll LIMIT ?",
                (now, most),
            ).fetchall()
            connection.executemany(
                "UPDATE batch_jobs SET next_poll = ? WHERE batch_id = ? AND number = ?",
                [(poll_at, row[0], row[1]) for row in rows],
            )
            return [job_of(row) for row in rows]

        return await self._write(run)

    async def polled(self, job: Job, status: str, cancel_sent: bool, poll_at: float) -> None:
        await self._write(
            lambda c: c.execute(
                "UPDATE batch_jobs SET upstream_status = coalesce(nullif(?, ''), upstream_status), "
                "cancel_sent = ?, next_poll = ? "
                "WHERE batch_id = ? AND number = ? AND state = 'submitted'",
                (status, int(cancel_sent), poll_at, job.batch_id, job.number),
            )
        )

    async def job_items(self, job: Job) -> list[Claim]:
        rows = await self._run(
            lambda c: c.execute(
                "SELECT seq, custom_id, request, attempts, format FROM batch_items "
                "WHERE batch_id = ? AND job = ? AND status = 'running' ORDER BY seq",
                (job.batch_id, job.number),
            ).fetchall()
        )
        return [
            Claim(job.batch_id, seq, custom, bytes(req), tries, ItemFormat(form))
            for seq, custom, req, tries, form in rows
        ]

    async def finish_job(self, job: Job, outcomes: dict[int, Outcome], now: float) -> bool:
        def run(connection: sqlite3.Connection) -> bool:
            if not connection.execute(
                "UPDATE batch_jobs SET state = 'done' WHERE batch_id = ? AND number = ? "
                "AND state = 'submitted'",
                (job.batch_id, job.number),
            ).rowcount:
                return False
            total = Decimal(0)
            for seq, outcome in outcomes.items():
                if _keep(connection, job.batch_id, seq, outcome, now, "job", job.number):
                    total = EXACT.add(total, outcome.cost)
            _add_cost(connection, job.batch_id, total)
            _end_if_done(connection, job.batch_id, now)
            return True

        return await self._write(run)

    async def close(self) -> None:
        await self._worker.close()


_JOB_COLUMNS = (
    "j.batch_id, j.number, j.provider, b.key_name, j.state, j.attempt, j.upstream_id, j.submitted_at, "
    "b.status = 'cancelling', j.cancel_sent"
)


def _lease_job(connection: sqlite3.Connection, batch_id: str, number: int, until: float) -> Job:
    """The job, leased to this process until `until` (its attempt counted), with its items."""
    connection.execute(
        "UPDATE batch_jobs SET lease_until = ?, attempt = attempt + 1 WHERE batch_id = ? AND number = ?",
        (until, batch_id, number),
    )
    row = connection.execute(
        f"SELECT {_JOB_COLUMNS} FROM batch_jobs j JOIN batches b ON b.id = j.batch_id "
        "WHERE j.batch_id = ? AND j.number = ?",
        (batch_id, number),
    ).fetchone()
    items = connection.execute(
        "SELECT seq, custom_id, request, attempts, format FROM batch_items "
        "WHERE batch_id = ? AND job = ? AND status = 'running' ORDER BY seq",
        (batch_id, number),
    ).fetchall()
    claims = tuple(
        Claim(batch_id, seq, custom, bytes(req), tries, ItemFormat(form))
        for seq, custom, req, tries, form in items
    )
    return job_of(row, claims)


def _keep(
    connection: sqlite3.Connection,
    batch_id: str,
    seq: int,
    outcome: Outcome,
    now: float,
    fence: Literal["attempts", "job"],
    holder: int,
) -> bool:
    """Keeps an item's outcome if it still runs under `holder` (its attempt, or its job)."""
    error = outcome.error or ItemError("", "", "")
    return bool(
        connection.execute(
            "UPDATE batch_items SET status = ?, response = ?, error_code = ?, error_reason = ?, "
            "error_message = ?, cost = ?, finished_at = ?, lease_until = 0 "
            f"WHERE batch_id = ? AND seq = ? AND {fence} = ? AND status = 'running'",
            (
                outcome.status.value,
                outcome.response,
                error.code,
                error.reason,
                error.message,
                str(outcome.cost),
                now,
                batch_id,
                seq,
                holder,
            ),
        ).rowcount
    )


def _add_cost(connection: sqlite3.Connection, batch_id: str, cost: Decimal) -> None:
    (before,) = connection.execute("SELECT cost FROM batches WHERE id = ?", (batch_id,)).fetchone()
    connection.execute(
        "UPDATE batches SET cost = ? WHERE id = ?", (str(EXACT.add(Decimal(before), cost)), batch_id)
    )


def _end_if_done(connection: sqlite3.Connection, batch_id: str, now: float) -> None:
    """Ends the batch when none of its items is open: completed, or cancelled when it was being
    cancelled; queues its webhook event in the same transaction."""
    (still,) = connection.execute(
        f"SELECT count(*) FROM batch_items WHERE batch_id = ? AND {_OPEN}", (batch_id,)
    ).fetchone()
    if still:
        return
    ended = connection.execute(
        "UPDATE batches SET status = CASE status WHEN 'cancelling' THEN 'cancelled' ELSE 'completed' END, "
        "finished_at = ? WHERE id = ? AND status IN ('queued', 'running', 'paused', 'cancelling')",
        (now, batch_id),
    ).rowcount
    view = _view(connection, batch_id)
    if ended and view is not None and view.webhook:
        event_id, body = completed_event(view, now)
        connection.execute(_OUTBOX, (view.webhook, event_id, body, now, now))


def _view(connection: sqlite3.Connection, batch_id: str) -> BatchView | None:
    row = connection.execute(f"SELECT {_BATCH_COLUMNS} FROM batches WHERE id = ?", (batch_id,)).fetchone()
    if row is None:
        return None
    statuses = connection.execute(
        "SELECT status, count(*) FROM batch_items WHERE batch_id = ? GROUP BY status", (batch_id,)
    ).fetchall()
    jobs = connection.execute(
        "SELECT provider, upstream_id, upstream_status, items FROM batch_jobs "
        "WHERE batch_id = ? ORDER BY number",
        (batch_id,),
    ).fetchall()
    return _batch(row, counted(statuses, int(row[8])), tuple(JobView(*job) for job in jobs))


def _batch(row: Sequence[Any], counts: Any, jobs: tuple[JobView, ...] = ()) -> BatchView:
    return BatchView(
        id=row[0],
        key_name=row[1],
        status=BatchStatus(row[2]),
        max_concurrent=int(row[3]),
        return_costs=bool(row[4]),
        webhook=row[5],
        caller=caller_of(row[6]),
        tags=json.loads(row[7]),
        created_at=float(row[10]),
        started_at=None if row[11] is None else float(row[11]),
        finished_at=None if row[12] is None else float(row[12]),
        paused_reason=row[13],
        cost=Decimal(row[9]),
        counts=counts,
        mode=BatchMode(row[14]),
        jobs=jobs,
    )


def _item(row: Sequence[Any]) -> ItemView:
    seq, custom_id, status, attempts, response, code, reason, message = row
    return ItemView(
        seq=int(seq),
        custom_id=custom_id,
        status=ItemStatus(status),
        attempts=int(attempts),
        response=None if response is None else bytes(response),
        error=ItemError(code, reason, message) if code else None,
    )
