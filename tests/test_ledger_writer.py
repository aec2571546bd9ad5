"""The ledger writer, on SQLite and on a real PostgreSQL server: batches by size and by interval,
loses nothing on close, spools through a database outage and catches up, counts what it must drop
without ever holding up a caller, shares one SQLite file between processes, and loses at most
about one flush interval to `kill -9`."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from llm_gateway.gateway.record import CallRecord
from llm_gateway.ledger import LedgerStore, LedgerWriter, Pruned, open_store, parse_url
from llm_gateway.ledger.rows import Row
from llm_gateway.ledger.spool import Spool
from llm_gateway.ledger.sql import Dialect, Query
from llm_gateway.ledger.url import Backend
from tests.ledgers import backend_url, record, store
from tests.postgres import cluster

__all__ = ["backend_url", "store"]  # fixtures

ROOT = Path(__file__).resolve().parents[1]


class Counting:
    """A real store that also notes the size of every batch written to it."""

    def __init__(self, inner: LedgerStore) -> None:
        self.inner = inner
        self.batches: list[int] = []

    @property
    def backend(self) -> Backend:
        return self.inner.backend

    @property
    def dialect(self) -> Dialect:
        return self.inner.dialect

    async def migrate(self) -> int:
        return await self.inner.migrate()

    async def insert(self, rows: Sequence[Row]) -> None:
        await self.inner.insert(rows)
        self.batches.append(len(rows))

    async def fetch(self, query: Query) -> list[Sequence[Any]]:
        return await self.inner.fetch(query)

    async def fetch_records(self, query: Query) -> list[CallRecord]:
        return await self.inner.fetch_records(query)

    async def prune(self, before: datetime) -> Pruned:
        return await self.inner.prune(before)

    async def close(self) -> None:
        await self.inner.close()


def written(writer: LedgerWriter, count: int) -> bool:
    return writer.stats.written == count


async def stored_ids(store: LedgerStore) -> list[str]:
    return [str(row[0]) for row in await store.fetch(Query("SELECT id FROM ledger_calls", ()))]


async def eventually(check: Callable[[], bool], within: float = 60.0) -> float:
    """Waits until `check()` holds; returns how long that took."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < within, "gave up waiting"
        await asyncio.sleep(0.005)
    return time.monotonic() - start


@contextmanager
def outage(url: str) -> Iterator[None]:
    """The database is unavailable: the PostgreSQL server stopped, or (SQLite) another connection
    holding the file's write lock, so every other writer waits out its busy timeout and fails."""
    ledger = parse_url(url)
    if ledger.path is None:
        cluster().stop()
        try:
            yield
        finally:
            cluster().start()
        return
    holder = sqlite3.connect(ledger.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def spooled_rows(directory: Path) -> list[Row]:
    """The rows in the spool files, without a last line still being written."""
    return [
        json.loads(line) for path in directory.glob("*.spool") for line in path.read_bytes().split(b"\n")[:-1]
    ]


def spooled_lines(directory: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in directory.glob("*.spool"))


async def test_a_batch_goes_as_soon_as_batch_size_calls_wait(store: LedgerStore, tmp_path: Path) -> None:
    counting = Counting(store)
    writer = LedgerWriter(counting, Spool(tmp_path / "spool"), batch_size=10, flush_interval=30.0)
    writer.start()
    for _ in range(10):
        writer.call_ended(record())
    took = await eventually(lambda: writer.stats.written == 10, within=10)
    for _ in range(5):
        writer.call_ended(record())
    await asyncio.sleep(0.3)
    assert writer.stats.written == 10  # five wait for the interval, 30 s away
    await writer.close()
    assert counting.batches == [10, 5]
    assert len(await stored_ids(store)) == 15
    print(f"\n{store.backend.value}: a full batch was stored {took * 1000:.1f} ms after its last call")


async def test_calls_wait_at_most_about_the_flush_interval(store: LedgerStore, tmp_path: Path) -> None:
    counting = Counting(store)
    writer = LedgerWriter(counting, Spool(tmp_path / "spool"), batch_size=1000, flush_interval=0.1)
    writer.start()
    waits = []
    for round_ in range(1, 6):
        for _ in range(3):
            writer.call_ended(record())
        waits.append(await eventually(functools.partial(written, writer, 3 * round_), within=10))
    await writer.close()
    assert counting.batches == [3] * 5
    assert min(waits) >= 0.09  # they waited for the interval, not for a full batch
    print(
        f"\n{store.backend.value}: calls stored {statistics.median(waits) * 1000:.0f} ms (median), "
        f"{max(waits) * 1000:.0f} ms (max) after they ended, with a 100 ms flush interval"
    )


async def test_close_writes_out_every_queued_call(store: LedgerStore, tmp_path: Path) -> None:
    writer = LedgerWriter(store, Spool(tmp_path / "spool"))
    writer.start()
    sent = [record() for _ in range(5000)]
    for call in sent:
        writer.call_ended(call)
    await writer.close()
    assert sorted(await stored_ids(store)) == sorted(c.id for c in sent)
    assert writer.stats.written == 5000
    assert writer.stats.dropped == 0
    assert list((tmp_path / "spool").glob("*")) == []


async def test_an_outage_is_spooled_then_caught_up_losing_nothing(backend_url: str, tmp_path: Path) -> None:
    store = open_store(parse_url(backend_url), timeout=1.0)
    await store.migrate()
    spool = tmp_path / "spool"
    writer = LedgerWriter(store, Spool(spool), batch_size=50, flush_interval=0.05, write_timeout=1.0)
    writer.start()
    sent: list[CallRecord] = []
    try:
        with outage(backend_url):
            for _ in range(20):  # two seconds of calls
                batch = [record() for _ in range(25)]
                for call in batch:
                    writer.call_ended(call)
                sent.extend(batch)
                await asyncio.sleep(0.1)
            await eventually(lambda: writer.stats.spooled == 500, within=30)
            assert writer.stats.written == 0
            assert spooled_lines(spool) == 500
        took = await eventually(lambda: writer.stats.written == 500, within=120)
        assert sorted(await stored_ids(store)) == sorted(c.id for c in sent)
        assert writer.stats.replayed == 500
        assert writer.stats.dropped == 0
        assert list(spool.glob("*.spool")) == []
        print(f"\n{store.backend.value}: 500 spooled calls stored {took:.2f} s after the outage ended")
    finally:
        await writer.close()
        await store.close()


async def test_a_full_queue_counts_what_it_drops_and_never_holds_a_caller(
    tmp_path: Path, log_lines: list[str]
) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    store = open_store(parse_url(url), timeout=0.2)
    await store.migrate()
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    writer = LedgerWriter(
        store,
        Spool(not_a_directory / "spool"),
        batch_size=10,
        flush_interval=0.01,
        queue_size=100,
        write_timeout=0.2,
    )
    durations = []
    try:
        with outage(url):  # the database is locked, and the spool cannot be created
            writer.start()
            for i in range(1000):
                start = time.perf_counter()
                writer.call_ended(record())
                durations.append(time.perf_counter() - start)
                if i % 10 == 0:
                    await asyncio.sleep(0.002)
            assert writer.stats.dropped == 900
            assert writer.stats.queued == 100
        await eventually(lambda: writer.stats.written == 100, within=60)
    finally:
        await writer.close()
        await store.close()
    assert writer.stats.received == 1000
    assert writer.stats.dropped == 900
    assert any('"event":"ledger_records_lost"' in line for line in log_lines)
    assert any('"event":"ledger_spool_failed"' in line for line in log_lines)
    durations.sort()
    print(
        f"\ncall_ended while the ledger was down (a writer thread busy beside it): median "
        f"{durations[500] * 1e6:.1f} µs, 99th percentile {durations[990] * 1e6:.1f} µs, "
        f"max {durations[-1] * 1e6:.1f} µs"
    )


def load(url: str, spool: Path, prefix: str, count: int, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.ledger_load", url, str(spool), prefix, str(count), *extra],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def wait_for(process: subprocess.Popen[bytes], ready: Path) -> None:
    start = time.monotonic()
    while not await asyncio.to_thread(ready.exists):
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        assert time.monotonic() - start < 60, "the writer process did not start"
        await asyncio.sleep(0.02)


async def test_two_processes_write_one_sqlite_ledger(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    processes = [load(url, tmp_path / "spool", name, 3000) for name in ("one", "two")]
    for process in processes:
        output, _ = await asyncio.to_thread(process.communicate, timeout=120)
        assert process.returncode == 0, output.decode()
    store = open_store(parse_url(url), timeout=5.0)
    try:
        ids = await stored_ids(store)
    finally:
        await store.close()
    assert sorted(ids) == sorted(f"chat_{name}_{i:08d}" for name in ("one", "two") for i in range(3000))


async def test_kill_9_loses_at_most_about_one_flush_interval(backend_url: str, tmp_path: Path) -> None:
    losses = []
    for round_, after in enumerate((1.0, 1.033, 1.067, 1.05, 1.017)):  # at different points of a flush
        ready = tmp_path / f"ready{round_}"
        prefix = f"k{round_}"
        process = load(backend_url, tmp_path / "spool", prefix, 0, "--every", "0.001", "--ready", str(ready))
        await wait_for(process, ready)
        await asyncio.sleep(after)
        killed_at = time.time()
        os.kill(process.pid, signal.SIGKILL)
        await asyncio.to_thread(process.wait)
        store = open_store(parse_url(backend_url), timeout=5.0)
        try:
            rows = [
                row
                for row in await store.fetch(Query("SELECT id, started_at FROM ledger_calls", ()))
                if str(row[0]).startswith(f"chat_{prefix}_")
            ]
        finally:
            await store.close()
        numbers = sorted(int(str(row[0]).rsplit("_", 1)[1]) for row in rows)
        # Batches are stored whole and in order: what survived is every call up to some point.
        assert numbers == list(range(len(numbers)))
        assert len(numbers) > 200
        last = max(row[1] for row in rows)
        losses.append(killed_at - (last.timestamp() if isinstance(last, datetime) else last / 1e6))
    print(
        f"\n{parse_url(backend_url).backend.value}: kill -9 at about 1,000 calls/s with a 100 ms flush "
        f"interval lost the last {', '.join(f'{lost * 1000:.0f}' for lost in losses)} ms of calls"
    )
    assert max(losses) < 1.0


async def test_a_spool_left_by_a_killed_process_is_replayed_by_the_next_writer(
    backend_url: str, tmp_path: Path
) -> None:
    spool, ready = tmp_path / "spool", tmp_path / "ready"
    store = open_store(parse_url(backend_url), timeout=1.0)
    await store.migrate()
    try:
        with outage(backend_url):
            process = load(backend_url, spool, "s", 0, "--every", "0.002", "--ready", str(ready))
            await wait_for(process, ready)
            await eventually(lambda: spooled_lines(spool) >= 200, within=60)
            os.kill(process.pid, signal.SIGKILL)
            await asyncio.to_thread(process.wait)
        left = sorted(row["id"] for row in spooled_rows(spool))
        assert len(left) >= 200
        writer = LedgerWriter(store, Spool(spool))
        writer.start()
        await eventually(lambda: writer.stats.replayed >= len(left), within=60)
        await writer.close()
        assert sorted(await stored_ids(store)) == left
        assert list(spool.glob("*.spool")) == []
    finally:
        await store.close()
