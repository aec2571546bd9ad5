"""Counting a request's prompt tokens and a reply's output tokens for one model.

A model whose encoding is available offline (OpenAI's models: `encodings.py`) is counted with it; a
model whose server counts tokens (llama.cpp's, llama-cpp-python's: `server.py`) by that server,
falling back to the approximation when it cannot answer; every other model with the documented
approximation (`approximate.py`). A count is exact only when every part of the prompt went through
the model's tokenizer in the framing the model sees: with an OpenAI encoding, text messages of the
system, user and assistant roles (the framing OpenAI documents); with a server, what its chat
template renders. Images, and for OpenAI's encodings tool definitions, tool calls and results and
JSON schemas, are framed by the provider in ways it does not publish, so a prompt with any of them
is counted as closely as possible and reported as approximate.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Protocol

from llm_gateway.domain.messages import ChatRequest, ImagePart, Role, TextPart, ToolCall
from llm_gateway.tokens import approximate, server
from llm_gateway.tokens.encodings import get_encoding, is_loaded

# OpenAI's chat framing (the OpenAI Cookbook's count for every chat model since gpt-3.5-turbo-0613):
# each message costs 3 tokens plus its role, a name 1 more, and every reply is primed with 3.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3
_EXACT_ROLES = frozenset({Role.SYSTEM, Role.USER, Role.ASSISTANT})


class CountMethod(StrEnum):
    EXACT = "exact"  # the model's own tokenizer, offline, every part of the prompt
    PROVIDER = "provider"  # the server that runs the model, with its tokenizer (`server.py`)
    APPROXIMATE = "approximate"  # the documented approximation


@dataclass(frozen=True, slots=True)
class TokenCount:
    tokens: int
    exact: bool  # counted with the model's own tokenizer, every part of it
    by_server: bool = False  # counted by the server that runs the model

    @property
    def method(self) -> CountMethod:
        if self.by_server:
            return CountMethod.PROVIDER
        return CountMethod.EXACT if self.exact else CountMethod.APPROXIMATE


class Counter(Protocol):
    def prompt(self, request: ChatRequest) -> TokenCount: ...

    def completion(self, text: str, tool_calls: Sequence[ToolCall] = ()) -> int: ...


class ApproximateCounter:
    def prompt(self, request: ChatRequest) -> TokenCount:
        return TokenCount(approximate.prompt_tokens(request), exact=False)

    def completion(self, text: str, tool_calls: Sequence[ToolCall] = ()) -> int:
        return approximate.completion_tokens(text, tool_calls)


class EncodingCounter:
    """Counts with a tiktoken encoding, in OpenAI's chat format."""

    def __init__(self, encoding: str) -> None:
        self._encoding = encoding

    def _count(self, text: str) -> int:
        # encode_ordinary: special-token text in a prompt is plain text to the API as well.
        return len(get_encoding(self._encoding).encode_ordinary(text)) if text else 0

    def prompt(self, request: ChatRequest) -> TokenCount:
        count = self._count
        exact = True
        tokens = TOKENS_REPLY_PRIMING
        for message in request.messages:
            tokens += TOKENS_PER_MESSAGE + count(message.role.value)
            if message.name:
                tokens += count(message.name) + TOKENS_PER_NAME
            texts = 0
            for part in message.parts:
                if isinstance(part, TextPart):
                    tokens += count(part.text)
                    texts += 1
                elif isinstance(part, ImagePart):
                    tokens += approximate.TOKENS_PER_IMAGE
                    exact = False
            for call in message.tool_calls:
                tokens += count(call.name) + count(call.arguments)
            if texts > 1 or message.tool_calls or message.role not in _EXACT_ROLES:
                exact = False
        for text in approximate.definition_texts(request):
            tokens += count(text)
            exact = False  # tools and schemas are framed in ways OpenAI does not publish
        return TokenCount(tokens, exact)

    def completion(self, text: str, tool_calls: Sequence[ToolCall] = ()) -> int:
        return self._count(text) + sum(self._count(c.name) + self._count(c.arguments) for c in tool_calls)


APPROXIMATE = ApproximateCounter()

# Exact counting runs at about 6 tokens per µs: a prompt past this many characters (about 1.5 ms
# of counting) is counted in a worker thread, where tiktoken releases the GIL, so one huge prompt
# does not stall every other call on the event loop.
OFFLOAD_CHARS = 32_000


def _chars(request: ChatRequest) -> int:
    size = 0
    for message in request.messages:
        for part in message.parts:
            if isinstance(part, TextPart):
                size += len(part.text)
        for call in message.tool_calls:
            size += len(call.arguments)
    return size


async def count_prompt(encoding: str, request: ChatRequest) -> TokenCount:
    """`counter_for(encoding).prompt(request)`, off the event loop when the prompt is large; for a
    model its server counts, the server's count, or the approximation when the server could not."""
    if server.is_server_tokenizer(encoding):
        counted = await server.count_prompt(encoding, request)
        if counted is None:
            return APPROXIMATE.prompt(request)
        return TokenCount(counted.tokens, counted.exact, by_server=True)
    counter = counter_for(encoding)
    if encoding and (_chars(request) > OFFLOAD_CHARS or not is_loaded(encoding)):
        return await asyncio.to_thread(counter.prompt, request)
    return counter.prompt(request)


async def count_completion(encoding: str, text: str, tool_calls: Sequence[ToolCall] = ()) -> int:
    """`counter_for(encoding).completion(...)`, off the event loop when the text is large; for a
    model its server counts, the server's count, or the approximation when the server could not."""
    if server.is_server_tokenizer(encoding):
        counted = await server.count_completion(encoding, text, tool_calls)
        return APPROXIMATE.completion(text, tool_calls) if counted is None else counted
    counter = counter_for(encoding)
    if encoding and (len(text) > OFFLOAD_CHARS or not is_loaded(encoding)):
        return await asyncio.to_thread(counter.completion, text, tool_calls)
    return counter.completion(text, tool_calls)


@cache
def counter_for(encoding: str) -> Counter:
    """The counter for a model's `tokenizer`: an encoding name, or "" for the approximation.
    Counting loads the encoding on first use, on the calling thread; `count_prompt` and
    `count_completion` load it in a worker thread instead. A model its server counts has only the
    approximation here: a server is asked through `count_prompt` and `count_completion`."""
    if not encoding or server.is_server_tokenizer(encoding):
        return APPROXIMATE
    return EncodingCounter(encoding)


def ready_counter(encoding: str) -> Counter:
    """`counter_for(encoding)` if its encoding is loaded, else the approximation: for code that
    must not wait (a stream being cancelled, which cannot ask a server either)."""
    return counter_for(encoding) if not encoding or is_loaded(encoding) else APPROXIMATE
