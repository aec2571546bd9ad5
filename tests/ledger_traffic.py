"""Traffic for the usage ledger's end-to-end tests (tests/test_ledger_gateway.py): a gateway
configuration with three keys and four providers, seeded plans of calls, a runner that makes each
call and keeps what its caller was told, and the ledger read back through the UsageService.

A call's caller is *told* what it used and cost by a reply's `usage` and `cost`, a stream's
`finish` event, or an error's ErrorInfo metadata (a stream cut short carries what it produced);
a gateway error without that metadata tells zero. A caller that cancelled, or whose own deadline
passed, was told nothing. A call was *answered* by the gateway when the caller got a reply, or an
error carrying the gateway's `x-request-id` trailer: such a call went through the gateway's call
pipeline, whose record the ledger must hold.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from aiohttp import web
from google.protobuf import timestamp_pb2

from llmgateway.v1 import chat_pb2, gateway_service_pb2_grpc, usage_pb2, usage_service_pb2_grpc
from tests.conftest import (
    OPENAI_TEST_KEY,
    GatewayProcess,
    chat,
    error_details,
    gateway_process,
    metadata_value,
    read_event,
)
from tests.fakes import anthropic
from tests.fakes.openai import FakeOpenAI, Reply, chunk, error_body
from tests.fakes.server import words

if TYPE_CHECKING:  # the async stub types exist in the generated stubs only
    from llmgateway.v1.gateway_service_pb2_grpc import GatewayServiceAsyncStub as GatewayStub

Metadata = tuple[tuple[str, str], ...]
R = TypeVar("R")

KEYS = """
[[auth.keys]]
name = "ops"
key = "ops-key-0123456789abcdef"
role = "admin"
[[auth.keys]]
name = "team-a"
key = "team-a-key-0123456789ab"
models = ["mock:*", "openai:*", "slow:*"]
[[auth.keys]]
name = "team-b"
key = "team-b-key-0123456789ab"
"""
OPS: Metadata = (("authorization", "Bearer ops-key-0123456789abcdef"),)
TEAM_A: Metadata = (("authorization", "Bearer team-a-key-0123456789ab"),)
TEAM_B: Metadata = (("authorization", "Bearer team-b-key-0123456789ab"),)
STRANGER: Metadata = (("authorization", "Bearer not-a-gateway-key-0123"),)
KEY_NAME = {OPS: "ops", TEAM_A: "team-a", TEAM_B: "team-b", STRANGER: ""}

ANTHROPIC_KEY = "sk-ant-test-0123456789abcdef"
# Short backoffs, so retries are part of the mix without slowing the run; a breaker that opens
# and closes during it.
RESILIENCE = """retry = { max_retries = 2, initial_backoff = 0.02, max_backoff = 0.1 }
circuit_breaker = { failure_threshold = 12, reset_timeout = 0.1 }
timeout = { connect = 2.0, read = 2.0 }"""


def gateway_toml(
    ledger_url: str,
    spool_dir: Path,
    *,
    openai_url: str | None = None,
    anthropic_url: str | None = None,
    slow_url: str | None = None,
    ledger_extra: str = "",
) -> str:
    """Keys, the ledger at `ledger_url`, and the providers given: the built-in mock always,
    `openai` and `anthropic` (fakes scripted with faults), and `slow`, an OpenAI-compatible
    upstream that answers slowly (`SlowOpenAI`)."""
    parts = ['[server]\nhost = "127.0.0.1"\ngrace_period = 10.0\n', KEYS]
    if openai_url is not None:
        parts.append(
            f'[providers.openai]\nbase_url = "{openai_url}"\napi_key = "{OPENAI_TEST_KEY}"\n{RESILIENCE}\n'
        )
    if anthropic_url is not None:
        parts.append(
            f'[providers.anthropic]\nbase_url = "{anthropic_url}"\n'
            f'api_key = "{ANTHROPIC_KEY}"\n{RESILIENCE}\n'
        )
    if slow_url is not None:
        parts.append(
            f'[providers.slow]\nkind = "openai"\nbase_url = "{slow_url}"\napi_key = "{OPENAI_TEST_KEY}"\n'
            "retry = { max_retries = 0 }\n"
        )
    parts.append(f'[ledger]\nurl = "{ledger_url}"\nspool_dir = "{spool_dir}"\n{ledger_extra}\n')
    return "\n".join(parts)


# -- upstreams ---------------------------------------------------------------------------------


class SlowOpenAI(FakeOpenAI):
    """Echoes every call slowly, whatever is scripted: a stream word by word `chunk_delay` apart, a
    unary reply after `hang` seconds of silence."""

    def __init__(self, chunk_delay: float, hang: float) -> None:
        super().__init__()
        self.chunk_delay, self.hang = chunk_delay, hang

    async def _reply(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        if (await request.json()).get("stream"):
            return await super()._reply(request, Reply(echo=True, chunk_delay=self.chunk_delay))
        return await super()._reply(request, Reply(echo=True, delay=self.hang))


@dataclass
class AnthropicEcho(anthropic.Reply):
    """The fake's echo, JSON or a stream as the call asks (a reply cannot be matched to its call
    under concurrency); with `end_early`, a stream drops before its stop reason and final usage."""


class ScriptedAnthropic(anthropic.FakeAnthropic):
    async def _reply(self, request: web.Request, reply: anthropic.Reply) -> web.StreamResponse:
        if isinstance(reply, AnthropicEcho):
            echo = self._echo(await request.json())
            reply = dataclasses.replace(echo, end_early=reply.end_early, chunk_delay=reply.chunk_delay)
        return await super()._reply(request, reply)


PARTIAL = "the start of a reply that never ends"
STREAM_ERROR = {"error": {"message": "The server had an error", "type": "server_error"}}


def _openai_dropped(rng: random.Random) -> Reply:
    head = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": w}) for w in words(PARTIAL)]
    return Reply(sse=head[: rng.randint(2, len(head))], end_early=True, chunk_delay=0.005)


def _openai_error(status: int, kind: str) -> Callable[[random.Random], Reply]:
    return lambda _: Reply(status=status, json_body=error_body(f"upstream {status}", kind))


# (weight, reply) per upstream request. A reply's kind cannot follow its call's under concurrency:
# an event stream met by a Chat call is one more fault (a body that is not JSON).
OPENAI_REPLIES: list[tuple[int, Callable[[random.Random], Reply]]] = [
    (55, lambda rng: Reply(echo=True, chunk_delay=0.005 if rng.random() < 0.3 else 0.0)),
    (6, _openai_error(500, "server_error")),
    (5, _openai_error(503, "server_error")),
    (4, _openai_error(400, "invalid_request_error")),
    (
        6,
        lambda rng: Reply(
            status=429,
            json_body=error_body("Rate limit reached", "requests", "rate_limit_exceeded"),
            headers={"retry-after-ms": str(rng.randint(10, 40))},
        ),
    ),
    (4, lambda _: Reply(raw=b'{"choices": [', headers={"Content-Type": "application/json"})),
    (4, lambda _: Reply(sse=[chunk({"content": PARTIAL}), STREAM_ERROR])),
    (12, _openai_dropped),
]
ANTHROPIC_REPLIES: list[tuple[int, Callable[[random.Random], anthropic.Reply]]] = [
    (58, lambda _: AnthropicEcho()),
    (14, lambda _: AnthropicEcho(end_early=True, chunk_delay=0.005)),
    (8, lambda _: anthropic.error_reply("overloaded_error", "Overloaded")),
    (8, lambda _: anthropic.error_reply("api_error", "Internal server error")),
    (6, lambda _: anthropic.error_reply("rate_limit_error", "Rate limited")),
    (6, lambda _: anthropic.error_reply("invalid_request_error", "Bad request")),
]


def scripted(
    rng: random.Random, table: list[tuple[int, Callable[[random.Random], R]]], count: int
) -> list[R]:
    weights = [weight for weight, _ in table]
    return [factory(rng) for _, factory in rng.choices(table, weights, k=count)]


# -- calls --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Told:
    """What a caller was told a call used and cost."""

    prompt_tokens: int
    completion_tokens: int
    cost: Decimal


NOTHING = Told(0, 0, Decimal(0))


def told_by_record(record: usage_pb2.UsageRecord) -> Told:
    """What the ledger says a call used and cost (nothing, for a call no model worked on)."""
    return Told(record.usage.prompt_tokens, record.usage.completion_tokens, Decimal(record.cost.total or 0))


@dataclass(frozen=True)
class Plan:
    request_id: str
    key: Metadata
    request: chat_pb2.ChatRequest
    streaming: bool
    kind: str  # what the call exercises, for the report
    # Whether the caller will be told how the call ended (its "told" tag); False: it cancels, or
    # its deadline passes, while the call is still running.
    told: bool = True
    timeout: float = 20.0
    cancel_after: float | None = None  # seconds for Chat, events read for ChatStream

    @property
    def tagged(self) -> bool:
        """Whether the ledger will have the request's tags: not for a call refused at the gate
        (a wrong key), whose body is dropped unread."""
        return self.key != STRANGER


@dataclass(frozen=True)
class Ended:
    """How a call ended, as its caller saw it."""

    plan: Plan
    status: str  # "OK", or the status code's name
    reason: str  # a gateway error's ErrorInfo reason; else what ended it ("client cancel", ...)
    answered: bool  # a reply, or an error carrying the gateway's x-request-id
    told: Told | None  # None: told nothing
    at: float  # time.monotonic() when the caller learnt it

    @property
    def label(self) -> str:
        return f"{self.status} {self.reason}".strip()


PROBLEM = "PROBLEM"  # the status of a call that ended as no call may end


class _ClientCancelledError(Exception):
    pass


async def make_call(stub: GatewayStub, plan: Plan) -> Ended:
    """Makes the call as planned (cancelling it, or with a short deadline, as it says) and returns
    how it ended."""
    started = time.monotonic()
    metadata = (*plan.key, ("x-request-id", plan.request_id))
    try:
        told = await (_streamed if plan.streaming else _unary)(stub, plan, metadata)
    except _ClientCancelledError:
        return Ended(plan, "CANCELLED", "client cancel", False, None, time.monotonic())
    except grpc.aio.AioRpcError as err:
        return _failed(plan, err, started)
    except AssertionError as problem:
        return Ended(plan, PROBLEM, str(problem), False, None, time.monotonic())
    return Ended(plan, "OK", "", True, told, time.monotonic())


async def _cancelled(call: grpc.aio.Call) -> None:
    code = await call.code()
    assert code == grpc.StatusCode.CANCELLED, f"a call cancelled by its client ended {code.name}"
    raise _ClientCancelledError


async def _unary(stub: GatewayStub, plan: Plan, metadata: Metadata) -> Told:
    call = stub.Chat(plan.request, timeout=plan.timeout, metadata=metadata)
    if plan.cancel_after is not None:
        await asyncio.sleep(plan.cancel_after)  # the caller gives up after this long
        # Awaiting a call cancelled here would raise asyncio.CancelledError into this task.
        if call.cancel():
            await _cancelled(call)
    reply = await call
    return Told(reply.usage.prompt_tokens, reply.usage.completion_tokens, Decimal(reply.cost.total))


async def _streamed(stub: GatewayStub, plan: Plan, metadata: Metadata) -> Told:
    call = stub.ChatStream(
        chat_pb2.ChatStreamRequest(request=plan.request), timeout=plan.timeout, metadata=metadata
    )
    events = []
    while (event := await read_event(call)) is not None:
        events.append(event)
        if len(events) == plan.cancel_after and call.cancel():
            await _cancelled(call)
    assert events, "a stream ended OK without an event"
    assert events[-1].HasField("finish"), (
        f"a stream ended OK after {len(events)} events, the last not its finish"
    )
    finish = events[-1].finish
    return Told(finish.usage.prompt_tokens, finish.usage.completion_tokens, Decimal(finish.cost.total))


def _failed(plan: Plan, err: grpc.aio.AioRpcError, started: float) -> Ended:
    code, at = err.code(), time.monotonic()
    if metadata_value(err.trailing_metadata(), "x-request-id") == plan.request_id:
        details = error_details(err)  # every error of the gateway's carries an ErrorInfo
        spent = details.info.metadata
        told = NOTHING
        if "prompt_tokens" in spent:  # the call's account, e.g. of a stream cut short
            cost = Decimal(spent.get("cost", 0))  # no cost: the model had no known price
            told = Told(int(spent["prompt_tokens"]), int(spent["completion_tokens"]), cost)
        return Ended(plan, code.name, details.info.reason, True, told, at)
    # Not the gateway's answer: the client's own deadline, or the connection went.
    if code is grpc.StatusCode.DEADLINE_EXCEEDED and at - started >= plan.timeout * 0.95:
        return Ended(plan, code.name, "client deadline", False, None, at)
    return Ended(plan, code.name, "no answer", False, None, at)


async def run_calls(
    stubs: Sequence[GatewayStub],
    plans: Iterable[Plan],
    in_flight: int,
    ended: list[Ended],
    stop: Callable[[Ended], bool] = lambda _: False,
) -> None:
    """Makes `plans` with `in_flight` calls at a time, the n-th plan over `stubs[n % len(stubs)]`,
    appending each call's end to `ended`. A caller whose call ended as `stop` says makes no more
    calls."""
    pending: Iterator[tuple[int, Plan]] = iter(enumerate(plans))

    async def caller() -> None:
        for index, plan in pending:  # shared: each plan is taken by one caller
            result = await make_call(stubs[index % len(stubs)], plan)
            ended.append(result)
            if stop(result):
                return

    async with asyncio.TaskGroup() as group:
        for _ in range(in_flight):
            group.create_task(caller())


# -- plans --------------------------------------------------------------------------------------

VOCABULARY = [
    *("ledger", "gateway", "token", "price", "stream", "cancel", "budget", "model", "upstream"),
    *("record", "spool", "batch", "flush", "worker", "tenant", "project", "summary", "decimal"),
    *("exact", "cost", "usage", "prompt", "completion", "reply"),
]


def _text(rng: random.Random, request_id: str, least: int = 3) -> str:
    return f"{request_id}: " + " ".join(rng.choices(VOCABULARY, k=rng.randint(least, 30)))


def _request(model: str, text: str, told: bool, **fields: object) -> chat_pb2.ChatRequest:
    return chat(model, text, tags={"told": "yes" if told else "no"}, **fields)


def mixed_plans(rng: random.Random, count: int, prefix: str) -> list[Plan]:
    """Calls of every kind the ledger must keep: replies and streams from the mock, OpenAI and
    Anthropic (their fakes scripted with faults), some with a fallback; dry runs; refusals (a model
    the key may not use, unknown models, a wrong key); and calls whose callers are told nothing
    (they cancel, or their deadline passes, while a slow upstream is still answering)."""
    made = []
    for i in range(count):
        request_id = f"{prefix}-{i:04d}"
        key = rng.choices((OPS, TEAM_A, TEAM_B), (2, 4, 4))[0]
        streaming = rng.random() < 0.5
        text = _text(rng, request_id)
        roll = rng.random()
        if roll < 0.26:
            model = rng.choice(("mock:echo", "mock:echo-large"))
            plan = Plan(request_id, key, _request(model, text, True), streaming, "mock")
        elif roll < 0.50:
            fallback = ["mock:echo"] if rng.random() < 0.25 else []
            request = _request("openai:gpt-4o-mini", text, True, fallback_models=fallback)
            plan = Plan(
                request_id, key, request, streaming, "openai" + (" with fallback" if fallback else "")
            )
        elif roll < 0.64:
            key = TEAM_B if key == TEAM_A else key  # team-a may not use Anthropic
            plan = Plan(
                request_id, key, _request("anthropic:claude-haiku-4-5", text, True), streaming, "anthropic"
            )
        elif roll < 0.70:
            model = rng.choice(("mock:echo-large", "openai:gpt-4o-mini", "anthropic:claude-haiku-4-5"))
            key = TEAM_B if key == TEAM_A else key
            plan = Plan(request_id, key, _request(model, text, True, dry_run=True), streaming, "dry run")
        elif roll < 0.80:
            kind, key, model = rng.choice(
                (
                    ("refused: model not allowed", TEAM_A, "anthropic:claude-haiku-4-5"),
                    ("refused: unknown model", key, "mock:no-such-model"),
                    ("refused: unknown provider", key, "nowhere:some-model"),
                    ("refused: wrong key", STRANGER, "mock:echo"),
                )
            )
            plan = Plan(request_id, key, _request(model, text, True), streaming, kind)
        else:
            # The slow upstream takes a second or more: the caller always gives up first.
            text = _text(rng, request_id, least=20)
            request = _request("slow:gpt-4o-mini", text, False)
            if rng.random() < 0.5:
                after = float(rng.randint(1, 3)) if streaming else rng.uniform(0.0, 0.08)
                plan = Plan(request_id, key, request, streaming, "client cancel", False, cancel_after=after)
            else:
                plan = Plan(request_id, key, request, streaming, "client deadline", False, timeout=0.25)
        made.append(plan)
    return made


def steady_plans(rng: random.Random, prefix: str, slow_share: float = 0.0) -> Iterator[Plan]:
    """An endless run of calls that all succeed while the gateway serves: the mock's replies and
    streams, and a `slow_share` of calls to the slow upstream (still running when a drain begins)."""
    for i in itertools.count():
        request_id = f"{prefix}-{i:05d}"
        model = (
            "slow:gpt-4o-mini" if rng.random() < slow_share else rng.choice(("mock:echo", "mock:echo-large"))
        )
        request = _request(model, _text(rng, request_id), True)
        yield Plan(request_id, rng.choice((OPS, TEAM_B)), request, rng.random() < 0.4, model)


# -- channels and workers -----------------------------------------------------------------------


def own_channel(address: str) -> grpc.aio.Channel:
    # A connection of its own: channels to one address share one by default.
    return grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def worker_of(gateway: GatewayProcess, request_id: str) -> int | None:
    """The worker whose access log line has the call (written before its answer is sent)."""
    for line in gateway.log_lines():
        if line.get("event") == "access" and line.get("request_id") == request_id:
            return int(line["worker"])
    return None


async def spread_channels(
    gateway: GatewayProcess, workers: int, prefix: str, each: int = 2
) -> tuple[list[grpc.aio.Channel], list[Ended]]:
    """Channels, each its own connection, until every worker has `each` of them (the kernel picks
    a worker per connection), found by a probe call on each; and the probes' ends."""
    channels: list[grpc.aio.Channel] = []
    probes: list[Ended] = []
    served: dict[int, int] = dict.fromkeys(range(workers), 0)
    try:
        while min(served.values()) < each:
            assert len(channels) < 40, f"40 connections and the workers got {served}"
            channels.append(channel := own_channel(gateway.address))
            probe = Plan(
                f"{prefix}-probe-{len(channels)}",
                OPS,
                _request("mock:echo", "which worker?", True),
                False,
                "probe",
            )
            stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
            probes.append(ended := await make_call(stub, probe))
            assert ended.status == "OK", ended
            worker = worker_of(gateway, probe.request_id)
            assert worker is not None, f"no access line for {probe.request_id}"
            served[worker] += 1
    except BaseException:
        await close_all(channels)
        raise
    return channels, probes


async def close_all(channels: Iterable[grpc.aio.Channel]) -> None:
    for channel in channels:
        await channel.close(None)


# -- the ledger, through the UsageService --------------------------------------------------------


def period(**extra: Any) -> usage_pb2.UsageFilter:
    """From an hour ago to an hour from now, narrowed by `extra`."""
    now = datetime.now(UTC)
    start, end = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    start.FromDatetime(now - timedelta(hours=1))
    end.FromDatetime(now + timedelta(hours=1))
    return usage_pb2.UsageFilter(start_time=start, end_time=end, **extra)


async def list_records(
    usage: usage_service_pb2_grpc.UsageServiceAsyncStub, metadata: Metadata, page_size: int = 250
) -> list[usage_pb2.UsageRecord]:
    """Every record the key may see, page by page (AIP-158 page tokens, valid with the filter they
    were issued for only)."""
    records: list[usage_pb2.UsageRecord] = []
    token = ""
    covered = period()
    while True:
        page = await usage.ListUsageRecords(
            usage_pb2.ListUsageRecordsRequest(filter=covered, page_size=page_size, page_token=token),
            metadata=metadata,
        )
        records.extend(page.records)
        token = page.next_page_token
        if not token:
            return records


def spool_files(spool_dir: Path) -> list[Path]:
    return sorted(spool_dir.glob("ledger-*.spool"))


async def read_ledger(directory: Path, toml: str, spool_dir: Path) -> tuple[list[usage_pb2.UsageRecord], int]:
    """The ledger's records as a fresh gateway process on it lists them, once that process has
    replayed whatever a stopped one left in the spool; and how many spool files there were."""
    await asyncio.to_thread(directory.mkdir)
    left = len(spool_files(spool_dir))
    async with (
        gateway_process(directory, toml, "--workers", "1") as reader,
        grpc.aio.insecure_channel(reader.address) as channel,
    ):
        async with asyncio.timeout(20):
            while spool_files(spool_dir):  # noqa: ASYNC110 (a replayed file is removed: nothing to await)
                await asyncio.sleep(0.05)
        records = await list_records(usage_service_pb2_grpc.UsageServiceStub(channel), OPS)
    return records, left


def log_problems(gateway: GatewayProcess) -> str:
    """The gateway's error lines (tracebacks of a bug), for an assertion's message."""
    return "\n".join(json.dumps(line) for line in gateway.log_lines() if line.get("level") == "error")[:4000]
