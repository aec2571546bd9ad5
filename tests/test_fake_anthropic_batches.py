"""The fake Anthropic's Message Batches API against the oracle: the official `anthropic` SDK creates,
polls and cancels batches and streams their results from the results_url; its pydantic types
validate every MessageBatch and every results line strictly (no field the SDK does not know, no
value it would have to coerce)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anthropic
import pytest
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse
from anthropic.types.messages.batch_create_params import Request

from tests.fakes.anthropic import FakeAnthropic, Reply, error_reply, message, text_block, usage
from tests.sdk_shapes import strictly

# A current model id: the SDK warns about deprecated ones.
REQUEST_MODEL = "claude-sonnet-4-6"
TEXTS = {"first": "Hello there, batch", "second": "Second request in the batch", "third": "Third"}


@pytest.fixture
async def client(fake_anthropic: FakeAnthropic) -> AsyncIterator[anthropic.AsyncAnthropic]:
    sdk = anthropic.AsyncAnthropic(base_url=fake_anthropic.base_url, api_key="sk-ant-test", max_retries=0)
    try:
        yield sdk
    finally:
        await sdk.close()


def request(custom_id: str, text: str) -> Request:
    return {
        "custom_id": custom_id,
        "params": {"model": REQUEST_MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": text}]},
    }


REQUESTS = [request(custom_id, text) for custom_id, text in TEXTS.items()]


async def poll(client: anthropic.AsyncAnthropic, batch_id: str) -> tuple[list[str], MessageBatch]:
    """The processing statuses the batch went through, retrieved until it ended, and its last state."""
    seen: list[str] = []
    for _ in range(10):
        batch = await client.messages.batches.retrieve(batch_id)
        seen.append(batch.processing_status)
        if batch.processing_status == "ended":
            return seen, batch
    raise AssertionError(f"batch {batch_id} did not end: {seen}")


async def results(
    client: anthropic.AsyncAnthropic, batch_id: str
) -> dict[str, MessageBatchIndividualResponse]:
    """The batch's results by custom_id, streamed by the SDK from its results_url."""
    return {entry.custom_id: entry async for entry in await client.messages.batches.results(batch_id)}


async def test_a_batch_ends_and_its_results_answer_every_request(
    fake_anthropic: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    overloaded = error_reply("overloaded_error", "Overloaded")
    fake_anthropic.script(
        Reply(json_body=message([text_block("Scripted first")], usage_=usage(7, 3))), overloaded
    )
    created = await client.messages.batches.create(requests=REQUESTS)
    assert created.id.startswith("msgbatch_")
    assert (created.type, created.processing_status) == ("message_batch", "in_progress")
    assert created.request_counts.processing == 3
    assert created.ended_at is None
    assert created.results_url is None
    assert created.cancel_initiated_at is None
    strictly(MessageBatch, fake_anthropic.batches[created.id].batch)
    assert (created.expires_at - created.created_at).total_seconds() == 24 * 3600
    assert fake_anthropic.requests[0].body == {"requests": REQUESTS}

    seen, ended = await poll(client, created.id)
    assert seen == ["in_progress", "ended"]
    strictly(MessageBatch, fake_anthropic.batches[created.id].batch)
    counts = ended.request_counts
    assert (counts.processing, counts.succeeded, counts.errored, counts.canceled, counts.expired) == (
        0,
        2,
        1,
        0,
        0,
    )
    assert ended.ended_at is not None
    assert ended.results_url == f"{fake_anthropic.base_url}/v1/messages/batches/{created.id}/results"

    for line in fake_anthropic.batches[created.id].results:
        strictly(MessageBatchIndividualResponse, line)
    by_id = await results(client, created.id)
    assert sorted(by_id) == ["first", "second", "third"]
    first, second, third = by_id["first"].result, by_id["second"].result, by_id["third"].result
    assert first.type == "succeeded"
    assert [block.text for block in first.message.content if block.type == "text"] == ["Scripted first"]
    assert (first.message.usage.input_tokens, first.message.usage.output_tokens) == (7, 3)
    assert second.type == "errored"
    assert (second.error.type, second.error.error.type, second.error.error.message) == (
        "error",
        "overloaded_error",
        "Overloaded",
    )
    assert third.type == "succeeded"  # the script used up, the echo
    assert [block.text for block in third.message.content if block.type == "text"] == [TEXTS["third"]]
    assert third.message.usage.output_tokens == max(len(TEXTS["third"]) // 4, 1)

    # The SDK looks the batch up before it fetches its results_url; batch requests are not requests
    # of their own.
    assert [(r.method, r.path) for r in fake_anthropic.requests] == [
        ("POST", "/v1/messages/batches"),
        ("GET", f"/v1/messages/batches/{created.id}"),
        ("GET", f"/v1/messages/batches/{created.id}"),
        ("GET", f"/v1/messages/batches/{created.id}"),
        ("GET", f"/v1/messages/batches/{created.id}/results"),
    ]


async def test_a_reply_for_a_custom_id_answers_that_request_wherever_it_is(
    fake_anthropic: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake_anthropic.batch_replies["third"] = error_reply("invalid_request_error", "prompt is too long")
    created = await client.messages.batches.create(requests=REQUESTS)
    _, ended = await poll(client, created.id)
    assert (ended.request_counts.succeeded, ended.request_counts.errored) == (2, 1)
    by_id = await results(client, created.id)
    third = by_id["third"].result
    assert third.type == "errored"
    assert third.error.error.type == "invalid_request_error"
    first = by_id["first"].result
    assert first.type == "succeeded"
    assert [block.text for block in first.message.content if block.type == "text"] == [TEXTS["first"]]
    assert fake_anthropic.batch_replies == {}  # used once


async def test_a_canceled_batch_ends_with_its_requests_canceled(
    fake_anthropic: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    created = await client.messages.batches.create(requests=REQUESTS)
    canceling = await client.messages.batches.cancel(created.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None

    seen, ended = await poll(client, created.id)
    assert seen == ["ended"]
    strictly(MessageBatch, fake_anthropic.batches[created.id].batch)
    assert (ended.request_counts.canceled, ended.request_counts.succeeded) == (3, 0)
    assert {
        custom_id: entry.result.type for custom_id, entry in (await results(client, created.id)).items()
    } == {
        "first": "canceled",
        "second": "canceled",
        "third": "canceled",
    }
    assert fake_anthropic.pending() == 0


async def test_an_ended_batch_cannot_be_canceled(client: anthropic.AsyncAnthropic) -> None:
    created = await client.messages.batches.create(requests=REQUESTS[:1])
    await poll(client, created.id)
    with pytest.raises(anthropic.BadRequestError, match="cannot be canceled"):
        await client.messages.batches.cancel(created.id)


async def test_an_expired_batch_ends_with_its_requests_expired(
    fake_anthropic: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    created = await client.messages.batches.create(requests=REQUESTS[:2])
    fake_anthropic.expire_batch(created.id)
    seen, ended = await poll(client, created.id)
    assert seen == ["ended"]
    assert ended.request_counts.expired == 2
    assert {entry.result.type for entry in (await results(client, created.id)).values()} == {"expired"}


async def test_a_held_batch_stays_in_progress_and_has_no_results(
    fake_anthropic: FakeAnthropic, client: anthropic.AsyncAnthropic
) -> None:
    fake_anthropic.hold_batches = True
    created = await client.messages.batches.create(requests=REQUESTS[:1])
    for _ in range(3):
        assert (await client.messages.batches.retrieve(created.id)).processing_status == "in_progress"
    with pytest.raises(anthropic.AnthropicError, match="No `results_url`"):
        await client.messages.batches.results(created.id)
    fake_anthropic.hold_batches = False
    seen, _ = await poll(client, created.id)
    assert seen == ["in_progress", "ended"]


async def test_an_unknown_batch_is_a_404(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as retrieving:
        await client.messages.batches.retrieve("msgbatch_unknown")
    assert retrieving.value.status_code == 404
    assert retrieving.value.body == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "No message batch with id 'msgbatch_unknown'."},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.batches.cancel("msgbatch_unknown")
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.batches.results("msgbatch_unknown")


@pytest.mark.parametrize(
    "requests",
    [[], [request("has space", "Hi")], [request("same", "Hi"), request("same", "Again")]],
    ids=["empty", "custom_id_pattern", "repeated_custom_id"],
)
async def test_batches_anthropic_would_refuse_are_400s(
    client: anthropic.AsyncAnthropic, requests: list[Request]
) -> None:
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.batches.create(requests=requests)
