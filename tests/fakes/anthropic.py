"""A fake Anthropic Messages API server on loopback, speaking the real wire format.

It records every request it receives. Replies are scripted per test (JSON, SSE events, error bodies
with headers, raw bytes) or, when nothing is scripted, an echo of the last user message: a `message`
object, or (when the body has `"stream": true`) the full event sequence Anthropic streams:
`message_start`, `content_block_start`, `ping`, `content_block_delta`s, `content_block_stop`,
`message_delta`, `message_stop`.

Each SSE event is written as Anthropic writes it: `event: <name>\\ndata: <compact json>\\n\\n`, the
JSON carrying a `type` equal to the event name. Builders return plain dicts of Anthropic's exact
shapes (checked against the official SDK's pydantic types in tests/test_fake_anthropic.py).

It also speaks the Message Batches API, in memory: a batch stays in progress for one retrieve and
ends at the next, answering every request as /v1/messages would answer it live (scripted replies,
or the echo); its results are JSONL at its results_url; it can be canceled or made to expire.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

from aiohttp import web

from tests.fakes.server import FakeServer, last_user_text, words

MODEL_SNAPSHOT = "claude-sonnet-4-5-20250929"
MESSAGE_ID = "msg_01XFDUDYJgAACzvnptvVoYEL"
REQUEST_ID = "req_011CSHoEeqs5C35K2UUqR7Fy"

# The HTTP status Anthropic answers with for each error type.
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_dumps = partial(json.dumps, separators=(",", ":"))

# An SSE event as the builders make it: (event name, data).
Event = tuple[str, dict[str, Any]]
# What a Reply may script: a str data is sent verbatim (for malformed-data tests).
ScriptedEvent = tuple[str, dict[str, Any] | str]


@dataclass
class Reply:
    status: int = 200
    json_body: Any = None
    events: Sequence[ScriptedEvent] | None = None  # SSE, written as `event: <name>\ndata: <json>\n\n`
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunk_delay: float = 0.0
    # SSE: send the events before the first `message_delta` / `message_stop`, then drop the
    # connection (no stop reason, no final usage, no message_stop), as a failing upstream would.
    end_early: bool = False


# --- Bodies -------------------------------------------------------------------------------------


def usage(
    input_tokens: int,
    output_tokens: int,
    cache_read: int = 0,
    cache_creation: int = 0,
    cache_creation_5m: int | None = None,
    cache_creation_1h: int | None = None,
    *,
    service_tier: str = "standard",
) -> dict[str, Any]:
    """A `usage` object. The cache_creation split defaults to all of it in the 5 minute cache."""
    if cache_creation_5m is None:
        cache_creation_5m = cache_creation - (cache_creation_1h or 0)
    if cache_creation_1h is None:
        cache_creation_1h = cache_creation - cache_creation_5m
    return {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_creation,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {
            "ephemeral_5m_input_tokens": cache_creation_5m,
            "ephemeral_1h_input_tokens": cache_creation_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": service_tier,
    }


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def tool_use_block(tool_id: str, name: str, input_: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": input_}


def thinking_block(thinking: str, signature: str) -> dict[str, Any]:
    return {"type": "thinking", "thinking": thinking, "signature": signature}


def redacted_thinking_block(data: str) -> dict[str, Any]:
    return {"type": "redacted_thinking", "data": data}


def message(
    content_blocks: Sequence[dict[str, Any]],
    stop_reason: str | None = "end_turn",
    usage_: dict[str, Any] | None = None,
    *,
    stop_sequence: str | None = None,
    message_id: str = MESSAGE_ID,
    model: str = MODEL_SNAPSHOT,
) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": list(content_blocks),
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": usage_ if usage_ is not None else usage(10, 5),
    }


def error_body(kind: str, message: str, request_id: str = REQUEST_ID) -> dict[str, Any]:
    """An HTTP error body. Kinds: invalid_request_error, authentication_error, permission_error,
    not_found_error, rate_limit_error, api_error, overloaded_error (and see ERROR_STATUS)."""
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


def error_reply(
    kind: str,
    message: str,
    *,
    status: int | None = None,
    retry_after: int | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    """An HTTP error as Anthropic sends it: the status of `kind` (ERROR_STATUS) unless given, the
    error body, and `request-id` (plus `retry-after` when given) headers."""
    extra = {"request-id": REQUEST_ID}
    if retry_after is not None:
        extra["retry-after"] = str(retry_after)
    return Reply(
        status=status if status is not None else ERROR_STATUS[kind],
        json_body=error_body(kind, message),
        headers={**extra, **(headers or {})},
    )


# --- Stream events ------------------------------------------------------------------------------


def message_start(
    usage_: dict[str, Any] | None = None,
    *,
    output_tokens: int = 1,
    message_id: str = MESSAGE_ID,
    model: str = MODEL_SNAPSHOT,
) -> Event:
    """The first event: the message with empty content and no stop reason. Its usage has the
    input (and cache) counts of `usage_` and an output_tokens of 1, as Anthropic sends."""
    start_usage = copy.deepcopy(usage_) if usage_ is not None else usage(10, 1)
    start_usage["output_tokens"] = output_tokens
    body = message([], None, start_usage, message_id=message_id, model=model)
    return "message_start", {"type": "message_start", "message": body}


def content_block_start(index: int, block: dict[str, Any]) -> Event:
    """`block` is the empty block: text_block(""), tool_use_block(id, name, {}),
    thinking_block("", "")."""
    return "content_block_start", {"type": "content_block_start", "index": index, "content_block": block}


def _delta(index: int, delta: dict[str, Any]) -> Event:
    return "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}


def text_delta(index: int, text: str) -> Event:
    return _delta(index, {"type": "text_delta", "text": text})


def input_json_delta(index: int, partial_json: str) -> Event:
    return _delta(index, {"type": "input_json_delta", "partial_json": partial_json})


def thinking_delta(index: int, thinking: str) -> Event:
    return _delta(index, {"type": "thinking_delta", "thinking": thinking})


def signature_delta(index: int, signature: str) -> Event:
    return _delta(index, {"type": "signature_delta", "signature": signature})


def content_block_stop(index: int) -> Event:
    return "content_block_stop", {"type": "content_block_stop", "index": index}


def message_delta(
    stop_reason: str | None,
    output_tokens: int,
    *,
    stop_sequence: str | None = None,
    input_tokens: int | None = None,
    cache_creation_input_tokens: int | None = None,
    cache_read_input_tokens: int | None = None,
) -> Event:
    """The stop reason and cumulative usage. `output_tokens` is always there; the input and cache
    counts (also cumulative) only when given, as the API includes them only sometimes."""
    counts = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_creation_input_tokens,
        "cache_read_input_tokens": cache_read_input_tokens,
    }
    delta_usage: dict[str, Any] = {k: v for k, v in counts.items() if v is not None}
    delta_usage["output_tokens"] = output_tokens
    return "message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
        "usage": delta_usage,
    }


def message_stop() -> Event:
    return "message_stop", {"type": "message_stop"}


def ping() -> Event:
    return "ping", {"type": "ping"}


def stream_error(kind: str = "overloaded_error", message: str = "Overloaded") -> Event:
    """An error inside a 200 stream: `event: error` whose data has no request_id."""
    return "error", {"type": "error", "error": {"type": kind, "message": message}}


def text_events(
    pieces: Sequence[str], usage_: dict[str, Any] | None = None, *, stop_reason: str = "end_turn"
) -> list[Event]:
    """The event sequence of a streamed text reply, as Anthropic sends it (the ping comes after the
    first content_block_start)."""
    use = usage_ if usage_ is not None else usage(10, max(len(pieces), 1))
    return [
        message_start(use),
        content_block_start(0, text_block("")),
        ping(),
        *(text_delta(0, piece) for piece in pieces),
        content_block_stop(0),
        message_delta(stop_reason, use["output_tokens"]),
        message_stop(),
    ]


def tool_use_events(
    text_pieces: Sequence[str],
    tool_id: str,
    name: str,
    json_pieces: Sequence[str],
    usage_: dict[str, Any] | None = None,
) -> list[Event]:
    """A streamed reply with a text block, then a tool_use block whose input arrives as
    input_json_delta pieces (the first one empty, as Anthropic sends), stop_reason tool_use."""
    use = usage_ if usage_ is not None else usage(10, 20)
    return [
        message_start(use),
        content_block_start(0, text_block("")),
        ping(),
        *(text_delta(0, piece) for piece in text_pieces),
        content_block_stop(0),
        content_block_start(1, tool_use_block(tool_id, name, {})),
        input_json_delta(1, ""),
        *(input_json_delta(1, piece) for piece in json_pieces),
        content_block_stop(1),
        message_delta("tool_use", use["output_tokens"]),
        message_stop(),
    ]


def thinking_events(
    thinking_pieces: Sequence[str],
    signature: str,
    text_pieces: Sequence[str],
    usage_: dict[str, Any] | None = None,
) -> list[Event]:
    """A streamed reply with extended thinking: a thinking block (its signature in a
    signature_delta just before its content_block_stop), then a text block."""
    use = usage_ if usage_ is not None else usage(10, 30)
    return [
        message_start(use),
        content_block_start(0, thinking_block("", "")),
        ping(),
        *(thinking_delta(0, piece) for piece in thinking_pieces),
        signature_delta(0, signature),
        content_block_stop(0),
        content_block_start(1, text_block("")),
        *(text_delta(1, piece) for piece in text_pieces),
        content_block_stop(1),
        message_delta("end_turn", use["output_tokens"]),
        message_stop(),
    ]


def sse_bytes(events: Sequence[ScriptedEvent]) -> bytes:
    """The bytes the fake writes for `events`."""
    return b"".join(_frame(event) for event in events)


def _frame(event: ScriptedEvent) -> bytes:
    name, data = event
    payload = data if isinstance(data, str) else _dumps(data)
    return f"event: {name}\ndata: {payload}\n\n".encode()


# --- Message Batches ----------------------------------------------------------------------------

CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
DAY = 24 * 3600


def rfc3339(seconds: float) -> str:
    """A time as Anthropic writes it: RFC 3339 in UTC, to the microsecond."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def batch_counts(processing: int = 0) -> dict[str, int]:
    return {"processing": processing, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}


def invalid_batch(requests: object) -> str | None:
    """Why Anthropic would refuse to create a batch of `requests`, or None."""
    if not isinstance(requests, list) or not requests:
        return "requests: a batch has at least one request"
    seen: set[str] = set()
    for i, request in enumerate(requests):
        custom_id = request.get("custom_id") if isinstance(request, dict) else None
        if not isinstance(custom_id, str) or not CUSTOM_ID.fullmatch(custom_id):
            return f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
        if custom_id in seen:
            return f"requests.{i}.custom_id: custom_id {custom_id!r} is not unique in the batch"
        seen.add(custom_id)
        if not isinstance(request.get("params"), dict):
            return f"requests.{i}.params: Field required"
    return None


def not_run(requests: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The results of requests a batch never ran: "canceled" or "expired"."""
    return [{"custom_id": r["custom_id"], "result": {"type": kind}} for r in requests]


@dataclass
class StoredMessageBatch:
    batch: dict[str, Any]  # the MessageBatch, as retrieving it returns it
    requests: list[dict[str, Any]]  # as created: custom_id and params
    results: list[dict[str, Any]] = field(default_factory=list)  # its results file's lines, once ended
    retrieves: int = 0
    expire: bool = False  # its next step ends it with its requests expired


# --- Server -------------------------------------------------------------------------------------


class FakeAnthropic(FakeServer[Reply]):
    def __init__(self) -> None:
        super().__init__(["/v1/messages"])
        self.batches: dict[str, StoredMessageBatch] = {}
        # A batch request's reply by its custom_id, used once, before the script (requests of a
        # batch a gateway wrote may come in any order).
        self.batch_replies: dict[str, Reply] = {}
        self.hold_batches = False  # while True, retrieving a batch does not move it on

    @property
    def base_url(self) -> str:
        """The API root: clients append `/v1/messages`."""
        return f"http://127.0.0.1:{self.port}"

    async def _reply(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        headers = {"request-id": REQUEST_ID, **reply.headers}
        if reply.raw is not None:
            return web.Response(status=reply.status, body=reply.raw, headers=headers)
        if reply.events is None:
            return web.json_response(reply.json_body, status=reply.status, headers=headers, dumps=_dumps)
        response = web.StreamResponse(
            status=reply.status,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                **headers,
            },
        )
        events = reply.events
        if reply.end_early:  # no stop reason, no final usage, no message_stop: the connection drops
            events = list(
                itertools.takewhile(lambda e: e[0] not in ("message_delta", "message_stop"), events)
            )
        frames = (_frame(event) for event in events)
        return await self._stream(
            request, response, frames, chunk_delay=reply.chunk_delay, drop=reply.end_early
        )

    def _echo(self, body: dict[str, Any]) -> Reply:
        text = last_user_text(body)
        use = usage(10, max(len(text) // 4, 1))
        if body.get("stream"):
            return Reply(events=text_events(words(text), use))
        return Reply(json_body=message([text_block(text)], usage_=use))

    # --- Message Batches ------------------------------------------------------------------------

    def expire_batch(self, batch_id: str) -> None:
        """The batch's next step ends it, its requests expired."""
        self.batches[batch_id].expire = True

    def _extra_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages/batches", self._create_batch)
        app.router.add_get("/v1/messages/batches/{batch_id}", self._retrieve_batch)
        app.router.add_get("/v1/messages/batches/{batch_id}/results", self._batch_results)
        app.router.add_post("/v1/messages/batches/{batch_id}/cancel", self._cancel_batch)

    async def _create_batch(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request, body)
        problem = invalid_batch(body.get("requests"))
        if problem is not None:
            return self._error("invalid_request_error", problem)
        now = time.time()
        batch: dict[str, Any] = {
            "id": f"msgbatch_01{secrets.token_hex(11)}",
            "type": "message_batch",
            "processing_status": "in_progress",
            "request_counts": batch_counts(len(body["requests"])),
            "ended_at": None,
            "created_at": rfc3339(now),
            "expires_at": rfc3339(now + DAY),
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": None,
        }
        self.batches[batch["id"]] = StoredMessageBatch(batch, body["requests"])
        return self._json(batch)

    async def _retrieve_batch(self, request: web.Request) -> web.Response:
        self._record(request, {})
        stored = self.batches.get(request.match_info["batch_id"])
        if stored is None:
            return self._not_found(request.match_info["batch_id"])
        if not self.hold_batches:
            self._step(stored)
        return self._json(stored.batch)

    async def _batch_results(self, request: web.Request) -> web.Response:
        self._record(request, {})
        stored = self.batches.get(request.match_info["batch_id"])
        if stored is None:
            return self._not_found(request.match_info["batch_id"])
        if stored.batch["processing_status"] != "ended":
            return self._error("invalid_request_error", "The batch has not ended: it has no results yet.")
        content = "".join(_dumps(line) + "\n" for line in stored.results)
        return web.Response(
            body=content.encode(), content_type="application/binary", headers={"request-id": REQUEST_ID}
        )

    async def _cancel_batch(self, request: web.Request) -> web.Response:
        self._record(request, {})
        stored = self.batches.get(request.match_info["batch_id"])
        if stored is None:
            return self._not_found(request.match_info["batch_id"])
        batch = stored.batch
        if batch["processing_status"] == "in_progress":
            batch.update(processing_status="canceling", cancel_initiated_at=rfc3339(time.time()))
        elif batch["processing_status"] == "ended" and batch["cancel_initiated_at"] is None:
            return self._error("invalid_request_error", "The batch has ended: it cannot be canceled.")
        return self._json(batch)

    def _step(self, stored: StoredMessageBatch) -> None:
        """Moves a batch on, as Anthropic's moves between two looks at it: one look in progress,
        ended at the next."""
        status = stored.batch["processing_status"]
        stored.retrieves += 1
        if status == "canceling":
            self._end(stored, not_run(stored.requests, "canceled"))
        elif stored.expire and status == "in_progress":
            self._end(stored, not_run(stored.requests, "expired"))
        elif status == "in_progress" and stored.retrieves > 1:
            self._end(stored, [self._answer(r) for r in stored.requests])

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """A request's result, answered as /v1/messages answers its params live (whole: a batch
        does not stream)."""
        params = {k: v for k, v in request["params"].items() if k != "stream"}
        reply = self.batch_replies.pop(request["custom_id"], None) or self._next_reply(params)
        if reply.json_body is None:
            raise ValueError(f"a batch request is answered with a JSON body, not {reply}")
        if reply.status < 400:
            return {
                "custom_id": request["custom_id"],
                "result": {"type": "succeeded", "message": reply.json_body},
            }
        error = reply.json_body.get("error") if isinstance(reply.json_body, dict) else None
        if not isinstance(error, dict):
            error = {"type": "api_error", "message": str(reply.json_body)}
        errored = {"type": "errored", "error": {"type": "error", "error": error}}
        return {"custom_id": request["custom_id"], "result": errored}

    def _end(self, stored: StoredMessageBatch, results: list[dict[str, Any]]) -> None:
        stored.results = results
        counts = batch_counts()
        for line in results:
            counts[line["result"]["type"]] += 1
        batch_id = stored.batch["id"]
        stored.batch.update(
            processing_status="ended",
            request_counts=counts,
            ended_at=rfc3339(time.time()),
            results_url=f"{self.base_url}/v1/messages/batches/{batch_id}/results",
        )

    def _json(self, body: dict[str, Any]) -> web.Response:
        return web.json_response(body, headers={"request-id": REQUEST_ID}, dumps=_dumps)

    def _error(self, kind: str, message: str) -> web.Response:
        return web.json_response(
            error_body(kind, message),
            status=ERROR_STATUS[kind],
            headers={"request-id": REQUEST_ID},
            dumps=_dumps,
        )

    def _not_found(self, batch_id: str) -> web.Response:
        return self._error("not_found_error", f"No message batch with id {batch_id!r}.")
