"""The error boundary of every gRPC servicer method."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TYPE_CHECKING

import grpc

from llm_gateway.domain.errors import Code, GatewayError, with_field_prefix
from llm_gateway.server.context import request_id_var
from llm_gateway.server.interceptors import abort

if TYPE_CHECKING:
    from llm_gateway.server.context import Context

_log = logging.getLogger("llm_gateway.server")


class ErrorBoundary:
    """A servicer method's error boundary: a gateway error ends the call with its rich status (its
    field paths under `field_prefix`); any other exception is a bug, logged with its traceback and
    answered INTERNAL without internals. Cancellation and aborts pass through untouched."""

    __slots__ = ("_context", "_prefix")

    def __init__(self, context: Context, field_prefix: str = "") -> None:
        self._context = context
        self._prefix = field_prefix

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, GatewayError):
            await abort(self._context, with_field_prefix(exc, self._prefix) if self._prefix else exc)
        if isinstance(exc, Exception) and not isinstance(exc, grpc.aio.AbortError):
            _log.exception("unexpected error", exc_info=exc)
            await abort(
                self._context,
                GatewayError(
                    f"internal error; quote request id {request_id_var.get()}",
                    code=Code.INTERNAL,
                    reason="INTERNAL",
                ),
            )
