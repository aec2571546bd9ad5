"""A fake Ollama server on loopback, speaking the native chat API (`POST /api/chat`).

It records every request it receives. Replies are scripted per test (a JSON body, NDJSON lines with
an optional delay between them, error bodies, raw bytes, or a stream that drops before its last
line) or, when nothing is scripted, an echo of the last user message: one chat response object, or
(when the body has `"stream": true`, and when `stream` is left out: Ollama streams by default) one
line per word and a last `done: true` line with the done reason, durations and token counts.

Shapes are Ollama's: a response carries `model`, `created_at`, `message` {role, content, and
tool_calls [{function: {name, arguments (an object)}}] without ids}, `done`, and on the last object
`done_reason` and the metrics; a zero count is left out, as Ollama's `omitempty` does. Errors are
`{"error": "message"}`, with the HTTP status or as a line inside a 200 stream. Checked against the
official `ollama` SDK in tests/test_fake_ollama.py.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiohttp import web

from tests.fakes.server import FakeServer, last_user_text, words

MODEL = "llama3.2"
CREATED_AT = "2025-10-26T17:15:24.097767Z"
NDJSON = "application/x-ndjson"

_dumps = partial(json.dumps, separators=(",", ":"))

# A line of a scripted stream: a dict is sent as compact JSON, a str verbatim (malformed-line tests).
Line = dict[str, Any] | str


@dataclass
class Reply:
    status: int = 200
    json_body: Any = None
    lines: Sequence[Line] | None = None  # NDJSON, one JSON value per line
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunk_delay: float = 0.0  # seconds between lines
    # NDJSON: send the lines before the `done: true` one, then drop the connection, as a failing
    # upstream would (no done reason, no counts).
    end_early: bool = False


# --- Bodies -------------------------------------------------------------------------------------


def tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"function": {"name": name, "arguments": arguments}}


def message(
    content: str = "", *, tool_calls: Sequence[dict[str, Any]] = (), thinking: str | None = None
) -> dict[str, Any]:
    """An assistant message. `thinking` is there when thinking was on."""
    out: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking is not None:
        out["thinking"] = thinking
    if tool_calls:
        out["tool_calls"] = list(tool_calls)
    return out


def metrics(prompt_eval_count: int | None = 26, eval_count: int | None = 8) -> dict[str, Any]:
    """The last object's durations (nanoseconds) and counts. A count of 0 or None is left out, as
    Ollama leaves out `prompt_eval_count` when the whole prompt came from its cache."""
    out: dict[str, Any] = {"total_duration": 5191566416, "load_duration": 2154458}
    if prompt_eval_count:
        out["prompt_eval_count"] = prompt_eval_count
    out["prompt_eval_duration"] = 383809000
    if eval_count:
        out["eval_count"] = eval_count
    out["eval_duration"] = 4799921000
    return out


def chat_response(
    message_: dict[str, Any],
    *,
    done_reason: str = "stop",
    prompt_eval_count: int | None = 26,
    eval_count: int | None = 8,
    model: str = MODEL,
) -> dict[str, Any]:
    """A whole (`"stream": false`) reply."""
    return {
        "model": model,
        "created_at": CREATED_AT,
        "message": message_,
        "done_reason": done_reason,
        "done": True,
        **metrics(prompt_eval_count, eval_count),
    }


def chunk(message_: dict[str, Any], *, model: str = MODEL) -> dict[str, Any]:
    """A stream line before the last."""
    return {"model": model, "created_at": CREATED_AT, "message": message_, "done": False}


def final_chunk(
    *,
    done_reason: str = "stop",
    prompt_eval_count: int | None = 26,
    eval_count: int | None = 8,
    model: str = MODEL,
) -> dict[str, Any]:
    """The last stream line: empty content, the done reason and the metrics."""
    return chat_response(
        message(""),
        done_reason=done_reason,
        prompt_eval_count=prompt_eval_count,
        eval_count=eval_count,
        model=model,
    )


def text_lines(
    pieces: Sequence[str],
    *,
    done_reason: str = "stop",
    prompt_eval_count: int | None = 26,
    eval_count: int | None = None,
    model: str = MODEL,
) -> list[dict[str, Any]]:
    """A streamed text reply; `eval_count` defaults to one token per piece."""
    count = eval_count if eval_count is not None else len(pieces)
    return [
        *(chunk(message(piece), model=model) for piece in pieces),
        final_chunk(
            done_reason=done_reason, prompt_eval_count=prompt_eval_count, eval_count=count, model=model
        ),
    ]


def tool_call_lines(
    text_pieces: Sequence[str],
    calls: Sequence[dict[str, Any]],
    *,
    prompt_eval_count: int | None = 120,
    eval_count: int | None = 33,
    model: str = MODEL,
) -> list[dict[str, Any]]:
    """A streamed reply with some text, then every tool call whole in one line (as Ollama sends
    the calls of one turn), then the last line, whose done reason is "stop" as after text."""
    return [
        *(chunk(message(piece), model=model) for piece in text_pieces),
        chunk(message("", tool_calls=calls), model=model),
        final_chunk(prompt_eval_count=prompt_eval_count, eval_count=eval_count, model=model),
    ]


def error_body(text: str) -> dict[str, Any]:
    return {"error": text}


def error_reply(status: int, text: str) -> Reply:
    """An HTTP error as Ollama sends it, e.g. 404 `model "x" not found, try pulling it first`."""
    return Reply(status=status, json_body=error_body(text))


def ndjson_bytes(lines: Sequence[Line]) -> bytes:
    """The bytes the fake writes for `lines`."""
    return b"".join(_frame(line) for line in lines)


def _frame(line: Line) -> bytes:
    return (line if isinstance(line, str) else _dumps(line)).encode() + b"\n"


# --- Server -------------------------------------------------------------------------------------


class FakeOllama(FakeServer[Reply]):
    def __init__(self) -> None:
        super().__init__(["/api/chat"])

    @property
    def base_url(self) -> str:
        """The server root: clients append `/api/chat`."""
        return f"http://127.0.0.1:{self.port}"

    async def _reply(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        if reply.raw is not None:
            return web.Response(status=reply.status, body=reply.raw, headers=reply.headers)
        if reply.lines is None:
            return web.json_response(
                reply.json_body, status=reply.status, headers=reply.headers, dumps=_dumps
            )
        response = web.StreamResponse(status=reply.status, headers={"Content-Type": NDJSON, **reply.headers})
        lines: Sequence[Line] = reply.lines
        if reply.end_early:
            lines = list(itertools.takewhile(lambda line: not _is_last(line), lines))
        frames = (_frame(line) for line in lines)
        return await self._stream(
            request, response, frames, chunk_delay=reply.chunk_delay, drop=reply.end_early
        )

    def _echo(self, body: dict[str, Any]) -> Reply:
        text = last_user_text(body)
        model = str(body.get("model") or MODEL)
        prompt = 10 + len(json.dumps(body.get("messages", []))) // 4
        output = max(len(text) // 4, 1)
        if body.get("stream", True):
            return Reply(
                lines=text_lines(words(text), prompt_eval_count=prompt, eval_count=output, model=model)
            )
        return Reply(
            json_body=chat_response(message(text), prompt_eval_count=prompt, eval_count=output, model=model)
        )


def _is_last(line: Line) -> bool:
    return isinstance(line, dict) and bool(line.get("done"))
