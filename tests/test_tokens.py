"""Token counting: OpenAI's encodings offline and exact, a model's server where it counts (its
exchanges are tested against fake servers in test_llamacpp.py), the approximation elsewhere, and
which method a count used."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import tiktoken_ext.openai_public as openai_public  # type: ignore[import-untyped]

from llm_gateway.domain.messages import (
    ChatRequest,
    ImagePart,
    Message,
    ResponseFormat,
    ResponseFormatType,
    Role,
    TextPart,
    Tool,
    ToolCall,
)
from llm_gateway.tokens import (
    APPROXIMATE,
    ENCODINGS,
    CountMethod,
    TokenCount,
    count_completion,
    count_prompt,
    counter_for,
    encoding_for_model,
    ready_counter,
    tokenizer_id,
)
from llm_gateway.tokens import count as count_module
from llm_gateway.tokens.count import OFFLOAD_CHARS
from llm_gateway.tokens.encodings import get_encoding, rank_file
from llm_gateway.tokens.server import server_root


def _text(role: Role, text: str, name: str = "") -> Message:
    return Message(role, (TextPart(text),), name=name)


# The OpenAI Cookbook's "How to count tokens with tiktoken" example, whose count its authors
# confirmed against the API's usage.prompt_tokens (129 on gpt-4-0613, cl100k_base).
COOKBOOK = ChatRequest(
    model="openai:gpt-4",
    messages=(
        _text(
            Role.SYSTEM,
            "You are a helpful, pattern-following assistant that translates corporate jargon into plain "
            "English.",
        ),
        _text(Role.SYSTEM, "New synergies will help drive top-line growth.", "example_user"),
        _text(Role.SYSTEM, "Things working well together will increase revenue.", "example_assistant"),
        _text(
            Role.SYSTEM,
            "Let's circle back when we have more bandwidth to touch base on opportunities for increased "
            "leverage.",
            "example_user",
        ),
        _text(
            Role.SYSTEM, "Let's talk later when we're less busy about how to do better.", "example_assistant"
        ),
        _text(
            Role.USER,
            "This late pivot means we don't have time to boil the ocean for the client deliverable.",
        ),
    ),
)


def test_the_cookbook_example_counts_as_the_api_did() -> None:
    count = counter_for("cl100k_base").prompt(COOKBOOK)
    assert (count.tokens, count.exact) == (129, True)


@pytest.mark.parametrize(
    ("encoding", "ids"),
    [
        # The token ids the OpenAI Cookbook prints for "tiktoken is great!".
        ("o200k_base", [83, 8251, 2488, 382, 2212, 0]),
        ("cl100k_base", [83, 1609, 5963, 374, 2294, 0]),
    ],
)
def test_bundled_encodings_are_openais(encoding: str, ids: list[int]) -> None:
    enc = get_encoding(encoding)
    assert enc.encode("tiktoken is great!") == ids
    assert enc.decode(ids) == "tiktoken is great!"


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_encoding_definitions_match_tiktokens_own(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """tiktoken's constructor, fed the bundled file instead of a download, defines the same
    encoding: same expected hash, pattern and special tokens."""
    spec = ENCODINGS[name]
    asked: list[tuple[str, str | None]] = []

    def load(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
        asked.append((url, expected_hash))
        return {}

    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", load)
    theirs: dict[str, Any] = openai_public.ENCODING_CONSTRUCTORS[name]()
    assert asked[0][1] == spec.sha256
    assert theirs["pat_str"] == spec.pat_str
    assert theirs["special_tokens"] == dict(spec.special_tokens)
    assert rank_file(spec)  # present and matching the hash


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4.1", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("claude-sonnet-4-5", None),
        ("gpt-oss-120b", None),  # o200k_harmony is not bundled
    ],
)
def test_models_map_to_their_encoding(model: str, encoding: str | None) -> None:
    assert encoding_for_model(model) == encoding


def test_text_only_prompts_are_exact_and_the_rest_approximate() -> None:
    counter = counter_for("o200k_base")
    plain = ChatRequest("openai:gpt-4o", (_text(Role.SYSTEM, "Be brief."), _text(Role.USER, "Hi!")))
    # 3 priming + per message 3 framing + role + content: system(1) "Be brief."(3), user(1) "Hi!"(2).
    count = counter.prompt(plain)
    assert (count.tokens, count.exact) == (3 + (3 + 1 + 3) + (3 + 1 + 2), True)

    image = Message(Role.USER, (TextPart("What is this?"), ImagePart(url="https://example.com/a.png")))
    tool = Tool("lookup", "Looks a word up.", {"type": "object", "properties": {"q": {"type": "string"}}})
    call = Message(Role.ASSISTANT, tool_calls=(ToolCall("c1", "lookup", '{"q":"x"}'),))
    result = Message(Role.TOOL, (TextPart("found"),), tool_call_id="c1")
    schema = ResponseFormat(ResponseFormatType.JSON_SCHEMA, {"type": "object"})
    for request in (
        ChatRequest("openai:gpt-4o", (image,)),
        ChatRequest("openai:gpt-4o", plain.messages, tools=(tool,)),
        ChatRequest("openai:gpt-4o", (*plain.messages, call, result)),
        ChatRequest("openai:gpt-4o", plain.messages, response_format=schema),
    ):
        counted = counter.prompt(request)
        assert not counted.exact
        assert counted.tokens > count.tokens


def test_special_token_text_in_a_prompt_is_plain_text() -> None:
    request = ChatRequest("openai:gpt-4o", (_text(Role.USER, "<|endoftext|>"),))
    assert counter_for("o200k_base").prompt(request).tokens > 3 + 3 + 1 + 1


def test_models_without_an_offline_tokenizer_are_approximated() -> None:
    request = ChatRequest("anthropic:claude", (_text(Role.USER, "x" * 400),))
    assert counter_for("") is APPROXIMATE
    count = APPROXIMATE.prompt(request)
    # 3 priming + 4 framing + 400 characters / 4.
    assert (count.tokens, count.exact) == (3 + 4 + 100, False)


def test_completion_counts_text_and_tool_calls() -> None:
    counter = counter_for("o200k_base")
    assert counter.completion("tiktoken is great!") == 6
    assert counter.completion("", [ToolCall("", "lookup", '{"q":"x"}')]) > 1


@pytest.fixture
def offloaded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the counting methods run through asyncio.to_thread during the test."""
    names: list[str] = []
    real = asyncio.to_thread

    async def to_thread(fn: Any, /, *args: Any) -> Any:
        names.append(getattr(fn, "__name__", ""))
        return await real(fn, *args)

    monkeypatch.setattr(asyncio, "to_thread", to_thread)
    return names


async def test_large_prompts_are_counted_off_the_event_loop(offloaded: list[str]) -> None:
    get_encoding("o200k_base")  # an encoding not loaded yet is loaded in a worker thread too
    small = ChatRequest("openai:gpt-4o", (_text(Role.USER, "short"),))
    large = ChatRequest("openai:gpt-4o", (_text(Role.USER, "lorem ipsum " * (OFFLOAD_CHARS // 10)),))
    assert await count_prompt("o200k_base", small) == counter_for("o200k_base").prompt(small)
    assert await count_prompt("", large) == APPROXIMATE.prompt(large)  # the approximation is cheap
    assert offloaded == []
    assert await count_prompt("o200k_base", large) == counter_for("o200k_base").prompt(large)
    text = "lorem ipsum " * (OFFLOAD_CHARS // 10)
    assert await count_completion("o200k_base", text) == counter_for("o200k_base").completion(text)
    assert offloaded == ["prompt", "completion"]


async def test_an_encoding_is_loaded_in_a_worker_thread_and_never_waited_for_where_it_cannot_be(
    monkeypatch: pytest.MonkeyPatch, offloaded: list[str]
) -> None:
    monkeypatch.setattr(count_module, "is_loaded", lambda name: False)
    small = ChatRequest("openai:gpt-4o", (_text(Role.USER, "short"),))
    assert (await count_prompt("o200k_base", small)).exact
    assert offloaded == ["prompt"]
    # A stream being cancelled cannot await the load: it counts by the approximation instead.
    assert ready_counter("o200k_base") is APPROXIMATE
    assert ready_counter("") is APPROXIMATE


def test_a_count_says_how_it_was_counted() -> None:
    assert TokenCount(10, exact=True).method is CountMethod.EXACT
    assert TokenCount(10, exact=False).method is CountMethod.APPROXIMATE
    # By the model's server: its own tokenizer, exact or not (its chat template may be unknown).
    assert TokenCount(10, exact=True, by_server=True).method is CountMethod.PROVIDER
    assert TokenCount(10, exact=False, by_server=True).method is CountMethod.PROVIDER


def test_a_server_tokenizer_names_the_server_and_model() -> None:
    tokenizer = tokenizer_id("llama_cpp", "http://gpu-box:8080/v1", "qwen3:8b")
    assert tokenizer == "server:llama_cpp:http://gpu-box:8080 qwen3:8b"
    assert (
        server_root("http://gpu-box:8080/v1") == server_root("http://gpu-box:8080") == "http://gpu-box:8080"
    )
    # Code that cannot await a server (a stream being cancelled) gets the approximation.
    assert counter_for(tokenizer) is APPROXIMATE
    assert ready_counter(tokenizer) is APPROXIMATE


async def test_a_server_nobody_registered_is_never_asked() -> None:
    tokenizer = tokenizer_id("llama_cpp_python", "http://127.0.0.1:9/v1", "model")
    request = ChatRequest("local:model", (_text(Role.USER, "31415926"),))
    assert await count_prompt(tokenizer, request) == APPROXIMATE.prompt(request)
    assert (await count_prompt(tokenizer, request)).method is CountMethod.APPROXIMATE
    assert await count_completion(tokenizer, "31415926") == APPROXIMATE.completion("31415926")
