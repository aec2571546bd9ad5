"""What both doors do with batches: check a new batch, keep it, and show, page, cancel and list
the results of the batches a key may see (its own; an admin's, every one). The doors decode and
check each item's request in their own format and encode the answers."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import time
from collections.abc import Awaitable, Collection
from dataclasses import dataclass, field
from typing import TypeVar

from llm_gateway.batches.model import BatchMode, BatchView, ItemView, NewBatch, NewItem, new_batch_id
from llm_gateway.batches.runner import BatchRunner
from llm_gateway.batches.store import BatchFinishedError
from llm_gateway.domain.errors import Code, FieldViolation, GatewayError, invalid_field, invalid_request
from llm_gateway.domain.messages import Caller
from llm_gateway.domain.principal import Principal

T = TypeVar("T")
_log = logging.getLogger("llm_gateway.batches")

MAX_ITEMS = 50_000
MAX_CONCURRENT = 1_000
DEFAULT_CONCURRENT = 5
DEFAULT_PAGE, MAX_PAGE = 50, 1000
RESERVED_TAGS = frozenset({"batch_id", "batch_item", "provider_batch"})
MAX_VIOLATIONS = 20  # a batch of thousands of bad items names the first few


@dataclass(frozen=True, slots=True)
class BatchOrder:
    """A new batch as a door decoded it: items checked, settings not yet."""

    items: tuple[NewItem, ...]
    max_concurrent: int = 0  # 0: DEFAULT_CONCURRENT
    return_costs: bool = False
    webhook: str = ""
    caller: Caller = field(default_factory=Caller)
    tags: dict[str, str] = field(default_factory=dict)
    mode: BatchMode = BatchMode.LIVE
    # Where an item's request is in the door's body, for the problems provider mode finds.
    item_path: str = "requests[{}].request"


def custom_id_violation(custom: str, where: str, seen: set[str]) -> FieldViolation | None:
    """What is wrong with an item's custom id (1 to 64 printable characters, unique), if anything."""
    if not 1 <= len(custom) <= 64 or not custom.isprintable():
        return FieldViolation(f"{where}.custom_id", "must be 1 to 64 printable characters")
    if custom in seen:
        return FieldViolation(f"{where}.custom_id", f"{custom!r} is used by an earlier item")
    seen.add(custom)
    return None


class BatchBook:
    def __init__(self, runner: BatchRunner | None, webhooks: Collection[str]) -> None:
        self._runner = runner  # None: the gateway keeps no ledger, so no batches
        self._webhooks = frozenset(webhooks)  # those that take "batch_completed" events

    def violations(self, order: BatchOrder, count: int | None) -> list[FieldViolation]:
        """The settings' problems, for a batch the caller gave `count` items (None: what it gave
        is not a list, which the door has said)."""
        found = []
        if count is not None and not 1 <= count <= MAX_ITEMS:
            found.append(FieldViolation("requests", f"must hold 1 to {MAX_ITEMS:,} items"))
        if not 0 <= order.max_concurrent <= MAX_CONCURRENT:
            found.append(FieldViolation("max_concurrent_requests", f"must be 0 to {MAX_CONCURRENT}"))
        if order.webhook and order.webhook not in self._webhooks:
            named = ", ".join(sorted(self._webhooks)) or "none"
            found.append(
                FieldViolation(
                    "webhook", f"no configured webhook of that name takes batch_completed ({named})"
                )
            )
        for tag in sorted(RESERVED_TAGS & set(order.tags)):
            found.append(FieldViolation(f"tags[{tag}]", "is set by the gateway on every item"))
        return found

    async def create(
        self,
        principal: Principal,
        order: BatchOrder,
        given: int | None,
        item_violations: list[FieldViolation],
    ) -> BatchView:
        """Keeps a new batch of the `given` items the caller sent (`order.items`, those decoded),
        or refuses it with every problem its door and its settings have."""
        runner = self._enabled()
        violations = [*self.violations(order, given), *item_violations]
        items = order.items
        if order.mode is BatchMode.PROVIDER and not violations:
            items = _with_providers(runner, principal, order, violations)
        if violations:
            raise invalid_request(violations[:MAX_VIOLATIONS])
        batch = NewBatch(
            id=new_batch_id(),
            key_name=principal.key,
            max_concurrent=order.max_concurrent or DEFAULT_CONCURRENT,
            return_costs=order.return_costs,
            webhook=order.webhook,
            caller=order.caller,
            tags=dict(order.tags),
            created_at=time.time(),
            items=items,
            mode=order.mode,
        )
        await _answer(runner.ready())
        await _answer(runner.store.create(batch))
        runner.wake()
        _log.info({"event": "batch_created", "batch_id": batch.id, "items": len(batch.items)})
        return await self.get(principal, batch.id)

    async def get(self, principal: Principal, batch_id: str) -> BatchView:
        runner = self._enabled()
        if not batch_id:
            raise invalid_field("id", "must be set")
        await _answer(runner.ready())
        batch = await _answer(runner.store.get(batch_id))
        # Another key's batch is reported as missing: its existence is not another key's business.
        if batch is None or not (principal.admin or batch.key_name == principal.key):
            raise _not_found(batch_id)
        return batch

    async def page(self, principal: Principal, size: int, token: str) -> tuple[list[BatchView], str]:
        """The batches `principal` may see, newest first, and the next page's token ("": none)."""
        runner = self._enabled()
        size = _page_size(size)
        key = None if principal.admin else principal.key
        before = _read_position(token, key or "")
        await _answer(runner.ready())
        found = await _answer(runner.store.batches(key, before, size + 1))
        if len(found) <= size:
            return found, ""
        last = found[size - 1]
        return found[:size], _position_token((last.created_at, last.id), key or "")

    async def cancel(self, principal: Principal, batch_id: str) -> BatchView:
        runner = self._enabled()
        await self.get(principal, batch_id)
        try:
            cancelled = await _answer(runner.store.cancel(batch_id, time.time()))
        except BatchFinishedError:
            raise GatewayError(
                f"batch {batch_id!r} has ended already",
                code=Code.FAILED_PRECONDITION,
                reason="BATCH_FINISHED",
                metadata={"batch_id": batch_id},
            ) from None
        if cancelled is None:
            raise _not_found(batch_id)
        _log.info({"event": "batch_cancelled", "batch_id": batch_id})
        return cancelled

    async def results(
        self, principal: Principal, batch_id: str, size: int, token: str
    ) -> tuple[BatchView, list[ItemView], str]:
        """The batch's items from `token` on, in order, and the next page's token ("": none)."""
        runner = self._enabled()
        size = _page_size(size, default=100)
        batch = await self.get(principal, batch_id)
        after = _read_seq(token, batch.id)
        items = await _answer(runner.store.results(batch.id, after, size + 1))
        if len(items) <= size:
            return batch, items, ""
        return batch, items[:size], _seq_token(items[size - 1].seq, batch.id)

    def _enabled(self) -> BatchRunner:
        if self._runner is None:
            raise GatewayError(
                "batches are kept in the ledger's database, and the ledger is off (ledger.enabled)",
                code=Code.FAILED_PRECONDITION,
                reason="LEDGER_DISABLED",
            )
        return self._runner


def _with_providers(
    runner: BatchRunner, principal: Principal, order: BatchOrder, violations: list[FieldViolation]
) -> tuple[NewItem, ...]:
    """The items, each with the provider whose batch API answers it; what provider mode cannot
    send is added to `violations`, named from the door's body."""
    items = []
    for i, item in enumerate(order.items):
        try:
            items.append(dataclasses.replace(item, provider=runner.provider_of(item, principal)))
        except GatewayError as err:
            where = order.item_path.format(i)
            for problem in err.violations or (FieldViolation(err.metadata.get("field", ""), err.message),):
                path = f"{where}.{problem.field}" if problem.field else where
                violations.append(FieldViolation(path, problem.description))
            if len(violations) >= MAX_VIOLATIONS:
                break
    return tuple(items)


def _page_size(size: int, default: int = DEFAULT_PAGE) -> int:
    if not 0 <= size <= MAX_PAGE:
        raise invalid_field("page_size", f"must be between 0 and {MAX_PAGE}")
    return size or default


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


def _token(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _untoken(token: str) -> list[str]:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode().split("|")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise invalid_field("page_token", "not a token from a previous reply of this listing") from None


def _position_token(position: tuple[float, str], issued_for: str) -> str:
    return _token(f"{position[0]!r}|{position[1]}|{issued_for}")


def _read_position(token: str, issued_for: str) -> tuple[float, str] | None:
    if not token:
        return None
    parts = _untoken(token)
    try:
        created, batch_id, issuer = parts
        position = (float(created), batch_id)
    except ValueError:
        raise invalid_field("page_token", "not a token from a previous reply of this listing") from None
    if issuer != issued_for:
        raise invalid_field("page_token", "was issued for a different listing")
    return position


def _seq_token(seq: int, batch_id: str) -> str:
    return _token(f"{seq}|{batch_id}")


def _read_seq(token: str, batch_id: str) -> int:
    """The last item's position the token continues after (-1: from the start)."""
    if not token:
        return -1
    parts = _untoken(token)
    try:
        seq_text, issuer = parts
        seq = int(seq_text)
    except ValueError:
        raise invalid_field("page_token", "not a token from a previous reply of this listing") from None
    if issuer != batch_id:
        raise invalid_field("page_token", "was issued for another batch's results")
    return seq
