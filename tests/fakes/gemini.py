"""A fake Gemini API server on loopback, speaking the real wire format.

It serves `POST /{version}/models/{model}:generateContent` and `:streamGenerateContent` and records
every request. Replies are scripted per test (a JSON body, SSE chunks, an error body with headers,
raw bytes) or, when nothing is scripted, an echo of the last user turn's text: a
`GenerateContentResponse`, or for a stream the same text in word-sized chunks, the last one with
`finishReason` STOP, every one with the usage so far.

Each SSE event is written as Google writes it: `data: <compact json>\\r\\n\\r\\n`, no event names and
no end marker; the stream ends when the response does. Builders return plain dicts of Google's
exact camelCase shapes (checked against the google-genai SDK's strict pydantic types in
tests/test_fake_gemini.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiohttp import web

from tests.fakes.server import FakeServer, words

MODEL_VERSION = "gemini-2.5-flash"
RESPONSE_ID = "8pADaZXBMuqlz7IPx56J8QU"

# The HTTP status Google answers with for each google.rpc status.
ERROR_STATUS: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}

_dumps = partial(json.dumps, separators=(",", ":"))


@dataclass
class Reply:
    status: int = 200
    json_body: Any = None
    # SSE chunks, each written as `data: <json>`; a str is sent verbatim (for malformed-data tests).
    chunks: Sequence[dict[str, Any] | str] | None = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunk_delay: float = 0.0
    # SSE: after the chunks, drop the connection instead of ending the response.
    drop: bool = False


# --- Bodies -------------------------------------------------------------------------------------


def usage_metadata(
    prompt: int,
    candidates: int | None,
    *,
    cached: int = 0,
    thoughts: int = 0,
    tool_use_prompt: int = 0,
) -> dict[str, Any]:
    """A `usageMetadata` object, as Gemini reports it: the cached tokens are part of `prompt`,
    thoughts are apart from `candidates` (None: no candidates count, as when nothing was output)."""
    meta: dict[str, Any] = {"promptTokenCount": prompt}
    if candidates is not None:
        meta["candidatesTokenCount"] = candidates
    meta["totalTokenCount"] = prompt + (candidates or 0) + thoughts + tool_use_prompt
    if cached:
        meta["cachedContentTokenCount"] = cached
    meta["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    if cached:
        meta["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": cached}]
    if tool_use_prompt:
        meta["toolUsePromptTokenCount"] = tool_use_prompt
    if thoughts:
        meta["thoughtsTokenCount"] = thoughts
    return meta


def text_part(text: str, *, thought: bool = False, signature: str | None = None) -> dict[str, Any]:
    """A text part; `thought` marks a thought summary. Signatures are base64 (proto bytes)."""
    part: dict[str, Any] = {"text": text}
    if thought:
        part["thought"] = True
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def function_call_part(
    name: str, args: dict[str, Any], *, call_id: str | None = None, signature: str | None = None
) -> dict[str, Any]:
    """A function call; Gemini 2.x sends no `id`, Gemini 3 may."""
    call: dict[str, Any] = {"name": name, "args": args}
    if call_id is not None:
        call["id"] = call_id
    part: dict[str, Any] = {"functionCall": call}
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def candidate(
    parts: Sequence[dict[str, Any]] | None, finish_reason: str | None = "STOP", *, index: int = 0
) -> dict[str, Any]:
    """A candidate; `parts` None leaves out `content` (as for one stopped for safety)."""
    out: dict[str, Any] = {}
    if parts is not None:
        out["content"] = {"parts": list(parts), "role": "model"}
    if finish_reason is not None:
        out["finishReason"] = finish_reason
    out["index"] = index
    return out


def response(
    candidates: Sequence[dict[str, Any]],
    usage: dict[str, Any] | None = None,
    *,
    response_id: str = RESPONSE_ID,
    model_version: str = MODEL_VERSION,
) -> dict[str, Any]:
    """A `GenerateContentResponse` (also the shape of every stream chunk)."""
    return {
        "candidates": list(candidates),
        "usageMetadata": usage if usage is not None else usage_metadata(10, 5),
        "modelVersion": model_version,
        "responseId": response_id,
    }


def text_response(
    text: str, usage: dict[str, Any] | None = None, finish_reason: str = "STOP"
) -> dict[str, Any]:
    return response([candidate([text_part(text)], finish_reason)], usage)


def blocked_response(block_reason: str = "SAFETY", prompt_tokens: int = 8) -> dict[str, Any]:
    """A prompt Gemini refused to answer: no candidates, the reason in `promptFeedback`."""
    return {
        "promptFeedback": {"blockReason": block_reason},
        "usageMetadata": usage_metadata(prompt_tokens, None),
        "modelVersion": MODEL_VERSION,
        "responseId": RESPONSE_ID,
    }


def error_body(
    status: str,
    message: str,
    *,
    code: int | None = None,
    reason: str | None = None,
    retry_delay: str | None = None,
) -> dict[str, Any]:
    """Google's error body. `reason` adds an ErrorInfo detail (e.g. API_KEY_INVALID), `retry_delay`
    a RetryInfo detail (e.g. "37s"), as Google sends with RESOURCE_EXHAUSTED."""
    error: dict[str, Any] = {
        "code": code if code is not None else ERROR_STATUS[status],
        "message": message,
        "status": status,
    }
    details: list[dict[str, Any]] = []
    if reason is not None:
        details.append(
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        )
    if retry_delay is not None:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay})
    if details:
        error["details"] = details
    return {"error": error}


def error_reply(
    status: str,
    message: str,
    *,
    http_status: int | None = None,
    reason: str | None = None,
    retry_delay: str | None = None,
    retry_after: int | None = None,
) -> Reply:
    """An HTTP error: the status of `status` (ERROR_STATUS) unless given. Google puts the retry
    delay in the body; `retry_after` adds the header a proxy in front of it may add."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    return Reply(
        status=http_status if http_status is not None else ERROR_STATUS[status],
        json_body=error_body(status, message, reason=reason, retry_delay=retry_delay),
        headers=headers,
    )


# --- Streams ------------------------------------------------------------------------------------


def text_chunks(
    pieces: Sequence[str], usage: dict[str, Any] | None = None, *, finish_reason: str = "STOP"
) -> list[dict[str, Any]]:
    """A streamed text reply: one chunk per piece, the last with the finish reason. Every chunk has
    the prompt count; the candidates count grows, its final value on the last chunk."""
    final = usage if usage is not None else usage_metadata(10, max(len(pieces), 1))
    chunks = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        meta = final if last else {**final, "candidatesTokenCount": i + 1}
        if not last:
            meta.pop("thoughtsTokenCount", None)
            meta["totalTokenCount"] = meta["promptTokenCount"] + i + 1
        chunks.append(response([candidate([text_part(piece)], finish_reason if last else None)], meta))
    return chunks


def tool_call_chunks(
    text_pieces: Sequence[str], calls: Sequence[dict[str, Any]], usage: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """A streamed reply with text, then the function call parts `calls` together in the last chunk
    (Gemini streams each call whole), finish reason STOP."""
    final = usage if usage is not None else usage_metadata(10, 20)
    chunks = [
        response([candidate([text_part(p)], None)], {**final, "candidatesTokenCount": 1}) for p in text_pieces
    ]
    chunks.append(response([candidate(list(calls), "STOP")], final))
    return chunks


def stream_error(status: str = "UNAVAILABLE", message: str = "The model is overloaded.") -> dict[str, Any]:
    """An error in place of a chunk inside a 200 stream."""
    return error_body(status, message)


def sse_bytes(chunks: Sequence[dict[str, Any] | str]) -> bytes:
    return b"".join(_frame(chunk) for chunk in chunks)


def _frame(chunk: dict[str, Any] | str) -> bytes:
    payload = chunk if isinstance(chunk, str) else _dumps(chunk)
    return f"data: {payload}\r\n\r\n".encode()


# --- Server -------------------------------------------------------------------------------------


def last_user_text(body: dict[str, Any]) -> str:
    for content in reversed(body.get("contents", [])):
        if content.get("role", "user") == "user":
            texts = [p["text"] for p in content.get("parts", []) if "text" in p]
            if texts:
                return " ".join(texts)
    return ""


class FakeGemini(FakeServer[Reply]):
    def __init__(self) -> None:
        super().__init__(
            ["/{version}/models/{model}:generateContent", "/{version}/models/{model}:streamGenerateContent"]
        )

    @property
    def base_url(self) -> str:
        """The API root: clients append `/v1beta/models/...`."""
        return f"http://127.0.0.1:{self.port}"

    async def _reply(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        if reply.raw is not None:
            return web.Response(status=reply.status, body=reply.raw, headers=reply.headers)
        streaming = request.path.endswith(":streamGenerateContent")
        if reply.chunks is None or not streaming:
            if reply.json_body is None and reply.chunks is not None:
                raise AssertionError("a scripted stream reply for a unary request")
            return web.json_response(
                reply.json_body, status=reply.status, headers=reply.headers, dumps=_dumps
            )
        response = web.StreamResponse(
            status=reply.status,
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", **reply.headers},
        )
        frames = (_frame(chunk) for chunk in reply.chunks)
        return await self._stream(request, response, frames, chunk_delay=reply.chunk_delay, drop=reply.drop)

    def _echo(self, body: dict[str, Any]) -> Reply:
        text = last_user_text(body)
        usage = usage_metadata(10, max(len(text) // 4, 1))
        return Reply(json_body=text_response(text, usage), chunks=text_chunks(words(text), usage))
