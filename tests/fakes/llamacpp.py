"""Fake llama.cpp and llama-cpp-python servers on loopback, each speaking its own wire format.

Both serve Chat Completions at `/v1/chat/completions` like the OpenAI fake (scripted replies, or an
echo of the last user message), recording every request, plus what the real servers add and where
they differ, written from their sources:

- `FakeLlamaServer`, llama.cpp's server (`tools/server/README.md` and its handlers):
  `POST /apply-template` renders a Chat Completions body with the model's chat template and answers
  `{"prompt": "..."}` (an assistant turn needs `content` or `tool_calls`; a null content is fine);
  `POST /tokenize` takes `{"content", "add_special" (default false), "parse_special" (default
  true)}` and answers `{"tokens": [ids]}`. Echo replies report usage counted as the real server
  counts a chat call: its rendered prompt tokenized with special tokens added and parsed.
- `FakeLlamaCppPython`, llama-cpp-python's server (`llama_cpp/server/app.py`, `types.py`,
  `errors.py`, `llama_types.py`): a body its pydantic request model rejects is answered with HTTP
  500 and an `internal_server_error` body, as its route error handler does: an assistant turn
  whose `content` is not a string (null included), a `response_format` whose type is not "text" or
  "json_object". Streams carry no usage. `POST /extras/tokenize` answers `{"tokens": [ids]}` and
  `POST /extras/tokenize/count` `{"count": n}` for `{"input", "model"?}`, a BOS added to any input.

The model is a stand-in: a ChatML chat template (Qwen's style: tools in a system preamble, tool
calls as `<tool_call>` blocks), and a tokenizer where BOS, `<|im_start|>` and `<|im_end|>` are one
token each (parsed as such when special tokens are) and every digit, run of letters, run of spaces
and other character is one token. It counts unlike four characters per token on purpose (a number
is a token per digit, as in many models' tokenizers), so tests can tell a count by the server from
the gateway's approximation. The counts requests are recorded apart, in `count_requests`, and can be
made to fail (`count_status`) or hang (`count_delay`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from aiohttp import web

from tests.fakes.openai import FakeOpenAI, Reply, completion, text_chunks
from tests.fakes.server import FakeServer, Recorded, last_user_text, words

BOS = 1
_SPECIAL = {"<|im_start|>": 2, "<|im_end|>": 3}
_SPECIAL_PATTERN = re.compile("(" + "|".join(re.escape(s) for s in _SPECIAL) + ")")
_PIECES = re.compile(r"\d|[^\W\d_]+| +|\s|.", re.DOTALL)


def tokenize(text: str, *, add_special: bool, parse_special: bool) -> list[int]:
    """The stand-in model's tokenizer: token ids for `text`."""
    ids = [BOS] if add_special else []
    chunks = _SPECIAL_PATTERN.split(text) if parse_special else [text]
    for chunk in chunks:
        if chunk in _SPECIAL and parse_special:
            ids.append(_SPECIAL[chunk])
        else:
            ids.extend(100 + sum(map(ord, piece)) % 30000 for piece in _PIECES.findall(chunk))
    return ids


def count(text: str, *, add_special: bool = False, parse_special: bool = False) -> int:
    return len(tokenize(text, add_special=add_special, parse_special=parse_special))


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if p.get("type") == "text")
    return content or ""


def render(body: dict[str, Any]) -> str:
    """The stand-in chat template: a body's messages and tools as the model's prompt, ending with
    the generation prompt. Raises ValueError on a message the template cannot render."""
    out = []
    if body.get("tools"):
        tools = "\n".join(json.dumps(tool["function"], separators=(",", ":")) for tool in body["tools"])
        out.append(f"<|im_start|>system\n# Tools\n{tools}<|im_end|>\n")
    for message in body.get("messages", []):
        role, calls = message.get("role"), message.get("tool_calls") or []
        if role == "assistant" and "content" not in message and not calls:
            raise ValueError("Expected 'content' or 'tool_calls'")
        text = _content_text(message.get("content"))
        for call in calls:
            function = call["function"]
            block = json.dumps({"name": function["name"], "arguments": function["arguments"]})
            text += f"\n<tool_call>\n{block}\n</tool_call>"
        out.append(f"<|im_start|>{role}\n{text}<|im_end|>\n")
    out.append("<|im_start|>assistant\n")
    return "".join(out)


def prompt_tokens(body: dict[str, Any]) -> int:
    """What a chat call's prompt counts on both servers: the rendered prompt, special tokens added
    and parsed."""
    return count(render(body), add_special=True, parse_special=True)


class _CountingServer(FakeOpenAI):
    """The OpenAI fake plus token-count routes, recorded apart and made to fail or hang at will."""

    count_routes: tuple[str, ...] = ()

    def __init__(self) -> None:
        FakeServer.__init__(self, ["/v1/chat/completions", *self.count_routes])
        self.count_requests: list[Recorded] = []
        self.count_status = 200  # another status fails every count request
        self.count_delay = 0.0  # seconds before a count request is answered

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path not in self.count_routes:
            return await super()._handle(request)
        body = await request.json()
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.count_requests.append(Recorded(request.method, request.path, headers, body))
        if self.count_delay:
            await self._hang(self.count_delay)
        if self.count_status != 200:
            return web.json_response(self._error(self.count_status, "failing"), status=self.count_status)
        try:
            return web.json_response(self._count(request.path, body))
        except ValueError as exc:
            return web.json_response(self._error(400, str(exc)), status=400)

    def _count(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _error(self, status: int, message: str) -> dict[str, Any]:
        raise NotImplementedError


class FakeLlamaServer(_CountingServer):
    """llama.cpp's server (llama-server)."""

    count_routes = ("/apply-template", "/tokenize")

    def _error(self, status: int, message: str) -> dict[str, Any]:
        # format_error_response: 400 is an invalid request (std::invalid_argument), 500 the server's.
        kind = "invalid_request_error" if status == 400 else "server_error"
        return {"error": {"code": status, "message": message, "type": kind}}

    def _count(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if path == "/apply-template":
            return {"prompt": render(body)}
        add_special = bool(body.get("add_special", False))
        parse_special = bool(body.get("parse_special", True))
        return {"tokens": tokenize(body["content"], add_special=add_special, parse_special=parse_special)}

    def _echo(self, body: dict[str, Any]) -> Reply:
        text = last_user_text(body)
        use = {
            "prompt_tokens": prompt_tokens(body),
            "completion_tokens": count(text),
            "total_tokens": prompt_tokens(body) + count(text),
        }
        if body.get("stream"):
            include = (body.get("stream_options") or {}).get("include_usage")
            return Reply(sse=text_chunks(words(text), use if include else None))
        return Reply(json_body=completion(text, usage_=use))


def python_error(message: str) -> dict[str, Any]:
    """llama-cpp-python's body for an exception its route handler did not expect (HTTP 500)."""
    return {"error": {"message": message, "type": "internal_server_error", "param": None, "code": None}}


class FakeLlamaCppPython(_CountingServer):
    """llama-cpp-python's server (`python -m llama_cpp.server`)."""

    count_routes = ("/extras/tokenize", "/extras/tokenize/count")

    def _error(self, status: int, message: str) -> dict[str, Any]:
        return python_error(message)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path in self.count_routes:
            return await super()._handle(request)
        body = await request.json()
        problem = _invalid(body)
        if problem is None:
            return await super()._handle(request)
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(Recorded(request.method, request.path, headers, body))
        return web.json_response(python_error(problem), status=500)

    def _count(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        # Llama.tokenize(input, add_bos=True, special=True): a BOS on every input.
        tokens = tokenize(body["input"], add_special=True, parse_special=True)
        return {"count": len(tokens)} if path.endswith("/count") else {"tokens": tokens}

    def _echo(self, body: dict[str, Any]) -> Reply:
        text = last_user_text(body)
        model = str(body.get("model") or "model.gguf")
        if body.get("stream"):
            return Reply(sse=python_chunks(model, words(text)))
        prompt, output = prompt_tokens(body), count(text)
        usage = {"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output}
        return Reply(json_body=python_completion(model, text, usage))


def _invalid(body: dict[str, Any]) -> str | None:
    """Why llama-cpp-python's request model would reject `body`, as its error message says it."""
    for i, message in enumerate(body.get("messages", [])):
        content = message.get("content", "")
        if message.get("role") == "assistant" and not isinstance(content, str):
            return (
                f"1 validation error for CreateChatCompletionRequest\nmessages.{i}.assistant.content\n"
                f"  Input should be a valid string [type=string_type, input_value={content!r}]"
            )
    fmt = body.get("response_format")
    if fmt is not None and fmt.get("type") not in ("text", "json_object"):
        return (
            "1 validation error for CreateChatCompletionRequest\nresponse_format.type\n"
            f"  Input should be 'text' or 'json_object' [type=literal_error, input_value={fmt.get('type')!r}]"
        )
    return None


_CREATED = 1_763_800_000


def python_completion(model: str, text: str, usage: dict[str, int]) -> dict[str, Any]:
    """A unary reply as llama-cpp-python converts a text completion to a chat completion."""
    return {
        "id": "chatcmpl-5f4d2c1e-fake",
        "object": "chat.completion",
        "created": _CREATED,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": usage,
    }


def python_chunks(model: str, pieces: list[str]) -> list[dict[str, Any] | str]:
    """A streamed reply as llama-cpp-python sends it: a role chunk, content chunks, a finish chunk
    with an empty delta, `[DONE]`; no usage anywhere."""

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-5f4d2c1e-fake",
            "model": model,
            "created": _CREATED,
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    return [
        chunk({"role": "assistant"}),
        *(chunk({"content": piece}) for piece in pieces),
        chunk({}, "stop"),
        "[DONE]",
    ]
