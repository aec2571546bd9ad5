"""Anthropic's Message Batches API: the lines go up as one batch of Messages requests, and come
back as a JSONL results file, one result a line (succeeded, errored, canceled or expired)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from yarl import URL

from llm_gateway import json_codec
from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.domain.results import Completion
from llm_gateway.providers.base import UpstreamCall
from llm_gateway.providers.batch_api import BatchLine, LineResult, UpstreamProgress
from llm_gateway.providers.errors import UpstreamContext, bad_response, http_error, upstream_errors
from llm_gateway.providers.http import get_bytes, get_json, post_json

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


class AnthropicBatches:
    """Message batches of one Anthropic provider's calls, with its key and HTTP client. Anthropic
    keeps no metadata with a batch: `submit`'s label is not sent."""

    def __init__(self, adapter: AnthropicProvider) -> None:
        self._adapter = adapter
        self._batches = f"{adapter._endpoint}/batches"  # {base_url}/v1/messages/batches
        self._json_headers = adapter._headers
        # GETs and the cancel send no body: no JSON content type.
        self._headers = {k: v for k, v in adapter._headers.items() if k.lower() != "content-type"}

    def refuses(self, call: UpstreamCall) -> str:
        return ""  # every Messages request can be batched

    def body(self, call: UpstreamCall) -> dict[str, Any]:
        return self._adapter._body(call, stream=False)

    def parse(self, call: UpstreamCall, reply: Any) -> Completion:
        with upstream_errors(self._adapter._context(call)):
            return self._adapter._parse(reply)

    async def submit(self, lines: Sequence[BatchLine], *, label: str) -> str:
        ctx = self._context(str(lines[0].body.get("model") or "") if lines else "")
        create = {"requests": [{"custom_id": line.line_id, "params": line.body} for line in lines]}
        batch = await post_json(
            self._adapter._http,
            self._batches,
            json_codec.dumps(create),
            headers=self._json_headers,
            timeouts=self._adapter._timeout,
            ctx=ctx,
        )
        with upstream_errors(ctx):
            return _id(batch["id"])

    async def progress(self, upstream_id: str) -> UpstreamProgress:
        ctx = self._context("")
        batch = await self._get_json(f"{self._batches}/{upstream_id}", ctx)
        with upstream_errors(ctx):
            status = str(batch["processing_status"])
        return UpstreamProgress(ended=status == "ended", status=status)

    async def results(self, upstream_id: str) -> list[LineResult]:
        ctx = self._context("")
        batch = await self._get_json(f"{self._batches}/{upstream_id}", ctx)
        with upstream_errors(ctx):
            url = batch.get("results_url")
        if not url:  # not ended yet
            return []
        if URL(str(url)).origin() != URL(self._batches).origin():  # the key goes to Anthropic only
            raise bad_response(ctx, "its results_url is not on the provider's own host")
        content = await get_bytes(
            self._adapter._http, str(url), headers=self._headers, timeouts=self._adapter._timeout, ctx=ctx
        )
        with upstream_errors(ctx):
            return [_line(ctx, json_codec.loads(text)) for text in content.splitlines() if text.strip()]

    async def cancel(self, upstream_id: str) -> None:
        """A batch that has ended already (Anthropic refuses to cancel it) is left as it is."""
        ctx = self._context("")
        try:
            await post_json(
                self._adapter._http,
                f"{self._batches}/{upstream_id}/cancel",
                b"",
                headers=self._headers,
                timeouts=self._adapter._timeout,
                ctx=ctx,
            )
        except GatewayError as error:
            if error.code != Code.INVALID_ARGUMENT or not (await self.progress(upstream_id)).ended:
                raise

    async def _get_json(self, url: str, ctx: UpstreamContext) -> Any:
        return await get_json(
            self._adapter._http, url, headers=self._headers, timeouts=self._adapter._timeout, ctx=ctx
        )

    def _context(self, model: str) -> UpstreamContext:
        return UpstreamContext(self._adapter.name, model, self._adapter._scrubber)


def _id(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected an id, got {value!r}")
    return value


def _line(ctx: UpstreamContext, line: Any) -> LineResult:
    line_id = _id(line["custom_id"])
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
