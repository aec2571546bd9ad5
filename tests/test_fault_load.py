"""A gateway process under load while its upstream fails at random: 1,000 mixed calls against a fake
OpenAI server scripted with every kind of fault. Every call must end with a reply or a documented
error (or the client's own deadline or cancel), nothing may hang, and the process must not grow.

And every call is accounted exactly once: the access log (an observer of the gateway's call
records, like the ledger) has one line per call, whatever its end, and the tokens and cost in it
are what the caller was told (a reply's usage and cost, a stream's finish, or an error's account
of a stream cut short)."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from llmgateway.v1 import chat_pb2, gateway_service_pb2_grpc
from tests.conftest import (
    GatewayProcess,
    chat,
    error_details,
    gateway_process,
    metadata_value,
    openai_toml,
    read_event,
    reply_text,
)
from tests.fakes.openai import FakeOpenAI, Reply, chunk, error_body
from tests.fakes.server import words

ERRORS_DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
SEED = 1000
CALLS, WARM_UP, IN_FLIGHT = 1000, 200, 48
DEADLINE, SHORT_DEADLINE = 10.0, 0.3
MODEL, FALLBACK = "openai:gpt-4o-mini", "mock:echo"
PARTIAL = "the start of a reply that never ends"
# A threshold above the usual run of failures, and a short reset timeout, so the circuit opens and
# closes during the run while most calls still meet the faults themselves, not CIRCUIT_OPEN.
EXTRA_TOML = "circuit_breaker = { failure_threshold = 12, reset_timeout = 0.1 }"
# The default retry policy with short backoffs, so retries are part of the mix.
RETRY_TOML = "retry = { max_retries = 2, initial_backoff = 0.02, max_backoff = 0.1 }"
CLIENT_DEADLINE, CLIENT_CANCEL = "DEADLINE_EXCEEDED (client deadline)", "CANCELLED (client cancel)"


def documented_errors() -> set[tuple[grpc.StatusCode, str]]:
    """The (code, reason) rows of the table in docs/errors.md, less INTERNAL: documented as a bug."""
    rows = set()
    for line in ERRORS_DOC.read_text().splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in grpc.StatusCode.__members__:
            rows.add((grpc.StatusCode[cells[0]], cells[1]))
    assert (grpc.StatusCode.UNAVAILABLE, "UPSTREAM_UNAVAILABLE") in rows, "the errors table did not parse"
    return {(code, reason) for code, reason in rows if code is not grpc.StatusCode.INTERNAL}


def _upstream_error(status: int, kind: str) -> Callable[[random.Random], Reply]:
    return lambda _: Reply(status=status, json_body=error_body(f"upstream {status}", kind))


def _rate_limited(rng: random.Random) -> Reply:
    body = error_body("Rate limit reached", "requests", "rate_limit_exceeded")
    return Reply(status=429, json_body=body, headers={"retry-after-ms": str(rng.randint(10, 60))})


def _success(rng: random.Random) -> Reply:
    # JSON or SSE as the call asks: under concurrency a reply cannot be matched to its call.
    return Reply(echo=True, chunk_delay=0.02 if rng.random() < 0.3 else 0.0)


def _dropped(rng: random.Random) -> Reply:
    head = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": w}) for w in words(PARTIAL)]
    return Reply(sse=head[: rng.randint(1, len(head))], end_early=True, chunk_delay=0.01)


STREAM_ERROR = {"error": {"message": "The server had an error", "type": "server_error"}}

# (weight, reply factory): half the upstream replies are faults, and a stream's fault met by a
# Chat call is one more (a body that is not JSON).
REPLIES: list[tuple[int, Callable[[random.Random], Reply]]] = [
    (50, _success),
    (6, _upstream_error(500, "server_error")),
    (6, _upstream_error(503, "server_error")),
    (5, _upstream_error(529, "overloaded_error")),
    (7, _rate_limited),
    (5, lambda _: Reply(raw=b'{"choices": [', headers={"Content-Type": "application/json"})),
    (5, lambda _: Reply(sse=[chunk({"content": PARTIAL}), "{not json"])),
    (5, lambda _: Reply(sse=[chunk({"content": PARTIAL}), STREAM_ERROR])),
    (9, _dropped),
    (2, lambda _: Reply(delay=30)),
]


def scripted_replies(rng: random.Random, count: int) -> list[Reply]:
    weights = [weight for weight, _ in REPLIES]
    return [factory(rng) for _, factory in rng.choices(REPLIES, weights, k=count)]


@dataclass(frozen=True)
class Plan:
    request_id: str
    text: str
    request: chat_pb2.ChatRequest
    streaming: bool
    timeout: float
    cancel_after: float | None  # seconds for Chat, events read for ChatStream


def plans(rng: random.Random, count: int, prefix: str) -> list[Plan]:
    made = []
    for i in range(count):
        text = f"{prefix} call {i} asks the gateway something"
        roll = rng.random()
        if roll < 0.05:
            request = chat(FALLBACK, text)
        elif roll < 0.35:
            request = chat(MODEL, text, fallback_models=[FALLBACK])
        else:
            request = chat(MODEL, text)
        streaming = rng.random() < 0.5
        cancel_after: float | None = None
        if rng.random() < 0.1:
            cancel_after = float(rng.randint(1, 3)) if streaming else rng.uniform(0.0, 0.05)
        timeout = SHORT_DEADLINE if rng.random() < 0.08 else DEADLINE
        made.append(Plan(f"{prefix}-{i}", text, request, streaming, timeout, cancel_after))
    return made


class BadOutcomeError(Exception):
    """A call that ended in a way the gateway must never end one."""


async def cancelled(call: grpc.aio.Call) -> str:
    code = await call.code()
    if code != grpc.StatusCode.CANCELLED:
        raise BadOutcomeError(f"a call cancelled by the client ended {code.name}")
    return CLIENT_CANCEL


@dataclass(frozen=True)
class Told:
    """What a caller was told a call used and cost."""

    prompt_tokens: int
    completion_tokens: int
    cost: str


# request id -> what its caller was told, for calls that told anything; and how each call ended.
TOLD: dict[str, Told] = {}
ENDED: dict[str, str] = {}


async def unary(stub: gateway_service_pb2_grpc.GatewayServiceAsyncStub, plan: Plan) -> str:
    call = stub.Chat(plan.request, timeout=plan.timeout, metadata=(("x-request-id", plan.request_id),))
    if plan.cancel_after is not None:
        await asyncio.sleep(plan.cancel_after)
        # Awaiting a call cancelled here would raise asyncio.CancelledError into this task.
        if call.cancel():
            return await cancelled(call)
    reply = await call
    if reply_text(reply.message) != plan.text:
        raise BadOutcomeError(f"Chat replied {reply_text(reply.message)!r} to {plan.text!r}")
    TOLD[plan.request_id] = Told(reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.cost.total)
    return "OK"


async def streamed(stub: gateway_service_pb2_grpc.GatewayServiceAsyncStub, plan: Plan) -> str:
    call = stub.ChatStream(
        chat_pb2.ChatStreamRequest(request=plan.request),
        timeout=plan.timeout,
        metadata=(("x-request-id", plan.request_id),),
    )
    events = []
    while (event := await read_event(call)) is not None:
        events.append(event)
        if len(events) == plan.cancel_after and call.cancel():
            return await cancelled(call)
    text = "".join(e.text_delta.text for e in events if e.HasField("text_delta"))
    if not (events and events[0].HasField("start") and events[-1].HasField("finish") and text == plan.text):
        raise BadOutcomeError(
            f"ChatStream of {plan.text!r} sent {[e.WhichOneof('event') for e in events]}: {text!r}"
        )
    usage, cost = events[-1].finish.usage, events[-1].finish.cost
    TOLD[plan.request_id] = Told(usage.prompt_tokens, usage.completion_tokens, cost.total)
    return "OK"


def rpc_name(plan: Plan) -> str:
    return "ChatStream" if plan.streaming else "Chat"


def failure(
    err: grpc.aio.AioRpcError, plan: Plan, elapsed: float, documented: set[tuple[grpc.StatusCode, str]]
) -> str:
    code = err.code()
    if metadata_value(err.trailing_metadata(), "grpc-status-details-bin") is None:
        # Only the client's own deadline ends a call without the gateway's ErrorInfo.
        if code is grpc.StatusCode.DEADLINE_EXCEEDED and elapsed >= plan.timeout * 0.95:
            return CLIENT_DEADLINE
        raise BadOutcomeError(f"{code.name} without ErrorInfo after {elapsed:.2f}s: {err.details()}")
    details = error_details(err)
    if (code, details.info.reason) not in documented:
        raise BadOutcomeError(f"undocumented {code.name} {details.info.reason}: {details.message}")
    if details.info.reason == "DEADLINE_EXCEEDED" and elapsed < plan.timeout * 0.9:
        raise BadOutcomeError(f"the caller's {plan.timeout} s deadline reported passed after {elapsed:.2f} s")
    spent = details.info.metadata
    if "prompt_tokens" in spent:  # a stream cut short: what it produced, accounted
        TOLD[plan.request_id] = Told(
            int(spent["prompt_tokens"]), int(spent["completion_tokens"]), spent.get("cost", "")
        )
    return f"{code.name} {details.info.reason}"


async def run_calls(
    stub: gateway_service_pb2_grpc.GatewayServiceAsyncStub, todo: list[Plan]
) -> tuple[Counter[tuple[str, str]], list[str]]:
    """Runs `todo` with IN_FLIGHT calls at a time; returns calls by (outcome, RPC) and what went
    wrong."""
    documented = documented_errors()
    outcomes: Counter[tuple[str, str]] = Counter()
    problems: list[str] = []
    pending: Iterator[Plan] = iter(todo)

    async def worker() -> None:
        for plan in pending:  # shared: each plan is taken by one worker
            started = time.monotonic()
            try:
                try:
                    outcome = await (streamed if plan.streaming else unary)(stub, plan)
                except grpc.aio.AioRpcError as err:
                    outcome = failure(err, plan, time.monotonic() - started, documented)
            except BadOutcomeError as problem:
                outcome = "PROBLEM"
                request = plan.request
                problems.append(
                    f"{rpc_name(plan)} {request.model} {list(request.fallback_models)}: {problem}"
                )
            outcomes[outcome, rpc_name(plan)] += 1
            ENDED[plan.request_id] = outcome

    async with asyncio.TaskGroup() as group:
        for _ in range(IN_FLIGHT):
            group.create_task(worker())
    return outcomes, problems


def report(problems: list[str], gateway: GatewayProcess) -> str:
    """What went wrong, with the first errors the gateway logged (tracebacks of INTERNAL)."""
    logged = [line for line in gateway.log_lines() if line.get("level") == "error"]
    return "\n".join([*problems[:20], *(str(line) for line in logged[:3])])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def print_outcomes(outcomes: Counter[tuple[str, str]]) -> None:
    print(f"  {'Chat':>5} {'Stream':>6}")
    labels = {label for label, _ in outcomes}
    for label in sorted(labels, key=lambda o: -outcomes[o, "Chat"] - outcomes[o, "ChatStream"]):
        print(f"  {outcomes[label, 'Chat']:5d} {outcomes[label, 'ChatStream']:6d}  {label}")


async def test_random_upstream_faults_under_load(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    async with (
        FakeOpenAI() as fake,
        gateway_process(tmp_path, openai_toml(fake.base_url, EXTRA_TOML, retry=RETRY_TOML)) as gateway,
        grpc.aio.insecure_channel(gateway.address) as channel,
    ):
        stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        pid = gateway.process.pid

        # The warm-up takes the one-time allocations (imports, pools, first use of each path).
        fake.script(*scripted_replies(rng, WARM_UP))
        _, problems = await asyncio.wait_for(run_calls(stub, plans(rng, WARM_UP, "warm-up")), 120)
        assert not problems, report(problems, gateway)
        await asyncio.sleep(1.0)
        before = rss_kib(pid)

        fake.script(*scripted_replies(rng, CALLS))
        requests, disconnects = len(fake.requests), fake.disconnects
        started = time.monotonic()
        load = plans(rng, CALLS, "load")
        outcomes, problems = await asyncio.wait_for(run_calls(stub, load), 120)
        wall = time.monotonic() - started
        await asyncio.sleep(1.0)
        after = rss_kib(pid)

        print(f"\n{CALLS} calls in {wall:.1f} s, {len(fake.requests) - requests} upstream requests")
        print(f"({fake.disconnects - disconnects} left by the gateway before they ended); calls by outcome:")
        print_outcomes(outcomes)
        print(f"gateway VmRSS {before} KiB before, {after} KiB after ({(after - before) / before:+.1%})")

        assert not problems, report(problems, gateway)
        assert sum(outcomes.values()) == CALLS
        assert outcomes["OK", "Chat"] + outcomes["OK", "ChatStream"] > CALLS // 3
        # Still serving once the faults stop.
        reply = await stub.Chat(chat(FALLBACK, "still there?"), timeout=10)
        assert reply_text(reply.message) == "still there?"
        assert gateway.process.returncode is None
        assert abs(after - before) <= before * 0.10, f"VmRSS went from {before} KiB to {after} KiB"

        # Exactly once: every call of the run has one access line, and it says what the caller
        # was told. Calls the client gave up on (its deadline, its cancel) were told nothing, and
        # are there all the same, but for one given up on before it reached the gateway's code: a
        # cancel that went out before the request was handed over, or a 0.3 s deadline that passed
        # while the request waited in gRPC's queues (grpc does not start a handler past its deadline).
        ids = {plan.request_id for plan in load}
        logged = [line for line in gateway.log_lines() if line.get("request_id") in ids]
        counts = Counter(line["request_id"] for line in logged)
        missing = {rid: ENDED[rid] for rid in ids - set(counts)}
        assert set(missing.values()) <= {CLIENT_CANCEL, CLIENT_DEADLINE}, missing
        assert all(
            plan.timeout == SHORT_DEADLINE
            for plan in load
            if ENDED.get(plan.request_id) == CLIENT_DEADLINE and plan.request_id in missing
        )
        assert set(counts.values()) == {1}, [rid for rid, n in counts.items() if n > 1][:5]
        told = {rid: t for rid, t in TOLD.items() if rid in ids}
        assert len(told) > CALLS // 3
        for line in logged:
            expected = told.get(line["request_id"])
            if expected is not None:
                recorded = Told(line["prompt_tokens"], line["completion_tokens"], line["cost"])
                assert recorded == expected, line
        print(
            f"{len(logged)} records for {CALLS} calls ({len(missing)} given up on before they arrived); "
            f"{len(told)} told their usage and cost, all equal to the record"
        )
