"""The ledger of one gateway process: its store, the writer that observes calls, the queries, and
retention, started and stopped with the server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

from llm_gateway import background
from llm_gateway.config.schema import LedgerConfig
from llm_gateway.gateway.record import CallRecord
from llm_gateway.ledger.spool import Spool
from llm_gateway.ledger.store import LedgerStore, Pruned, open_store
from llm_gateway.ledger.url import LedgerUrl, parse_url, redacted
from llm_gateway.ledger.usage import UsageQueries
from llm_gateway.ledger.writer import LedgerWriter, WriterStats

_log = logging.getLogger("llm_gateway.ledger")

# Retention runs this long after start (not at once: start-up has enough to do) and then hourly.
_FIRST_PRUNE = 60.0
_PRUNE_EVERY = 3600.0


class Ledger:
    """A `CallObserver`: hand it to the gateway's observers, `start()` it with the server, and
    `close()` it after the server has drained (it writes out every call it was told of)."""

    def __init__(self, config: LedgerConfig, store: LedgerStore | None = None) -> None:
        self.config = config
        self.url: LedgerUrl = parse_url(config.url.get_secret_value())
        self.store = store or open_store(self.url, timeout=config.write_timeout, pool_size=config.pool_size)
        self.writer = LedgerWriter(
            self.store,
            Spool(config.spool_dir),
            batch_size=config.batch_size,
            flush_interval=config.flush_interval,
            queue_size=config.queue_size,
            write_timeout=config.write_timeout,
        )
        self.queries = UsageQueries(self.store, before_read=self._written_out)
        self._retention: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: LedgerConfig) -> Ledger | None:
        """The configured ledger, or None when `ledger.enabled` is off."""
        return cls(config) if config.enabled else None

    def call_ended(self, record: CallRecord) -> None:
        self.writer.call_ended(record)

    async def _written_out(self) -> None:
        """Before a query: the calls this process has queued are written out (read-your-writes in
        one process; other workers' calls may lag one flush interval), waiting at most
        `write_timeout`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.write_timeout):
                await self.writer.flush()

    @property
    def stats(self) -> WriterStats:
        return self.writer.stats

    async def start(self) -> None:
        """Starts writing. The schema is migrated before the first write (a database that is down
        now is caught up with later, from the spool), so start-up never waits for the database."""
        _log.info(
            {
                "event": "ledger_started",
                "backend": self.url.backend.value,
                "url": redacted(self.url.url),
                "spool_dir": str(self.config.spool_dir),
                "retention_days": self.config.retention_days,
            }
        )
        self.writer.start()
        if self.config.retention_days and self._retention is None:
            self._retention = asyncio.get_running_loop().create_task(
                self._keep_pruning(), name="ledger-retention"
            )

    async def close(self) -> None:
        """Writes out everything queued (to the database, else the spool) and releases the store."""
        retention, self._retention = self._retention, None
        await background.stop(retention)
        await self.writer.close()
        await self.store.close()
        stats = self.writer.stats
        _log.info(
            {
                "event": "ledger_closed",
                "written": stats.written,
                "spooled_unreplayed": stats.spooled - stats.replayed,
                "dropped": stats.dropped,
            }
        )

    async def prune(self, now: datetime | None = None) -> Pruned:
        """Removes the calls older than `retention_days` (nothing when it is 0)."""
        if not self.config.retention_days:
            return Pruned()
        cutoff = (now or datetime.now(UTC)) - timedelta(days=self.config.retention_days)
        pruned = await self.store.prune(cutoff)
        if pruned.rows or pruned.partitions:
            _log.info(
                {
                    "event": "ledger_pruned",
                    "before": cutoff.isoformat(),
                    "rows": pruned.rows,
                    "partitions": list(pruned.partitions),
                }
            )
        return pruned

    async def _keep_pruning(self) -> None:
        await asyncio.sleep(_FIRST_PRUNE)
        while True:
            try:
                await self.store.migrate()
                await self.prune()
            except Exception as exc:
                _log.warning({"event": "ledger_prune_failed", "error": f"{type(exc).__name__}: {exc}"})
            await asyncio.sleep(_PRUNE_EVERY)
