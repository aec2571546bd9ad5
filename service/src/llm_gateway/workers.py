"""Several worker processes serving one port.

A Python process runs Python code on one core at a time, so the gateway scales across cores with
processes. Each worker is a whole gateway (its own event loop, gRPC server and upstream pool) bound
to the same port with SO_REUSEPORT; the kernel spreads incoming connections across them.

The supervisor only starts workers, forwards SIGTERM/SIGINT and waits. A worker that dies on its own
stops the others and the supervisor exits non-zero, so the orchestrator (systemd, Kubernetes)
restarts the whole set rather than a degraded one limping on. A supervisor that dies without a
word (SIGKILL, OOM) takes its workers with it: each worker holds the read end of a lifeline pipe
whose only write end the supervisor holds, sees it close, and drains.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType

_log = logging.getLogger("llm_gateway.workers")

# A worker entry point: (worker index, host, port, ready pipe, lifeline), exiting with its status.
# It must be picklable, e.g. a module-level function (workers are spawned, not forked: gRPC does
# not survive fork), send its bound port through `ready` once it serves, and stop when `lifeline`
# becomes readable (the supervisor is gone; see `watch_lifeline`).
WorkerMain = Callable[[int, str, int, Connection, Connection], None]


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
) -> int:
    """Runs `count` workers of `main` on host:port until SIGTERM/SIGINT; returns the exit code."""
    reserved = reserve_port(host) if port == 0 else None
    if reserved is not None:
        port = reserved.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    # Never written to: it closes when the supervisor exits, however it exits.
    lifeline, _lifeline_held = context.Pipe(duplex=False)
    workers: list[tuple[BaseProcess, Connection]] = []
    for index in range(count):
        receive, send = context.Pipe(duplex=False)
        started = context.Process(
            target=main,
            args=(index, host, port, send, lifeline),
            name=f"llm-gateway-worker-{index}",
            daemon=False,
        )
        started.start()
        send.close()
        workers.append((started, receive))

    stopping = False

    def forward(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for process, _ in workers:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    failed = False  # a worker exited before any signal asked it to
    try:
        if _all_ready(workers) and port_file is not None:
            port_file.write_text(f"{port}\n")
        if not stopping:
            _log.info({"event": "workers_serving", "workers": count, "port": port, "pid": os.getpid()})
            # Blocks until the first worker exits: a signal made them all exit, or one died.
            wait([process.sentinel for process, _ in workers])
        if not stopping:
            failed = True
            _log.error({"event": "worker_exited", "exit_codes": [p.exitcode for p, _ in workers]})
            forward(signal.SIGTERM, None)
        for process, _ in workers:
            process.join(stop_timeout)
            if process.is_alive():
                process.kill()
                process.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if reserved is not None:
            reserved.close()
    clean = all(process.exitcode == 0 for process, _ in workers)
    return 0 if clean and not failed else 1


def _all_ready(workers: list[tuple[BaseProcess, Connection]]) -> bool:
    """Waits until every worker has sent its port (True) or any has exited first (False)."""
    pending = {receive: process for process, receive in workers}
    while pending:
        for ready in wait([*pending, *(p.sentinel for p in pending.values())]):
            if isinstance(ready, Connection):
                try:
                    ready.recv()
                except EOFError:
                    return False
                del pending[ready]
            else:
                return False
    return True
