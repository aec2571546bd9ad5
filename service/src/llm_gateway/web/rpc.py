"""The unary methods of `UsageService` and `BudgetService` through the HTTP door, for browsers and
scripts without a gRPC client (the web console reads usage and budgets this way):

    POST /api/llmgateway.v1.UsageService/GetUsageSummary
    {"filter": {"start_time": "2026-12-01T00:00:00Z"}, "group_by": ["provider"]}

The body is the request message in protobuf's JSON mapping (an empty body is the empty message),
the reply the response message the same way, field names as the .proto writes them. Each call runs
the gRPC servicer's own method in-process, under the key the request presents: the same checks,
answers and errors (in the HTTP door's error shape: the reason, the fields at fault), and the same
call record for the observers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from aiohttp import web
from google.protobuf import json_format, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from llm_gateway.domain.errors import Code, GatewayError, invalid_field
from llm_gateway.domain.principal import Principal
from llm_gateway.edge import REQUEST_ID_HEADER, request_id
from llm_gateway.gateway.core import Gateway
from llm_gateway.runtime import Runtime
from llm_gateway.server.budgets import BudgetServicer
from llm_gateway.server.context import call_var, request_id_var
from llm_gateway.server.usage import UsageServicer
from llmgateway.v1 import budget_service_pb2, usage_service_pb2

Who = Callable[[web.Request], tuple[Principal, GatewayError | None]]
Refused = Callable[[GatewayError, web.Request], web.Response]


class _AbortedError(Exception):
    """The servicer ended the call with an error (kept on the call's record)."""


class _Context:
    """What the servicers' error boundary needs of a gRPC context: `abort`."""

    async def abort(self, code: Any, details: str = "", trailing_metadata: Any = ()) -> NoReturn:
        raise _AbortedError(details)


class RpcRoutes:
    def __init__(
        self,
        gateway: Gateway,
        services: Mapping[ServiceDescriptor, object],
        who: Who,
        refused: Refused,
    ) -> None:
        self._gateway = gateway
        # "llmgateway.v1.UsageService" -> (its descriptor, the servicer)
        self._services = {
            descriptor.full_name: (descriptor, servicer) for descriptor, servicer in services.items()
        }
        self._who = who
        self._refused = refused

    def add_to(self, app: web.Application) -> None:
        app.router.add_post("/api/{service:llmgateway\\.v1\\.[A-Za-z]+}/{method:[A-Za-z]+}", self.call)

    async def call(self, request: web.Request) -> web.Response:
        service, method = request.match_info["service"], request.match_info["method"]
        principal, refusal = self._who(request)
        if refusal is not None:
            return self._refused(refusal, request)
        found = self._services.get(service)
        described = found[0].methods_by_name.get(method) if found is not None else None
        if found is None or described is None or described.server_streaming or described.client_streaming:
            unknown = GatewayError(
                f"no unary method {service}/{method} over HTTP; the usage and budget services' are",
                code=Code.NOT_FOUND,
                reason="METHOD_NOT_FOUND",
                metadata={"method": f"{service}/{method}"},
            )
            return self._refused(unknown, request)
        rid = request_id(request.headers.get(REQUEST_ID_HEADER))
        try:
            given: Message = json_format.Parse(
                (await request.read()) or b"{}", message_factory.GetMessageClass(described.input_type)()
            )
        except (json_format.ParseError, UnicodeDecodeError) as err:
            return self._refused(
                invalid_field("", f"not a {described.input_type.full_name} in JSON: {err}"), request
            )
        tracker = self._gateway.open_call(
            method, rid, principal, door="http", route=f"/api/{service}/{method}"
        )
        calls, ids = call_var.set(tracker), request_id_var.set(rid)
        try:
            reply: Message = await getattr(found[1], method)(given, _Context())
        except _AbortedError:
            error = tracker.error
            tracker.end()
            assert error is not None  # the boundary records the error before it aborts
            return self._refused(error, request)
        finally:
            call_var.reset(calls)
            request_id_var.reset(ids)
        tracker.end("OK")
        body = json_format.MessageToDict(reply, preserving_proto_field_name=True)
        return web.json_response(body, headers={REQUEST_ID_HEADER: rid})


def json_services(runtime: Runtime) -> dict[ServiceDescriptor, object]:
    """The services the HTTP door answers in JSON, each with its servicer."""
    ledger, gateway = runtime.ledger, runtime.gateway
    usage = UsageServicer(
        ledger.queries if ledger is not None else None,
        lambda principal: gateway.list_models(principal=principal),
    )
    return {
        usage_service_pb2.DESCRIPTOR.services_by_name["UsageService"]: usage,
        budget_service_pb2.DESCRIPTOR.services_by_name["BudgetService"]: BudgetServicer(runtime.budgets),
    }
