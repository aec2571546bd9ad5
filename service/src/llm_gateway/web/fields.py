"""Typed values out of a parsed JSON body (numbers parsed with `parse_float=Decimal`), each
problem added to the request's violations under its path, for both HTTP dialects."""

from __future__ import annotations

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
