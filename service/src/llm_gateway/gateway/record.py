"""One call, as the gateway tells its observers once the call has ended, however it ended.

Every front door (gRPC, HTTP, the batch runner) hands its calls to the same core, and the core
hands each one, exactly once, to its observers as a `CallRecord`: a reply, a provider error, the
caller's cancel, a deadline, a stream cut short, a refusal before any attempt, a dry run. The
access log, the live latency window, the usage ledger, budgets, metrics and traces are observers;
none of them reaches into the core another way.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol, runtime_checkable

from llm_gateway.domain.errors import GatewayError
from llm_gateway.domain.messages import Caller, ChatRequest
from llm_gateway.domain.principal import ANONYMOUS, Principal
from llm_gateway.domain.results import Usage
from llm_gateway.gateway.outcome import Attempt, CallHeader, CallSummary, Latency, RoutingInfo
from llm_gateway.pricing import Cost

__all__ = ["ANONYMOUS", "CallObserver", "CallRecord", "CallTracker", "Observers", "Principal", "new_call_id"]

_log = logging.getLogger("llm_gateway.observers")


def new_call_id() -> str:
    """A call's id, given when the call arrives: its reply and its record carry the same one,
    and a call refused before any model still has one of its own."""
    return f"chat_{secrets.token_hex(12)}"


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A finished call. Amounts are exact `Decimal`s inside `cost`; times are seconds."""

    id: str  # the call's id ("chat_..."), also for calls that never reached a model
    request_id: str
    started_at: float  # Unix time the gateway received the call
    ended_at: float  # Unix time it ended
    principal: Principal
    caller: Caller
    tags: Mapping[str, str]
    requested_model: str  # as the caller wrote it ("" when the request did not get that far)
    model: str  # the model that served (or last tried) the call, "provider:model"; "" for none
    provider: str
    status: str  # "OK", or the canonical status code name ("UNAVAILABLE", "CANCELLED", ...)
    reason: str  # the error's reason ("UPSTREAM_TIMEOUT"); "" when OK
    streamed: bool
    dry_run: bool
    fallback_used: bool
    usage: Usage | None  # None when no model produced anything to count
    cost: Cost | None
    latency: Latency | None
    attempts: Sequence[Attempt] = field(default_factory=tuple)
    # What was asked of the gateway: "Chat", "ChatStream", "EstimateCost" or "ListModels" (the
    # contract's names, whichever door the call came through).
    operation: str = "Chat"
    # The front door it came through ("grpc", "http"; "" for a call made in-process) and its route
    # there: the gRPC method ("/llmgateway.v1.GatewayService/Chat") or the HTTP route
    # ("/v1/chat/completions").
    door: str = ""
    route: str = ""
    duration: float = 0.0  # seconds from receipt to the end, on the monotonic clock
    finish_reason: str = ""  # why the model stopped ("stop", "length", ...); "" when it did not
    provider_model: str = ""  # the model id the provider said served the call
    provider_response_id: str = ""  # the provider's id of its reply
    cost_alert_threshold: Decimal | None = None  # the call's own alert threshold, USD
    task_type: str = ""  # the task the caller named ("summarization", ...); "" for none
    # Answered through a provider's batch API: nothing was held against budgets for it, which
    # count its cost when it ends.
    deferred: bool = False

    @property
    def is_chat(self) -> bool:
        """A call for a completion (billable), as opposed to an estimate or a listing."""
        return self.operation in CHAT_OPERATIONS


CHAT_OPERATIONS = frozenset({"Chat", "ChatStream"})


class CallObserver(Protocol):
    """Told of every call once it has ended. Runs on the event loop in the call's own task: it
    must return at once (hand slow work to a queue of its own) and should not raise."""

    def call_ended(self, record: CallRecord) -> None: ...


@runtime_checkable
class StartObserver(Protocol):
    """An observer also told when a call arrives (before anything about it is known but its door,
    route and operation), as a gauge of calls in flight needs."""

    def call_started(self, tracker: CallTracker) -> None: ...


class Observers:
    """The observers of one gateway, told in order. One that raises is logged and skipped: an
    observer's bug never changes what the caller gets."""

    __slots__ = ("_observers", "_starters")

    def __init__(self, observers: Sequence[CallObserver] = ()) -> None:
        self._observers: tuple[CallObserver, ...] = ()
        self._starters: tuple[StartObserver, ...] = ()
        for observer in observers:
            self.add(observer)

    def add(self, observer: CallObserver) -> None:
        self._observers = (*self._observers, observer)
        if isinstance(observer, StartObserver):
            self._starters = (*self._starters, observer)

    def call_started(self, tracker: CallTracker) -> None:
        """A call has arrived: told to the observers that count calls in flight."""
        for observer in self._starters:
            try:
                observer.call_started(tracker)
            except Exception:
                _log.exception("call observer %s failed", type(observer).__name__)

    def call_ended(self, record: CallRecord) -> None:
        for observer in self._observers:
            try:
                observer.call_ended(record)
            except Exception:
                _log.exception("call observer %s failed", type(observer).__name__)


class CallTracker:
    """What a call's record needs, gathered while the call runs, and the record told to the
    observers exactly once when `end` is first called.

    The front door opens it when a call arrives (`Gateway.open_call`) and ends it with the status
    the caller got, however the call ends; the core fills in what it learns on the way (the
    request, the routing, which model started serving, the summary, a cut-short stream's account).
    """

    __slots__ = (
        "_ended",
        "_observers",
        "_received",
        "_started",
        "deferred",
        "door",
        "error",
        "header",
        "id",
        "operation",
        "principal",
        "request",
        "request_id",
        "route",
        "routing",
        "streamed",
        "summary",
        "traceparent",
    )

    def __init__(
        self,
        observers: Observers,
        *,
        operation: str,
        request_id: str,
        principal: Principal,
        received_at: float | None = None,
        door: str = "",
        route: str = "",
        traceparent: str | None = None,
        started_at: float | None = None,
    ) -> None:
        self._observers = observers
        self._started = time.time() if started_at is None else started_at
        # time.perf_counter() at receipt: durations are measured on the same clock as latency.
        self._received = time.perf_counter() if received_at is None else received_at
        self._ended = False
        self.operation = operation
        self.door, self.route = door, route
        self.traceparent = traceparent  # the caller's W3C trace context, for the call's span
        self.request_id = request_id
        self.principal = principal
        self.id = new_call_id()
        self.request: ChatRequest | None = None
        self.routing: RoutingInfo | None = None
        self.header: CallHeader | None = None
        self.summary: CallSummary | None = None
        self.streamed = operation == "ChatStream"
        self.error: GatewayError | None = None  # the error the caller was answered with
        self.deferred = False
        observers.call_started(self)

    @property
    def ended(self) -> bool:
        return self._ended

    def fail(self, error: GatewayError) -> None:
        """The call is being answered with `error` (the first one answered is the one kept)."""
        if self.error is None:
            self.error = error

    def end(self, status: str = "") -> CallRecord | None:
        """Builds the record and tells the observers, the first time only (None afterwards).
        `status` is the canonical code the caller saw when no error was recorded with `fail`
        ("OK", "CANCELLED", "DEADLINE_EXCEEDED"); a recorded error's code wins."""
        if self._ended:
            return None
        self._ended = True
        record = self._record(status)
        self._observers.call_ended(record)
        return record

    def _record(self, status: str) -> CallRecord:
        request, summary, routing, header = self.request, self.summary, self.routing, self.header
        error = self.error
        if summary is not None:
            routing = summary.routing
        served = (routing.selected if routing is not None else None) or (header.model if header else None)
        attempts = tuple(routing.attempts) if routing is not None else ()
        if served is not None:
            model, provider = served.id, served.provider
        elif attempts:
            model, provider = attempts[-1].model, attempts[-1].provider
        else:
            model = provider = ""
        return CallRecord(
            id=self.id,
            request_id=self.request_id,
            started_at=self._started,
            ended_at=time.time(),
            principal=self.principal,
            caller=request.caller if request is not None else Caller(),
            tags=dict(request.tags) if request is not None else {},
            requested_model=request.model if request is not None else "",
            model=model,
            provider=provider,
            status=error.code.value if error is not None else (status or "OK"),
            reason=error.reason if error is not None else "",
            streamed=self.streamed,
            dry_run=request.dry_run if request is not None else False,
            fallback_used=routing.fallback_used if routing is not None else False,
            usage=summary.usage if summary is not None else None,
            cost=summary.cost if summary is not None else None,
            latency=summary.latency if summary is not None else None,
            attempts=attempts,
            operation=self.operation,
            door=self.door,
            route=self.route,
            duration=time.perf_counter() - self._received,
            finish_reason=summary.finish_reason.value if summary and summary.finish_reason else "",
            provider_model=summary.provider_model if summary is not None else "",
            provider_response_id=summary.provider_response_id if summary is not None else "",
            cost_alert_threshold=request.cost_alert_threshold if request is not None else None,
            task_type=request.task_type if request is not None else "",
            deferred=self.deferred,
        )
