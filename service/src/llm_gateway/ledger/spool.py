"""Where rows wait while the database cannot take them: append-only files, one JSON row per line,
flushed to disk (fsync) after every batch, replayed into the database once it is back.

Each writer appends to a file of its own (`ledger-<pid>-<random>.spool`) and holds an exclusive
`flock` on it while it lives. Any writer may replay a file nobody holds (its process died, or
stopped with rows still spooled), so a worker restarted under a new pid, or the next start, picks
up what the last one left. Replaying is safe to repeat: the store skips calls it already holds, so
a file replayed twice (a crash between the insert and the file's removal) stores each call once.

Every method blocks on file I/O: the writer calls them in a worker thread.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from llm_gateway.ledger.rows import Row

_log = logging.getLogger("llm_gateway.ledger")
_PATTERN = "ledger-*.spool"


@dataclass(frozen=True, slots=True)
class SpoolChunk:
    """Rows read from one spool file, up to `end` (a byte offset)."""

    path: Path
    rows: list[Row]
    end: int
    skipped: int  # lines that could not be read back (a torn or damaged line)


class _Replay:
    """A file being replayed: held open and locked until it has been read to its end."""

    def __init__(self, path: Path, handle: BinaryIO) -> None:
        self.path = path
        self.handle = handle
        self.offset = 0


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._own: BinaryIO | None = None
        self._own_path: Path | None = None
        self._replays: dict[Path, _Replay] = {}

    @property
    def waiting(self) -> bool:
        """Whether rows are waiting here that this writer knows of (its own or taken over)."""
        return self._own is not None or bool(self._replays)

    def append(self, rows: list[Row]) -> None:
        """Appends rows and forces them to disk; raises OSError when it cannot."""
        if self._own is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"ledger-{os.getpid()}-{secrets.token_hex(4)}.spool"
            handle = path.open("ab")
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            _sync_directory(self.directory)  # so the new file's name survives a power cut too
            self._own, self._own_path = handle, path
            self._replays[path] = _Replay(path, path.open("rb"))
        data = b"".join(
            json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode() + b"\n" for row in rows
        )
        start = self._own.tell()
        try:
            self._own.write(data)
            self._own.flush()
            os.fsync(self._own.fileno())
        except OSError:
            # Leave no partial batch behind: the caller keeps these rows and tries again.
            try:
                self._own.truncate(start)
                self._own.seek(start)
            except OSError:
                pass
            raise

    def adopt(self) -> int:
        """Takes over the files no live writer holds; returns how many it took."""
        try:
            paths = sorted(self.directory.glob(_PATTERN))
        except OSError:
            return 0
        taken = 0
        for path in paths:
            if path in self._replays:
                continue
            try:
                handle = path.open("rb")
            except OSError:
                continue  # removed meanwhile by the writer that replayed it
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()  # its writer is alive and will replay it itself
                continue
            if not path.exists():
                handle.close()  # replayed and removed between the listing and the lock
                continue
            self._replays[path] = _Replay(path, handle)
            taken += 1
        return taken

    def read(self, limit: int) -> SpoolChunk | None:
        """Up to `limit` complete rows not yet replayed, from one file; None when none wait."""
        for replay in list(self._replays.values()):
            replay.handle.seek(replay.offset)
            rows: list[Row] = []
            skipped = 0
            end = replay.offset
            while len(rows) < limit:
                line = replay.handle.readline()
                if not line.endswith(b"\n"):
                    break  # the end, or a line its writer never finished (it died mid-batch)
                end += len(line)
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    skipped += 1
            if rows or skipped:
                return SpoolChunk(replay.path, rows, end, skipped)
            self._finish(replay)  # read to its end
        return None

    def replayed(self, chunk: SpoolChunk) -> None:
        """Marks a chunk as stored. A file read to its end is removed (our own is started anew on
        the next outage)."""
        replay = self._replays.get(chunk.path)
        if replay is None:
            return
        replay.offset = chunk.end
        if replay.offset >= os.fstat(replay.handle.fileno()).st_size:
            self._finish(replay)

    def _finish(self, replay: _Replay) -> None:
        """Removes a file read to its end (the lock is still held, so nobody else replays it)."""
        try:
            replay.path.unlink(missing_ok=True)
        except OSError as exc:
            _log.warning({"event": "ledger_spool_not_removed", "file": str(replay.path), "error": str(exc)})
        replay.handle.close()
        del self._replays[replay.path]
        if replay.path == self._own_path and self._own is not None:
            self._own.close()
            self._own = self._own_path = None

    def close(self) -> None:
        """Releases every file, leaving what is unreplayed for the next writer."""
        for replay in list(self._replays.values()):
            replay.handle.close()
        self._replays.clear()
        if self._own is not None:
            self._own.close()
            self._own = self._own_path = None


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
