"""`make bench-ab`: two gateways measured at the same time, under the same load, so that what the
machine does meanwhile (this one's speed drifts by ±15 % from run to run) weighs on both alike.

Each side is the gateway as it ships, one worker each, with settings of its own (`--a`, `--b`:
`NAME=VALUE` environment settings such as `LLM_GATEWAY__METRICS__ENABLED=false`), as one of
run.py's variants (`--b-variant gateway-traced`: traces exported to an OTLP receiver), or with code
of its own (`--a-tree`, `--b-tree`: another checkout's root, e.g. a `git worktree` of the commit
before a change). Each pair starts both, warms both up, then drives both at `--rate` calls per second at once
and reads each one's CPU time per call and latency; the sides swap start order from pair to pair.
Prints each pair and the median of B's CPU per call over A's. With `--stream`, each pair drives
both with streams instead (10 at a time, 8 chunks 10 ms apart) and compares time to first token.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from run import (
    VARIANTS,
    Mock,
    Settings,
    System,
    build_protoset,
    gateway_system,
    load,
    replace_duration,
    streamload,
    workdir,
)


def side_env(settings: list[str], tree: Path | None) -> dict[str, str]:
    env = dict(item.split("=", 1) for item in settings)
    if tree is not None:
        tree = tree.resolve()
        env["PYTHONPATH"] = f"{tree}/service/src:{tree}/clients/python/src"
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--a", nargs="*", default=[], metavar="NAME=VALUE", help="side A's settings")
    parser.add_argument("--b", nargs="*", default=[], metavar="NAME=VALUE", help="side B's settings")
    parser.add_argument("--a-tree", type=Path, help="side A's source tree (default: this one)")
    parser.add_argument("--b-tree", type=Path, help="side B's source tree (default: this one)")
    parser.add_argument("--a-variant", choices=VARIANTS, default="", help="side A as a bench variant")
    parser.add_argument("--b-variant", choices=VARIANTS, default="", help="side B as a bench variant")
    parser.add_argument("--door", choices=("grpc", "http"), default="grpc")
    parser.add_argument("--rate", type=int, default=250, help="calls per second to each side")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--stream", action="store_true", help="compare time to first token instead")
    args = parser.parse_args()
    if (args.a, args.a_tree, args.a_variant) == (args.b, args.b_tree, args.b_variant):
        parser.error("the two sides are the same: give settings, trees or variants that differ")

    with workdir(False) as work:
        s = Settings(1, 1, args.duration, (args.rate,), (), 0, ("ab",), work, work)
        build_protoset(work)
        mock = Mock(work)
        key = secrets.token_urlsafe(24)
        sides = {
            name: gateway_system(s, mock, key, args.door, variant, label=name, env=side_env(settings, tree))
            for name, settings, tree, variant in (
                ("A", args.a, args.a_tree, args.a_variant),
                ("B", args.b, args.b_tree, args.b_variant),
            )
        }
        if args.stream:
            mock.configure(chunk_delay_ms=10, chunks=8)
            return streams(args.pairs, sides, s, mock)
        ratios: list[float] = []
        try:
            print("pair  side  CPU ms/call  p50 ms  p99 ms  ok", flush=True)
            for pair in range(1, args.pairs + 1):
                order = ("A", "B") if pair % 2 else ("B", "A")
                servers = {name: sides[name].start() for name in order}
                try:
                    warm = replace_duration(s, 2.0)
                    for name in order:  # one at a time: a worker's first calls are slow
                        load(sides[name], servers[name], warm, rps=args.rate, concurrency=8)
                    with ThreadPoolExecutor(2) as pool:
                        started = {
                            name: pool.submit(
                                load, sides[name], servers[name], s, rps=args.rate, concurrency=16
                            )
                            for name in order
                        }
                        runs = {name: future.result() for name, future in started.items()}
                finally:
                    for server in servers.values():
                        server.stop()
                cpu = {name: run.cpu_s / run.ok * 1000 for name, run in runs.items() if run.ok}
                for name in ("A", "B"):
                    run = runs[name]
                    print(
                        f"{pair:>4}  {name:>4}  {cpu.get(name, 0):>11.3f}  {run.p50:>6.2f}  {run.p99:>6.2f}  "
                        f"{run.ok}/{run.requests}",
                        flush=True,
                    )
                if cpu.get("A") and cpu.get("B"):
                    ratios.append(cpu["B"] / cpu["A"])
        finally:
            mock.stop()
    if ratios:
        print(
            f"B's CPU per call over A's: median {statistics.median(ratios):.3f} "
            f"(pairs: {', '.join(f'{r:.3f}' for r in ratios)})"
        )
    return 0


def streams(pairs: int, sides: dict[str, System], s: Settings, mock: Mock) -> int:
    """Both sides streamed at once; each pair's time to first token, and B's p50 over A's."""
    ratios: list[float] = []
    try:
        print("pair  side  TTFT p50 ms  p99 ms  errors", flush=True)
        for pair in range(1, pairs + 1):
            order = ("A", "B") if pair % 2 else ("B", "A")
            servers = {name: sides[name].start() for name in order}
            try:
                for name in order:  # warm up, one at a time
                    streamload(sides[name], servers[name], s, "-concurrency", "10", "-total", "100")
                with ThreadPoolExecutor(2) as pool:
                    started = {
                        name: pool.submit(
                            streamload, sides[name], servers[name], s, "-concurrency", "10", "-total", "1000"
                        )
                        for name in order
                    }
                    runs = {name: future.result() for name, future in started.items()}
            finally:
                for server in servers.values():
                    server.stop()
            for name in ("A", "B"):
                ttft, errors = runs[name]["ttft_ms"], sum(runs[name]["errors"].values())
                line = f"{pair:>4}  {name:>4}  {ttft['p50']:>11.2f}  {ttft['p99']:>6.2f}  {errors}"
                print(line, flush=True)
            ratios.append(runs["B"]["ttft_ms"]["p50"] / runs["A"]["ttft_ms"]["p50"])
    finally:
        mock.stop()
    print(
        f"B's time to first token p50 over A's: median {statistics.median(ratios):.3f} "
        f"(pairs: {', '.join(f'{r:.3f}' for r in ratios)})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
