"""Every error reason docs/errors.md documents, provoked through the HTTP doors: each comes back with
the HTTP status, OpenAI error `type` and `code`, and Anthropic error `type` that the document's
"Over HTTP" table gives its gRPC code (and `Retry-After` when the gateway knows when to retry).

The reasons are read from the document, so a new reason fails here until it is either provoked
below or listed, with why, among those no HTTP request can meet."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from multidict import CIMultiDict

from llm_gateway.fleet.store import POLL
from llmgateway.v1 import usage_pb2, usage_service_pb2_grpc
from tests.conftest import OPENAI_TEST_KEY, chat, error_details, free_port, running_gateway
from tests.fakes.openai import FakeOpenAI, Reply, error_body
from tests.postgres import PostgresCluster
from tests.redis_server import redis_server

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"
KEY, NARROW, SLOW, COUNTED, CAPPED = (
    f"{name}-key-0123456789abcdef" for name in ("team", "narrow", "slow", "counted", "capped")
)

# Reasons no HTTP request can meet, and why; each is covered over gRPC where it applies.
NOT_OVER_HTTP = {
    "UNDECODABLE_REQUEST": "protobuf decoding; a body that is not JSON is INVALID_REQUEST",
    "ADMIN_REQUIRED": "BudgetService only",
    "BUDGET_NOT_FOUND": "BudgetService only",
    "BUDGET_EXISTS": "BudgetService only",
    "BUDGET_READ_ONLY": "BudgetService only",
    "USAGE_ACCESS_DENIED": "UsageService only",
    "LEDGER_DISABLED": "UsageService and BudgetService only",
    "LEDGER_UNAVAILABLE": "UsageService only (checked over gRPC below)",
    "PROVIDER_DISABLED": "ListModels' provider filter; GET /v1/models has none",
    "REPLY_TOO_LARGE": "gRPC's message size limit; an HTTP reply has none",
    "INTERNAL": "a bug: nothing a caller sends may cause it",
}
# Met on the batch routes rather than by a call; tests/test_batches.py provokes each.
BATCH_ROUTES = {"BATCH_NOT_FOUND", "BATCH_FINISHED", "BATCH_STORE_UNAVAILABLE", "BATCH_RATE_LIMITED"}
# Only in a provider-mode batch's results (tests/test_batch_provider_mode.py and
# tests/test_provider_batch_apis.py meet each).
PROVIDER_BATCHES = {
    "PROVIDER_BATCH_EXPIRED",
    "PROVIDER_BATCH_CANCELLED",
    "PROVIDER_BATCH_FAILED",
    "UPSTREAM_BATCH_ERROR",
}
# Provoked by tests of their own below: a shutdown, a database outage, a Redis outage; and on the
# usage and budget services' JSON route (tests/test_http_rpc.py).
OWN_TESTS = {
    "METHOD_NOT_FOUND",
    "GRACE_PERIOD_EXPIRED",
    "BUDGET_STORE_UNAVAILABLE",
    "LIMIT_STORE_UNAVAILABLE",
    "CIRCUIT_STORE_UNAVAILABLE",
}


def documented() -> dict[str, str]:
    """reason -> gRPC code, from the "By code and reason" table."""
    table = DOC.read_text().split("## By code and reason", 1)[1].split("\n## ", 1)[0]
    return dict(
        (reason, code) for code, reason in re.findall(r"^\| `([A-Z_]+)` \| `([A-Z_]+)` \|", table, re.M)
    )


def over_http() -> dict[str, tuple[int, str, str]]:
    """gRPC code -> (HTTP status, OpenAI type, Anthropic type), from the "Over HTTP" table."""
    table = DOC.read_text().split("## Over HTTP", 1)[1].split("\n## ", 1)[0]
    found = {}
    for code, status, openai, anthropic in re.findall(
        r"^\| `([A-Z_]+)` \| (\d{3})[^|]* \| `([a-z_]+)`[^|]* \| `([a-z_]+)` \|", table, re.M
    ):
        found[code] = (int(status), openai, anthropic)
    return found


# Where the table's cells say otherwise for one reason.
OPENAI_TYPE = {"UPSTREAM_QUOTA_EXCEEDED": "insufficient_quota"}
ANTHROPIC_STATUS = {"UPSTREAM_UNAVAILABLE": 529, "CIRCUIT_OPEN": 529}


@dataclass
class Case:
    reason: str
    model: str = "mock:echo"
    key: str | None = KEY
    body: dict[str, Any] = field(default_factory=dict)  # added to either door's body
    openai_only: dict[str, Any] = field(default_factory=dict)  # the OpenAI door's extensions
    headers: dict[str, str] = field(default_factory=dict)
    script: tuple[Reply, ...] = ()  # the fake upstream's next replies
    primed: bool = False  # the same call once before, to use up a limit or open a circuit
    retry_after: bool = False
    text: str = "Hello there"


UPSTREAM = "openai:gpt-4o-mini"
CASES = [
    Case("INVALID_REQUEST", body={"temperature": 7}),
    Case("MODEL_NOT_FOUND", model="mock:no-such-model"),
    Case("MISSING_API_KEY", key=None),
    Case("INVALID_API_KEY", key="not-a-key-of-this-gateway"),
    Case("MODEL_NOT_ALLOWED", model=UPSTREAM, key=NARROW),
    Case("BUDGET_EXCEEDED", openai_only={"budget": {"max_cost": "0.0000001"}}),
    Case("PRICE_UNKNOWN", model="openai:a-model-without-a-price", openai_only={"budget": {"max_cost": "1"}}),
    Case("NO_MODEL_AVAILABLE", model="auto"),
    Case("KEY_RATE_LIMITED", key=SLOW, primed=True, retry_after=True),
    Case("KEY_QUOTA_EXCEEDED", key=COUNTED, primed=True, retry_after=True),
    Case("BUDGET_EXHAUSTED", key=CAPPED),
    Case("PROVIDER_RATE_LIMITED", model="paced:echo", primed=True, retry_after=True),
    Case("UPSTREAM_UNAVAILABLE", model="down:gpt-4o-mini"),  # one failure: the circuit stays closed
    Case("CIRCUIT_OPEN", model="down:gpt-4o-mini", primed=True),  # the second opens it
    Case(
        "UPSTREAM_INVALID_REQUEST",
        model=UPSTREAM,
        script=(Reply(400, error_body("Bad", "invalid_request_error")),),
    ),
    Case(
        "UPSTREAM_NOT_FOUND",
        model=UPSTREAM,
        script=(Reply(404, error_body("No model", "invalid_request_error")),),
    ),
    Case(
        "PROVIDER_PERMISSION_DENIED",
        model=UPSTREAM,
        script=(Reply(403, error_body("Region", "permission_error")),),
    ),
    Case(
        "PROVIDER_AUTH_FAILED",
        model=UPSTREAM,
        script=(Reply(401, error_body("Incorrect API key", "invalid_request_error", "invalid_api_key")),),
    ),
    Case(
        "UPSTREAM_RATE_LIMITED",
        model="limited:gpt-4o-mini",
        script=(
            Reply(
                429, error_body("Slow down", "requests", "rate_limit_exceeded"), headers={"retry-after": "1"}
            ),
        ),
        retry_after=True,
    ),
    Case(
        "UPSTREAM_QUOTA_EXCEEDED",
        model=UPSTREAM,
        script=(Reply(429, error_body("No credit", "insufficient_quota", "insufficient_quota")),),
    ),
    Case("UPSTREAM_BAD_RESPONSE", model=UPSTREAM, script=(Reply(raw=b"{not json"),)),
    Case(
        "UPSTREAM_STREAM_ERROR",
        model=UPSTREAM,
        body={"stream": True},
        script=(Reply(sse=[{"error": {"message": "overloaded", "type": "server_error"}}]),),
    ),
    Case(
        "UPSTREAM_STREAM_INTERRUPTED",
        model=UPSTREAM,
        body={"stream": True},
        script=(Reply(sse=[], end_early=True),),
    ),
    Case("UPSTREAM_TIMEOUT", model=UPSTREAM, script=(Reply(delay=10),)),
    Case(
        "DEADLINE_EXCEEDED", model=UPSTREAM, headers={"x-request-timeout": "0.3"}, script=(Reply(delay=10),)
    ),
    Case("SHUTTING_DOWN"),  # last: the gateway drains
]


def config(upstream: str, closed: str) -> str:
    def provider(name: str, url: str, extra: str = "") -> str:
        return f"""
[providers.{name}]
kind = "openai"
base_url = "{url}"
api_key = "{OPENAI_TEST_KEY}"
timeout = {{ connect = 2.0, read = 1.0 }}
retry = {{ max_retries = 0 }}
{extra}
"""

    keys = "\n".join(
        f'[[auth.keys]]\nname = "{name}"\nkey = "{key}"\n{extra}'
        for name, key, extra in (
            ("team", KEY, ""),
            ("narrow", NARROW, 'models = ["mock:*"]'),
            ("slow", SLOW, "rate_limit = { requests_per_minute = 1, max_wait = 0 }"),
            ("counted", COUNTED, "quota = { requests_per_hour = 1 }"),
            ("capped", CAPPED, ""),
        )
    )
    return f"""
{keys}
{provider("openai", upstream, "circuit_breaker = { failure_threshold = 1000 }")}
{provider("limited", upstream)}
{provider("down", closed, "circuit_breaker = { failure_threshold = 2, reset_timeout = 600 }")}

[providers.paced]
kind = "mock"
rate_limit = {{ requests_per_minute = 1, max_wait = 0 }}
[providers.paced.models.echo]

[providers.off]
kind = "mock"
enabled = false
[providers.off.models.echo]

[routing]
auto = ["off:echo"]

[[budgets.limits]]
id = "capped"
scope = "key:capped"
limit_usd = "0.0000001"
period = "day"
"""


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/v1"


Send = Callable[[Case], Awaitable[tuple[int, CIMultiDict[str], Any]]]


def sender(http: aiohttp.ClientSession, base: str, door: str) -> Send:
    async def send(case: Case) -> tuple[int, CIMultiDict[str], Any]:
        body: dict[str, Any] = {"model": case.model, "messages": [{"role": "user", "content": case.text}]}
        headers = dict(case.headers)
        if door == "openai":
            path, body = "/v1/chat/completions", {**body, **case.openai_only}
            if case.key is not None:
                headers["authorization"] = f"Bearer {case.key}"
        else:
            path, body = "/v1/messages", {**body, "max_tokens": 64}
            if case.key is not None:
                headers["x-api-key"] = case.key
        async with http.post(base + path, json={**body, **case.body}, headers=headers) as response:
            return response.status, response.headers.copy(), await response.json(content_type=None)

    return send


def stacks() -> str:
    """Where every task of the loop (the in-process gateway's among them) is waiting."""
    found = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(limit=12, file=found)
    return found.getvalue()


def test_every_documented_reason_is_provoked_here_or_said_to_be_out_of_reach() -> None:
    reasons = set(documented())
    assert len(reasons) > 30
    provoked = {case.reason for case in CASES}
    assert provoked | set(NOT_OVER_HTTP) | OWN_TESTS | BATCH_ROUTES | PROVIDER_BATCHES == reasons
    assert not provoked & set(NOT_OVER_HTTP)
    assert set(over_http()) >= set(documented().values())


@pytest.mark.parametrize("door", ["openai", "anthropic"])
async def test_every_reason_with_its_status_and_type(fake_openai: FakeOpenAI, door: str) -> None:
    codes, statuses = documented(), over_http()
    async with (
        running_gateway(config(fake_openai.base_url, closed_port_url())) as gw,
        aiohttp.ClientSession() as http,
    ):
        send = sender(http, gw.http_url, door)
        seen = []
        for case in CASES:
            if door == "anthropic" and case.openai_only:
                continue  # the extensions are the OpenAI door's
            if case.reason == "SHUTTING_DOWN":
                gw.server.drain.start_draining()
            fake_openai.script(*case.script)
            if case.primed:
                await send(case)
            try:
                status, headers, body = await asyncio.wait_for(send(case), 30)
            except TimeoutError:
                pytest.fail(f"{case.reason}: no answer in 30 s; where the gateway's tasks wait:\n{stacks()}")
            assert not fake_openai.pending(), f"{case.reason}: the upstream was not called as scripted"
            expected_status, openai_type, anthropic_type = statuses[codes[case.reason]]
            if door == "openai":
                error = body["error"]
                assert (status, error["type"], error["code"]) == (
                    expected_status,
                    OPENAI_TYPE.get(case.reason, openai_type),
                    case.reason.lower(),
                ), body
                assert error["request_id"] == headers["x-request-id"]
            else:
                assert body["type"] == "error", body
                assert (status, body["error"]["type"]) == (
                    ANTHROPIC_STATUS.get(case.reason, expected_status),
                    anthropic_type,
                ), (case.reason, body)
                assert body["request_id"] == headers["x-request-id"]
            if case.retry_after:
                assert int(headers["Retry-After"]) >= 1, case.reason
            seen.append(case.reason)
    assert len(seen) == len(CASES) - (door == "anthropic") * sum(1 for c in CASES if c.openai_only)


async def test_calls_cut_off_by_shutdown_end_grace_period_expired_over_http(fake_openai: FakeOpenAI) -> None:
    toml = f"""
[providers.openai]
base_url = "{fake_openai.base_url}"
api_key = "{OPENAI_TEST_KEY}"
[providers.mock]
chunk_delay = 0.2
"""
    async with running_gateway(toml) as gw, aiohttp.ClientSession() as http:
        base = gw.http_url
        fake_openai.script(Reply(delay=30))
        unary = asyncio.ensure_future(
            http.post(
                f"{base}/v1/chat/completions",
                json={"model": "openai:gpt-4o-mini", "messages": [{"role": "user", "content": "wait"}]},
            )
        )
        stream = await http.post(
            f"{base}/v1/chat/completions",
            json={
                "model": "mock:echo",
                "stream": True,
                "messages": [{"role": "user", "content": "slow " * 100}],
            },
        )
        assert stream.status == 200
        await stream.content.readuntil(b"\n\n")  # the stream has started
        await fake_openai.received(1)
        await asyncio.wait_for(gw.server.stop(0.5), 10)

        answered = await unary
        assert answered.status == 503
        assert (await answered.json())["error"]["code"] == "grace_period_expired"
        events = (await stream.read()).decode().strip().split("\n\n")
        last = events[-1].removeprefix("data: ")
        assert '"code":"grace_period_expired"' in last.replace(" ", "")
        assert '"completion_tokens"' in last  # what the stream produced is in its metadata


async def test_a_budgeted_call_fails_closed_when_the_database_is_down() -> None:
    """With the ledger's PostgreSQL down, a call a budget covers is refused (nothing sent upstream:
    it cannot be held), the usage API says its database is unreachable, and calls no budget
    covers are still served."""
    cluster = PostgresCluster()
    try:
        toml = f"""
[[auth.keys]]
name = "capped"
key = "{CAPPED}"
role = "admin"
[[auth.keys]]
name = "free"
key = "{KEY}"
[ledger]
url = "{cluster.new_database()}"
[[budgets.limits]]
id = "capped"
scope = "key:capped"
limit_usd = "10"
"""
        async with running_gateway(toml) as gw, aiohttp.ClientSession() as http:
            url = f"{gw.http_url}/v1/chat/completions"
            body = {"model": "mock:echo", "messages": [{"role": "user", "content": "Hi"}]}
            async with http.post(url, json=body, headers={"authorization": f"Bearer {CAPPED}"}) as before:
                assert before.status == 200
            cluster.stop()
            async with http.post(url, json=body, headers={"authorization": f"Bearer {CAPPED}"}) as refused:
                error = (await refused.json())["error"]
                assert (refused.status, error["type"], error["code"]) == (
                    503,
                    "service_unavailable_error",
                    "budget_store_unavailable",
                )
                assert "postgresql://" not in error["message"]
            async with http.post(url, json=body, headers={"authorization": f"Bearer {KEY}"}) as served:
                assert served.status == 200
            usage = usage_service_pb2_grpc.UsageServiceStub(gw.channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await usage.ListUsageRecords(
                    usage_pb2.ListUsageRecordsRequest(),
                    metadata=(("authorization", f"Bearer {CAPPED}"),),
                )
            details = error_details(caught.value)
            assert (details.code, details.info.reason) == (grpc.StatusCode.UNAVAILABLE, "LEDGER_UNAVAILABLE")
    finally:
        cluster.destroy()


async def test_a_rate_limited_call_fails_closed_when_the_fleets_redis_is_down() -> None:
    """With `fleet.limits_when_down = "refuse"`, a call a shared limit covers is refused while Redis
    is down, on both doors, and served again once it is back."""
    with redis_server() as redis:
        toml = f"""
[fleet]
redis_url = "{redis.url}"
timeout = 0.2
retry_interval = 0.2
limits_when_down = "refuse"
[providers.mock.rate_limit]
requests_per_minute = 1000
"""
        async with running_gateway(toml) as gw, aiohttp.ClientSession() as http:
            url = f"{gw.http_url}/v1/chat/completions"
            body = {"model": "mock:echo", "messages": [{"role": "user", "content": "Hi"}]}
            async with http.post(url, json=body) as before:
                assert before.status == 200
            redis.kill()
            async with http.post(url, json=body) as refused:
                error = (await refused.json())["error"]
                assert (refused.status, error["type"], error["code"]) == (
                    503,
                    "service_unavailable_error",
                    "limit_store_unavailable",
                )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await gw.stub.Chat(chat("mock:echo"))
            details = error_details(caught.value)
            assert (details.code, details.info.reason) == (
                grpc.StatusCode.UNAVAILABLE,
                "LIMIT_STORE_UNAVAILABLE",
            )
            redis.start()
            await asyncio.sleep(0.3)  # past the retry interval
            async with http.post(url, json=body) as after:
                assert after.status == 200


async def test_calls_fail_closed_when_the_fleets_shared_circuits_cannot_be_read() -> None:
    """With `fleet.breakers_when_down = "refuse"`, a provider's calls are refused while Redis is down
    (as soon as the background reads notice), on both doors, and served again once it is back."""
    with redis_server() as redis:
        toml = f"""
[fleet]
redis_url = "{redis.url}"
timeout = 0.2
retry_interval = 0.2
breakers_when_down = "refuse"
"""
        async with running_gateway(toml) as gw, aiohttp.ClientSession() as http:
            url = f"{gw.http_url}/v1/chat/completions"
            body = {"model": "mock:echo", "messages": [{"role": "user", "content": "Hi"}]}
            async with http.post(url, json=body) as before:
                assert before.status == 200
            redis.kill()
            await asyncio.sleep(POLL + 0.3)  # the next background read meets Redis down
            async with http.post(url, json=body) as refused:
                error = (await refused.json())["error"]
                assert (refused.status, error["type"], error["code"]) == (
                    503,
                    "service_unavailable_error",
                    "circuit_store_unavailable",
                )
                assert "redis://" not in error["message"]
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await gw.stub.Chat(chat("mock:echo"))
            details = error_details(caught.value)
            assert (details.code, details.info.reason, details.info.metadata["provider"]) == (
                grpc.StatusCode.UNAVAILABLE,
                "CIRCUIT_STORE_UNAVAILABLE",
                "mock",
            )
            redis.start()
            await asyncio.sleep(POLL + 0.5)  # past the retry interval, and a background read
            async with http.post(url, json=body) as after:
                assert after.status == 200


async def test_a_deadline_ends_a_started_stream_and_a_bad_one_is_refused() -> None:
    async with (
        running_gateway("[providers.mock]\nchunk_delay = 0.1\n") as gw,
        aiohttp.ClientSession() as http,
    ):
        url = f"{gw.http_url}/v1/chat/completions"
        body = {"model": "mock:echo", "stream": True, "messages": [{"role": "user", "content": "word " * 50}]}
        async with http.post(url, json=body, headers={"x-request-timeout": "0.5"}) as response:
            assert response.status == 200
            events = (await response.read()).decode().strip().split("\n\n")
        words = sum(event.count("word") for event in events[:-1])
        assert 2 <= words < 50  # some words, then the deadline
        assert '"code":"deadline_exceeded"' in events[-1].replace(" ", "")
        for bad in ("soon", "0", "-1", "nan", "86401"):
            async with http.post(url, json=body, headers={"x-request-timeout": bad}) as refused:
                error = (await refused.json())["error"]
                assert (refused.status, error["param"], error["code"]) == (
                    400,
                    "x-request-timeout",
                    "invalid_request",
                )
