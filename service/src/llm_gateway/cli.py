"""The `llm-gateway` command: serve, check-config, health, hash-key, ledger, budgets, usage."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import resource
import signal
import sys
from collections.abc import Coroutine
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from llm_gateway import usage_cli
from llm_gateway.budgets_cli import add_budget_commands, run_budget_command
from llm_gateway.config import ConfigError, GatewayConfig, load_config
from llm_gateway.ledger_cli import add_ledger_commands, run_ledger_command
from llm_gateway.logs import configure_logging
from llm_gateway.providers import is_enabled

_log = logging.getLogger("llm_gateway")
T = TypeVar("T")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llm-gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    _config_argument(serve)
    serve.add_argument("--host", help="listen address (default: server.host)")
    serve.add_argument("--port", type=int, help="listen port, 0 for any free port (default: server.port)")
    serve.add_argument("--port-file", type=Path, help="write the bound port here once serving")
    serve.add_argument(
        "--http-port", type=int, help="the HTTP door's port, 0 for any free port (default: http.port)"
    )
    serve.add_argument(
        "--workers", type=int, help="worker processes sharing the port (default: server.workers)"
    )

    check = commands.add_parser("check-config", help="validate the configuration and summarise it")
    _config_argument(check)

    health = commands.add_parser("health", help="query the gRPC health service; exit 0 if SERVING")
    health.add_argument("--address", default="localhost:50051")
    health.add_argument("--service", default="", help="service name ('' for the whole server)")
    health.add_argument("--timeout", type=float, default=3.0)

    commands.add_parser("hash-key", help="print the SHA-256 digest of a key read from stdin")
    add_ledger_commands(commands, _config_argument)
    add_budget_commands(commands, _config_argument)
    usage_cli.add_parser(commands)

    args = parser.parse_args(argv)
    if args.command == "health":
        return _health(args.address, args.service, args.timeout)
    if args.command == "usage":
        return usage_cli.run(args)
    if args.command == "hash-key":
        print(hashlib.sha256(sys.stdin.readline().strip().encode()).hexdigest())
        return 0
    try:
        config = load_config(args.config, os.environ)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if getattr(args, "http_port", None) is not None:
        config = config.model_copy(update={"http": config.http.model_copy(update={"port": args.http_port})})
    if args.command == "check-config":
        _summarise(config)
        return 0
    if args.command == "ledger":
        configure_logging(config.logging.level)
        return run_ledger_command(args, config)
    if args.command == "budgets":
        configure_logging(config.logging.level)
        return run_budget_command(args, config)
    configure_logging(config.logging.level)
    _raise_open_file_limit()
    workers = config.server.workers if args.workers is None else args.workers
    if workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return 2
    if workers == 1:
        return run_loop(config, _serve(config, args.host, args.port, args.port_file))
    from llm_gateway.metrics import worker_set_metrics
    from llm_gateway.workers import run_workers

    with worker_set_metrics(config.metrics.enabled):
        return run_workers(
            functools.partial(_worker, config),
            count=workers,
            host=config.server.host if args.host is None else args.host,
            port=config.server.port if args.port is None else args.port,
            port_file=args.port_file,
            stop_timeout=config.server.grace_period + 5,
        )


def _config_argument(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get("LLM_GATEWAY_CONFIG")
    parser.add_argument(
        "--config",
        type=Path,
        default=Path(default) if default else None,
        help="TOML file merged over the embedded defaults (default: $LLM_GATEWAY_CONFIG)",
    )


def _summarise(config: GatewayConfig) -> None:
    print("configuration OK")
    print(f"listen: {config.server.host}:{config.server.port}")
    print(f"auth: {len(config.auth.keys)} API key(s)" if config.auth.keys else "auth: off (no API keys)")
    for name, provider in sorted(config.providers.items()):
        state = "enabled" if is_enabled(provider) else "disabled"
        print(f"provider {name} ({provider.kind}): {state}, {len(provider.models)} listed model(s)")
        if (plan := provider.subscription) is not None:
            covered = f"{plan.included_tokens:,} tokens" if plan.included_tokens else "every call"
            print(f"subscription of {name}: {plan.fee_usd} USD per {plan.period}, covering {covered}")
    for alias, target in sorted(config.aliases.items()):
        print(f"alias {alias} -> {target}")
    print(f"auto: {', '.join(config.routing.auto)}")
    from llm_gateway.ledger.url import redacted  # URLs shown without their passwords

    if config.ledger.enabled:
        print(f"ledger: {redacted(config.ledger.url.get_secret_value())}")
    else:
        print("ledger: off")
    if config.fleet.redis_url is not None:
        where = redacted(config.fleet.redis_url.get_secret_value())
        fleet = config.fleet
        print(
            f"fleet: rate limits, pauses and circuit breakers shared on {where} (while it is down: "
            f"limits {fleet.limits_when_down}, breakers {fleet.breakers_when_down})"
        )
    for budget in config.budgets.limits:
        thresholds = ", ".join(f"{t}%" for t in budget.thresholds) or "no alerts"
        print(
            f"budget {budget.id}: {budget.scope}, {budget.limit_usd} USD per {budget.period} "
            f"({config.budgets.time_zone}), {thresholds}"
        )
    for key in config.auth.keys:
        if key.quota is not None:
            quotas = ", ".join(f"{limit} {what} per {per}" for what, per, limit in key.quota.limits())
            print(f"quota of key {key.name}: {quotas}")
    for hook in config.webhooks:  # the name only: the URL may carry a token
        print(f"webhook {hook.name}: {', '.join(hook.events)}")


def run_loop(config: GatewayConfig, main: Coroutine[Any, Any, T]) -> T:
    """Runs a serving process's `main` on the configured event loop (`server.event_loop`)."""
    if config.server.event_loop == "uvloop":
        return uvloop.run(main)
    return asyncio.run(main)


def _raise_open_file_limit() -> None:
    """Every open call holds a caller's connection or stream and an upstream connection: the soft
    limit on open files (often 1,024) goes up to the hard one, as Go's runtime does for its
    programs, so thousands of open streams do not fail on it. Workers inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _worker(
    config: GatewayConfig, index: int, host: str, port: int, ready: Connection, lifeline: Connection
) -> None:
    """One worker process of `serve --workers N` (see `llm_gateway.workers`)."""
    configure_logging(config.logging.level, {"worker": index})
    sys.exit(run_loop(config, _serve(config, host, port, None, worker=index, ready=ready, lifeline=lifeline)))


async def _serve(
    config: GatewayConfig,
    host: str | None,
    port: int | None,
    port_file: Path | None,
    *,
    worker: int | None = None,
    ready: Connection | None = None,
    lifeline: Connection | None = None,
) -> int:
    from llm_gateway.server import create_server

    server = await create_server(config, host=host, port=port, reuse_port=worker is not None)
    await server.start()
    # Logged before the port is announced: whoever waits for the port finds the line (and the
    # HTTP door's port in it).
    _log.info(
        {
            "event": "serving",
            "host": host if host is not None else config.server.host,
            "port": server.port,
            "http_port": server.http.port if server.http is not None else None,
            "providers": sorted(server.providers),
            "max_pending_calls": config.server.max_pending_calls,
            # The loop actually running, e.g. "uvloop" or "asyncio".
            "event_loop": type(asyncio.get_running_loop()).__module__.partition(".")[0],
            **({"pid": os.getpid()} if worker is not None else {}),
        }
    )
    if port_file is not None:
        await asyncio.to_thread(port_file.write_text, f"{server.port}\n")
    if ready is not None:
        ready.send(server.port)
        ready.close()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, server.reload_prices)
    if lifeline is not None:
        from llm_gateway.workers import watch_lifeline

        watch_lifeline(lifeline, stop.set)
    await stop.wait()
    grace = config.server.grace_period
    _log.info({"event": "draining", "grace_period_s": grace})
    await server.stop(grace)
    _log.info({"event": "stopped"})
    return 0


def _health(address: str, service: str, timeout: float) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
    except grpc.RpcError as exc:
        print(f"health check failed: {exc.code().name}", file=sys.stderr)
        return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
