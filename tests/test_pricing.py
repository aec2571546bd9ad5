"""Exact cost arithmetic, checked against published price sheets (USD per million tokens)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from llm_gateway.domain.results import Usage
from llm_gateway.pricing import (
    BillingModel,
    PriceSheet,
    PricingStatus,
    Rate,
    format_decimal,
    sheet_from_catalog,
)

D = Decimal


@pytest.mark.parametrize(
    ("provider", "model", "usage", "total"),
    [
        # OpenAI gpt-4o-mini: $0.15 input, $0.075 cached input, $0.60 output.
        ("openai", "gpt-4o-mini", Usage(1_000_000, 1_000_000), D("0.75")),
        ("openai", "gpt-4o-mini", Usage(1000, 500, cache_read_tokens=200), D("0.000435")),
        # OpenAI gpt-4o: $2.50 input, $1.25 cached input, $10 output.
        ("openai", "gpt-4o", Usage(2000, 1000, cache_read_tokens=1000), D("0.01375")),
        # Reasoning tokens are output tokens (o4-mini: $1.10 input, $4.40 output).
        ("openai", "o4-mini", Usage(1000, 3000, reasoning_tokens=2500), D("0.0143")),
        # Anthropic claude-sonnet-4-5: $3 input, $3.75 cache write, $0.30 cache read, $15 output.
        (
            "anthropic",
            "claude-sonnet-4-5",
            Usage(10_000, 1000, cache_read_tokens=6000, cache_write_tokens=2000),
            D("0.0303"),
        ),
        # Claude Haiku 4.5: $1 input, $1.25 five-minute cache write, $2 one-hour cache write, $5 output.
        # 1000 uncached + 3000 five-minute writes + 1000 one-hour writes, 100 output:
        # 0.001 + 0.00375 + 0.002 + 0.0005.
        (
            "anthropic",
            "claude-haiku-4-5",
            Usage(5000, 100, cache_write_tokens=4000, cache_write_1h_tokens=1000),
            D("0.00725"),
        ),
        # Above 200k prompt tokens the long-context tier applies to the whole call: $6 input, $22.50 output.
        ("anthropic", "claude-sonnet-4-5", Usage(300_000, 1000), D("1.8225")),
        # Gemini 2.5 Pro: $1.25 input / $10 output up to 200k, $2.50 / $15 above.
        ("google", "gemini-2.5-pro", Usage(100_000, 2000), D("0.145")),
        ("google", "gemini-2.5-pro", Usage(250_000, 2000), D("0.655")),
    ],
)
def test_catalog_prices(provider: str, model: str, usage: Usage, total: Decimal) -> None:
    cost = sheet_from_catalog(provider, model).cost(usage)
    assert cost.status is PricingStatus.PRICED
    assert cost.total == total
    assert cost.total == cost.input + cost.cached_input + cost.cache_write + cost.output + cost.request_fee


def test_breakdown_and_savings() -> None:
    sheet = PriceSheet(
        status=PricingStatus.PRICED,
        source="test",
        input=Rate(D("3")),
        cached_input=Rate(D("0.30")),
        cache_write=Rate(D("3.75")),
        output=Rate(D("15")),
    )
    cost = sheet.cost(Usage(10_000, 1000, cache_read_tokens=6000, cache_write_tokens=2000))
    assert cost.input == D("0.006")  # 2000 uncached x $3/M
    assert cost.cached_input == D("0.0018")  # 6000 x $0.30/M
    assert cost.cache_write == D("0.0075")  # 2000 x $3.75/M
    assert cost.output == D("0.015")
    assert cost.cache_savings == D("0.0162")  # 6000 x ($3 - $0.30)/M
    assert cost.cost_per_1k_tokens == (cost.total * 1000 / 11_000).quantize(D("1e-12"))


def test_request_fee_and_billing_models() -> None:
    hybrid = PriceSheet(PricingStatus.PRICED, "test", input=Rate(D("1")), per_request=D("0.005"))
    assert hybrid.billing_model is BillingModel.HYBRID
    assert hybrid.cost(Usage(1000, 0)).total == D("0.006")
    per_request = PriceSheet(PricingStatus.PRICED, "test", per_request=D("0.01"))
    assert per_request.billing_model is BillingModel.PER_REQUEST
    assert per_request.cost(Usage(0, 0)).cost_per_1k_tokens is None
    assert PriceSheet(PricingStatus.FREE, "config").billing_model is BillingModel.FREE


def test_unknown_and_free_are_never_a_silent_zero() -> None:
    unknown = sheet_from_catalog("openai", "no-such-model-anywhere").cost(Usage(10, 10))
    assert unknown.status is PricingStatus.UNKNOWN
    free = PriceSheet(PricingStatus.FREE, "config").cost(Usage(10, 10, estimated=True))
    assert free.status is PricingStatus.FREE
    assert free.estimated


def test_tier_boundary_is_exclusive() -> None:
    rate = Rate(D("3"), ((200_000, D("6")),))
    assert rate.at(200_000) == D("3")
    assert rate.at(200_001) == D("6")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (D("1.50E-4"), "0.00015"),
        (D("0.000"), "0"),
        (D("10"), "10"),
        (D("1E+1"), "10"),
        (D("-0"), "0"),
        (D("2.50"), "2.5"),
    ],
)
def test_format_decimal_is_plain(value: Decimal, text: str) -> None:
    assert format_decimal(value) == text


def test_one_hour_cache_writes_are_priced_apart() -> None:
    sheet = PriceSheet(
        status=PricingStatus.PRICED,
        source="test",
        input=Rate(D(3)),
        cache_write=Rate(D("3.75")),
        cache_write_1h=Rate(D(6)),
        output=Rate(D(15)),
    )
    cost = sheet.cost(Usage(3000, 0, cache_write_tokens=3000, cache_write_1h_tokens=1000))
    assert cost.cache_write_1h == D("0.006")  # 1000 at $6
    assert cost.cache_write == D("0.0075") + D("0.006")  # 2000 at $3.75, plus the one-hour part
    assert cost.input == 0
    # A sheet without a one-hour rate charges those writes at the five-minute rate.
    plain = PriceSheet(
        status=PricingStatus.PRICED, source="test", input=Rate(D(3)), cache_write=Rate(D("3.75"))
    )
    assert plain.cost(Usage(1000, 0, cache_write_tokens=1000, cache_write_1h_tokens=1000)).cache_write == D(
        "0.00375"
    )
