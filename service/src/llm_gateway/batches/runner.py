"""Runs batches' items in every gateway process: claims items from the store under a lease, runs
each through the gateway's core as a live call (routing, retries, fallbacks, breakers, rate limits,
budgets, the ledger), and keeps its outcome.

A process renews the leases of the items it runs; a process that dies stops renewing, and its
items run again in another process once their leases run out (each start is counted in the item's
`attempts`, and each is a call in the ledger). An item refused by a budget is put back and its
batch paused for a while, not failed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Callable, Collection
from decimal import Decimal

from llm_gateway import background
from llm_gateway.batches.model import BatchView, Claim, ItemError, ItemFormat, NewItem, Outcome
from llm_gateway.batches.store import BatchStore
from llm_gateway.batches.upstream import ProviderJobs
from llm_gateway.domain.errors import GatewayError
from llm_gateway.domain.messages import Caller, ChatRequest
from llm_gateway.gateway.core import Gateway
from llm_gateway.gateway.record import Principal
from llm_gateway.gateway.scope import CallScope
from llm_gateway.pricing import PricingStatus
from llm_gateway.server.decode import decode_chat_request
from llm_gateway.server.encode import chat_response
from llm_gateway.web.dialects import OPENAI
from llmgateway.v1 import chat_pb2

_log = logging.getLogger("llm_gateway.batches")

# A budget's refusals: the batch waits for room instead of failing its items.
_BUDGET_REASONS = frozenset({"BUDGET_EXHAUSTED", "KEY_QUOTA_EXCEEDED"})
ZERO = Decimal(0)
_SETTINGS_KEPT = 1024  # batches whose settings a process keeps at hand
_MOST_ATTEMPTS = 3  # starts of an item the gateway itself fails on before it is failed for good


class BatchRunner:
    def __init__(
        self,
        store: BatchStore,
        gateway: Gateway,
        providers: Collection[str],
        principal_of: Callable[[str], Principal],
        *,
        poll_interval: float = 0.25,
        lease: float = 30.0,
        pause: float = 5.0,
        most_at_once: int = 256,
        upstream_poll: float = 60.0,
        batch_price: Decimal = Decimal("0.5"),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._gateway = gateway
        self._providers = tuple(providers)
        self._principal_of = principal_of
        self._poll = poll_interval
        self.lease = lease
        self._pause = pause
        self._most = most_at_once  # items this process runs at once, over every batch
        self._clock = clock
        self._running: dict[tuple[str, int], Claim] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._down = False
        self._migrated = False
        self._migrating = asyncio.Lock()
        self._settings: dict[str, BatchView] = {}  # what items need of their batch, by id
        # Batches in provider mode: their items go to the providers' own batch APIs.
        self.jobs = ProviderJobs(
            store,
            gateway,
            principal_of,
            self.settings,
            self.request_of,
            clock,
            poll_interval=poll_interval,
            upstream_poll=upstream_poll,
            lease=lease,
            pause=pause,
            price=batch_price,
        )

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._claim_forever(), name="batch-claims"),
            loop.create_task(self._renew_forever(), name="batch-leases"),
        ]
        self.jobs.start()

    def wake(self) -> None:
        """A batch was created or resumed: look for items now, not at the next poll."""
        self._wake.set()
        self.jobs.wake()

    async def close(self, grace: float = 5.0) -> None:
        """Stops claiming; lets the items under way finish within `grace` seconds (the others run
        again elsewhere once their leases run out)."""
        for task in self._loops:
            await background.stop(task)
        await self.jobs.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            await background.stop(task)

    async def ready(self) -> None:
        """Creates the tables, once per process (before the first claim or batch)."""
        if self._migrated:
            return
        async with self._migrating:
            if not self._migrated:
                await self.store.migrate()
                self._migrated = True

    async def run_once(self) -> int:
        """Claims what the batches allow now and starts it; how many items were started."""
        await self.ready()
        started = 0
        now = self._clock()
        for batch_id in await self.store.active(now):
            room = self._most - len(self._running)
            if room <= 0:
                break
            for claim in await self.store.claim(batch_id, now, self.lease, room):
                self._running[claim.batch_id, claim.seq] = claim
                task = asyncio.get_running_loop().create_task(self._run(claim))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                started += 1
        return started

    async def _claim_forever(self) -> None:
        while True:
            self._wake.clear()  # before looking: a wake-up meanwhile is not lost
            try:
                await self.run_once()
                if self._down:
                    self._down = False
                    _log.info({"event": "batch_store_recovered"})
            except Exception as exc:  # the driver's errors: tried again at the next poll
                if not self._down:
                    self._down = True
                    _log.warning({"event": "batch_store_unreachable", "error": type(exc).__name__})
            try:
                async with asyncio.timeout(self._poll):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                await self.store.renew(list(self._running.values()), self._clock() + self.lease)
            except Exception as exc:
                _log.warning({"event": "batch_lease_renewal_failed", "error": type(exc).__name__})

    async def _run(self, claim: Claim) -> None:
        try:
            try:
                outcome = await self._call(claim)
            except Exception as exc:  # the store down mid-call, or a fault of the gateway's own
                _log.exception(
                    {"event": "batch_item_not_run", "batch_id": claim.batch_id, "error": type(exc).__name__}
                )
                if claim.attempt < _MOST_ATTEMPTS:
                    return  # the item runs again once its lease runs out
                # A fault that recurs on every attempt ends the item instead of running it forever.
                internal = ItemError(
                    "INTERNAL", "INTERNAL", f"internal error; quote batch id {claim.batch_id}"
                )
                outcome = Outcome(None, internal, ZERO)
            if outcome is None:
                return
            for _ in range(10):  # the outcome is kept whatever happens to the database meanwhile
                try:
                    if not await self.store.finish(claim, outcome, self._clock()):
                        _log.warning(
                            {
                                "event": "batch_item_taken_over",
                                "batch_id": claim.batch_id,
                                "item": claim.custom_id,
                            }
                        )
                    return
                except Exception as exc:
                    _log.warning({"event": "batch_item_not_saved", "error": type(exc).__name__})
                    await asyncio.sleep(min(self.lease / 6, 1.0))
        finally:
            self._running.pop((claim.batch_id, claim.seq), None)
            self._wake.set()  # its place is free: the next item starts now, not at the next poll

    async def settings(self, batch_id: str) -> BatchView | None:
        """What items need of their batch (its caller, tags and key never change)."""
        batch = self._settings.get(batch_id)
        if batch is None:
            batch = await self.store.get(batch_id)
            if batch is not None:
                if len(self._settings) >= _SETTINGS_KEPT:  # the oldest batch's go first
                    del self._settings[next(iter(self._settings))]
                self._settings[batch.id] = batch
        return batch

    def decoded(self, request: bytes, form: ItemFormat) -> ChatRequest:
        """An item's request as the core takes it (checked when the batch was created)."""
        if form is ItemFormat.OPENAI:
            decoded, _, _ = OPENAI.decode(json.loads(request, parse_float=Decimal), self._providers)
            return decoded
        return decode_chat_request(chat_pb2.ChatRequest.FromString(request), self._providers)

    def provider_of(self, item: NewItem, principal: Principal) -> str:
        """The provider whose batch API answers `item` in provider mode; raises what is wrong."""
        return self._gateway.batch_call(self.decoded(item.request, item.format), principal)[1].model.provider

    def request_of(self, claim: Claim, batch: BatchView) -> ChatRequest:
        """The item's request as the core takes it (checked when the batch was created), with the
        batch's caller unless it has its own, and the batch's tags and its own place in it."""
        request = self.decoded(claim.request, claim.format)
        caller = request.caller if request.caller != Caller() else batch.caller
        tags = {**request.tags, **batch.tags, "batch_id": batch.id, "batch_item": claim.custom_id}
        return dataclasses.replace(request, caller=caller, tags=tags)

    async def _call(self, claim: Claim) -> Outcome | None:
        """The item's call through the gateway; None when a budget refused it (the batch is
        paused and the item put back)."""
        batch = await self.settings(claim.batch_id)
        if batch is None:
            return Outcome(None, ItemError("NOT_FOUND", "BATCH_NOT_FOUND", "the batch is gone"), ZERO)
        scope = CallScope(
            request_id=secrets.token_hex(16),
            received_at=time.perf_counter(),
            principal=self._principal_of(batch.key_name),
            batch=True,
        )
        try:
            outcome = await self._gateway.chat(self.request_of(claim, batch), scope)
        except GatewayError as err:
            if err.reason in _BUDGET_REASONS:
                await self.store.pause(claim, err.message, self._clock() + self._pause)
                return None
            if err.reason == "BATCH_RATE_LIMITED":  # the batches' share is used up for now
                wait = err.retry_after if err.retry_after is not None else self._pause
                await self.store.pause(claim, err.message, self._clock() + wait)
                return None
            return Outcome(None, ItemError(str(err.code), err.reason, err.message), ZERO)
        cost = outcome.summary.cost
        spent = cost.total if cost.status is PricingStatus.PRICED else ZERO
        return Outcome(chat_response(outcome).SerializeToString(), None, spent)
