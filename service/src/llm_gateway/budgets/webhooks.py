"""Alert webhooks: signed POSTs delivered from a durable outbox, at least once.

Alerts wait in an outbox (`Outbox`) until delivered, so a crash or a receiver that is down loses
none. The sender claims due items under a lease, so several worker processes can share one outbox
without sending an item twice at once, POSTs each one signed with its webhook's secret, and records
the outcome. Failures are retried with capped exponential backoff and jitter (so a receiver coming
back is not hit by every gateway at once) until the webhook's `max_age`. At least once means a
receiver may see an event twice (a lease that expired mid-send): it de-duplicates on the event id
header, which stays the same across retries.

Signatures follow Stripe's scheme: the timestamp is signed with the body, so a captured request
cannot be replayed outside the receiver's tolerance, and a receiver can accept several `v1`
signatures while a secret is being rotated.

A webhook's URL may carry a token, so neither it nor the secret ever reaches a log line or a stored
error: errors are a status code or an exception's class name, never its message (which can quote
the URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from llm_gateway import background
from llm_gateway.config.schema import WebhookConfig

__all__ = [
    "EVENT_ID_HEADER",
    "EVENT_TYPE_HEADER",
    "SIGNATURE_HEADER",
    "Outbox",
    "OutboxItem",
    "WebhookSender",
    "sign",
    "verify",
]

_log = logging.getLogger("llm_gateway.webhooks")

SIGNATURE_HEADER = "X-Gateway-Signature"
EVENT_ID_HEADER = "X-Gateway-Event-Id"
EVENT_TYPE_HEADER = "X-Gateway-Event-Type"
USER_AGENT = "llm-gateway-webhooks/1"

MAX_BACKOFF = 3600.0  # seconds between attempts, at most
# 2**12 > MAX_BACKOFF: bounding the exponent keeps a long-failing item's arithmetic small.
_MAX_EXPONENT = 12
# ASCII digits only (int() would take other scripts' digits too), and few enough that `now - t`
# cannot overflow a float.
_TIMESTAMP = re.compile(r"[0-9]{1,15}")


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """'t=<timestamp>,v1=<hex HMAC-SHA256(secret, b"<timestamp>." + body)>' (Stripe's scheme)."""
    mac = hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: bytes, header: str, body: bytes, *, now: float, tolerance: float = 300.0) -> bool:
    """For receivers: the header parses, some v1 signature matches (hmac.compare_digest), and
    |now - t| <= tolerance. Never raises on a malformed header (returns False)."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            if timestamp is not None or not _TIMESTAMP.fullmatch(value):
                return False
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
        # Other schemes (a future v2) are ignored, so senders can add one before receivers know it.
    # Written as `not <=` so that a NaN `now` fails too.
    if timestamp is None or not candidates or not abs(now - timestamp) <= tolerance:
        return False
    expected = sign(secret, timestamp, body).rpartition("v1=")[2]
    # compare_digest refuses non-ASCII str; such a candidate cannot match anyway.
    return any(c.isascii() and hmac.compare_digest(expected, c) for c in candidates)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One event waiting to be delivered to one webhook."""

    id: int
    webhook: str  # the WebhookConfig.name it goes to
    event_id: str  # stable across retries; receivers de-duplicate on it
    event_type: str  # "cost_alert"
    body: bytes  # the JSON payload exactly as it will be signed and sent
    attempts: int  # delivery attempts already made
    created_at: float  # unix time the event was created


class Outbox(Protocol):
    """Durable storage of events to deliver, shared by every process that sends them."""

    async def claim(self, now: float, limit: int, lease: float) -> list[OutboxItem]:
        """Up to `limit` undelivered items due at `now` (next attempt time <= now and no live
        lease), each leased until now + lease so no other process sends it meanwhile."""
        ...

    async def delivered(self, item_id: int, now: float) -> None:
        """Delivered: never claimed again."""
        ...

    async def failed(self, item_id: int, now: float, retry_at: float | None, error: str) -> None:
        """One more failed attempt; retry_at None: given up for good."""
        ...


def _backoff(attempts: int, rng: random.Random) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: 1, 2, 4, ... capped at an hour,
    times a jitter factor in [0.5, 1.0] so retries from many senders spread out."""
    return min(2.0 ** min(attempts - 1, _MAX_EXPONENT), MAX_BACKOFF) * rng.uniform(0.5, 1.0)


class WebhookSender:
    """Delivers the outbox's due items to the configured webhooks, in a background loop (`start`)
    or one batch at a time (`run_once`)."""

    def __init__(
        self,
        outbox: Outbox,
        webhooks: Sequence[WebhookConfig],
        http: aiohttp.ClientSession,
        *,
        poll_interval: float = 1.0,
        timeout: float = 10.0,
        lease: float = 30.0,
        batch: int = 20,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._outbox = outbox
        self._webhooks = {webhook.name: webhook for webhook in webhooks}
        self._http = http  # owned by the caller, who closes it
        self._poll_interval = poll_interval
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._lease = lease
        self._batch = batch
        self._clock = clock
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Starts the background loop on the running event loop (once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="webhook-sender")

    def wake(self) -> None:
        """New items were just added: deliver now instead of at the next poll."""
        self._wake.set()

    async def run_once(self) -> int:
        """Claims and delivers one batch; returns how many were delivered. An outbox error is
        raised after every delivery of the batch has finished."""
        _, delivered = await self._run_batch()
        return delivered

    async def close(self) -> None:
        """Stops the background loop; a delivery in flight is abandoned (its lease expires and it
        is sent again later). Idempotent."""
        task, self._task = self._task, None
        await background.stop(task)

    # -- the background loop -----------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            # Cleared before claiming, so a wake() during the batch makes the next one start at once.
            self._wake.clear()
            try:
                claimed, _ = await self._run_batch()
            except Exception:
                # The outbox's database being locked or down: try again at the next poll.
                _log.exception({"event": "webhook_outbox_error"})
                claimed = 0
            if claimed >= self._batch:
                continue  # more may be due right now
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()

    async def _run_batch(self) -> tuple[int, int]:
        """(items claimed, items delivered)."""
        items = await self._outbox.claim(self._clock(), self._batch, self._lease)
        if not items:
            return 0, 0
        # return_exceptions: one item's outbox error must not orphan the others' deliveries.
        results = await asyncio.gather(*(self._deliver(item) for item in items), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return len(items), sum(result is True for result in results)

    # -- one delivery ------------------------------------------------------------------------

    async def _deliver(self, item: OutboxItem) -> bool:
        webhook = self._webhooks.get(item.webhook)
        if webhook is None:
            await self._give_up(item, "webhook not configured")
            return False
        if item.event_type not in webhook.events:
            await self._give_up(item, "event type not subscribed")
            return False
        error = await self._post(webhook, item)
        now = self._clock()
        # Each outcome is written before it is logged, so a log line always describes kept state.
        if error is None:
            await self._outbox.delivered(item.id, now)
            _log.info(self._entry("webhook_delivered", item, attempts=item.attempts + 1))
            return True
        attempts = item.attempts + 1
        delay = _backoff(attempts, self._rng)
        if now + delay > item.created_at + webhook.max_age:
            await self._outbox.failed(item.id, now, None, error)
            _log.error(
                self._entry(
                    "webhook_given_up",
                    item,
                    attempts=attempts,
                    error=error,
                    age=round(now - item.created_at, 3),
                )
            )
            return False
        await self._outbox.failed(item.id, now, now + delay, error)
        _log.warning(
            self._entry("webhook_failed", item, attempts=attempts, error=error, retry_in=round(delay, 3))
        )
        return False

    async def _post(self, webhook: WebhookConfig, item: OutboxItem) -> str | None:
        """None when the receiver took it (any 2xx), else a short error safe to log and store."""
        # Signed now, not when queued: a retry hours later must still be within the tolerance.
        timestamp = int(self._clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            SIGNATURE_HEADER: sign(webhook.secret.get_secret_value().encode(), timestamp, item.body),
            EVENT_ID_HEADER: item.event_id,
            EVENT_TYPE_HEADER: item.event_type,
        }
        try:
            async with self._http.post(
                webhook.url.get_secret_value(),
                data=item.body,
                headers=headers,
                timeout=self._timeout,
                # A redirect is a failure: following it would send the signed alert elsewhere.
                allow_redirects=False,
                raise_for_status=False,
            ) as response:
                status = response.status
        except Exception as exc:
            # The class name only: aiohttp's messages quote the URL, and with it its token.
            return type(exc).__name__
        return None if 200 <= status < 300 else f"HTTP {status}"

    async def _give_up(self, item: OutboxItem, error: str) -> None:
        _log.error(self._entry("webhook_given_up", item, attempts=item.attempts, error=error))
        await self._outbox.failed(item.id, self._clock(), None, error)

    @staticmethod
    def _entry(event: str, item: OutboxItem, **fields: object) -> dict[str, object]:
        return {"event": event, "webhook": item.webhook, "event_id": item.event_id, **fields}
