"""Tool-call conversions shared by the adapters of providers that carry arguments as JSON objects
(Anthropic, Gemini, Ollama) and that may send calls without ids (Gemini, Ollama)."""

from __future__ import annotations

import json
import secrets
from typing import Any

from llm_gateway.providers.base import Checks


def arguments_object(text: str, checks: Checks, path: str, provider: str) -> dict[str, Any] | None:
    """A tool call's arguments text as the JSON object such providers need (empty text is `{}`);
    None, with an invalid-request violation at `path`, when the text is not a JSON object."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    checks.invalid(path, f"{provider} needs tool-call arguments as a JSON object")
    return None


def arguments_text(value: Any) -> str:
    """Arguments received as a JSON value, as the compact JSON text the contract carries: the same
    text whether the call came in a unary reply or a stream."""
    return json.dumps({} if value is None else value, separators=(",", ":"), ensure_ascii=False)


def call_nonce() -> str:
    """The random part of the ids made up for one reply's calls, so ids of different replies never
    collide."""
    return secrets.token_hex(6)


def call_id(given: Any, index: int, nonce: str) -> str:
    """The provider's id for a call when it sent one, else `call_<index>_<nonce>`."""
    return str(given or f"call_{index}_{nonce}")
