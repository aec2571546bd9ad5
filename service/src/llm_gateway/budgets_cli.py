"""`llm-gateway budgets list` and `llm-gateway budgets rebuild`: the budgets and key quotas in the
ledger's database, read and repaired by hand.

`rebuild` sets every budget's and quota's current window to what the ledger's calls in it add up
to: after a crash lost settlements, or to start counting a budget created mid-period from the
calls already made. Calls in flight while it runs settle on top of what it wrote, so run it with
the gateway stopped or quiet (docs/budgets.md).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from llm_gateway.config import GatewayConfig


def add_budget_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    config_argument: Callable[[argparse.ArgumentParser], None],
) -> None:
    budgets = commands.add_parser("budgets", help="budgets and key quotas (docs/budgets.md)")
    actions = budgets.add_subparsers(dest="budgets_command", required=True)
    listing = actions.add_parser("list", help="every budget and quota with where it stands now")
    config_argument(listing)
    rebuild = actions.add_parser("rebuild", help="recount the current windows from the ledger's calls")
    config_argument(rebuild)


def run_budget_command(args: argparse.Namespace, config: GatewayConfig) -> int:
    if not config.ledger.enabled:
        print("budgets live in the ledger's database: enable the ledger (ledger.enabled)", file=sys.stderr)
        return 2
    return asyncio.run(_run(args.budgets_command, config))


async def _run(command: str, config: GatewayConfig) -> int:
    from llm_gateway.budgets.keeper import BudgetKeeper
    from llm_gateway.budgets.store import open_budget_store
    from llm_gateway.ledger.url import parse_url, redacted
    from llm_gateway.pricing import format_decimal

    url = parse_url(config.ledger.url.get_secret_value())
    store = open_budget_store(url, timeout=config.ledger.write_timeout)
    keeper = BudgetKeeper(config.budgets, config.auth.keys, store)
    where = redacted(url.url)
    try:
        await store.migrate()
        await keeper.refresh()
        if command == "rebuild":
            for rebuilt in await keeper.rebuild():
                print(
                    f"{rebuilt.budget_id}: window from {rebuilt.window_start.isoformat()}: "
                    f"{format_decimal(rebuilt.before)} -> {format_decimal(rebuilt.after)}"
                )
            return 0
        budgets = keeper.budgets
        for budget, standing in zip(budgets, await keeper.standings(budgets), strict=True):
            resets = standing.charge.window.end.isoformat() if budget.period.value != "none" else "never"
            print(
                f"{budget.id} ({budget.scope}, {budget.source}): {format_decimal(standing.spent)} spent, "
                f"{format_decimal(standing.reserved)} reserved of {format_decimal(budget.limit)} USD "
                f"per {budget.period.value}; resets {resets}"
            )
        for quota, standing in await keeper.quota_standings():
            print(
                f"{quota.id}: {format_decimal(standing.spent)} used, {format_decimal(standing.reserved)} "
                f"reserved of {quota.limit}; resets {standing.charge.window.end.isoformat()}"
            )
        return 0
    except Exception as exc:
        print(f"budgets in {where}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()
