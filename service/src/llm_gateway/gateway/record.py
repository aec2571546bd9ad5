"""One call, as the gateway tells its observers once the call has ended, however it ended.

Every front door (gRPC, HTTP, the batch runner) hands its calls to the same core, and the core
hands each one, exactly once, to its observers as a `CallRecord`: a reply, a provider error, the
caller's cancel, a deadline, a stream cut short, a refusal before any attempt, a dry run. The
access log, the live latency window, the usage ledger, budgets, metrics and traces are observers;
none of them reaches into the core another way.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from llm_gateway.domain.messages import Caller
from llm_gateway.domain.results import Usage
from llm_gateway.gateway.outcome import Attempt, Latency
from llm_gateway.pricing import Cost

_log = logging.getLogger("llm_gateway.observers")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the gateway key's configured name ("" with authentication off) and whether
    it is an admin key (sees every caller's usage; with authentication off, everyone is)."""

    key: str = ""
    admin: bool = True


ANONYMOUS = Principal()


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


class CallObserver(Protocol):
    """Told of every call once it has ended. Runs on the event loop in the call's own task: it
    must return at once (hand slow work to a queue of its own) and should not raise."""

    def call_ended(self, record: CallRecord) -> None: ...


class Observers:
    """The observers of one gateway, told in order. One that raises is logged and skipped: an
    observer's bug never changes what the caller gets."""

    __slots__ = ("_observers",)

    def __init__(self, observers: Sequence[CallObserver] = ()) -> None:
        self._observers = tuple(observers)

    def add(self, observer: CallObserver) -> None:
        self._observers = (*self._observers, observer)

    def call_ended(self, record: CallRecord) -> None:
        for observer in self._observers:
            try:
                observer.call_ended(record)
            except Exception:
                _log.exception("call observer %s failed", type(observer).__name__)
