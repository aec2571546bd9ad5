"""What can be asked of the ledger, and what it answers: filters, pages of records, summaries.

These are plain values, free of protobuf and of any backend: the usage service maps its requests
onto them, and both backends answer them alike. Times are timezone-aware `datetime`s; buckets are
in UTC; money is exact `Decimal`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum

from llm_gateway.domain.results import Usage
from llm_gateway.gateway.record import CallRecord

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 50
_TAG_KEY_LIMIT = 63


class LedgerQueryError(ValueError):
    """A request the ledger cannot answer as asked (INVALID_ARGUMENT); `field` names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class InvalidPageToken(LedgerQueryError):  # noqa: N818 (named as AIP-158 names the case)
    """A page token that is not one of ours, or was issued for other filters."""

    def __init__(self, message: str) -> None:
        super().__init__("page_token", message)


class AccessDenied(Exception):  # noqa: N818 (named for the status it maps to, PERMISSION_DENIED)
    """A non-admin key asked for records that are not its own (PERMISSION_DENIED)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Which calls: each field set narrows the selection; None means any.

    `start` is inclusive and `end` exclusive, on the time the gateway received the call. `model` is
    the model that served the call, as "provider:model". `tags` are key/value pairs the call must
    all carry.
    """

    start: datetime | None = None
    end: datetime | None = None
    key: str | None = None
    user: str | None = None
    project: str | None = None
    tenant: str | None = None
    provider: str | None = None
    model: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    task_type: str | None = None

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() is None:
                raise LedgerQueryError(name, "must carry a timezone")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise LedgerQueryError("end", "is before start")
        for key, _ in self.tags:
            if not key or len(key) > _TAG_KEY_LIMIT:
                raise LedgerQueryError("tags", f"keys are 1 to {_TAG_KEY_LIMIT} characters")


class Granularity(StrEnum):
    HOUR = "hour"
    DAY = "day"
    MONTH = "month"


class Dimension(StrEnum):
    KEY = "key"
    USER = "user"
    PROJECT = "project"
    TENANT = "tenant"
    PROVIDER = "provider"
    MODEL = "model"
    TASK = "task"
    TAG = "tag"


@dataclass(frozen=True, slots=True)
class GroupBy:
    """A group-by dimension; with `Dimension.TAG`, `tag` is the tag's key (calls without it are
    grouped under "")."""

    dimension: Dimension
    tag: str = ""

    def __post_init__(self) -> None:
        if (self.dimension is Dimension.TAG) != bool(self.tag):
            raise LedgerQueryError("group_by", "a tag key goes with the tag dimension, and only there")
        if len(self.tag) > _TAG_KEY_LIMIT:
            raise LedgerQueryError("group_by", f"tag keys are 1 to {_TAG_KEY_LIMIT} characters")

    @classmethod
    def parse(cls, text: str) -> GroupBy:
        """ "key", "user", ..., "model", or "tag:<key>"."""
        name, sep, tag = text.partition(":")
        try:
            dimension = Dimension(name)
        except ValueError:
            known = ", ".join(d.value for d in Dimension if d is not Dimension.TAG)
            raise LedgerQueryError("group_by", f"{text!r} is not one of {known} or tag:<key>") from None
        if (dimension is Dimension.TAG) != bool(sep):
            raise LedgerQueryError("group_by", f"{text!r}: write a tag dimension as tag:<key>")
        return cls(dimension, tag)

    def __str__(self) -> str:
        return f"tag:{self.tag}" if self.dimension is Dimension.TAG else self.dimension.value


@dataclass(frozen=True, slots=True)
class SummaryRequest:
    """A summary of the calls `filters` selects between its `start` and `end` (both required), per
    bucket of `granularity` and per combination of the `group_by` values. Costs are summed in
    `currency` (every price the gateway knows today is in USD)."""

    filters: RecordFilter
    granularity: Granularity = Granularity.DAY
    group_by: tuple[GroupBy, ...] = ()
    currency: str = "USD"
    top: int = 10  # how many models each "top models" list holds

    def __post_init__(self) -> None:
        if self.filters.start is None or self.filters.end is None:
            raise LedgerQueryError("start" if self.filters.start is None else "end", "is required")
        if len(set(self.group_by)) != len(self.group_by):
            raise LedgerQueryError("group_by", "names a dimension twice")
        if not 1 <= self.top <= 1000:
            raise LedgerQueryError("top", "must be between 1 and 1000")


@dataclass(frozen=True, slots=True)
class Stats:
    """What a set of calls added up to. Latencies are seconds; None when no call had one.
    Percentiles interpolate between the two nearest calls (PostgreSQL's `percentile_cont`)."""

    requests: int = 0
    errors: int = 0  # calls that did not end OK
    dry_runs: int = 0
    unpriced: int = 0  # calls with usage the price sheet could not price
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    reasoning_tokens: int = 0
    cost: Decimal = Decimal(0)
    # Subscription fees spread over the calls of each plan period (docs/subscriptions.md).
    amortized_cost: Decimal = Decimal(0)
    latency_avg: float | None = None
    latency_p50: float | None = None
    latency_p95: float | None = None
    first_token_avg: float | None = None
    first_token_p50: float | None = None
    first_token_p95: float | None = None


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime  # UTC, the bucket's first instant
    group: tuple[str, ...]  # one value per `group_by` dimension, in its order
    stats: Stats


@dataclass(frozen=True, slots=True)
class ModelPeriod:
    """One project's calls on one served model over a period, those whose prompts fall in one
    price band (how many of the asked tier starts they are longer than)."""

    project: str
    model: str
    band: int
    requests: int
    usage: Usage  # summed
    longest_prompt: int
    cost: Decimal  # as charged


@dataclass(frozen=True, slots=True)
class ModelHealth:
    """How a model fared over a period: its calls, the failed ones, median total latency."""

    model: str
    requests: int
    errors: int
    latency_p50: float | None


@dataclass(frozen=True, slots=True)
class ModelUsage:
    provider: str
    model: str  # "provider:model"; "" for calls no model served
    requests: int
    cost: Decimal
    amortized_cost: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class ProviderCost:
    provider: str
    requests: int
    cost: Decimal
    amortized_cost: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class UsageSummary:
    buckets: tuple[Bucket, ...]  # by start, then group
    total: Stats
    cost_by_provider: tuple[ProviderCost, ...]  # most expensive first
    top_models_by_cost: tuple[ModelUsage, ...]
    top_models_by_calls: tuple[ModelUsage, ...]
    currency: str = "USD"


@dataclass(frozen=True, slots=True)
class RecordPage:
    records: tuple[CallRecord, ...]  # newest first
    next_page_token: str = ""  # "" on the last page


@dataclass(frozen=True, slots=True)
class Position:
    """Where a page ended: the last record's start (microseconds) and id, the listing's order."""

    started_at: int
    id: str


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
