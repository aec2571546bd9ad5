"""How much one chat request may hold.

The counts are checked before anything else, and by a front door before it builds the domain
request from its wire format: a request of a million tiny parts is then refused in microseconds,
rather than built and validated item by item. Door and domain report an excess with the same
`Limit`, so the caller reads the same violation whichever door it came through.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from llm_gateway.domain.errors import FieldViolation


@dataclass(frozen=True, slots=True)
class Limit:
    """At most `most` of something, named by `noun` in the violation."""

    most: int
    noun: str

    def exceeded(self, field: str, count: int) -> FieldViolation | None:
        if count <= self.most:
            return None
        return FieldViolation(field, f"at most {self.most} {self.noun}, got {count}")


MESSAGES = Limit(10_000, "messages")
PARTS_IN_ALL = Limit(100_000, "content parts in all")
PARTS = Limit(1_000, "parts")  # per message
TOOL_CALLS = Limit(256, "tool calls")  # per message
TOOLS = Limit(512, "tools")
STOP = Limit(4, "stop sequences")
FALLBACKS = Limit(10, "fallback models")
TAGS = Limit(64, "tags")

MAX_CALLER_FIELD = 256  # characters of each caller field
MAX_TAG_KEY = 63
MAX_TAG_VALUE = 256
MAX_BUDGET = Decimal(1_000_000)  # USD
# Enough for any float's repr down to 1e-13 USD. A finer budget means nothing, and written out in
# full (as BUDGET_EXCEEDED's metadata does) it could outgrow gRPC's limit on trailing metadata.
MAX_BUDGET_PLACES = 30
