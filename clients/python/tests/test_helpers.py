"""The message and money helpers, which need no gateway."""

from __future__ import annotations

from decimal import Decimal

import pytest

from llmgateway import assistant, system, text, to_decimal, user
from llmgateway.v1 import content_pb2


def test_message_builders() -> None:
    assert user("hi") == content_pb2.Message(
        role=content_pb2.ROLE_USER, content=[content_pb2.Part(text="hi")]
    )
    assert user("hi", name="ann").name == "ann"
    assert system("be brief").role == content_pb2.ROLE_SYSTEM
    assert assistant("hello").role == content_pb2.ROLE_ASSISTANT
    assert text(system("be brief")) == "be brief"


def test_text_joins_text_parts_only() -> None:
    message = content_pb2.Message(
        role=content_pb2.ROLE_USER,
        content=[
            content_pb2.Part(text="Hello, "),
            content_pb2.Part(image=content_pb2.Image(url="https://example.com/a.png")),
            content_pb2.Part(text="world"),
        ],
    )
    assert text(message) == "Hello, world"
    assert text(content_pb2.Message()) == ""


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("0", Decimal(0)),
        ("0.000435", Decimal("0.000435")),
        ("12.5", Decimal("12.5")),
        ("-1.25", Decimal("-1.25")),
    ],
)
def test_to_decimal(amount: str, expected: Decimal) -> None:
    assert to_decimal(amount) == expected


@pytest.mark.parametrize("amount", ["", "1e-5", "NaN", "Infinity", " 1", "1.", ".5", "0x10", "1,5"])
def test_to_decimal_rejects(amount: str) -> None:
    with pytest.raises(ValueError, match="not a plain decimal amount"):
        to_decimal(amount)
