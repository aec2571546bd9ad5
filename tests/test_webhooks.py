"""Alert webhooks: signatures a receiver can check, and delivery from the outbox to a real HTTP
receiver on loopback: retried with capped, jittered backoff, caught up once a receiver that was down
is back, each event exactly once, given up past `max_age` or when its webhook is gone, promptly on
wake() in the background loop, and never a URL token or secret in a log line or a stored error."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import sqlite3
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web
from pydantic import SecretStr

from llm_gateway.budgets.webhooks import (
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    OutboxItem,
    WebhookSender,
    sign,
    verify,
)
from llm_gateway.config.schema import WebhookConfig
from llm_gateway.logs import JsonFormatter

SECRET = "whsec-0123456789abcdef-SECRET"
KEY = SECRET.encode()
TOKEN = "s3cr3t-token"
T0 = 1_700_000_000


class Clock:
    """A clock the test moves by hand, so retries are due without sleeping."""

    def __init__(self, now: float = float(T0)) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- an outbox in memory ---------------------------------------------------------------------


@dataclass
class Entry:
    id: int
    webhook: str
    event_id: str
    event_type: str
    body: bytes
    created_at: float
    attempts: int = 0
    due: float = 0.0
    leased_until: float = 0.0
    delivered_at: float | None = None
    given_up: bool = False
    errors: list[str] = field(default_factory=list)
    retries: list[tuple[float, float]] = field(default_factory=list)  # (failed at, retry at)

    @property
    def open(self) -> bool:
        return self.delivered_at is None and not self.given_up


class MemoryOutbox:
    """The Outbox protocol over a dict: claims honour the next attempt time and live leases."""

    def __init__(self) -> None:
        self.entries: dict[int, Entry] = {}
        self._changed = asyncio.Event()  # an outcome was recorded

    async def until(self, condition: Callable[[], bool]) -> None:
        """Waits until `condition()` holds after some outcome is recorded."""
        while not condition():
            self._changed.clear()
            await self._changed.wait()

    def add(
        self, webhook: str = "ops", *, created_at: float, attempts: int = 0, event_type: str = "cost_alert"
    ) -> Entry:
        entry_id = len(self.entries) + 1
        event_id = f"evt_{uuid.uuid4().hex}"
        body = b'{"type":"cost_alert","id":"%s","spent":"12.50"}' % event_id.encode()
        entry = Entry(entry_id, webhook, event_id, event_type, body, created_at, attempts, due=created_at)
        self.entries[entry_id] = entry
        return entry

    async def claim(self, now: float, limit: int, lease: float) -> list[OutboxItem]:
        due = [e for e in self.entries.values() if e.open and e.due <= now and e.leased_until <= now]
        items = []
        for entry in due[:limit]:
            entry.leased_until = now + lease
            items.append(
                OutboxItem(
                    entry.id,
                    entry.webhook,
                    entry.event_id,
                    entry.event_type,
                    entry.body,
                    entry.attempts,
                    entry.created_at,
                )
            )
        return items

    async def delivered(self, item_id: int, now: float) -> None:
        entry = self.entries[item_id]
        assert entry.open, "recorded twice"
        entry.delivered_at, entry.leased_until = now, 0.0
        self._changed.set()

    async def failed(self, item_id: int, now: float, retry_at: float | None, error: str) -> None:
        entry = self.entries[item_id]
        assert entry.open, "recorded after it was closed"
        entry.attempts += 1
        entry.errors.append(error)
        entry.leased_until = 0.0
        if retry_at is None:
            entry.given_up = True
        else:
            entry.due = retry_at
            entry.retries.append((now, retry_at))
        self._changed.set()


class FlakyOutbox(MemoryOutbox):
    """Its database is locked for the first `locked` claims."""

    def __init__(self, locked: int) -> None:
        super().__init__()
        self.locked = locked

    async def claim(self, now: float, limit: int, lease: float) -> list[OutboxItem]:
        if self.locked > 0:
            self.locked -= 1
            raise sqlite3.OperationalError("database is locked")
        return await super().claim(now, limit, lease)


# -- a receiver on loopback ------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    event_id: str
    headers: dict[str, str]
    body: bytes
    signed_at: int  # the t= of its signature
    at: float  # the receiver's clock when it arrived
    status: int  # what the receiver answered


class Receiver:
    """A webhook endpoint: checks each signature with `verify` (401 if wrong), records the request
    and answers the next scripted status (200 once the script is used up, or `always` if set)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.seen: list[Seen] = []
        self.rejected = 0
        self.statuses: deque[int] = deque()
        self.always: int | None = None
        self.hold = 0.0  # seconds before answering
        self.barrier: asyncio.Barrier | None = None  # answers only once this many are in flight
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{TOKEN}"

    @property
    def delivered(self) -> list[str]:
        return [seen.event_id for seen in self.seen if 200 <= seen.status < 300]

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_post("/hook/{token}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != TOKEN:
            return web.Response(status=404)
        body = await request.read()
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not verify(KEY, signature, body, now=self.clock()):
            self.rejected += 1
            return web.Response(status=401)
        if self.barrier is not None:
            try:
                async with asyncio.timeout(1.0):
                    await self.barrier.wait()
            except TimeoutError:
                return web.Response(status=500)
        await asyncio.sleep(self.hold)
        status = self.statuses.popleft() if self.statuses else (self.always or 200)
        signed_at = int(signature.split(",")[0].removeprefix("t="))
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.seen.append(
            Seen(headers[EVENT_ID_HEADER.lower()], headers, body, signed_at, self.clock(), status)
        )
        # A redirect points back here: followed, it would be answered 200.
        location = {"Location": self.url} if 300 <= status < 400 else None
        return web.Response(status=status, headers=location)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def receiver(clock: Clock) -> AsyncIterator[Receiver]:
    receiver = Receiver(clock)
    await receiver.start()
    yield receiver
    await receiver.stop()


def webhook(
    url: str, *, name: str = "ops", secret: str = SECRET, max_age: float = 3 * 86400.0
) -> WebhookConfig:
    return WebhookConfig(name=name, url=SecretStr(url), secret=SecretStr(secret), max_age=max_age)


class FixedJitter(random.Random):
    """Jitter at one end of its range: the bottom (0.5) or the top (1.0)."""

    def __init__(self, top: bool) -> None:
        super().__init__(0)
        self.top = top

    def uniform(self, a: float, b: float) -> float:
        return b if self.top else a


# -- signatures ------------------------------------------------------------------------------

BODY = b'{"type":"cost_alert","spent":"12.50"}'


def test_sign_is_stripes_scheme_and_verifies() -> None:
    header = sign(KEY, T0, BODY)
    expected = hmac.new(KEY, b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify(KEY, header, BODY, now=T0)
    assert verify(KEY, header, BODY, now=T0 + 300)
    assert verify(KEY, header, BODY, now=T0 - 300)
    # While a secret is rotated, a receiver sees a signature under each: one match is enough.
    other = sign(b"the-previous-secret-0123", T0, BODY).split(",")[1]
    assert verify(KEY, f"t={T0},{other},v1={expected}", BODY, now=T0)
    assert verify(KEY, f" t={T0} , v1={expected} , v0=ignored", BODY, now=T0)


def test_verify_rejects_a_tampered_body_a_wrong_secret_and_a_stale_timestamp() -> None:
    header = sign(KEY, T0, BODY)
    assert not verify(KEY, header, BODY.replace(b"12.50", b"1.50"), now=T0)
    assert not verify(b"another-secret-0123456", header, BODY, now=T0)
    assert not verify(KEY, header, BODY, now=T0 + 301)  # replayed later
    assert not verify(KEY, header, BODY, now=T0 - 301)  # from a clock far ahead
    assert not verify(KEY, header, BODY, now=T0 + 61, tolerance=60)
    assert not verify(KEY, header, BODY, now=float("nan"))


_MAC = sign(KEY, T0, BODY).split(",v1=")[1]


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"t={T0}",
        f"v1={_MAC}",
        f"t=,v1={_MAC}",
        f"t=abc,v1={_MAC}",
        f"t={T0}.5,v1={_MAC}",
        f"t=+{T0},v1={_MAC}",
        f"t=١٧٠٠٠٠٠٠٠٠,v1={_MAC}",  # the same number in Arabic-Indic digits, which int() reads
        f"t={'9' * 400},v1={_MAC}",  # too big for float arithmetic
        f"t={T0},t={T0},v1={_MAC}",
        f"t={T0},,v1={_MAC}",
        f"t={T0};v1={_MAC}",
        f"t={T0},v1=",
        f"t={T0},v1={_MAC.upper()}",
        f"t={T0},v1=é{_MAC[1:]}",
        f"t={T0},v1={_MAC}\x00",
    ],
)
def test_verify_returns_false_on_a_malformed_header(header: str) -> None:
    assert not verify(KEY, header, BODY, now=T0)


# -- delivery --------------------------------------------------------------------------------


async def test_delivers_a_signed_event_with_its_headers(
    clock: Clock, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    outbox = MemoryOutbox()
    entry = outbox.add(created_at=clock.now - 5)
    sender = WebhookSender(outbox, [webhook(receiver.url)], http, clock=clock)

    assert await sender.run_once() == 1

    assert entry.delivered_at == clock.now
    assert entry.errors == []
    [seen] = receiver.seen
    assert seen.body == entry.body
    assert seen.signed_at == T0  # signed when sent, not when created
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["user-agent"] == "llm-gateway-webhooks/1"
    assert seen.headers[EVENT_ID_HEADER.lower()] == entry.event_id
    assert seen.headers[EVENT_TYPE_HEADER.lower()] == "cost_alert"
    assert receiver.rejected == 0
    assert await sender.run_once() == 0  # delivered items are not claimed again
    assert len(receiver.seen) == 1


@pytest.mark.parametrize(
    ("status", "delivered"),
    [(200, True), (202, True), (204, True), (302, False), (307, False), (404, False), (500, False)],
)
async def test_any_2xx_is_delivered_and_anything_else_including_a_redirect_failed(
    clock: Clock, http: aiohttp.ClientSession, receiver: Receiver, status: int, delivered: bool
) -> None:
    receiver.statuses.append(status)
    outbox = MemoryOutbox()
    entry = outbox.add(created_at=clock.now)
    sender = WebhookSender(outbox, [webhook(receiver.url)], http, clock=clock)

    assert await sender.run_once() == int(delivered)

    assert entry.open is not delivered
    assert entry.errors == ([] if delivered else [f"HTTP {status}"])
    assert len(receiver.seen) == 1  # a redirect is not followed


async def test_a_receiver_rejects_a_signature_under_another_secret(
    clock: Clock, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    outbox = MemoryOutbox()
    entry = outbox.add(created_at=clock.now)
    sender = WebhookSender(
        outbox, [webhook(receiver.url, secret="not-the-receivers-secret")], http, clock=clock
    )

    assert await sender.run_once() == 0

    assert receiver.rejected == 1
    assert entry.errors == ["HTTP 401"]
    assert entry.open


async def test_503_twice_then_200_is_delivered_on_the_third_attempt(
    clock: Clock, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.statuses.extend([503, 503])
    outbox = MemoryOutbox()
    entry = outbox.add(created_at=clock.now)
    sender = WebhookSender(outbox, [webhook(receiver.url)], http, clock=clock, rng=random.Random(1))

    assert await sender.run_once() == 0
    assert entry.attempts == 1
    assert entry.errors == ["HTTP 503"]
    failed_at, retry_at = entry.retries[-1]
    assert failed_at == clock.now
    assert 0.5 <= retry_at - failed_at <= 1.0

    assert await sender.run_once() == 0  # not due yet: nothing is sent
    assert len(receiver.seen) == 1

    clock.now = retry_at
    assert await sender.run_once() == 0
    assert entry.errors == ["HTTP 503", "HTTP 503"]
    failed_at, retry_at = entry.retries[-1]
    assert 1.0 <= retry_at - failed_at <= 2.0

    clock.now = retry_at
    assert await sender.run_once() == 1
    assert entry.delivered_at == clock.now
    assert entry.attempts == 2  # failed attempts
    assert [seen.status for seen in receiver.seen] == [503, 503, 200]
    assert {seen.event_id for seen in receiver.seen} == {entry.event_id}
    # Each attempt was signed afresh, at the time it was sent.
    assert [seen.signed_at for seen in receiver.seen] == [int(seen.at) for seen in receiver.seen]
    assert receiver.seen[0].signed_at < receiver.seen[2].signed_at


@pytest.mark.parametrize("top", [False, True])
async def test_backoff_doubles_from_one_second_up_to_an_hour_times_the_jitter(
    clock: Clock, http: aiohttp.ClientSession, receiver: Receiver, top: bool
) -> None:
    receiver.always = 500
    outbox = MemoryOutbox()
    before = [0, 1, 3, 11, 12, 40]  # attempts already made
    entries = [outbox.add(created_at=clock.now, attempts=n) for n in before]
    sender = WebhookSender(outbox, [webhook(receiver.url)], http, clock=clock, rng=FixedJitter(top))

    assert await sender.run_once() == 0

    factor = 1.0 if top else 0.5
    delays = [entry.retries[-1][1] - entry.retries[-1][0] for entry in entries]
    assert delays == [d * factor for d in [1.0, 2.0, 8.0, 2048.0, 3600.0, 3600.0]]
    assert [entry.attempts for entry in entries] == [n + 1 for n in before]


async def test_a_receiver_that_was_down_gets_every_event_exactly_once_when_back(
    clock: Clock, http: aiohttp.ClientSession
) -> None:
    receiver = Receiver(clock)
    await receiver.start()
    await receiver.stop()  # its port is now closed
    outbox = MemoryOutbox()
    entries = [outbox.add(created_at=clock.now) for _ in range(5)]
    sender = WebhookSender(outbox, [webhook(receiver.url)], http, clock=clock, rng=random.Random(2))

    assert await sender.run_once() == 0
    assert [entry.errors for entry in entries] == [["ClientConnectorError"]] * 5

    await receiver.start(receiver.port)
    try:
        clock.advance(1.0)  # the first retry is due within a second
        assert await sender.run_once() == 5
        clock.advance(3600)
        assert await sender.run_once() == 0
    finally:
        await receiver.stop()

    assert Counter(receiver.delivered) == Counter({entry.event_id: 1 for entry in entries})
    assert len(receiver.seen) == 5
    assert all(entry.delivered_at == clock.now - 3600 for entry in entries)


async def test_a_batch_is_delivered_concurrently(
    clock: Clock, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.barrier = asyncio.Barrier(3)  # no reply until all three requests have arrived
    outbox = MemoryOutbox()
    for _ in range(3):
        outbox.add(created_at=clock.now)
    sender = WebhookSender(outbox, [webhook(receiver.url)], http, clock=clock, timeout=3.0)

    assert await sender.run_once() == 3


async def test_a_timeout_is_a_failed_attempt(
    clock: Clock, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    receiver.hold = 2.0
    outbox = MemoryOutbox()
    entry = outbox.add(created_at=clock.now)
    sender = WebhookSender(outbox, [webhook(receiver.url)], http, clock=clock, timeout=0.2)

    started = time.monotonic()
    assert await sender.run_once() == 0
    assert time.monotonic() - started < 1.5
    assert entry.errors == ["TimeoutError"]
    assert entry.open
    assert len(entry.retries) == 1


async def test_a_delivery_failing_past_max_age_is_given_up(
    clock: Clock, http: aiohttp.ClientSession, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "llm_gateway.webhooks")
    receiver.always = 503
    outbox = MemoryOutbox()
    old = outbox.add(created_at=clock.now - 9.6)  # any retry (>= 0.5 s) would land past 10 s
    young = outbox.add(created_at=clock.now)
    sender = WebhookSender(outbox, [webhook(receiver.url, max_age=10.0)], http, clock=clock)

    assert await sender.run_once() == 0

    assert old.given_up
    assert old.errors == ["HTTP 503"]
    assert young.open  # the same failure, within max_age: retried
    assert len(young.retries) == 1
    [given_up] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert isinstance(given_up.msg, dict)
    assert given_up.msg["event"] == "webhook_given_up"
    assert given_up.msg["event_id"] == old.event_id
    assert given_up.msg["error"] == "HTTP 503"

    receiver.always = 200
    clock.advance(100)
    assert await sender.run_once() == 1
    assert receiver.delivered == [young.event_id]  # the given-up one is never sent again
    assert [seen.event_id for seen in receiver.seen].count(old.event_id) == 1


async def test_an_event_for_a_webhook_no_longer_configured_is_given_up(
    clock: Clock, http: aiohttp.ClientSession, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "llm_gateway.webhooks")
    outbox = MemoryOutbox()
    gone = outbox.add("gone", created_at=clock.now)
    sender = WebhookSender(outbox, [webhook(receiver.url)], http, clock=clock)

    assert await sender.run_once() == 0

    assert gone.given_up
    assert gone.errors == ["webhook not configured"]
    assert receiver.seen == []
    assert [(r.levelno, r.msg) for r in caplog.records] == [
        (
            logging.ERROR,
            {
                "event": "webhook_given_up",
                "webhook": "gone",
                "event_id": gone.event_id,
                "attempts": 0,
                "error": "webhook not configured",
            },
        )
    ]
    clock.advance(86400)
    assert await sender.run_once() == 0
    assert gone.attempts == 1


async def test_an_outbox_error_is_raised_after_the_rest_of_the_batch_is_delivered(
    clock: Clock, http: aiohttp.ClientSession, receiver: Receiver
) -> None:
    class Broken(MemoryOutbox):
        async def delivered(self, item_id: int, now: float) -> None:
            if item_id == 1:
                raise sqlite3.OperationalError("database is locked")
            await super().delivered(item_id, now)

    outbox = Broken()
    first, second = outbox.add(created_at=clock.now), outbox.add(created_at=clock.now)
    sender = WebhookSender(outbox, [webhook(receiver.url)], http, clock=clock)

    with pytest.raises(sqlite3.OperationalError):
        await sender.run_once()

    assert second.delivered_at == clock.now
    assert first.open  # its lease expires and it is sent again: receivers de-duplicate
    assert sorted(receiver.delivered) == sorted([first.event_id, second.event_id])


async def test_no_url_token_or_secret_in_logs_or_stored_errors(
    clock: Clock, http: aiohttp.ClientSession, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    closed = Receiver(clock)
    await closed.start()
    await closed.stop()
    webhooks = [
        webhook(receiver.url, max_age=10.0),
        webhook(closed.url, name="down"),
        # An invalid port: aiohttp's error message quotes the whole URL.
        webhook(f"http://127.0.0.1:99999/hook/{TOKEN}?token={TOKEN}", name="bad"),
    ]
    outbox = MemoryOutbox()
    entries = [
        outbox.add(created_at=clock.now),
        outbox.add(created_at=clock.now - 9.9),
        outbox.add("down", created_at=clock.now),
        outbox.add("bad", created_at=clock.now),
        outbox.add("gone", created_at=clock.now),
    ]
    receiver.statuses.extend([503, 503])
    sender = WebhookSender(outbox, webhooks, http, clock=clock)

    assert await sender.run_once() == 0
    clock.advance(5)
    assert await sender.run_once() == 1

    errors = [error for entry in entries for error in entry.errors]
    # The retries of "down" and "bad" were due again after 5 s.
    assert sorted(errors) == sorted(
        ["HTTP 503", "HTTP 503", "webhook not configured"]
        + ["ClientConnectorError", "InvalidUrlClientError"] * 2
    )
    events = {r.msg["event"] for r in caplog.records if isinstance(r.msg, dict)}
    assert events == {"webhook_failed", "webhook_given_up", "webhook_delivered"}
    formatter = JsonFormatter()
    for text in [*errors, *(formatter.format(r) for r in caplog.records), caplog.text]:
        assert TOKEN not in text
        assert SECRET not in text
        assert "127.0.0.1" not in text


# -- the background loop ---------------------------------------------------------------------


async def test_the_loop_delivers_promptly_on_wake_and_stops_on_close(http: aiohttp.ClientSession) -> None:
    receiver = Receiver(time.time)
    await receiver.start()
    outbox = MemoryOutbox()
    sender = WebhookSender(outbox, [webhook(receiver.url)], http, poll_interval=60.0, batch=2)
    try:
        sender.start()
        await asyncio.sleep(0.05)  # the first poll found nothing: the loop now waits 60 s
        entries = [outbox.add(created_at=time.time()) for _ in range(5)]  # more than one batch
        started = time.monotonic()
        sender.wake()
        async with asyncio.timeout(2.0):
            await outbox.until(lambda: not any(entry.open for entry in entries))
        assert time.monotonic() - started < 2.0
        assert Counter(receiver.delivered) == Counter({entry.event_id: 1 for entry in entries})

        await sender.close()
        await sender.close()  # idempotent
        late = outbox.add(created_at=time.time())
        sender.wake()
        await asyncio.sleep(0.1)
        assert late.open
        assert late.event_id not in receiver.delivered
    finally:
        await sender.close()
        await receiver.stop()


async def test_the_loop_survives_outbox_errors(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "llm_gateway.webhooks")
    receiver = Receiver(time.time)
    await receiver.start()
    outbox = FlakyOutbox(locked=3)
    entry = outbox.add(created_at=time.time())
    sender = WebhookSender(outbox, [webhook(receiver.url)], http, poll_interval=0.02)
    try:
        sender.start()
        async with asyncio.timeout(2.0):
            await outbox.until(lambda: not entry.open)
    finally:
        await sender.close()
        await receiver.stop()

    assert receiver.delivered == [entry.event_id]
    locked = [
        r for r in caplog.records if isinstance(r.msg, dict) and r.msg["event"] == "webhook_outbox_error"
    ]
    assert len(locked) == 3
    assert all(r.levelno == logging.ERROR and r.exc_info for r in locked)
