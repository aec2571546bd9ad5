"""Prometheus metrics: what a scrape of `GET /metrics` says after calls through both doors, that
the number of series stays bounded whatever callers send, that no secret reaches the text, and
that a real Prometheus server scraping a two-worker gateway counts every call exactly once."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmgateway.v1 import chat_pb2
from tests.conftest import (
    OPENAI_TEST_KEY,
    RunningGateway,
    chat,
    free_port,
    gateway_process,
    openai_toml,
    running_gateway,
)
from tests.fakes.openai import FakeOpenAI, Reply, error_body

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "llm-gateway.json"
KEY = "metrics-canary-key-7f3a9c21d4e8b605"
KEYS = f'[[auth.keys]]\nname = "ops"\nkey = "{KEY}"\n'
AUTH = {"authorization": f"Bearer {KEY}"}


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """(sample name, labels) -> value, from the Prometheus text."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return found


def total(found: dict[tuple[str, frozenset[tuple[str, str]]], float], metric: str, /, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (sample, have), value in found.items() if sample == metric and wanted <= have)


async def scrape(http: aiohttp.ClientSession, gw: RunningGateway) -> str:
    async with http.get(f"{gw.http_url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return await response.text()


@pytest.fixture
async def gw(fake_openai: FakeOpenAI) -> AsyncIterator[RunningGateway]:
    toml = (
        KEYS
        + openai_toml(fake_openai.base_url)
        + '[providers.backup]\nkind = "mock"\n[providers.backup.models.echo]\n'
        + 'price = { input_per_million = "1", output_per_million = "2" }\n'
    )
    async with running_gateway(toml) as running:
        yield running


async def test_a_scrape_counts_calls_tokens_cost_and_fallbacks_by_door(
    gw: RunningGateway, fake_openai: FakeOpenAI, log_lines: list[str]
) -> None:
    url = f"{gw.http_url}/v1/chat/completions"
    told_cost = Decimal(0)
    prompt = completion = 0
    async with aiohttp.ClientSession() as http:
        for i in range(3):
            async with http.post(
                url,
                json={"model": "mock:echo", "messages": [{"role": "user", "content": f"hello {i}"}]},
                headers=AUTH,
            ) as response:
                reply = await response.json()
                told_cost += Decimal(reply["cost"]["total_cost"])
                prompt += reply["usage"]["prompt_tokens"]
                completion += reply["usage"]["completion_tokens"]
        grpc_reply = await gw.stub.Chat(chat("mock:echo", "over grpc"), metadata=tuple(AUTH.items()))
        told_cost += Decimal(grpc_reply.cost.total)
        prompt += grpc_reply.usage.prompt_tokens
        completion += grpc_reply.usage.completion_tokens
        # A fallback: the fake OpenAI fails, the backup model serves.
        fake_openai.script(Reply(status=503, json_body=error_body("Overloaded", "server_error")))
        fell_back = await gw.stub.Chat(
            chat_pb2.ChatRequest(
                model="openai:gpt-4o-mini",
                fallback_models=["backup:echo"],
                messages=chat("x", "fall back").messages,
            ),
            metadata=tuple(AUTH.items()),
        )
        assert fell_back.routing.fallback_used
        told_cost += Decimal(fell_back.cost.total)
        prompt += fell_back.usage.prompt_tokens
        completion += fell_back.usage.completion_tokens
        async with http.post(
            url, json={"model": "mock:nope", "messages": [{"role": "user", "content": "x"}]}, headers=AUTH
        ):
            pass
        text = await scrape(http, gw)
        found = samples(text)

    calls = "llm_gateway_calls_total"
    assert total(found, calls, door="http", route="/v1/chat/completions", status="OK", key="ops") == 3
    assert total(found, calls, door="grpc", route="/llmgateway.v1.GatewayService/Chat", status="OK") == 2
    assert total(found, calls, door="http", status="NOT_FOUND", reason="MODEL_NOT_FOUND") == 1
    assert total(found, "llm_gateway_tokens_total", type="prompt") == prompt
    assert total(found, "llm_gateway_tokens_total", type="completion") == completion
    assert total(found, "llm_gateway_cost_usd_total") == pytest.approx(float(told_cost), rel=1e-9)
    assert total(found, "llm_gateway_fallbacks_total", provider="backup", model="backup:echo") == 1
    assert (
        total(
            found,
            "llm_gateway_upstream_duration_seconds_count",
            provider="openai",
            outcome="UPSTREAM_UNAVAILABLE",
        )
        == 1
    )
    assert total(found, "llm_gateway_upstream_duration_seconds_count", outcome="OK") == 5
    assert total(found, "llm_gateway_call_duration_seconds_count") == 6  # refusals too
    assert total(found, "llm_gateway_overhead_seconds_count") == 5
    assert total(found, "llm_gateway_calls_in_flight") == 0
    # The canaries: the gateway key and the upstream key appear in no metric and no log line.
    for secret in (KEY, OPENAI_TEST_KEY):
        assert secret not in text
        assert not [line for line in log_lines if secret in line]
    assert any('"api_key":"ops"' in line for line in log_lines)  # the key by its name only


async def test_streams_count_time_to_first_token_and_calls_in_flight() -> None:
    async with (
        running_gateway(KEYS + "[providers.mock]\nchunk_delay = 0.1\n") as gw,
        aiohttp.ClientSession() as http,
    ):
        url = f"{gw.http_url}/v1/chat/completions"
        body = {"model": "mock:echo", "stream": True, "messages": [{"role": "user", "content": "a b c d"}]}
        async with http.post(url, json=body, headers=AUTH) as response:
            await response.content.readuntil(b"\n\n")
            during = samples(await scrape(http, gw))
            await response.read()
        after = samples(await scrape(http, gw))
    # The scrape itself is not a gateway call: only the stream is in flight.
    assert total(during, "llm_gateway_calls_in_flight", door="http") == 1
    assert total(after, "llm_gateway_calls_in_flight") == 0
    assert total(after, "llm_gateway_time_to_first_token_seconds_count", model="mock:echo") == 1
    assert total(after, "llm_gateway_calls_total", operation="ChatStream", status="OK") == 1


async def test_the_series_stay_bounded_whatever_models_and_users_callers_send(
    fake_openai: FakeOpenAI,
) -> None:
    """10,000 calls naming random models (mock ones refused, OpenAI ones served as unlisted
    models) for random users: every model the catalog does not list is `other`, and no user id
    becomes a label, so the series after 10,000 calls are those after the first 200."""
    rng = random.Random(7)
    async with (
        running_gateway(KEYS + openai_toml(fake_openai.base_url)) as gw,
        aiohttp.ClientSession() as http,
    ):
        url = f"{gw.http_url}/v1/chat/completions"
        gate = asyncio.Semaphore(32)

        async def call() -> None:
            provider = rng.choice(["mock", "openai"])
            body = {
                "model": f"{provider}:model-{rng.getrandbits(40):x}",
                "user": f"user-{rng.getrandbits(40):x}",
                "messages": [{"role": "user", "content": "hi"}],
            }
            async with gate, http.post(url, json=body, headers=AUTH) as response:
                assert response.status in (200, 404), await response.text()

        await asyncio.gather(*(call() for _ in range(200)))
        early = set(samples(await scrape(http, gw)))
        await asyncio.gather(*(call() for _ in range(9_800)))
        text = await scrape(http, gw)
    late = samples(text)
    series = {key for key in late if not key[0].endswith(("_created",))}
    assert series == {key for key in early if not key[0].endswith(("_created",))}
    assert total(late, "llm_gateway_calls_total") == 10_000
    assert total(late, "llm_gateway_calls_total", model="other", status="OK") > 4_000
    assert "user-" not in text
    assert "model-" not in text
    assert len(series) < 200


async def test_prometheus_scraping_two_workers_counts_every_call_once(tmp_path: Path) -> None:
    """Each scrape reaches one worker or the other (they share the port): every one of them must
    say the whole set's count."""
    prometheus = shutil.which("prometheus")
    assert prometheus is not None, "scripts/install-prometheus.sh (make test-python) installs it"
    http_port, web_port = free_port(), free_port()
    calls = 300
    async with gateway_process(tmp_path, KEYS, "--workers", "2", "--http-port", str(http_port)) as gateway:
        url = f"http://127.0.0.1:{http_port}/v1/chat/completions"
        body = {"model": "mock:echo", "messages": [{"role": "user", "content": "count me"}]}
        gate = asyncio.Semaphore(16)
        # A new connection per call, so that SO_REUSEPORT spreads the calls over both workers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:

            async def call() -> str:
                async with gate, http.post(url, json=body, headers=AUTH) as response:
                    assert response.status == 200
                    return str((await response.json())["id"])

            ids = await asyncio.gather(*(call() for _ in range(calls)))
        assert len(set(ids)) == calls
        # Both workers served some: each scrape that reaches one must count the other's too.
        served_by = [line["worker"] for line in await gateway.access_lines(calls)]
        assert len(served_by) == calls
        assert min(served_by.count(0), served_by.count(1)) > calls // 10

        (tmp_path / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            f"rule_files: ['{ALERTS}']\n"
            "scrape_configs:\n  - job_name: gateway\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{http_port}']\n"
        )
        log = tmp_path / "prometheus.log"
        with log.open("w") as errors:
            server = await asyncio.create_subprocess_exec(
                prometheus,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{web_port}",
                stdout=subprocess.DEVNULL,
                stderr=errors,
            )
        try:
            counted = 'sum(llm_gateway_calls_total{route="/v1/chat/completions",status="OK"})'
            async with aiohttp.ClientSession() as http:

                async def query(promql: str) -> float | None:
                    try:
                        async with http.get(
                            f"http://127.0.0.1:{web_port}/api/v1/query", params={"query": promql}
                        ) as response:
                            result = (await response.json())["data"]["result"]
                    except aiohttp.ClientError:
                        return None  # not listening yet
                    return float(result[0]["value"][1]) if result else None

                scrapes = None
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and (scrapes or 0) < 6:
                    await asyncio.sleep(0.5)
                    scrapes = await query('count_over_time(up{job="gateway"}[1m])')
                assert scrapes is not None, log.read_text()[-2000:]
                assert scrapes >= 6
                # The deploy/ rules loaded and evaluate; every dashboard query runs.
                async with http.get(f"http://127.0.0.1:{web_port}/api/v1/rules") as response:
                    groups = (await response.json())["data"]["groups"]
                rules = [rule for group in groups for rule in group["rules"]]
                assert len(rules) == 5
                assert all(rule["health"] == "ok" for rule in rules), rules
                for panel in json.loads(DASHBOARD.read_text())["panels"]:
                    for target in panel["targets"]:
                        promql = target["expr"].replace("$__rate_interval", "1m")
                        async with http.get(
                            f"http://127.0.0.1:{web_port}/api/v1/query", params={"query": promql}
                        ) as response:
                            answer = await response.json()
                        assert answer["status"] == "success", (panel["title"], answer)
                lowest = await query(f"min_over_time({counted}[1m:1s])")
                highest = await query(f"max_over_time({counted}[1m:1s])")
                now = await query(counted)
        finally:
            server.terminate()
            await server.wait()
    assert (lowest, highest, now) == (calls, calls, calls)


async def test_circuits_rate_limits_budgets_and_the_ledger_are_sampled() -> None:
    closed = free_port()
    toml = (
        KEYS.replace('key = "', 'rate_limit = { requests_per_minute = 120, max_wait = 5 }\nkey = "')
        + f"""
[providers.down]
kind = "openai"
base_url = "http://127.0.0.1:{closed}/v1"
api_key = "{OPENAI_TEST_KEY}"
retry = {{ max_retries = 0 }}
circuit_breaker = {{ failure_threshold = 1, reset_timeout = 600 }}

[providers.paced]
kind = "mock"
rate_limit = {{ requests_per_minute = 1, max_wait = 0 }}
[providers.paced.models.echo]
price = {{ input_per_million = "1", output_per_million = "1" }}

[[budgets.limits]]
id = "team"
scope = "key:ops"
limit_usd = "5"
period = "day"
"""
    )
    async with running_gateway(toml) as gw, aiohttp.ClientSession() as http:
        url = f"{gw.http_url}/v1/chat/completions"

        async def call(model: str) -> dict[str, object]:
            body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
            async with http.post(url, json=body, headers=AUTH) as response:
                return dict(await response.json())

        spent = Decimal(0)
        # The key's 120 requests a minute may go at once, then two a second: the last ones wait.
        for model in ["mock:echo"] * 123 + ["paced:echo", "paced:echo", "down:gpt-4o-mini"]:
            reply = await call(model)
            if "cost" in reply:
                spent += Decimal(reply["cost"]["total_cost"])  # type: ignore[index]
        runtime = gw.server.runtime
        assert runtime.sampler is not None
        assert runtime.ledger is not None
        assert runtime.budgets is not None
        await runtime.budgets.flush()  # the calls' settlements
        runtime.sampler.sample()
        await runtime.sampler.sample_budgets()
        found = samples(await scrape(http, gw))
    assert total(found, "llm_gateway_circuit_state", provider="down") == 2
    assert total(found, "llm_gateway_circuit_state", provider="mock") == 0
    assert total(found, "llm_gateway_rate_limit_refusals_total", limit="provider", name="paced") == 1
    # Six calls past the burst: however long the burst took (it refills two a second), some waited.
    assert total(found, "llm_gateway_rate_limit_waits_total", limit="key", name="ops") >= 1
    assert total(found, "llm_gateway_rate_limit_wait_seconds_total", limit="key", name="ops") > 0.1
    assert total(found, "llm_gateway_budget_limit_usd", budget="team") == 5
    assert total(found, "llm_gateway_budget_remaining_usd", budget="team") == pytest.approx(float(5 - spent))
    assert ("llm_gateway_ledger_queue_depth", frozenset()) in found
    assert total(found, "llm_gateway_ledger_dropped_records_total") == 0


async def test_metrics_on_a_port_of_their_own_and_off() -> None:
    async with (
        running_gateway(KEYS + '[metrics]\nport = 0\nhost = "127.0.0.1"\n') as gw,
        aiohttp.ClientSession() as http,
    ):
        assert gw.server.metrics is not None
        await gw.stub.Chat(chat("mock:echo", "count me"), metadata=tuple(AUTH.items()))
        async with http.get(f"http://127.0.0.1:{gw.server.metrics.port}/metrics") as response:
            found = samples(await response.text())
        assert total(found, "llm_gateway_calls_total", door="grpc", status="OK") == 1
        async with http.get(f"{gw.http_url}/metrics") as response:
            assert response.status == 404  # not on the API door when it has a port of its own
    async with running_gateway("[metrics]\nenabled = false\n") as gw, aiohttp.ClientSession() as http:
        assert gw.server.runtime.metrics is None
        async with http.get(f"{gw.http_url}/metrics") as response:
            assert response.status == 404
