"""A `CallRecord` as one ledger row, and back.

The row is the one neutral form every backend and the spool share: a flat mapping from column name
to a JSON-ready value. Times are integer microseconds since the Unix epoch (UTC), so both backends
keep them exactly to the microsecond; money is exact decimal text (`format(d, "f")` never rounds),
never a binary float; tags and attempts are JSON values. Each backend turns these into its own
column types, and the spool writes the row as one JSON line, so a record read back from either is
the record that was written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, Inexact, InvalidOperation, Rounded
from typing import Any

from llm_gateway.domain.messages import Caller
from llm_gateway.domain.results import Usage
from llm_gateway.gateway.outcome import Attempt, Latency
from llm_gateway.gateway.record import CallRecord, Principal
from llm_gateway.pricing import Cost, PricingStatus

Row = dict[str, Any]

# Every column, in the order the backends insert them.
USAGE_COLUMNS = (
    "prompt_tokens",
    "completion_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cache_write_1h_tokens",
    "reasoning_tokens",
)
MONEY_COLUMNS = (
    "cost_input",
    "cost_cached_input",
    "cost_cache_write",
    "cost_cache_write_1h",
    "cost_output",
    "cost_request_fee",
    "cost_total",
    "cost_per_1k_tokens",
    "cost_cache_savings",
)
LATENCY_COLUMNS = (
    "latency_total",
    "latency_first_byte",
    "latency_first_token",
    "latency_upstream",
    "latency_overhead",
)
BOOLEAN_COLUMNS = ("key_admin", "streamed", "dry_run", "fallback_used", "usage_estimated", "cost_estimated")
JSON_COLUMNS = ("tags", "attempts")
TIME_COLUMNS = ("started_at", "ended_at")
COLUMNS = (
    "started_at",
    "id",
    "ended_at",
    "request_id",
    "key_name",
    "key_admin",
    "caller_user",
    "caller_project",
    "caller_tenant",
    "caller_tracking_id",
    "tags",
    "requested_model",
    "task_type",
    "model",
    "provider",
    "status",
    "reason",
    "streamed",
    "dry_run",
    "fallback_used",
    *USAGE_COLUMNS,
    "usage_estimated",
    "cost_status",
    "cost_source",
    "currency",
    *MONEY_COLUMNS,
    "cost_estimated",
    "plan_period",
    *LATENCY_COLUMNS,
    "attempts",
)

_MICROS = 1_000_000
# Sums of money in this context are exact (Decimal's default context keeps 28 digits): anything
# that would have to round raises instead.
EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[InvalidOperation, Inexact, Rounded])


def micros(unix_seconds: float) -> int:
    """Unix seconds as integer microseconds, the precision the ledger keeps times to."""
    return round(unix_seconds * _MICROS)


def money_text(value: Decimal) -> str:
    """Exact decimal text: `format(..., "f")` writes every digit and rounds nothing (unlike
    `normalize()`, which rounds to the context's 28 digits)."""
    return format(value, "f")


# Columns added since the first schema, with the value a row spooled by an older gateway (which
# lacks them) takes when it is replayed.
ADDED_COLUMNS: dict[str, Any] = {"task_type": "", "plan_period": ""}


def column_values(row: Row) -> list[Any]:
    """The row's values in `COLUMNS` order."""
    return [row[c] if c in row else ADDED_COLUMNS[c] for c in COLUMNS]


def encode(record: CallRecord) -> Row:
    usage, cost, latency = record.usage, record.cost, record.latency
    row: Row = {
        "started_at": micros(record.started_at),
        "id": record.id,
        "ended_at": micros(record.ended_at),
        "request_id": record.request_id,
        "key_name": record.principal.key,
        "key_admin": record.principal.admin,
        "caller_user": record.caller.user,
        "caller_project": record.caller.project,
        "caller_tenant": record.caller.tenant,
        "caller_tracking_id": record.caller.tracking_id,
        "tags": dict(record.tags),
        "requested_model": record.requested_model,
        "task_type": record.task_type,
        "model": record.model,
        "provider": record.provider,
        "status": record.status,
        "reason": record.reason,
        "streamed": record.streamed,
        "dry_run": record.dry_run,
        "fallback_used": record.fallback_used,
        "attempts": [
            {
                "provider": a.provider,
                "model": a.model,
                "code": a.code,
                "reason": a.reason,
                "message": a.message,
                "latency": a.latency,
            }
            for a in record.attempts
        ],
    }
    if usage is None:
        row.update(dict.fromkeys(USAGE_COLUMNS), usage_estimated=None)
    else:
        row.update(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cache_write_1h_tokens=usage.cache_write_1h_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            usage_estimated=usage.estimated,
        )
    # The subscription period the call was charged to ("" for none): usage summaries spread the
    # period's fee over its calls.
    row["plan_period"] = "" if cost is None or cost.plan is None else cost.plan.period_key
    if cost is None:
        row.update(dict.fromkeys(MONEY_COLUMNS), cost_status=None, cost_source=None, currency=None)
        row["cost_estimated"] = None
    else:
        per_1k = cost.cost_per_1k_tokens
        row.update(
            cost_status=cost.status.value,
            cost_source=cost.source,
            currency=cost.currency,
            cost_input=money_text(cost.input),
            cost_cached_input=money_text(cost.cached_input),
            cost_cache_write=money_text(cost.cache_write),
            cost_cache_write_1h=money_text(cost.cache_write_1h),
            cost_output=money_text(cost.output),
            cost_request_fee=money_text(cost.request_fee),
            cost_total=money_text(cost.total),
            cost_per_1k_tokens=None if per_1k is None else money_text(per_1k),
            cost_cache_savings=money_text(cost.cache_savings),
            cost_estimated=cost.estimated,
        )
    if latency is None:
        row.update(dict.fromkeys(LATENCY_COLUMNS))
    else:
        row.update(
            latency_total=latency.total,
            latency_first_byte=latency.time_to_first_byte,
            latency_first_token=latency.time_to_first_token,
            latency_upstream=latency.upstream,
            latency_overhead=latency.gateway_overhead,
        )
    return row


def decode(row: Mapping[str, Any]) -> CallRecord:
    """A record from a row as a backend reads it back: times in microseconds, money as `Decimal`
    or decimal text, booleans as bool or 0/1, tags and attempts as JSON text or values."""
    usage = None
    if row["prompt_tokens"] is not None:
        usage = Usage(
            prompt_tokens=row["prompt_tokens"],
            completion_tokens=row["completion_tokens"],
            cache_read_tokens=row["cache_read_tokens"],
            cache_write_tokens=row["cache_write_tokens"],
            reasoning_tokens=row["reasoning_tokens"],
            cache_write_1h_tokens=row["cache_write_1h_tokens"],
            estimated=bool(row["usage_estimated"]),
        )
    cost = None
    if row["cost_status"] is not None:
        per_1k = row["cost_per_1k_tokens"]
        cost = Cost(
            status=PricingStatus(row["cost_status"]),
            source=row["cost_source"],
            currency=row["currency"],
            input=Decimal(row["cost_input"]),
            cached_input=Decimal(row["cost_cached_input"]),
            cache_write=Decimal(row["cost_cache_write"]),
            cache_write_1h=Decimal(row["cost_cache_write_1h"]),
            output=Decimal(row["cost_output"]),
            request_fee=Decimal(row["cost_request_fee"]),
            total=Decimal(row["cost_total"]),
            cost_per_1k_tokens=None if per_1k is None else Decimal(per_1k),
            cache_savings=Decimal(row["cost_cache_savings"]),
            estimated=bool(row["cost_estimated"]),
        )
    latency = None
    if row["latency_total"] is not None:
        latency = Latency(
            total=row["latency_total"],
            time_to_first_byte=row["latency_first_byte"],
            time_to_first_token=row["latency_first_token"],
            upstream=row["latency_upstream"],
        )
    tags, attempts = _json(row["tags"]), _json(row["attempts"])
    return CallRecord(
        id=row["id"],
        request_id=row["request_id"],
        started_at=row["started_at"] / _MICROS,
        ended_at=row["ended_at"] / _MICROS,
        principal=Principal(key=row["key_name"], admin=bool(row["key_admin"])),
        caller=Caller(
            user=row["caller_user"],
            project=row["caller_project"],
            tenant=row["caller_tenant"],
            tracking_id=row["caller_tracking_id"],
        ),
        tags=tags,
        requested_model=row["requested_model"],
        task_type=row.get("task_type", ""),
        model=row["model"],
        provider=row["provider"],
        status=row["status"],
        reason=row["reason"],
        streamed=bool(row["streamed"]),
        dry_run=bool(row["dry_run"]),
        fallback_used=bool(row["fallback_used"]),
        usage=usage,
        cost=cost,
        latency=latency,
        attempts=tuple(Attempt(**attempt) for attempt in attempts),
    )


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value
