"""A call's cache key: a hash of the canonical form of what decides its reply, and of the scope
whose replies it may see.

What decides the reply: the models the call resolved to (in order: a changed alias or fallback
list is a different call), the messages, tools, tool choice, response format, generation and
reasoning settings, provider options and the unsupported-parameter policy. What does not: the
caller's ids and tags, budgets and alert thresholds, the dry-run flag, the cache options
themselves. The scope: the tenant, and the gateway key unless `share_across_keys`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence

from llm_gateway.domain.messages import ChatRequest


def call_key(request: ChatRequest, models: Sequence[str], tenant: str, key: str | None) -> str:
    canonical = {
        "models": list(models),
        "messages": [dataclasses.asdict(m) for m in request.messages],
        "tools": [dataclasses.asdict(t) for t in request.tools],
        "tool_choice": _fields(request.tool_choice),
        "parallel_tool_calls": request.parallel_tool_calls,
        "response_format": _fields(request.response_format),
        "generation": dataclasses.asdict(request.generation),
        "reasoning": _fields(request.reasoning),
        "provider_options": request.provider_options,
        "lenient": request.lenient,
        "scope": [tenant, key],
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), default=_bytes_digest)
    return hashlib.sha256(text.encode()).hexdigest()


def _fields(value: object) -> object:
    return None if value is None else dataclasses.asdict(value)  # type: ignore[call-overload]


def _bytes_digest(value: object) -> str:
    """Inline image bytes stand in the key by their digest (the key is a digest anyway)."""
    if isinstance(value, bytes):
        return "sha256:" + hashlib.sha256(value).hexdigest()
    raise TypeError(f"{type(value).__name__} in a cache key")
