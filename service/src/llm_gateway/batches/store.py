"""What a batch store does, and opening the one the ledger's URL names: batches and their items
live in the ledger's database (SQLite on one machine, PostgreSQL for a fleet), where every worker
and replica claims items under a lease, so an item runs in one process at a time and one that was
running in a process that died runs again."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from llm_gateway.batches.model import (
    BatchView,
    Claim,
    Counts,
    ItemView,
    Job,
    JobState,
    NewBatch,
    Outcome,
)
from llm_gateway.ledger.url import Backend, LedgerUrl
from llm_gateway.pricing import format_decimal

# An item in a provider-mode job: its lease is the job's, so the live claims never take it.
HELD_BY_JOB = 1e15


class BatchFinishedError(Exception):
    """The batch has completed or been cancelled already."""


class BatchStore(Protocol):
    """Every method may raise the driver's errors (the database is down or locked)."""

    async def migrate(self) -> None: ...

    async def create(self, batch: NewBatch) -> None: ...

    async def get(self, batch_id: str) -> BatchView | None: ...

    async def batches(
        self, key_name: str | None, before: tuple[float, str] | None, limit: int
    ) -> list[BatchView]:
        """Newest first, created before `before` (created_at, id); of one key unless None."""
        ...

    async def results(self, batch_id: str, after_seq: int, limit: int) -> list[ItemView]:
        """The batch's items after `after_seq`, in order."""
        ...

    async def active(self, now: float) -> list[str]:
        """Batches that may have items to start now (not paused, not ended)."""
        ...

    async def claim(self, batch_id: str, now: float, lease: float, most: int) -> list[Claim]:
        """Up to `most` of the batch's items to run, within its concurrency cap counted across
        every process; items whose lease ran out are claimed again (their attempt counted)."""
        ...

    async def renew(self, claims: Sequence[Claim], until: float) -> None: ...

    async def finish(self, claim: Claim, outcome: Outcome, now: float) -> bool:
        """Keeps the item's outcome unless another attempt took it over; ends the batch (and
        queues its webhook) when it was the last open item. False when the outcome was not kept."""
        ...

    async def pause(self, claim: Claim, reason: str, until: float) -> None:
        """Puts the item back (this attempt not counted) and pauses the batch until `until`."""
        ...

    async def cancel(self, batch_id: str, now: float) -> BatchView | None:
        """Cancels items not started; None when there is no such batch; `BatchFinishedError`."""
        ...

    # Provider mode: items go to their provider's batch API as jobs, one per provider and batch.

    async def claim_job(self, now: float, lease: float) -> Job | None:
        """A provider-mode batch's pending items of one provider, as a new job leased to this
        process for preparing and submitting; or a job whose preparing process stopped, again
        (its items' attempts counted)."""
        ...

    async def renew_job(self, job: Job, until: float) -> None: ...

    async def submitted(self, job: Job, upstream_id: str, status: str, now: float, poll_at: float) -> bool:
        """Keeps the job's upstream id (first polled at `poll_at`); False when another attempt
        took the job over meanwhile."""
        ...

    async def release_job(self, job: Job, reason: str, until: float) -> None:
        """Puts a job not submitted back (its items pending, attempts not counted) and pauses
        its batch until `until`."""
        ...

    async def due_jobs(self, now: float, poll_at: float, most: int) -> list[Job]:
        """Submitted jobs due a poll now, each set to be polled next at `poll_at` (so one process
        polls each)."""
        ...

    async def polled(self, job: Job, status: str, cancel_sent: bool, poll_at: float) -> None:
        """Keeps what the provider said of the job; it is polled next at `poll_at`."""
        ...

    async def job_items(self, job: Job) -> list[Claim]:
        """The job's items still waiting for their outcome."""
        ...

    async def finish_job(self, job: Job, outcomes: dict[int, Outcome], now: float) -> bool:
        """Keeps every item's outcome (by seq) and ends the job, in one transaction; ends the batch
        when nothing is left open. False when the job had been finished already."""
        ...

    async def close(self) -> None: ...


def job_of(row: Any, claims: tuple[Claim, ...] = ()) -> Job:
    """A job from (batch_id, number, provider, key_name, state, attempt, upstream_id, submitted_at,
    cancelling, cancel_sent)."""
    return Job(
        batch_id=row[0],
        number=int(row[1]),
        provider=row[2],
        key_name=row[3],
        state=JobState(row[4]),
        attempt=int(row[5]),
        upstream_id=row[6],
        submitted_at=float(row[7]),
        cancelling=bool(row[8]),
        cancel_sent=bool(row[9]),
        claims=claims,
    )


def completed_event(batch: BatchView, now: float) -> tuple[str, bytes]:
    """The `batch_completed` webhook event of a batch that has ended: its id and body."""
    counts = batch.counts
    event_id = f"evt_batch_{batch.id.removeprefix('batch_')}"
    payload = {
        "type": "batch_completed",
        "event_id": event_id,
        "batch_id": batch.id,
        "status": batch.status.value,
        "total_requests": counts.total,
        "successful_requests": counts.succeeded,
        "failed_requests": counts.failed,
        "cancelled_requests": counts.cancelled,
        "total_cost": format_decimal(batch.cost),
        "currency": "USD",
        "created_at": datetime.fromtimestamp(batch.created_at, UTC).isoformat(),
        "finished_at": datetime.fromtimestamp(now, UTC).isoformat(),
    }
    return event_id, json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


def counted(rows: Sequence[tuple[str, int]], total: int) -> Counts:
    """Counts from (item status, how many) rows."""
    found = dict(rows)
    return Counts(
        total=total,
        succeeded=found.get("succeeded", 0),
        failed=found.get("failed", 0),
        pending=found.get("pending", 0),
        running=found.get("running", 0),
        cancelled=found.get("cancelled", 0),
    )


def open_batch_store(url: LedgerUrl, *, timeout: float, pool_size: int = 4) -> BatchStore:
    """The batch store in the ledger's database, not yet connected."""
    if url.backend is Backend.SQLITE:
        from llm_gateway.batches.sqlite import SqliteBatchStore

        assert url.path is not None
        return SqliteBatchStore(url.path, busy_timeout=timeout)
    from llm_gateway.batches.postgres import PostgresBatchStore

    return PostgresBatchStore(url.url, timeout=timeout, pool_size=pool_size)
