"""What every fake provider server shares: a loopback aiohttp server on a free port, the requests
it received, the replies scripted for it, and writing a stream frame by frame (or dropping the
connection midway, as a failing upstream would)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Self, TypeVar

from aiohttp import web


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: dict[str, Any]
    query: dict[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)  # when it arrived


ReplyT = TypeVar("ReplyT")


class FakeServer(Generic[ReplyT]):
    """Serves POST on `routes`; each request gets the next scripted reply, or `_echo(body)`."""

    def __init__(self, routes: Sequence[str]) -> None:
        self.requests: list[Recorded] = []
        self.disconnects = 0  # replies the client left before they ended (streaming or hanging)
        self.in_flight = 0  # requests being answered now
        self.most_in_flight = 0  # the most at once so far
        self.port = 0
        self._routes = tuple(routes)
        self._script: deque[ReplyT] = deque()
        self._runner: web.AppRunner | None = None
        self._arrived = asyncio.Event()

    def script(self, *replies: ReplyT) -> None:
        self._script.extend(replies)

    async def start(self) -> None:
        app = web.Application()
        for route in self._routes:
            app.router.add_post(route, self._handle)
        self._extra_routes(app)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    def _extra_routes(self, app: web.Application) -> None:
        """Where a fake adds routes of its own (any method, its own handlers) beside the scripted ones."""

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self._record(request, body)
        reply = self._next_reply(body)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            return await self._reply(request, reply)
        finally:
            self.in_flight -= 1

    def _record(self, request: web.Request, body: dict[str, Any]) -> None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(Recorded(request.method, request.path, headers, body, dict(request.query)))
        self._arrived.set()

    def _next_reply(self, body: dict[str, Any]) -> ReplyT:
        """The next scripted reply, or the echo of `body` when none is left."""
        return self._script.popleft() if self._script else self._echo(body)

    def _echo(self, body: dict[str, Any]) -> ReplyT:
        raise NotImplementedError

    async def _reply(self, request: web.Request, reply: ReplyT) -> web.StreamResponse:
        raise NotImplementedError

    def pending(self) -> int:
        """Scripted replies not sent yet."""
        return len(self._script)

    async def received(self, count: int, within: float = 5.0) -> None:
        """Waits until at least `count` requests have arrived (TimeoutError after `within` s)."""
        async with asyncio.timeout(within):
            while len(self.requests) < count:
                self._arrived.clear()
                await self._arrived.wait()

    async def disconnected(self, within: float = 2.0) -> float | None:
        """Seconds until a client left a reply (`disconnects`), or None if none did within `within`."""
        started = time.perf_counter()
        while time.perf_counter() - started < within:
            if self.disconnects:
                return time.perf_counter() - started
            await asyncio.sleep(0.002)
        return None

    async def _hang(self, seconds: float) -> None:
        """Sends nothing for `seconds`, as an upstream that hangs; a client that gives up first is
        counted in `disconnects` (aiohttp cancels the handler when its connection closes)."""
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.disconnects += 1
            raise

    async def _stream(
        self,
        request: web.Request,
        response: web.StreamResponse,
        frames: Iterable[bytes],
        *,
        chunk_delay: float,
        drop: bool,
    ) -> web.StreamResponse:
        """Writes `frames` one by one; with `drop`, closes the connection after the last of them
        instead of ending the response."""
        await response.prepare(request)
        try:
            for frame in frames:
                await response.write(frame)
                if chunk_delay:
                    await asyncio.sleep(chunk_delay)
        except (ConnectionResetError, asyncio.CancelledError):
            self.disconnects += 1
            raise
        if drop:
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write_eof()
        return response


def last_user_text(body: dict[str, Any]) -> str:
    """The text of the last user message, its content a string or a list of text parts."""
    for message in reversed(body.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return ""


def words(text: str) -> list[str]:
    """`text` in stream-sized pieces, each word with its following space."""
    split = text.split(" ")
    return [w + " " for w in split[:-1]] + split[-1:]
