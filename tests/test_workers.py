"""`serve --workers N`: worker processes share one port and stop together; the supervisor restarts
a worker that dies, backing off when it keeps dying, and passes SIGHUP on."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection, wait
from pathlib import Path
from types import FrameType
from typing import Any

import grpc
import pytest

from llm_gateway.logs import configure_logging
from llm_gateway.workers import Backoff, run_workers
from llmgateway.v1 import gateway_service_pb2_grpc
from tests.conftest import GatewayProcess, chat, gateway_process

ROOT = Path(__file__).resolve().parents[1]
TOML = '[server]\nhost = "127.0.0.1"\ngrace_period = 5.0\n'

Record = dict[str, Any]


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    async with gateway_process(tmp_path, TOML, "--workers", "2") as process:
        yield process


def records(process: GatewayProcess) -> list[Record]:
    """The JSON log lines written so far, leaving out a last line still being written."""
    complete = process.log.read_text().split("\n")[:-1]
    return [json.loads(line) for line in complete if line.startswith("{")]


def events(process: GatewayProcess, name: str) -> list[Record]:
    return [e for e in records(process) if e.get("event") == name]


async def logged(
    process: GatewayProcess, match: Callable[[Record], bool], *, after: int = -1, within: float = 30
) -> tuple[int, Record]:
    """Waits for the first log line past position `after` that `match`es; returns its position."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        for position, record in enumerate(records(process)):
            if position > after and match(record):
                return position, record
        assert process.process.returncode is None, process.log.read_text()
        await asyncio.sleep(0.05)
    raise AssertionError(f"not logged within {within} s:\n{process.log.read_text()}")


def is_event(name: str, **fields: object) -> Callable[[Record], bool]:
    return lambda e: e.get("event") == name and all(e.get(k) == v for k, v in fields.items())


async def serving_pids(process: GatewayProcess, count: int = 2) -> dict[int, int]:
    """Worker index -> pid of the worker serving in that slot now, from the `serving` lines."""
    for index in range(count):
        await logged(process, is_event("serving", worker=index))
    return {e["worker"]: e["pid"] for e in events(process, "serving")}


def logged_at(record: Record) -> float:
    """A log line's timestamp (UTC, millisecond resolution) as seconds since the epoch."""
    return datetime.strptime(record["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for a parent that no longer reaps it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


async def all_gone(pids: list[int]) -> bool:
    for _ in range(200):
        if not any(running(pid) for pid in pids):
            return True
        await asyncio.sleep(0.1)
    return False


async def call_on_a_new_connection(address: str) -> grpc.StatusCode:
    """One Chat call over a channel of its own, so a connection of its own to whichever worker the
    kernel picks."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    async with grpc.aio.insecure_channel(address, options=options) as channel:
        try:
            await gateway_service_pb2_grpc.GatewayServiceStub(channel).Chat(chat("mock:echo"), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


@dataclass
class Call:
    started: float  # time.monotonic()
    first: grpc.StatusCode
    retried: grpc.StatusCode | None  # on another new connection, if the first failed


async def keep_calling(address: str, calls: list[Call], stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.monotonic()
        first = await call_on_a_new_connection(address)
        retried = None if first == grpc.StatusCode.OK else await call_on_a_new_connection(address)
        calls.append(Call(started, first, retried))


async def test_connections_spread_over_every_worker(workers: GatewayProcess) -> None:
    assert sorted(await serving_pids(workers)) == [0, 1]
    for _ in range(16):  # each channel its own connection; the kernel picks a worker per connection
        assert await call_on_a_new_connection(workers.address) == grpc.StatusCode.OK
    await asyncio.sleep(0.2)  # access log lines are written after the reply
    served_by = {e["worker"] for e in events(workers, "access")}
    assert served_by == {0, 1}


async def test_sigterm_stops_every_worker_and_exits_zero(workers: GatewayProcess) -> None:
    pids = await serving_pids(workers)
    workers.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(workers.process.wait(), 20) == 0
    stopped = {e["worker"] for e in events(workers, "stopped")}
    assert stopped == {0, 1}
    for pid in pids.values():  # the supervisor reaped them: no such process any more
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_a_killed_worker_is_replaced_while_the_other_keeps_serving(workers: GatewayProcess) -> None:
    pids = await serving_pids(workers)
    calls: list[Call] = []
    stop_calling = asyncio.Event()
    caller = asyncio.create_task(keep_calling(workers.address, calls, stop_calling))
    await asyncio.sleep(0.3)  # calls flowing to both workers

    killed_at, killed = time.time(), time.monotonic()
    os.kill(pids[0], signal.SIGKILL)
    _, exited = await logged(workers, is_event("worker_exited"))
    reaped = time.monotonic()  # its listening socket is closed by now
    _, restarted = await logged(workers, is_event("worker_restarted"))
    position, replacement = await logged(workers, is_event("serving", worker=0, pid=restarted["pid"]))
    replaced = time.monotonic()
    # The replacement takes its share of new connections: a call logged by worker 0 after it served.
    await logged(workers, is_event("access", worker=0), after=position)
    stop_calling.set()
    await caller

    assert exited.items() >= {"worker": 0, "pid": pids[0], "signal": "SIGKILL", "restart_in_s": 0.5}.items()
    assert restarted.items() >= {"worker": 0, "previous_pid": pids[0], "delay_s": 0.5}.items()
    assert restarted["pid"] != pids[0]
    assert running(pids[1])
    assert [e["pid"] for e in events(workers, "serving") if e["worker"] == 1] == [pids[1]]
    # A call whose connection the kernel handed to the dying worker (queued on its listening
    # socket, or in flight) fails UNAVAILABLE; on a new connection it is served by a live worker.
    for call in calls:
        assert call.first == grpc.StatusCode.OK or call.first == grpc.StatusCode.UNAVAILABLE, call
        assert call.first == grpc.StatusCode.OK or call.retried == grpc.StatusCode.OK, call
    # Once the supervisor has reaped it, no new connection can reach it: first attempts succeed.
    assert all(call.first == grpc.StatusCode.OK for call in calls if call.started > reaped)
    assert sum(killed <= call.started <= replaced for call in calls) >= 5, calls  # through the restart
    retried = sum(call.first != grpc.StatusCode.OK for call in calls)
    print(
        f"\nkill -9 to replacement serving: {logged_at(replacement) - killed_at:.3f} s; "
        f"{len(calls)} calls, {retried} retried on a new connection"
    )


async def test_replacement_workers_also_stop_when_the_supervisor_is_killed(workers: GatewayProcess) -> None:
    pids = await serving_pids(workers)
    os.kill(pids[1], signal.SIGKILL)
    _, restarted = await logged(workers, is_event("worker_restarted"))
    await logged(workers, is_event("serving", pid=restarted["pid"]))
    workers.process.kill()  # SIGKILL: no chance to forward anything
    await workers.process.wait()
    assert await all_gone([pids[0], restarted["pid"]])
    # Both drained: the replacement saw its lifeline close as the first worker did.
    assert {e["worker"] for e in events(workers, "stopped")} == {0, 1}


async def test_a_worker_failing_at_start_up_fails_the_set_without_restarts(tmp_path: Path) -> None:
    config, log = tmp_path / "gateway.toml", tmp_path / "gateway.log"
    config.write_text(TOML)
    with socket.socket() as taken, log.open("w") as out:
        taken.bind(("127.0.0.1", 0))
        taken.listen()  # without SO_REUSEPORT: no worker can bind the port
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "llm_gateway", "serve", "--config", str(config)),
            *("--port", str(port), "--workers", "2"),
            stdout=out,
            stderr=out,
        )
        assert await asyncio.wait_for(process.wait(), 60) == 1
    supervisor = GatewayProcess(process, "", log)
    [failed] = events(supervisor, "workers_failed_to_start")
    assert failed["worker"] in (0, 1)
    assert failed["exit_code"] == 1  # its own exit (a bind error), not the stop that followed
    assert not events(supervisor, "worker_restarted")


async def test_workers_zero_is_refused() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llm_gateway", "serve", "--workers", "0", stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 2
    assert b"--workers must be at least 1" in err


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_stable_run() -> None:
    backoff = Backoff(first=0.5, cap=30.0, stable_after=60.0)
    streak, delays = 0, []
    for uptime in [0.1, 2, 5, 1, 1, 1, 1, 1, 60, 3]:
        streak = backoff.streak(streak, uptime)
        delays.append(backoff.delay(streak))
    assert delays == [0.5, 1, 2, 4, 8, 16, 30, 30, 0.5, 1]
    assert backoff.delay(100_000) == 30  # days of crash loop: still the cap, no float overflow


# The tests below run `run_workers` in a process of its own over small worker entry points, with
# back-off delays of their choosing. Workers are spawned, so they import these from this module.

_test_log = logging.getLogger("tests.workers")


def stay(directory: Path, index: int, host: str, port: int, ready: Connection, lifeline: Connection) -> None:
    """A worker that serves nothing until told to stop (SIGTERM, or the supervisor gone), and
    appends a line to `directory`/sighup-PID for each SIGHUP it gets."""
    configure_logging("info", {"worker": index})

    def record_sighup(_signum: int, _frame: FrameType | None) -> None:
        with (directory / f"sighup-{os.getpid()}").open("a") as out:
            out.write("SIGHUP\n")

    def leave(_signum: int, _frame: FrameType | None) -> None:
        sys.exit(0)

    signal.signal(signal.SIGHUP, record_sighup)
    signal.signal(signal.SIGTERM, leave)
    ready.send(port)
    ready.close()
    _test_log.info({"event": "serving", "pid": os.getpid()})
    wait([lifeline])


def exit_when_ready(
    directory: Path, index: int, host: str, port: int, ready: Connection, lifeline: Connection
) -> None:
    """A worker that reports it serves and exits 3 at once, as one failing on its first call."""
    configure_logging("info", {"worker": index})
    ready.send(port)
    ready.close()
    _test_log.info({"event": "serving", "pid": os.getpid()})
    sys.exit(3)


_ENTRY_POINTS = {"stay": stay, "exit_when_ready": exit_when_ready}


def supervise() -> None:
    """`python -c '...supervise()' WORKER DIRECTORY COUNT FIRST_DELAY MAX_DELAY`: the supervisor."""
    name, directory, count, first, cap = sys.argv[1:]
    configure_logging("info")
    sys.exit(
        run_workers(
            functools.partial(_ENTRY_POINTS[name], Path(directory)),
            count=int(count),
            host="127.0.0.1",
            port=0,
            port_file=Path(directory) / "port",
            stop_timeout=10,
            backoff=Backoff(first=float(first), cap=float(cap)),
        )
    )


@asynccontextmanager
async def supervisor(
    directory: Path, worker: str, *, count: int, first: float, cap: float, until_serving: bool = True
) -> AsyncIterator[GatewayProcess]:
    """`supervise` as a child process logging to a file in `directory`, by default once its workers
    serve."""
    port_file, log = directory / "port", directory / "supervisor.log"
    with log.open("w") as out:
        process = await asyncio.create_subprocess_exec(
            *(sys.executable, "-c", "from tests.test_workers import supervise; supervise()"),
            *(worker, str(directory), str(count), str(first), str(cap)),
            stdout=out,
            stderr=out,
            cwd=ROOT,
        )
    try:
        for _ in range(600 if until_serving else 0):
            if port_file.exists() and port_file.read_text().strip():
                break
            assert process.returncode is None, log.read_text()
            await asyncio.sleep(0.05)
        port = port_file.read_text().strip() if until_serving else ""
        yield GatewayProcess(process, f"127.0.0.1:{port}", log)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_restarts_of_a_worker_that_keeps_exiting_back_off(tmp_path: Path) -> None:
    async with supervisor(tmp_path, "exit_when_ready", count=1, first=0.2, cap=0.8) as process:
        position = -1
        for _ in range(4):
            position, _ = await logged(process, is_event("worker_restarted"), after=position)
    exits, restarts = events(process, "worker_exited")[:4], events(process, "worker_restarted")[:4]

    assert [e["exit_code"] for e in exits] == [3, 3, 3, 3]
    assert [e["exits_in_a_row"] for e in exits] == [1, 2, 3, 4]
    assert [e["restart_in_s"] for e in exits] == [0.2, 0.4, 0.8, 0.8]
    assert [r["previous_pid"] for r in restarts] == [e["pid"] for e in exits]
    # Measured from the log: each restart came its delay after the exit (to the log's millisecond),
    # and the waits grew until the cap.
    gaps = [logged_at(r) - logged_at(e) for e, r in zip(exits, restarts, strict=True)]
    for gap, exited in zip(gaps, exits, strict=True):
        assert exited["restart_in_s"] - 0.002 <= gap < exited["restart_in_s"] + 3, gaps
    assert gaps[0] < gaps[1] < gaps[2], gaps
    between_exits = [logged_at(b) - logged_at(a) for a, b in itertools.pairwise(exits)]
    print(
        "\nexit to restart: "
        + ", ".join(f"{gap:.3f}" for gap in gaps)
        + " s; exit to exit: "
        + ", ".join(f"{gap:.3f}" for gap in between_exits)
        + " s"
    )


async def test_sigterm_during_a_back_off_stops_at_once_without_a_restart(tmp_path: Path) -> None:
    async with supervisor(tmp_path, "stay", count=2, first=60, cap=60) as process:
        pids = await serving_pids(process)
        os.kill(pids[0], signal.SIGKILL)
        await logged(process, is_event("worker_exited", pid=pids[0], restart_in_s=60))
        asked = time.monotonic()
        process.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.process.wait(), 20) == 0  # the other drained cleanly
        took = time.monotonic() - asked
    assert took < 10, took  # not the 60 s back-off
    assert not events(process, "worker_restarted")
    assert await all_gone(list(pids.values()))
    print(f"\nSIGTERM during a back-off: supervisor exited 0 after {took:.3f} s")


def spawned_workers(pid: int) -> list[int]:
    """The processes `pid` has spawned through multiprocessing, leaving out its resource tracker."""
    workers = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                workers.append(int(child))
        except FileNotFoundError:  # exited meanwhile
            pass
    return workers


async def test_sigterm_while_workers_start_stops_them_cleanly(tmp_path: Path) -> None:
    async with supervisor(tmp_path, "stay", count=2, first=0.1, cap=0.1, until_serving=False) as process:
        for _ in range(600):  # its signal handlers are set before it starts any worker
            if len(spawned_workers(process.process.pid)) == 2:
                break
            await asyncio.sleep(0.01)
        process.process.send_signal(signal.SIGTERM)
        # Workers still starting had nothing to drain, even those the signal killed outright.
        assert await asyncio.wait_for(process.process.wait(), 20) == 0
    assert not (tmp_path / "port").exists()
    assert not events(process, "workers_serving")
    assert not events(process, "worker_restarted")


async def test_sighup_reaches_every_serving_worker_and_stops_none(tmp_path: Path) -> None:
    def sighups(pid: int) -> int:
        path = tmp_path / f"sighup-{pid}"
        return len(path.read_text().splitlines()) if path.exists() else 0

    async def until(condition: Callable[[], bool]) -> None:
        for _ in range(200):
            if condition():
                return
            await asyncio.sleep(0.05)
        raise AssertionError(process.log.read_text())

    async with supervisor(tmp_path, "stay", count=2, first=0.1, cap=0.1) as process:
        pids = await serving_pids(process)
        process.process.send_signal(signal.SIGHUP)
        await until(lambda: sighups(pids[0]) == 1 and sighups(pids[1]) == 1)

        os.kill(pids[0], signal.SIGKILL)  # a replacement gets the next one too
        _, restarted = await logged(process, is_event("worker_restarted"))
        await logged(process, is_event("serving", pid=restarted["pid"]))
        process.process.send_signal(signal.SIGHUP)
        await until(lambda: sighups(restarted["pid"]) == 1 and sighups(pids[1]) == 2)

        assert process.process.returncode is None
        assert [e["pid"] for e in events(process, "worker_exited")] == [pids[0]]  # only the killed one
        assert running(pids[1])
        process.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.process.wait(), 20) == 0
    assert [e["worker_pids"] for e in events(process, "sighup_forwarded")] == [
        [pids[0], pids[1]],
        [restarted["pid"], pids[1]],
    ]
