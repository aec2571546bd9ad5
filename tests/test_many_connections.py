"""What thousands of open calls need from the process: a queue long enough for callers connecting
at once to the HTTP door, and an open-file limit raised to what the system allows. (`make bench`
holds 10,000 streams open on each door.)"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
from pathlib import Path

from llm_gateway.web.server import BACKLOG
from tests.conftest import running_gateway


def somaxconn() -> int:
    return int(Path("/proc/sys/net/core/somaxconn").read_text())


async def test_the_http_door_queues_as_many_connections_as_the_kernel_allows() -> None:
    cap = await asyncio.to_thread(somaxconn)
    async with running_gateway("") as gw:
        assert gw.server.http is not None
        port = gw.server.http.port
        listed = await asyncio.to_thread(
            subprocess.run, ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
        )
    # For a listening socket, ss's Send-Q column is its backlog.
    backlogs = {int(line.split()[2]) for line in listed.stdout.splitlines()}
    assert backlogs == {min(BACKLOG, cap)}, listed.stdout


def test_serving_raises_the_open_file_limit_to_the_hard_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(256, hard)
    script = (
        "import resource\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({low}, {hard}))\n"
        "from llm_gateway.cli import _raise_open_file_limit\n"
        "_raise_open_file_limit()\n"
        "print(*resource.getrlimit(resource.RLIMIT_NOFILE))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    soft_after, hard_after = map(int, done.stdout.split())
    assert (soft_after, hard_after) == (hard, hard)
    assert hard > low  # the check raised something
