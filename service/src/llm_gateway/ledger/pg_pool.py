"""A small asyncpg pool of a store's own, opened on first use: a database that is down when the
gateway starts is tried again by the next use. Small, because every worker process of every
replica has one; named, so an operator sees in `pg_stat_activity` what holds each connection."""

from __future__ import annotations

import asyncio

import asyncpg


class LazyPool:
    def __init__(self, url: str, *, timeout: float, size: int, name: str) -> None:
        self._url = url
        self._timeout = timeout
        self._size = size
        self._name = name
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()

    async def get(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                # `command_timeout` bounds a wait on a row lock as well as a slow query.
                self._pool = await asyncpg.create_pool(
                    self._url,
                    min_size=1,
                    max_size=self._size,
                    timeout=self._timeout,
                    command_timeout=self._timeout,
                    max_inactive_connection_lifetime=60,
                    server_settings={"application_name": self._name},
                )
            return self._pool

    async def close(self) -> None:
        """Closes the pool, waiting at most the timeout for connections in use to be given back."""
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self._timeout)
            except TimeoutError:
                pool.terminate()
