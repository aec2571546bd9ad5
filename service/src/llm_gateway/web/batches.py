"""Batches through the HTTP door, in the seed documents' shape: `POST /api/v1/batches` with a list
of Chat Completions bodies, then GET it, its results, or cancel it. The batches themselves are the
`BatchBook`'s, as for the gRPC API; this module decodes and encodes.

Routes (each also without the `/api` prefix):

    POST /api/v1/batches                       create: {"requests": [...], "max_concurrent_requests": 5, ...}
    GET  /api/v1/batches                       the caller's batches, newest first (?page_size=&page_token=)
    GET  /api/v1/batches/{id}                  one batch
    POST /api/v1/batches/{id}/cancel           cancel it
    GET  /api/v1/batches/{id}/results          its items' results, in order (?page_size=&page_token=)
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiohttp import web
from google.protobuf import json_format

from llm_gateway.batches.book import MAX_VIOLATIONS, BatchBook, BatchOrder, custom_id_violation
from llm_gateway.batches.model import BatchMode, BatchView, ItemFormat, ItemView, NewItem
from llm_gateway.domain.errors import FieldViolation, GatewayError, invalid_field, invalid_request
from llm_gateway.domain.messages import Caller
from llm_gateway.domain.principal import Principal
from llm_gateway.pricing import format_decimal
from llm_gateway.web.dialects import OPENAI
from llmgateway.v1 import chat_pb2

Who = Callable[[web.Request], tuple[Principal, GatewayError | None]]
Refused = Callable[[GatewayError, web.Request], web.Response]
_CALLER_FIELDS = ("user", "project", "tenant", "tracking_id")


class BatchRoutes:
    def __init__(self, book: BatchBook, providers: Collection[str], who: Who, refused: Refused) -> None:
        self._book = book
        self._providers = tuple(providers)
        self._who = who
        self._refused = refused

    def add_to(self, app: web.Application) -> None:
        for prefix in ("", "/api"):
            app.router.add_post(f"{prefix}/v1/batches", self._answer(self.create))
            app.router.add_get(f"{prefix}/v1/batches", self._answer(self.listing))
            app.router.add_get(f"{prefix}/v1/batches/{{batch_id}}", self._answer(self.one))
            app.router.add_post(f"{prefix}/v1/batches/{{batch_id}}/cancel", self._answer(self.cancel))
            app.router.add_get(f"{prefix}/v1/batches/{{batch_id}}/results", self._answer(self.results))

    def _answer(
        self, handler: Callable[[web.Request, Principal], Awaitable[dict[str, Any]]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def answered(request: web.Request) -> web.Response:
            principal, refusal = self._who(request)
            try:
                if refusal is not None:
                    raise refusal
                return web.json_response(await handler(request, principal))
            except GatewayError as err:
                return self._refused(err, request)

        return answered

    async def create(self, request: web.Request, principal: Principal) -> dict[str, Any]:
        try:
            body = json.loads(await request.read())  # floats: an item is kept as the JSON it came in
        except ValueError:
            raise invalid_field("", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise invalid_field("", "the body must be a JSON object")
        given = body.get("requests")
        items, violations = self._items(given)
        order = BatchOrder(
            items=tuple(items),
            max_concurrent=_integer(body, "max_concurrent_requests", violations),
            return_costs=_flag(body, "return_individual_costs", violations),
            webhook=_text(body, "webhook", violations),
            caller=_caller(body.get("metadata"), violations),
            tags=_tags(body.get("tags"), violations),
            mode=_mode(body.get("mode"), violations),
            item_path="requests[{}]",
        )
        count = len(given) if isinstance(given, list) else None
        return _batch(await self._book.create(principal, order, count, violations))

    async def listing(self, request: web.Request, principal: Principal) -> dict[str, Any]:
        size = _query_size(request)
        found, token = await self._book.page(principal, size, request.query.get("page_token", ""))
        return {"object": "list", "data": [_batch(b) for b in found], "next_page_token": token or None}

    async def one(self, request: web.Request, principal: Principal) -> dict[str, Any]:
        return _batch(await self._book.get(principal, request.match_info["batch_id"]))

    async def cancel(self, request: web.Request, principal: Principal) -> dict[str, Any]:
        return _batch(await self._book.cancel(principal, request.match_info["batch_id"]))

    async def results(self, request: web.Request, principal: Principal) -> dict[str, Any]:
        batch, items, token = await self._book.results(
            principal,
            request.match_info["batch_id"],
            _query_size(request),
            request.query.get("page_token", ""),
        )
        return {
            "object": "list",
            "batch_id": batch.id,
            "data": [_result(item, batch.return_costs) for item in items],
            "next_page_token": token or None,
        }

    def _items(self, given: object) -> tuple[list[NewItem], list[FieldViolation]]:
        """Each item checked as `POST /v1/chat/completions` checks its body (streaming aside)."""
        if not isinstance(given, list):
            return [], [FieldViolation("requests", "must be a list of chat completion requests")]
        items: list[NewItem] = []
        found: list[FieldViolation] = []
        seen: set[str] = set()
        for i, item in enumerate(given):
            if len(found) >= MAX_VIOLATIONS:
                break
            where = f"requests[{i}]"
            if not isinstance(item, dict):
                found.append(FieldViolation(where, "must be a chat completion request object"))
                continue
            body = {name: value for name, value in item.items() if name != "custom_id"}
            custom = item.get("custom_id", str(i))
            wrong = custom_id_violation(custom, where, seen) if isinstance(custom, str) else None
            if not isinstance(custom, str):
                found.append(FieldViolation(f"{where}.custom_id", "must be a string"))
            elif wrong is not None:
                found.append(wrong)
            if body.get("stream"):
                found.append(FieldViolation(f"{where}.stream", "a batch's items are not streamed"))
            try:
                # As the item will be read when it runs: numbers as exact decimals.
                OPENAI.decode(json.loads(json.dumps(body), parse_float=Decimal), self._providers)
            except GatewayError as err:
                problems = err.violations or (FieldViolation("", err.message),)
                found.extend(
                    FieldViolation(f"{where}.{v.field}" if v.field else where, v.description)
                    for v in problems
                )
            items.append(NewItem(str(custom), json.dumps(body).encode(), ItemFormat.OPENAI))
        return items, found


def _mode(given: object, violations: list[FieldViolation]) -> BatchMode:
    if given is None:
        return BatchMode.LIVE
    if given not in ("live", "provider"):
        violations.append(FieldViolation("mode", 'must be "live" or "provider"'))
        return BatchMode.LIVE
    return BatchMode(given)


def _integer(body: dict[str, Any], name: str, violations: list[FieldViolation]) -> int:
    value = body.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        violations.append(FieldViolation(name, "must be an integer"))
        return 0
    return value


def _flag(body: dict[str, Any], name: str, violations: list[FieldViolation]) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        violations.append(FieldViolation(name, "must be true or false"))
        return False
    return value


def _text(body: dict[str, Any], name: str, violations: list[FieldViolation]) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        violations.append(FieldViolation(name, "must be a string"))
        return ""
    return value


def _caller(given: object, violations: list[FieldViolation]) -> Caller:
    if given is None:
        return Caller()
    if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
        violations.append(FieldViolation("metadata", "must be an object of strings (user, project, tenant)"))
        return Caller()
    unknown = sorted(set(given) - set(_CALLER_FIELDS))
    if unknown:
        violations.append(FieldViolation("metadata", f"unknown fields {unknown}"))
    return Caller(**{name: given.get(name, "") for name in _CALLER_FIELDS})


def _tags(given: object, violations: list[FieldViolation]) -> dict[str, str]:
    if given is None:
        return {}
    if not isinstance(given, dict) or not all(isinstance(v, str) for v in given.values()):
        violations.append(FieldViolation("tags", "must be an object of strings"))
        return {}
    return {str(k): v for k, v in given.items()}


def _query_size(request: web.Request) -> int:
    text = request.query.get("page_size", "0")
    if not text.isdigit():
        raise invalid_request([FieldViolation("page_size", "must be a whole number")])
    return int(text)


def _time(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC).isoformat()


def _batch(view: BatchView) -> dict[str, Any]:
    counts = view.counts
    caller = view.caller
    return {
        "id": view.id,
        "object": "batch",
        "status": view.status.value,
        "total_requests": counts.total,
        "counts": {
            "succeeded": counts.succeeded,
            "failed": counts.failed,
            "pending": counts.pending,
            "running": counts.running,
            "cancelled": counts.cancelled,
        },
        "total_cost": format_decimal(view.cost),
        "currency": "USD",
        "max_concurrent_requests": view.max_concurrent,
        "return_individual_costs": view.return_costs,
        "webhook": view.webhook or None,
        "metadata": {name: getattr(caller, name) for name in _CALLER_FIELDS if getattr(caller, name)},
        "tags": view.tags,
        "paused_reason": view.paused_reason or None,
        "mode": view.mode.value,
        "provider_jobs": [
            {
                "provider": j.provider,
                "upstream_id": j.upstream_id or None,
                "status": j.upstream_status,
                "items": j.items,
            }
            for j in view.jobs
        ],
        "created_at": _time(view.created_at),
        "started_at": _time(view.started_at),
        "finished_at": _time(view.finished_at),
    }


def _result(item: ItemView, with_costs: bool) -> dict[str, Any]:
    found: dict[str, Any] = {
        "custom_id": item.custom_id,
        "status": item.status.value,
        "attempts": item.attempts,
    }
    if item.response is not None:
        # The gateway's reply in the JSON mapping of its gRPC API, as grpcurl shows it.
        response = chat_pb2.ChatResponse.FromString(item.response)
        if with_costs:
            found["usage"] = json_format.MessageToDict(response.usage, preserving_proto_field_name=True)
            found["cost"] = json_format.MessageToDict(response.cost, preserving_proto_field_name=True)
        response.ClearField("usage")
        response.ClearField("cost")
        found["response"] = json_format.MessageToDict(response, preserving_proto_field_name=True)
    if item.error is not None:
        found["error"] = {"code": item.error.code, "reason": item.error.reason, "message": item.error.message}
    return found
