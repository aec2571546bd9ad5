"""Ledger stores on both backends for the tests, and call records to fill them.

`backend_url` is parametrized over SQLite (a file in the test's temporary directory) and
PostgreSQL (a database of its own on the session's throwaway cluster, tests/postgres.py), so one
test function checks both backends alike.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from llm_gateway.domain.messages import Caller
from llm_gateway.domain.results import Usage
from llm_gateway.gateway.outcome import Attempt, Latency
from llm_gateway.gateway.record import CallRecord, Principal
from llm_gateway.ledger import LedgerStore, open_store, parse_url
from llm_gateway.pricing import Cost, PricingStatus
from tests.postgres import cluster

BACKENDS = ("sqlite", "postgresql")
# A fixed instant (2025-03-14 15:09:26 UTC) whole in microseconds, so times read back compare equal.
T0 = 1_741_964_966.0
_ids = itertools.count(1)


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    return cluster().new_database()


@pytest.fixture
async def store(backend_url: str) -> AsyncIterator[LedgerStore]:
    opened = open_store(parse_url(backend_url), timeout=5.0)
    await opened.migrate()
    try:
        yield opened
    finally:
        await opened.close()


def record(
    *,
    at: float = T0,
    key: str = "team-a",
    admin: bool = False,
    user: str = "alice",
    project: str = "search",
    tenant: str = "acme",
    tags: Mapping[str, str] | None = None,
    model: str = "openai:gpt-4o-mini",
    status: str = "OK",
    reason: str = "",
    cost: Decimal | None = Decimal("0.000123"),
    usage: Usage | None = None,
    latency: float | None = 0.25,
    first_token: float | None = None,
    streamed: bool = False,
    dry_run: bool = False,
    attempts: Sequence[Attempt] = (),
    currency: str = "USD",
    call_id: str | None = None,
    task_type: str = "",
) -> CallRecord:
    """A finished call; `cost` is its total (None: the call was never priced)."""
    provider = model.partition(":")[0]
    priced = None
    if cost is not None:
        priced = Cost(
            status=PricingStatus.PRICED, source="config", currency=currency, output=cost, total=cost
        )
    return CallRecord(
        id=call_id or f"chat_{next(_ids):024x}",
        request_id=f"req-{next(_ids)}",
        started_at=at,
        ended_at=round((at + (latency or 0.0)) * 1e6) / 1e6,
        principal=Principal(key, admin),
        caller=Caller(user=user, project=project, tenant=tenant, tracking_id=""),
        tags=dict(tags or {}),
        requested_model=model.partition(":")[2],
        model=model,
        provider=provider,
        status=status,
        reason=reason,
        streamed=streamed,
        dry_run=dry_run,
        fallback_used=False,
        usage=usage
        if usage is not None
        else (Usage(prompt_tokens=10, completion_tokens=5) if cost is not None else None),
        cost=priced,
        latency=None
        if latency is None
        else Latency(
            total=latency, time_to_first_byte=None, time_to_first_token=first_token, upstream=latency / 2
        ),
        attempts=tuple(attempts),
        task_type=task_type,
    )
