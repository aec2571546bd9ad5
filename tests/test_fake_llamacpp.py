"""The llama.cpp and llama-cpp-python fakes against the `openai` SDK, which both servers are used
with: it parses every chat reply and stream they send; and their own endpoints and quirks, asked
over plain HTTP as the servers document them."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai
import pytest

from tests.fakes.llamacpp import FakeLlamaCppPython, FakeLlamaServer, count, prompt_tokens, render, tokenize

# Typed loosely: the SDK's request types know neither llama-cpp-python's response_format schema nor
# a null content (which it is tested to reject).
USER: list[Any] = [{"role": "user", "content": "Pi to 8 digits?"}]
SCHEMA: dict[str, Any] = {"type": "object"}
TOOL_TURNS: list[Any] = [
    *USER,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "pi", "arguments": '{"digits":8}'}}
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "3.1415926"},
]


def client(base_url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)


async def post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        return response.status, await response.json()


def test_the_tokenizer_splits_digits_and_parses_special_tokens() -> None:
    assert count("31415") == 5
    assert count("Hello world") == 3  # "Hello", " ", "world"
    assert count("<|im_start|>user", parse_special=True) == 2
    assert count("<|im_start|>user") == 8  # "<", "|", "im", "_", "start", "|", ">", "user"
    assert tokenize("", add_special=True, parse_special=True) == [1]


@pytest.mark.parametrize("fake_type", [FakeLlamaServer, FakeLlamaCppPython])
async def test_the_sdk_parses_both_servers_replies(
    fake_type: type[FakeLlamaServer | FakeLlamaCppPython],
) -> None:
    async with fake_type() as fake:
        sdk = client(fake.base_url)
        reply = await sdk.chat.completions.create(model="qwen2.5-0.5b", messages=USER)
        chunks = [
            c
            async for c in await sdk.chat.completions.create(model="qwen2.5-0.5b", messages=USER, stream=True)
        ]
    assert reply.choices[0].message.content == "Pi to 8 digits?"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == prompt_tokens({"messages": USER})
    assert reply.usage.completion_tokens == count("Pi to 8 digits?")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Pi to 8 digits?"
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_llama_cpp_python_streams_carry_no_usage(llama_cpp_python: FakeLlamaCppPython) -> None:
    sdk = client(llama_cpp_python.base_url)
    stream = await sdk.chat.completions.create(
        model="m", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    assert [c.usage async for c in stream] == [None] * 6  # the role, 4 words ("Pi ", "to ", ...), the finish


async def test_llama_cpp_python_answers_500_to_what_its_request_model_rejects(
    llama_cpp_python: FakeLlamaCppPython,
) -> None:
    sdk = client(llama_cpp_python.base_url)
    with pytest.raises(openai.InternalServerError) as null_content:
        await sdk.chat.completions.create(model="m", messages=TOOL_TURNS)
    with pytest.raises(openai.InternalServerError) as schema_type:
        await sdk.chat.completions.create(
            model="m",
            messages=USER,
            response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA}},
        )
    empty = [*TOOL_TURNS[:1], {**TOOL_TURNS[1], "content": ""}, TOOL_TURNS[2]]
    json_object_with_schema: Any = {"type": "json_object", "schema": SCHEMA}
    accepted = await sdk.chat.completions.create(
        model="m",
        messages=empty,
        response_format=json_object_with_schema,
    )
    assert "assistant.content" in str(null_content.value)
    assert isinstance(null_content.value.body, dict)
    assert null_content.value.body["type"] == "internal_server_error"
    assert "'text' or 'json_object'" in str(schema_type.value)
    assert accepted.choices[0].message.content == "Pi to 8 digits?"


async def test_llama_cpp_python_tokenizes_with_a_bos(llama_cpp_python: FakeLlamaCppPython) -> None:
    root = llama_cpp_python.base_url.removesuffix("/v1")
    status, tokens = await post(f"{root}/extras/tokenize", {"input": "2718"})
    _, counted = await post(f"{root}/extras/tokenize/count", {"model": "m", "input": "2718"})
    _, empty = await post(f"{root}/extras/tokenize/count", {"input": ""})
    assert status == 200
    assert tokens["tokens"][0] == 1  # the BOS
    assert len(tokens["tokens"]) == 5
    assert (counted, empty) == ({"count": 5}, {"count": 1})


async def test_llama_server_renders_and_tokenizes_as_a_chat_call_counts(
    llama_server: FakeLlamaServer,
) -> None:
    root = llama_server.base_url.removesuffix("/v1")
    _, rendered = await post(f"{root}/apply-template", {"messages": TOOL_TURNS})
    _, tokens = await post(f"{root}/tokenize", {"content": rendered["prompt"], "add_special": True})
    _, plain = await post(f"{root}/tokenize", {"content": "<|im_end|>", "parse_special": False})
    status, missing = await post(f"{root}/apply-template", {"messages": [{"role": "assistant"}]})
    assert rendered["prompt"] == render({"messages": TOOL_TURNS})
    assert rendered["prompt"].endswith("<|im_start|>assistant\n")
    assert '<tool_call>\n{"name": "pi", "arguments": "{\\"digits\\":8}"}\n</tool_call>' in rendered["prompt"]
    reply = await client(llama_server.base_url).chat.completions.create(model="m", messages=TOOL_TURNS)
    assert reply.usage is not None
    assert len(tokens["tokens"]) == reply.usage.prompt_tokens
    assert len(plain["tokens"]) == 7  # "<", "|", "im", "_", "end", "|", ">"
    assert status == 400
    assert missing["error"]["type"] == "invalid_request_error"
    assert "Expected 'content' or 'tool_calls'" in missing["error"]["message"]
