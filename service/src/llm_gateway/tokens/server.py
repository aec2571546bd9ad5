"""Token counts from the server that runs the model: the model's own tokenizer, asked over HTTP.

Local servers load the model's tokenizer and chat template, which the gateway cannot have offline,
and some answer token counts over HTTP (the dialect's `tokenize` names how):

- llama.cpp's server (`llama_cpp`): `POST /apply-template` renders a Chat Completions body with
  the model's chat template, as a chat call does, and answers `{"prompt": "..."}`;
  `POST /tokenize` with `{"content": prompt, "add_special": true, "parse_special": true}`
  tokenizes it as a chat call does and answers `{"tokens": [...]}`. The count is the
  `prompt_tokens` the server will report, images aside (counted by the approximation).
- llama-cpp-python's server (`llama_cpp_python`): `POST /extras/tokenize/count` with
  `{"model", "input"}` answers `{"count": n}`, the input tokenized with special tokens parsed and a
  BOS added where the model adds one. It exposes no chat template, so the messages' text goes
  through the model's tokenizer and each message's framing is the approximation's.

A server counter is registered when the providers are built (it needs the shared HTTP client and
the server's URL and key) and found by the model's tokenizer id (`tokenizer_id`). Counting never
fails or stalls a call: a count has `TIMEOUT` seconds, any failure answers None (the caller falls
back to the approximation and reports it), and a server that failed is not asked again for
`RETRY_AFTER` seconds, so a server without the endpoint or busy with another request costs one
timeout, not one per call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import aiohttp

from llm_gateway.domain.messages import ChatRequest, ImagePart, TextPart, ToolCall
from llm_gateway.tokens import approximate
from llm_gateway.tokens.approximate import TOKENS_PER_IMAGE, TOKENS_PER_MESSAGE, TOKENS_REPLY_PRIMING
from llm_gateway.untrusted import Scrubber

TokenizeApi = Literal["llama_cpp", "llama_cpp_python"]

# Seconds one count may take, every request of it together.
TIMEOUT = 1.0
# Seconds a server whose count failed is left alone before it is asked again.
RETRY_AFTER = 30.0

_PREFIX = "server:"
_log = logging.getLogger("llm_gateway.tokens")

T = TypeVar("T")


def server_root(base_url: str) -> str:
    """Where a server's own endpoints live: its Chat Completions `base_url` without the `/v1`."""
    return base_url.rstrip("/").removesuffix("/v1")


def tokenizer_id(api: TokenizeApi, base_url: str, model: str) -> str:
    """The `ModelSpec.tokenizer` of a model whose server counts its tokens: the API, the server and
    the model, so that counts are cached per model and the server is found without a lookup."""
    return f"{_PREFIX}{api}:{server_root(base_url)} {model}"


def is_server_tokenizer(tokenizer: str) -> bool:
    return tokenizer.startswith(_PREFIX)


@dataclass(frozen=True, slots=True)
class ServerCount:
    tokens: int
    exact: bool  # every part went through the server's chat template and tokenizer


@dataclass(eq=False)
class _Server:
    api: TokenizeApi
    root: str
    http: aiohttp.ClientSession
    headers: Mapping[str, str]
    render: Callable[[ChatRequest], dict[str, Any]]  # the prompt part of the Chat Completions body
    resting_until: float = 0.0  # time.monotonic() before which the server is not asked
    added: dict[str, int] = field(default_factory=dict)  # llama-cpp-python: tokens added to any input


_servers: dict[tuple[str, str], _Server] = {}


def register(
    api: TokenizeApi,
    base_url: str,
    http: aiohttp.ClientSession,
    headers: Mapping[str, str],
    render: Callable[[ChatRequest], dict[str, Any]],
) -> None:
    """Counts for the models of the server at `base_url` go to it through `http`, with `headers`
    (its key); `render` gives the messages and tools of a request as the server's chat calls take
    them. A gateway started again registers its new client in place of the old one."""
    root = server_root(base_url)
    _servers[(api, root)] = _Server(api, root, http, {"Content-Type": "application/json", **headers}, render)


def _find(tokenizer: str) -> tuple[_Server, str] | None:
    api, _, rest = tokenizer.removeprefix(_PREFIX).partition(":")
    root, _, model = rest.partition(" ")
    server = _servers.get((api, root))
    return None if server is None else (server, model)


async def count_prompt(tokenizer: str, request: ChatRequest) -> ServerCount | None:
    """The prompt's tokens as the model's server counts them; None when it could not."""
    found = _find(tokenizer)
    if found is None:
        return None
    server, model = found
    if server.api == "llama_cpp":
        return await _guarded(server, lambda: _llama_cpp_prompt(server, model, request))
    return await _guarded(server, lambda: _llama_cpp_python_prompt(server, model, request))


async def count_completion(tokenizer: str, text: str, tool_calls: Sequence[ToolCall] = ()) -> int | None:
    """The output's tokens as the model's server counts them; None when it could not."""
    output = _joined([text, *(piece for call in tool_calls for piece in (call.name, call.arguments))])
    if not output:
        return 0
    found = _find(tokenizer)
    if found is None:
        return None
    server, model = found
    if server.api == "llama_cpp":
        return await _guarded(server, lambda: _llama_cpp_tokens(server, model, output, special=False))
    return await _guarded(server, lambda: _llama_cpp_python_output(server, model, output))


async def _guarded(server: _Server, count: Callable[[], Awaitable[T]]) -> T | None:
    """`count()` within `TIMEOUT`, or None (logged once, then the server rests) on any failure."""
    if server.http.closed or time.monotonic() < server.resting_until:
        return None
    try:
        async with asyncio.timeout(TIMEOUT):
            return await count()
    except Exception as exc:  # whatever went wrong, the call goes on with the approximation
        server.resting_until = time.monotonic() + RETRY_AFTER
        # The failure may quote the server: untrusted text, scrubbed of its key like any other.
        secrets = [value.partition(" ")[2] or value for value in server.headers.values()]
        _log.warning(
            "token counting by %s failed (%s); approximating for %.0f s",
            server.root,
            type(exc).__name__ if isinstance(exc, TimeoutError) else Scrubber(secrets).text(str(exc)),
            RETRY_AFTER,
        )
        return None


async def _post(server: _Server, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with server.http.post(server.root + path, json=body, headers=server.headers) as response:
        if response.status != 200:
            raise ValueError(f"{path} answered HTTP {response.status}")
        reply = await response.json(content_type=None)
    if not isinstance(reply, dict):
        raise ValueError(f"{path} answered no JSON object")
    return reply


async def _llama_cpp_prompt(server: _Server, model: str, request: ChatRequest) -> ServerCount:
    reply = await _post(server, "/apply-template", {**server.render(request), "model": model})
    prompt = reply.get("prompt")
    if not isinstance(prompt, str):
        raise ValueError("/apply-template answered no prompt")
    # A chat call tokenizes its rendered prompt with special tokens added and parsed, and so does this.
    tokens = await _llama_cpp_tokens(server, model, prompt, special=True)
    images = _images(request)
    return ServerCount(tokens + images * TOKENS_PER_IMAGE, exact=images == 0)


async def _llama_cpp_tokens(server: _Server, model: str, content: str, *, special: bool) -> int:
    body = {"model": model, "content": content, "add_special": special, "parse_special": special}
    tokens = (await _post(server, "/tokenize", body)).get("tokens")
    if not isinstance(tokens, list):
        raise ValueError("/tokenize answered no tokens")
    return len(tokens)


async def _llama_cpp_python_count(server: _Server, model: str, text: str) -> int:
    count = (await _post(server, "/extras/tokenize/count", {"model": model, "input": text})).get("count")
    if not isinstance(count, int) or isinstance(count, bool):
        raise ValueError("/extras/tokenize/count answered no count")
    return count


async def _llama_cpp_python_prompt(server: _Server, model: str, request: ChatRequest) -> ServerCount:
    # The BOS the tokenizer adds to the input is the one the prompt starts with.
    text_tokens = await _llama_cpp_python_count(server, model, _joined(_prompt_texts(request)))
    framing = TOKENS_REPLY_PRIMING + TOKENS_PER_MESSAGE * len(request.messages)
    return ServerCount(text_tokens + framing + _images(request) * TOKENS_PER_IMAGE, exact=False)


async def _llama_cpp_python_output(server: _Server, model: str, output: str) -> int:
    # Its tokenizer adds a BOS (where the model has one) to every input, which output has not:
    # the tokens it adds to an empty input are taken off, learnt once per model.
    added = server.added.get(model)
    if added is None:
        added = server.added[model] = await _llama_cpp_python_count(server, model, "")
    return max(await _llama_cpp_python_count(server, model, output) - added, 0)


def _prompt_texts(request: ChatRequest) -> Iterator[str]:
    """Every piece of text the prompt carries, as the approximation counts it."""
    for message in request.messages:
        yield message.name
        for part in message.parts:
            if isinstance(part, TextPart):
                yield part.text
        for call in message.tool_calls:
            yield call.name
            yield call.arguments
    yield from approximate.definition_texts(request)


def _joined(pieces: Iterator[str] | Sequence[str]) -> str:
    return "\n".join(piece for piece in pieces if piece)


def _images(request: ChatRequest) -> int:
    return sum(isinstance(part, ImagePart) for message in request.messages for part in message.parts)
