"""`llm-gateway ledger migrate` and `llm-gateway ledger prune`: the ledger's schema and retention
by hand (the gateway does both itself: migrations before its first write, retention hourly).

Kept apart from the ledger package, which this module imports only to run a command, so that the
other commands do not load the gateway core to parse their arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from llm_gateway.config import GatewayConfig


def add_ledger_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    config_argument: Callable[[argparse.ArgumentParser], None],
) -> None:
    ledger = commands.add_parser("ledger", help="manage the usage ledger (ledger.url)")
    actions = ledger.add_subparsers(dest="ledger_command", required=True)
    migrate = actions.add_parser("migrate", help="apply the schema migrations not yet applied")
    config_argument(migrate)
    prune = actions.add_parser("prune", help="remove calls older than ledger.retention_days now")
    config_argument(prune)


def run_ledger_command(args: argparse.Namespace, config: GatewayConfig) -> int:
    return asyncio.run(_run(args.ledger_command, config))


async def _run(command: str, config: GatewayConfig) -> int:
    from llm_gateway.ledger import Ledger, redacted

    ledger = Ledger(config.ledger)
    where = redacted(ledger.url.url)
    try:
        version = await ledger.store.migrate()
        if command == "migrate":
            print(f"ledger {where}: schema version {version}")
            return 0
        pruned = await ledger.prune()
        kept = "kept forever (retention_days = 0)" if not config.ledger.retention_days else ""
        print(
            f"ledger {where}: {kept or f'removed {pruned.rows} call(s)'}"
            + (f" and partition(s) {', '.join(pruned.partitions)}" if pruned.partitions else "")
        )
        return 0
    except Exception as exc:
        # The driver's own words (never the URL: it may carry a password).
        print(f"ledger {where}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        await ledger.store.close()
