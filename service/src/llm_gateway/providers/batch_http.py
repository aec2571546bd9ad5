"""What both providers' batch clients share: the adapter's HTTP client, key, timeouts and
scrubber, the exchanges over them, and the adapter's own parser for a line's reply."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.domain.results import Completion
from llm_gateway.providers.adapter import HttpAdapter
from llm_gateway.providers.base import UpstreamCall
from llm_gateway.providers.batch_api import UpstreamProgress
from llm_gateway.providers.errors import UpstreamContext, upstream_errors
from llm_gateway.providers.http import get_bytes, get_json, post_json

A = TypeVar("A", bound=HttpAdapter)


class AdapterBatches(Generic[A]):
    def __init__(self, adapter: A) -> None:
        self._adapter = adapter
        self._json_headers = adapter._headers
        # GETs and cancels send no body, and an upload is multipart: no JSON content type.
        self._headers = {k: v for k, v in adapter._headers.items() if k.lower() != "content-type"}

    def parse(self, call: UpstreamCall, reply: Any) -> Completion:
        with upstream_errors(self._adapter._context(call)):
            return self._adapter._parse(reply)

    def _job_url(self, upstream_id: str) -> str:
        raise NotImplementedError

    async def progress(self, upstream_id: str) -> UpstreamProgress:
        raise NotImplementedError

    async def cancel(self, upstream_id: str) -> None:
        """A job that has ended already (the provider refuses to cancel it) is left as it is."""
        ctx = self._context("")
        try:
            await self._post_json(f"{self._job_url(upstream_id)}/cancel", b"", ctx, json_body=False)
        except GatewayError as error:
            if error.code != Code.INVALID_ARGUMENT or not (await self.progress(upstream_id)).ended:
                raise

    def _context(self, model: str) -> UpstreamContext:
        return UpstreamContext(self._adapter.name, model, self._adapter._scrubber)

    async def _post_json(
        self, url: str, content: bytes, ctx: UpstreamContext, *, json_body: bool = True
    ) -> Any:
        headers = self._json_headers if json_body else self._headers
        return await post_json(
            self._adapter._http, url, content, headers=headers, timeouts=self._adapter._timeout, ctx=ctx
        )

    async def _get_json(self, url: str, ctx: UpstreamContext) -> Any:
        return await get_json(
            self._adapter._http, url, headers=self._headers, timeouts=self._adapter._timeout, ctx=ctx
        )

    async def _get_bytes(self, url: str, ctx: UpstreamContext) -> bytes:
        return await get_bytes(
            self._adapter._http, url, headers=self._headers, timeouts=self._adapter._timeout, ctx=ctx
        )


def provider_id(value: Any) -> str:
    """An id the provider gave (of a job, a file, a line); anything else is a bad response."""
    if not isinstance(value, str) or not value:
        raise TypeError(f"expected an id, got {value!r}")
    return value
