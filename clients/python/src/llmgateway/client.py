"""Small helpers around the generated `llmgateway.v1` stubs.

- `connect` / `connect_async` open a channel that sends the API key as `authorization: Bearer <key>`
  on every call and return a `Connection` / `AsyncConnection` holding the channel and the typed
  stubs (`stub` for `GatewayService`, `usage` for `UsageService`, `budgets` for `BudgetService`).
- `error_info`, `bad_request`, `retry_info` and `rpc_status` read the rich error details
  (`google.rpc.Status`) of a failed call, sync or asyncio.
- `user`, `system`, `assistant` build text messages; `text` joins a message's text parts.
- `to_decimal` parses the API's decimal money strings exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc
import grpc.aio
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status as _grpc_rpc_status

from llmgateway.v1 import content_pb2
from llmgateway.v1.budget_service_pb2_grpc import BudgetServiceStub
from llmgateway.v1.gateway_service_pb2_grpc import GatewayServiceStub
from llmgateway.v1.usage_service_pb2_grpc import UsageServiceStub

if TYPE_CHECKING:
    from typing import Self

    from llmgateway.v1.budget_service_pb2_grpc import BudgetServiceAsyncStub
    from llmgateway.v1.gateway_service_pb2_grpc import GatewayServiceAsyncStub
    from llmgateway.v1.usage_service_pb2_grpc import UsageServiceAsyncStub

__all__ = [
    "AsyncConnection",
    "Connection",
    "assistant",
    "bad_request",
    "connect",
    "connect_async",
    "error_info",
    "retry_info",
    "rpc_status",
    "system",
    "text",
    "to_decimal",
    "user",
]

ChannelOptions = Sequence[tuple[str, Any]]

_AUTHORIZATION = "authorization"
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


# --- Connecting ---------------------------------------------------------------------------------


def _has_authorization(metadata: Sequence[tuple[str, str | bytes]] | grpc.aio.Metadata | None) -> bool:
    # Both tuples of pairs and grpc.aio.Metadata iterate as (key, value) pairs.
    pairs = cast("Sequence[tuple[str, str | bytes]]", metadata or ())
    return any(key.lower() == _AUTHORIZATION for key, _ in pairs)


@dataclass
class _SyncCallDetails(grpc.ClientCallDetails):
    method: str
    timeout: float | None
    metadata: grpc.Metadata | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _SyncAuth(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Adds `authorization: Bearer <key>` to every call that does not carry its own."""

    def __init__(self, api_key: str) -> None:
        self._value = f"Bearer {api_key}"

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        if _has_authorization(details.metadata):
            return details
        return _SyncCallDetails(
            method=details.method,
            timeout=details.timeout,
            metadata=(*(details.metadata or ()), (_AUTHORIZATION, self._value)),
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
            compression=getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return continuation(self._details(client_call_details), request_iterator)


def _aio_details(details: grpc.aio.ClientCallDetails, value: str) -> grpc.aio.ClientCallDetails:
    if _has_authorization(details.metadata):
        return details
    metadata = grpc.aio.Metadata(*cast("Sequence[tuple[str, str | bytes]]", details.metadata or ()))
    metadata.add(_AUTHORIZATION, value)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


# grpc.aio files each interceptor under one call type only, so each type needs its own class.
class _AioUnaryUnaryAuth(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, value: str) -> None:
        self._value = value

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_aio_details(client_call_details, self._value), request)


class _AioUnaryStreamAuth(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, value: str) -> None:
        self._value = value

    async def intercept_unary_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        return await continuation(_aio_details(client_call_details, self._value), request)


class _AioStreamUnaryAuth(grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, value: str) -> None:
        self._value = value

    async def intercept_stream_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(_aio_details(client_call_details, self._value), request_iterator)


class _AioStreamStreamAuth(grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, value: str) -> None:
        self._value = value

    async def intercept_stream_stream(
        self, continuation: Callable[..., Any], client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(_aio_details(client_call_details, self._value), request_iterator)


def _channel_credentials(
    secure: bool, credentials: grpc.ChannelCredentials | None
) -> grpc.ChannelCredentials | None:
    if credentials is not None:
        return credentials
    return grpc.ssl_channel_credentials() if secure else None


class Connection:
    """A sync channel to the gateway and its typed stubs: `stub` (`GatewayService`), `usage`
    (`UsageService`) and `budgets` (`BudgetService`). Close it when done, or use it in `with`.

    ```python
    with connect("localhost:50051", api_key) as gateway:
        reply = gateway.stub.Chat(request, timeout=30)
    ```
    """

    def __init__(self, channel: grpc.Channel) -> None:
        self.channel = channel
        self.stub = GatewayServiceStub(channel)
        self.usage = UsageServiceStub(channel)
        self.budgets = BudgetServiceStub(channel)

    def close(self) -> None:
        """Closes the channel, cancelling calls in flight."""
        self.channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncConnection:
    """An asyncio channel to the gateway and its typed stubs: `stub` (`GatewayService`), `usage`
    (`UsageService`) and `budgets` (`BudgetService`). Await `close()` when done, or use it in
    `async with`.

    ```python
    async with connect_async("localhost:50051", api_key) as gateway:
        reply = await gateway.stub.Chat(request, timeout=30)
    ```
    """

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.stub: GatewayServiceAsyncStub = GatewayServiceStub(channel)
        self.usage: UsageServiceAsyncStub = UsageServiceStub(channel)
        self.budgets: BudgetServiceAsyncStub = BudgetServiceStub(channel)

    async def close(self, grace: float | None = None) -> None:
        """Closes the channel; calls in flight get `grace` seconds to finish, then are cancelled."""
        await self.channel.close(grace)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def connect(
    address: str,
    api_key: str | None = None,
    *,
    secure: bool = False,
    credentials: grpc.ChannelCredentials | None = None,
    options: ChannelOptions | None = None,
) -> Connection:
    """Opens a sync channel to the gateway at `address` ("host:port").

    With `api_key`, every call carries `authorization: Bearer <key>` unless the call's own metadata
    already has an `authorization` entry. The channel is plaintext unless `secure` is true (TLS with
    the system roots) or `credentials` are given. `options` are gRPC channel arguments.
    """
    creds = _channel_credentials(secure, credentials)
    channel = (
        grpc.secure_channel(address, creds, options=options)
        if creds is not None
        else grpc.insecure_channel(address, options=options)
    )
    if api_key:
        channel = grpc.intercept_channel(channel, _SyncAuth(api_key))
    return Connection(channel)


def connect_async(
    address: str,
    api_key: str | None = None,
    *,
    secure: bool = False,
    credentials: grpc.ChannelCredentials | None = None,
    options: ChannelOptions | None = None,
) -> AsyncConnection:
    """Opens an asyncio channel to the gateway at `address`; arguments as for `connect`.

    Call it from the event loop that makes the calls.
    """
    creds = _channel_credentials(secure, credentials)
    interceptors: list[grpc.aio.ClientInterceptor] = []
    if api_key:
        value = f"Bearer {api_key}"
        interceptors = cast(
            "list[grpc.aio.ClientInterceptor]",
            [
                _AioUnaryUnaryAuth(value),
                _AioUnaryStreamAuth(value),
                _AioStreamUnaryAuth(value),
                _AioStreamStreamAuth(value),
            ],
        )
    channel = (
        grpc.aio.secure_channel(address, creds, options=options, interceptors=interceptors)
        if creds is not None
        else grpc.aio.insecure_channel(address, options=options, interceptors=interceptors)
    )
    return AsyncConnection(channel)


# --- Errors -------------------------------------------------------------------------------------


def rpc_status(err: grpc.RpcError) -> status_pb2.Status | None:
    """The `google.rpc.Status` a failed call carries, or None when it has none.

    Works with the errors of sync calls and with `grpc.aio.AioRpcError`. Raises ValueError when the
    status details contradict the call's status code.
    """
    if isinstance(err, grpc.aio.AioRpcError):
        # AioRpcError is not a grpc.Call: read the trailing metadata it keeps.
        pairs = cast("Sequence[tuple[str, str | bytes]]", err.trailing_metadata() or ())
        for key, value in pairs:
            if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
                status = status_pb2.Status.FromString(value)
                if status.code != err.code().value[0]:
                    raise ValueError(
                        f"code in status details ({status.code}) does not match status code ({err.code()})"
                    )
                return status
        return None
    # The errors of sync calls are also grpc.Call objects (the typing stubs cannot express that).
    call: object = err
    if isinstance(call, grpc.Call):
        return cast("status_pb2.Status | None", _grpc_rpc_status.from_call(call))
    return None


_DetailT = TypeVar("_DetailT", bound=Message)


def _detail(err: grpc.RpcError, detail_type: type[_DetailT]) -> _DetailT | None:
    status = rpc_status(err)
    if status is None:
        return None
    for any_detail in status.details:
        if any_detail.Is(detail_type.DESCRIPTOR):
            message = detail_type()
            any_detail.Unpack(message)
            return message
    return None


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The `google.rpc.ErrorInfo` of a failed call: `reason` (for example "MODEL_NOT_FOUND"),
    `domain` ("llmgateway.v1") and `metadata` (always `request_id`). None when absent."""
    return _detail(err, error_details_pb2.ErrorInfo)


def bad_request(err: grpc.RpcError) -> error_details_pb2.BadRequest | None:
    """The `google.rpc.BadRequest` of an INVALID_ARGUMENT error, naming every bad field in
    `field_violations`. None when absent."""
    return _detail(err, error_details_pb2.BadRequest)


def retry_info(err: grpc.RpcError) -> error_details_pb2.RetryInfo | None:
    """The `google.rpc.RetryInfo` of a RESOURCE_EXHAUSTED error when the provider said when to retry
    (`retry_delay`). None when absent."""
    return _detail(err, error_details_pb2.RetryInfo)


# --- Messages -----------------------------------------------------------------------------------


def _text_message(role: content_pb2.Role.ValueType, text: str, name: str) -> content_pb2.Message:
    return content_pb2.Message(role=role, content=[content_pb2.Part(text=text)], name=name)


def user(text: str, *, name: str = "") -> content_pb2.Message:
    """A user message with one text part."""
    return _text_message(content_pb2.ROLE_USER, text, name)


def system(text: str) -> content_pb2.Message:
    """A system message (instructions) with one text part."""
    return _text_message(content_pb2.ROLE_SYSTEM, text, "")


def assistant(text: str) -> content_pb2.Message:
    """An earlier assistant turn with one text part, for multi-turn conversations."""
    return _text_message(content_pb2.ROLE_ASSISTANT, text, "")


def text(message: content_pb2.Message) -> str:
    """The message's text parts joined in order (images and tool calls are left out)."""
    return "".join(part.text for part in message.content if part.WhichOneof("kind") == "text")


# --- Money --------------------------------------------------------------------------------------

_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def to_decimal(amount: str) -> Decimal:
    """Parses an amount of the API ("0.000435") exactly. Raises ValueError for an empty amount
    (the cost of a model without a known price) or anything that is not plain decimal notation."""
    if not _PLAIN_DECIMAL.fullmatch(amount):
        raise ValueError(f"not a plain decimal amount: {amount!r}")
    return Decimal(amount)
