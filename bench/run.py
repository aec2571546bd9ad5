"""`make bench`: the gateway side by side with a direct call, a no-op gRPC server and LiteLLM.

Every system is driven at the same rates against the same mock upstream on this machine, repeated
(medians reported, the machine is noisy), and the results are written to bench/RESULTS.md and
bench/results.json. See bench/README.md for the method.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import json
import os
import platform
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
TOOLS = ROOT / ".tools" / "bench"
GATEWAY_BIN = ROOT / ".venv" / "bin" / "llm-gateway"
PYTHON = ROOT / ".venv" / "bin" / "python"

MODEL = "gpt-4o-mini"  # priced by the bundled catalog, so the gateway and LiteLLM both compute cost
PROMPT = "Say hello"
MAX_P99_MS = 50.0
MAX_ERROR_RATE = 0.001


@dataclass
class Settings:
    workers: int
    repeat: int
    duration: float
    rates: tuple[int, ...]
    sweep: tuple[int, ...]
    open_streams: int
    systems: tuple[str, ...]
    out: Path
    work: Path


# --- processes: start, wait, measure ------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo.extend(int(child) for child in task.read_text().split())
    return pids


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


@dataclass
class Server:
    """A system under test running as a process tree."""

    name: str
    process: subprocess.Popen[bytes]
    address: str  # host:port for gRPC, base URL for HTTP
    helper: subprocess.Popen[bytes] | None = None  # a process it needs, stopped with it

    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def rss(self) -> int:
        return rss_bytes(self.pids())

    def cpu(self) -> float:
        return cpu_seconds(self.pids())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                for pid in self.pids():
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                self.process.wait()
        if self.helper is not None and self.helper.poll() is None:
            self.helper.terminate()
            self.helper.wait(30)


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=ROOT
        )


def wait_for_port_file(path: Path, process: subprocess.Popen[bytes], timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        time.sleep(0.05)
    raise TimeoutError(f"{process.args!r} did not start")


def wait_for_http(url: str, process: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as reply:
            if reply.status == 200:
                return
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer")


def wait_for_tcp(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{process.args!r} did not listen on {port}")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Mock:
    """The Go mock upstream (OpenAI wire format), reconfigured between phases over /_control."""

    def __init__(self, work: Path) -> None:
        port_file = work / "mock.port"
        self.process = spawn([str(TOOLS / "mockupstream"), "-port-file", str(port_file)], work / "mock.log")
        self.url = f"http://127.0.0.1:{wait_for_port_file(port_file, self.process)}"

    def configure(self, latency_ms: float = 0, chunk_delay_ms: float = 0, chunks: int = 8) -> None:
        body = json.dumps({"latency_ms": latency_ms, "chunk_delay_ms": chunk_delay_ms, "chunks": chunks})
        request = urllib.request.Request(
            f"{self.url}/_control", body.encode(), {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=5) as reply:
            assert reply.status == 200

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


# --- the systems ----------------------------------------------------------------------------------


@dataclass
class System:
    name: str
    protocol: str  # "grpc" or "http"
    start: Callable[[], Server]
    api_key: str = ""
    model: str = MODEL
    streams: bool = True


NOOP_UPSTREAM = "noop + upstream call"

# Variants of the gateway's gRPC door, run on request (--systems), each beside the gateway as it
# ships: what metrics cost (off), what traces cost (on, exported over OTLP/gRPC to a receiver),
# and what a fleet replica's shared state costs (a provider limit admitted through a local Redis
# on every call, and the shared circuit breaker). Neither helper's CPU is counted: they stand for a
# collector and a Redis elsewhere.
VARIANTS = {
    "gateway-nometrics": "gateway, metrics off",
    "gateway-traced": "gateway, traced",
    "gateway-fleet": "gateway, fleet (Redis)",
}
# A limit no run reaches: every call is admitted, through the shared limiter's Redis script.
FLEET_LIMIT = "100000000"


def gateway_system(
    s: Settings,
    mock: Mock,
    key: str,
    door: str = "grpc",
    variant: str = "",
    *,
    label: str = "",
    env: dict[str, str] | None = None,
) -> System:
    """The gateway as it ships, driven through its gRPC door or (door="http") its OpenAI door.
    `label` names a gateway that runs beside another (its own files and ledger), `env` adds to
    its environment (settings, or a PYTHONPATH to another source tree)."""
    files = f"gateway-{label or variant or door}"

    def start() -> Server:
        helper: subprocess.Popen[bytes] | None = None
        extra: dict[str, str] = dict(env or {})
        if variant == "gateway-nometrics":
            extra["LLM_GATEWAY__METRICS__ENABLED"] = "false"
        elif variant == "gateway-traced":
            sink_port = s.work / f"{files}-otlp.port"
            sink_port.unlink(missing_ok=True)
            argv = [str(PYTHON), str(BENCH / "otlp_sink.py"), "--port-file", str(sink_port)]
            helper = spawn(argv, s.work / f"{files}-otlp-sink.log")
            extra["LLM_GATEWAY__TRACING__ENABLED"] = "true"
            collector = f"http://127.0.0.1:{wait_for_port_file(sink_port, helper)}"
            extra["LLM_GATEWAY__TRACING__ENDPOINT"] = collector
        elif variant == "gateway-fleet":
            redis_port = free_port()
            argv = ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""]
            helper = spawn([*argv, "--appendonly", "no"], s.work / f"{files}-redis.log")
            wait_for_tcp(redis_port, helper)
            extra["LLM_GATEWAY__FLEET__REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
            extra["LLM_GATEWAY__PROVIDERS__OPENAI__RATE_LIMIT__REQUESTS_PER_MINUTE"] = FLEET_LIMIT
        port_file = s.work / f"{files}.port"
        port_file.unlink(missing_ok=True)
        http_port = free_port()
        argv = [str(GATEWAY_BIN), "serve", "--config", str(BENCH / "gateway.toml")]
        argv += ["--workers", str(s.workers), "--port", "0", "--port-file", str(port_file)]
        argv += ["--http-port", str(http_port)]
        # The usage ledger as it ships (SQLite), kept in the work directory; the caller's
        # LLM_GATEWAY__LEDGER__ENABLED=false measures the gateway without it.
        ledger = "ledger" if not label else f"{files}-ledger"
        settings = {
            "BENCH_API_KEY": key,
            "MOCK_UPSTREAM_URL": f"{mock.url}/v1",
            "LLM_GATEWAY__LEDGER__URL": f"sqlite:///{s.work}/{ledger}.db",
            "LLM_GATEWAY__LEDGER__SPOOL_DIR": str(s.work / f"{ledger}-spool"),
            **extra,
        }
        process = spawn(argv, s.work / f"{files}.log", settings)
        grpc_address = f"127.0.0.1:{wait_for_port_file(port_file, process)}"
        if door == "grpc":
            return Server(name, process, grpc_address, helper=helper)
        # The port file is written once both doors listen.
        return Server(name, process, f"http://127.0.0.1:{http_port}")

    name = label or VARIANTS.get(variant) or ("gateway" if door == "grpc" else "gateway HTTP")
    return System(name, door, start, api_key=key, model=f"openai:{MODEL}")


def noop_system(s: Settings, mock: Mock | None = None) -> System:
    """The no-op gRPC server; with `mock`, the second floor: one upstream call per `Chat`."""
    files = "noop-upstream" if mock else "noop"

    def start() -> Server:
        port_file = s.work / f"{files}.port"
        port_file.unlink(missing_ok=True)
        argv = [str(PYTHON), str(BENCH / "noop_server.py"), "--workers", str(s.workers)]
        if mock is not None:
            argv += ["--upstream", f"{mock.url}/v1"]
        process = spawn([*argv, "--port-file", str(port_file)], s.work / f"{files}.log")
        return Server(files, process, f"127.0.0.1:{wait_for_port_file(port_file, process)}")

    return System(NOOP_UPSTREAM if mock else "noop gRPC", "grpc", start, streams=False)


def direct_system(mock: Mock) -> System:
    def start() -> Server:
        return Server("direct", mock.process, mock.url)

    return System("direct", "http", start)


LITELLM_KEY = "sk-bench-master"


def litellm_system(s: Settings, mock: Mock, litellm: Path) -> System:
    def start() -> Server:
        port = free_port()
        argv = [str(litellm), "--config", str(BENCH / "litellm" / "config.yaml")]
        argv += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", str(s.workers)]
        # uvicorn restarts a worker that misses its 5 s health ping, which a loaded 2-core box causes.
        argv += ["--timeout_worker_healthcheck", "120"]
        env = {
            "MOCK_UPSTREAM_URL": f"{mock.url}/v1",
            "LITELLM_MASTER_KEY": LITELLM_KEY,
            "LITELLM_LOG": "ERROR",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        process = spawn(argv, s.work / "litellm.log", env)
        base = f"http://127.0.0.1:{port}"
        wait_for_http(f"{base}/health/liveliness", process)
        return Server("litellm", process, base)

    return System("LiteLLM", "http", start, api_key=LITELLM_KEY, model=MODEL)


# --- load ---------------------------------------------------------------------------------------


@dataclass
class Load:
    """One load run's figures (latencies in milliseconds)."""

    requests: int
    ok: int
    rps: float
    p50: float
    p99: float
    cpu_s: float = 0.0

    @property
    def error_rate(self) -> float:
        return 1 - self.ok / self.requests if self.requests else 1.0

    def sustainable(self) -> bool:
        return self.requests > 0 and self.error_rate < MAX_ERROR_RATE and self.p99 < MAX_P99_MS


def run_json(argv: list[str], stdin: bytes | None = None) -> Any:
    done = subprocess.run(argv, input=stdin, capture_output=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return json.loads(done.stdout)


def chat_json(system: System) -> dict[str, Any]:
    return {"model": system.model, "messages": [{"role": "ROLE_USER", "content": [{"text": PROMPT}]}]}


def ghz(system: System, server: Server, s: Settings, *, rps: int | None, concurrency: int) -> Load:
    argv = [str(TOOLS / "ghz"), "--insecure", "--protoset", str(s.work / "gateway.protoset")]
    argv += ["--call", "llmgateway.v1.GatewayService.Chat", "-d", json.dumps(chat_json(system))]
    if system.api_key:
        argv += ["-m", json.dumps({"authorization": f"Bearer {system.api_key}"})]
    # Several connections, so SO_REUSEPORT spreads the load over every worker process.
    connections = min(concurrency, max(8, 4 * s.workers))  # ghz wants no more than the callers
    argv += ["--connections", str(connections), "--concurrency", str(concurrency)]
    # "wait": calls still in flight when the duration ends complete and count; ghz's default
    # ("close") cancels them and reports them as errors, about concurrency / requests of all calls.
    argv += ["--duration", f"{s.duration}s", "--duration-stop", "wait", "-O", "json"]
    if rps is not None:
        argv += ["--rps", str(rps)]
    before = server.cpu()
    report = run_json([*argv, server.address])
    cpu = server.cpu() - before
    latency = {int(p["percentage"]): p["latency"] / 1e6 for p in report.get("latencyDistribution") or []}
    ok = int(report.get("statusCodeDistribution", {}).get("OK", 0))
    return Load(
        int(report["count"]), ok, ok / (report["total"] / 1e9), latency.get(50, 0), latency.get(99, 0), cpu
    )


def vegeta(system: System, server: Server, s: Settings, *, rps: int | None, concurrency: int) -> Load:
    body = {"model": system.model, "messages": [{"role": "user", "content": PROMPT}]}
    headers = {"Content-Type": ["application/json"]}
    if system.api_key:
        headers["Authorization"] = [f"Bearer {system.api_key}"]
    target = {
        "method": "POST",
        "url": f"{server.address}/v1/chat/completions",
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "header": headers,
    }
    attack = [str(TOOLS / "vegeta"), "attack", "-format=json", f"-duration={s.duration}s", "-keepalive"]
    if rps is None:  # closed loop: a fixed number of workers, each sending as soon as it has an answer
        attack += ["-rate=0", f"-workers={concurrency}", f"-max-workers={concurrency}"]
    else:  # open loop: requests leave on schedule, whether or not earlier ones have answered
        attack += [f"-rate={rps}/s", f"-workers={concurrency}", "-max-workers=1000"]
    before = server.cpu()
    results = subprocess.run(attack, input=(json.dumps(target) + "\n").encode(), capture_output=True)
    if results.returncode != 0:
        raise RuntimeError(f"vegeta attack failed: {results.stderr.decode()[-2000:]}")
    cpu = server.cpu() - before
    report = run_json([str(TOOLS / "vegeta"), "report", "-type=json"], stdin=results.stdout)
    latencies = report["latencies"]
    requests = int(report["requests"])
    ok = int(report.get("status_codes", {}).get("200", 0))
    duration_s = (report["duration"] + report["wait"]) / 1e9 or 1
    return Load(requests, ok, ok / duration_s, latencies["50th"] / 1e6, latencies["99th"] / 1e6, cpu)


def load(system: System, server: Server, s: Settings, *, rps: int | None, concurrency: int) -> Load:
    runner = ghz if system.protocol == "grpc" else vegeta
    return runner(system, server, s, rps=rps, concurrency=concurrency)


def streamload(system: System, server: Server, s: Settings, *args: str) -> dict[str, Any]:
    argv = [str(TOOLS / "streamload"), "-target", "grpc" if system.protocol == "grpc" else "sse"]
    argv += ["-addr", server.address, "-model", system.model, "-connections", str(max(8, 4 * s.workers))]
    if system.api_key:
        argv += ["-api-key", system.api_key]
    result: dict[str, Any] = run_json([*argv, *args])
    return result


# --- one repetition of one system ---------------------------------------------------------------


@dataclass
class Figures:
    figures: dict[str, float | None] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def measure(system: System, s: Settings, mock: Mock) -> Figures:
    out = Figures()
    f = out.figures
    mock.configure()
    server = system.start()
    try:
        load(system, server, replace_duration(s, 1.0), rps=None, concurrency=8)  # warm up
        time.sleep(0.5)
        f["rss_idle_mb"] = server.rss() / 2**20 if system.name != "direct" else None

        for rate in s.rates:
            run = load(system, server, s, rps=rate, concurrency=50)
            f[f"p50_at_{rate}"], f[f"p99_at_{rate}"] = run.p50, run.p99
            f[f"errors_at_{rate}"] = run.error_rate * 100
            f[f"achieved_at_{rate}"] = run.rps
            if rate == max(s.rates) and system.name != "direct":
                f["cpu_s_per_1k"] = run.cpu_s / run.ok * 1000 if run.ok else None

        best: Load | None = None
        sweep = []
        for concurrency in s.sweep:
            run = load(system, server, s, rps=None, concurrency=concurrency)
            sweep.append(run)
            out.notes.append(
                f"closed loop c={concurrency}: {run.rps:.0f} rps, p99 {run.p99:.1f} ms, "
                f"errors {run.error_rate:.2%}"
            )
            if run.sustainable() and (best is None or run.rps > best.rps):
                best = run
        f["max_rps"] = best.rps if best else 0.0
        f["peak_rps"] = max(run.rps for run in sweep)

        if system.streams:
            mock.configure(chunk_delay_ms=10, chunks=8)
            stream = streamload(system, server, s, "-concurrency", "10", "-total", "200")
            f["ttft_p50"], f["ttft_p99"] = stream["ttft_ms"]["p50"], stream["ttft_ms"]["p99"]
            f["gap_p50"] = stream["gap_ms"]["p50"]
            f["chunks_min"] = stream["chunks_per_stream"]["min"]
            f["chunks_max"] = stream["chunks_per_stream"]["max"]
            f["stream_errors"] = sum(stream["errors"].values())
            if system.name != "direct":
                f.update(open_streams(system, server, s, mock))
    finally:
        if system.name != "direct":
            server.stop()
    return out


def open_streams(system: System, server: Server, s: Settings, mock: Mock) -> dict[str, float | None]:
    """`open_streams` streams held open at once: memory, and CPU while they wait for their next chunk."""
    # A first chunk at once, the next one later than opening them all takes (about 1.2 ms a stream
    # on the HTTP door here), so that every stream is open and waiting while it is measured.
    delay_ms = max(8000, 2.5 * s.open_streams)
    mock.configure(chunk_delay_ms=delay_ms, chunks=2)
    idle = server.rss()
    ready = s.work / "streams.ready"
    ready.unlink(missing_ok=True)
    argv = [str(TOOLS / "streamload"), "-target", "grpc" if system.protocol == "grpc" else "sse"]
    argv += ["-addr", server.address, "-model", system.model, "-hold", "-concurrency", str(s.open_streams)]
    argv += ["-connections", str(max(8, 4 * s.workers)), "-ready-file", str(ready)]
    argv += ["-timeout", f"{delay_ms / 1000 + 60:.0f}s"]
    if system.api_key:
        argv += ["-api-key", system.api_key]
    client = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 60
    while not ready.exists() and time.monotonic() < deadline and client.poll() is None:
        time.sleep(0.05)
    figures: dict[str, float | None] = {}
    if ready.exists():
        time.sleep(0.3)
        cpu_before, at = server.cpu(), time.monotonic()
        time.sleep(2.0)
        figures["held_cpu_pct"] = (server.cpu() - cpu_before) / (time.monotonic() - at) * 100
        figures["rss_streams_mb"] = server.rss() / 2**20
        figures["rss_growth_mb"] = (server.rss() - idle) / 2**20
    out, _ = client.communicate(timeout=delay_ms / 1000 + 120)
    result = json.loads(out)
    figures["open_stream_errors"] = sum(result["errors"].values()) + (
        s.open_streams - result["ok"] - sum(result["errors"].values())
    )
    mock.configure()
    return figures


def replace_duration(s: Settings, duration: float) -> Settings:
    return Settings(**{**vars(s), "duration": duration})


# --- report -------------------------------------------------------------------------------------


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: dict[str, list[Figures]]) -> dict[str, dict[str, float | None]]:
    table: dict[str, dict[str, float | None]] = {}
    for name, reps in runs.items():
        keys = {k for rep in reps for k in rep.figures}
        table[name] = {k: median([rep.figures.get(k) for rep in reps]) for k in sorted(keys)}
    direct = table.get("direct", {})
    for name, row in table.items():
        if name == "direct":
            continue
        for key in [k for k in row if k.startswith(("p50_at_", "p99_at_", "ttft_p"))]:
            base, value = direct.get(key), row[key]
            row[f"added_{key}"] = value - base if value is not None and base is not None else None
    return table


def fmt(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "—" if value is None else f"{value:,.{digits}f}{suffix}"


def ratio(a: float | None, b: float | None) -> str:
    if a and b == 0:
        return "∞ (the other sustained no rate)"
    return "—" if not a or not b else f"{a / b:.1f}×"


def render(table: dict[str, dict[str, float | None]], meta: dict[str, Any], s: Settings) -> str:
    order = ("direct", "noop gRPC", NOOP_UPSTREAM, "gateway", *VARIANTS.values(), "gateway HTTP", "LiteLLM")
    names = [n for n in order if n in table]
    low, high = min(s.rates), max(s.rates)
    rows = [
        ("Max sustainable RPS (errors < 0.1 %, p99 < 50 ms)", "max_rps", 0, ""),
        ("Peak throughput, any latency (RPS)", "peak_rps", 0, ""),
        (f"Latency p50 / p99 at {low} RPS (ms)", f"at_{low}", -1, ""),
        (f"Added p50 / p99 over direct at {low} RPS (ms)", f"added_at_{low}", -1, ""),
        (f"Latency p50 / p99 at {high} RPS (ms)", f"at_{high}", -1, ""),
        (f"Added p50 / p99 over direct at {high} RPS (ms)", f"added_at_{high}", -1, ""),
        ("Stream time to first token p50 / p99 (ms)", "ttft", -2, ""),
        ("Added time to first token p50 / p99 (ms)", "added_ttft", -2, ""),
        ("Stream: chunks received of 8, gap p50 (10 ms sent)", "chunks", -3, ""),
        ("RSS idle (MB)", "rss_idle_mb", 0, ""),
        (f"RSS with {s.open_streams:,} open streams (MB)", "rss_streams_mb", 0, ""),
        (f"RSS growth for {s.open_streams:,} open streams (MB)", "rss_growth_mb", 0, ""),
        (f"CPU while {s.open_streams:,} streams wait (% of a core)", "held_cpu_pct", 1, ""),
        (f"CPU-seconds per 1,000 calls (at {high} RPS)", "cpu_s_per_1k", 3, ""),
    ]
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for label, key, digits, _ in rows:
        cells = []
        for name in names:
            row = table[name]
            if digits == -1:
                prefix = "added_" if key.startswith("added_") else ""
                at = key.removeprefix("added_")
                p50, p99 = row.get(f"{prefix}p50_{at}"), row.get(f"{prefix}p99_{at}")
                cell = "—" if p50 is None else f"{fmt(p50)} / {fmt(p99)}"
                if prefix == "" and (row.get(f"errors_{at}") or 0) >= 0.1:
                    cell += f" ({fmt(row.get(f'errors_{at}'), 1)} % errors)"
            elif digits == -2:
                prefix = "added_" if key.startswith("added_") else ""
                p50, p99 = row.get(f"{prefix}ttft_p50"), row.get(f"{prefix}ttft_p99")
                cell = "—" if p50 is None else f"{fmt(p50)} / {fmt(p99)}"
            elif digits == -3:
                lo, hi, gap = row.get("chunks_min"), row.get("chunks_max"), row.get("gap_p50")
                cell = "—" if lo is None else f"{fmt(lo, 0)}–{fmt(hi, 0)}, {fmt(gap)} ms"
            else:
                cell = fmt(row.get(key), digits)
            cells.append(cell)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    gw, lite, noop, direct = (table.get(n, {}) for n in ("gateway", "LiteLLM", "noop gRPC", "direct"))
    http = table.get("gateway HTTP", {})
    ratios = [
        ("Gateway max sustainable RPS ÷ LiteLLM's", gw, lite, "max_rps"),
        ("Gateway peak RPS ÷ LiteLLM's", gw, lite, "peak_rps"),
        ("Gateway HTTP door max sustainable RPS ÷ LiteLLM's", http, lite, "max_rps"),
        ("Gateway HTTP door max sustainable RPS ÷ gRPC door's", http, gw, "max_rps"),
        ("Direct max RPS ÷ gateway max RPS (mock headroom)", direct, gw, "max_rps"),
        ("Gateway CPU per call ÷ no-op gRPC floor", gw, noop, "cpu_s_per_1k"),
        (f"Gateway CPU per call ÷ {NOOP_UPSTREAM} floor", gw, table.get(NOOP_UPSTREAM, {}), "cpu_s_per_1k"),
        (f"{NOOP_UPSTREAM} max RPS ÷ no-op gRPC floor's", table.get(NOOP_UPSTREAM, {}), noop, "max_rps"),
        ("LiteLLM CPU per call ÷ gateway's", lite, gw, "cpu_s_per_1k"),
        ("LiteLLM RSS idle ÷ gateway's", lite, gw, "rss_idle_mb"),
    ]
    compare = ["| Ratio | Value |", "|---|---|"]
    compare += [f"| {label} | {ratio(a.get(key), b.get(key))} |" for label, a, b, key in ratios]
    machine = (
        f"{meta['cores']} cores ({meta['cpu']}), {meta['memory_gib']:.0f} GiB, {meta['os']}; "
        f"Python {meta['python']}; {s.workers} worker processes per system; {s.repeat} repetitions "
        f"(medians); {s.duration:g} s per load run."
    )
    notes = (BENCH / "NOTES.md").read_text() if (BENCH / "NOTES.md").exists() else ""
    return "\n".join(
        [
            "# Benchmark results",
            "",
            f"Written by `make bench` on {meta['date']}. Machine: {machine}",
            "",
            "Systems: **direct** = the mock upstream called over HTTP (the baseline; no gateway), "
            "**noop gRPC** = a grpc.aio server with the same proto that does no work (the floor for "
            f"any Python gRPC service here), **{NOOP_UPSTREAM}** = the same server making one call "
            "to the mock per `Chat` with the gateway's own HTTP client (the second floor), "
            f"**gateway** = `llm-gateway serve --workers {s.workers}` "
            "as it ships (API key auth, JSON access log, cost, usage ledger), **gateway HTTP** = the same "
            "gateway driven through its OpenAI-compatible door (`POST /v1/chat/completions`, the same "
            "HTTP load tool as LiteLLM), **LiteLLM** = LiteLLM's proxy "
            f"{meta.get('litellm', '')} with `--num_workers {s.workers}`, no database, retries and "
            "callbacks off. All call the same Go mock upstream (0 ms latency for unary runs).",
            "",
            *lines,
            "",
            *compare,
            "",
            "## Targets",
            "",
            *targets(table, s),
            "",
            f"Tools: {meta['tools']}. Raw figures per repetition: `bench/results.json`. "
            "Method: `bench/README.md`.",
            "",
            notes,
        ]
    )


def targets(table: dict[str, dict[str, float | None]], s: Settings) -> list[str]:
    """The performance targets for this machine, each with the measured value and whether it is met."""
    gw, lite, noop, direct = (table.get(n, {}) for n in ("gateway", "LiteLLM", "noop gRPC", "direct"))
    http, floor2 = table.get("gateway HTTP", {}), table.get(NOOP_UPSTREAM, {})
    low = min(s.rates)

    def verdict(ok: bool | None) -> str:
        return "—" if ok is None else ("met" if ok else "**missed**")

    def at_most(value: float | None, limit: float) -> bool | None:
        return None if value is None else value <= limit

    def at_least(value: float | None, share: float, of: float | None) -> bool | None:
        return None if value is None or not of else value >= share * of

    def both(*checks: bool | None) -> bool | None:
        return None if any(c is None for c in checks) else all(checks)

    def share(a: float | None, b: float | None) -> str:
        return "—" if a is None or not b else f"{a / b:.0%}"

    added_p50, added_p99 = gw.get(f"added_p50_at_{low}"), gw.get(f"added_p99_at_{low}")
    max_rps, noop_rps, floor2_rps = gw.get("max_rps"), noop.get("max_rps"), floor2.get("max_rps")
    lite_peak, lite_max = lite.get("peak_rps"), lite.get("max_rps")
    ttft = gw.get("added_ttft_p50")
    chunks, gap, direct_gap = gw.get("chunks_min"), gw.get("gap_p50"), direct.get("gap_p50")
    cpu, noop_cpu = gw.get("cpu_s_per_1k"), noop.get("cpu_s_per_1k")
    http_p50, http_max = http.get(f"added_p50_at_{low}"), http.get("max_rps")
    rows = [
        (
            "gRPC: max sustainable unary RPS, 0 ms mock",
            f"≥ 40 % of the no-op floor's, ≥ 80 % of {NOOP_UPSTREAM}'s",
            f"{fmt(max_rps, 0)}: {share(max_rps, noop_rps)} of {fmt(noop_rps, 0)}, "
            f"{share(max_rps, floor2_rps)} of {fmt(floor2_rps, 0)}",
            both(at_least(max_rps, 0.4, noop_rps), at_least(max_rps, 0.8, floor2_rps)),
        ),
        (
            "gRPC: CPU per call",
            "≤ 2× the no-op floor's",
            ratio(cpu, noop_cpu),
            None if cpu is None or not noop_cpu else cpu <= 2 * noop_cpu,
        ),
        (
            f"gRPC: added latency over direct at {low} RPS",
            "p50 ≤ 1 ms, p99 ≤ 3 ms",
            f"{fmt(added_p50)} / {fmt(added_p99)} ms",
            both(at_most(added_p50, 1), at_most(added_p99, 3)),
        ),
        ("gRPC: added time to first token", "p50 ≤ 1 ms", f"{fmt(ttft)} ms", at_most(ttft, 1)),
        (
            "Every chunk forwarded as it arrives",
            "8 of 8, spacing as sent",
            f"{fmt(chunks, 0)} of 8, gap p50 {fmt(gap)} ms (direct {fmt(direct_gap)} ms)",
            None
            if chunks is None or gap is None or direct_gap is None
            else chunks == 8 and abs(gap - direct_gap) < 1,
        ),
    ]
    for name, row in (("gRPC", gw), ("HTTP door (SSE)", http)):
        if not row:
            continue
        rss, errors, held = row.get("rss_streams_mb"), row.get("open_stream_errors"), row.get("held_cpu_pct")
        rows.append(
            (
                f"{name}: {s.open_streams:,} open streams",
                "no errors, RSS ≤ 1 GB for the worker set, CPU near idle (≤ 10 % of a core)",
                f"{fmt(errors, 0)} errors, {fmt(rss, 0)} MB, {fmt(held, 1)} % of a core",
                both(None if errors is None else errors == 0, at_most(rss, 1024), at_most(held, 10)),
            )
        )
    if http:
        rows += [
            (
                "HTTP door: max sustainable RPS",
                "≥ 10× LiteLLM's (same load tool, same workers; against its peak, as it may sustain none)",
                f"{fmt(http_max, 0)} ({ratio(http_max, lite_peak)} LiteLLM's peak {fmt(lite_peak, 0)}, "
                f"{ratio(http_max, lite_max)} its max sustainable {fmt(lite_max, 0)})",
                None if http_max is None or not lite_peak else http_max >= 10 * lite_peak,
            ),
            (
                f"HTTP door: added latency over direct at {low} RPS",
                "p50 ≤ 1 ms",
                f"{fmt(http_p50)} ms",
                at_most(http_p50, 1),
            ),
        ]
    lines = ["| Target | Goal | Measured | |", "|---|---|---|---|"]
    lines += [f"| {name} | {goal} | {value} | {verdict(ok)} |" for name, goal, value, ok in rows]
    return lines


def machine() -> dict[str, Any]:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def tool_versions(litellm: Path | None) -> tuple[str, str]:
    """Versions from the binaries' build info (`go install` binaries carry no version string)."""

    def go_module_version(binary: str) -> str:
        done = subprocess.run(["go", "version", "-m", str(TOOLS / binary)], capture_output=True, text=True)
        mods = [line.split() for line in done.stdout.splitlines() if line.strip().startswith("mod")]
        return mods[0][2] if mods else "?"

    tools = f"ghz {go_module_version('ghz')}, vegeta {go_module_version('vegeta')}"
    lite = ""
    if litellm is not None:
        pip = litellm.parent / "pip"
        shown = subprocess.run([str(pip), "show", "litellm"], capture_output=True, text=True, check=False)
        lines = shown.stdout.splitlines()
        lite = next((line.split()[1] for line in lines if line.startswith("Version:")), "")
    return tools, lite


def build_protoset(work: Path) -> None:
    """The contract as a protoset in `work`, for ghz."""
    buf = str(ROOT / "tools/node_modules/.bin/buf")
    subprocess.run([buf, "build", "protos", "-o", str(work / "gateway.protoset")], check=True, cwd=ROOT)


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="llm-gateway-bench-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--workers", type=int, default=int(os.environ.get("BENCH_WORKERS", os.cpu_count() or 1))
    )
    parser.add_argument("--repeat", type=int, default=int(os.environ.get("BENCH_REPEAT", 3)))
    parser.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_DURATION", 5)))
    parser.add_argument("--open-streams", type=int, default=10_000)
    parser.add_argument("--systems", default="direct,noop,noop-upstream,gateway,http,litellm")
    parser.add_argument("--litellm", type=Path, help="the litellm executable (its own virtualenv)")
    parser.add_argument("--out", type=Path, default=BENCH)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--render", type=Path, help="only rewrite RESULTS.md from this results.json")
    args = parser.parse_args()
    if args.render is not None:
        data = json.loads(args.render.read_text())
        saved = data["settings"]
        tuples = {k: tuple(saved[k]) for k in ("rates", "sweep", "systems")}
        s = Settings(**{**saved, **tuples, "out": args.out, "work": args.out})
        (args.out / "RESULTS.md").write_text(render(data["medians"], data["machine"], s))
        return 0
    systems = tuple(args.systems.split(","))
    if "litellm" in systems and args.litellm is None:
        parser.error("--litellm is required to benchmark LiteLLM")

    with workdir(args.keep) as work:
        s = Settings(
            workers=args.workers,
            repeat=args.repeat,
            duration=args.duration,
            rates=(100, 500),
            sweep=(4, 16, 64),
            open_streams=args.open_streams,
            systems=systems,
            out=args.out,
            work=work,
        )
        build_protoset(work)
        mock = Mock(work)
        key = secrets.token_urlsafe(24)
        catalog: dict[str, Callable[[], System]] = {
            "direct": lambda: direct_system(mock),
            "noop": lambda: noop_system(s),
            "noop-upstream": lambda: noop_system(s, mock),
            "gateway": lambda: gateway_system(s, mock, key),
            "http": lambda: gateway_system(s, mock, key, door="http"),
            "litellm": lambda: litellm_system(s, mock, args.litellm),
            **{v: functools.partial(gateway_system, s, mock, key, variant=v) for v in VARIANTS},
        }
        chosen = [catalog[name]() for name in systems]
        runs: dict[str, list[Figures]] = {system.name: [] for system in chosen}
        try:
            for rep in range(1, s.repeat + 1):
                for system in chosen:
                    print(f"[bench] repetition {rep}/{s.repeat}: {system.name}", file=sys.stderr, flush=True)
                    figures = measure(system, s, mock)
                    runs[system.name].append(figures)
                    print(f"[bench]   {json.dumps(figures.figures)}", file=sys.stderr, flush=True)
        finally:
            mock.stop()
            if args.keep:
                print(f"[bench] logs kept in {work}", file=sys.stderr)

    meta = machine()
    meta["tools"], meta["litellm"] = tool_versions(args.litellm)
    meta["workers"] = s.workers
    table = summarise(runs)
    (s.out / "results.json").write_text(
        json.dumps(
            {
                "machine": meta,
                "settings": {k: v for k, v in vars(s).items() if k not in ("out", "work")},
                "medians": table,
                "runs": {name: [vars(rep) for rep in reps] for name, reps in runs.items()},
            },
            indent=2,
        )
        + "\n"
    )
    (s.out / "RESULTS.md").write_text(render(table, meta, s))
    print(f"[bench] wrote {s.out / 'RESULTS.md'} and {s.out / 'results.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
