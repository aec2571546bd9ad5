"""Stopping a process's background loops (the metrics sampler, the webhook sender, the ledger's
pruning, the budget keeper's settling and refreshing) the one way they all need."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def stop(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancels every task given (None: none there), then waits for each to end."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task
