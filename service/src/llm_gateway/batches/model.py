"""Batches as the store keeps them: a batch's settings and where it stands, its items, a claim on
an item (which process runs it, until when), and how an item ended."""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass, field
from decimal import Decimal


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


def new_batch_id() -> str:
    return f"batch_{secrets.token_hex(12)}"


@dataclass(frozen=True, slots=True)
class NewItem:
    custom_id: str
    request: bytes  # the item's `ChatRequest`, serialized as the caller sent it


@dataclass(frozen=True, slots=True)
class NewBatch:
    id: str
    key_name: str
    max_concurrent: int
    return_costs: bool
    webhook: str
    caller: bytes  # `CallerMetadata`, serialized
    tags: dict[str, str]
    created_at: float
    items: tuple[NewItem, ...]


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
    caller: bytes
    tags: dict[str, str]
    created_at: float
    started_at: float | None
    finished_at: float | None
    paused_reason: str
    cost: Decimal
    counts: Counts = field(default_factory=Counts)


@dataclass(frozen=True, slots=True)
class Claim:
    """An item a process runs now; `attempt` fences it: only that attempt's outcome is kept."""

    batch_id: str
    seq: int
    custom_id: str
    request: bytes
    attempt: int


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

    @property
    def status(self) -> ItemStatus:
        return ItemStatus.SUCCEEDED if self.error is None else ItemStatus.FAILED


@dataclass(frozen=True, slots=True)
class ItemView:
    seq: int
    custom_id: str
    status: ItemStatus
    attempts: int
    response: bytes | None
    error: ItemError | None
