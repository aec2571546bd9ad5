"""The BatchService servicer: decodes and checks the items of a new batch as `Chat` would take
them, and encodes batches and results; the batches themselves are the `BatchBook`'s."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from google.protobuf import timestamp_pb2

from llm_gateway.batches.book import MAX_VIOLATIONS, BatchBook, BatchOrder, custom_id_violation
from llm_gateway.batches.model import BatchMode, BatchStatus, BatchView, ItemStatus, ItemView, NewItem
from llm_gateway.domain.errors import FieldViolation, GatewayError
from llm_gateway.domain.messages import Caller
from llm_gateway.domain.principal import ANONYMOUS, Principal
from llm_gateway.pricing import format_decimal
from llm_gateway.server import encode
from llm_gateway.server.boundary import ErrorBoundary
from llm_gateway.server.context import call_var
from llm_gateway.server.decode import decode_caller, decode_chat_request
from llmgateway.v1 import batch_service_pb2, batch_service_pb2_grpc, batches_pb2, chat_pb2

if TYPE_CHECKING:
    from llm_gateway.server.context import Context

_STATUS = {
    BatchStatus.QUEUED: batches_pb2.BATCH_STATUS_QUEUED,
    BatchStatus.RUNNING: batches_pb2.BATCH_STATUS_RUNNING,
    BatchStatus.PAUSED: batches_pb2.BATCH_STATUS_PAUSED,
    BatchStatus.CANCELLING: batches_pb2.BATCH_STATUS_CANCELLING,
    BatchStatus.COMPLETED: batches_pb2.BATCH_STATUS_COMPLETED,
    BatchStatus.CANCELLED: batches_pb2.BATCH_STATUS_CANCELLED,
}
_MODES = frozenset(
    {batches_pb2.BATCH_MODE_UNSPECIFIED, batches_pb2.BATCH_MODE_LIVE, batches_pb2.BATCH_MODE_PROVIDER}
)
_ITEM_STATUS = {
    ItemStatus.PENDING: batches_pb2.BATCH_ITEM_STATUS_PENDING,
    ItemStatus.RUNNING: batches_pb2.BATCH_ITEM_STATUS_RUNNING,
    ItemStatus.SUCCEEDED: batches_pb2.BATCH_ITEM_STATUS_SUCCEEDED,
    ItemStatus.FAILED: batches_pb2.BATCH_ITEM_STATUS_FAILED,
    ItemStatus.CANCELLED: batches_pb2.BATCH_ITEM_STATUS_CANCELLED,
}


class BatchServicer(batch_service_pb2_grpc.BatchServiceServicer):
    def __init__(self, book: BatchBook, providers: Collection[str]) -> None:
        self._book = book
        self._providers = tuple(providers)

    async def CreateBatch(  # noqa: N802 (gRPC method name)
        self, request: batch_service_pb2.CreateBatchRequest, context: Context
    ) -> batches_pb2.Batch:
        async with ErrorBoundary(context):
            items, violations = self._items(request)
            caller = decode_caller(request.caller) if request.HasField("caller") else Caller()
            order = BatchOrder(
                items=tuple(items),
                max_concurrent=request.max_concurrent_requests,
                return_costs=request.return_individual_costs,
                webhook=request.webhook,
                caller=caller,
                tags=dict(request.tags),
                mode=BatchMode.PROVIDER
                if request.mode == batches_pb2.BATCH_MODE_PROVIDER
                else BatchMode.LIVE,
            )
            if request.mode not in _MODES:
                violations.append(FieldViolation("mode", "unknown mode"))
            return _batch(await self._book.create(_principal(), order, len(request.requests), violations))

    async def GetBatch(  # noqa: N802
        self, request: batch_service_pb2.GetBatchRequest, context: Context
    ) -> batches_pb2.Batch:
        async with ErrorBoundary(context):
            return _batch(await self._book.get(_principal(), request.id))

    async def ListBatches(  # noqa: N802
        self, request: batch_service_pb2.ListBatchesRequest, context: Context
    ) -> batch_service_pb2.ListBatchesResponse:
        async with ErrorBoundary(context):
            found, token = await self._book.page(_principal(), request.page_size, request.page_token)
            return batch_service_pb2.ListBatchesResponse(
                batches=[_batch(b) for b in found], next_page_token=token
            )

    async def CancelBatch(  # noqa: N802
        self, request: batch_service_pb2.CancelBatchRequest, context: Context
    ) -> batches_pb2.Batch:
        async with ErrorBoundary(context):
            return _batch(await self._book.cancel(_principal(), request.id))

    async def ListBatchResults(  # noqa: N802
        self, request: batch_service_pb2.ListBatchResultsRequest, context: Context
    ) -> batch_service_pb2.ListBatchResultsResponse:
        async with ErrorBoundary(context):
            batch, items, token = await self._book.results(
                _principal(), request.id, request.page_size, request.page_token
            )
            return batch_service_pb2.ListBatchResultsResponse(
                results=[_result(item, batch.return_costs) for item in items], next_page_token=token
            )

    def _items(
        self, request: batch_service_pb2.CreateBatchRequest
    ) -> tuple[list[NewItem], list[FieldViolation]]:
        """The items, each request checked as `Chat` checks it, and what is wrong with them."""
        items: list[NewItem] = []
        found: list[FieldViolation] = []
        seen: set[str] = set()
        for i, item in enumerate(request.requests):
            if len(found) >= MAX_VIOLATIONS:
                break
            where = f"requests[{i}]"
            wrong = custom_id_violation(item.custom_id, where, seen)
            if wrong is not None:
                found.append(wrong)
            if not item.HasField("request"):
                found.append(FieldViolation(f"{where}.request", "must be set"))
                continue
            if item.request.dry_run:
                found.append(
                    FieldViolation(
                        f"{where}.request.dry_run", "a batch runs its calls; estimate with EstimateCost"
                    )
                )
            try:
                decode_chat_request(item.request, self._providers)
            except GatewayError as err:
                found.extend(_within(f"{where}.request", err))
            items.append(NewItem(item.custom_id, item.request.SerializeToString()))
        return items, found


def _within(where: str, err: GatewayError) -> list[FieldViolation]:
    """A request's violations, named from the batch's root."""
    problems = err.violations or (FieldViolation("", err.message),)
    return [FieldViolation(f"{where}.{v.field}" if v.field else where, v.description) for v in problems]


def _principal() -> Principal:
    call = call_var.get()
    return call.principal if call is not None else ANONYMOUS


def _timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    return None if seconds is None else encode.timestamp(seconds)


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
        mode=batches_pb2.BATCH_MODE_PROVIDER
        if view.mode is BatchMode.PROVIDER
        else batches_pb2.BATCH_MODE_LIVE,
        provider_jobs=[
            batches_pb2.ProviderJob(
                provider=job.provider,
                upstream_id=job.upstream_id,
                upstream_status=job.upstream_status,
                items=job.items,
            )
            for job in view.jobs
        ],
    )
    caller = view.caller
    if caller != Caller():
        out.caller.CopyFrom(
            chat_pb2.CallerMetadata(
                user=caller.user, project=caller.project, tenant=caller.tenant, tracking_id=caller.tracking_id
            )
        )
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
