"""Writes every call to the ledger without ever holding a call up.

`call_ended` (the gateway's observer hook, run in the call's own task) only appends the record to a
bounded in-memory queue. One background task writes the queue to the database in batches: as soon
as `batch_size` records wait, or `flush_interval` after the first of them arrived, whichever comes
first, each flush taking everything queued in one transaction (so a slow database gets bigger
batches, not a longer queue).

When a write fails or takes longer than `write_timeout` (the database is down, locked or slow),
the batch goes to the spool, an append-only file forced to disk, and so do the next batches until
a write goes through again (retried after 0.5 s, doubling up to 30 s). Then the spool is replayed
into the database, a chunk between flushes, and removed. Only when the queue is full (the
database and the spool have both been failing for as long as the queue lasts) are records lost:
each is counted in `stats.dropped` and logged (an error line, at most one a second).

`close()` writes out everything queued (to the database, else the spool) and stops: on SIGTERM,
after the server has drained its calls, nothing is lost. A `kill -9` loses what was queued and not
yet written: at most about one flush interval of calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from llm_gateway.gateway.record import CallRecord
from llm_gateway.ledger.rows import Row, encode
from llm_gateway.ledger.spool import Spool
from llm_gateway.ledger.store import LedgerStore

_log = logging.getLogger("llm_gateway.ledger")

_FIRST_RETRY = 0.5
_LAST_RETRY = 30.0
_REPLAY_CHUNK = 1000
_LOSS_LOG_EVERY = 1.0


@dataclass(frozen=True, slots=True)
class WriterStats:
    """Counts since start; `dropped` is what was lost (metrics export it)."""

    received: int  # records handed to call_ended
    written: int  # stored in the database, directly or from the spool
    spooled: int  # written to the spool (some of them since replayed)
    replayed: int  # moved from the spool into the database
    dropped: int  # lost: the queue was full, or a spooled line could not be read back
    queued: int  # waiting in memory now


class LedgerWriter:
    """A `CallObserver` that stores every record in a ledger store."""

    def __init__(
        self,
        store: LedgerStore,
        spool: Spool,
        *,
        batch_size: int = 100,
        flush_interval: float = 0.1,
        queue_size: int = 10_000,
        write_timeout: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._spool = spool
        self._batch_size = batch_size
        self._interval = flush_interval
        self._capacity = queue_size
        self._write_timeout = write_timeout
        self._clock = clock
        self._queue: deque[CallRecord] = deque()
        self._held = 0  # records taken from the queue and not yet stored or spooled
        self._first_at = 0.0  # when the oldest queued record arrived
        self._pending = asyncio.Event()  # the queue is not empty
        self._full = asyncio.Event()  # a batch is ready, or the writer is closing
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._migrated = False
        self._down_since: float | None = None  # the database's current outage began
        self._retry_at = 0.0  # no database write before this (during an outage)
        self._retry_delay = _FIRST_RETRY
        self._stalled_until = 0.0  # neither database nor spool took the last batch
        self._received = self._written = self._spooled = self._replayed = self._dropped = 0
        self._unreported_losses = 0
        self._last_loss_log = -_LOSS_LOG_EVERY

    # -- the hot path ------------------------------------------------------------------------

    def call_ended(self, record: CallRecord) -> None:
        self._received += 1
        if self._closing and self._task is None:
            self._lose(1, "the ledger writer is closed")
            return
        if len(self._queue) + self._held >= self._capacity:
            self._lose(1, "the ledger queue is full")
            return
        if not self._queue:
            self._first_at = self._clock()
            self._pending.set()
        self._queue.append(record)
        if len(self._queue) >= self._batch_size:
            self._full.set()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the background writer (on the running event loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ledger-writer")

    async def close(self) -> None:
        """Writes out everything queued and stops. Records arriving afterwards are counted lost."""
        self._closing = True
        self._full.set()
        self._pending.set()
        if self._task is not None:
            try:
                await self._task
            finally:
                self._task = None
        if self._queue:  # arrived after the last flush had begun
            self._lose(len(self._queue), "the ledger writer closed before writing them")
            self._queue.clear()
        await asyncio.to_thread(self._spool.close)

    async def flush(self) -> None:
        """Waits until everything queued now has been stored or spooled."""
        target = self._received - self._dropped
        self._full.set()
        self._pending.set()
        while self._written - self._replayed + self._spooled < target:
            if self._task is None or self._task.done():
                return
            await asyncio.sleep(0.005)

    @property
    def stats(self) -> WriterStats:
        return WriterStats(
            received=self._received,
            written=self._written,
            spooled=self._spooled,
            replayed=self._replayed,
            dropped=self._dropped,
            queued=len(self._queue) + self._held,
        )

    # -- the background task -----------------------------------------------------------------

    async def _run(self) -> None:
        # Migrate now rather than at the first write, so the ledger can be read at once; a
        # database that is down starts the writer in an outage (spooling, retrying).
        try:
            async with asyncio.timeout(self._write_timeout):
                await self._store.migrate()
            self._migrated = True
        except Exception as exc:
            self._note_outage(exc)
        taken = await asyncio.to_thread(self._spool.adopt)
        if taken:
            _log.info({"event": "ledger_spool_adopted", "files": taken})
        while True:
            try:
                await self._wait()
                if self._queue:
                    await self._flush()
                if self._closing and not self._queue:
                    return
                if self._spool.waiting and self._database_allowed():
                    await self._replay_chunk()
            except Exception:
                # A bug, not an outage (those are handled above): never let it stop the writer.
                _log.exception("ledger writer failed; going on")
                await asyncio.sleep(self._interval)

    async def _wait(self) -> None:
        if self._closing:
            return
        now = self._clock()
        if now < self._stalled_until:
            await self._sleep_unless_closing(self._stalled_until - now)
            return
        if not self._queue:
            timeout = None
            if self._spool.waiting:
                timeout = max(self._retry_at - now, 0.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._pending.wait()
            self._pending.clear()
        if self._queue and len(self._queue) < self._batch_size and not self._closing:
            remaining = self._first_at + self._interval - self._clock()
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await self._full.wait()
        self._full.clear()

    async def _sleep_unless_closing(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while not self._closing:
                    self._full.clear()
                    await self._full.wait()

    async def _flush(self) -> None:
        batch = list(self._queue)
        self._queue.clear()
        self._pending.clear()
        self._held = len(batch)
        try:
            batch, rows = self._encode(batch)
            if self._database_allowed() and await self._write(rows):
                self._written += len(rows)
                return
            try:
                await asyncio.to_thread(self._spool.append, rows)
            except OSError as exc:
                self._spool_failed(batch, exc)
                return
            self._spooled += len(rows)
            self._stalled_until = 0.0
        finally:
            self._held = 0

    def _encode(self, batch: list[CallRecord]) -> tuple[list[CallRecord], list[Row]]:
        """The rows of a batch, and the records they came from (one that cannot be turned into a
        row, a bug, is logged and counted lost rather than stopping the rest)."""
        kept, rows = [], []
        for record in batch:
            try:
                rows.append(encode(record))
            except Exception:
                _log.exception("ledger could not encode call %s", getattr(record, "id", "?"))
                self._lose(1, "a call could not be turned into a row")
                continue
            kept.append(record)
        return kept, rows

    def _spool_failed(self, batch: list[CallRecord], exc: OSError) -> None:
        if self._closing:
            self._lose(len(batch), f"neither the database nor the spool took the last records: {exc}")
            return
        # Keep the batch (it still counts against the queue's capacity) and try again later.
        self._queue.extendleft(reversed(batch))
        self._pending.set()
        self._stalled_until = self._clock() + self._retry_delay
        _log.error(
            {
                "event": "ledger_spool_failed",
                "error": str(exc),
                "spool_dir": str(self._spool.directory),
                "queued": len(self._queue),
            }
        )

    def _database_allowed(self) -> bool:
        return self._down_since is None or self._clock() >= self._retry_at

    async def _write(self, rows: list[Row]) -> bool:
        """Stores rows; False (and the outage noted) when the database did not take them."""
        try:
            async with asyncio.timeout(self._write_timeout):
                if not self._migrated:
                    await self._store.migrate()
                    self._migrated = True
                await self._store.insert(rows)
        except Exception as exc:
            self._note_outage(exc)
            return False
        if self._down_since is not None:
            _log.warning(
                {
                    "event": "ledger_available",
                    "down_s": round(self._clock() - self._down_since, 3),
                    "spooled": self._spooled - self._replayed,
                }
            )
            self._down_since = None
            self._retry_delay = _FIRST_RETRY
            taken = await asyncio.to_thread(self._spool.adopt)
            if taken:
                _log.info({"event": "ledger_spool_adopted", "files": taken})
        return True

    def _note_outage(self, exc: BaseException) -> None:
        now = self._clock()
        if self._down_since is None:
            self._down_since = now
            _log.warning(
                {
                    "event": "ledger_unavailable",
                    "error": type(exc).__name__
                    if isinstance(exc, TimeoutError)
                    else f"{type(exc).__name__}: {exc}",
                    "spool_dir": str(self._spool.directory),
                }
            )
        else:
            self._retry_delay = min(self._retry_delay * 2, _LAST_RETRY)
        self._retry_at = now + self._retry_delay

    async def _replay_chunk(self) -> None:
        chunk = await asyncio.to_thread(self._spool.read, _REPLAY_CHUNK)
        if chunk is None:
            return
        if chunk.skipped:
            self._lose(chunk.skipped, f"unreadable lines in the spool file {chunk.path.name}")
        if chunk.rows and not await self._write(chunk.rows):
            return
        self._written += len(chunk.rows)
        self._replayed += len(chunk.rows)
        await asyncio.to_thread(self._spool.replayed, chunk)

    def _lose(self, count: int, why: str) -> None:
        self._dropped += count
        self._unreported_losses += count
        now = self._clock()
        if now - self._last_loss_log >= _LOSS_LOG_EVERY:
            self._last_loss_log = now
            _log.error(
                {
                    "event": "ledger_records_lost",
                    "lost": self._unreported_losses,
                    "lost_total": self._dropped,
                    "reason": why,
                }
            )
            self._unreported_losses = 0
