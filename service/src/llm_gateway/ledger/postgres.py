"""The ledger for a fleet: PostgreSQL through asyncpg (chosen over psycopg 3 on CPU per inserted
row: docs/ledger.md).

Money is NUMERIC, which keeps any decimal exactly and sums it exactly. Calls are range-partitioned
by month on the time the gateway received them, so retention drops a month as one partition
instead of deleting (and later vacuuming) its rows one by one. A month's partition is created the
first time a row for it is written (and ahead of time, by the maintenance that runs retention),
under an advisory lock, so the gateway's worker processes never race to create it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from llm_gateway.gateway.record import CallRecord
from llm_gateway.ledger.query import EPOCH, Granularity
from llm_gateway.ledger.rows import (
    COLUMNS,
    JSON_COLUMNS,
    MONEY_COLUMNS,
    TIME_COLUMNS,
    Row,
    column_values,
    decode,
    micros,
)
from llm_gateway.ledger.sql import TABLE, Dialect, Query, row_dict
from llm_gateway.ledger.store import Pruned
from llm_gateway.ledger.url import Backend

# Advisory lock keys (any two constant bigints): one for schema changes and partition creation,
# one for retention, so that only one worker process does either at a time.
_SCHEMA_LOCK = 7_340_982_110_214_001
_RETENTION_LOCK = 7_340_982_110_214_002
PRUNE_BATCH = 5000
_MICROSECOND = timedelta(microseconds=1)

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            f"""
            CREATE TABLE {TABLE} (
                started_at timestamptz NOT NULL,
                id text NOT NULL,
                ended_at timestamptz NOT NULL,
                request_id text NOT NULL,
                key_name text NOT NULL,
                key_admin boolean NOT NULL,
                caller_user text NOT NULL,
                caller_project text NOT NULL,
                caller_tenant text NOT NULL,
                caller_tracking_id text NOT NULL,
                tags jsonb NOT NULL,
                requested_model text NOT NULL,
                model text NOT NULL,
                provider text NOT NULL,
                status text NOT NULL,
                reason text NOT NULL,
                streamed boolean NOT NULL,
                dry_run boolean NOT NULL,
                fallback_used boolean NOT NULL,
                prompt_tokens bigint,
                completion_tokens bigint,
                cache_read_tokens bigint,
                cache_write_tokens bigint,
                cache_write_1h_tokens bigint,
                reasoning_tokens bigint,
                usage_estimated boolean,
                cost_status text,
                cost_source text,
                currency text,
                cost_input numeric,
                cost_cached_input numeric,
                cost_cache_write numeric,
                cost_cache_write_1h numeric,
                cost_output numeric,
                cost_request_fee numeric,
                cost_total numeric,
                cost_per_1k_tokens numeric,
                cost_cache_savings numeric,
                cost_estimated boolean,
                latency_total double precision,
                latency_first_byte double precision,
                latency_first_token double precision,
                latency_upstream double precision,
                latency_overhead double precision,
                attempts jsonb NOT NULL,
                PRIMARY KEY (started_at, id)
            ) PARTITION BY RANGE (started_at)
            """,
            f"CREATE INDEX {TABLE}_key ON {TABLE} (key_name, started_at, id)",
        ),
    ),
    (2, (f"ALTER TABLE {TABLE} ADD COLUMN task_type text NOT NULL DEFAULT ''",)),
    (3, (f"ALTER TABLE {TABLE} ADD COLUMN plan_period text NOT NULL DEFAULT ''",)),
)
LATEST = MIGRATIONS[-1][0]

_INSERT = (
    f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(COLUMNS) + 1))}) ON CONFLICT DO NOTHING"
)
_TIME_AT = tuple(COLUMNS.index(c) for c in TIME_COLUMNS)
_MONEY_AT = tuple(COLUMNS.index(c) for c in MONEY_COLUMNS)
_JSON_AT = tuple(COLUMNS.index(c) for c in JSON_COLUMNS)


class PostgresDialect(Dialect):
    def param(self, index: int) -> str:
        return f"${index}"

    def time_value(self, microseconds: int) -> Any:
        return moment(microseconds)

    def bucket(self, granularity: Granularity) -> str:
        return f"(extract(epoch FROM date_trunc('{granularity.value}', started_at, 'UTC')) * 1000000)::bigint"

    def tag_equals(self, key: str, value: str) -> str:
        return f"tags ->> {key} = {value}"

    def tag_value(self, key: str) -> str:
        return f"coalesce(tags ->> {key}, '')"

    def money_sum(self, expression: str) -> str:
        return f"sum({expression})"

    def percentile(self, column: str, fraction: float) -> str:
        return f"percentile_cont({fraction!r}) WITHIN GROUP (ORDER BY {column})"


def moment(microseconds: int) -> datetime:
    """Microseconds since the epoch as an aware datetime, exactly (no float in between)."""
    return EPOCH + microseconds * _MICROSECOND


def month_of(microseconds: int) -> tuple[int, int]:
    when = moment(microseconds)
    return when.year, when.month


def partition_name(month: tuple[int, int]) -> str:
    return f"{TABLE}_{month[0]:04d}_{month[1]:02d}"


def _month_bounds(month: tuple[int, int]) -> tuple[datetime, datetime]:
    year, number = month
    start = datetime(year, number, 1, tzinfo=UTC)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=UTC)
    return start, end


def _month_from_name(name: str) -> tuple[int, int] | None:
    tail = name.removeprefix(f"{TABLE}_")
    year, _, number = tail.partition("_")
    if tail == name or not (year.isdigit() and number.isdigit()):
        return None
    return int(year), int(number)


class PostgresStore:
    def __init__(self, url: str, *, timeout: float, pool_size: int = 4) -> None:
        self._url = url
        self._timeout = timeout
        self._pool_size = pool_size
        self._dialect = PostgresDialect()
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._months: set[tuple[int, int]] = set()  # partitions known to exist

    @property
    def backend(self) -> Backend:
        return Backend.POSTGRES

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    async def _connections(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                # min_size 0: no connection until one is needed, so a database that is down when
                # the gateway starts is a reason to spool, not to fail the start.
                self._pool = await asyncpg.create_pool(
                    self._url,
                    min_size=0,
                    max_size=self._pool_size,
                    timeout=self._timeout,
                    max_inactive_connection_lifetime=60,
                    # Named, so an operator sees in pg_stat_activity what holds each connection.
                    server_settings={"application_name": "llm-gateway ledger"},
                )
            return self._pool

    async def migrate(self) -> int:
        pool = await self._connections()
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            await connection.execute(
                "CREATE TABLE IF NOT EXISTS ledger_schema "
                "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            version: int = await connection.fetchval("SELECT coalesce(max(version), 0) FROM ledger_schema")
            if version > LATEST:
                raise RuntimeError(
                    f"the ledger's schema is version {version}; this gateway knows up to {LATEST}"
                )
            for number, statements in MIGRATIONS:
                if number > version:
                    for statement in statements:
                        await connection.execute(statement)
                    await connection.execute("INSERT INTO ledger_schema (version) VALUES ($1)", number)
                    version = number
        await self.ensure_months({month_of(micros(datetime.now(UTC).timestamp()))})
        return version

    async def ensure_months(self, months: Iterable[tuple[int, int]]) -> None:
        """Creates the monthly partitions that do not exist yet."""
        missing = sorted(set(months) - self._months)
        if not missing:
            return
        pool = await self._connections()
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            for month in missing:
                start, end = _month_bounds(month)
                # Bounds are literals: DDL takes no parameters. They are made here from integers.
                await connection.execute(
                    f"CREATE TABLE IF NOT EXISTS {partition_name(month)} PARTITION OF {TABLE} "
                    f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
                )
        self._months.update(missing)

    async def insert(self, rows: Sequence[Row]) -> None:
        values = [_values(row) for row in rows]
        months = {month_of(row["started_at"]) for row in rows}
        await self.ensure_months(months)
        try:
            await self._insert(values)
        except asyncpg.CheckViolationError:
            # No partition for a row: retention in another process dropped a month this one
            # still thought was there (an old record replayed from a spool). Make it again.
            self._months.difference_update(months)
            await self.ensure_months(months)
            await self._insert(values)

    async def _insert(self, values: list[tuple[Any, ...]]) -> None:
        pool = await self._connections()
        async with pool.acquire() as connection, connection.transaction():
            await connection.executemany(_INSERT, values)

    async def fetch(self, query: Query) -> list[Sequence[Any]]:
        pool = await self._connections()
        async with pool.acquire() as connection:
            return [tuple(row) for row in await connection.fetch(query.sql, *query.params)]

    async def fetch_records(self, query: Query) -> list[CallRecord]:
        records = []
        for row in await self.fetch(query):
            values = list(row)
            for i in _TIME_AT:
                values[i] = (values[i] - EPOCH) // _MICROSECOND
            records.append(decode(row_dict(values)))
        return records

    async def prune(self, before: datetime) -> Pruned:
        pool = await self._connections()
        dropped: list[str] = []
        async with pool.acquire() as connection:
            async with connection.transaction():
                if not await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", _RETENTION_LOCK):
                    return Pruned()  # another process is pruning
                names = await connection.fetch(
                    "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                    "WHERE i.inhparent = $1::regclass",
                    TABLE,
                )
                for (name,) in names:
                    month = _month_from_name(name)
                    if month is not None and _month_bounds(month)[1] <= before:
                        await connection.execute(f"DROP TABLE {name}")
                        self._months.discard(month)
                        dropped.append(name)
            # What is left before the cutoff sits in one month's partition: deleted in batches,
            # each its own short transaction. The partition itself goes once its month is past.
            removed = 0
            while True:
                status = await connection.execute(
                    f"DELETE FROM {TABLE} WHERE (started_at, id) IN "
                    f"(SELECT started_at, id FROM {TABLE} WHERE started_at < $1 LIMIT {PRUNE_BATCH})",
                    before,
                )
                count = int(status.rsplit(" ", 1)[-1])
                removed += count
                if count < PRUNE_BATCH:
                    break
        return Pruned(rows=removed, partitions=tuple(sorted(dropped)))

    async def close(self) -> None:
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), self._timeout)
            except TimeoutError:
                self._pool.terminate()
            self._pool = None


def _values(row: Row) -> tuple[Any, ...]:
    values = column_values(row)
    for i in _TIME_AT:
        values[i] = moment(values[i])
    for i in _MONEY_AT:
        if values[i] is not None:
            values[i] = Decimal(values[i])
    for i in _JSON_AT:
        values[i] = json.dumps(values[i], separators=(",", ":"), ensure_ascii=False)
    return tuple(values)
