"""Exact cost arithmetic, checked against published price sheets (USD per million tokens)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from llm_gateway.config.schema import PriceConfig
from llm_gateway.domain.results import Usage
from llm_gateway.pricing import (
    BillingModel,
    PriceSheet,
    PricingStatus,
    Rate,
    format_decimal,
    sheet_from_catalog,
    sheet_from_config,
)

D = Decimal


# Published prices are USD per million tokens, from each provider's own price sheet:
#   OpenAI     https://developers.openai.com/api/docs/pricing (and the model pages under /api/docs/models/)
#   Anthropic  https://platform.claude.com/docs/en/about-claude/pricing (model table + "Long context pricing")
#   Google     https://ai.google.dev/gemini-api/docs/pricing
#   Mistral    https://mistral.ai/pricing#api-pricing
#   Groq       https://groq.com/pricing; cached input 50% off: https://console.groq.com/docs/prompt-caching
# Prompt tokens include cache reads and writes; uncached input = prompt - cache reads - cache writes.
# Reasoning / thinking tokens are already part of the completion tokens and are billed as output.
CATALOG_CASES = [
    # --- OpenAI ---
    # gpt-4o-mini: $0.15 input, $0.075 cached input, $0.60 output.
    ("openai", "gpt-4o-mini", Usage(1_000_000, 1_000_000), D("0.75")),
    ("openai", "gpt-4o-mini", Usage(1000, 500, cache_read_tokens=200), D("0.000435")),
    # gpt-4o: $2.50 input, $1.25 cached input, $10 output.
    ("openai", "gpt-4o", Usage(2000, 1000, cache_read_tokens=1000), D("0.01375")),
    # Reasoning tokens are output tokens (o4-mini: $1.10 input, $4.40 output).
    ("openai", "o4-mini", Usage(1000, 3000, reasoning_tokens=2500), D("0.0143")),
    # gpt-4.1: $2 input, $0.50 cached input, $8 output.
    # 10,000 uncached x 2 + 20,000 cached x 0.50 + 2,000 out x 8 = 0.02 + 0.01 + 0.016.
    ("openai", "gpt-4.1", Usage(30_000, 2000, cache_read_tokens=20_000), D("0.046")),
    # gpt-4.1-mini: $0.40 input, $0.10 cached input, $1.60 output.
    # 5,000 x 0.40 + 5,000 x 0.10 + 1,000 x 1.60 = 0.002 + 0.0005 + 0.0016.
    ("openai", "gpt-4.1-mini", Usage(10_000, 1000, cache_read_tokens=5000), D("0.0041")),
    # gpt-4.1-nano: $0.10 input, $0.025 cached input, $0.40 output.
    # 2,000 x 0.10 + 2,000 x 0.025 + 1,000 x 0.40 = 0.0002 + 0.00005 + 0.0004.
    ("openai", "gpt-4.1-nano", Usage(4000, 1000, cache_read_tokens=2000), D("0.00065")),
    # gpt-5: $1.25 input, $0.125 cached input, $10 output; 4,000 of the 5,000 output tokens are reasoning.
    # 4,000 x 1.25 + 16,000 x 0.125 + 5,000 x 10 = 0.005 + 0.002 + 0.05.
    (
        "openai",
        "gpt-5",
        Usage(20_000, 5000, cache_read_tokens=16_000, reasoning_tokens=4000),
        D("0.057"),
    ),
    # gpt-5-mini: $0.25 input, $0.025 cached input, $2 output.
    # 10,000 x 0.25 + 40,000 x 0.025 + 8,000 x 2 = 0.0025 + 0.001 + 0.016.
    (
        "openai",
        "gpt-5-mini",
        Usage(50_000, 8000, cache_read_tokens=40_000, reasoning_tokens=6000),
        D("0.0195"),
    ),
    # gpt-5-nano: $0.05 input, $0.005 cached input, $0.40 output.
    # 10,000 x 0.05 + 90,000 x 0.005 + 2,000 x 0.40 = 0.0005 + 0.00045 + 0.0008.
    (
        "openai",
        "gpt-5-nano",
        Usage(100_000, 2000, cache_read_tokens=90_000, reasoning_tokens=1500),
        D("0.00175"),
    ),
    # gpt-5.1: $1.25 input, $0.125 cached input, $10 output.
    # 4,000 x 1.25 + 8,000 x 0.125 + 3,000 x 10 = 0.005 + 0.001 + 0.03.
    (
        "openai",
        "gpt-5.1",
        Usage(12_000, 3000, cache_read_tokens=8000, reasoning_tokens=2000),
        D("0.036"),
    ),
    # --- Anthropic ---
    # claude-sonnet-4-5: $3 input, $3.75 cache write, $0.30 cache read, $15 output.
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
    # Claude Haiku 4.5 with cache hits ($0.10) and extended thinking (2,000 of 3,000 output tokens):
    # 5,000 x 1 + 15,000 x 0.10 + 3,000 x 5 = 0.005 + 0.0015 + 0.015.
    (
        "anthropic",
        "claude-haiku-4-5",
        Usage(20_000, 3000, cache_read_tokens=15_000, reasoning_tokens=2000),
        D("0.0215"),
    ),
    # Above 200k prompt tokens the long-context tier applies to the whole call: $6 input, $22.50 output.
    ("anthropic", "claude-sonnet-4-5", Usage(300_000, 1000), D("1.8225")),
    # Exactly 200k prompt tokens is not above the threshold: base rates. 200,000 x 3 + 1,000 x 15.
    ("anthropic", "claude-sonnet-4-5", Usage(200_000, 1000), D("0.615")),
    # Long context with caching: the cache multipliers apply to the long-context input rate ($6):
    # cache read 0.1x = $0.60, five-minute write 1.25x = $7.50, one-hour write 2x = $12; output $22.50.
    # Uncached 250,000 - 200,000 - 40,000 = 10,000 x 6 = 0.06; reads 200,000 x 0.60 = 0.12;
    # 30,000 five-minute writes x 7.50 = 0.225; 10,000 one-hour writes x 12 = 0.12; 2,000 out x 22.50 = 0.045.
    (
        "anthropic",
        "claude-sonnet-4-5",
        Usage(
            250_000,
            2000,
            cache_read_tokens=200_000,
            cache_write_tokens=40_000,
            cache_write_1h_tokens=10_000,
        ),
        D("0.57"),
    ),
    # Claude Opus 4.5: $5 input, $6.25 five-minute write, $10 one-hour write, $0.50 cache hit, $25 output.
    # 10,000 x 5 + 30,000 x 0.50 + 10,000 one-hour writes x 10 + 2,000 x 25 = 0.05 + 0.015 + 0.1 + 0.05.
    (
        "anthropic",
        "claude-opus-4-5",
        Usage(
            50_000,
            2000,
            cache_read_tokens=30_000,
            cache_write_tokens=10_000,
            cache_write_1h_tokens=10_000,
        ),
        D("0.215"),
    ),
    # Claude Opus 4.1: $15 input, $18.75 five-minute write, $75 output.
    # 2,000 x 15 + 6,000 x 18.75 + 500 x 75 = 0.03 + 0.1125 + 0.0375.
    ("anthropic", "claude-opus-4-1", Usage(8000, 500, cache_write_tokens=6000), D("0.18")),
    # --- Google Gemini ---
    # Gemini 2.5 Pro: $1.25 input / $10 output up to 200k, $2.50 / $15 above.
    ("google", "gemini-2.5-pro", Usage(100_000, 2000), D("0.145")),
    ("google", "gemini-2.5-pro", Usage(250_000, 2000), D("0.655")),
    # Gemini 2.5 Pro context caching: $0.125 up to 200k, $0.25 above; thinking tokens are output.
    # 400k prompt (tier): 100,000 x 2.50 + 300,000 x 0.25 + 10,000 x 15 = 0.25 + 0.075 + 0.15.
    (
        "google",
        "gemini-2.5-pro",
        Usage(400_000, 10_000, cache_read_tokens=300_000, reasoning_tokens=8000),
        D("0.475"),
    ),
    # Exactly 200k prompt (base rates): 50,000 x 1.25 + 150,000 x 0.125 + 5,000 x 10
    # = 0.0625 + 0.01875 + 0.05.
    (
        "google",
        "gemini-2.5-pro",
        Usage(200_000, 5000, cache_read_tokens=150_000, reasoning_tokens=4000),
        D("0.13125"),
    ),
    # Gemini 2.5 Flash: $0.30 input, $0.03 context caching, $2.50 output (thinking included).
    # 8,000 x 0.30 + 32,000 x 0.03 + 6,000 x 2.50 = 0.0024 + 0.00096 + 0.015.
    (
        "google",
        "gemini-2.5-flash",
        Usage(40_000, 6000, cache_read_tokens=32_000, reasoning_tokens=5000),
        D("0.01836"),
    ),
    # Gemini 2.5 Flash has no long-context tier: 300,000 x 0.30 + 1,000 x 2.50 = 0.09 + 0.0025.
    ("google", "gemini-2.5-flash", Usage(300_000, 1000), D("0.0925")),
    # Gemini 2.5 Flash-Lite: $0.10 input, $0.40 output (thinking included).
    # 50,000 x 0.10 + 4,000 x 0.40 = 0.005 + 0.0016.
    ("google", "gemini-2.5-flash-lite", Usage(50_000, 4000, reasoning_tokens=3000), D("0.0066")),
    # Gemini 2.0 Flash: $0.10 input, $0.40 output. 10,000 x 0.10 + 1,000 x 0.40 = 0.001 + 0.0004.
    ("google", "gemini-2.0-flash", Usage(10_000, 1000), D("0.0014")),
    # --- Mistral ---
    # Codestral: $0.30 input, $0.90 output. 10,000 x 0.30 + 2,000 x 0.90 = 0.003 + 0.0018.
    ("mistral", "codestral-latest", Usage(10_000, 2000), D("0.0048")),
    # Mistral NeMo: $0.15 input, $0.15 output. 100,000 x 0.15 + 20,000 x 0.15 = 0.015 + 0.003.
    ("mistral", "open-mistral-nemo", Usage(100_000, 20_000), D("0.018")),
    # Mistral Large 3 (mistral-large-2512): $0.50 input, $1.50 output. 20,000 x 0.50 + 4,000 x 1.50.
    ("mistral", "mistral-large-2512", Usage(20_000, 4000), D("0.016")),
    # Magistral Medium: $2 input, $5 output; its reasoning is output. 5,000 x 2 + 12,000 x 5 = 0.01 + 0.06.
    ("mistral", "magistral-medium-latest", Usage(5000, 12_000, reasoning_tokens=10_000), D("0.07")),
    # --- Groq ---
    # Llama 3.3 70B Versatile: $0.59 input, $0.79 output. 10,000 x 0.59 + 2,000 x 0.79 = 0.0059 + 0.00158.
    ("groq", "llama-3.3-70b-versatile", Usage(10_000, 2000), D("0.00748")),
    # Llama 3.1 8B Instant: $0.05 input, $0.08 output. 1,000,000 x 0.05 + 100,000 x 0.08 = 0.05 + 0.008.
    ("groq", "llama-3.1-8b-instant", Usage(1_000_000, 100_000), D("0.058")),
    # GPT-OSS 120B: $0.15 input, $0.075 cached input (50% off), $0.60 output.
    # 4,000 x 0.15 + 16,000 x 0.075 + 3,000 x 0.60 = 0.0006 + 0.0012 + 0.0018.
    (
        "groq",
        "openai/gpt-oss-120b",
        Usage(20_000, 3000, cache_read_tokens=16_000, reasoning_tokens=2000),
        D("0.0036"),
    ),
    # GPT-OSS 20B: $0.075 input, $0.0375 cached input (50% off), $0.30 output.
    # 4,000 x 0.075 + 4,000 x 0.0375 + 1,000 x 0.30 = 0.0003 + 0.00015 + 0.0003.
    ("groq", "openai/gpt-oss-20b", Usage(8000, 1000, cache_read_tokens=4000), D("0.00075")),
    # Kimi K2-0905: $1 input, $0.50 cached input (50% off), $3 output.
    # 10,000 x 1 + 20,000 x 0.50 + 1,000 x 3 = 0.01 + 0.01 + 0.003.
    (
        "groq",
        "moonshotai/kimi-k2-instruct-0905",
        Usage(30_000, 1000, cache_read_tokens=20_000),
        D("0.023"),
    ),
]


@pytest.mark.parametrize(("provider", "model", "usage", "total"), CATALOG_CASES)
def test_catalog_prices(provider: str, model: str, usage: Usage, total: Decimal) -> None:
    cost = sheet_from_catalog(provider, model).cost(usage)
    assert cost.status is PricingStatus.PRICED
    assert cost.total == total
    assert cost.total == cost.input + cost.cached_input + cost.cache_write + cost.output + cost.request_fee


@pytest.mark.parametrize(
    ("provider", "model", "usage", "savings"),
    [
        # gpt-5-mini: 40,000 reads x ($0.25 - $0.025) = 40,000 x 0.225.
        ("openai", "gpt-5-mini", Usage(50_000, 8000, cache_read_tokens=40_000), D("0.009")),
        # gpt-4o: 1,000 reads x ($2.50 - $1.25).
        ("openai", "gpt-4o", Usage(2000, 1000, cache_read_tokens=1000), D("0.00125")),
        # Sonnet 4.5 long context: 200,000 reads x ($6 - $0.60) = 200,000 x 5.40.
        (
            "anthropic",
            "claude-sonnet-4-5",
            Usage(250_000, 2000, cache_read_tokens=200_000, cache_write_tokens=40_000),
            D("1.08"),
        ),
        # Gemini 2.5 Pro above 200k: 300,000 reads x ($2.50 - $0.25) = 300,000 x 2.25.
        ("google", "gemini-2.5-pro", Usage(400_000, 10_000, cache_read_tokens=300_000), D("0.675")),
        # Gemini 2.5 Flash: 32,000 reads x ($0.30 - $0.03) = 32,000 x 0.27.
        ("google", "gemini-2.5-flash", Usage(40_000, 6000, cache_read_tokens=32_000), D("0.00864")),
        # Groq GPT-OSS 120B: 16,000 reads x ($0.15 - $0.075).
        ("groq", "openai/gpt-oss-120b", Usage(20_000, 3000, cache_read_tokens=16_000), D("0.0012")),
        # No cache reads, no savings.
        ("groq", "llama-3.3-70b-versatile", Usage(10_000, 2000), D("0")),
    ],
)
def test_catalog_cache_savings(provider: str, model: str, usage: Usage, savings: Decimal) -> None:
    assert sheet_from_catalog(provider, model).cost(usage).cache_savings == savings


def test_free_local_model_costs_nothing() -> None:
    # What a local (e.g. Ollama) provider configured with `free = true` gets.
    sheet = PriceSheet(status=PricingStatus.FREE, source="config")
    assert sheet_from_config(PriceConfig(free=True)) == sheet
    assert sheet.billing_model is BillingModel.FREE
    cost = sheet.cost(Usage(50_000, 4000, cache_read_tokens=20_000, reasoning_tokens=1000))
    assert cost.status is PricingStatus.FREE
    assert cost.source == "config"
    assert cost.total == 0
    assert cost.input == cost.cached_input == cost.cache_write == cost.output == cost.request_fee == 0
    assert cost.cache_savings == 0
    assert cost.cost_per_1k_tokens is None


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
