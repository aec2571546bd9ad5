"""One HTTP server candidate for the gateway's OpenAI-compatible front door, embedded as the gateway would.

Every candidate runs in ONE process on ONE standard asyncio event loop (no uvloop), next to an idle
`grpc.aio` server on the same loop, the way the gateway would serve HTTP beside its gRPC server:

    aiohttp            aiohttp.web AppRunner + TCPSite started on the running loop
    uvicorn-httptools  Starlette app, `uvicorn.Server(config).serve()` awaited on the running loop
    uvicorn-h11        the same with uvicorn's pure-Python h11 protocol
    uvicorn-raw        uvicorn (httptools) serving a bare ASGI app, no Starlette
    granian-asgi       Starlette app, `granian.server.embed.Server(interface="asgi").serve()` on the loop
    granian-asgi-raw   granian embedded serving the bare ASGI app, no Starlette
    granian-rsgi       a plain RSGI app, `granian.server.embed.Server(interface="rsgi").serve()` on the loop

Routes (identical work in every candidate, so the framework is what differs):
    POST /v1/chat/completions   ~1 KB OpenAI chat request -> ~1 KB chat.completion (stdlib json)
                                with "stream": true -> SSE: 8 chat.completion.chunk events, then [DONE]
    GET  /health                small JSON

Usage: servers.py serve CANDIDATE --port N [--reuse-port] [--ready-file F]
       servers.py grpc-ping HOST:PORT      (a client check that the in-process gRPC server answers)
The frameworks are imported lazily, so measure.py can import the payload helpers with a bare python3.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

CANDIDATES = (
    "aiohttp",
    "uvicorn-httptools",
    "uvicorn-h11",
    "uvicorn-raw",
    "granian-asgi",
    "granian-asgi-raw",
    "granian-rsgi",
)
SSE_CHUNKS = 8
GRPC_PING = "/bench.Ping/Ping"

# --- the payloads, the same for every candidate -------------------------------------------------

_SYSTEM = (
    "You are a concise assistant for an internal engineering team. Answer in plain English, cite the "
    "relevant configuration keys when you can, and say so when you are not sure about something."
)
_USER = (
    "Our gateway routes chat requests to several providers. Explain, in a few sentences, how a client "
    "should choose between streaming and unary calls, what the trade-offs are for latency and cost "
    "accounting, and what it should do when a stream is interrupted half-way through a long answer. "
    "Assume the client is a Python service behind a load balancer with a 60 second idle timeout, that it "
    "retries on 5xx answers, and that our finance team reconciles usage against provider invoices daily."
)
_ANSWER = (
    "Use streaming when a person is waiting on the answer: the first tokens arrive in a few hundred "
    "milliseconds and the perceived latency drops, while the total time is about the same. Use unary "
    "calls for batch work and tools, where the whole answer is needed before anything happens and a "
    "single response is simpler to retry, log and account for. Cost is the same either way; a stream "
    "reports usage in its final chunk, so the client should keep reading until [DONE]. If a stream is "
    "cut off, treat the partial text as unreliable, retry the whole request with the same idempotency "
    "key, and let the gateway deduplicate the charge."
)


def chat_request(*, stream: bool = False) -> dict[str, Any]:
    """The ~1 KB OpenAI chat request every load generator sends."""
    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": _USER}],
        "temperature": 0.2,
        "top_p": 1,
        "max_tokens": 256,
        "user": "bench-user-0001",
        "metadata": {
            "team": "platform",
            "purpose": "http-bench",
            "trace": "0af7651916cd43dd8448eb211c80319c",
        },
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def gateway_work(request: dict[str, Any]) -> tuple[int, int]:
    """A fixed slice of pure-Python work standing in for auth, routing and validation.

    Walks the parsed request (counting characters and mixing every key and string into a checksum), so
    it scales with the body like the gateway's own checks would. Returns (characters, checksum).
    """
    chars, checksum = 0, 0
    stack: list[Any] = [request]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                checksum = (checksum * 31 + len(key)) & 0xFFFFFFFF
                stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            chars += len(node)
            for ch in node[:64]:
                checksum = (checksum * 131 + ord(ch)) & 0xFFFFFFFF
    return chars, checksum


def _completion_id(checksum: int) -> str:
    return f"chatcmpl-{checksum:08x}{int(time.time() * 1000) & 0xFFFFFFFF:08x}"


def completion(request: dict[str, Any]) -> bytes:
    """The ~1 KB chat.completion reply, serialized with the stdlib json."""
    chars, checksum = gateway_work(request)
    reply = {
        "id": _completion_id(checksum),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "gpt-4o-mini"),
        "system_fingerprint": "fp_bench0001",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": _ANSWER, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": chars // 4, "completion_tokens": 118, "total_tokens": chars // 4 + 118},
    }
    return json.dumps(reply).encode()


def completion_chunks(request: dict[str, Any]) -> Iterator[bytes]:
    """The SSE events of a streamed completion: SSE_CHUNKS chat.completion.chunk events, then [DONE]."""
    chars, checksum = gateway_work(request)
    ident, created, model = _completion_id(checksum), int(time.time()), request.get("model", "gpt-4o-mini")
    step = len(_ANSWER) // SSE_CHUNKS + 1
    for index in range(SSE_CHUNKS):
        delta: dict[str, Any] = {"content": _ANSWER[index * step : (index + 1) * step]}
        if index == 0:
            delta["role"] = "assistant"
        last = index == SSE_CHUNKS - 1
        chunk: dict[str, Any] = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_bench0001",
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": "stop" if last else None}
            ],
        }
        if last:
            chunk["usage"] = {"prompt_tokens": chars // 4, "completion_tokens": 118}
        yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


HEALTH = json.dumps({"status": "ok"}).encode()
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# --- the apps -------------------------------------------------------------------------------------


def aiohttp_app() -> Any:
    from aiohttp import web

    async def chat(request: web.Request) -> web.StreamResponse:
        body = json.loads(await request.read())
        if not body.get("stream"):
            return web.Response(body=completion(body), content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **SSE_HEADERS})
        await response.prepare(request)
        for event in completion_chunks(body):
            await response.write(event)  # each event goes to the transport as it is produced
        await response.write_eof()
        return response

    async def health(_: web.Request) -> web.Response:
        return web.Response(body=HEALTH, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    return app


def starlette_app() -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    async def chat(request: Request) -> Response:
        body = json.loads(await request.body())
        if not body.get("stream"):
            return Response(completion(body), media_type="application/json")

        async def events() -> AsyncIterator[bytes]:
            for event in completion_chunks(body):
                yield event  # one ASGI http.response.body message per event, more_body=True

        return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)

    async def health(_: Request) -> Response:
        return Response(HEALTH, media_type="application/json")

    routes = [Route("/v1/chat/completions", chat, methods=["POST"]), Route("/health", health)]
    return Starlette(routes=routes)


class RawASGIApp:
    """The same routes as a bare ASGI callable (no framework), to split Starlette's cost from the server's."""

    JSON: ClassVar[list[tuple[bytes, bytes]]] = [(b"content-type", b"application/json")]
    SSE: ClassVar[list[tuple[bytes, bytes]]] = [
        (b"content-type", b"text/event-stream"),
        *((k.lower().encode(), v.encode()) for k, v in SSE_HEADERS.items()),
    ]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/v1/chat/completions" and scope["method"] == "POST":
            chunks, more = [], True
            while more:
                message = await receive()
                chunks.append(message.get("body", b""))
                more = message.get("more_body", False)
            body = json.loads(b"".join(chunks))
            if not body.get("stream"):
                await self.reply(send, 200, completion(body))
                return
            await send({"type": "http.response.start", "status": 200, "headers": self.SSE})
            for event in completion_chunks(body):
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        elif scope["path"] == "/health":
            await self.reply(send, 200, HEALTH)
        else:
            await self.reply(send, 404, b'{"error":"not found"}')

    async def reply(self, send: Any, status: int, body: bytes) -> None:
        headers = [*self.JSON, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class RSGIApp:
    """The same routes on granian's RSGI interface, without a framework (routing by hand)."""

    JSON: ClassVar[list[tuple[str, str]]] = [("content-type", "application/json")]
    SSE: ClassVar[list[tuple[str, str]]] = [
        ("content-type", "text/event-stream"),
        *((k.lower(), v) for k, v in SSE_HEADERS.items()),
    ]

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        if scope.path == "/v1/chat/completions" and scope.method == "POST":
            body = json.loads(await proto())
            if not body.get("stream"):
                proto.response_bytes(200, self.JSON, completion(body))
                return
            transport = proto.response_stream(200, self.SSE)
            for event in completion_chunks(body):
                await transport.send_bytes(event)
        elif scope.path == "/health":
            proto.response_bytes(200, self.JSON, HEALTH)
        else:
            proto.response_bytes(404, self.JSON, b'{"error":"not found"}')


# --- running a candidate on the current loop -------------------------------------------------------

Stopper = Callable[[], Awaitable[None]]


def reuse_port_socket(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP, not the default 0: asyncio only sets TCP_NODELAY on accepted sockets whose proto is
    # IPPROTO_TCP, and without it uvicorn's separate header/body writes meet Nagle + delayed ACK (40 ms).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def start_aiohttp(host: str, port: int, reuse_port: bool) -> Stopper:
    from aiohttp import web

    runner = web.AppRunner(aiohttp_app(), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_port=reuse_port or None, backlog=2048).start()
    return runner.cleanup


async def start_uvicorn(host: str, port: int, reuse_port: bool, http: str, app: Any) -> Stopper:
    import uvicorn

    class EmbeddedServer(uvicorn.Server):  # type: ignore[misc]
        # Server.serve() replaces the process's SIGINT/SIGTERM handlers with signal.signal() for its
        # lifetime; a host process that owns its signals (the gateway does) turns that off.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="asyncio",
        http=http,
        ws="none",
        lifespan="off",
        access_log=False,
        log_level="warning",
        backlog=2048,
    )
    server = EmbeddedServer(config)
    sockets = [reuse_port_socket(host, port)] if reuse_port else None
    task = asyncio.create_task(server.serve(sockets=sockets))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)

    async def stop() -> None:
        server.should_exit = True
        await task

    return stop


async def start_granian(host: str, port: int, interface: str, app: Any) -> Stopper:
    from granian.constants import HTTPModes, Interfaces
    from granian.log import LogLevels
    from granian.server.embed import Server

    server = Server(
        app,
        address=host,
        port=port,
        interface=Interfaces.ASGINL if interface == "asgi" else Interfaces.RSGI,  # ASGINL: no lifespan
        http=HTTPModes.http1,
        websockets=False,
        backlog=2048,
        log_level=LogLevels.warning,
    )
    task = asyncio.create_task(server.serve())
    await asyncio.sleep(0.2)  # the embedded server has no "started" flag; the caller polls /health
    if task.done():
        task.result()

    async def stop() -> None:
        server.stop()
        await task

    return stop


async def start_candidate(name: str, host: str, port: int, reuse_port: bool) -> Stopper:
    if name == "aiohttp":
        return await start_aiohttp(host, port, reuse_port)
    if name == "uvicorn-raw":
        return await start_uvicorn(host, port, reuse_port, "httptools", RawASGIApp())
    if name.startswith("uvicorn-"):
        return await start_uvicorn(host, port, reuse_port, name.removeprefix("uvicorn-"), starlette_app())
    # The Rust listener granian builds on Linux sets SO_REUSEPORT itself (that is how its own worker
    # processes share a port), so --reuse-port needs nothing for granian.
    if name == "granian-asgi":
        return await start_granian(host, port, "asgi", starlette_app())
    if name == "granian-asgi-raw":
        return await start_granian(host, port, "asgi", RawASGIApp())
    if name == "granian-rsgi":
        return await start_granian(host, port, "rsgi", RSGIApp())
    raise SystemExit(f"unknown candidate {name!r}; one of {', '.join(CANDIDATES)}")


async def start_grpc(host: str) -> tuple[Any, int]:
    """An idle grpc.aio server with one raw-bytes unary method, on the same loop as the HTTP server."""
    import grpc

    async def ping(request: bytes, _: Any) -> bytes:
        return b"pong:" + request

    handler = grpc.method_handlers_generic_handler(
        "bench.Ping", {"Ping": grpc.unary_unary_rpc_method_handler(ping)}
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"{host}:0")
    await server.start()
    return server, port


def announce(ready: dict[str, Any], ready_file: Path | None) -> None:
    if ready_file:
        ready_file.write_text(json.dumps(ready))
    print(json.dumps(ready), flush=True)


async def serve(name: str, host: str, port: int, reuse_port: bool, ready_file: Path | None) -> None:
    loop = asyncio.get_running_loop()
    stop_event = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop_event.set)
    grpc_server, grpc_port = await start_grpc(host)
    stop_http = await start_candidate(name, host, port, reuse_port)
    ready = {
        "candidate": name,
        "pid": os.getpid(),
        "http": port,
        "grpc": grpc_port,
        "loop": type(loop).__module__ + "." + type(loop).__name__,
        "threads": len(os.listdir("/proc/self/task")),  # OS threads, Rust ones included
    }
    announce(ready, ready_file)
    await stop_event.wait()
    await stop_http()
    await grpc_server.stop(1)


def grpc_ping(address: str) -> None:
    import grpc

    with grpc.insecure_channel(address) as channel:
        call = channel.unary_unary(GRPC_PING, request_serializer=None, response_deserializer=None)
        reply = call(b"hi", timeout=5)
    assert reply == b"pong:hi", reply
    print(reply.decode())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve")
    run.add_argument("candidate", choices=CANDIDATES)
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--reuse-port", action="store_true", help="bind with SO_REUSEPORT (several processes)")
    run.add_argument("--ready-file", type=Path)
    ping = sub.add_parser("grpc-ping")
    ping.add_argument("address")
    args = parser.parse_args()
    if args.command == "grpc-ping":
        grpc_ping(args.address)
        return
    # The gateway's loop: the standard asyncio one, shared with grpc.aio (never uvloop).
    asyncio.run(serve(args.candidate, args.host, args.port, args.reuse_port, args.ready_file))
    sys.exit(0)


if __name__ == "__main__":
    main()
