"""A process that writes calls to a ledger through the writer, for the tests that need a real
second process: two writers on one SQLite file, and `kill -9` in the middle of writing.

    python -m tests.ledger_load URL SPOOL_DIR PREFIX COUNT [--every SECONDS] [--ready FILE]

Call `i` gets the id `chat_<PREFIX>_<i:08d>` and, as its start, the moment it was handed to the
writer. With `--every`, calls are handed over one each that many seconds (else as fast as the loop
goes); `--ready` names a file written just before the first call.
After COUNT calls (0: never stop) the writer is closed and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from pathlib import Path

from llm_gateway.ledger import LedgerWriter, open_store, parse_url
from llm_gateway.ledger.spool import Spool
from tests.ledgers import record


async def main(args: argparse.Namespace) -> None:
    store = open_store(parse_url(args.url), timeout=2.0)
    with contextlib.suppress(Exception):  # the database is down: the writer spools, migrates later
        await store.migrate()
    writer = LedgerWriter(store, Spool(args.spool), flush_interval=0.1, batch_size=100, write_timeout=2.0)
    writer.start()
    if args.ready:
        args.ready.write_text("ready\n")
    i = 0
    next_at = time.monotonic()
    while args.count == 0 or i < args.count:
        writer.call_ended(record(at=time.time(), call_id=f"chat_{args.prefix}_{i:08d}"))
        i += 1
        if args.every:
            next_at += args.every
            await asyncio.sleep(max(next_at - time.monotonic(), 0))
        elif i % 100 == 0:
            await asyncio.sleep(0)
    await writer.close()
    await store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("spool", type=Path)
    parser.add_argument("prefix")
    parser.add_argument("count", type=int)
    parser.add_argument("--every", type=float, default=0.0)
    parser.add_argument("--ready", type=Path)
    asyncio.run(main(parser.parse_args()))
