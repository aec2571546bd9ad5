"""Batches as the store keeps them: a batch's settings and where it stands, its items, a claim on
an item (which process runs it, until when), and how an item ended."""

from __future__ import annotations

import enum
import json
import secrets
from dataclasses import dataclass, field
from decimal import Decimal

from llm_gateway.domain.messages import Caller


class BatchStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"  # its next item did not fit a budget: tried again after a pause
    CANCELLING = "cancelling"  # cancelled with items in flight: they finish first
    COMPLETED = "completed"
    CANCELLED = "cancelled"

    @property
    def active(self) -> bool:
        return self in _ACTIVE


_ACTIVE = frozenset({BatchStatus.QUEUED, BatchStatus.RUNNING, BatchStatus.PAUSED, BatchStatus.CANCELLING})


class ItemStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


def caller_text(caller: Caller) -> str:
    return json.dumps(
        {
            "user": caller.user,
            "project": caller.project,
            "tenant": caller.tenant,
            "tracking_id": caller.tracking_id,
        },
        sort_keys=True,
    )


def caller_of(text: str) -> Caller:
    found = json.loads(text) if text else {}
    return Caller(**{name: str(found.get(name, "")) for name in ("user", "project", "tenant", "tracking_id")})


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(12)}"


class BatchMode(enum.StrEnum):
    LIVE = "live"  # each item a live call through the gateway
    PROVIDER = "provider"  # items submitted to their providers' own batch APIs


class JobState(enum.StrEnum):
    """A provider-mode job: its lines being built and submitted (under a lease), submitted (its
    upstream id kept, polled), or done (its results kept)."""

    PREPARING = "preparing"
    SUBMITTED = "submitted"
    DONE = "done"


class ItemFormat(enum.StrEnum):
    """How an item's request is kept: as the door it came through took it."""

    GRPC = "grpc"  # a serialized `llmgateway.v1.ChatRequest`
    OPENAI = "openai"  # a Chat Completions body, JSON


@dataclass(frozen=True, slots=True)
class NewItem:
    custom_id: str
    request: bytes  # as the caller sent it, in `format`
    format: ItemFormat = ItemFormat.GRPC
    provider: str = ""  # in provider mode, the provider whose batch API answers it


@dataclass(frozen=True, slots=True)
class NewBatch:
    id: str
    key_name: str
    max_concurrent: int
    return_costs: bool
    webhook: str
    caller: Caller  # for items that name none of their own
    tags: dict[str, str]
    created_at: float
    items: tuple[NewItem, ...]
    mode: BatchMode = BatchMode.LIVE


@dataclass(frozen=True, slots=True)
class Counts:
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    pending: int = 0
    running: int = 0
    cancelled: int = 0


@dataclass(frozen=True, slots=True)
class BatchView:
    id: str
    key_name: str
    status: BatchStatus
    max_concurrent: int
    return_costs: bool
    webhook: str
    caller: Caller
    tags: dict[str, str]
    created_at: float
    started_at: float | None
    finished_at: float | None
    paused_reason: str
    cost: Decimal
    counts: Counts = field(default_factory=Counts)
    mode: BatchMode = BatchMode.LIVE
    jobs: tuple[JobView, ...] = ()


@dataclass(frozen=True, slots=True)
class JobView:
    provider: str
    upstream_id: str  # "" until submitted
    upstream_status: str
    items: int


@dataclass(frozen=True, slots=True)
class Claim:
    """An item a process runs now; `attempt` fences it: only that attempt's outcome is kept."""

    batch_id: str
    seq: int
    custom_id: str
    request: bytes
    attempt: int
    format: ItemFormat = ItemFormat.GRPC


@dataclass(frozen=True, slots=True)
class ItemError:
    code: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an item ended: a reply (`ChatResponse`, serialized) or an error, and what it cost."""

    response: bytes | None
    error: ItemError | None
    cost: Decimal
    cancelled: bool = False  # never run: its batch was cancelled first

    @property
    def status(self) -> ItemStatus:
        if self.cancelled:
            return ItemStatus.CANCELLED
        return ItemStatus.SUCCEEDED if self.error is None else ItemStatus.FAILED


@dataclass(frozen=True, slots=True)
class Job:
    """A provider-mode job a process works on now: its items to submit (`claims`, when
    preparing) or its upstream job to poll."""

    batch_id: str
    number: int
    provider: str
    key_name: str
    state: JobState
    attempt: int  # fences it: a job whose lease ran out is taken over by another attempt
    upstream_id: str = ""
    submitted_at: float = 0.0
    cancelling: bool = False  # the batch is being cancelled: the upstream job is to be cancelled
    cancel_sent: bool = False
    claims: tuple[Claim, ...] = ()


@dataclass(frozen=True, slots=True)
class ItemView:
    seq: int
    custom_id: str
    status: ItemStatus
    attempts: int
    response: bytes | None
    error: ItemError | None
