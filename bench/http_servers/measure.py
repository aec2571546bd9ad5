"""Drive each HTTP server candidate of servers.py with vegeta and write RESULTS.md and results.json.

Per repetition, every candidate (the order rotates between repetitions) is started fresh as one process
(next to its idle in-process grpc.aio server), warmed up, then measured:

    max       closed loop, unary: vegeta -rate=0 with 64 workers (the most it sustains)
    r100      open loop, unary, 100 requests/s: p50/p99
    r500      open loop, unary, 500 requests/s: p50/p99 and server CPU per 1k requests
    sse       closed loop, 64 workers, "stream": true: full 8-chunk SSE streams/s and CPU per 1k streams

and, separately, "max" again with two processes sharing the port with SO_REUSEPORT. Medians of the
repetitions are reported. Server CPU is utime+stime of the server process(es) from /proc/<pid>/stat,
all threads included (granian's Rust threads too). Standard library only: run it with any python3.

    python3 bench/http_servers/measure.py            # ~6 minutes on 2 cores
    python3 bench/http_servers/measure.py --quick    # one short repetition, to check the harness
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
VENV = ROOT / ".tools" / "http-bench-venv"
PYTHON = VENV / "bin" / "python"
VEGETA = ROOT / ".tools" / "bench" / "vegeta"
SERVERS = HERE / "servers.py"
sys.path.insert(0, str(HERE))

from servers import CANDIDATES, chat_request  # noqa: E402

REUSE_PORT_CANDIDATES = ("aiohttp", "uvicorn-httptools", "granian-rsgi")
CLOSED_WORKERS = 64
# Other sessions share this machine: a measurement during which more than this many cores were busy with
# neither the server nor vegeta is run once more, and the quieter of the two is kept.
BUSY_OTHER_CORES = 0.3
RETRY_BUDGET_S = 90.0  # at most this much time spent on such second runs, to keep the run near 6 min
_retry_spent = 0.0
WARM_UP_S = 0.7
PACKAGES = ("aiohttp", "starlette", "uvicorn", "httptools", "h11", "granian", "grpcio", "anyio")
MARKER = "<!-- conclusions: everything below this line is kept when measure.py rewrites the file -->"


@dataclass
class Scenario:
    name: str
    stream: bool
    rate: int  # requests per second; 0 = closed loop
    duration: float


SCENARIOS = (
    Scenario("max", False, 0, 3.0),
    Scenario("r100", False, 100, 3.0),
    Scenario("r500", False, 500, 2.5),
    Scenario("sse", True, 0, 3.0),
)


@dataclass
class Result:
    candidate: str
    scenario: str
    processes: int
    repetition: int
    requests: int
    ok: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_s: float
    bytes_in_mean: float
    rss_mb: float
    cpu_share: list[float] = field(default_factory=list)  # per process, for the SO_REUSEPORT runs
    vegeta_cpu_s: float = 0.0
    other_cores: float = 0.0  # cores busy with neither the server nor vegeta (other work on the machine)

    @property
    def success(self) -> float:
        return self.ok / self.requests if self.requests else 0.0

    @property
    def cpu_per_1k(self) -> float:
        return self.cpu_s / self.ok * 1000 if self.ok else float("nan")


# --- server processes -------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, all threads


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Servers:
    """One or more processes of one candidate on one port."""

    def __init__(self, candidate: str, processes: int, work: Path) -> None:
        self.candidate = candidate
        self.port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.ready: list[dict[str, Any]] = []
        for index in range(processes):
            ready = work / f"{candidate}-{index}.ready"
            ready.unlink(missing_ok=True)
            argv = [str(PYTHON), str(SERVERS), "serve", candidate, "--port", str(self.port)]
            argv += ["--ready-file", str(ready)] + (["--reuse-port"] if processes > 1 else [])
            with (work / f"{candidate}.log").open("ab") as log:
                self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
            self.ready.append(self._wait_ready(ready, self.procs[-1]))
        self._wait_http()

    @staticmethod
    def _wait_ready(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
            with contextlib.suppress(OSError, ValueError):
                ready: dict[str, Any] = json.loads(path.read_text())
                return ready
            time.sleep(0.05)
        raise TimeoutError(f"{proc.args!r} did not start")

    def _wait_http(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                if r.status == 200:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"{self.candidate}: /health did not answer")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu(self) -> list[float]:
        return [cpu_seconds(p.pid) for p in self.procs]

    def rss(self) -> float:
        return sum(rss_mb(p.pid) for p in self.procs)

    def check(self) -> str:
        """The in-process gRPC server answers, and an SSE reply is 8 chunks + [DONE]."""
        grpc = f"127.0.0.1:{self.ready[0]['grpc']}"
        subprocess.run([str(PYTHON), str(SERVERS), "grpc-ping", grpc], check=True, capture_output=True)
        body = json.dumps(chat_request(stream=True)).encode()
        request = urllib.request.Request(
            f"{self.url}/v1/chat/completions", body, {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as reply:
            kind = reply.headers["Content-Type"]
            events = [line for line in reply.read().split(b"\n") if line.startswith(b"data: ")]
        assert kind.startswith("text/event-stream"), kind
        assert len(events) == 9, len(events)
        assert events[-1] == b"data: [DONE]", events[-1]
        return (
            f"grpc ok, sse {len(events)} events, {self.ready[0]['threads']} threads, {self.ready[0]['loop']}"
        )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --- load -----------------------------------------------------------------------------------------------


def vegeta(servers: Servers, scenario: Scenario) -> dict[str, Any]:
    target = {
        "method": "POST",
        "url": f"{servers.url}/v1/chat/completions",
        "body": base64.b64encode(json.dumps(chat_request(stream=scenario.stream)).encode()).decode(),
        "header": {"Content-Type": ["application/json"]},
    }
    attack = [str(VEGETA), "attack", "-format=json", f"-duration={scenario.duration}s", "-keepalive"]
    attack += ["-timeout=10s"]
    if scenario.rate == 0:  # closed loop: each worker sends as soon as it has its answer
        attack += ["-rate=0", f"-workers={CLOSED_WORKERS}", f"-max-workers={CLOSED_WORKERS}"]
    else:  # open loop: requests leave on schedule
        attack += [f"-rate={scenario.rate}/s", "-workers=8", "-max-workers=256"]
    done = subprocess.run(attack, input=(json.dumps(target) + "\n").encode(), capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"vegeta attack failed: {done.stderr.decode()[-2000:]}")
    report = subprocess.run(
        [str(VEGETA), "report", "-type=json"], input=done.stdout, capture_output=True, check=True
    )
    parsed: dict[str, Any] = json.loads(report.stdout)
    return parsed


def busy_seconds() -> tuple[float, float]:
    """(busy, wall) CPU seconds of the whole machine so far, from /proc/stat (busy = all but idle+iowait)."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - fields[3] - fields[4]) / tick, time.monotonic()


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped children only: vegeta, not the servers
    return usage.ru_utime + usage.ru_stime


def measure(servers: Servers, scenario: Scenario, repetition: int) -> Result:
    before, machine_before, vegeta_before = servers.cpu(), busy_seconds(), children_cpu()
    report = vegeta(servers, scenario)
    per_process = [after - b for after, b in zip(servers.cpu(), before, strict=True)]
    vegeta_cpu = children_cpu() - vegeta_before
    machine_after = busy_seconds()
    wall = machine_after[1] - machine_before[1]
    other = (machine_after[0] - machine_before[0] - sum(per_process) - vegeta_cpu) / wall
    ok = int(report.get("status_codes", {}).get("200", 0))
    seconds = (report["duration"] + report["wait"]) / 1e9 or 1.0
    latencies = report["latencies"]
    total = sum(per_process)
    return Result(
        candidate=servers.candidate,
        scenario=scenario.name,
        processes=len(servers.procs),
        repetition=repetition,
        requests=int(report["requests"]),
        ok=ok,
        rps=ok / seconds,
        p50_ms=latencies["50th"] / 1e6,
        p99_ms=latencies["99th"] / 1e6,
        cpu_s=total,
        bytes_in_mean=float(report["bytes_in"]["mean"]),
        rss_mb=servers.rss(),
        cpu_share=[c / total if total else 0.0 for c in per_process] if len(per_process) > 1 else [],
        vegeta_cpu_s=vegeta_cpu,
        other_cores=max(0.0, other),
    )


def measure_quietly(servers: Servers, scenario: Scenario, repetition: int) -> Result:
    global _retry_spent
    result = measure(servers, scenario, repetition)
    if result.other_cores > BUSY_OTHER_CORES and _retry_spent < RETRY_BUDGET_S:
        print(f"  (other work took {result.other_cores:.2f} cores: measuring again)", flush=True)
        started = time.monotonic()
        again = measure(servers, scenario, repetition)
        _retry_spent += time.monotonic() - started
        result = min(result, again, key=lambda r: r.other_cores)
    return result


def wait_quiet(limit: float = 15.0) -> None:
    """Wait (up to limit seconds) for half a second in which the machine is mostly idle."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = busy_seconds()
        time.sleep(0.5)
        after = busy_seconds()
        if (after[0] - before[0]) / (after[1] - before[1]) < BUSY_OTHER_CORES:
            return


def warm_up(servers: Servers) -> None:
    vegeta(servers, Scenario("warmup", False, 0, WARM_UP_S))
    time.sleep(0.2)


def cpu_stat() -> tuple[float, float]:
    """(total, steal) jiffies of the whole machine, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields[:8]), fields[7]


def run(args: argparse.Namespace) -> tuple[list[Result], dict[str, Any]]:
    scale = 0.5 if args.quick else 1.0
    scenarios = [Scenario(s.name, s.stream, s.rate, s.duration * scale) for s in SCENARIOS]
    candidates = [c for c in CANDIDATES if c in args.candidates]
    reuse = [c for c in REUSE_PORT_CANDIDATES if c in candidates] if args.reuse_port else []
    results: list[Result] = []
    checks: dict[str, str] = {}
    load_before, stat_before = os.getloadavg(), cpu_stat()
    with tempfile.TemporaryDirectory(prefix="http-bench-") as tmp:
        work = Path(tmp)
        for rep in range(args.repeat):
            order = candidates[rep % len(candidates) :] + candidates[: rep % len(candidates)]
            for candidate in order:
                wait_quiet()
                servers = Servers(candidate, 1, work)
                try:
                    if candidate not in checks:
                        checks[candidate] = servers.check()
                        print(f"[check] {candidate}: {checks[candidate]}", flush=True)
                    warm_up(servers)
                    for scenario in scenarios:
                        result = measure_quietly(servers, scenario, rep)
                        results.append(result)
                        print(summary(result), flush=True)
                finally:
                    servers.stop()
            for candidate in reuse[rep % len(reuse) :] + reuse[: rep % len(reuse)]:
                wait_quiet()
                servers = Servers(candidate, 2, work)
                try:
                    warm_up(servers)
                    result = measure_quietly(servers, scenarios[0], rep)
                    results.append(result)
                    print(summary(result), flush=True)
                finally:
                    servers.stop()
    stat_after = cpu_stat()
    steal = (stat_after[1] - stat_before[1]) / max(1.0, stat_after[0] - stat_before[0])
    context = {"checks": checks, "loadavg_before": load_before, "steal_fraction": steal}
    return results, context


def summary(r: Result) -> str:
    share = f" share={'/'.join(f'{s:.2f}' for s in r.cpu_share)}" if r.cpu_share else ""
    return (
        f"rep{r.repetition} {r.candidate:18} x{r.processes} {r.scenario:5} {r.rps:8.0f}/s ok={r.success:.4f} "
        f"p50={r.p50_ms:6.2f}ms p99={r.p99_ms:7.2f}ms cpu/1k={r.cpu_per_1k:6.3f}s "
        f"in={r.bytes_in_mean:.0f}B rss={r.rss_mb:.0f}MB vegeta={r.vegeta_cpu_s:.1f}s "
        f"other={r.other_cores:.2f}cores{share}"
    )


# --- report ------------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    code = "import importlib.metadata as m, json, sys\n"
    code += "print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))"
    done = subprocess.run([str(PYTHON), "-c", code, *PACKAGES], capture_output=True, check=True, text=True)
    found: dict[str, str] = json.loads(done.stdout)
    found["python"] = subprocess.run(
        [str(PYTHON), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.strip()
    found["vegeta"] = vegeta_version()
    return found


def vegeta_version() -> str:
    """vegeta -version prints nothing useful for a `go install` build; its Go build info has the module."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        info = subprocess.run(
            ["go", "version", "-m", str(VEGETA)], capture_output=True, check=True, text=True
        )
        for line in info.stdout.splitlines():
            parts = line.split()
            if parts[:2] == ["mod", "github.com/tsenart/vegeta/v12"]:
                return parts[2]
    return "see bench/go.mod"


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def med(results: list[Result], candidate: str, scenario: str, processes: int, attr: str) -> float | None:
    values = [
        getattr(r, attr)
        for r in results
        if r.candidate == candidate and r.scenario == scenario and r.processes == processes
    ]
    return statistics.median(values) if values else None


def fmt(value: float | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def latency(results: list[Result], c: str, scenario: str, processes: int = 1, digits: int = 1) -> str:
    p50 = med(results, c, scenario, processes, "p50_ms")
    p99 = med(results, c, scenario, processes, "p99_ms")
    return f"{fmt(p50, digits)} / {fmt(p99, digits)}"


def spread(results: list[Result], c: str, scenario: str, processes: int = 1) -> str:
    """The median with the range of the repetitions: 4,182 (3,933-4,957), an en dash between."""
    values = [
        r.rps for r in results if r.candidate == c and r.scenario == scenario and r.processes == processes
    ]
    if not values:
        return "–"
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}–{max(values):,.0f})"


def worst(results: list[Result], c: str, scenarios: tuple[str, ...]) -> str:
    rates = [r.success for r in results if r.candidate == c and r.scenario in scenarios]
    return fmt(min(rates), 4) if rates else "–"


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def tables(results: list[Result], candidates: list[str]) -> str:
    out = ["### Unary `POST /v1/chat/completions` (1 process)", ""]
    out += [
        row(
            [
                "candidate",
                "max req/s (64 conns), median (range)",
                "p50 / p99 at max (ms)",
                "p50 / p99 @100 rps (ms)",
                "p50 / p99 @500 rps (ms)",
                "CPU s / 1k req @500 rps",
                "CPU s / 1k req at max",
                "RSS (MB)",
                "success (min)",
            ]
        ),
        row(["---"] + ["---:"] * 8),
    ]
    for c in candidates:
        out.append(
            row(
                [
                    f"**{c}**",
                    spread(results, c, "max"),
                    latency(results, c, "max"),
                    latency(results, c, "r100", digits=2),
                    latency(results, c, "r500", digits=2),
                    fmt(med(results, c, "r500", 1, "cpu_per_1k"), 3),
                    fmt(med(results, c, "max", 1, "cpu_per_1k"), 3),
                    fmt(med(results, c, "max", 1, "rss_mb")),
                    worst(results, c, ("max", "r100", "r500")),
                ]
            )
        )
    out += ["", '### SSE streams (`"stream": true`, 8 chunks + `[DONE]`, 1 process, 64 conns)', ""]
    out += [
        row(
            ["candidate", "full streams/s", "p50 / p99 (ms)", "CPU s / 1k streams", "bytes/stream", "success"]
        ),
        row(["---"] + ["---:"] * 5),
    ]
    for c in candidates:
        out.append(
            row(
                [
                    f"**{c}**",
                    spread(results, c, "sse"),
                    latency(results, c, "sse"),
                    fmt(med(results, c, "sse", 1, "cpu_per_1k"), 3),
                    fmt(med(results, c, "sse", 1, "bytes_in_mean")),
                    worst(results, c, ("sse",)),
                ]
            )
        )
    two = [c for c in candidates if any(r.candidate == c and r.processes == 2 for r in results)]
    if two:
        out += ["", "### Unary max with 2 processes sharing the port (SO_REUSEPORT), 64 conns", ""]
        out += [
            row(
                [
                    "candidate",
                    "max req/s x2",
                    "vs x1",
                    "p50 / p99 (ms)",
                    "CPU s / 1k req",
                    "CPU split per run",
                ]
            ),
            row(["---"] + ["---:"] * 5),
        ]
        for c in two:
            rps2, rps1 = med(results, c, "max", 2, "rps"), med(results, c, "max", 1, "rps")
            shares = [r.cpu_share for r in results if r.candidate == c and r.processes == 2]
            out.append(
                row(
                    [
                        f"**{c}**",
                        spread(results, c, "max", 2),
                        f"{rps2 / rps1:.2f}x" if rps2 and rps1 else "–",
                        latency(results, c, "max", 2),
                        fmt(med(results, c, "max", 2, "cpu_per_1k"), 3),
                        " ".join("/".join(f"{x:.0%}" for x in share) for share in shares),
                    ]
                )
            )
    return "\n".join(out)


def write_report(
    results: list[Result], context: dict[str, Any], args: argparse.Namespace, seconds: float
) -> None:
    candidates = [c for c in CANDIDATES if c in args.candidates]
    found = versions()
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{os.cpu_count()} cores (`nproc`), {cpu_model()}, {platform.system()} {platform.release()}"
    rows = [asdict(r) | {"success": r.success, "cpu_per_1k": r.cpu_per_1k} for r in results]
    document = {"date": now, "machine": machine, "versions": found, "repeat": args.repeat, **context}
    (HERE / "results.json").write_text(json.dumps(document | {"results": rows}, indent=1) + "\n")
    path = HERE / "RESULTS.md"
    kept = ""
    if path.exists() and MARKER in path.read_text():
        kept = path.read_text().split(MARKER, 1)[1]
    pins = ", ".join(f"{name} {version}" for name, version in found.items())
    runs = "; ".join(
        f"{s.name} = {s.duration:g} s " + ("closed loop" if s.rate == 0 else f"at {s.rate}/s")
        for s in SCENARIOS
    )
    load = "/".join(f"{x:.2f}" for x in context["loadavg_before"])
    others = sorted(r.other_cores for r in results)
    busy = sum(o > BUSY_OTHER_CORES for o in others)
    other = (
        f"{statistics.median(others):.2f} cores median, {others[-1]:.2f} at most; {busy} of {len(others)} "
        f"measurements kept above {BUSY_OTHER_CORES} cores (such runs are retried once, within a "
        f"{RETRY_BUDGET_S:g} s budget, and the quieter run kept)"
        if others
        else "–"
    )
    checks = "\n".join(f"  - {name}: {check}" for name, check in context["checks"].items())
    head = f"""# HTTP front door: server candidates measured on this machine

Generated by `bench/http_servers/measure.py` on {now} ({seconds / 60:.1f} min run), medians of {args.repeat}
repetitions (the candidates' order rotates each repetition). Raw figures per run: `results.json`.

- **Machine**: {machine}; load average before the run {load}; CPU steal during the run
  {context["steal_fraction"]:.1%}; CPU taken by other work on the machine (neither the server nor vegeta)
  during the measured runs: {other}. vegeta runs on the same 2 cores as the server, so the closed-loop
  figures are what the server gets while the load generator takes its share.
- **Versions**: {pins}. Loop: the standard asyncio (selector) loop for every candidate, no uvloop.
- **Every candidate runs embedded**, as the gateway would run it: one process, one asyncio loop, an idle
  `grpc.aio` server on the same loop, the HTTP server started on the running loop: aiohttp
  `AppRunner`+`TCPSite`; uvicorn `Server(config).serve()` (`loop="asyncio"`, `http="httptools"` or
  `"h11"`); granian `granian.server.embed.Server(app, interface=...).serve()` with `http=1`. The `*-raw`
  rows serve a bare ASGI callable instead of the Starlette app, to separate Starlette's cost from the
  server's; granian-rsgi is likewise framework-less. Start-up checks (a gRPC call to the in-process
  grpc.aio server, one SSE reply parsed; threads = OS threads of the process):
{checks}
- **Work per request** (identical): stdlib `json.loads` of a 960 B chat request, a pure-Python walk of
  the parsed dict (~20 µs), `json.dumps` of a 989 B chat.completion. SSE: the same, then 8
  `chat.completion.chunk` events (~340 B each) and `data: [DONE]`, each written as it is produced.
- **Load** (vegeta, `-keepalive -format=json -timeout=10s`): {runs}. Closed loop = `-rate=0
  -workers={CLOSED_WORKERS} -max-workers={CLOSED_WORKERS}` (64 connections, each sending as soon as it has its
  answer: the most the server sustains); open loop = `-workers=8 -max-workers=256`. sse = closed loop
  with `"stream": true`, vegeta reading every stream to its end. A {WARM_UP_S:g} s closed-loop warm-up
  first. CPU = utime+stime of the server process (all threads: granian's Rust threads, grpc's) per
  1,000 answered requests or streams; at 100 req/s it is dominated by per-wake-up costs, so the table
  shows it at 500 req/s and at max.

## Reproduce

```sh
python3 -m venv .tools/http-bench-venv
.tools/http-bench-venv/bin/pip install starlette==1.10.0 'uvicorn[standard]==0.55.0' granian==2.8.9 \\
    aiohttp==3.14.5 grpcio==1.85.1 orjson==3.13.0
python3 bench/http_servers/measure.py          # all candidates, 3 repetitions, ~6 min
python3 bench/http_servers/measure.py --quick --candidates aiohttp granian-rsgi   # harness check, no report
.tools/http-bench-venv/bin/python bench/http_servers/servers.py serve granian-rsgi --port 8080  # by hand
```

## Results

{tables(results, candidates)}

{MARKER}"""
    path.write_text(head + (kept or "\n\n## Conclusions\n\n(to be written)\n"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 repetition, half-length runs, no report")
    parser.add_argument("--candidates", nargs="+", default=list(CANDIDATES), choices=CANDIDATES)
    parser.add_argument("--no-reuse-port", dest="reuse_port", action="store_false")
    args = parser.parse_args()
    if args.quick:
        args.repeat = 1
    for needed in (PYTHON, VEGETA):
        if not needed.exists():
            raise SystemExit(f"missing {needed}: see bench/http_servers/README.md")
    started = time.monotonic()
    results, context = run(args)
    if not args.quick:
        write_report(results, context, args, time.monotonic() - started)
        print(f"wrote {HERE / 'RESULTS.md'} in {(time.monotonic() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
