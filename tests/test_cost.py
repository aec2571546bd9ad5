"""Cost end to end through the stub against the fake OpenAI server: streams cut short are still
costed, and a dry run prices exactly what the real call then costs."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import grpc
import pytest

from llm_gateway.tokens.encodings import get_encoding
from llmgateway.v1 import chat_pb2
from tests.conftest import RunningGateway, chat, error_details, read_event, stream_past_first_delta
from tests.fakes.openai import FakeOpenAI, Reply, chunk, completion, text_chunks, usage
from tests.test_openai import stream_events


@pytest.fixture(autouse=True)
def _encoding_loaded() -> None:
    """A stream cut short is counted with what is already loaded, never waiting for a tokenizer;
    these tests load gpt-4o-mini's so their counts are exact whatever ran before them."""
    get_encoding("o200k_base")


# gpt-4o-mini: $0.15 input, $0.60 output per million tokens.
INPUT, OUTPUT = Decimal("0.15"), Decimal("0.60")
# chat()'s prompt with o200k_base: 3 priming + 3 framing + "user" (1) + "Hello there, gateway" (4).
PROMPT_TOKENS = 11


async def test_a_stream_the_upstream_drops_is_costed_in_the_error(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script(
        Reply(sse=[chunk({"content": "Hello"}), chunk({"content": " world"}), "[DONE]"], end_early=True)
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream_events(openai_gateway, chat("openai:gpt-4o-mini"))
    details = error_details(caught.value)
    assert details.info.reason == "UPSTREAM_STREAM_INTERRUPTED"
    spent = details.info.metadata
    # "Hello", " world": 2 output tokens were produced before the drop.
    assert (spent["prompt_tokens"], spent["completion_tokens"]) == (str(PROMPT_TOKENS), "2")
    assert spent["usage_estimated"] == "true"
    assert spent["cost_status"] == "priced"
    assert Decimal(spent["cost"]) == (PROMPT_TOKENS * INPUT + 2 * OUTPUT) / 10**6
    assert spent["cost_currency"] == "USD"


async def test_a_stream_the_caller_cancels_is_costed_in_the_access_log(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI, log_lines: list[str]
) -> None:
    words = [f" w{i}" for i in range(200)]
    fake_openai.script(Reply(sse=text_chunks(words, usage(5, 200)), chunk_delay=0.02))
    call = await stream_past_first_delta(openai_gateway, chat("openai:gpt-4o-mini"))
    await read_event(call)
    call.cancel()
    entry: dict[str, object] = {}
    for _ in range(200):
        streamed = [json.loads(line) for line in log_lines if '"method":"ChatStream"' in line]
        if streamed:
            [entry] = streamed
            break
        await asyncio.sleep(0.01)
    assert entry["status"] == "CANCELLED"
    assert entry["usage_estimated"] is True
    assert entry["prompt_tokens"] == PROMPT_TOKENS
    completion_tokens = entry["completion_tokens"]
    assert isinstance(completion_tokens, int)
    # At least the two deltas the client read, and far from the 200 words never produced.
    assert 2 <= completion_tokens < 200
    assert entry["cost_status"] == "priced"
    assert Decimal(str(entry["cost"])) == (PROMPT_TOKENS * INPUT + completion_tokens * OUTPUT) / 10**6


async def test_dry_run_prices_exactly_what_the_real_call_costs(
    openai_gateway: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    """With an exact prompt count, the dry run's estimate is the real cost once the provider
    reports the same usage."""
    request = chat("openai:gpt-4o-mini", generation=chat_pb2.GenerationConfig(max_tokens=40))
    request.dry_run = True
    dry = await openai_gateway.stub.Chat(request)
    assert not fake_openai.requests
    assert dry.usage.estimated
    assert (dry.usage.prompt_tokens, dry.usage.completion_tokens) == (PROMPT_TOKENS, 40)

    fake_openai.script(Reply(json_body=completion("Fine.", usage_=usage(PROMPT_TOKENS, 40))))
    request.dry_run = False
    real = await openai_gateway.stub.Chat(request)
    assert not real.usage.estimated
    assert real.cost.total == dry.cost.total
    assert Decimal(real.cost.total) == (PROMPT_TOKENS * INPUT + 40 * OUTPUT) / 10**6
