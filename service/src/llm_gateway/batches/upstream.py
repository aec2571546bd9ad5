"""Batches in provider mode: their items go to the providers' own batch APIs (OpenAI's Batch API,
Anthropic's Message Batches) as one job per provider, answered within the provider's window at
its batch price.

A process takes a batch's pending items of one provider as a job under a lease, builds each line
with the adapter's own request builder, submits them, and keeps the provider's job id before
anything else happens to it, so a restart polls the job instead of submitting it again (only a
process that dies between the provider's answer and that write leaves a job behind, which runs
again: its items then say `attempts: 2`). Jobs are polled by one process at a time; when one has
ended, each line's reply is parsed by the adapter's own parser, priced at the batch price, told to
the observers as a call (the ledger, budgets, metrics) and kept as the item's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
from collections.abc import Awaitable, Callable
from decimal import Decimal

from llm_gateway import background
from llm_gateway.batches.model import BatchView, Claim, ItemError, Job, Outcome
from llm_gateway.batches.store import BatchStore
from llm_gateway.domain.errors import Code, GatewayError
from llm_gateway.domain.messages import ChatRequest
from llm_gateway.domain.results import Completion
from llm_gateway.gateway.core import Gateway
from llm_gateway.gateway.record import Principal
from llm_gateway.pricing import PricingStatus
from llm_gateway.providers.base import UpstreamCall
from llm_gateway.providers.batch_api import BatchApi, BatchLine, LineResult
from llm_gateway.server.encode import chat_response

_log = logging.getLogger("llm_gateway.batches")
ZERO = Decimal(0)
_POLLED_AT_ONCE = 16


def line_id(seq: int) -> str:
    return f"item-{seq}"


class ProviderJobs:
    def __init__(
        self,
        store: BatchStore,
        gateway: Gateway,
        principal_of: Callable[[str], Principal],
        settings: Callable[[str], Awaitable[BatchView | None]],
        request_of: Callable[[Claim, BatchView], ChatRequest],
        clock: Callable[[], float],
        *,
        poll_interval: float,
        upstream_poll: float,
        lease: float,
        pause: float,
        price: Decimal,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._principal_of = principal_of
        self._settings = settings
        self._request_of = request_of
        self._clock = clock
        self._interval = poll_interval  # how often to look for items to submit
        self._upstream_poll = upstream_poll  # how often to ask a provider about a job
        self._lease = lease
        self._pause = pause
        self._price = price  # the batch price, as a fraction of the list price
        self._loops: list[asyncio.Task[None]] = []
        self._wake = asyncio.Event()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._forever(self.submit_once, wake=True), name="batch-jobs-submit"),
            loop.create_task(self._forever(self.poll_once, wake=False), name="batch-jobs-poll"),
        ]

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        for task in self._loops:
            await background.stop(task)

    async def _forever(self, step: Callable[[], Awaitable[bool]], *, wake: bool) -> None:
        while True:
            if wake:
                self._wake.clear()
            try:
                if await step():
                    continue  # there may be more
            except Exception as exc:  # the store down: tried again at the next poll
                _log.warning({"event": "batch_jobs_not_run", "error": type(exc).__name__})
            try:
                async with asyncio.timeout(self._interval):
                    await (self._wake.wait() if wake else asyncio.sleep(self._interval))
            except TimeoutError:
                pass

    # -- submitting ------------------------------------------------------------------------------

    async def submit_once(self) -> bool:
        """Takes one job to submit, if there is one, and submits it."""
        job = await self._store.claim_job(self._clock(), self._lease)
        if job is None:
            return False
        renewing = asyncio.get_running_loop().create_task(self._renew(job))
        try:
            await self._submit(job)
        except Exception:  # the database lost meanwhile: the job goes back, its attempts uncounted
            with contextlib.suppress(Exception):
                why = "the gateway could not submit the provider job now; it tries again shortly"
                await self._store.release_job(job, why, self._clock() + self._pause)
            raise
        finally:
            await background.stop(renewing)
        return True

    async def _renew(self, job: Job) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            await self._store.renew_job(job, self._clock() + self._lease)

    async def _submit(self, job: Job) -> None:
        batch = await self._settings(job.batch_id)
        if batch is None:
            return
        principal = self._principal_of(job.key_name)
        api = self._gateway.batch_api(job.provider)
        lines: list[BatchLine] = []
        calls: list[UpstreamCall] = []
        for claim in job.claims:
            try:
                call = self._gateway.batch_call(self._request_of(claim, batch), principal)[1]
            except GatewayError:
                continue  # the item fails with this error when the job's results are read
            calls.append(call)
            if api is not None:
                lines.append(BatchLine(line_id(claim.seq), api.body(call)))
        if api is None or not lines:  # nothing to send: the job ends with each item's error
            await self._store.submitted(job, "", "not_submitted", self._clock(), self._clock())
            return
        over = await self._over_budget(calls, principal)
        if over:
            await self._store.release_job(job, over, self._clock() + self._pause)
            return
        try:
            upstream_id = await api.submit(lines, label=job.batch_id)
        except GatewayError as err:
            _log.warning(
                {"event": "batch_job_not_submitted", "batch_id": job.batch_id, "provider": job.provider,
                 "reason": err.reason, "error": err.message}
            )  # fmt: skip
            why = f"provider {job.provider!r} did not take the batch job: {err.message}"
            await self._store.release_job(job, why, self._clock() + self._pause)
            return
        now = self._clock()
        try:
            kept = await self._store.submitted(job, upstream_id, "submitted", now, now + self._upstream_poll)
        except Exception:  # its id not kept, the job will be submitted again: withdraw this one
            with contextlib.suppress(GatewayError):
                await api.cancel(upstream_id)
            raise
        if not kept:
            # Another process took the job over while this one was submitting it: it submits its
            # own, so this one is withdrawn.
            _log.warning(
                {"event": "batch_job_taken_over", "batch_id": job.batch_id, "upstream_id": upstream_id}
            )
            with contextlib.suppress(GatewayError):
                await api.cancel(upstream_id)
            return
        _log.info(
            {"event": "batch_job_submitted", "batch_id": job.batch_id, "provider": job.provider,
             "upstream_id": upstream_id, "items": len(lines)}
        )  # fmt: skip

    async def _over_budget(self, calls: list[UpstreamCall], principal: Principal) -> str:
        """Why the job's worst case does not fit a budget covering its items ("" when it fits)."""
        keeper = self._gateway.budgets
        if keeper is None:
            return ""
        needed: dict[str, Decimal] = {}
        covering = {}
        for call in calls:
            budgets = keeper.covering(principal, call.request.caller, call.request.tags)
            if not budgets:
                continue
            worst = await self._gateway.batch_worst_case(call, self._price) or ZERO
            for budget in budgets:
                covering[budget.id] = budget
                needed[budget.id] = needed.get(budget.id, ZERO) + worst
        if not covering:
            return ""
        for standing in await keeper.standings(list(covering.values())):
            wanted = needed[standing.charge.budget_id]
            if not standing.fits(wanted):
                return (
                    f"budget {standing.charge.budget_id!r} has {standing.remaining} USD left; the next "
                    f"provider job may cost up to {wanted} USD"
                )
        return ""

    # -- polling ---------------------------------------------------------------------------------

    async def poll_once(self) -> bool:
        """Polls the jobs that are due; reads the results of those that have ended."""
        now = self._clock()
        # Held for a lease while it is polled and its results read, so no other process reads them.
        jobs = await self._store.due_jobs(now, now + max(self._lease, self._upstream_poll), _POLLED_AT_ONCE)
        for job in jobs:
            await self._poll(job)
        return False

    async def _poll(self, job: Job) -> None:
        api = self._gateway.batch_api(job.provider)
        results: list[LineResult] = []
        status = "not_submitted"
        if job.upstream_id and api is not None:
            cancel_sent = job.cancel_sent
            try:
                if job.cancelling and not cancel_sent:
                    await api.cancel(job.upstream_id)
                    cancel_sent = True
                progress = await api.progress(job.upstream_id)
                status = progress.status
                if progress.ended:
                    results = await api.results(job.upstream_id)
            except GatewayError as err:  # asked again at the next poll
                _log.warning(
                    {"event": "batch_job_poll_failed", "batch_id": job.batch_id,
                     "upstream_id": job.upstream_id, "reason": err.reason}
                )  # fmt: skip
                await self._store.polled(job, "", cancel_sent, self._clock() + self._upstream_poll)
                return
            await self._store.polled(job, status, cancel_sent, self._clock() + self._upstream_poll)
            if not progress.ended:
                return
        await self._finish(job, status, api, results)

    async def _finish(self, job: Job, status: str, api: BatchApi | None, results: list[LineResult]) -> None:
        batch = await self._settings(job.batch_id)
        if batch is None:
            return
        principal = self._principal_of(job.key_name)
        answers = {result.line_id: result for result in results}
        outcomes: dict[int, Outcome] = {}
        for claim in await self._store.job_items(job):
            outcomes[claim.seq] = await self._outcome(claim, batch, principal, job, status, api, answers)
        if await self._store.finish_job(job, outcomes, self._clock()):
            _log.info(
                {"event": "batch_job_done", "batch_id": job.batch_id, "upstream_id": job.upstream_id,
                 "items": len(outcomes)}
            )  # fmt: skip

    async def _outcome(
        self,
        claim: Claim,
        batch: BatchView,
        principal: Principal,
        job: Job,
        status: str,
        api: BatchApi | None,
        answers: dict[str, LineResult],
    ) -> Outcome:
        request = self._request_of(claim, batch)
        if job.upstream_id:
            request = dataclasses.replace(request, tags={**request.tags, "provider_batch": job.upstream_id})
        try:
            call = self._gateway.batch_call(request, principal)[1]
        except GatewayError as err:
            return _failed(err)
        found = answers.get(line_id(claim.seq))
        never_ran = found is None or (
            found.error is not None and found.error.reason == "PROVIDER_BATCH_CANCELLED"
        )
        if never_ran and job.cancelling:  # as a live batch's items not started when it was cancelled
            return Outcome(None, None, ZERO, cancelled=True)
        answer: Completion | GatewayError
        if found is None or api is None:
            answer = _unanswered(job, status)
        elif found.error is not None:
            answer = found.error
        else:
            try:
                answer = api.parse(call, found.reply)
            except GatewayError as err:
                answer = err
        try:
            outcome = await self._gateway.batch_answered(
                call,
                answer,
                principal,
                request_id=secrets.token_hex(16),
                submitted_at=job.submitted_at,
                factor=self._price,
            )
        except GatewayError as err:
            return _failed(err)
        cost = outcome.summary.cost
        spent = cost.total if cost.status is PricingStatus.PRICED else ZERO
        return Outcome(chat_response(outcome).SerializeToString(), None, spent)


def _failed(err: GatewayError) -> Outcome:
    return Outcome(None, ItemError(err.code.value, err.reason, err.message), ZERO)


def _unanswered(job: Job, status: str) -> GatewayError:
    """A line the provider's ended job holds no answer for."""
    where = {"provider": job.provider, "upstream_id": job.upstream_id}
    if status in ("expired", "ended"):
        return GatewayError(
            "the provider's batch window ended before it ran the item",
            code=Code.DEADLINE_EXCEEDED,
            reason="PROVIDER_BATCH_EXPIRED",
            metadata=where,
        )
    return GatewayError(
        f"the provider's batch job ended as {status!r} without running the item",
        code=Code.UNAVAILABLE,
        reason="PROVIDER_BATCH_FAILED",
        metadata=where,
    )
