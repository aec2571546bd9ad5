"""Anthropic's Message Batches API: the lines go up as one batch of Messages requests, and come
back as a JSONL results file, one result a line (succeeded, errored, canceled or expired)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from yarl import URL

from llm_gateway import json_codec
from llm_gateway.domain.errors import Code
from llm_gateway.providers.base import UpstreamCall
from llm_gateway.providers.batch_api import BatchLine, LineResult, UpstreamProgress
from llm_gateway.providers.batch_http import AdapterBatches, provider_id
from llm_gateway.providers.errors import UpstreamContext, bad_response, http_error, upstream_errors

if TYPE_CHECKING:
    from llm_gateway.providers.anthropic.adapter import AnthropicProvider

# The HTTP status Anthropic answers a live call with for each error type: an errored result maps
# as that live error would.
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


class AnthropicBatches(AdapterBatches["AnthropicProvider"]):
    """Message batches of one Anthropic provider's calls, with its key and HTTP client. Anthropic
    keeps no metadata with a batch: `submit`'s label is not sent."""

    def __init__(self, adapter: AnthropicProvider) -> None:
        super().__init__(adapter)
        self._batches = f"{adapter._endpoint}/batches"  # {base_url}/v1/messages/batches

    def _job_url(self, upstream_id: str) -> str:
        return f"{self._batches}/{upstream_id}"

    def refuses(self, call: UpstreamCall) -> str:
        return ""  # every Messages request can be batched

    def body(self, call: UpstreamCall) -> dict[str, Any]:
        return self._adapter._body(call, stream=False)

    async def submit(self, lines: Sequence[BatchLine], *, label: str) -> str:
        ctx = self._context(str(lines[0].body.get("model") or "") if lines else "")
        create = {"requests": [{"custom_id": line.line_id, "params": line.body} for line in lines]}
        batch = await self._post_json(self._batches, json_codec.dumps(create), ctx)
        with upstream_errors(ctx):
            return provider_id(batch["id"])

    async def progress(self, upstream_id: str) -> UpstreamProgress:
        ctx = self._context("")
        batch = await self._get_json(self._job_url(upstream_id), ctx)
        with upstream_errors(ctx):
            status = str(batch["processing_status"])
        return UpstreamProgress(ended=status == "ended", status=status)

    async def results(self, upstream_id: str) -> list[LineResult]:
        ctx = self._context("")
        batch = await self._get_json(self._job_url(upstream_id), ctx)
        with upstream_errors(ctx):
            url = batch.get("results_url")
        if not url:  # not ended yet
            return []
        if URL(str(url)).origin() != URL(self._batches).origin():  # the key goes to Anthropic only
            raise bad_response(ctx, "its results_url is not on the provider's own host")
        content = await self._get_bytes(str(url), ctx)
        with upstream_errors(ctx):
            return [_line(ctx, json_codec.loads(text)) for text in content.splitlines() if text.strip()]


def _line(ctx: UpstreamContext, line: Any) -> LineResult:
    line_id = provider_id(line["custom_id"])
    result = line["result"]
    kind = result["type"]
    if kind == "succeeded":
        return LineResult(line_id, result["message"], None)
    if kind == "errored":
        envelope = result["error"]  # {"type": "error", "error": {"type", "message"}}, as a live error body
        status = ERROR_STATUS.get(str(envelope["error"]["type"]), 500)
        return LineResult(line_id, None, http_error(ctx, status, json_codec.dumps(envelope), {}))
    where = f"provider {ctx.provider!r} did not run the request"
    if kind == "canceled":
        error = ctx.error(
            f"{where}: its batch was canceled", code=Code.CANCELLED, reason="PROVIDER_BATCH_CANCELLED"
        )
    elif kind == "expired":
        error = ctx.error(
            f"{where} before its batch expired",
            code=Code.DEADLINE_EXCEEDED,
            reason="PROVIDER_BATCH_EXPIRED",
            retryable=True,
        )
    else:
        error = ctx.error(
            f"{where} ({kind})",
            code=Code.UNAVAILABLE,
            reason="UPSTREAM_BATCH_ERROR",
            retryable=True,
            extra={"upstream_code": str(kind)},
        )
    return LineResult(line_id, None, error)
