"""What a ledger backend does, and opening the one a URL names."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from llm_gateway.gateway.record import CallRecord
from llm_gateway.ledger.rows import Row
from llm_gateway.ledger.sql import Dialect, Query
from llm_gateway.ledger.url import Backend, LedgerUrl


@dataclass(frozen=True, slots=True)
class Pruned:
    """What retention removed: rows deleted one by one, and whole partitions dropped."""

    rows: int = 0
    partitions: tuple[str, ...] = ()


class LedgerStore(Protocol):
    """One ledger database. Every method may raise the driver's errors (the database is down,
    locked, full); the writer treats any of them as "not now" and spools."""

    @property
    def backend(self) -> Backend: ...

    @property
    def dialect(self) -> Dialect: ...

    async def migrate(self) -> int:
        """Applies the schema migrations not yet applied (safe to run from several processes at
        once, and again); returns the schema version."""
        ...

    async def insert(self, rows: Sequence[Row]) -> None:
        """Writes rows in one transaction. A row whose call is already stored is skipped, so a
        batch written twice (replayed from the spool after an ambiguous failure) is stored once."""
        ...

    async def fetch(self, query: Query) -> list[Sequence[Any]]: ...

    async def fetch_records(self, query: Query) -> list[CallRecord]: ...

    async def prune(self, before: datetime) -> Pruned:
        """Removes the calls received before `before`."""
        ...

    async def close(self) -> None: ...


def open_store(url: LedgerUrl, *, timeout: float, pool_size: int = 4) -> LedgerStore:
    """The store for `url`, not yet connected: connections open on first use, so a database that
    is down at start-up does not stop the gateway. `timeout` bounds a connection attempt and the
    wait for a lock; `pool_size` caps PostgreSQL connections."""
    if url.backend is Backend.SQLITE:
        from llm_gateway.ledger.sqlite import SqliteStore

        assert url.path is not None
        return SqliteStore(url.path, busy_timeout=timeout)
    from llm_gateway.ledger.postgres import PostgresStore

    return PostgresStore(url.url, timeout=timeout, pool_size=pool_size)
