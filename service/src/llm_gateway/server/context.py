"""Per-call state carried by interceptors in context variables (each RPC runs in its own task)."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from llm_gateway.gateway.record import CallTracker

if TYPE_CHECKING:
    import grpc

    # grpc's stubs make these generic; the runtime classes are not subscriptable.
    Context = grpc.aio.ServicerContext[Any, Any]
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
    Handler = grpc.RpcMethodHandler[Any, Any]


request_id_var: ContextVar[str] = ContextVar("request_id", default="")
# time.perf_counter() when the call reached the gateway, for Latency.total.
received_at_var: ContextVar[float | None] = ContextVar("received_at", default=None)
api_key_name_var: ContextVar[str] = ContextVar("api_key_name", default="")
# The call's record, opened by the pipeline's CallStep and filled in by the gateway.
call_var: ContextVar[CallTracker | None] = ContextVar("call", default=None)
# The size of the call's request body as received, in bytes (set when it is decoded).
request_bytes_var: ContextVar[int] = ContextVar("request_bytes", default=0)
