"""Fixtures for the tests against a live gateway, whose address and API key come from the
environment (`make test-python-client` at the repository root starts one and sets both)."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llmgateway import AsyncConnection, connect_async

# The examples are scripts, not a package: make `import quickstart` work.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

HOW_TO_RUN = (
    "run these tests against a live gateway with `make test-python-client` at the repository root "
    "(or `scripts/with-gateway.sh .venv/bin/pytest clients/python/tests`)"
)


def _required_env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        pytest.fail(f"{name} is not set: {HOW_TO_RUN}", pytrace=False)
    return value


@pytest.fixture(scope="session")
def address() -> str:
    """The live gateway, "host:port", plaintext."""
    return _required_env("LLM_GATEWAY_ADDR")


@pytest.fixture(scope="session")
def api_key() -> str:
    """A key the live gateway accepts (it runs with authentication on)."""
    return _required_env("LLM_GATEWAY_API_KEY")


@pytest.fixture(scope="session")
def admin_key() -> str | None:
    """A key that may create budgets (LLM_GATEWAY_ADMIN_KEY), when the API key may not; None: the
    tests that need one try the API key."""
    return os.environ.get("LLM_GATEWAY_ADMIN_KEY") or None


@pytest.fixture(scope="session")
async def gateway(address: str, api_key: str) -> AsyncIterator[AsyncConnection]:
    """An asyncio connection that sends the API key on every call."""
    async with connect_async(address, api_key) as connection:
        yield connection


@pytest.fixture(scope="session")
async def anonymous(address: str) -> AsyncIterator[AsyncConnection]:
    """An asyncio connection without an API key."""
    async with connect_async(address) as connection:
        yield connection
