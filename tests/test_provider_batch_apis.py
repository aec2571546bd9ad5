"""OpenAI's and Anthropic's batch APIs (`BatchApi`) against the fakes: each line goes up as the
body the live endpoint would get, under its line id; the job is followed until it ends; every
answer is parsed as a live reply, and every error maps as a live call's error for the same upstream
answer; expiry, cancelling and refusals; no error message carries the provider's key."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from llm_gateway.catalog import Catalog
from llm_gateway.config import load_config
from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.domain.messages import ChatRequest, Message, Role, TextPart
from llm_gateway.providers import enabled_providers
from llm_gateway.providers.anthropic import AnthropicProvider
from llm_gateway.providers.base import UpstreamCall
from llm_gateway.providers.batch_api import BatchApi, BatchLine, LineResult
from llm_gateway.providers.http import create_http_client
from llm_gateway.providers.openai import OpenAIProvider
from llm_gateway.providers.registry import build_providers
from tests.fakes import anthropic as fa
from tests.fakes import openai as fo

OPENAI_KEY = "sk-test-batches-0123456789abcdefSECRET"
ANTHROPIC_KEY = "sk-ant-test-batches-0123456789abcdefSECRET"
TEXTS = {"item-1": "Hello there, batch", "item-2": "Second request in the batch", "item-3": "Third"}
LABEL = "batch-0001"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    session = create_http_client()
    try:
        yield session
    finally:
        await session.close()


def catalog_and_adapters(tmp_path: Path, toml: str, http: aiohttp.ClientSession) -> tuple[Catalog, Any]:
    """The catalog and adapters the gateway would build from `toml`."""
    path = tmp_path / "gateway.toml"
    path.write_text(toml)
    config = load_config(path, {})
    enabled = enabled_providers(config)
    return Catalog(config, enabled), build_providers(enabled, http, token_counters=False)


def openai_adapter(
    tmp_path: Path, http: aiohttp.ClientSession, base_url: str, extra: str = ""
) -> tuple[OpenAIProvider, Catalog]:
    toml = f'[providers.openai]\nbase_url = "{base_url}"\napi_key = "{OPENAI_KEY}"\n{extra}'
    catalog, adapters = catalog_and_adapters(tmp_path, toml, http)
    adapter = adapters["openai"]
    assert isinstance(adapter, OpenAIProvider)
    return adapter, catalog


def anthropic_adapter(
    tmp_path: Path, http: aiohttp.ClientSession, base_url: str
) -> tuple[AnthropicProvider, Catalog]:
    toml = f'[providers.anthropic]\nbase_url = "{base_url}"\napi_key = "{ANTHROPIC_KEY}"\n'
    catalog, adapters = catalog_and_adapters(tmp_path, toml, http)
    adapter = adapters["anthropic"]
    assert isinstance(adapter, AnthropicProvider)
    return adapter, catalog


def calls(catalog: Catalog, provider: str, model: str, texts: dict[str, str]) -> dict[str, UpstreamCall]:
    spec = catalog.get(provider, model)
    assert spec is not None
    return {
        line_id: UpstreamCall(
            ChatRequest(model=spec.id, messages=(Message(Role.USER, (TextPart(text),)),)), spec
        )
        for line_id, text in texts.items()
    }


def lines(api: BatchApi, by_id: dict[str, UpstreamCall]) -> list[BatchLine]:
    return [BatchLine(line_id, api.body(call)) for line_id, call in by_id.items()]


async def until_ended(api: BatchApi, upstream_id: str) -> list[str]:
    """The statuses the job went through, looked at until it ended."""
    seen: list[str] = []
    for _ in range(10):
        progress = await api.progress(upstream_id)
        seen.append(progress.status)
        if progress.ended:
            return seen
    raise AssertionError(f"{upstream_id} did not end: {seen}")


def by_line(results: Sequence[LineResult]) -> dict[str, LineResult]:
    found = {result.line_id: result for result in results}
    assert len(found) == len(results)
    return found


def assert_answered(api: BatchApi, by_id: dict[str, UpstreamCall], results: Sequence[LineResult]) -> None:
    """Every line answered with its text echoed, parsed by the adapter, usage as the fake counts it."""
    found = by_line(results)
    assert sorted(found) == sorted(TEXTS)
    for line_id, text in TEXTS.items():
        assert found[line_id].error is None
        completion = api.parse(by_id[line_id], found[line_id].reply)
        assert completion.text == text
        assert completion.usage is not None
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
            10,
            len(text) // 4 or 1,
        )


def error_of(result: LineResult) -> GatewayError:
    assert result.reply is None
    assert result.error is not None
    return result.error


def same_mapping(batch: GatewayError, live: GatewayError) -> None:
    """The line's error is the live call's, but for the model the context names."""
    assert (batch.code, batch.reason, batch.retryable) == (live.code, live.reason, live.retryable)
    for key in ("upstream_status", "upstream_code", "provider"):
        assert batch.metadata.get(key) == live.metadata.get(key)


@asynccontextmanager
async def refusing(status: int, body: dict[str, Any]) -> AsyncIterator[str]:
    """A server answering every request with `status` and `body`; its base URL."""

    async def answer(request: web.Request) -> web.Response:
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


# --- OpenAI -------------------------------------------------------------------------------------


async def test_openai_lines_go_up_as_live_bodies_and_come_back_parsed(
    tmp_path: Path, http: aiohttp.ClientSession, fake_openai: fo.FakeOpenAI
) -> None:
    adapter, catalog = openai_adapter(tmp_path, http, fake_openai.base_url)
    api: BatchApi = adapter.batch_api()
    by_id = calls(catalog, "openai", "gpt-4o-mini", TEXTS)
    batch_lines = lines(api, by_id)
    assert [line.body for line in batch_lines] == [adapter._body(c, stream=False) for c in by_id.values()]

    upstream_id = await api.submit(batch_lines, label=LABEL)
    upload, create = fake_openai.requests
    assert (upload.method, upload.path) == ("POST", "/v1/files")
    assert upload.body == {
        "purpose": "batch",
        "filename": f"{LABEL}.jsonl",
        "lines": [
            {"custom_id": line.line_id, "method": "POST", "url": "/v1/chat/completions", "body": line.body}
            for line in batch_lines
        ],
    }
    assert upload.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert upload.headers["content-type"].startswith("multipart/form-data")
    assert (create.method, create.path) == ("POST", "/v1/batches")
    assert create.body == {
        "input_file_id": fake_openai.batches[upstream_id].batch["input_file_id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        "metadata": {"gateway_batch": LABEL},
    }
    assert fake_openai.batches[upstream_id].batch["metadata"] == {"gateway_batch": LABEL}

    assert await until_ended(api, upstream_id) == ["in_progress", "completed"]
    assert_answered(api, by_id, await api.results(upstream_id))
    retrieve = fake_openai.requests[2]
    assert (retrieve.method, retrieve.path) == ("GET", f"/v1/batches/{upstream_id}")
    assert retrieve.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert "application/json" not in retrieve.headers.get("content-type", "")


@pytest.mark.parametrize(
    "reply",
    [
        fo.Reply(status=400, json_body=fo.error_body("maximum context length", "invalid_request_error")),
        fo.Reply(
            status=429, json_body=fo.error_body("Rate limit reached", "requests", "rate_limit_exceeded")
        ),
        fo.Reply(
            status=429, json_body=fo.error_body("Out of quota", "insufficient_quota", "insufficient_quota")
        ),
    ],
    ids=["400", "429", "429_quota"],
)
async def test_an_openai_line_answered_with_an_error_maps_as_the_live_call_does(
    tmp_path: Path, http: aiohttp.ClientSession, fake_openai: fo.FakeOpenAI, reply: fo.Reply
) -> None:
    adapter, catalog = openai_adapter(tmp_path, http, fake_openai.base_url)
    api = adapter.batch_api()
    by_id = calls(catalog, "openai", "gpt-4o-mini", TEXTS)
    fake_openai.batch_replies["item-2"] = reply
    upstream_id = await api.submit(lines(api, by_id), label=LABEL)
    await until_ended(api, upstream_id)
    results = by_line(await api.results(upstream_id))

    fake_openai.script(reply)
    with pytest.raises(GatewayError) as live:
        await adapter.chat(by_id["item-2"])
    same_mapping(error_of(results["item-2"]), live.value)
    assert results["item-1"].error is None
    assert results["item-3"].error is None


async def test_openai_lines_of_an_expired_batch_are_deadline_exceeded(
    tmp_path: Path, http: aiohttp.ClientSession, fake_openai: fo.FakeOpenAI
) -> None:
    adapter, catalog = openai_adapter(tmp_path, http, fake_openai.base_url)
    api = adapter.batch_api()
    upstream_id = await api.submit(lines(api, calls(catalog, "openai", "gpt-4o-mini", TEXTS)), label=LABEL)
    progress = await api.progress(upstream_id)
    assert (progress.status, progress.ended) == ("in_progress", False)
    fake_openai.expire_batch(upstream_id)
    assert await until_ended(api, upstream_id) == ["expired"]
    results = by_line(await api.results(upstream_id))
    assert sorted(results) == sorted(TEXTS)
    for result in results.values():
        error = error_of(result)
        assert (error.code, error.reason) == (Code.DEADLINE_EXCEEDED, "PROVIDER_BATCH_EXPIRED")
        assert error.metadata["upstream_code"] == "batch_expired"


async def test_cancelling_an_openai_batch_reaches_openai_and_its_lines_are_cancelled(
    tmp_path: Path, http: aiohttp.ClientSession, fake_openai: fo.FakeOpenAI
) -> None:
    adapter, catalog = openai_adapter(tmp_path, http, fake_openai.base_url)
    api = adapter.batch_api()
    upstream_id = await api.submit(lines(api, calls(catalog, "openai", "gpt-4o-mini", TEXTS)), label=LABEL)
    await api.cancel(upstream_id)
    cancel = fake_openai.requests[-1]
    assert (cancel.method, cancel.path) == ("POST", f"/v1/batches/{upstream_id}/cancel")
    assert cancel.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert await until_ended(api, upstream_id) == ["cancelled"]
    results = by_line(await api.results(upstream_id))
    assert {(e.code, e.reason) for e in map(error_of, results.values())} == {
        (Code.CANCELLED, "PROVIDER_BATCH_CANCELLED")
    }
    await api.cancel(upstream_id)  # cancelled already: nothing to do


async def test_cancelling_a_completed_openai_batch_changes_nothing(
    tmp_path: Path, http: aiohttp.ClientSession, fake_openai: fo.FakeOpenAI
) -> None:
    adapter, catalog = openai_adapter(tmp_path, http, fake_openai.base_url)
    api = adapter.batch_api()
    upstream_id = await api.submit(lines(api, calls(catalog, "openai", "gpt-4o-mini", TEXTS)), label=LABEL)
    await until_ended(api, upstream_id)
    await api.cancel(upstream_id)  # OpenAI answers 400; the batch has ended, so that is no error
    assert len(await api.results(upstream_id)) == 3
    with pytest.raises(GatewayError) as unknown:
        await api.cancel("batch_unknown")
    assert unknown.value.code == Code.NOT_FOUND


async def test_an_openai_batch_refused_as_a_whole_ends_failed_without_results(
    tmp_path: Path, http: aiohttp.ClientSession, fake_openai: fo.FakeOpenAI
) -> None:
    adapter, catalog = openai_adapter(tmp_path, http, fake_openai.base_url)
    api = adapter.batch_api()
    upstream_id = await api.submit(lines(api, calls(catalog, "openai", "gpt-4o-mini", TEXTS)), label=LABEL)
    fake_openai.fail_batch(upstream_id)
    progress = await api.progress(upstream_id)
    assert (progress.status, progress.ended) == ("failed", True)
    assert await api.results(upstream_id) == []


async def test_an_unreadable_openai_output_file_is_a_bad_response(
    tmp_path: Path, http: aiohttp.ClientSession, fake_openai: fo.FakeOpenAI
) -> None:
    adapter, catalog = openai_adapter(tmp_path, http, fake_openai.base_url)
    api = adapter.batch_api()
    by_id = calls(catalog, "openai", "gpt-4o-mini", TEXTS)
    upstream_id = await api.submit(lines(api, by_id), label=LABEL)
    await until_ended(api, upstream_id)
    fake_openai.files[fake_openai.batches[upstream_id].batch["output_file_id"]].content = b"{not json\n"
    with pytest.raises(GatewayError) as bad:
        await api.results(upstream_id)
    assert (bad.value.code, bad.value.reason) == (Code.UNAVAILABLE, "UPSTREAM_BAD_RESPONSE")
    with pytest.raises(GatewayError) as unparsed:
        api.parse(by_id["item-1"], {"choices": "none"})
    assert unparsed.value.reason == "UPSTREAM_BAD_RESPONSE"


async def test_openai_refuses_calls_it_would_send_to_the_responses_api(
    tmp_path: Path, http: aiohttp.ClientSession, fake_openai: fo.FakeOpenAI
) -> None:
    extra = '[providers.openai.models."gpt-4.1"]\napi = "responses"\n'
    adapter, catalog = openai_adapter(tmp_path, http, fake_openai.base_url, extra)
    api = adapter.batch_api()
    (chat,) = calls(catalog, "openai", "gpt-4o-mini", {"a": "A"}).values()
    (configured,) = calls(catalog, "openai", "gpt-4.1", {"a": "A"}).values()
    assert adapter.uses_responses(configured)
    assert api.refuses(chat) == ""
    assert "Responses API" in api.refuses(configured)


# --- Anthropic ----------------------------------------------------------------------------------


async def test_anthropic_lines_go_up_as_live_bodies_and_come_back_parsed(
    tmp_path: Path, http: aiohttp.ClientSession, fake_anthropic: fa.FakeAnthropic
) -> None:
    adapter, catalog = anthropic_adapter(tmp_path, http, fake_anthropic.base_url)
    api: BatchApi = adapter.batch_api()
    by_id = calls(catalog, "anthropic", "claude-haiku-4-5", TEXTS)
    batch_lines = lines(api, by_id)
    assert all(api.refuses(call) == "" for call in by_id.values())
    assert [line.body for line in batch_lines] == [adapter._body(c, stream=False) for c in by_id.values()]

    upstream_id = await api.submit(batch_lines, label=LABEL)
    (create,) = fake_anthropic.requests
    assert (create.method, create.path) == ("POST", "/v1/messages/batches")
    assert create.body == {
        "requests": [{"custom_id": line.line_id, "params": line.body} for line in batch_lines]
    }
    assert create.headers["x-api-key"] == ANTHROPIC_KEY
    assert create.headers["anthropic-version"]

    assert await until_ended(api, upstream_id) == ["in_progress", "ended"]
    assert_answered(api, by_id, await api.results(upstream_id))
    fetch = fake_anthropic.requests[-1]
    assert (fetch.method, fetch.path) == ("GET", f"/v1/messages/batches/{upstream_id}/results")
    assert fetch.headers["x-api-key"] == ANTHROPIC_KEY
    assert fetch.headers["anthropic-version"] == create.headers["anthropic-version"]


@pytest.mark.parametrize(
    "kind",
    ["invalid_request_error", "rate_limit_error", "overloaded_error", "permission_error", "billing_error"],
)
async def test_an_errored_anthropic_request_maps_as_the_live_call_does(
    tmp_path: Path, http: aiohttp.ClientSession, fake_anthropic: fa.FakeAnthropic, kind: str
) -> None:
    adapter, catalog = anthropic_adapter(tmp_path, http, fake_anthropic.base_url)
    api = adapter.batch_api()
    by_id = calls(catalog, "anthropic", "claude-haiku-4-5", TEXTS)
    fake_anthropic.batch_replies["item-3"] = fa.error_reply(kind, "no can do")
    upstream_id = await api.submit(lines(api, by_id), label=LABEL)
    await until_ended(api, upstream_id)
    results = by_line(await api.results(upstream_id))

    fake_anthropic.script(fa.error_reply(kind, "no can do"))
    with pytest.raises(GatewayError) as live:
        await adapter.chat(by_id["item-3"])
    same_mapping(error_of(results["item-3"]), live.value)
    assert results["item-1"].error is None


async def test_anthropic_requests_of_an_expired_batch_are_deadline_exceeded(
    tmp_path: Path, http: aiohttp.ClientSession, fake_anthropic: fa.FakeAnthropic
) -> None:
    adapter, catalog = anthropic_adapter(tmp_path, http, fake_anthropic.base_url)
    api = adapter.batch_api()
    upstream_id = await api.submit(
        lines(api, calls(catalog, "anthropic", "claude-haiku-4-5", TEXTS)), label=LABEL
    )
    fake_anthropic.expire_batch(upstream_id)
    assert await until_ended(api, upstream_id) == ["ended"]
    errors = map(error_of, (await api.results(upstream_id)))
    assert {(e.code, e.reason) for e in errors} == {(Code.DEADLINE_EXCEEDED, "PROVIDER_BATCH_EXPIRED")}


async def test_anthropic_results_elsewhere_than_its_own_host_are_not_fetched_with_the_key(
    tmp_path: Path, http: aiohttp.ClientSession, fake_anthropic: fa.FakeAnthropic
) -> None:
    adapter, catalog = anthropic_adapter(tmp_path, http, fake_anthropic.base_url)
    api = adapter.batch_api()
    upstream_id = await api.submit(
        lines(api, calls(catalog, "anthropic", "claude-haiku-4-5", TEXTS)), label=LABEL
    )
    await until_ended(api, upstream_id)
    async with refusing(200, {}) as elsewhere:
        stored = fake_anthropic.batches[upstream_id].batch
        stored["results_url"] = stored["results_url"].replace(fake_anthropic.base_url, elsewhere)
        before = len(fake_anthropic.requests)
        with pytest.raises(GatewayError) as refused:
            await api.results(upstream_id)
    assert (refused.value.code, refused.value.reason) == (Code.UNAVAILABLE, "UPSTREAM_BAD_RESPONSE")
    assert "results_url" in refused.value.message
    assert len(fake_anthropic.requests) == before + 1  # the batch's state only


async def test_cancelling_an_anthropic_batch_reaches_anthropic_and_its_requests_are_cancelled(
    tmp_path: Path, http: aiohttp.ClientSession, fake_anthropic: fa.FakeAnthropic
) -> None:
    adapter, catalog = anthropic_adapter(tmp_path, http, fake_anthropic.base_url)
    api = adapter.batch_api()
    upstream_id = await api.submit(
        lines(api, calls(catalog, "anthropic", "claude-haiku-4-5", TEXTS)), label=LABEL
    )
    assert (await api.results(upstream_id)) == []  # in progress: no results yet
    await api.cancel(upstream_id)
    cancel = fake_anthropic.requests[-1]
    assert (cancel.method, cancel.path) == ("POST", f"/v1/messages/batches/{upstream_id}/cancel")
    assert cancel.headers["x-api-key"] == ANTHROPIC_KEY
    assert fake_anthropic.batches[upstream_id].batch["processing_status"] == "canceling"
    assert await until_ended(api, upstream_id) == ["ended"]
    results = by_line(await api.results(upstream_id))
    assert sorted(results) == sorted(TEXTS)
    assert {(e.code, e.reason) for e in map(error_of, results.values())} == {
        (Code.CANCELLED, "PROVIDER_BATCH_CANCELLED")
    }


async def test_cancelling_an_ended_anthropic_batch_changes_nothing(
    tmp_path: Path, http: aiohttp.ClientSession, fake_anthropic: fa.FakeAnthropic
) -> None:
    adapter, catalog = anthropic_adapter(tmp_path, http, fake_anthropic.base_url)
    api = adapter.batch_api()
    upstream_id = await api.submit(
        lines(api, calls(catalog, "anthropic", "claude-haiku-4-5", TEXTS)), label=LABEL
    )
    await until_ended(api, upstream_id)
    await api.cancel(upstream_id)  # Anthropic answers 400; the batch has ended, so that is no error
    assert all(result.error is None for result in await api.results(upstream_id))
    with pytest.raises(GatewayError) as unknown:
        await api.cancel("msgbatch_unknown")
    assert unknown.value.code == Code.NOT_FOUND


# --- Both ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (401, Code.FAILED_PRECONDITION, "PROVIDER_AUTH_FAILED"),
        (500, Code.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    ],
)
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_refused_submit_is_a_gateway_error_without_the_key(
    tmp_path: Path, http: aiohttp.ClientSession, provider: str, status: int, code: Code, reason: str
) -> None:
    key = OPENAI_KEY if provider == "openai" else ANTHROPIC_KEY
    body = {"error": {"type": "authentication_error", "message": f"Incorrect API key provided: {key}"}}
    async with refusing(status, body) as base_url:
        if provider == "openai":
            adapter: Any
            adapter, catalog = openai_adapter(tmp_path, http, f"{base_url}/v1")
            model = "gpt-4o-mini"
        else:
            adapter, catalog = anthropic_adapter(tmp_path, http, base_url)
            model = "claude-haiku-4-5"
        api: BatchApi = adapter.batch_api()
        with pytest.raises(GatewayError) as refused:
            await api.submit(lines(api, calls(catalog, provider, model, TEXTS)), label=LABEL)
        for failing in (api.progress("some_id"), api.results("some_id"), api.cancel("some_id")):
            with pytest.raises(GatewayError) as also:
                await failing
            assert key not in also.value.message
    assert (refused.value.code, refused.value.reason) == (code, reason)
    assert refused.value.metadata["upstream_status"] == str(status)
    assert key not in refused.value.message
    assert key[-16:] not in refused.value.message


async def test_lines_not_run_for_a_reason_the_gateway_does_not_know_are_upstream_batch_errors(
    tmp_path: Path,
    http: aiohttp.ClientSession,
    fake_openai: fo.FakeOpenAI,
    fake_anthropic: fa.FakeAnthropic,
) -> None:
    adapter, catalog = openai_adapter(tmp_path, http, fake_openai.base_url)
    openai_api = adapter.batch_api()
    upstream_id = await openai_api.submit(
        lines(openai_api, calls(catalog, "openai", "gpt-4o-mini", TEXTS)), label=LABEL
    )
    await until_ended(openai_api, upstream_id)
    stored = fake_openai.batches[upstream_id].batch
    unknown = {"id": "batch_req_1", "custom_id": "item-1", "response": None,
               "error": {"code": "region_unavailable", "message": "not served here today"}}  # fmt: skip
    fake_openai.files[stored["output_file_id"]].content = json.dumps(unknown).encode() + b"\n"
    (line,) = [r for r in await openai_api.results(upstream_id) if r.line_id == "item-1"]
    error = error_of(line)
    assert (error.code, error.reason, error.retryable) == (Code.UNAVAILABLE, "UPSTREAM_BATCH_ERROR", True)
    assert error.metadata["upstream_code"] == "region_unavailable"
    assert "not served here today" in error.message

    claude, catalog = anthropic_adapter(tmp_path, http, fake_anthropic.base_url)
    anthropic_api = claude.batch_api()
    batch_id = await anthropic_api.submit(
        lines(anthropic_api, calls(catalog, "anthropic", "claude-haiku-4-5", TEXTS)), label=LABEL
    )
    await until_ended(anthropic_api, batch_id)
    fake_anthropic.batches[batch_id].results = [{"custom_id": "item-1", "result": {"type": "paused"}}]
    (line,) = await anthropic_api.results(batch_id)
    error = error_of(line)
    assert (error.code, error.reason) == (Code.UNAVAILABLE, "UPSTREAM_BATCH_ERROR")
    assert error.metadata["upstream_code"] == "paused"
