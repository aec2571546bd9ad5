"""Typed values out of a parsed JSON body (numbers parsed with `parse_float=Decimal`), each
problem added to the request's violations under its path, for both HTTP dialects."""

from __future__ import annotations

import re
from decimal import Decimal

from llm_gateway.domain.errors import Violations


def number(value: object, path: str, wire: Violations) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        wire.add(path, "must be a number")
        return None
    return float(value)


def integer(value: object, path: str, wire: Violations) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        wire.add(path, "must be an integer")
        return None
    return value


def text(value: object, path: str, wire: Violations) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    wire.add(path, "must be a string")
    return ""


def strings(value: object, path: str, wire: Violations) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    wire.add(path, "must be a list of strings")
    return []


def openai_param(field: str, max_tokens: str = "max_tokens") -> str:
    """A domain field path as the OpenAI parameter a caller wrote it with."""
    for domain, openai in _RENAMES:
        if field == domain or field.startswith((domain + ".", domain + "[")):
            return openai + field[len(domain) :]
    field = re.sub(r"\.image(?=[.\[]|$)", ".image_url", field)
    field = re.sub(r"(tool_calls\[\d+\])\.(name|arguments)", r"\1.function.\2", field)
    field = re.sub(r"^(tools\[\d+\])\.(name|description|parameters|strict)", r"\1.function.\2", field)
    if field == "generation.max_tokens":
        return max_tokens
    return field.removeprefix("generation.")


_RENAMES = (
    ("max_cost", "budget.max_cost"),
    ("cost_alert_threshold", "budget.cost_alert_threshold"),
    ("fallback_models", "routing.fallback_models"),
    ("caller.user", "user"),
    ("caller.project", "budget.project_id"),
    ("caller.tenant", "budget.tenant_id"),
    ("caller.tracking_id", "budget.tracking_id"),
    ("tags", "metadata"),
    ("reasoning.effort", "reasoning_effort"),
    ("cache.ttl", "routing.cache_ttl_seconds"),
)
