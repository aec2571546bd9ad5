"""A fake OpenAI Chat Completions server on loopback, speaking the real wire format.

It records every request it receives. Replies are scripted per test (JSON, SSE, error bodies with
headers, raw bytes) or, when nothing is scripted, an echo of the last user message: a
`chat.completion` object, or `chat.completion.chunk` SSE events ending with a usage chunk (when
`stream_options.include_usage` is set) and `data: [DONE]`.

It also speaks OpenAI's Files and Batch APIs, in memory, for batches of chat completions: a JSONL
upload, a batch that moves on one status each time it is retrieved (validating, in_progress,
completed) and then answers every line as /v1/chat/completions would answer it live (scripted
replies, or the echo), its output and error files, cancelling, failing and expiring.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.server import FakeServer, last_user_text, words

MODEL_SNAPSHOT = "gpt-4o-mini-2024-07-18"


@dataclass
class Reply:
    status: int = 200
    json_body: Any = None
    sse: Sequence[dict[str, Any] | str] | None = None  # str events are sent verbatim as data
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    chunk_delay: float = 0.0
    end_early: bool = False  # SSE: stop without [DONE] (a dropped stream)
    delay: float = 0.0  # seconds before anything is sent (a hanging upstream)
    echo: bool = False  # the unscripted echo (JSON or SSE, as the request asks), with chunk_delay


def usage(prompt: int, completion: int, cached: int = 0, reasoning: int = 0) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def completion(
    content: str | None,
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    finish_reason: str = "stop",
    usage_: dict[str, Any] | None = None,
    completion_id: str = "chatcmpl-fake123",
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": 1_763_800_000,
        "model": MODEL_SNAPSHOT,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage_ if usage_ is not None else usage(10, 5),
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
    }


def tool_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def chunk(
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    *,
    usage_: dict[str, Any] | None = None,
    completion_id: str = "chatcmpl-fake123",
) -> dict[str, Any]:
    choices = (
        []
        if delta is None
        else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]
    )
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": 1_763_800_000,
        "model": MODEL_SNAPSHOT,
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
        "choices": choices,
        "usage": usage_,
    }


def text_chunks(pieces: Sequence[str], usage_: dict[str, Any] | None) -> list[dict[str, Any] | str]:
    """The event sequence of a streamed text reply, as OpenAI sends it."""
    events: list[dict[str, Any] | str] = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": piece}) for piece in pieces]
    events.append(chunk({}, "stop"))
    if usage_ is not None:
        events.append(chunk(None, usage_=usage_))
    events.append("[DONE]")
    return events


def azure_prompt_filter_chunk() -> dict[str, Any]:
    """The chunk Azure OpenAI streams first: prompt filter verdicts, no choices, empty ids."""
    safe = {"filtered": False, "severity": "safe"}
    categories = {"hate": safe, "self_harm": safe, "sexual": safe, "violence": safe}
    return {
        "choices": [],
        "created": 0,
        "id": "",
        "model": "",
        "object": "",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": categories}],
    }


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# --- Files and Batch API ------------------------------------------------------------------------

BATCH_ENDPOINT = "/v1/chat/completions"  # the one endpoint whose batches the fake runs
DAY = 24 * 3600
FINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
CANCELLED_MESSAGE = "This request was not executed because the batch was cancelled."


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def jsonl(lines: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def parse_jsonl(content: bytes) -> list[dict[str, Any]] | None:
    """The objects of a JSONL file, or None if it is not one object a line."""
    try:
        lines = [json.loads(line) for line in content.splitlines() if line.strip()]
    except ValueError:
        return None
    return lines if lines and all(isinstance(line, dict) for line in lines) else None


@dataclass
class StoredFile:
    """A file of the Files API: an uploaded batch input ("batch"), or a batch's output or error
    file ("batch_output")."""

    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def object(self) -> dict[str, Any]:
        """The File object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "expires_at": self.created_at + 30 * DAY,  # batch files are kept 30 days
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }

    def lines(self) -> list[dict[str, Any]]:
        return parse_jsonl(self.content) or []


@dataclass
class StoredBatch:
    batch: dict[str, Any]  # the Batch object, as retrieving it returns it
    requests: list[dict[str, Any]]  # the input file's lines
    failure: list[dict[str, Any]] | None = None  # the BatchErrors its next step fails it with
    expire: bool = False  # its next step expires it


def batch_error(code: str, message: str, param: str | None = None, line: int | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def invalid_lines(requests: Sequence[dict[str, Any]], endpoint: str) -> list[dict[str, Any]]:
    """The lines OpenAI's validation would refuse a batch for (the codes are the fake's own)."""
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, request in enumerate(requests, 1):
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id or custom_id in seen:
            errors.append(
                batch_error("invalid_custom_id", "custom_id is missing or repeated", "custom_id", number)
            )
        else:
            seen.add(custom_id)
        if request.get("method") != "POST":
            errors.append(batch_error("invalid_method", "method must be POST", "method", number))
        if request.get("url") != endpoint:
            message = f"url {request.get('url')!r} is not the batch's endpoint {endpoint!r}"
            errors.append(batch_error("mismatched_endpoint", message, "url", number))
        if not isinstance(request.get("body"), dict):
            errors.append(batch_error("invalid_body", "body must be an object", "body", number))
    return errors


def unanswered(request: dict[str, Any], code: str, message: str) -> dict[str, Any]:
    """The error file line of a request the batch never ran."""
    return {
        "id": new_id("batch_req_"),
        "custom_id": request.get("custom_id"),
        "response": None,
        "error": {"code": code, "message": message},
    }


def batch_usage(bodies: Sequence[Any]) -> dict[str, Any]:
    """The Batch's usage: the sum of its answered completions' usage (a scripted body may have none)."""
    uses = [(body.get("usage") or {}) if isinstance(body, dict) else {} for body in bodies]
    prompt = sum(use.get("prompt_tokens", 0) for use in uses)
    completion_ = sum(use.get("completion_tokens", 0) for use in uses)
    cached = sum((use.get("prompt_tokens_details") or {}).get("cached_tokens", 0) for use in uses)
    reasoning = sum((use.get("completion_tokens_details") or {}).get("reasoning_tokens", 0) for use in uses)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion_,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": prompt + completion_,
    }


def invalid(message: str, param: str | None = None, status: int = 400) -> web.Response:
    return web.json_response(error_body(message, "invalid_request_error", param=param), status=status)


class FakeOpenAI(FakeServer[Reply]):
    # Servers built on this one that skip its __init__ for routes of their own (llama.cpp's) have
    # no Files or Batch API.
    _batch_api = False

    def __init__(self) -> None:
        # Azure OpenAI is the same wire format at a deployment's URL.
        super().__init__(["/v1/chat/completions", "/openai/deployments/{deployment}/chat/completions"])
        self._batch_api = True
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, StoredBatch] = {}
        # A batch line's reply by its custom_id, used once, before the script (lines of a batch a
        # gateway wrote may come in any order).
        self.batch_replies: dict[str, Reply] = {}
        self.hold_batches = False  # while True, retrieving a batch does not move it on

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def azure_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _reply(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        if reply.delay:
            await self._hang(reply.delay)
        if reply.echo:
            reply = dataclasses.replace(self._echo(await request.json()), chunk_delay=reply.chunk_delay)
        if reply.raw is not None:
            return web.Response(status=reply.status, body=reply.raw, headers=reply.headers)
        if reply.sse is None:
            return web.json_response(reply.json_body, status=reply.status, headers=reply.headers)
        response = web.StreamResponse(
            status=reply.status, headers={"Content-Type": "text/event-stream", **reply.headers}
        )
        events = reply.sse
        if reply.end_early:  # everything before [DONE], then the connection drops
            events = list(itertools.takewhile(lambda e: e != "[DONE]", events))
        frames = (f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n".encode() for e in events)
        return await self._stream(
            request, response, frames, chunk_delay=reply.chunk_delay, drop=reply.end_early
        )

    def _echo(self, body: dict[str, Any]) -> Reply:
        text = last_user_text(body)
        use = usage(10, max(len(text) // 4, 1))
        if body.get("stream"):
            include = (body.get("stream_options") or {}).get("include_usage")
            return Reply(sse=text_chunks(words(text), use if include else None))
        return Reply(json_body=completion(text, usage_=use))

    # --- Files and Batch API --------------------------------------------------------------------

    def fail_batch(
        self,
        batch_id: str,
        code: str = "token_limit_exceeded",
        message: str = "Enqueued token limit reached for gpt-4o-mini in organization org-fake.",
    ) -> None:
        """The batch's next step fails it, `errors` holding this error."""
        self.batches[batch_id].failure = [batch_error(code, message)]

    def expire_batch(self, batch_id: str) -> None:
        """The batch's next step expires it, its unanswered requests in the error file."""
        self.batches[batch_id].expire = True

    def _extra_routes(self, app: web.Application) -> None:
        if not self._batch_api:
            return
        app.router.add_post("/v1/files", self._upload_file)
        app.router.add_get("/v1/files/{file_id}", self._retrieve_file)
        app.router.add_get("/v1/files/{file_id}/content", self._file_content)
        app.router.add_post("/v1/batches", self._create_batch)
        app.router.add_get("/v1/batches/{batch_id}", self._retrieve_batch)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self._cancel_batch)

    async def _upload_file(self, request: web.Request) -> web.Response:
        form = await request.post()
        purpose, upload = form.get("purpose"), form.get("file")
        content = upload.file.read() if isinstance(upload, web.FileField) else b""
        filename = upload.filename if isinstance(upload, web.FileField) else ""
        lines = parse_jsonl(content)
        self._record(request, {"purpose": purpose, "filename": filename, "lines": lines or []})
        if purpose != "batch":
            return invalid(f"The fake keeps batch input files only, not purpose {purpose!r}.", "purpose")
        if lines is None:
            return invalid("A batch input file is JSONL, one request object a line.", "file")
        stored = self._store(filename, "batch", content)
        return web.json_response(stored.object())

    async def _retrieve_file(self, request: web.Request) -> web.Response:
        self._record(request, {})
        stored = self.files.get(request.match_info["file_id"])
        if stored is None:
            return invalid(f"No such File object: {request.match_info['file_id']}", "id", 404)
        return web.json_response(stored.object())

    async def _file_content(self, request: web.Request) -> web.Response:
        self._record(request, {})
        stored = self.files.get(request.match_info["file_id"])
        if stored is None:
            return invalid(f"No such File object: {request.match_info['file_id']}", "id", 404)
        return web.Response(body=stored.content, content_type="application/octet-stream")

    async def _create_batch(self, request: web.Request) -> web.Response:
        body = await request.json()
        self._record(request, body)
        input_file = self.files.get(body.get("input_file_id", ""))
        if input_file is None or input_file.purpose != "batch":
            return invalid(f"No batch input file {body.get('input_file_id')!r}.", "input_file_id")
        if body.get("endpoint") != BATCH_ENDPOINT:
            return invalid(f"The fake runs batches of {BATCH_ENDPOINT} only.", "endpoint")
        if body.get("completion_window") != "24h":
            return invalid("completion_window must be '24h'.", "completion_window")
        requests = input_file.lines()
        models = [
            r["body"]["model"] for r in requests if isinstance(r.get("body"), dict) and "model" in r["body"]
        ]
        now = int(time.time())
        batch: dict[str, Any] = {
            "id": new_id("batch_"),
            "object": "batch",
            "endpoint": BATCH_ENDPOINT,
            "model": models[0] if models else None,
            "errors": None,
            "input_file_id": input_file.id,
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + DAY,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},  # counted once validated
            "usage": batch_usage([]),
            "metadata": body.get("metadata"),
        }
        self.batches[batch["id"]] = StoredBatch(batch, requests)
        return web.json_response(batch)

    async def _retrieve_batch(self, request: web.Request) -> web.Response:
        self._record(request, {})
        stored = self.batches.get(request.match_info["batch_id"])
        if stored is None:
            return invalid(f"No batch found with id '{request.match_info['batch_id']}'.", "batch_id", 404)
        if not self.hold_batches:
            self._step(stored)
        return web.json_response(stored.batch)

    async def _cancel_batch(self, request: web.Request) -> web.Response:
        self._record(request, {})
        stored = self.batches.get(request.match_info["batch_id"])
        if stored is None:
            return invalid(f"No batch found with id '{request.match_info['batch_id']}'.", "batch_id", 404)
        batch = stored.batch
        if batch["status"] in ("validating", "in_progress", "finalizing"):
            batch.update(status="cancelling", cancelling_at=int(time.time()))
        elif batch["status"] not in ("cancelling", "cancelled"):
            return invalid(f"Cannot cancel a batch with status '{batch['status']}'.")
        return web.json_response(batch)

    def _step(self, stored: StoredBatch) -> None:
        """Moves a batch on by one status, as OpenAI's moves between two looks at it."""
        batch, now = stored.batch, int(time.time())
        status = batch["status"]
        if status in FINAL_STATUSES:
            return
        if status == "validating" and stored.failure is None:
            stored.failure = invalid_lines(stored.requests, batch["endpoint"]) or None
        if stored.failure is not None:
            batch.update(status="failed", failed_at=now, errors={"object": "list", "data": stored.failure})
        elif status == "cancelling":
            self._finish(
                stored, [unanswered(r, "batch_cancelled", CANCELLED_MESSAGE) for r in stored.requests]
            )
            batch.update(status="cancelled", cancelled_at=now)
        elif stored.expire:
            self._finish(stored, [unanswered(r, "batch_expired", EXPIRED_MESSAGE) for r in stored.requests])
            batch.update(status="expired", expired_at=now)
        elif status == "validating":
            batch.update(status="in_progress", in_progress_at=now)
            batch["request_counts"] = {"total": len(stored.requests), "completed": 0, "failed": 0}
        else:
            self._finish(stored, [self._answer(r) for r in stored.requests])
            batch.update(status="completed", finalizing_at=now, completed_at=now)

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        """The result line of a request, answered as /v1/chat/completions answers its body live
        (whole: a batch does not stream)."""
        body = {k: v for k, v in request["body"].items() if k not in ("stream", "stream_options")}
        reply = self.batch_replies.pop(request["custom_id"], None) or self._next_reply(body)
        if reply.echo:
            reply = self._echo(body)
        if reply.json_body is None:
            raise ValueError(f"a batch line is answered with a JSON body, not {reply}")
        return {
            "id": new_id("batch_req_"),
            "custom_id": request["custom_id"],
            "response": {
                "status_code": reply.status,
                "request_id": reply.headers.get("x-request-id", uuid.uuid4().hex),
                "body": reply.json_body,
            },
            "error": None,
        }

    def _finish(self, stored: StoredBatch, lines: Sequence[dict[str, Any]]) -> None:
        """Writes a batch's answers: successes to its output file, the rest to its error file."""
        done: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for line in lines:
            ok = line["error"] is None and line["response"]["status_code"] < 400
            (done if ok else failed).append(line)
        batch = stored.batch
        if done:
            batch["output_file_id"] = self._store(
                f"{batch['id']}_output.jsonl", "batch_output", jsonl(done)
            ).id
        if failed:
            batch["error_file_id"] = self._store(
                f"{batch['id']}_error.jsonl", "batch_output", jsonl(failed)
            ).id
        batch["request_counts"] = {"total": len(lines), "completed": len(done), "failed": len(failed)}
        batch["usage"] = batch_usage([line["response"]["body"] for line in done])

    def _store(self, filename: str, purpose: str, content: bytes) -> StoredFile:
        stored = StoredFile(new_id("file-"), filename, purpose, content)
        self.files[stored.id] = stored
        return stored
