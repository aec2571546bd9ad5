"""OpenAI's Batch API, over its Files API: the lines go up as one JSONL input file of Chat
Completions requests, and come back in the batch's output file (answered) and error file (refused
or never run)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiohttp

from llm_gateway import json_codec
from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.providers.base import UpstreamCall
from llm_gateway.providers.batch_api import BatchLine, LineResult, UpstreamProgress
from llm_gateway.providers.batch_http import AdapterBatches, provider_id
from llm_gateway.providers.errors import UpstreamContext, http_error, upstream_errors
from llm_gateway.providers.http import traced
from llm_gateway.providers.openai.mapping import build_body

if TYPE_CHECKING:
    from llm_gateway.providers.openai.adapter import OpenAIProvider

ENDPOINT = "/v1/chat/completions"
_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})


class OpenAIBatches(AdapterBatches["OpenAIProvider"]):
    """Batches of one OpenAI provider's chat completions, with its key and HTTP client.

    Every line runs on Chat Completions (a batch has one endpoint): a call the provider sends to
    the Responses API live is refused, as its batch line would not be what the live call sends.

    A batch OpenAI refuses as a whole (its `errors`: a line it cannot read, the organization's
    enqueued token limit) ends with `progress(...).status == "failed"` and has no results: it ran
    none of its lines, so `results` returns [] for it.
    """

    def __init__(self, adapter: OpenAIProvider) -> None:
        super().__init__(adapter)
        self._base = adapter._endpoint.removesuffix("/chat/completions")  # the provider's base_url

    def _job_url(self, upstream_id: str) -> str:
        return f"{self._base}/batches/{upstream_id}"

    def refuses(self, call: UpstreamCall) -> str:
        if self._adapter.uses_responses(call):
            return (
                f"model {call.model.id!r} is served by OpenAI's Responses API, and a batch in provider "
                "mode sends Chat Completions requests only"
            )
        return ""

    def body(self, call: UpstreamCall) -> dict[str, Any]:
        return build_body(call, stream=False, dialect=self._adapter._dialect)

    async def submit(self, lines: Sequence[BatchLine], *, label: str) -> str:
        ctx = self._context(str(lines[0].body.get("model") or "") if lines else "")
        requests = (
            {"custom_id": line.line_id, "method": "POST", "url": ENDPOINT, "body": line.body}
            for line in lines
        )
        file_id = await self._upload(b"".join(json_codec.dumps(r) + b"\n" for r in requests), label, ctx)
        create = {
            "input_file_id": file_id,
            "endpoint": ENDPOINT,
            "completion_window": "24h",
            "metadata": {"gateway_batch": label},
        }
        batch = await self._post_json(f"{self._base}/batches", json_codec.dumps(create), ctx)
        with upstream_errors(ctx):
            return provider_id(batch["id"])

    async def progress(self, upstream_id: str) -> UpstreamProgress:
        ctx = self._context("")
        batch = await self._get_json(self._job_url(upstream_id), ctx)
        with upstream_errors(ctx):
            status = str(batch["status"])
        return UpstreamProgress(ended=status in _ENDED, status=status)

    async def results(self, upstream_id: str) -> list[LineResult]:
        ctx = self._context("")
        batch = await self._get_json(self._job_url(upstream_id), ctx)
        with upstream_errors(ctx):
            ctx = self._context(str(batch.get("model") or ""))
            file_ids = [batch.get("output_file_id"), batch.get("error_file_id")]
        results: list[LineResult] = []
        for file_id in filter(None, file_ids):
            content = await self._get_bytes(f"{self._base}/files/{file_id}/content", ctx)
            with upstream_errors(ctx):
                results += [
                    _line(ctx, json_codec.loads(text)) for text in content.splitlines() if text.strip()
                ]
        return results

    async def _upload(self, content: bytes, label: str, ctx: UpstreamContext) -> str:
        """Uploads a batch input file; its id."""
        form = aiohttp.FormData()
        form.add_field("purpose", "batch")
        form.add_field("file", content, filename=f"{label}.jsonl", content_type="application/jsonl")
        with upstream_errors(ctx):
            async with self._adapter._http.post(
                f"{self._base}/files",
                data=form,
                headers=traced(self._headers),
                timeout=self._adapter._timeout,
            ) as response:
                reply = await response.read()
                if response.status >= 400:
                    raise http_error(ctx, response.status, reply, response.headers)
            return provider_id(json_codec.loads(reply)["id"])


def _line(ctx: UpstreamContext, line: Any) -> LineResult:
    """One line of an output or error file: answered (as the live endpoint would have, whatever
    its status), or never run (`error` set, no response)."""
    line_id = provider_id(line["custom_id"])
    response = line.get("response")
    if response:
        status = int(response["status_code"])
        if status < 400:
            return LineResult(line_id, response["body"], None)
        return LineResult(line_id, None, http_error(ctx, status, json_codec.dumps(response["body"]), {}))
    error = line.get("error") or {}
    return LineResult(
        line_id, None, _not_run(ctx, str(error.get("code") or ""), str(error.get("message") or ""))
    )


def _not_run(ctx: UpstreamContext, code: str, message: str) -> GatewayError:
    where = f"provider {ctx.provider!r} did not run the request"
    extra = {"upstream_code": code} if code else None
    if code == "batch_expired":
        return ctx.error(
            f"{where} before its batch expired",
            code=Code.DEADLINE_EXCEEDED,
            reason="PROVIDER_BATCH_EXPIRED",
            retryable=True,
            extra=extra,
        )
    if code == "batch_cancelled":
        return ctx.error(
            f"{where}: its batch was cancelled",
            code=Code.CANCELLED,
            reason="PROVIDER_BATCH_CANCELLED",
            extra=extra,
        )
    return ctx.error(
        f"{where} ({code or 'no code'}): {message or '(no message)'}",
        code=Code.UNAVAILABLE,
        reason="UPSTREAM_BATCH_ERROR",
        retryable=True,
        extra=extra,
    )
