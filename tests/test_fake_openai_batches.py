"""The fake OpenAI's Files and Batch APIs against the oracle: the official `openai` SDK uploads a
batch input file, creates, polls and cancels batches and reads their output and error files; its
pydantic types validate every File and Batch object and every answered line strictly (no field the
SDK does not know, no value it would have to coerce)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Final

import openai
import pytest
from openai.types import Batch, FileObject
from openai.types.chat import ChatCompletion

from tests.fakes.openai import FakeOpenAI, Reply, error_body
from tests.sdk_shapes import strictly

MODEL = "gpt-4o-mini"
TEXTS = {"a": "Hello there, batch", "b": "Second request in the batch", "c": "Third"}
ENDPOINT: Final = "/v1/chat/completions"


@pytest.fixture
async def client(fake_openai: FakeOpenAI) -> AsyncIterator[openai.AsyncOpenAI]:
    sdk = openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="sk-test-batches", max_retries=0)
    try:
        yield sdk
    finally:
        await sdk.close()


def line(custom_id: str, text: str, url: str = ENDPOINT) -> dict[str, Any]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}]}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(item) + "\n" for item in lines).encode()


async def create(client: openai.AsyncOpenAI, lines: list[dict[str, Any]]) -> Batch:
    uploaded = await client.files.create(file=("requests.jsonl", jsonl(lines)), purpose="batch")
    return await client.batches.create(
        input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h", metadata={"job": "nightly"}
    )


async def poll(client: openai.AsyncOpenAI, batch_id: str) -> tuple[list[str], Batch]:
    """The statuses the batch went through, retrieved until it ended, and its last state."""
    seen: list[str] = []
    for _ in range(10):
        batch = await client.batches.retrieve(batch_id)
        seen.append(batch.status)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return seen, batch
    raise AssertionError(f"batch {batch_id} did not end: {seen}")


async def file_lines(client: openai.AsyncOpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    """A JSONL file's lines by custom_id."""
    assert file_id is not None
    content = await client.files.content(file_id)
    lines = [json.loads(text) for text in content.text.splitlines()]
    return {item["custom_id"]: item for item in lines}


def echo_tokens(text: str) -> int:
    return max(len(text) // 4, 1)


async def test_a_batch_of_three_completes_and_its_output_file_answers_every_line(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    lines = [line(custom_id, text) for custom_id, text in TEXTS.items()]
    uploaded = await client.files.create(file=("requests.jsonl", jsonl(lines)), purpose="batch")
    assert uploaded.id.startswith("file-")
    assert (uploaded.object, uploaded.purpose, uploaded.status) == ("file", "batch", "processed")
    assert (uploaded.filename, uploaded.bytes) == ("requests.jsonl", len(jsonl(lines)))
    strictly(FileObject, fake_openai.files[uploaded.id].object())

    created = await client.batches.create(
        input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h", metadata={"job": "nightly"}
    )
    assert created.id.startswith("batch_")
    assert (created.object, created.status, created.endpoint) == ("batch", "validating", ENDPOINT)
    assert (created.input_file_id, created.completion_window, created.model) == (uploaded.id, "24h", MODEL)
    assert created.metadata == {"job": "nightly"}
    assert created.request_counts is not None
    assert created.request_counts.total == 0  # counted once validated
    assert created.expires_at == created.created_at + 24 * 3600

    seen, done = await poll(client, created.id)
    assert seen == ["in_progress", "completed"]
    strictly(Batch, fake_openai.batches[created.id].batch)
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 3, 0)
    assert done.in_progress_at is not None
    assert done.completed_at is not None
    assert done.error_file_id is None
    assert done.usage is not None
    assert done.usage.input_tokens == 30
    assert done.usage.output_tokens == sum(echo_tokens(text) for text in TEXTS.values())
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens

    output = fake_openai.files[done.output_file_id or ""]
    strictly(FileObject, output.object())
    assert output.purpose == "batch_output"
    answered = await file_lines(client, done.output_file_id)
    assert sorted(answered) == ["a", "b", "c"]
    for custom_id, text in TEXTS.items():
        item = answered[custom_id]
        assert item["id"].startswith("batch_req_")
        assert item["error"] is None
        assert item["response"]["status_code"] == 200
        assert item["response"]["request_id"]
        completion = strictly(ChatCompletion, item["response"]["body"])
        assert completion.choices[0].message.content == text
        assert completion.usage is not None
        assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (10, echo_tokens(text))

    # Every HTTP request is recorded, the upload with its form fields and parsed lines; the lines a
    # batch answers are not requests of their own.
    assert [(r.method, r.path) for r in fake_openai.requests] == [
        ("POST", "/v1/files"),
        ("POST", "/v1/batches"),
        ("GET", f"/v1/batches/{created.id}"),
        ("GET", f"/v1/batches/{created.id}"),
        ("GET", f"/v1/files/{done.output_file_id}/content"),
    ]
    upload = fake_openai.requests[0]
    assert upload.body == {"purpose": "batch", "filename": "requests.jsonl", "lines": lines}
    assert upload.headers["authorization"] == "Bearer sk-test-batches"
    assert upload.headers["content-type"].startswith("multipart/form-data")
    assert fake_openai.requests[1].body["input_file_id"] == uploaded.id


async def test_a_scripted_error_reply_lands_in_the_error_file(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    too_long = error_body("This model's maximum context length is 128000 tokens.", "invalid_request_error")
    fake_openai.script(
        Reply(echo=True),
        Reply(status=400, json_body=too_long, headers={"x-request-id": "req_too_long"}),
        Reply(echo=True),
    )
    created = await create(client, [line(custom_id, text) for custom_id, text in TEXTS.items()])
    _, done = await poll(client, created.id)

    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 2, 1)
    assert fake_openai.pending() == 0
    assert sorted(await file_lines(client, done.output_file_id)) == ["a", "c"]
    failed = await file_lines(client, done.error_file_id)
    assert failed["b"]["response"] == {"status_code": 400, "request_id": "req_too_long", "body": too_long}
    assert failed["b"]["error"] is None
    assert list(failed) == ["b"]
    assert done.usage is not None
    assert done.usage.output_tokens == echo_tokens(TEXTS["a"]) + echo_tokens(TEXTS["c"])


async def test_a_reply_for_a_custom_id_answers_that_line_wherever_it_is(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    fake_openai.batch_replies["a"] = Reply(
        status=500, json_body=error_body("The server had an error", "server_error")
    )
    fake_openai.script(Reply(json_body={"scripted": True}, status=200))  # the first line without one
    created = await create(client, [line("c", "C"), line("a", "A"), line("b", "B")])
    _, done = await poll(client, created.id)

    answered = await file_lines(client, done.output_file_id)
    assert answered["c"]["response"]["body"] == {"scripted": True}
    assert answered["b"]["response"]["body"]["choices"][0]["message"]["content"] == "B"
    failed = await file_lines(client, done.error_file_id)
    assert failed["a"]["response"]["status_code"] == 500
    assert fake_openai.batch_replies == {}  # used once


async def test_a_cancelled_batch_runs_none_of_its_lines(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    created = await create(client, [line(custom_id, text) for custom_id, text in TEXTS.items()])
    cancelling = await client.batches.cancel(created.id)
    assert cancelling.status == "cancelling"
    assert cancelling.cancelling_at is not None

    seen, cancelled = await poll(client, created.id)
    assert seen == ["cancelled"]
    strictly(Batch, fake_openai.batches[created.id].batch)
    assert cancelled.cancelled_at is not None
    assert cancelled.output_file_id is None
    assert cancelled.request_counts is not None
    assert (cancelled.request_counts.completed, cancelled.request_counts.failed) == (0, 3)
    failed = await file_lines(client, cancelled.error_file_id)
    assert {item["custom_id"]: (item["response"], item["error"]["code"]) for item in failed.values()} == {
        "a": (None, "batch_cancelled"),
        "b": (None, "batch_cancelled"),
        "c": (None, "batch_cancelled"),
    }

    again = await client.batches.cancel(created.id)  # cancelling a cancelled batch changes nothing
    assert again.status == "cancelled"


async def test_a_completed_batch_cannot_be_cancelled(client: openai.AsyncOpenAI) -> None:
    created = await create(client, [line("a", "A")])
    await poll(client, created.id)
    with pytest.raises(openai.BadRequestError, match="Cannot cancel a batch with status 'completed'"):
        await client.batches.cancel(created.id)


async def test_an_expired_batch_reports_every_line_expired(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    created = await create(client, [line("a", "A"), line("b", "B")])
    assert (await client.batches.retrieve(created.id)).status == "in_progress"
    fake_openai.expire_batch(created.id)
    seen, expired = await poll(client, created.id)
    assert seen == ["expired"]
    assert expired.expired_at is not None
    assert expired.request_counts is not None
    assert (expired.request_counts.total, expired.request_counts.failed) == (2, 2)
    failed = await file_lines(client, expired.error_file_id)
    assert {item["error"]["code"] for item in failed.values()} == {"batch_expired"}


async def test_a_batch_fails_validation_on_a_line_for_another_endpoint(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    created = await create(client, [line("a", "A"), line("b", "B", url="/v1/embeddings")])
    seen, failed = await poll(client, created.id)
    assert seen == ["failed"]
    strictly(Batch, fake_openai.batches[created.id].batch)
    assert failed.failed_at is not None
    assert (failed.output_file_id, failed.error_file_id) == (None, None)
    assert failed.errors is not None
    assert failed.errors.object == "list"
    assert failed.errors.data is not None
    assert [(e.code, e.param, e.line) for e in failed.errors.data] == [("mismatched_endpoint", "url", 2)]


async def test_fail_batch_fails_it_at_its_next_step(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    created = await create(client, [line("a", "A")])
    fake_openai.fail_batch(created.id)
    _, failed = await poll(client, created.id)
    assert failed.status == "failed"
    assert failed.errors is not None
    assert failed.errors.data is not None
    assert [e.code for e in failed.errors.data] == ["token_limit_exceeded"]


async def test_a_held_batch_stays_where_it_is(fake_openai: FakeOpenAI, client: openai.AsyncOpenAI) -> None:
    fake_openai.hold_batches = True
    created = await create(client, [line("a", "A")])
    for _ in range(3):
        assert (await client.batches.retrieve(created.id)).status == "validating"
    fake_openai.hold_batches = False
    seen, _ = await poll(client, created.id)
    assert seen == ["in_progress", "completed"]


async def test_unknown_batches_and_files_are_404s(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as retrieving:
        await client.batches.retrieve("batch_unknown")
    assert retrieving.value.status_code == 404
    assert retrieving.value.body == {
        "message": "No batch found with id 'batch_unknown'.",
        "type": "invalid_request_error",
        "param": "batch_id",
        "code": None,
    }
    with pytest.raises(openai.NotFoundError):
        await client.batches.cancel("batch_unknown")
    with pytest.raises(openai.NotFoundError, match="No such File object: file-unknown"):
        await client.files.content("file-unknown")
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve("file-unknown")


async def test_bad_uploads_and_batches_are_refused(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="JSONL"):
        await client.files.create(file=("requests.jsonl", b"not json\n"), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="batch input file"):
        await client.batches.create(input_file_id="file-unknown", endpoint=ENDPOINT, completion_window="24h")
    uploaded = await client.files.create(file=("requests.jsonl", jsonl([line("a", "A")])), purpose="batch")
    with pytest.raises(openai.BadRequestError, match="batches of /v1/chat/completions only"):
        await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h"
        )


async def test_files_retrieve_returns_the_file_object(
    fake_openai: FakeOpenAI, client: openai.AsyncOpenAI
) -> None:
    uploaded = await client.files.create(file=("in.jsonl", jsonl([line("a", "A")])), purpose="batch")
    retrieved = await client.files.retrieve(uploaded.id)
    assert retrieved == uploaded
    assert fake_openai.files[uploaded.id].lines() == [line("a", "A")]
