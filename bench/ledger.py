"""What the usage ledger costs, per backend: inserts per second and CPU per row through the store,
the writer end to end, `call_ended` on the caller's path, and bytes on disk per call.

    .venv/bin/python bench/ledger.py

SQLite is a file in a temporary directory; PostgreSQL a throwaway local cluster (tests/postgres.py)
with its durable defaults (fsync, synchronous_commit on). CPU is this process's (the event loop and
the SQLite threads; the PostgreSQL server's own is not counted). Each figure is the median of 3 runs.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for the tests' throwaway PostgreSQL cluster and record factory

from llm_gateway.domain.results import Usage  # noqa: E402
from llm_gateway.gateway.outcome import Attempt  # noqa: E402
from llm_gateway.gateway.record import CallRecord  # noqa: E402
from llm_gateway.ledger import LedgerStore, LedgerWriter, open_store, parse_url  # noqa: E402
from llm_gateway.ledger.rows import encode  # noqa: E402
from llm_gateway.ledger.spool import Spool  # noqa: E402
from llm_gateway.ledger.sql import Query  # noqa: E402
from tests.ledgers import record  # noqa: E402
from tests.postgres import PostgresCluster  # noqa: E402

ROWS = 20_000
BATCH = 100
REPEATS = 3

# A typical call: a stream served after one failed attempt, with tags and every usage count.
SAMPLE = replace(
    record(
        tags={"team": "search", "env": "prod"},
        usage=Usage(prompt_tokens=1834, completion_tokens=412, cache_read_tokens=1024, reasoning_tokens=64),
        cost=Decimal("0.00051705"),
        first_token=0.31,
        streamed=True,
        attempts=(
            Attempt("openai", "openai:gpt-4o-mini", "UNAVAILABLE", "UPSTREAM_OVERLOADED", "overloaded", 0.2),
            Attempt("openai", "openai:gpt-4o-mini", "OK", "", "", 1.1),
        ),
    ),
    fallback_used=False,
)


def calls(count: int, start: float) -> list[CallRecord]:
    return [replace(SAMPLE, id=f"chat_{i:024x}", started_at=start + i / 1000) for i in range(count)]


async def measure(work: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """Rows per second and CPU microseconds per row of one run."""
    cpu, wall = time.process_time(), time.perf_counter()
    await work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return ROWS / wall, cpu / ROWS * 1e6


async def through_store(url: str) -> tuple[float, float]:
    store = open_store(parse_url(url), timeout=10.0)
    await store.migrate()
    rows = [encode(c) for c in calls(ROWS, time.time())]

    async def work() -> None:
        for i in range(0, ROWS, BATCH):
            await store.insert(rows[i : i + BATCH])

    try:
        return await measure(work)
    finally:
        await store.close()


async def through_writer(url: str, spool: Path) -> tuple[float, float]:
    store = open_store(parse_url(url), timeout=10.0)
    await store.migrate()
    records = calls(ROWS, time.time() + 3600)
    writer = LedgerWriter(store, Spool(spool), queue_size=ROWS)

    async def work() -> None:
        writer.start()
        for i, call in enumerate(records):
            writer.call_ended(call)
            if i % BATCH == 0:
                await asyncio.sleep(0)  # as calls arrive: the loop turns between them
        await writer.close()
        assert writer.stats.written == ROWS

    try:
        return await measure(work)
    finally:
        await store.close()


def call_ended_cost() -> float:
    """Microseconds `call_ended` takes on the caller's path (no event loop turn: the queue only)."""
    store = open_store(parse_url("sqlite:///unused.db"), timeout=1.0)
    writer = LedgerWriter(store, Spool(Path("unused")), queue_size=10**9, batch_size=10**8)
    best = min(timeit.repeat(lambda: writer.call_ended(SAMPLE), number=100_000, repeat=5))
    return best / 100_000 * 1e6


async def bytes_per_row(store: LedgerStore, url: str) -> float:
    count = (await store.fetch(Query("SELECT count(*) FROM ledger_calls", ())))[0][0]
    if url.startswith("sqlite"):
        path = parse_url(url).path
        assert path is not None
        await store.fetch(Query("PRAGMA wal_checkpoint(TRUNCATE)", ()))
        return path.stat().st_size / int(count)
    size = await store.fetch(
        Query(
            "SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
            "WHERE inhparent = 'ledger_calls'::regclass",
            (),
        )
    )
    return int(size[0][0]) / int(count)


async def run(name: str, new_url: Callable[[], str]) -> list[str]:
    stored, written = [], []
    for _ in range(REPEATS):
        stored.append(await through_store(new_url()))
        with tempfile.TemporaryDirectory() as spool:
            written.append(await through_writer(new_url(), Path(spool)))
    url = new_url()
    await through_store(url)
    store = open_store(parse_url(url), timeout=10.0)
    size = await bytes_per_row(store, url)
    await store.close()
    return [
        f"| {name} | {statistics.median(s[0] for s in stored):,.0f} rows/s, "
        f"{statistics.median(s[1] for s in stored):.1f} µs CPU/row "
        f"| {statistics.median(w[0] for w in written):,.0f} calls/s, "
        f"{statistics.median(w[1] for w in written):.1f} µs CPU/call | {size:,.0f} |"
    ]


async def main() -> None:
    lines = [
        f"Batches of {BATCH}, {ROWS:,} calls per run, median of {REPEATS} runs.",
        "",
        "| Backend | Store: inserts | Writer: call_ended to stored | Bytes on disk per call |",
        "| --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as directory:
        counter = iter(range(1_000_000))
        lines += await run(
            "SQLite (WAL, synchronous=FULL)", lambda: f"sqlite:///{directory}/l{next(counter)}.db"
        )
    cluster = PostgresCluster(settings=())
    try:
        lines += await run("PostgreSQL 15 (fsync on)", cluster.new_database)
    finally:
        cluster.destroy()
    lines += ["", f"`call_ended` on the caller's path: {call_ended_cost():.2f} µs per call."]
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
