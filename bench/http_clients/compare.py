"""The upstream HTTP client, side by side: each candidate POSTs the gateway's upstream request to
the bench's Go mock (OpenAI wire format) from one asyncio process, 16 calls in flight, and the
process's CPU time per call (every thread, so a client's own runtime threads count) and the
throughput are printed. Run from a virtualenv holding the candidates (bench/http_clients/README.md).

    python bench/http_clients/compare.py --mock http://127.0.0.1:PORT/v1 [--calls 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

BODY = json.dumps(
    {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}], "stream": False}
).encode()
HEADERS = {"Authorization": "Bearer sk-bench-upstream-key", "Content-Type": "application/json"}

Post = Callable[[], Awaitable[Any]]


async def aiohttp_client(url: str) -> tuple[Post, Callable[[], Awaitable[None]]]:
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=4000, limit_per_host=0, keepalive_timeout=30),
        timeout=aiohttp.ClientTimeout(total=None),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    timeout = aiohttp.ClientTimeout(total=None, connect=15, sock_connect=5, sock_read=60)

    async def post() -> Any:
        async with session.post(url, data=BODY, headers=HEADERS, timeout=timeout) as response:
            body = await response.read()
            assert response.status == 200
        return json.loads(body)

    return post, session.close


async def rnet_client(url: str) -> tuple[Post, Callable[[], Awaitable[None]]]:
    import rnet

    client = rnet.Client()

    async def post() -> Any:
        response = await client.post(url, body=BODY, headers=HEADERS, read_timeout=60)
        body = await response.bytes()
        assert response.status.as_int() == 200
        return json.loads(body)

    async def close() -> None:
        return None

    return post, close


async def pyreqwest_client(url: str) -> tuple[Post, Callable[[], Awaitable[None]]]:
    from pyreqwest.client import ClientBuilder

    client = ClientBuilder().build()

    async def post() -> Any:
        response = await client.post(url).headers(HEADERS).body_bytes(BODY).build().send()
        body = await response.bytes()
        assert response.status == 200
        return json.loads(bytes(body))

    return post, client.close


async def curl_cffi_client(url: str) -> tuple[Post, Callable[[], Awaitable[None]]]:
    from curl_cffi.requests import AsyncSession

    session = AsyncSession(max_clients=64)

    async def post() -> Any:
        response = await session.post(url, data=BODY, headers=HEADERS, timeout=60)
        assert response.status_code == 200
        return json.loads(response.content)

    return post, session.close


async def httpx_client(url: str) -> tuple[Post, Callable[[], Awaitable[None]]]:
    import httpx

    client = httpx.AsyncClient(limits=httpx.Limits(max_connections=4000), timeout=60)

    async def post() -> Any:
        response = await client.post(url, content=BODY, headers=HEADERS)
        assert response.status_code == 200
        return json.loads(response.content)

    return post, client.aclose


CLIENTS = {
    "aiohttp": aiohttp_client,
    "rnet": rnet_client,
    "pyreqwest": pyreqwest_client,
    "curl_cffi": curl_cffi_client,
    "httpx": httpx_client,
}


async def measure(name: str, url: str, calls: int, concurrency: int) -> tuple[float, float]:
    post, close = await CLIENTS[name](url)
    for _ in range(200):  # connections opened, code warm
        await post()
    left = calls

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await post()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await close()
    return cpu / calls * 1e6, calls / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mock", required=True, help="the mock's OpenAI base URL")
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", default=",".join(CLIENTS))
    args = parser.parse_args()
    url = f"{args.mock.rstrip('/')}/chat/completions"
    names = args.clients.split(",")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for _ in range(args.rounds):  # alternated, so the machine's drift weighs on every client
        for name in names:
            results[name].append(asyncio.run(measure(name, url, args.calls, args.concurrency)))
    print("| Client | CPU µs per call (min / median of rounds) | Calls per second (median) |")
    print("| --- | --- | --- |")
    for name, runs in results.items():
        cpus = sorted(cpu for cpu, _ in runs)
        rates = sorted(rate for _, rate in runs)
        print(f"| {name} | {cpus[0]:.0f} / {cpus[len(cpus) // 2]:.0f} | {rates[len(rates) // 2]:.0f} |")


if __name__ == "__main__":
    main()
