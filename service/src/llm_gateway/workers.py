"""Several worker processes serving one port.

A Python process runs Python code on one core at a time, so the gateway scales across cores with
processes. Each worker is a whole gateway (its own event loop, gRPC server and upstream pool) bound
to the same port with SO_REUSEPORT; the kernel spreads incoming connections across them.

The supervisor starts the workers, keeps one running in each slot, and passes signals on:

- Start-up is all or nothing. If a worker exits before every worker has reported that it serves
  (a setting it cannot use, the port taken), the others are stopped and the supervisor exits 1:
  a fault that stops the first start would stop every restart too, so it is reported rather than
  looped on.
- Once the set has served, a worker that exits without being asked to (a crash, `kill -9`, the
  OOM killer) is started again in its slot, on the same port, while the others keep serving. Its
  listening socket closed with it, so new connections go to the workers still alive; only calls
  on its own connections fail (those it had accepted, and those the kernel had queued for it),
  and a caller's retry on a new connection lands on a live worker. Restarts of a slot back off
  (`Backoff`): a worker that keeps dying is restarted ever more slowly, and one that stayed up
  for a while counts as a fresh start. Each exit and restart is logged (`worker_exited`,
  `worker_restarted`).
- SIGTERM/SIGINT go to every worker, which drain and exit; a slot waiting out its back-off is not
  restarted. The exit code is 0 when every serving worker drained and exited cleanly (one still
  starting had nothing to drain).
- SIGHUP goes to every worker that has reported serving, and nothing stops. A worker still
  starting has not yet set its own handler, and SIGHUP's default action would kill it.

A supervisor that dies without a word (SIGKILL, OOM) takes its workers with it: each worker holds
the read end of a lifeline pipe whose only write end the supervisor holds, sees it close, and
drains. The supervisor keeps the read end too, so that every replacement worker gets a copy.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from llm_gateway.metrics import worker_exited

_log = logging.getLogger("llm_gateway.workers")

# A worker entry point: (worker index, host, port, ready pipe, lifeline), exiting with its status.
# It must be picklable, e.g. a module-level function (workers are spawned, not forked: gRPC does
# not survive fork), send its bound port through `ready` once it serves, and stop when `lifeline`
# becomes readable (the supervisor is gone; see `watch_lifeline`).
WorkerMain = Callable[[int, str, int, Connection, Connection], None]

# The first restart of a slot waits RESTART_DELAY seconds, each further one in a row twice as long
# up to MAX_RESTART_DELAY; a worker that was up STABLE_AFTER seconds before exiting restarts after
# RESTART_DELAY again. The first delay also covers a stop signal sent to the whole process group
# (systemd, a terminal's Ctrl-C): a worker may exit on it before the supervisor has handled its
# own copy, and must not be restarted.
RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
STABLE_AFTER = 60.0


@dataclass(frozen=True)
class Backoff:
    """How long a slot waits before restarting its worker (see the constants above)."""

    first: float = RESTART_DELAY
    cap: float = MAX_RESTART_DELAY
    stable_after: float = STABLE_AFTER

    def streak(self, previous: int, uptime: float) -> int:
        """The count of exits in a row once a worker that was up `uptime` seconds has exited."""
        return 1 if uptime >= self.stable_after else previous + 1

    def delay(self, streak: int) -> float:
        """The wait before the restart that follows the `streak`-th exit in a row."""
        # Bounded exponent: a slot crash-looping for days must not overflow the float.
        return min(self.cap, self.first * 2.0 ** min(streak - 1, 1000))


def watch_lifeline(lifeline: Connection, stop: Callable[[], None]) -> None:
    """In a worker's event loop: calls `stop` once the supervisor has gone (its end closed)."""
    asyncio.get_running_loop().add_reader(lifeline.fileno(), stop)


def reserve_port(host: str) -> socket.socket:
    """Binds (without listening) a SO_REUSEPORT socket on a free port, so workers can all bind that
    port while the supervisor holds it. A socket that does not listen receives no connections."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), 0))
    return sock


def run_workers(
    main: WorkerMain,
    *,
    count: int,
    host: str,
    port: int,
    port_file: Path | None = None,
    stop_timeout: float = 30.0,
    backoff: Backoff = Backoff(),
) -> int:
    """Runs `count` workers of `main` on host:port until SIGTERM/SIGINT; returns the exit code."""
    reserved = reserve_port(host) if port == 0 else None
    if reserved is not None:
        port = reserved.getsockname()[1]
    # asyncio resets the handlers it set to the defaults when its loop closes; put back the caller's.
    previous = {sig: signal.getsignal(sig) for sig in _HANDLED}
    try:
        supervisor = _Supervisor(main, count, host, port, port_file, stop_timeout, backoff)
        return asyncio.run(supervisor.run())
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)
        if reserved is not None:
            reserved.close()


_HANDLED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


@dataclass
class _Slot:
    """One worker's place in the set, and the worker holding it now."""

    index: int
    process: BaseProcess
    reports: Connection | None  # where the worker sends its port; None once it has (or died)
    started: float  # time.monotonic() at its start
    serving: bool = False
    streak: int = 0  # exits in a row, for the back-off

    @property
    def pid(self) -> int:
        pid = self.process.pid
        assert pid is not None  # set by start()
        return pid

    def hold(self, process: BaseProcess, reports: Connection) -> None:
        """Puts a new worker in the slot; the previous one has exited and been reaped."""
        self.process.close()  # its sentinel's file descriptor
        self.process, self.reports, self.started, self.serving = process, reports, time.monotonic(), False


class _Supervisor:
    def __init__(
        self,
        main: WorkerMain,
        count: int,
        host: str,
        port: int,
        port_file: Path | None,
        stop_timeout: float,
        backoff: Backoff,
    ) -> None:
        self._main, self._count, self._host, self._port = main, count, host, port
        self._port_file, self._stop_timeout, self._backoff = port_file, stop_timeout, backoff
        self._context = multiprocessing.get_context("spawn")
        # Never written to: it closes when the supervisor exits, however it exits.
        self._lifeline, self._lifeline_held = self._context.Pipe(duplex=False)
        self._slots: list[_Slot] = []
        self._stopping = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        self._slots = [_Slot(index, *self._spawn(index), time.monotonic()) for index in range(self._count)]
        failed = await self._first_failed()
        if failed is not None:
            return await self._fail(failed)
        keepers = [asyncio.create_task(self._keep(slot)) for slot in self._slots]
        if not self._stopping.is_set():  # else asked to stop while starting
            if self._port_file is not None:
                self._port_file.write_text(f"{self._port}\n")
            _log.info(
                {
                    "event": "workers_serving",
                    "workers": self._count,
                    "port": self._port,
                    "pid": os.getpid(),
                    "worker_pids": [slot.pid for slot in self._slots],
                }
            )
            await self._stopping.wait()
        return 0 if await self._drain(keepers) else 1

    async def _fail(self, failed: int) -> int:
        """Stops the set after worker `failed` exited while starting; returns the exit code, 1.
        A fault that stops the first start would stop every restart: it is reported, not looped on."""
        slot = self._slots[failed]
        try:  # it is on its way out; a signal now would hide how it exited
            status = _exit_status(await asyncio.wait_for(_exit_code(slot.process), self._stop_timeout))
        except TimeoutError:
            status = {}
        _log.error({"event": "workers_failed_to_start", "worker": failed, "pid": slot.pid, **status})
        self._stop(signal.SIGTERM)
        await self._drain([asyncio.create_task(_exit_code(slot.process)) for slot in self._slots])
        return 1

    def _spawn(self, index: int) -> tuple[BaseProcess, Connection]:
        """Starts worker `index`; returns it and the pipe on which it will report its port."""
        reports, ready = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=self._main,
            args=(index, self._host, self._port, ready, self._lifeline),
            name=f"llm-gateway-worker-{index}",
            daemon=False,
        )
        try:
            process.start()
        except BaseException:
            reports.close()
            raise
        finally:
            ready.close()  # the worker's copy is now the only one: it closes if the worker dies unready
        return process, reports

    async def _first_failed(self) -> int | None:
        """Waits until every worker has reported serving or exited; returns the index of one that
        exited first as soon as it has, unless a stop was asked for (then exits are expected)."""

        async def serving(slot: _Slot) -> int | None:
            return None if await self._serving(slot) else slot.index

        for reported in asyncio.as_completed([serving(slot) for slot in self._slots]):
            failed = await reported
            if failed is not None and not self._stopping.is_set():
                return failed
        return None

    async def _serving(self, slot: _Slot) -> bool:
        """Waits until the worker sends its port (True) or exits without sending it (False)."""
        if slot.reports is None:
            return slot.serving
        try:
            await _readable(slot.reports.fileno())
            slot.reports.recv()
            slot.serving = True
        except EOFError:
            pass
        finally:
            slot.reports.close()
            slot.reports = None
        return slot.serving

    async def _keep(self, slot: _Slot) -> int | None:
        """Restarts the slot's worker each time it exits unasked. Once a stop is asked for, returns
        the exit code of the worker it stopped, or None if there was none serving (the slot was
        waiting to restart, or its worker still starting)."""
        while True:
            await self._serving(slot)
            code = await _exit_code(slot.process)
            if self._stopping.is_set():
                # One still starting had nothing to drain, and perhaps no handler for the signal yet.
                return code if slot.serving else None
            worker_exited(slot.pid)
            uptime = time.monotonic() - slot.started
            slot.streak = self._backoff.streak(slot.streak, uptime)
            delay = self._backoff.delay(slot.streak)
            previous = slot.pid
            _log.error(
                {
                    "event": "worker_exited",
                    "worker": slot.index,
                    "pid": previous,
                    **_exit_status(code),
                    "uptime_s": round(uptime, 3),
                    "exits_in_a_row": slot.streak,
                    "restart_in_s": delay,
                }
            )
            if not await self._restart(slot, delay, previous):
                return None

    async def _restart(self, slot: _Slot, delay: float, previous: int) -> bool:
        """Starts a new worker in the slot after `delay`, backing off further while none can be
        started; False if a stop was asked for first."""
        while not await self._stopped_within(delay):
            try:
                slot.hold(*self._spawn(slot.index))
            except OSError as exc:  # fork failed: out of memory or over a process limit
                slot.streak += 1
                delay = self._backoff.delay(slot.streak)
                _log.error(
                    {
                        "event": "worker_start_failed",
                        "worker": slot.index,
                        "error": str(exc),
                        "retry_in_s": delay,
                    }
                )
                continue
            _log.info(
                {
                    "event": "worker_restarted",
                    "worker": slot.index,
                    "pid": slot.pid,
                    "previous_pid": previous,
                    "delay_s": delay,
                }
            )
            return True
        return False

    async def _stopped_within(self, seconds: float) -> bool:
        """Waits `seconds`, or less if a stop is asked for meanwhile; says whether it was."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def _drain(self, exits: Sequence[asyncio.Task[int | None]]) -> bool:
        """Waits up to stop_timeout for the workers to exit, kills those still running, and says
        whether every worker exited cleanly (a slot without a worker counts as clean)."""
        _, late = await asyncio.wait(exits, timeout=self._stop_timeout)
        if late:
            for slot in self._slots:
                if slot.process.is_alive():
                    _log.error({"event": "worker_killed", "worker": slot.index, "pid": slot.pid})
                    slot.process.kill()
            await asyncio.wait(late)
        return all(exited.result() in (0, None) for exited in exits)

    def _stop(self, signum: int) -> None:
        self._stopping.set()
        _signal(signum, self._slots)

    def _reload(self) -> None:
        sent = _signal(signal.SIGHUP, [slot for slot in self._slots if slot.serving])
        _log.info({"event": "sighup_forwarded", "worker_pids": sent})


def _signal(signum: int, slots: Iterable[_Slot]) -> list[int]:
    """Sends `signum` to the slots' running workers; returns their pids."""
    sent = []
    for slot in slots:
        # is_alive() reaps an exited worker, so a running one's pid cannot have been reused.
        if slot.process.is_alive():
            try:
                os.kill(slot.pid, signum)
            except ProcessLookupError:
                continue
            sent.append(slot.pid)
    return sent


async def _readable(fd: int) -> None:
    """Waits until `fd` is readable (data, or its other end closed)."""
    loop = asyncio.get_running_loop()
    readable = loop.create_future()

    def wake() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await readable
    finally:
        loop.remove_reader(fd)


async def _exit_code(process: BaseProcess) -> int:
    """Waits for a worker to exit, reaps it and returns its exit code (-N: killed by signal N)."""
    await _readable(process.sentinel)
    process.join()
    code = process.exitcode
    assert code is not None  # joined
    return code


def _exit_status(code: int) -> dict[str, Any]:
    """An exit code as log fields: `exit_code`, or `signal` by name when a signal killed it."""
    if code >= 0:
        return {"exit_code": code}
    try:
        return {"signal": signal.Signals(-code).name}
    except ValueError:
        return {"signal": -code}
