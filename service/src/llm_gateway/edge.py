"""What every front door does to a call before the gateway core sees it, whatever its transport:
take or mint the request id, check the gateway key, and count the call in flight so that shutdown
drains the gRPC and HTTP doors of a process together. The doors only adapt these to their headers
and statuses."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any

from llm_gateway.domain.errors import Code, GatewayError, invalid_field
from llm_gateway.gateway.record import CallTracker

_VALID_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
# The message a call cut off at the end of the grace period is cancelled with.
CUT_OFF = "llm_gateway: grace period expired"


# The longest deadline a caller may set by header: a day, as a stream may run for hours.
_MAX_TIMEOUT = 86_400.0


# The HTTP header a caller's request id comes in, and the reply's goes back in.
REQUEST_ID_HEADER = "x-request-id"


def request_id(incoming: str | None) -> str:
    """The caller's request id (1 to 128 printable ASCII characters), or a new one."""
    if incoming and _VALID_REQUEST_ID.match(incoming):
        return incoming
    return secrets.token_hex(16)


def deadline(timeout: str | None, header: str) -> float | None:
    """The time.monotonic() deadline a timeout in seconds ("2.5") sets from now; None without one.
    `header` names it in the refusal of a value that is not a positive number of seconds."""
    if timeout is None:
        return None
    try:
        seconds = float(timeout)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= _MAX_TIMEOUT:  # NaN fails too
        raise invalid_field(
            header, f"must be a number of seconds in (0, {_MAX_TIMEOUT:g}], got {timeout[:32]!r}"
        )
    return time.monotonic() + seconds


def cut_off(error: BaseException, tracker: CallTracker | None) -> GatewayError | None:
    """For a call that `Drain.cut_off` cancelled: takes the cancel back (the door still answers)
    and returns its UNAVAILABLE / GRACE_PERIOD_EXPIRED error, which for a stream carries what it
    produced as the gateway accounted it. None for any other exception."""
    if not isinstance(error, asyncio.CancelledError) or CUT_OFF not in error.args:
        return None
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
    summary = tracker.summary if tracker is not None else None
    return GatewayError(
        "the gateway shut down before the call finished (its grace period ran out); "
        "retry on another instance",
        code=Code.UNAVAILABLE,
        reason="GRACE_PERIOD_EXPIRED",
        metadata=summary.spent() if summary is not None else {},
        retryable=True,
    )


class KeyCheck:
    """Gateway keys by the SHA-256 of the key: the plaintext keys are never kept."""

    __slots__ = ("_digests",)

    def __init__(self, digests: Mapping[bytes, str]) -> None:
        self._digests = dict(digests)

    def name_of(self, authorization: str | None, api_key: str | None = None) -> str:
        """The name of the key an `Authorization: Bearer <key>` header (or, for Anthropic's
        clients, an `x-api-key` header) presents; the refusal otherwise."""
        token = None
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                token = value.strip()
            else:
                raise _invalid()
        elif api_key:
            token = api_key.strip()
        if token is None:
            raise GatewayError(
                "missing API key: send 'authorization: Bearer <key>'",
                code=Code.UNAUTHENTICATED,
                reason="MISSING_API_KEY",
            )
        name = self._digests.get(hashlib.sha256(token.encode()).digest())
        if name is None:
            raise _invalid()
        return name


def _invalid() -> GatewayError:
    return GatewayError("invalid API key", code=Code.UNAUTHENTICATED, reason="INVALID_API_KEY")


class Drain:
    """The gateway calls in flight on every door of a process and, once draining, the refusal of
    new ones, so shutdown ends as soon as the calls that were running have finished. Calls still
    running when the grace period is over are cut off (`cut_off`)."""

    def __init__(self) -> None:
        self._in_flight = 0
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._calls: set[asyncio.Task[Any]] = set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def draining(self) -> bool:
        return self._draining

    def start_draining(self) -> None:
        self._draining = True

    async def idle(self) -> None:
        """Returns once no gateway call is in flight."""
        await self._idle.wait()

    def refusal(self) -> GatewayError | None:
        """The answer to a call arriving while draining; None otherwise."""
        if not self._draining:
            return None
        return GatewayError(
            "the gateway is shutting down; retry on another instance",
            code=Code.UNAVAILABLE,
            reason="SHUTTING_DOWN",
            retryable=True,
        )

    def enter(self) -> asyncio.Task[Any] | None:
        """Counts the current task's call in flight; hand the result to `exit`."""
        self._in_flight += 1
        self._idle.clear()
        task = asyncio.current_task()
        if task is not None:
            self._calls.add(task)
        return task

    def exit(self, task: asyncio.Task[Any] | None) -> None:
        self._in_flight -= 1
        self._calls.discard(task)
        if not self._in_flight:
            self._idle.set()

    def cut_off(self) -> int:
        """Cancels every call still in flight so that it ends UNAVAILABLE / GRACE_PERIOD_EXPIRED
        (with what a stream produced so far) rather than with the transport's bare error when the
        server stops. Returns how many there were."""
        for task in self._calls:
            task.cancel(CUT_OFF)
        return len(self._calls)
