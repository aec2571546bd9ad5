"""The UsageService servicer: protobuf queries onto the ledger's, and its answers back.

Who asks decides what they see (`ledger.usage.scoped`): the principal comes from the call's record,
which the pipeline opened with the gateway key the auth gate recognised.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, TypeVar

from google.protobuf import timestamp_pb2

from llm_gateway.catalog import ModelSpec
from llm_gateway.domain.errors import Code, GatewayError, invalid_field
from llm_gateway.gateway.record import ANONYMOUS, CallRecord, Principal
from llm_gateway.ledger import (
    AccessDenied,
    Granularity,
    GroupBy,
    LedgerQueryError,
    ModelUsage,
    RecordFilter,
    Stats,
    SummaryRequest,
    UsageQueries,
)
from llm_gateway.ledger.query import ModelHealth
from llm_gateway.pricing import format_decimal
from llm_gateway.recommendations import Recommendation, recommend, tier_starts
from llm_gateway.server import encode
from llm_gateway.server.boundary import ErrorBoundary
from llm_gateway.server.context import call_var
from llmgateway.v1 import chat_pb2, usage_pb2, usage_service_pb2_grpc

if TYPE_CHECKING:
    from llm_gateway.server.context import Context

T = TypeVar("T")
_log = logging.getLogger("llm_gateway.server")
_MAX_GROUP_BY = 4
_GRANULARITIES = {
    usage_pb2.GRANULARITY_UNSPECIFIED: Granularity.DAY,
    usage_pb2.GRANULARITY_HOUR: Granularity.HOUR,
    usage_pb2.GRANULARITY_DAY: Granularity.DAY,
    usage_pb2.GRANULARITY_MONTH: Granularity.MONTH,
}
# The contract says "api_key"; the ledger's dimension is the key.
_DIMENSION_NAMES = {"api_key": "key"}


_MAX_ALTERNATIVES = 20


class UsageServicer(usage_service_pb2_grpc.UsageServiceServicer):
    def __init__(
        self,
        queries: UsageQueries | None,
        models: Callable[[Principal], Sequence[ModelSpec]] = lambda _: (),
    ) -> None:
        self._queries = queries  # None: the gateway keeps no ledger
        self._models = models  # the catalog's models a principal may use

    async def GetUsageSummary(  # noqa: N802 (gRPC method name)
        self, request: usage_pb2.GetUsageSummaryRequest, context: Context
    ) -> usage_pb2.GetUsageSummaryResponse:
        async with ErrorBoundary(context):
            queries = self._ledger()
            summary_request = _summary_request(request)
            summary = await _answer(queries.summary(_principal(), summary_request))
            return usage_pb2.GetUsageSummaryResponse(
                buckets=[
                    usage_pb2.UsageBucket(
                        start_time=_timestamp(bucket.start),
                        group=list(bucket.group),
                        stats=_stats(bucket.stats),
                    )
                    for bucket in summary.buckets
                ],
                total=_stats(summary.total),
                currency=summary.currency,
                cost_by_provider=[
                    usage_pb2.ProviderUsage(
                        provider=p.provider,
                        requests=p.requests,
                        cost=format_decimal(p.cost),
                        amortized_cost=format_decimal(p.amortized_cost),
                    )
                    for p in summary.cost_by_provider
                ],
                top_models_by_cost=[_model_usage(m) for m in summary.top_models_by_cost],
                top_models_by_calls=[_model_usage(m) for m in summary.top_models_by_calls],
            )

    async def ListUsageRecords(  # noqa: N802
        self, request: usage_pb2.ListUsageRecordsRequest, context: Context
    ) -> usage_pb2.ListUsageRecordsResponse:
        async with ErrorBoundary(context):
            queries = self._ledger()
            filters = _filters(request.filter, required=False)
            page = await _answer(
                queries.list_records(
                    _principal(), filters, page_size=request.page_size, page_token=request.page_token
                )
            )
            return usage_pb2.ListUsageRecordsResponse(
                records=[usage_record(r) for r in page.records], next_page_token=page.next_page_token
            )

    async def GetCostRecommendations(  # noqa: N802
        self, request: usage_pb2.GetCostRecommendationsRequest, context: Context
    ) -> usage_pb2.GetCostRecommendationsResponse:
        async with ErrorBoundary(context):
            queries = self._ledger()
            most = request.max_alternatives or 3
            if not 1 <= most <= _MAX_ALTERNATIVES:
                raise invalid_field("max_alternatives", f"must be 0 (3) to {_MAX_ALTERNATIVES}")
            filters = _filters(request.filter, required=True)
            principal = _principal()
            candidates = self._models(principal)
            starts = tier_starts(candidates)
            periods, health = await _answer(queries.model_periods(principal, filters, starts))
            found = recommend(periods, health, candidates, starts, most)
            total = sum((r.cost for r in found), Decimal(0))
            savings = sum((r.best_savings for r in found), Decimal(0))
            return usage_pb2.GetCostRecommendationsResponse(
                recommendations=[_recommendation(r) for r in found],
                currency="USD",
                total_cost=format_decimal(total),
                potential_savings=format_decimal(savings),
            )

    def _ledger(self) -> UsageQueries:
        if self._queries is None:
            raise GatewayError(
                "this gateway keeps no usage ledger (ledger.enabled is false)",
                code=Code.FAILED_PRECONDITION,
                reason="LEDGER_DISABLED",
            )
        return self._queries


def _principal() -> Principal:
    call = call_var.get()
    return call.principal if call is not None else ANONYMOUS


async def _answer(query: Awaitable[T]) -> T:
    """The ledger's answer; its refusals as the contract's errors, a database that cannot answer
    as UNAVAILABLE (its details go to the log, not to the caller)."""
    try:
        return await query
    except AccessDenied as denied:
        field = "filter.api_key" if denied.field == "key" else denied.field
        raise GatewayError(
            f"{field}: {str(denied).removeprefix(f'{denied.field}: ')}",
            code=Code.PERMISSION_DENIED,
            reason="USAGE_ACCESS_DENIED",
            metadata={"field": field},
        ) from None
    except LedgerQueryError as bad:
        raise invalid_field(bad.field, str(bad).removeprefix(f"{bad.field}: ")) from None
    except Exception:
        # The database's own errors (a driver's, the file's): logged whole for the operator, as
        # UNAVAILABLE for the caller, who can do nothing but retry.
        _log.exception("the usage ledger could not be read")
        raise GatewayError(
            "the usage ledger cannot be read right now; retry shortly",
            code=Code.UNAVAILABLE,
            reason="LEDGER_UNAVAILABLE",
            retryable=True,
        ) from None


def _filters(pb: usage_pb2.UsageFilter, *, required: bool) -> RecordFilter:
    start = _datetime(pb.start_time) if pb.HasField("start_time") else None
    end = _datetime(pb.end_time) if pb.HasField("end_time") else None
    if required and start is None:
        raise invalid_field("filter.start_time", "is required")
    if required and end is None:
        raise invalid_field("filter.end_time", "is required")
    try:
        return RecordFilter(
            start=start,
            end=end,
            key=pb.api_key or None,
            user=pb.user or None,
            project=pb.project or None,
            tenant=pb.tenant or None,
            provider=pb.provider or None,
            model=pb.model or None,
            task_type=pb.task_type or None,
            tags=tuple(sorted(pb.tags.items())),
        )
    except LedgerQueryError as bad:
        field = "filter.end_time" if bad.field == "end" else f"filter.{bad.field}"
        raise invalid_field(field, str(bad).removeprefix(f"{bad.field}: ")) from None


def _summary_request(pb: usage_pb2.GetUsageSummaryRequest) -> SummaryRequest:
    filters = _filters(pb.filter, required=True)
    granularity = _GRANULARITIES.get(pb.granularity)
    if granularity is None:
        raise invalid_field("granularity", "unknown granularity")
    if len(pb.group_by) > _MAX_GROUP_BY:
        raise invalid_field("group_by", f"at most {_MAX_GROUP_BY} dimensions")
    if not 0 <= pb.top_models <= 1000:
        raise invalid_field("top_models", "must be between 0 and 1000")
    group_by = []
    for i, name in enumerate(pb.group_by):
        dimension, sep, tag = name.partition(":")
        try:
            group_by.append(GroupBy.parse(_DIMENSION_NAMES.get(dimension, dimension) + sep + tag))
        except LedgerQueryError:
            raise invalid_field(
                f"group_by[{i}]",
                f"{name!r} is not one of api_key, user, project, tenant, provider, model or tag:<key>",
            ) from None
    try:
        return SummaryRequest(filters, granularity, tuple(group_by), top=pb.top_models or 10)
    except LedgerQueryError as bad:
        raise invalid_field(bad.field, str(bad).removeprefix(f"{bad.field}: ")) from None


def usage_record(record: CallRecord) -> usage_pb2.UsageRecord:
    caller = record.caller
    out = usage_pb2.UsageRecord(
        id=record.id,
        request_id=record.request_id,
        start_time=_timestamp_unix(record.started_at),
        end_time=_timestamp_unix(record.ended_at),
        api_key=record.principal.key,
        caller=chat_pb2.CallerMetadata(
            user=caller.user, project=caller.project, tenant=caller.tenant, tracking_id=caller.tracking_id
        ),
        tags=dict(record.tags),
        requested_model=record.requested_model,
        task_type=record.task_type,
        model=record.model,
        provider=record.provider,
        status=record.status,
        reason=record.reason,
        streamed=record.streamed,
        dry_run=record.dry_run,
        fallback_used=record.fallback_used,
        attempts=[encode.attempt(a) for a in record.attempts],
    )
    if record.usage is not None:
        out.usage.CopyFrom(encode.usage(record.usage))
    if record.cost is not None:
        out.cost.CopyFrom(encode.cost(record.cost))
    if record.latency is not None:
        out.latency.CopyFrom(encode.latency(record.latency))
    return out


def _recommendation(r: Recommendation) -> usage_pb2.CostRecommendation:
    return usage_pb2.CostRecommendation(
        project=r.project,
        model=r.model,
        requests=r.requests,
        prompt_tokens=r.usage.prompt_tokens,
        completion_tokens=r.usage.completion_tokens,
        cache_read_tokens=r.usage.cache_read_tokens,
        cache_write_tokens=r.usage.cache_write_tokens,
        cost=format_decimal(r.cost),
        observed=_observation(r.observed),
        alternatives=[
            usage_pb2.CostAlternative(
                model=a.model,
                cost=format_decimal(a.cost),
                savings=format_decimal(a.savings),
                savings_fraction=float(a.savings / r.cost) if r.cost else 0.0,
                observed=_observation(a.observed),
            )
            for a in r.alternatives
        ],
    )


def _observation(seen: ModelHealth | None) -> usage_pb2.ModelObservation:
    out = usage_pb2.ModelObservation()
    if seen is None or not seen.requests:
        return out
    out.requests = seen.requests
    out.error_rate = seen.errors / seen.requests
    if seen.latency_p50 is not None:
        out.latency_p50.CopyFrom(encode.duration(seen.latency_p50))
    return out


def _stats(s: Stats) -> usage_pb2.UsageStats:
    out = usage_pb2.UsageStats(
        requests=s.requests,
        errors=s.errors,
        dry_runs=s.dry_runs,
        unpriced=s.unpriced,
        prompt_tokens=s.prompt_tokens,
        completion_tokens=s.completion_tokens,
        cache_read_tokens=s.cache_read_tokens,
        cache_write_tokens=s.cache_write_tokens,
        cache_write_1h_tokens=s.cache_write_1h_tokens,
        reasoning_tokens=s.reasoning_tokens,
        cost=format_decimal(s.cost),
        amortized_cost=format_decimal(s.amortized_cost),
    )
    for name in (
        "latency_avg",
        "latency_p50",
        "latency_p95",
        "first_token_avg",
        "first_token_p50",
        "first_token_p95",
    ):
        seconds = getattr(s, name)
        if seconds is not None:
            getattr(out, name).CopyFrom(encode.duration(seconds))
    return out


def _model_usage(m: ModelUsage) -> usage_pb2.ModelUsage:
    return usage_pb2.ModelUsage(
        model=m.model,
        provider=m.provider,
        requests=m.requests,
        cost=format_decimal(m.cost),
        amortized_cost=format_decimal(m.amortized_cost),
    )


def _datetime(ts: timestamp_pb2.Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def _timestamp(when: datetime) -> timestamp_pb2.Timestamp:
    out = timestamp_pb2.Timestamp()
    out.FromDatetime(when)
    return out


def _timestamp_unix(unix: float) -> timestamp_pb2.Timestamp:
    return _timestamp(datetime.fromtimestamp(unix, UTC))
