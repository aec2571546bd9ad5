"""A circuit breaker per provider: pybreaker's state machine, admitted and reported from asyncio.

pybreaker is synchronous: its `call` runs a function and records the outcome in one step, and its
half-open state lets every caller through. Around an awaited upstream call the gateway splits the
two. `admit()` admits a call before it starts (failing fast, with no network, while the circuit
is open, and letting exactly one probe through once the reset timeout has passed, however many
callers are waiting); its ticket reports the outcome to pybreaker once the call ends. Everything runs on
the event loop's thread, so admission and reporting never interleave.

Which failures count is explicit (`TRIPPING_REASONS`): the provider down, overloaded (5xx, 529),
timing out, unreachable, or sending a broken reply or stream. A 4xx the caller caused, a rate limit
(the rate limiter's business), or a cancelled call never counts; a call that reached the provider
and got an answer, even an error, is a success for the breaker.

One caller cannot take a provider away from the others. Some servers answer a request they cannot
take with a 5xx, so failures that follow one caller's requests may be about those requests, not the
provider. Two rules bound a caller's weight: a call counts at most one failure however often it is
retried (the gateway asks for that with `counts=False`), and the failure that would open the
circuit does not count while every failure since the last success came from one caller and another
caller was served by the provider within `caller_window` seconds. A provider that is really down
fails everyone's calls and opens as before; with a single caller it opens on that caller's
failures, since there is no one else to protect.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from enum import StrEnum
from types import TracebackType
from typing import Protocol

import pybreaker

from llm_gateway.domain.errors import Code, GatewayError

TRIPPING_REASONS = frozenset(
    {
        "UPSTREAM_UNAVAILABLE",
        "UPSTREAM_TIMEOUT",
        "UPSTREAM_BAD_RESPONSE",
        "UPSTREAM_STREAM_ERROR",
        "UPSTREAM_STREAM_INTERRUPTED",
    }
)


# Callers remembered per provider for the one-caller rule (the least recently served are forgotten).
_MAX_CALLERS = 1024
# How far this replica's idea of when its circuit opened may be from the fleet's before it follows.
_FOLLOW_SLACK = 1.0


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"  # the next call is a probe


class _TrippedError(Exception):
    """Reports a counted failure to pybreaker."""


def _succeed() -> None:
    return None


def _fail() -> None:
    raise _TrippedError


class ProviderBreaker:
    def __init__(
        self,
        provider: str,
        failure_threshold: int,
        reset_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        caller_window: float = 60.0,
    ) -> None:
        self.provider = provider
        self.reset_timeout = reset_timeout
        self._threshold = failure_threshold
        self._caller_window = caller_window
        self._served: OrderedDict[str, float] = OrderedDict()  # caller -> when last served
        self._failing: set[str] = set()  # callers with counted failures since the last success
        # Called after every state change (the health service mirrors the circuit).
        self.on_change: Callable[[ProviderBreaker], None] | None = None
        # The circuit shared with other replicas (`llm_gateway.fleet.SharedCircuit`), if any.
        self.shared: SharedState | None = None
        self._clock = clock
        self._opened_at = 0.0
        self._probing = False
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=failure_threshold,
            reset_timeout=reset_timeout,
            name=provider,
            throw_new_error_on_trip=False,
            listeners=[_StateChanges(self)],
        )

    @property
    def state(self) -> CircuitState:
        current = self._breaker.current_state
        if current == pybreaker.STATE_CLOSED:
            return CircuitState.CLOSED
        if current == pybreaker.STATE_OPEN and not self._reset_due():
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    @property
    def available(self) -> bool:
        """Whether a call made now would be let through."""
        state = self.state
        return state is CircuitState.CLOSED or (state is CircuitState.HALF_OPEN and not self._probing)

    def check(self) -> None:
        """Raises UNAVAILABLE / CIRCUIT_OPEN when a call made now would not be admitted, without
        admitting one (a call checks before it waits for rate-limit capacity)."""
        if not self.available:
            raise self.open_error()

    def admit(self, caller: str = "", counts: bool = True) -> Ticket:
        """Admits one upstream call, or raises UNAVAILABLE / CIRCUIT_OPEN at once. The caller
        must end the ticket with how the call ended: `with ticket:` around the call, or `end`.
        `caller` identifies who the call is for; `counts=False` when the same call already had a
        failure counted (a retry), so its failure says nothing new."""
        state = self.state
        if state is CircuitState.CLOSED:
            return Ticket(self, False, caller, counts)
        if state is CircuitState.HALF_OPEN and not self._probing:
            self._probing = True
            self._breaker.half_open()
            return Ticket(self, True, caller, counts)
        raise self.open_error()

    def record_failure(self, error: BaseException, caller: str = "") -> None:
        """A failure of a call whose ticket has already ended (a stream that failed after its
        first event, which had already shown the provider healthy)."""
        if isinstance(error, GatewayError) and error.reason in TRIPPING_REASONS:
            self._report(False, True, caller)

    def _report(self, probe: bool, failed: bool | None, caller: str) -> None:
        try:
            if failed is None:
                return  # cancelled, or a bug: says nothing about the provider
            if not probe and self._breaker.current_state != pybreaker.STATE_CLOSED:
                return  # admitted before the circuit opened: only the probe decides now
            if not failed:
                self._served[caller] = self._clock()
                self._served.move_to_end(caller)
                if len(self._served) > _MAX_CALLERS:
                    self._served.popitem(last=False)
                self._failing.clear()
            elif not probe and not self._may_open(caller):
                return
            else:
                self._failing.add(caller)
            if self.shared is not None:
                if probe:
                    self.shared.probed(not failed)
                elif failed:
                    self.shared.failed()
                else:
                    self.shared.succeeded()
            self._breaker.call(_fail if failed else _succeed)
        except _TrippedError:
            pass
        finally:
            if probe:
                self._probing = False  # decided, or the turn passes on

    def follow(self, open_for: float | None) -> None:
        """Takes the fleet's shared state: open for `open_for` seconds, or closed (None). A probe
        under way here decides for itself, and a circuit this replica opened itself a moment ago
        is not closed before its failures have reached the fleet's count."""
        current = self._breaker.current_state
        if open_for is not None:
            if current == pybreaker.STATE_CLOSED or (
                not self._probing and self._clock() - self._opened_at > open_for + _FOLLOW_SLACK
            ):
                self._breaker.open()
                self._opened_at = self._clock() - open_for
        elif (
            current != pybreaker.STATE_CLOSED
            and not self._probing
            and self._clock() - self._opened_at > _FOLLOW_SLACK
        ):
            self._breaker.close()

    def _may_open(self, caller: str) -> bool:
        """Whether a failure by `caller` may count: always, unless it would open the circuit on one
        caller's failures alone while another caller was served within the caller window."""
        if self._breaker.fail_counter + 1 < self._threshold or self._failing - {caller}:
            return True
        since = self._clock() - self._caller_window
        return not any(when >= since for who, when in self._served.items() if who != caller)

    def _reset_due(self) -> bool:
        return self._clock() - self._opened_at >= self.reset_timeout

    def open_error(self, detail: str = "") -> GatewayError:
        """The refusal of a call the circuit does not let through."""
        wait = max(self.reset_timeout - (self._clock() - self._opened_at), 0.0)
        if not detail:
            detail = "a probe call is testing it" if self._probing else f"next probe in {wait:.1f} s"
        return GatewayError(
            f"provider {self.provider} is failing and its circuit is open ({detail}); not called",
            code=Code.UNAVAILABLE,
            reason="CIRCUIT_OPEN",
            metadata={"provider": self.provider},
            retryable=True,
        )

    def _changed(self, new_state: str) -> None:
        if new_state == pybreaker.STATE_OPEN:
            self._opened_at = self._clock()
            self._failing.clear()
        if self.on_change is not None:
            self.on_change(self)


class SharedState(Protocol):
    """What a breaker tells the fleet (`llm_gateway.fleet.SharedCircuit`)."""

    def failed(self) -> None: ...

    def succeeded(self) -> None: ...

    def probed(self, ok: bool) -> None: ...

    def check(self) -> None: ...

    async def claim_probe(self) -> bool: ...


class Ticket:
    """One admitted call; `end` it exactly once. As a context manager around the call, it ends
    with how the block ends."""

    __slots__ = ("_breaker", "_caller", "_counts", "_ended", "probe")

    def __init__(self, breaker: ProviderBreaker, probe: bool, caller: str = "", counts: bool = True) -> None:
        self._breaker = breaker
        self.probe = probe
        self._caller = caller
        self._counts = counts
        self._ended = False

    @property
    def ended(self) -> bool:
        return self._ended

    def end(self, error: BaseException | None) -> None:
        """None: the call succeeded. A GatewayError counts when its reason is in
        TRIPPING_REASONS (else the provider answered: a success), and the ticket counts failures.
        Anything else (cancelled, the caller's deadline, a bug) is not reported."""
        if self._ended:
            return
        self._ended = True
        if error is None:
            failed: bool | None = False
        elif isinstance(error, GatewayError) and error.reason != "DEADLINE_EXCEEDED":
            failed = error.reason in TRIPPING_REASONS
            if failed and not self._counts and not self.probe:
                failed = None  # this call's failure is already counted
        else:
            failed = None
        self._breaker._report(self.probe, failed, self._caller)

    def release(self) -> None:
        """Ends the ticket without an outcome: its call was not sent (another replica probes)."""
        self._ended = True
        if self.probe:
            self._breaker._probing = False

    def __enter__(self) -> Ticket:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.end(exc)


class _StateChanges(pybreaker.CircuitBreakerListener):
    """Notes when the circuit opens, on the breaker's own clock, and passes every change on."""

    def __init__(self, breaker: ProviderBreaker) -> None:
        self._breaker = breaker

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        self._breaker._changed(new_state.name)
