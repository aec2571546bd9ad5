"""Stopping a process's background loops (the metrics sampler, the webhook sender, the ledger's
pruning, the budget keeper's settling and refreshing) the one way they all need."""

from __future__ import annotations

import asyncio
from typing import Any


async def stop(*tasks: asyncio.Task[Any] | None, within: float | None = None) -> bool:
    """Cancels every task given (None: none there), then waits for each to end, at most `within`
    seconds when given: a loop stuck in a client that does not give way to a cancel (a store's
    driver) must not hold a shutdown up. Whether every task ended; an error one ended with is
    raised."""
    running = [task for task in tasks if task is not None]
    if not running:
        return True
    for task in running:
        task.cancel()
    done, pending = await asyncio.wait(running, timeout=within)
    for task in done:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error
    return not pending
