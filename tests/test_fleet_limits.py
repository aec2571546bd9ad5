"""Rate limits and Retry-After pauses shared through a real Redis: limiters of different
processes are stood in for by limiters with their own Redis clients; the end-to-end test runs
three gateway processes."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis

from llm_gateway.config.schema import FleetConfig, RateLimitConfig
from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.fleet import SCRIPTS, RedisState, SharedRateLimiter, shared_limiters
from llm_gateway.fleet.limits import LEASE
from llm_gateway.fleet.store import POLL
from llm_gateway.gateway.guard import key_limiter
from llm_gateway.gateway.limits import Limiter
from llmgateway.v1 import chat_pb2, gateway_service_pb2_grpc
from tests.conftest import (
    chat,
    error_details,
    openai_toml,
    reply_text,
    running_gateway,
)
from tests.fakes.openai import FakeOpenAI, Reply, completion, error_body
from tests.fleet import three_gateways
from tests.redis_server import RedisServer, redis_server


@pytest.fixture(name="redis")
def redis_fixture() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


def fleet(url: str, **settings: object) -> FleetConfig:
    return FleetConfig.model_validate({"redis_url": url, **settings})


class Replicas:
    """`count` replicas' limiters for one provider: each with a Redis client of its own."""

    def __init__(self, url: str, count: int, limits: RateLimitConfig, **settings: object) -> None:
        config = fleet(url, **settings)
        self.states = [RedisState(config) for _ in range(count)]
        self.limiters = [
            SharedRateLimiter("provider", "up", limits, _refuse, state, config.limits_when_down)
            for state in self.states
        ]

    async def start(self) -> None:
        """As a gateway process starts its Redis client: scripts loaded, pauses watched."""
        await asyncio.gather(*(state.start(SCRIPTS) for state in self.states))

    async def close(self) -> None:
        for state in self.states:
            await state.close()


def _refuse(what: str, retry_after: float) -> GatewayError:
    return GatewayError(
        what, code=Code.RESOURCE_EXHAUSTED, reason="PROVIDER_RATE_LIMITED", retry_after=retry_after
    )


# Bursts of hundreds of admissions on a machine running other tests can take longer than the
# default 0.25 s bound to get a connection, and would then fall back to per-process limits; these
# tests are about the sharing, so they allow more.
BURST_TIMEOUT = 2.0


@pytest.fixture(name="replicas")
async def replicas_fixture(redis: RedisServer) -> AsyncIterator[list[Replicas]]:
    made: list[Replicas] = []
    yield made
    for replicas in made:
        await replicas.close()


async def admitted(limiter: Limiter, tokens: int = 0) -> bool:
    try:
        await limiter.acquire(tokens, None)
    except GatewayError:
        return False
    return True


async def test_three_replicas_share_one_minute_of_requests(
    redis: RedisServer, replicas: list[Replicas]
) -> None:
    group = Replicas(redis.url, 3, RateLimitConfig(requests_per_minute=60, max_wait=0), timeout=BURST_TIMEOUT)
    replicas.append(group)
    await group.start()
    results = await asyncio.gather(*(admitted(group.limiters[n % 3]) for n in range(200)))
    assert sum(results) == 60
    assert sum(limiter.refusals for limiter in group.limiters) == 140
    # Each replica alone would have let 60 through: the limit is the fleet's.
    assert all(limiter.refusals > 0 for limiter in group.limiters)


async def test_tokens_per_minute_are_shared_and_a_refusal_says_when_to_retry(
    redis: RedisServer, replicas: list[Replicas]
) -> None:
    group = Replicas(
        redis.url, 2, RateLimitConfig(tokens_per_minute=6_000, max_wait=0), timeout=BURST_TIMEOUT
    )
    replicas.append(group)
    a, b = group.limiters
    assert await admitted(a, 4_000)
    assert await admitted(b, 2_000)
    with pytest.raises(GatewayError) as refused:
        await b.acquire(1_000, None)
    assert "tokens per minute" in refused.value.message
    assert refused.value.retry_after is not None
    assert 9.0 <= refused.value.retry_after <= 10.1  # 1,000 tokens drip back in 10 s


async def test_a_call_waits_in_line_for_room_within_max_wait(
    redis: RedisServer, replicas: list[Replicas]
) -> None:
    # 60 a minute: after the first minute's worth, one more every second (a rate under 200 a
    # minute, so each admission takes exactly its own unit from Redis).
    group = Replicas(redis.url, 2, RateLimitConfig(requests_per_minute=60, max_wait=5), timeout=BURST_TIMEOUT)
    replicas.append(group)
    await group.start()
    a, b = group.limiters
    started = time.monotonic()
    assert all(await asyncio.gather(*(admitted(a) for _ in range(60))))
    start = time.monotonic()
    burst = start - started  # what dripped back meanwhile is there for the next calls
    assert all(await asyncio.gather(*(admitted(b) for _ in range(2))))
    waited = time.monotonic() - start
    # Two more at one a second, less what dripped back while the first 60 were taken.
    assert 2.0 - burst - 0.1 <= waited <= 3.0, (waited, burst)
    assert b.waits >= 1


async def evalsha_calls(url: str) -> int:
    """How many scripts Redis has run since it started."""
    client = Redis.from_url(url)
    try:
        stats = await client.info("commandstats")
    finally:
        await client.aclose()
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_busy_replicas_take_leases_and_the_fleet_admits_exactly_the_limit(
    redis: RedisServer, replicas: list[Replicas]
) -> None:
    """Three replicas admitting as fast as they can against 3,000 a minute (each may hold 30 ahead):
    far fewer Redis calls than admissions; never more admitted than the limit (and what dripped
    back meanwhile); and once the leases are over and given back, every unit of the minute is
    admitted by someone."""
    group = Replicas(redis.url, 3, RateLimitConfig(requests_per_minute=3_000, max_wait=0))
    replicas.append(group)
    await group.start()
    before = await evalsha_calls(redis.url)
    admitted_by = [0, 0, 0]
    started = time.monotonic()

    async def admit_until_refused(n: int) -> None:
        while await admitted(group.limiters[n]):
            admitted_by[n] += 1

    await asyncio.gather(*(admit_until_refused(n) for n in range(3)))
    first_burst = sum(admitted_by)
    scripts = await evalsha_calls(redis.url) - before
    await asyncio.sleep(LEASE + 0.1)  # every lease is over, and what was left of it given back
    await asyncio.gather(*(admit_until_refused(n) for n in range(3)))
    elapsed = time.monotonic() - started
    total = sum(admitted_by)
    dripped = math.ceil(elapsed * 3_000 / 60)  # one more unit every 20 ms
    print(
        f"\nleases: {total} admitted ({admitted_by}), {first_burst} before the leases ended, "
        f"{scripts} Redis calls for the first {first_burst}"
    )
    assert 3_000 <= total <= 3_000 + dripped
    assert scripts < first_burst / 3, (scripts, first_burst)  # most admissions asked Redis nothing
    assert all(n > 0 for n in admitted_by), admitted_by


async def test_a_pause_another_replica_saw_holds_back_calls_a_lease_would_admit(
    redis: RedisServer, replicas: list[Replicas]
) -> None:
    group = Replicas(redis.url, 2, RateLimitConfig(requests_per_minute=60_000, max_wait=0))
    replicas.append(group)
    await group.start()
    busy, seen_by = group.limiters
    for _ in range(200):  # busy enough to hold units ahead
        assert await admitted(busy)
    seen_by.pause(1.0)
    await asyncio.sleep(POLL + 0.1)  # read in the background by the busy replica
    with pytest.raises(GatewayError) as refused:
        await busy.acquire(0, None)
    assert "Retry-After" in refused.value.message


async def test_a_pause_one_replica_saw_holds_back_the_others(
    redis: RedisServer, replicas: list[Replicas]
) -> None:
    strict = Replicas(redis.url, 2, RateLimitConfig(max_wait=0))
    patient = Replicas(redis.url, 1, RateLimitConfig(max_wait=5))
    replicas += [strict, patient]
    await strict.start()
    await patient.start()
    seen_by, other = strict.limiters
    seen_by.pause(1.0)  # the provider's 429 said Retry-After: 1
    await asyncio.sleep(POLL + 0.1)  # the pause reaches Redis, and the others read it
    with pytest.raises(GatewayError) as refused:
        await other.acquire(0, None)
    assert "Retry-After" in refused.value.message
    assert refused.value.retry_after is not None
    assert 0.4 < refused.value.retry_after <= 1.0
    start = time.monotonic()
    await patient.limiters[0].acquire(0, None)  # waits the pause out
    assert 0.3 < time.monotonic() - start < 1.5


async def test_redis_down_falls_back_to_local_limits_without_hanging(
    redis: RedisServer, replicas: list[Replicas]
) -> None:
    group = Replicas(
        redis.url, 1, RateLimitConfig(requests_per_minute=5, max_wait=0), timeout=0.2, retry_interval=0.5
    )
    replicas.append(group)
    limiter, state = group.limiters[0], group.states[0]
    assert await admitted(limiter)
    redis.kill()
    start = time.monotonic()
    results = [await admitted(limiter) for _ in range(10)]
    assert time.monotonic() - start < 1.0  # one failed round trip, then local state at once
    assert sum(results) == 5  # this process's own bucket of 5
    assert limiter.refusals == 5  # counted for the metrics all the same
    assert state.failures["limits"] >= 1
    # Back: after the retry interval the shared state (a fresh Redis: no data) is used again.
    redis.start()
    await asyncio.sleep(0.6)
    assert await admitted(limiter)
    failures = state.failures["limits"]
    assert all([await admitted(limiter) for _ in range(4)])
    assert state.failures["limits"] == failures


async def test_a_hung_redis_costs_one_timeout_per_retry_interval(
    redis: RedisServer, replicas: list[Replicas]
) -> None:
    group = Replicas(
        redis.url, 1, RateLimitConfig(requests_per_minute=1000, max_wait=0), timeout=0.2, retry_interval=1.0
    )
    replicas.append(group)
    limiter = group.limiters[0]
    await group.start()
    assert await admitted(limiter)
    redis.freeze()
    try:
        start = time.monotonic()
        assert await admitted(limiter)  # waits out one timeout, then this process's own limits
        first = time.monotonic() - start
        start = time.monotonic()
        assert all([await admitted(limiter) for _ in range(20)])
        rest = time.monotonic() - start
    finally:
        redis.thaw()
    assert 0.15 <= first <= 0.5, first
    assert rest < 0.1, rest  # within the retry interval: Redis is not waited for again


async def test_redis_down_with_refuse_fails_limited_calls_unavailable(
    redis: RedisServer, replicas: list[Replicas]
) -> None:
    limited = Replicas(
        redis.url,
        1,
        RateLimitConfig(requests_per_minute=100, max_wait=0),
        timeout=0.2,
        limits_when_down="refuse",
    )
    unlimited = Replicas(redis.url, 1, RateLimitConfig(max_wait=0), timeout=0.2, limits_when_down="refuse")
    replicas += [limited, unlimited]
    redis.kill()
    with pytest.raises(GatewayError) as refused:
        await limited.limiters[0].acquire(0, None)
    assert (refused.value.code.name, refused.value.reason) == ("UNAVAILABLE", "LIMIT_STORE_UNAVAILABLE")
    assert refused.value.retryable
    await unlimited.limiters[0].acquire(0, None)  # no limit to keep: nothing to refuse for


async def test_the_redis_url_never_shows_its_password(caplog: pytest.LogCaptureFixture) -> None:
    state = RedisState(fleet("redis://:s3cret-canary@127.0.0.1:1/0", timeout=0.2))
    limiter = SharedRateLimiter("key", "k", RateLimitConfig(requests_per_minute=5), _refuse, state, "local")
    try:
        await limiter.acquire(0, None)  # nothing listens: local fallback, logged
    finally:
        await state.close()
    assert "fleet_store_unreachable" in caplog.text
    assert "s3cret-canary" not in caplog.text
    assert "127.0.0.1:1" in caplog.text


async def test_a_gateway_key_is_limited_fleet_wide_and_apart_from_other_keys(redis: RedisServer) -> None:
    states = [RedisState(fleet(redis.url)) for _ in range(2)]
    limits = RateLimitConfig(requests_per_minute=5, max_wait=0)
    try:
        team_a = [key_limiter("team-a", limits, shared_limiters(state, "local")) for state in states]
        team_b = key_limiter("team-b", limits, shared_limiters(states[0], "local"))
        assert [await admitted(team_a[n % 2]) for n in range(8)] == [True] * 5 + [False] * 3
        assert [await admitted(team_b) for _ in range(6)] == [True] * 5 + [False]
        with pytest.raises(GatewayError) as refused:
            await team_a[1].acquire(0, None)
        assert (refused.value.reason, refused.value.metadata) == ("KEY_RATE_LIMITED", {"api_key": "team-a"})
    finally:
        for state in states:
            await state.close()


async def test_three_gateway_processes_hold_a_provider_limit_together(tmp_path: Path) -> None:
    with redis_server() as redis:
        toml = (
            f'[fleet]\nredis_url = "{redis.url}"\n'
            "[providers.mock.rate_limit]\nrequests_per_minute = 60\nmax_wait = 0\n"
        )
        async with three_gateways(tmp_path, toml) as fleet:

            async def one(n: int) -> str:
                try:
                    await fleet.stubs[n % 3].Chat(chat("mock:echo"), timeout=10)
                except grpc.aio.AioRpcError as err:
                    details = error_details(err)
                    return f"{details.code.name}/{details.info.reason}"
                return "OK"

            outcomes = Counter(await asyncio.gather(*(one(n) for n in range(200))))
    assert outcomes["OK"] in (59, 60, 61), outcomes
    assert outcomes["RESOURCE_EXHAUSTED/PROVIDER_RATE_LIMITED"] == 200 - outcomes["OK"], outcomes


async def test_redis_failures_are_logged_once_and_counted_in_the_metrics(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    toml = (
        f'[fleet]\nredis_url = "{redis.url}"\ntimeout = 0.2\nretry_interval = 0.2\n'
        "[providers.mock.rate_limit]\nrequests_per_minute = 1000\n"
    )
    async with running_gateway(toml) as gw, aiohttp.ClientSession() as http:
        await gw.stub.Chat(chat("mock:echo"))
        redis.kill()
        for _ in range(3):  # served on this process's own limits meanwhile
            await gw.stub.Chat(chat("mock:echo"))
            await asyncio.sleep(0.25)
        counted, by_feature = 0.0, {}
        for _ in range(40):  # the sampler copies the count every second
            async with http.get(f"{gw.http_url}/metrics") as response:
                text = await response.text()
            # By feature: the limiter's admissions, and the background reads of the shared state.
            found = re.findall(
                r'^llm_gateway_fleet_store_failures_total\{feature="(\w+)"\} (\S+)$', text, re.M
            )
            by_feature = {feature: float(n) for feature, n in found}
            counted = sum(by_feature.values())
            if counted >= 3 and by_feature.get("limits", 0) >= 1:
                break
            await asyncio.sleep(0.1)
    assert counted >= 3  # one per retry interval in which something met Redis down
    assert by_feature.get("limits", 0) >= 1, by_feature
    assert [r.msg["event"] for r in caplog.records if isinstance(r.msg, dict)].count(
        "fleet_store_unreachable"
    ) == 1


async def test_a_retry_after_one_gateway_process_saw_pauses_the_others(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """The provider answers one replica 429 with Retry-After: 2; the other two replicas then refuse
    calls to it without sending them (their wait bound is 0) until the pause is over."""
    limited = Reply(
        status=429, headers={"Retry-After": "2"}, json_body=error_body("Slow down", "rate_limit_error")
    )
    with redis_server() as redis:
        toml = f'[fleet]\nredis_url = "{redis.url}"\n' + openai_toml(
            fake_openai.base_url, "rate_limit = { max_wait = 0 }"
        )
        async with three_gateways(tmp_path, toml) as fleet:
            first, *others = fleet.stubs
            fake_openai.script(limited)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await first.Chat(chat("openai:gpt-4o-mini"), timeout=10)
            assert error_details(caught.value).info.reason == "UPSTREAM_RATE_LIMITED"
            paused_at = time.monotonic()
            await asyncio.sleep(POLL + 0.25)  # the pause reaches Redis, and the others read it
            for stub in others:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Chat(chat("openai:gpt-4o-mini"), timeout=10)
                details = error_details(refused.value)
                assert (details.code, details.info.reason) == (
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "PROVIDER_RATE_LIMITED",
                )
                assert "Retry-After" in details.message
            assert len(fake_openai.requests) == 1  # the refused calls were never sent
            await asyncio.sleep(max(0.0, 2.1 - (time.monotonic() - paused_at)))
            reply = await others[0].Chat(chat("openai:gpt-4o-mini", "after the pause"), timeout=10)
            assert reply_text(reply.message) == "after the pause"


async def test_redis_killed_under_load_no_call_hangs_and_the_fleet_recovers(tmp_path: Path) -> None:
    """Three gateway processes under steady load; Redis is killed for 1.5 s, then started again.
    With `limits_when_down = "local"` every call is served, none waits past one Redis timeout, and
    each process goes back to the shared state."""
    durations: list[float] = []
    outcomes: Counter[str] = Counter()
    with redis_server() as redis:
        toml = (
            f'[fleet]\nredis_url = "{redis.url}"\ntimeout = 0.2\nretry_interval = 0.5\n'
            "[providers.mock.rate_limit]\nrequests_per_minute = 100000\n"
        )
        async with three_gateways(tmp_path, toml) as fleet:
            stop_at = time.monotonic() + 4.0

            async def caller(stub: gateway_service_pb2_grpc.GatewayServiceAsyncStub) -> None:
                while time.monotonic() < stop_at:
                    start = time.monotonic()
                    try:
                        await stub.Chat(chat("mock:echo"), timeout=2)
                        outcomes["OK"] += 1
                    except grpc.aio.AioRpcError as err:
                        outcomes[err.code().name] += 1
                    durations.append(time.monotonic() - start)

            async def outage() -> None:
                await asyncio.sleep(1.0)
                redis.kill()
                await asyncio.sleep(1.5)
                redis.start()

            await asyncio.gather(outage(), *(caller(fleet.stubs[n % 3]) for n in range(9)))
            await asyncio.sleep(0.6)  # past the retry interval: each process tries Redis again
            for stub in fleet.stubs:
                await stub.Chat(chat("mock:echo"), timeout=2)
            logs = [[line.get("event") for line in g.log_lines()] for g in fleet.gateways]
    slowest = max(durations) * 1000
    print(f"\nRedis killed for 1.5 s under load: {dict(outcomes)}, slowest call {slowest:.0f} ms")
    assert set(outcomes) == {"OK"}, outcomes
    assert outcomes["OK"] > 100
    assert max(durations) < 1.0, max(durations)  # one 0.2 s timeout at most, never the 2 s deadline
    for events in logs:
        assert events.count("fleet_store_unreachable") >= 1
        assert events.index("fleet_store_recovered") > events.index("fleet_store_unreachable")


async def test_three_gateway_processes_share_one_circuit_and_send_one_probe(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    """Three failures on one replica open the provider's circuit on all three; once the reset
    timeout is over, 150 callers spread over the three send exactly one probe; its success closes
    the circuit everywhere."""
    overloaded = Reply(status=529, json_body=error_body("Overloaded", "overloaded_error"))
    breaker = "circuit_breaker = { failure_threshold = 3, reset_timeout = 1.5 }"
    with redis_server() as redis:
        toml = f'[fleet]\nredis_url = "{redis.url}"\n' + openai_toml(fake_openai.base_url, breaker)
        async with three_gateways(tmp_path, toml) as fleet:
            first, *others = fleet.stubs
            fake_openai.script(overloaded, overloaded, overloaded)
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await first.Chat(chat("openai:gpt-4o-mini"), timeout=10)
                assert error_details(failed.value).info.reason == "UPSTREAM_UNAVAILABLE"
            opened_at = time.monotonic()
            await asyncio.sleep(POLL + 0.25)  # the others read the shared circuit
            for stub in others:
                with pytest.raises(grpc.aio.AioRpcError) as refused:
                    await stub.Chat(chat("openai:gpt-4o-mini"), timeout=10)
                assert error_details(refused.value).info.reason == "CIRCUIT_OPEN"
            for gateway in fleet.gateways:  # every replica's health follows the shared circuit
                async with grpc.aio.insecure_channel(gateway.address) as channel:
                    health = health_pb2_grpc.HealthStub(channel)
                    reply = await health.Check(
                        health_pb2.HealthCheckRequest(service="llmgateway.v1.provider.openai")
                    )
                    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
            assert len(fake_openai.requests) == 3

            await asyncio.sleep(max(0.0, 1.7 - (time.monotonic() - opened_at)))  # past the reset timeout
            fake_openai.script(Reply(delay=1.0, json_body=completion("probe ok")))
            results = await asyncio.gather(
                *(fleet.stubs[n % 3].Chat(chat("openai:gpt-4o-mini"), timeout=10) for n in range(150)),
                return_exceptions=True,
            )
            served = [r for r in results if isinstance(r, chat_pb2.ChatResponse)]
            refused_reasons = Counter(
                error_details(r).info.reason for r in results if isinstance(r, grpc.aio.AioRpcError)
            )
            assert len(served) == 1, refused_reasons
            assert refused_reasons == {"CIRCUIT_OPEN": 149}
            assert len(fake_openai.requests) == 4  # three failures and the fleet's one probe

            await asyncio.sleep(POLL + 0.25)  # the others read that the circuit closed
            for stub in fleet.stubs:
                reply = await stub.Chat(chat("openai:gpt-4o-mini", "closed again"), timeout=10)
                assert reply_text(reply.message) == "closed again"


async def test_a_shared_value_that_is_not_a_gateways_is_skipped_and_watching_goes_on(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    state = RedisState(fleet(redis.url))
    paused: list[float] = []
    state.watch_pause("llmgw:{provider:up}:pause", paused.append)
    state.watch_pause("llmgw:{provider:other}:pause", paused.append)
    try:
        await state.client.set("llmgw:{provider:up}:pause", "not a number")
        await state.start(SCRIPTS)
        await asyncio.sleep(POLL + 0.1)
        (seconds, micros) = await state.client.time()
        await state.client.set("llmgw:{provider:other}:pause", str(seconds * 1_000_000 + micros + 5_000_000))
        await asyncio.sleep(POLL + 0.1)
    finally:
        await state.close()
    assert paused  # the second key still read after the first could not be
    assert 4.0 < paused[-1] <= 5.0
    assert "fleet_state_unreadable" in caplog.text


async def test_closing_finishes_the_writes_under_way_and_ignores_later_ones(redis: RedisServer) -> None:
    state = RedisState(fleet(redis.url))
    await state.start(SCRIPTS)
    limiter = SharedRateLimiter("provider", "up", RateLimitConfig(max_wait=0), _refuse, state, "local")
    limiter.pause(5.0)  # told to the fleet in the background
    await state.close()  # right away: the pause still reaches Redis
    state.write_behind("limits", lambda: state.client.set("late", "1"))  # after close: nothing
    reader = Redis.from_url(redis.url)
    try:
        assert await reader.get(f"{state.prefix}:{{provider:up}}:pause") is not None
        assert await reader.get("late") is None
    finally:
        await reader.aclose()


async def test_closing_gives_up_on_state_reads_that_do_not_stop(
    redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A read stuck in the Redis client past a cancel (as redis-py's was once seen to be, holding a
    test's teardown for minutes) does not hold the close up: it is given up after 2 s."""
    state = RedisState(fleet(redis.url))
    state.watch_pause("llmgw:{provider:up}:pause", lambda _: None)
    stuck = asyncio.Event()
    released = False

    async def deaf(feature: str, operation: object) -> object:
        stuck.set()
        while True:  # a cancel is swallowed, as a driver's cleanup waiting on its socket would
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if released:
                    raise

    await state.start([])
    state.call = deaf  # type: ignore[method-assign, assignment]  # the next background read sticks
    await stuck.wait()
    poller = state._poller
    assert poller is not None
    started = time.monotonic()
    await state.close()
    took = time.monotonic() - started
    released = True  # the read gives way now, and ends before the test does
    poller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await poller
    assert took < 3.0
    assert "fleet_store_close_incomplete" in caplog.text
