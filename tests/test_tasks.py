"""Task types: a caller names the job (`task_type`) instead of the model, and the config's
`[tasks]` says which models serve it, the first then the others as fallbacks. The task is kept in
the usage ledger, on SQLite and PostgreSQL, where summaries group and filter by it; an unknown task
is refused naming the field, through gRPC and the OpenAI door alike."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import grpc
import openai
import pytest

from llm_gateway.config import ConfigError, load_config
from llm_gateway.ledger import open_store, parse_url
from llm_gateway.ledger.rows import encode
from llm_gateway.ledger.sqlite import LATEST, MIGRATIONS
from llmgateway.v1 import catalog_pb2, chat_pb2, usage_pb2, usage_service_pb2_grpc
from tests.conftest import chat, error_details, running_gateway, violated_fields
from tests.fakes.openai import FakeOpenAI, Reply, error_body
from tests.ledgers import backend_url, record  # noqa: F401 (a fixture)
from tests.test_ledger_store import everything
from tests.test_usage_service import OPS, period, written

KEYS = """
[[auth.keys]]
name = "ops"
key = "ops-key-0123456789abcdef"
role = "admin"
"""


def tasks_toml(fake: FakeOpenAI, ledger_url: str) -> str:
    return f"""
[providers.openai]
base_url = "{fake.base_url}"
api_key = "sk-test-0123456789abcdef"
retry = {{ max_retries = 0 }}
[aliases]
small = "mock:echo"
[tasks.summarization]
models = ["openai:gpt-4o-mini", "small"]
[tasks.support-triage]
models = ["mock:echo-free"]
[tasks.offline]
models = ["anthropic:claude-haiku-4-5"]
[tasks.mixed]
models = ["anthropic:claude-haiku-4-5", "mock:echo"]
[ledger]
url = "{ledger_url}"
flush_interval = 0.05
{KEYS}"""


def task_call(task: str, model: str = "", text: str = "Summarise this") -> chat_pb2.ChatRequest:
    return chat(model, text, task_type=task)


async def test_a_task_is_served_by_its_models_and_kept_in_the_ledger(
    fake_openai: FakeOpenAI,
    backend_url: str,  # noqa: F811
) -> None:
    fake_openai.script(Reply(status=503, json_body=error_body("Overloaded", "server_error")))
    async with running_gateway(tasks_toml(fake_openai, backend_url)) as gw:
        usage = usage_service_pb2_grpc.UsageServiceStub(gw.channel)
        fell_back = await gw.stub.Chat(task_call("summarization"), metadata=OPS)
        served = await gw.stub.Chat(task_call("summarization"), metadata=OPS)
        own = await gw.stub.Chat(task_call("support-triage"), metadata=OPS)
        named = await gw.stub.Chat(task_call("support-triage", "mock:echo-large"), metadata=OPS)
        untasked = await gw.stub.Chat(chat("mock:echo"), metadata=OPS)
        records = await written(usage, 5)
        summary = await usage.GetUsageSummary(
            usage_pb2.GetUsageSummaryRequest(filter=period(), group_by=["task"]), metadata=OPS
        )
        triage = await usage.GetUsageSummary(
            usage_pb2.GetUsageSummaryRequest(filter=period(task_type="support-triage")), metadata=OPS
        )
    # The first model failed (503): the task's next one, an alias, served.
    assert (fell_back.model, fell_back.routing.fallback_used) == ("mock:echo", True)
    assert list(fell_back.routing.candidates) == ["openai:gpt-4o-mini", "mock:echo"]
    assert served.model == "openai:gpt-4o-mini"
    assert fake_openai.requests[-1].body["model"] == "gpt-4o-mini"
    assert own.model == "mock:echo-free"
    assert named.model == "mock:echo-large"  # a model named beside the task serves the call
    assert untasked.model == "mock:echo"
    kept = {r.id: (r.task_type, r.requested_model) for r in records}
    assert kept == {
        fell_back.id: ("summarization", "openai:gpt-4o-mini"),
        served.id: ("summarization", "openai:gpt-4o-mini"),
        own.id: ("support-triage", "mock:echo-free"),
        named.id: ("support-triage", "mock:echo-large"),
        untasked.id: ("", "mock:echo"),
    }
    by_task = {tuple(b.group): b.stats.requests for b in summary.buckets}
    assert by_task == {("summarization",): 2, ("support-triage",): 2, ("",): 1}
    assert triage.total.requests == 2


async def test_unknown_or_malformed_tasks_and_a_call_without_model_or_task_are_refused(
    fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    async with running_gateway(tasks_toml(fake_openai, f"sqlite:///{tmp_path}/ledger.db")) as gw:
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await gw.stub.Chat(task_call("translation"), metadata=OPS)
        with pytest.raises(grpc.aio.AioRpcError) as malformed:
            await gw.stub.Chat(task_call("Not A Task"), metadata=OPS)
        with pytest.raises(grpc.aio.AioRpcError) as neither:
            await gw.stub.Chat(chat(""), metadata=OPS)
        with pytest.raises(grpc.aio.AioRpcError) as offline:
            await gw.stub.Chat(task_call("offline"), metadata=OPS)
        mixed = await gw.stub.Chat(task_call("mixed"), metadata=OPS)
        with pytest.raises(grpc.aio.AioRpcError) as estimated:
            await gw.stub.EstimateCost(
                catalog_pb2.EstimateCostRequest(request=task_call("nope")), metadata=OPS
            )
        client = openai.AsyncOpenAI(
            base_url=f"{gw.http_url}/v1", api_key="ops-key-0123456789abcdef", max_retries=0, timeout=30
        )
        with pytest.raises(openai.BadRequestError) as door:
            await client.chat.completions.create(
                model="", messages=[{"role": "user", "content": "x"}], extra_body={"task_type": "translation"}
            )
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(error_details(unknown.value)) == ["task_type"]
    assert "unknown task 'translation'" in (unknown.value.details() or "")
    assert "summarization" in (unknown.value.details() or "")  # the configured ones are listed
    assert violated_fields(error_details(malformed.value)) == ["task_type"]
    assert violated_fields(error_details(neither.value)) == ["model"]
    assert violated_fields(error_details(estimated.value)) == ["request.task_type"]
    # Models of providers that are not enabled (no Anthropic key here) are skipped; none left is
    # NO_MODEL_AVAILABLE.
    assert mixed.model == "mock:echo"
    assert list(mixed.routing.candidates) == ["mock:echo"]
    assert offline.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_details(offline.value).info.reason == "NO_MODEL_AVAILABLE"
    assert door.value.param == "task_type"


async def test_the_openai_door_and_estimate_cost_take_a_task(fake_openai: FakeOpenAI, tmp_path: Path) -> None:
    async with running_gateway(tasks_toml(fake_openai, f"sqlite:///{tmp_path}/ledger.db")) as gw:
        client = openai.AsyncOpenAI(
            base_url=f"{gw.http_url}/v1", api_key="ops-key-0123456789abcdef", max_retries=0, timeout=30
        )
        reply = await client.chat.completions.create(
            model="",
            messages=[{"role": "user", "content": "Triage me"}],
            extra_body={"task_type": "support-triage"},
        )
        omitted = await client.post(
            "/chat/completions",
            body={"messages": [{"role": "user", "content": "Triage me"}], "task_type": "support-triage"},
            cast_to=object,
        )
        estimates = await gw.stub.EstimateCost(
            catalog_pb2.EstimateCostRequest(request=task_call("summarization")), metadata=OPS
        )
    assert reply.model == "mock:echo-free"
    assert json.loads(json.dumps(omitted))["model"] == "mock:echo-free"
    # Every model the task may use, cheapest first.
    assert [e.model for e in estimates.estimates] == ["mock:echo", "openai:gpt-4o-mini"]


async def test_a_ledger_of_the_first_schema_gains_the_task_column_and_old_spooled_rows_replay(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE TABLE ledger_schema (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)"
    )
    for statement in MIGRATIONS[0][1]:
        connection.execute(statement)
    connection.execute("INSERT INTO ledger_schema VALUES (1, 0)")
    connection.commit()
    connection.close()
    store = open_store(parse_url(f"sqlite:///{path}"), timeout=5.0)
    try:
        assert await store.migrate() == LATEST
        old_row = encode(record())
        del old_row["task_type"], old_row["plan_period"]  # as a gateway of the first schema spooled it
        await store.insert([old_row])
        await store.insert([encode(record(task_type="summarization"))])
        kept = sorted(r.task_type for r in await everything(store))
    finally:
        await store.close()
    assert kept == ["", "summarization"]


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ('[tasks.t]\nmodels = ["nowhere:x"]', r"tasks.t.models\[0\]"),
        ("[tasks.t]\nmodels = []", "models"),
        ('[tasks."Bad Name"]\nmodels = ["auto"]', "a task's name must match"),
    ],
)
def test_bad_tasks_are_refused_at_load(tmp_path: Path, tasks: str, message: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(tasks + "\n")
    with pytest.raises(ConfigError, match=message):
        load_config(path, {})


def test_the_built_in_tasks_are_configured_by_default() -> None:
    config = load_config(None, {})
    assert {name: task.models for name, task in config.tasks.items()} == {
        "text_generation": ("auto",),
        "summarization": ("auto",),
        "sentiment_analysis": ("auto",),
        "question_answering": ("auto",),
    }
