"""One SQLite connection in a thread of its own, for the stores that share the ledger's file
(budgets, batches): the event loop never waits on the file, and work that finds another process
holding the write lock is tried again after short pauses, up to a busy timeout.

SQLite's own busy handler sleeps a whole millisecond and more between tries, which several workers
writing for every call run into all the time; a transaction here lasts about 0.1 ms, so the first
tries come much sooner (from 100 µs, doubling up to 5 ms).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_FIRST_PAUSE, _MAX_PAUSE = 0.0001, 0.005
_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class SqliteThread:
    def __init__(self, connect: Callable[[], sqlite3.Connection], *, busy_timeout: float, name: str) -> None:
        self._connect = connect
        self._busy_timeout = busy_timeout
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._connection: sqlite3.Connection | None = None  # the thread's, opened on first use

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work` on the thread's connection, tried again while another process holds the lock."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._patiently, work)

    def _patiently(self, work: Callable[[sqlite3.Connection], T]) -> T:
        waits = pauses(self._busy_timeout)
        while True:
            try:
                if self._connection is None:
                    self._connection = self._connect()
                return work(self._connection)
            except sqlite3.OperationalError as exc:
                pause = pause_after(exc, waits)
            time.sleep(pause)

    async def close(self) -> None:
        def run() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        if self._connection is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, run)
        self._thread.shutdown(wait=False)


def connect(path: Path, *, checkpoints: bool = True) -> sqlite3.Connection:
    """A connection to the ledger's file as its stores share it: WAL, `synchronous=NORMAL` (a commit
    survives a crash of the process), autocommit unless a transaction is begun. Without
    `checkpoints`, it never writes the database file itself (for connections on the event loop)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    try:
        if connection.execute("PRAGMA page_count").fetchone()[0] == 0:
            # As the ledger sets a new file up, whichever store opens it first.
            connection.execute("PRAGMA auto_vacuum = INCREMENTAL")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        if not checkpoints:  # a checkpoint writes and syncs the database file: not on the loop
            connection.execute("PRAGMA wal_autocheckpoint = 0")
    except sqlite3.Error:
        connection.close()
        raise
    return connection


def pauses(timeout: float) -> Iterator[float]:
    """The waits between tries for the write lock, doubling, until `timeout` has passed."""
    deadline = time.monotonic() + timeout
    pause = _FIRST_PAUSE
    while time.monotonic() + pause <= deadline:
        yield pause
        pause = min(pause * 2, _MAX_PAUSE)


def pause_after(error: sqlite3.OperationalError, waits: Iterator[float]) -> float:
    """How long to wait before trying again after `error`; re-raises it unless another writer
    holds the lock and the busy timeout has time left."""
    pause = next(waits, None) if error.sqlite_errorcode & 0xFF in _BUSY else None
    if pause is None:
        raise error
    return pause
