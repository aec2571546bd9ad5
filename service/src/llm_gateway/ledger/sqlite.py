"""The embedded ledger: one SQLite file in WAL mode, through the standard library's `sqlite3` in
worker threads (measured against aiosqlite and apsw: docs/ledger.md).

Writes go through one thread and one connection, reads through another, so a summary never waits
behind a batch and the event loop never waits for either. WAL lets readers run while a batch is
written, and every worker process of `serve --workers N` writes the same file: a write waits up to
the busy timeout for another process's transaction. `synchronous=FULL` makes each committed batch
survive a power cut, not only a crash of the process.

SQLite has no decimal type, so money is stored as exact decimal text in a STRICT table (no column
affinity can turn it into a float) and summed by `ledger_decimal_sum`, an aggregate registered on
the read connection that adds `Decimal`s with no rounding. Percentiles come from
`ledger_percentile`, which interpolates exactly as PostgreSQL's `percentile_cont` does.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar, cast

from llm_gateway.gateway.record import CallRecord
from llm_gateway.ledger.query import Granularity
from llm_gateway.ledger.rows import (
    BOOLEAN_COLUMNS,
    COLUMNS,
    EXACT,
    JSON_COLUMNS,
    Row,
    column_values,
    decode,
    micros,
    money_text,
)
from llm_gateway.ledger.sql import TABLE, Dialect, Query, row_dict
from llm_gateway.ledger.store import Pruned
from llm_gateway.ledger.url import Backend

T = TypeVar("T")

# STRICT tables arrived in SQLite 3.37.
_MINIMUM_VERSION = (3, 37, 0)
# Retention deletes this many rows per transaction, so other writers get the lock in between.
PRUNE_BATCH = 5000
_INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL
_HOUR_US = 3_600_000_000
_DAY_US = 24 * _HOUR_US

# Each migration is applied once, in order, in the transaction that records its version. Money is
# TEXT (exact decimal, plain notation); times are INTEGER microseconds since the Unix epoch (UTC);
# tags and attempts are JSON text.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            f"""
            CREATE TABLE {TABLE} (
                id TEXT PRIMARY KEY,
                started_at INTEGER NOT NULL,
                ended_at INTEGER NOT NULL,
                request_id TEXT NOT NULL,
                key_name TEXT NOT NULL,
                key_admin INTEGER NOT NULL,
                caller_user TEXT NOT NULL,
                caller_project TEXT NOT NULL,
                caller_tenant TEXT NOT NULL,
                caller_tracking_id TEXT NOT NULL,
                tags TEXT NOT NULL,
                requested_model TEXT NOT NULL,
                model TEXT NOT NULL,
                provider TEXT NOT NULL,
                status TEXT NOT NULL,
                reason TEXT NOT NULL,
                streamed INTEGER NOT NULL,
                dry_run INTEGER NOT NULL,
                fallback_used INTEGER NOT NULL,
                prompt_tokens INTEGER,
                completion_tokens INTEGER,
                cache_read_tokens INTEGER,
                cache_write_tokens INTEGER,
                cache_write_1h_tokens INTEGER,
                reasoning_tokens INTEGER,
                usage_estimated INTEGER,
                cost_status TEXT,
                cost_source TEXT,
                currency TEXT,
                cost_input TEXT,
                cost_cached_input TEXT,
                cost_cache_write TEXT,
                cost_cache_write_1h TEXT,
                cost_output TEXT,
                cost_request_fee TEXT,
                cost_total TEXT,
                cost_per_1k_tokens TEXT,
                cost_cache_savings TEXT,
                cost_estimated INTEGER,
                latency_total REAL,
                latency_first_byte REAL,
                latency_first_token REAL,
                latency_upstream REAL,
                latency_overhead REAL,
                attempts TEXT NOT NULL
            ) STRICT
            """,
            f"CREATE INDEX {TABLE}_started ON {TABLE} (started_at, id)",
            f"CREATE INDEX {TABLE}_key ON {TABLE} (key_name, started_at, id)",
        ),
    ),
    (2, (f"ALTER TABLE {TABLE} ADD COLUMN task_type TEXT NOT NULL DEFAULT ''",)),
    (3, (f"ALTER TABLE {TABLE} ADD COLUMN plan_period TEXT NOT NULL DEFAULT ''",)),
)
LATEST = MIGRATIONS[-1][0]

_INSERT = (
    f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)}) "
    "ON CONFLICT (id) DO NOTHING"
)
_BOOLEAN_AT = frozenset(COLUMNS.index(c) for c in BOOLEAN_COLUMNS)
_JSON_AT = frozenset(COLUMNS.index(c) for c in JSON_COLUMNS)


class SqliteDialect(Dialect):
    def param(self, index: int) -> str:
        return f"?{index}"

    def time_value(self, microseconds: int) -> Any:
        return microseconds

    def bucket(self, granularity: Granularity) -> str:
        if granularity is Granularity.HOUR:
            return f"(started_at / {_HOUR_US}) * {_HOUR_US}"
        if granularity is Granularity.DAY:
            return f"(started_at / {_DAY_US}) * {_DAY_US}"
        return (
            "CAST(strftime('%s', started_at / 1000000, 'unixepoch', 'start of month') AS INTEGER) * 1000000"
        )

    def tag_equals(self, key: str, value: str) -> str:
        # json_each takes any key as data; a JSON path built from the key would need escaping.
        return (
            f"EXISTS (SELECT 1 FROM json_each({TABLE}.tags) AS t WHERE t.key = {key} AND t.value = {value})"
        )

    def tag_value(self, key: str) -> str:
        return f"coalesce((SELECT t.value FROM json_each({TABLE}.tags) AS t WHERE t.key = {key}), '')"

    def money_sum(self, expression: str) -> str:
        return f"ledger_decimal_sum({expression})"

    def percentile(self, column: str, fraction: float) -> str:
        return f"ledger_percentile({column}, {fraction!r})"


class _DecimalSum:
    """An exact sum of decimal text; NULL when there was nothing to add."""

    def __init__(self) -> None:
        self.total: Decimal | None = None

    def step(self, value: str | None) -> None:
        if value is not None:
            self.total = Decimal(value) if self.total is None else EXACT.add(self.total, Decimal(value))

    def finalize(self) -> str | None:
        return None if self.total is None else money_text(self.total)


class _Percentile:
    """PostgreSQL's `percentile_cont`: sort, then interpolate linearly between the values at
    floor and ceil of fraction * (n - 1), with the same arithmetic, so both backends agree."""

    def __init__(self) -> None:
        self.values: list[float] = []
        self.fraction = 0.0

    def step(self, value: float | None, fraction: float) -> None:
        if value is not None:
            self.values.append(value)
            self.fraction = fraction

    def finalize(self) -> float | None:
        return interpolate(sorted(self.values), self.fraction) if self.values else None


def interpolate(ordered: Sequence[float], fraction: float) -> float:
    position = fraction * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    first, second = ordered[low], ordered[high]
    return first + (second - first) * (position - low)


class SqliteStore:
    def __init__(self, path: Path, *, busy_timeout: float) -> None:
        if sqlite3.sqlite_version_info < _MINIMUM_VERSION:
            raise RuntimeError(
                f"the SQLite ledger needs SQLite 3.37 or newer; this Python has {sqlite3.sqlite_version}"
            )
        self._path = path
        self._busy_timeout = busy_timeout
        self._dialect = SqliteDialect()
        # One thread each, so each connection only ever runs on the thread that opened it.
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="ledger-write")
        self._read_thread = ThreadPoolExecutor(1, thread_name_prefix="ledger-read")
        self._local = threading.local()
        self._closed = False

    @property
    def backend(self) -> Backend:
        return Backend.SQLITE

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    @property
    def path(self) -> Path:
        return self._path

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: transactions are begun and ended here, explicitly.
            connection = sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
            try:
                if connection.execute("PRAGMA page_count").fetchone()[0] == 0:
                    # Only a new file can take this: deleted rows' pages can then be handed back
                    # to the file system after retention, instead of the file keeping its peak.
                    connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("PRAGMA synchronous = FULL")
            except sqlite3.Error:
                connection.close()
                raise
            # typeshed types aggregates as taking and returning ints only; these take text and
            # floats, as SQLite allows.
            connection.create_aggregate("ledger_decimal_sum", 1, cast(Any, _DecimalSum))
            connection.create_aggregate("ledger_percentile", 2, cast(Any, _Percentile))
            self._local.connection = connection
        return connection

    async def _on(self, thread: ThreadPoolExecutor, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        connection: list[sqlite3.Connection] = []

        def run() -> T:
            connection.append(self._connection())
            return work(connection[0])

        future = loop.run_in_executor(thread, run)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The caller gave up (a write timeout): stop the statement where SQLite can, so the
            # thread is free again soon; its transaction rolls back.
            if connection:
                connection[0].interrupt()
            raise

    async def migrate(self) -> int:
        return await self._on(self._write_thread, _migrate)

    async def insert(self, rows: Sequence[Row]) -> None:
        values = [_values(row) for row in rows]
        await self._on(self._write_thread, lambda c: _transaction(c, lambda: c.executemany(_INSERT, values)))

    async def fetch(self, query: Query) -> list[Sequence[Any]]:
        return await self._on(self._read_thread, lambda c: c.execute(query.sql, query.params).fetchall())

    async def fetch_records(self, query: Query) -> list[CallRecord]:
        rows = await self.fetch(query)
        return [decode(row_dict(row)) for row in rows]

    async def prune(self, before: datetime) -> Pruned:
        cutoff = micros(before.timestamp())
        removed = 0
        while True:
            count = await self._on(self._write_thread, lambda c: _delete_batch(c, cutoff))
            removed += count
            if count < PRUNE_BATCH:
                break
        await self._on(self._write_thread, _return_free_pages)
        return Pruned(rows=removed)

    async def close(self) -> None:
        """Closes both connections; closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        for thread in (self._write_thread, self._read_thread):
            await asyncio.get_running_loop().run_in_executor(thread, self._close_own)
            thread.shutdown(wait=True)

    def _close_own(self) -> None:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def _values(row: Row) -> tuple[Any, ...]:
    values = column_values(row)
    for i in _BOOLEAN_AT:
        if values[i] is not None:
            values[i] = int(values[i])
    for i in _JSON_AT:
        values[i] = json.dumps(values[i], separators=(",", ":"), ensure_ascii=False)
    return tuple(values)


def _transaction(connection: sqlite3.Connection, work: Callable[[], object]) -> None:
    # IMMEDIATE takes the write lock at once (waiting up to the busy timeout), so the transaction
    # cannot fail half-way for want of it.
    connection.execute("BEGIN IMMEDIATE")
    try:
        work()
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _migrate(connection: sqlite3.Connection) -> int:
    version = 0

    def apply() -> None:
        nonlocal version
        connection.execute(
            "CREATE TABLE IF NOT EXISTS ledger_schema "
            "(version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
        )
        version = connection.execute("SELECT coalesce(max(version), 0) FROM ledger_schema").fetchone()[0]
        if version > LATEST:
            raise RuntimeError(f"the ledger's schema is version {version}; this gateway knows up to {LATEST}")
        for number, statements in MIGRATIONS:
            if number > version:
                for statement in statements:
                    connection.execute(statement)
                connection.execute(
                    "INSERT INTO ledger_schema (version, applied_at) "
                    "VALUES (?, CAST(strftime('%s', 'now') AS INTEGER))",
                    (number,),
                )
                version = number

    _transaction(connection, apply)
    return version


def _delete_batch(connection: sqlite3.Connection, cutoff: int) -> int:
    count = 0

    def delete() -> None:
        nonlocal count
        count = connection.execute(
            f"DELETE FROM {TABLE} WHERE rowid IN "
            f"(SELECT rowid FROM {TABLE} WHERE started_at < ? LIMIT {PRUNE_BATCH})",
            (cutoff,),
        ).rowcount

    _transaction(connection, delete)
    return count


def _return_free_pages(connection: sqlite3.Connection) -> None:
    """Hands the pages retention freed back to the file system, a batch per transaction. (A file
    created without incremental auto-vacuum keeps them, for new rows to reuse.)"""
    if connection.execute("PRAGMA auto_vacuum").fetchone()[0] != _INCREMENTAL:
        return
    while connection.execute("PRAGMA freelist_count").fetchone()[0] > 0:
        connection.execute("PRAGMA incremental_vacuum(2000)").fetchall()
