"""The call pipeline run around every gateway call: request id, the call's record (which the access
log and the other observers get), drain control and API-key authentication, as steps of one
server interceptor.

Order (outermost first): request id -> call record -> drain -> auth -> servicer, so every
record (and so every access log line) and every error, including a refusal while draining or an
authentication failure, carries the request id.

A call that will be refused (no or a wrong API key, or the gateway draining) is refused before its
body is decoded: the gates run on the call's metadata alone, and a refused call's body is dropped
unread, so an unauthenticated caller cannot make the gateway parse (and hold) a large request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, NoReturn, cast

import grpc

from llm_gateway import edge
from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.gateway import Gateway
from llm_gateway.gateway.record import CallTracker, Principal
from llm_gateway.server.context import (
    api_key_name_var,
    call_var,
    received_at_var,
    request_bytes_var,
    request_id_var,
)
from llm_gateway.server.memory import LARGE_BYTES, after_large_call
from llm_gateway.server.shape import shape_problem
from llm_gateway.server.status import REQUEST_ID_KEY, rich_status

if TYPE_CHECKING:
    from llm_gateway.server.context import Context, Handler, ServerInterceptor
else:
    ServerInterceptor = grpc.aio.ServerInterceptor

# Health checks and reflection stay open: meshes and grpcurl carry no gateway key.
OPEN_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
)

UnaryBehavior = Callable[[Any, "Context"], Awaitable[Any]]
# A call's invocation metadata: (key, value) pairs, binary values as bytes.
Metadata = Sequence[tuple[str, "str | bytes"]]
StreamBehavior = Callable[[Any, "Context"], AsyncGenerator[Any, None]]


def metadata_value(context: Context, key: str) -> str | None:
    return _value_of(cast("Metadata", context.invocation_metadata() or ()), key)


def _value_of(metadata: Metadata, key: str) -> str | None:
    for item in metadata:
        if item[0] == key:
            value = item[1]
            return value if isinstance(value, str) else value.decode("latin-1")
    return None


async def abort(context: Context, err: GatewayError) -> NoReturn:
    """Ends the call with `err` as a rich status (raises grpc's AbortError), and records it."""
    tracker = call_var.get()
    if tracker is not None:
        tracker.fail(err)
    status = rich_status(err, request_id_var.get())
    await context.abort(status.code, status.details, status.trailing_metadata)


class Step:
    """One stage of the call pipeline: `enter` runs before each call of the gateway's own methods,
    `exit` after it. `enter` may abort the call; its return value is handed to `exit`, which also
    gets the exception the call ended with (None on success). `exit` does not run for a step whose
    `enter` aborted, but does for the steps before it.

    `gate` runs first, on the call's metadata alone, before the request body is decoded: a step
    that may refuse a call without looking at its body refuses it there. The call is then refused
    after the `enter` of the steps before it, as if that step's `enter` had aborted."""

    def gate(self, metadata: Metadata) -> GatewayError | None:
        return None

    async def enter(self, context: Context, method: str) -> Any:
        return None

    def exit(self, context: Context, state: Any, error: BaseException | None) -> None:
        return None


class Pipeline(ServerInterceptor):
    """The steps, outermost first, as one gRPC interceptor: a single wrapper per call instead of a
    chain of interceptors, each adding its own await and coroutine frame to every call.
    Health and reflection pass through untouched. Unary methods and server-streaming methods
    written as async generators are wrapped; each method's handler is wrapped once and reused."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self._steps = tuple(steps)
        self._cache: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(OPEN_SERVICES):
            return handler
        metadata = cast("Metadata", handler_call_details.invocation_metadata)
        for index, step in enumerate(self._steps):
            refusal = step.gate(metadata)
            if refusal is not None:
                return self._refusing(handler, method, index, refusal)
        cached = self._cache.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped: Handler = handler
        deserializer = _tolerant(handler.request_deserializer, method)
        if handler.unary_unary is not None:
            wrapped = grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(cast(UnaryBehavior, handler.unary_unary), method),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        elif handler.unary_stream is not None:
            wrapped = grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(cast(StreamBehavior, handler.unary_stream), method),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        self._cache[method] = (handler, wrapped)
        return wrapped

    def _refusing(self, handler: Handler, method: str, index: int, refusal: GatewayError) -> Handler:
        """A handler for a call that `self._steps[index]`'s gate refused: its body is not decoded,
        and the steps before that one run as for any call, so the refusal carries the request id
        and is logged."""
        steps = self._steps[:index]

        async def refuse(context: Context) -> None:  # always raises
            entered = await self._enter(context, method, None, steps)
            try:
                await abort(context, refusal)
            except BaseException as error:
                self._exit(context, entered, error)
                raise

        async def unary(request: Any, context: Context) -> Any:
            await refuse(context)

        async def stream(request: Any, context: Context) -> AsyncGenerator[Any, None]:
            await refuse(context)
            yield  # never reached: a stream handler is an async generator

        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                stream, request_deserializer=_discard, response_serializer=handler.response_serializer
            )
        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=_discard, response_serializer=handler.response_serializer
        )

    async def _enter(
        self, context: Context, method: str, request: Any, steps: Sequence[Step] | None = None
    ) -> list[tuple[Step, Any]]:
        """Runs each step's `enter`; then refuses a request body that did not decode, so the refusal
        carries the request id and is logged like any other."""
        entered: list[tuple[Step, Any]] = []
        try:
            for step in self._steps if steps is None else steps:
                entered.append((step, await step.enter(context, method)))
            if isinstance(request, Unreadable):
                await abort(context, request.error)
        except BaseException as error:
            self._exit(context, entered, error)
            raise
        return entered

    @staticmethod
    def _exit(context: Context, entered: list[tuple[Step, Any]], error: BaseException | None) -> None:
        for step, state in reversed(entered):
            step.exit(context, state, error)
        if request_bytes_var.get() > LARGE_BYTES:
            after_large_call()

    def _wrap_unary(self, behavior: UnaryBehavior, method: str) -> UnaryBehavior:
        async def unary(request: Any, context: Context) -> Any:
            entered = await self._enter(context, method, request)
            try:
                response = await behavior(request, context)
            except BaseException as error:
                ended = await _cut_off_status(context, error)
                self._exit(context, entered, ended)
                if ended is error:
                    raise
                raise ended from None
            self._exit(context, entered, None)
            return response

        return unary

    def _wrap_stream(self, behavior: StreamBehavior, method: str) -> StreamBehavior:
        async def stream(request: Any, context: Context) -> AsyncGenerator[Any, None]:
            entered = await self._enter(context, method, request)
            try:
                # Closed before the steps exit, so the servicer's clean-up is done when they run.
                async with aclosing(behavior(request, context)) as responses:
                    async for response in responses:
                        yield response
            except BaseException as error:
                ended = await _cut_off_status(context, error)
                self._exit(context, entered, ended)
                if ended is error:
                    raise
                raise ended from None
            self._exit(context, entered, None)

        return stream


class RequestIdStep(Step):
    """Takes the caller's `x-request-id` (1 to 128 printable ASCII characters) or mints one, and
    returns it in the trailing metadata. Trailers ride along with the reply; sending initial
    metadata early would cost every unary call a separate write (about 100 µs)."""

    async def enter(self, context: Context, method: str) -> None:
        received_at_var.set(time.perf_counter())
        request_id = edge.request_id(metadata_value(context, REQUEST_ID_KEY))
        request_id_var.set(request_id)
        context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))


class AuthStep(Step):
    """Checks `authorization: Bearer <key>` against the configured keys' SHA-256 digests, at the gate
    (before the body is decoded). The name of the matching key is recorded for logs and limits."""

    def __init__(self, keys: edge.KeyCheck) -> None:
        self._keys = keys

    def gate(self, metadata: Metadata) -> GatewayError | None:
        try:
            name = self._keys.name_of(_value_of(metadata, "authorization"))
        except GatewayError as refused:
            return refused
        # The gate runs in the call's own task, before its handler: the name is seen there.
        api_key_name_var.set(name)
        return None


class DrainStep(Step):
    """Counts the gateway calls in flight in the process's `edge.Drain` (shared with the HTTP door)
    and refuses new ones once it drains."""

    def __init__(self, drain: edge.Drain) -> None:
        self.drain = drain

    def gate(self, metadata: Metadata) -> GatewayError | None:
        return self.drain.refusal()

    async def enter(self, context: Context, method: str) -> asyncio.Task[Any] | None:
        return self.drain.enter()

    def exit(self, context: Context, state: asyncio.Task[Any] | None, error: BaseException | None) -> None:
        self.drain.exit(state)


class CallStep(Step):
    """Opens the call's record (`gateway/record.py`) when a call arrives and ends it with the
    status the caller got, however the call ends: refused at a gate, answered, failed, cancelled.
    The observers (the access log, the ledger, ...) get it from there."""

    def __init__(self, gateway: Gateway, principal_of: Callable[[str], Principal]) -> None:
        self._gateway = gateway
        self._principal_of = principal_of  # the gateway key's name (set by the auth gate) -> who

    async def enter(self, context: Context, method: str) -> CallTracker:
        tracker = self._gateway.open_call(
            method.rpartition("/")[2],
            request_id_var.get(),
            self._principal_of(api_key_name_var.get()),
            received_at_var.get(),
            door="grpc",
            route=method,
            traceparent=metadata_value(context, "traceparent") if self._gateway.tracing is not None else None,
        )
        call_var.set(tracker)
        return tracker

    def exit(self, context: Context, state: CallTracker, error: BaseException | None) -> None:
        state.end("OK" if error is None else _status_name(context))


class Unreadable:
    """A request body refused before it became a request: not the method's protobuf message
    (corrupt wire format, invalid UTF-8 in a string field), which is the caller's mistake and
    answered INVALID_ARGUMENT by the pipeline instead of grpcio's own UNKNOWN; or a large body
    whose shape alone is over the limits (`server/shape.py`)."""

    __slots__ = ("error",)

    def __init__(self, error: GatewayError) -> None:
        self.error = error


def _undecodable(detail: str) -> GatewayError:
    return GatewayError(
        f"the request is not a valid protobuf message of the method's type: {detail}"[:500],
        code=Code.INVALID_ARGUMENT,
        reason="UNDECODABLE_REQUEST",
    )


def _discard(data: bytes) -> None:
    """The deserializer of a refused call: its body is never parsed."""
    request_bytes_var.set(len(data))


def _tolerant(deserializer: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        # Decoded in the call's own task, before its handler runs: the handler sees the size.
        request_bytes_var.set(len(data))
        refusal = shape_problem(method, data)
        if refusal is not None:
            return Unreadable(refusal)
        try:
            return deserializer(data)
        except Exception as exc:  # protobuf's DecodeError, or whatever the runtime raises
            return Unreadable(_undecodable(str(exc) or type(exc).__name__))

    return deserialize


# The cancel message of a call cut off when the grace period is over.


async def _cut_off_status(context: Context, error: BaseException) -> BaseException:
    """For a call that `DrainStep.cut_off` cancelled, ends it with its own status instead and
    returns the resulting AbortError; any other exception is returned as it is."""
    ended = edge.cut_off(error, call_var.get())
    if ended is None:
        return error
    try:
        await abort(context, ended)
    except grpc.aio.AbortError as aborted:
        return aborted
    raise AssertionError("abort returns only by raising")


def _status_name(context: Context) -> str:
    code: grpc.StatusCode | None = context.code()  # None until a status is set
    if code is None or code is grpc.StatusCode.OK:
        # Ended by an exception with no status: the call was cancelled, by the client or by its
        # deadline passing (every other failure is turned into a status by the servicer).
        if context.time_remaining() == 0:
            return "DEADLINE_EXCEEDED"
        return "CANCELLED"
    return code.name
