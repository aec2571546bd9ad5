"""A provider's own batch API, as a batch in provider mode uses it: many requests submitted as one
upstream job, answered within the provider's window at its batch price.

Each request is a `BatchLine`: an id of the gateway's choosing (upstream ids have their own rules)
and the body the live endpoint would get, built by the adapter's own request builder. The results
come back per line, each reply in the live endpoint's shape (parsed by the adapter's own parser) or
an error mapped as a live call's would be. Every method may raise a `GatewayError` (the provider
unreachable, refusing, or answering something unreadable): the caller tries again later.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from llm_gateway.domain.errors import GatewayError
from llm_gateway.domain.results import Completion
from llm_gateway.providers.base import UpstreamCall


@dataclass(frozen=True, slots=True)
class BatchLine:
    line_id: str  # "item-<seq>": letters, digits, "-" and "_" only, as every provider accepts
    body: dict[str, Any]  # what the live endpoint would be sent (unary)


@dataclass(frozen=True, slots=True)
class LineResult:
    """One line's answer: the reply as the live endpoint returns it, or its error."""

    line_id: str
    reply: Any | None
    error: GatewayError | None


@dataclass(frozen=True, slots=True)
class UpstreamProgress:
    ended: bool  # the provider has finished with the job: its results can be read
    status: str  # the provider's own word for where the job stands ("in_progress", "ended", ...)


class BatchApi(Protocol):
    """One provider's batch API, over the gateway's shared HTTP client and the provider's key."""

    def refuses(self, call: UpstreamCall) -> str:
        """Why `call` cannot go through this batch API ("" when it can)."""
        ...

    def body(self, call: UpstreamCall) -> dict[str, Any]:
        """The line's body: what the live endpoint would be sent for `call` (unary)."""
        ...

    def parse(self, call: UpstreamCall, reply: Any) -> Completion:
        """A line's reply, as the live endpoint's reply is parsed."""
        ...

    async def submit(self, lines: Sequence[BatchLine], *, label: str) -> str:
        """Submits the lines as one upstream job; its id. `label` (the gateway's batch id) is
        kept with the job where the provider keeps metadata."""
        ...

    async def progress(self, upstream_id: str) -> UpstreamProgress: ...

    async def results(self, upstream_id: str) -> list[LineResult]:
        """Every line the provider has an answer for: a reply, or an error (a line it never ran
        because the job expired or was cancelled is an error: PROVIDER_BATCH_EXPIRED,
        PROVIDER_BATCH_CANCELLED); a line missing altogether was not run either."""
        ...

    async def cancel(self, upstream_id: str) -> None:
        """Asks the provider to stop; lines already answered are still in `results`."""
        ...


@runtime_checkable
class BatchCapable(Protocol):
    """An adapter whose provider has a batch API the gateway uses."""

    def batch_api(self) -> BatchApi: ...
