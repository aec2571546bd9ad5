"""The BatchService servicer: batches created, read, listed and cancelled, and their results. A key
sees the batches it created; an admin key sees every batch."""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Awaitable, Collection
from typing import TYPE_CHECKING, TypeVar

from google.protobuf import timestamp_pb2

from llm_gateway.batches.model import (
    BatchStatus,
    BatchView,
    ItemStatus,
    ItemView,
    NewBatch,
    NewItem,
    new_batch_id,
)
from llm_gateway.batches.runner import BatchRunner
from llm_gateway.batches.store import BatchFinishedError
from llm_gateway.domain.errors import Code, FieldViolation, GatewayError, invalid_field, invalid_request
from llm_gateway.domain.principal import ANONYMOUS, Principal
from llm_gateway.pricing import format_decimal
from llm_gateway.server.boundary import ErrorBoundary
from llm_gateway.server.context import call_var
from llm_gateway.server.decode import decode_chat_request
from llm_gateway.server.paging import page_position, page_size, page_token
from llmgateway.v1 import batch_service_pb2, batch_service_pb2_grpc, batches_pb2, chat_pb2

if TYPE_CHECKING:
    from llm_gateway.server.context import Context

T = TypeVar("T")
_log = logging.getLogger("llm_gateway.server")

MAX_ITEMS = 50_000
MAX_CONCURRENT = 1_000
DEFAULT_CONCURRENT = 5
DEFAULT_BATCH_PAGE = 50
_RESERVED_TAGS = frozenset({"batch_id", "batch_item"})
_MAX_VIOLATIONS = 20  # a batch of thousands of bad items names the first few
_STATUS = {
    BatchStatus.QUEUED: batches_pb2.BATCH_STATUS_QUEUED,
    BatchStatus.RUNNING: batches_pb2.BATCH_STATUS_RUNNING,
    BatchStatus.PAUSED: batches_pb2.BATCH_STATUS_PAUSED,
    BatchStatus.CANCELLING: batches_pb2.BATCH_STATUS_CANCELLING,
    BatchStatus.COMPLETED: batches_pb2.BATCH_STATUS_COMPLETED,
    BatchStatus.CANCELLED: batches_pb2.BATCH_STATUS_CANCELLED,
}
_ITEM_STATUS = {
    ItemStatus.PENDING: batches_pb2.BATCH_ITEM_STATUS_PENDING,
    ItemStatus.RUNNING: batches_pb2.BATCH_ITEM_STATUS_RUNNING,
    ItemStatus.SUCCEEDED: batches_pb2.BATCH_ITEM_STATUS_SUCCEEDED,
    ItemStatus.FAILED: batches_pb2.BATCH_ITEM_STATUS_FAILED,
    ItemStatus.CANCELLED: batches_pb2.BATCH_ITEM_STATUS_CANCELLED,
}


class BatchServicer(batch_service_pb2_grpc.BatchServiceServicer):
    def __init__(
        self, runner: BatchRunner | None, providers: Collection[str], webhooks: Collection[str]
    ) -> None:
        self._runner = runner  # None: the gateway keeps no ledger, so no batches
        self._providers = tuple(providers)
        self._webhooks = frozenset(webhooks)  # those that take "batch_completed" events

    async def CreateBatch(  # noqa: N802 (gRPC method name)
        self, request: batch_service_pb2.CreateBatchRequest, context: Context
    ) -> batches_pb2.Batch:
        async with ErrorBoundary(context):
            runner = self._enabled()
            batch = self._new_batch(request, _principal())
            await _answer(runner.ready())
            await _answer(runner.store.create(batch))
            runner.wake()
            _log.info({"event": "batch_created", "batch_id": batch.id, "items": len(batch.items)})
            return _batch(await self._found(runner, batch.id))

    async def GetBatch(  # noqa: N802
        self, request: batch_service_pb2.GetBatchRequest, context: Context
    ) -> batches_pb2.Batch:
        async with ErrorBoundary(context):
            return _batch(await self._found(self._enabled(), request.id))

    async def ListBatches(  # noqa: N802
        self, request: batch_service_pb2.ListBatchesRequest, context: Context
    ) -> batch_service_pb2.ListBatchesResponse:
        async with ErrorBoundary(context):
            runner = self._enabled()
            size = page_size(request.page_size) if request.page_size else DEFAULT_BATCH_PAGE
            principal = _principal()
            key = None if principal.admin else principal.key
            before = _read_position(request.page_token, key or "")
            await _answer(runner.ready())
            found = await _answer(runner.store.batches(key, before, size + 1))
            reply = batch_service_pb2.ListBatchesResponse(batches=[_batch(b) for b in found[:size]])
            if len(found) > size:
                last = found[size - 1]
                reply.next_page_token = _position_token((last.created_at, last.id), key or "")
            return reply

    async def CancelBatch(  # noqa: N802
        self, request: batch_service_pb2.CancelBatchRequest, context: Context
    ) -> batches_pb2.Batch:
        async with ErrorBoundary(context):
            runner = self._enabled()
            await self._found(runner, request.id)
            try:
                cancelled = await _answer(runner.store.cancel(request.id, time.time()))
            except BatchFinishedError:
                raise GatewayError(
                    f"batch {request.id!r} has ended already",
                    code=Code.FAILED_PRECONDITION,
                    reason="BATCH_FINISHED",
                    metadata={"batch_id": request.id},
                ) from None
            if cancelled is None:
                raise _not_found(request.id)
            _log.info({"event": "batch_cancelled", "batch_id": request.id})
            return _batch(cancelled)

    async def ListBatchResults(  # noqa: N802
        self, request: batch_service_pb2.ListBatchResultsRequest, context: Context
    ) -> batch_service_pb2.ListBatchResultsResponse:
        async with ErrorBoundary(context):
            runner = self._enabled()
            size = page_size(request.page_size)
            batch = await self._found(runner, request.id)
            after = page_position(request.page_token, batch.id) - 1
            items = await _answer(runner.store.results(batch.id, after, size + 1))
            reply = batch_service_pb2.ListBatchResultsResponse(
                results=[_result(item, batch.return_costs) for item in items[:size]]
            )
            if len(items) > size:
                reply.next_page_token = page_token(items[size - 1].seq + 1, batch.id)
            return reply

    def _enabled(self) -> BatchRunner:
        if self._runner is None:
            raise GatewayError(
                "batches are kept in the ledger's database, and the ledger is off (ledger.enabled)",
                code=Code.FAILED_PRECONDITION,
                reason="LEDGER_DISABLED",
            )
        return self._runner

    async def _found(self, runner: BatchRunner, batch_id: str) -> BatchView:
        if not batch_id:
            raise invalid_field("id", "must be set")
        await _answer(runner.ready())
        batch = await _answer(runner.store.get(batch_id))
        principal = _principal()
        # Another key's batch is reported as missing: its existence is not another key's business.
        if batch is None or not (principal.admin or batch.key_name == principal.key):
            raise _not_found(batch_id)
        return batch

    def _new_batch(self, request: batch_service_pb2.CreateBatchRequest, principal: Principal) -> NewBatch:
        violations: list[FieldViolation] = []
        if not 1 <= len(request.requests) <= MAX_ITEMS:
            violations.append(FieldViolation("requests", f"must hold 1 to {MAX_ITEMS:,} items"))
        concurrent = request.max_concurrent_requests or DEFAULT_CONCURRENT
        if not 1 <= concurrent <= MAX_CONCURRENT:
            violations.append(FieldViolation("max_concurrent_requests", f"must be 0 to {MAX_CONCURRENT}"))
        if request.webhook and request.webhook not in self._webhooks:
            named = ", ".join(sorted(self._webhooks)) or "none"
            violations.append(
                FieldViolation(
                    "webhook", f"no configured webhook of that name takes batch_completed ({named})"
                )
            )
        for tag in sorted(_RESERVED_TAGS & set(request.tags)):
            violations.append(FieldViolation(f"tags[{tag}]", "is set by the gateway on every item"))
        seen: set[str] = set()
        items = []
        for i, item in enumerate(request.requests):
            where = f"requests[{i}]"
            violations.extend(self._item_violations(item, where, seen))
            if len(violations) >= _MAX_VIOLATIONS:
                break
            items.append(NewItem(item.custom_id, item.request.SerializeToString()))
        if violations:
            raise invalid_request(violations[:_MAX_VIOLATIONS])
        return NewBatch(
            id=new_batch_id(),
            key_name=principal.key,
            max_concurrent=concurrent,
            return_costs=request.return_individual_costs,
            webhook=request.webhook,
            caller=request.caller.SerializeToString() if request.HasField("caller") else b"",
            tags=dict(request.tags),
            created_at=time.time(),
            items=tuple(items),
        )

    def _item_violations(
        self, item: batch_service_pb2.BatchRequestItem, where: str, seen: set[str]
    ) -> list[FieldViolation]:
        found = []
        custom = item.custom_id
        if not 1 <= len(custom) <= 64 or not custom.isprintable():
            found.append(FieldViolation(f"{where}.custom_id", "must be 1 to 64 printable characters"))
        elif custom in seen:
            found.append(FieldViolation(f"{where}.custom_id", f"{custom!r} is used by an earlier item"))
        seen.add(custom)
        if not item.HasField("request"):
            return [*found, FieldViolation(f"{where}.request", "must be set")]
        if item.request.dry_run:
            found.append(
                FieldViolation(
                    f"{where}.request.dry_run", "a batch runs its calls; estimate with EstimateCost"
                )
            )
        try:
            decode_chat_request(item.request, self._providers)
        except GatewayError as err:
            problems = err.violations or (FieldViolation("", err.message),)
            found.extend(
                FieldViolation(f"{where}.request.{v.field}" if v.field else f"{where}.request", v.description)
                for v in problems
            )
        return found


def _principal() -> Principal:
    call = call_var.get()
    return call.principal if call is not None else ANONYMOUS


def _not_found(batch_id: str) -> GatewayError:
    return GatewayError(
        f"no batch {batch_id!r}",
        code=Code.NOT_FOUND,
        reason="BATCH_NOT_FOUND",
        metadata={"batch_id": batch_id},
    )


async def _answer(work: Awaitable[T]) -> T:
    """The store's answer; a database that cannot answer is UNAVAILABLE (details to the log)."""
    try:
        return await work
    except (GatewayError, BatchFinishedError):
        raise
    except Exception as exc:
        _log.warning({"event": "batch_store_error", "error": type(exc).__name__, "detail": str(exc)[:200]})
        raise GatewayError(
            "the batch store cannot be reached now; retry shortly",
            code=Code.UNAVAILABLE,
            reason="BATCH_STORE_UNAVAILABLE",
        ) from None


def _position_token(position: tuple[float, str], issued_for: str) -> str:
    raw = f"{position[0]!r}|{position[1]}|{issued_for}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _read_position(token: str, issued_for: str) -> tuple[float, str] | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        created, batch_id, issuer = raw.split("|", 2)
        position = (float(created), batch_id)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid_field("page_token", "not a token from a previous reply of this listing") from None
    if issuer != issued_for:
        raise invalid_field("page_token", "was issued for a different listing")
    return position


def _timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(round(seconds * 1e9))
    return stamp


def _batch(view: BatchView) -> batches_pb2.Batch:
    counts = view.counts
    out = batches_pb2.Batch(
        id=view.id,
        status=_STATUS[view.status],
        counts=batches_pb2.BatchCounts(
            total=counts.total,
            succeeded=counts.succeeded,
            failed=counts.failed,
            pending=counts.pending,
            running=counts.running,
            cancelled=counts.cancelled,
        ),
        cost=format_decimal(view.cost),
        currency="USD",
        max_concurrent_requests=view.max_concurrent,
        return_individual_costs=view.return_costs,
        webhook=view.webhook,
        tags=view.tags,
        paused_reason=view.paused_reason,
        key_name=view.key_name,
        create_time=_timestamp(view.created_at),
        start_time=_timestamp(view.started_at),
        end_time=_timestamp(view.finished_at),
    )
    if view.caller:
        out.caller.ParseFromString(view.caller)
    return out


def _result(item: ItemView, with_costs: bool) -> batches_pb2.BatchResult:
    out = batches_pb2.BatchResult(
        custom_id=item.custom_id, status=_ITEM_STATUS[item.status], attempts=item.attempts
    )
    if item.response is not None:
        response = chat_pb2.ChatResponse.FromString(item.response)
        if with_costs:
            out.usage.CopyFrom(response.usage)
            out.cost.CopyFrom(response.cost)
        else:
            response.ClearField("usage")
            response.ClearField("cost")
        out.response.CopyFrom(response)
    if item.error is not None:
        out.error.CopyFrom(
            batches_pb2.BatchItemError(
                code=item.error.code, reason=item.error.reason, message=item.error.message
            )
        )
    return out
