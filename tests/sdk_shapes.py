"""Checking a fake's wire objects against an official SDK's pydantic types: every field the fake
sends must be one the SDK declares (its models allow extras), and nothing may be coerced."""

from __future__ import annotations

from typing import Any

import pydantic


def assert_known_fields(value: object, where: str = "$") -> None:
    """Every key the fake sent is a field the SDK's types declare (its models allow extras)."""
    if isinstance(value, pydantic.BaseModel):
        assert not value.model_extra, f"{where}: fields unknown to the SDK: {value.model_extra}"
        for name in type(value).model_fields:
            assert_known_fields(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            assert_known_fields(item, f"{where}[{i}]")


def strictly(type_: Any, data: dict[str, Any]) -> Any:
    """`data` validated by the SDK's pydantic type, with no unknown field and no coerced value."""
    parsed = pydantic.TypeAdapter(type_).validate_python(data)
    assert_known_fields(parsed)
    assert parsed.model_dump(mode="json", exclude_unset=True) == data
    return parsed
