"""The floor: a grpc.aio server with the gateway's own contract that does no work at all.

`Chat` answers a prebuilt reply of the same shape and size as the gateway's; `ChatStream` sends a
prebuilt start, eight text deltas and a finish. Whatever this costs, every Python gRPC service on the
machine pays; the gateway's overhead is what it spends above it. It runs with the gateway's worker
model (N processes sharing the port) so the two compare process for process.

With `--upstream URL` it is the second floor: each `Chat` also makes the one upstream call a
gateway makes (the same OpenAI request body, POSTed with the gateway's own pooled HTTP client and
`post_json`, the reply parsed) before answering the prebuilt reply. The gap between the two floors
is the upstream client's share; the gap between this one and the gateway is the gateway's own code.

    python bench/noop_server.py --port 50099 --workers 2 [--upstream http://127.0.0.1:8000/v1]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import signal
import sys
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import grpc
from google.protobuf import duration_pb2

from llm_gateway.config.schema import TimeoutConfig
from llm_gateway.providers.errors import UpstreamContext
from llm_gateway.providers.http import client_timeout, create_http_client, post_json
from llm_gateway.workers import run_workers, watch_lifeline
from llmgateway.v1 import (
    accounting_pb2,
    catalog_pb2,
    chat_pb2,
    content_pb2,
    gateway_service_pb2_grpc,
)

if TYPE_CHECKING:
    from llm_gateway.server.context import Context

_TEXT = "The quick brown fox jumps over the lazy dog."
_USAGE = accounting_pb2.Usage(prompt_tokens=20, completion_tokens=10, total_tokens=30)
_COST = accounting_pb2.Cost(
    status=accounting_pb2.PRICING_STATUS_PRICED,
    currency="USD",
    input="0.00000300",
    output="0.00000600",
    total="0.00000900",
)
_LATENCY = accounting_pb2.Latency(total=duration_pb2.Duration(nanos=1_000_000))
_REPLY = chat_pb2.ChatResponse(
    id="chatcmpl-noop",
    model="bench",
    provider="upstream",
    provider_model="mock-model",
    message=content_pb2.Message(role=content_pb2.ROLE_ASSISTANT, content=[content_pb2.Part(text=_TEXT)]),
    finish_reason=chat_pb2.FINISH_REASON_STOP,
    usage=_USAGE,
    cost=_COST,
    latency=_LATENCY,
)
_EVENTS = [
    chat_pb2.ChatStreamResponse(start=chat_pb2.StreamStart(id="chatcmpl-noop", model="bench")),
    *(chat_pb2.ChatStreamResponse(text_delta=chat_pb2.TextDelta(text="word ")) for _ in range(8)),
    chat_pb2.ChatStreamResponse(
        finish=chat_pb2.StreamFinish(
            finish_reason=chat_pb2.FINISH_REASON_STOP, usage=_USAGE, cost=_COST, latency=_LATENCY
        )
    ),
]


# What the gateway's OpenAI adapter sends for the bench's call.
_UPSTREAM_BODY = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], "stream": False}
).encode()
_UPSTREAM_HEADERS = {"Authorization": "Bearer sk-bench-upstream-key", "Content-Type": "application/json"}


class NoopServicer(gateway_service_pb2_grpc.GatewayServiceServicer):
    def __init__(self, upstream: str | None) -> None:
        self._url = f"{upstream.rstrip('/')}/chat/completions" if upstream else None
        self._http: aiohttp.ClientSession | None = None
        self._timeouts = client_timeout(TimeoutConfig())
        self._ctx = UpstreamContext("openai", "gpt-4o-mini")

    async def Chat(self, request: chat_pb2.ChatRequest, context: Context) -> chat_pb2.ChatResponse:  # noqa: N802
        if self._url is not None:
            if self._http is None:
                self._http = create_http_client()
            await post_json(
                self._http,
                self._url,
                _UPSTREAM_BODY,
                headers=_UPSTREAM_HEADERS,
                timeouts=self._timeouts,
                ctx=self._ctx,
            )
        return _REPLY

    async def ChatStream(  # noqa: N802
        self, request: chat_pb2.ChatStreamRequest, context: Context
    ) -> AsyncIterator[chat_pb2.ChatStreamResponse]:
        for event in _EVENTS:
            yield event

    async def EstimateCost(  # noqa: N802
        self, request: catalog_pb2.EstimateCostRequest, context: Context
    ) -> catalog_pb2.EstimateCostResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the floor")

    async def ListModels(  # noqa: N802
        self, request: catalog_pb2.ListModelsRequest, context: Context
    ) -> catalog_pb2.ListModelsResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the floor")


async def serve(host: str, port: int, ready: Connection, lifeline: Connection, upstream: str | None) -> None:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 1)])
    gateway_service_pb2_grpc.add_GatewayServiceServicer_to_server(NoopServicer(upstream), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    ready.send(bound)
    ready.close()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    watch_lifeline(lifeline, stop.set)
    await stop.wait()
    await server.stop(1)


def worker(
    index: int, host: str, port: int, ready: Connection, lifeline: Connection, upstream: str | None = None
) -> None:
    asyncio.run(serve(host, port, ready, lifeline, upstream))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", default=None)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--upstream", help="the mock upstream's OpenAI base URL: one call per Chat")
    args = parser.parse_args()
    port_file = Path(args.port_file) if args.port_file else None
    target = functools.partial(worker, upstream=args.upstream)
    return run_workers(target, count=args.workers, host=args.host, port=args.port, port_file=port_file)


if __name__ == "__main__":
    sys.exit(main())
