"""`serve --workers N`: worker processes share one port, stop together, and fail together."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from llmgateway.v1 import gateway_service_pb2_grpc
from tests.conftest import GatewayProcess, chat, gateway_process

TOML = '[server]\nhost = "127.0.0.1"\ngrace_period = 5.0\n'


@pytest.fixture
async def workers(tmp_path: Path) -> AsyncIterator[GatewayProcess]:
    async with gateway_process(tmp_path, TOML, "--workers", "2") as process:
        yield process


def serving_pids(process: GatewayProcess) -> dict[int, int]:
    """Worker index -> pid, from each worker's `serving` log line."""
    return {e["worker"]: e["pid"] for e in process.log_lines() if e.get("event") == "serving"}


async def test_connections_spread_over_every_worker(workers: GatewayProcess) -> None:
    assert sorted(serving_pids(workers)) == [0, 1]
    for _ in range(16):  # each channel its own connection; the kernel picks a worker per connection
        options = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.insecure_channel(workers.address, options=options) as channel:
            reply = await gateway_service_pb2_grpc.GatewayServiceStub(channel).Chat(
                chat("mock:echo"), timeout=5
            )
            assert reply.cost.total
    await asyncio.sleep(0.2)  # access log lines are written after the reply
    served_by = {e["worker"] for e in workers.log_lines() if e.get("event") == "access"}
    assert served_by == {0, 1}


async def test_sigterm_stops_every_worker_and_exits_zero(workers: GatewayProcess) -> None:
    pids = serving_pids(workers)
    workers.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(workers.process.wait(), 20) == 0
    stopped = {e["worker"] for e in workers.log_lines() if e.get("event") == "stopped"}
    assert stopped == {0, 1}
    for pid in pids.values():  # the supervisor reaped them: no such process any more
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_a_dead_worker_takes_the_set_down_with_a_failing_exit(workers: GatewayProcess) -> None:
    pids = serving_pids(workers)
    os.kill(pids[0], signal.SIGKILL)
    assert await asyncio.wait_for(workers.process.wait(), 20) == 1
    events = [e.get("event") for e in workers.log_lines()]
    assert "worker_exited" in events
    stopped = {e["worker"] for e in workers.log_lines() if e.get("event") == "stopped"}
    assert stopped == {1}  # the survivor drained and stopped cleanly


async def test_a_worker_stopping_on_its_own_is_a_failure_too(workers: GatewayProcess) -> None:
    os.kill(serving_pids(workers)[1], signal.SIGTERM)  # it drains and exits 0, unasked by the supervisor
    assert await asyncio.wait_for(workers.process.wait(), 20) == 1


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for a parent that no longer reaps it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


async def test_workers_outlive_no_supervisor_killed_without_warning(workers: GatewayProcess) -> None:
    pids = serving_pids(workers)
    workers.process.kill()  # SIGKILL: no chance to forward anything
    await workers.process.wait()
    for _ in range(100):
        if not any(running(pid) for pid in pids.values()):
            break
        await asyncio.sleep(0.1)
    assert not any(running(pid) for pid in pids.values())


async def test_workers_zero_is_refused() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "llm_gateway", "serve", "--workers", "0", stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 2
    assert b"--workers must be at least 1" in err
