"""The ledger's queries, written once for both backends.

A `Dialect` supplies the few expressions SQLite and PostgreSQL spell differently (placeholders,
time columns, buckets, tag lookups, exact money sums, percentiles); everything else (which calls a
filter selects, what a summary adds up, the listing's order and paging) is built here, so the two
backends cannot drift apart in meaning.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from llm_gateway.ledger.query import (
    Dimension,
    Granularity,
    GroupBy,
    Position,
    RecordFilter,
    Stats,
    SummaryRequest,
)
from llm_gateway.ledger.rows import COLUMNS, USAGE_COLUMNS, micros

TABLE = "ledger_calls"

_DIMENSION_COLUMNS = {
    Dimension.KEY: "key_name",
    Dimension.USER: "caller_user",
    Dimension.PROJECT: "caller_project",
    Dimension.TENANT: "caller_tenant",
    Dimension.PROVIDER: "provider",
    Dimension.MODEL: "model",
    Dimension.TASK: "task_type",
}
_FILTER_COLUMNS = (
    ("key", "key_name"),
    ("user", "caller_user"),
    ("project", "caller_project"),
    ("tenant", "caller_tenant"),
    ("provider", "provider"),
    ("model", "model"),
    ("task_type", "task_type"),
)


class Dialect(ABC):
    """What one backend spells its own way."""

    @abstractmethod
    def param(self, index: int) -> str:
        """The placeholder of the `index`th parameter (1-based)."""

    @abstractmethod
    def time_value(self, microseconds: int) -> Any:
        """A time as the backend's time columns hold it."""

    @abstractmethod
    def bucket(self, granularity: Granularity) -> str:
        """The start of the call's UTC bucket, in microseconds since the epoch."""

    @abstractmethod
    def tag_equals(self, key: str, value: str) -> str:
        """True when the call's tags map `key` (a placeholder) to `value` (a placeholder)."""

    @abstractmethod
    def tag_value(self, key: str) -> str:
        """The call's value of tag `key` (a placeholder), "" when it has none."""

    @abstractmethod
    def money_sum(self, expression: str) -> str:
        """The exact sum of a money expression (NULLs skipped; NULL for no rows)."""

    @abstractmethod
    def percentile(self, column: str, fraction: float) -> str:
        """The continuous percentile of a column, linearly interpolated (NULLs skipped)."""


class Params:
    """Collects parameter values and hands out their placeholders, in order."""

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self.values: list[Any] = []

    def __call__(self, value: Any) -> str:
        self.values.append(value)
        return self._dialect.param(len(self.values))


@dataclass(frozen=True, slots=True)
class Query:
    sql: str
    params: Sequence[Any]


def _where(filters: RecordFilter, p: Params, dialect: Dialect, after: Position | None = None) -> str:
    clauses = []
    if filters.start is not None:
        clauses.append(f"started_at >= {p(dialect.time_value(_micros(filters.start)))}")
    if filters.end is not None:
        clauses.append(f"started_at < {p(dialect.time_value(_micros(filters.end)))}")
    for name, column in _FILTER_COLUMNS:
        value = getattr(filters, name)
        if value is not None:
            clauses.append(f"{column} = {p(value)}")
    for key, value in filters.tags:
        clauses.append(dialect.tag_equals(p(key), p(value)))
    if after is not None:
        # Row comparison: strictly past the last record of the previous page, in listing order.
        clauses.append(f"(started_at, id) < ({p(dialect.time_value(after.started_at))}, {p(after.id)})")
    return f"WHERE {' AND '.join(clauses)}" if clauses else ""


def _micros(moment: datetime) -> int:
    return micros(moment.timestamp())


def list_query(dialect: Dialect, filters: RecordFilter, after: Position | None, limit: int) -> Query:
    """Records newest first (ties by id), past `after`, at most `limit`."""
    p = Params(dialect)
    where = _where(filters, p, dialect, after)
    sql = (
        f"SELECT {', '.join(COLUMNS)} FROM {TABLE} {where} ORDER BY started_at DESC, id DESC LIMIT {p(limit)}"
    )
    return Query(sql, p.values)


def _stats_columns(dialect: Dialect, p: Params, currency: str) -> list[str]:
    """The aggregates of `Stats`, in its field order."""
    tokens = [f"coalesce(sum({kind}), 0)" for kind in USAGE_COLUMNS]
    return [
        "count(*)",
        "count(*) FILTER (WHERE status <> 'OK')",
        "count(*) FILTER (WHERE dry_run)",
        "count(*) FILTER (WHERE cost_status = 'unknown')",
        *tokens,
        dialect.money_sum(f"CASE WHEN currency = {p(currency)} THEN cost_total END"),
        "avg(latency_total)",
        dialect.percentile("latency_total", 0.5),
        dialect.percentile("latency_total", 0.95),
        "avg(latency_first_token)",
        dialect.percentile("latency_first_token", 0.5),
        dialect.percentile("latency_first_token", 0.95),
    ]


def _group_column(dialect: Dialect, p: Params, group: GroupBy) -> str:
    if group.dimension is Dimension.TAG:
        return dialect.tag_value(p(group.tag))
    return _DIMENSION_COLUMNS[group.dimension]


def buckets_query(dialect: Dialect, request: SummaryRequest) -> Query:
    """One row per bucket and group: bucket start (µs), the group's values, then `Stats`."""
    p = Params(dialect)
    groups = [_group_column(dialect, p, g) for g in request.group_by]
    stats = _stats_columns(dialect, p, request.currency)
    where = _where(request.filters, p, dialect)
    keys = ", ".join(str(i) for i in range(1, len(groups) + 2))
    # Unordered: the caller sorts, by code point, whatever collation the database has.
    sql = (
        f"SELECT {dialect.bucket(request.granularity)}, {''.join(f'{g}, ' for g in groups)}"
        f"{', '.join(stats)} FROM {TABLE} {where} GROUP BY {keys}"
    )
    return Query(sql, p.values)


def shares_query(dialect: Dialect, request: SummaryRequest) -> Query:
    """Calls charged to a subscription period, per bucket and group (as `buckets_query`), model
    and period: bucket start (µs), the group's values, provider, model, period, calls."""
    p = Params(dialect)
    groups = [_group_column(dialect, p, g) for g in request.group_by]
    where = _and(_where(request.filters, p, dialect), "plan_period <> ''")
    keys = ", ".join(str(i) for i in range(1, len(groups) + 5))
    sql = (
        f"SELECT {dialect.bucket(request.granularity)}, {''.join(f'{g}, ' for g in groups)}"
        f"provider, model, plan_period, count(*) FROM {TABLE} {where} GROUP BY {keys}"
    )
    return Query(sql, p.values)


def total_query(dialect: Dialect, request: SummaryRequest) -> Query:
    p = Params(dialect)
    stats = _stats_columns(dialect, p, request.currency)
    return Query(f"SELECT {', '.join(stats)} FROM {TABLE} {_where(request.filters, p, dialect)}", p.values)


def models_query(dialect: Dialect, request: SummaryRequest) -> Query:
    """Calls and cost per served model: provider, model, requests, cost."""
    p = Params(dialect)
    cost = dialect.money_sum(f"CASE WHEN currency = {p(request.currency)} THEN cost_total END")
    where = _where(request.filters, p, dialect)
    return Query(f"SELECT provider, model, count(*), {cost} FROM {TABLE} {where} GROUP BY 1, 2", p.values)


# The calls a model served that recommendations weigh: real calls (not estimates) with usage.
_SERVED = "NOT dry_run AND model <> ''"


def _and(where: str, clause: str) -> str:
    return f"{where} AND {clause}" if where else f"WHERE {clause}"


def periods_query(
    dialect: Dialect, filters: RecordFilter, currency: str, tier_starts: Sequence[int]
) -> Query:
    """Per project, served model and price band (how many of `tier_starts`, ascending, the prompt
    is longer than), the calls that used tokens: project, model, band, calls, the six token sums
    (as `_stats_columns`), the longest prompt, and their cost in `currency`."""
    p = Params(dialect)
    # The longest start first: a prompt past it is past every shorter one too.
    whens = [f"WHEN prompt_tokens > {int(start)} THEN {i}" for i, start in enumerate(tier_starts, 1)]
    band = f"CASE {' '.join(reversed(whens))} ELSE 0 END" if whens else "0"
    tokens = ", ".join(f"coalesce(sum({kind}), 0)" for kind in USAGE_COLUMNS)
    cost = dialect.money_sum(f"CASE WHEN currency = {p(currency)} THEN cost_total END")
    where = _and(_where(filters, p, dialect), f"{_SERVED} AND prompt_tokens IS NOT NULL")
    sql = (
        f"SELECT caller_project, model, {band}, count(*), {tokens}, max(prompt_tokens), {cost} "
        f"FROM {TABLE} {where} GROUP BY 1, 2, 3"
    )
    return Query(sql, p.values)


def health_query(dialect: Dialect, filters: RecordFilter) -> Query:
    """Per model served or tried: model, calls, failed calls, median total latency."""
    p = Params(dialect)
    where = _and(_where(filters, p, dialect), _SERVED)
    sql = (
        f"SELECT model, count(*), count(*) FILTER (WHERE status <> 'OK'), "
        f"{dialect.percentile('latency_total', 0.5)} FROM {TABLE} {where} GROUP BY 1"
    )
    return Query(sql, p.values)


def stats_from(values: Sequence[Any]) -> Stats:
    """`Stats` from the aggregates of `_stats_columns`, as either backend returns them."""
    count = [int(v) for v in values[:10]]
    seconds = [None if v is None else float(v) for v in values[11:]]
    return Stats(
        requests=count[0],
        errors=count[1],
        dry_runs=count[2],
        unpriced=count[3],
        prompt_tokens=count[4],
        completion_tokens=count[5],
        cache_read_tokens=count[6],
        cache_write_tokens=count[7],
        cache_write_1h_tokens=count[8],
        reasoning_tokens=count[9],
        cost=money(values[10]),
        latency_avg=seconds[0],
        latency_p50=seconds[1],
        latency_p95=seconds[2],
        first_token_avg=seconds[3],
        first_token_p50=seconds[4],
        first_token_p95=seconds[5],
    )


def money(value: Any) -> Decimal:
    """An exact sum as a backend returns it (`Decimal`, decimal text, or NULL for nothing)."""
    return Decimal(0) if value is None else Decimal(value)


def row_dict(values: Sequence[Any]) -> Mapping[str, Any]:
    return dict(zip(COLUMNS, values, strict=True))
