"""Prices that change over time: the sheet in force at the moment of the call, from the catalog's
own conditional prices, looked up once per validity window, with a clock the tests control."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from genai_prices.types import ModelInfo

from llm_gateway.catalog import Catalog
from llm_gateway.config import GatewayConfig, load_config
from llm_gateway.domain.messages import ChatRequest, Message, Role, TextPart
from llm_gateway.domain.results import Usage
from llm_gateway.gateway import Gateway
from llm_gateway.gateway.scope import CallScope
from llm_gateway.pricing import (
    CATALOG_SOURCE,
    PriceSchedule,
    PriceSheet,
    PricingStatus,
    Rate,
    catalog_schedule,
)
from llm_gateway.providers import enabled_providers
from llm_gateway.router import Router
from llm_gateway.server import encode

D = Decimal


class FakeClock:
    """Unix seconds, set by the test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def utc(*fields: int) -> float:
    return datetime(*fields, tzinfo=UTC).timestamp()  # type: ignore[arg-type, misc]


# DeepSeek's off-peak discount, as the catalog (genai-prices 0.2.3, deepseek / deepseek-chat) has
# it: $0.27 input, $0.07 cache hit, $1.10 output from 00:30 to 16:30 UTC; half that, $0.135,
# $0.035 and $0.55, from 16:30 to 00:30.
OFF_PEAK_STARTS = utc(2026, 12, 2, 16, 30)
PEAK_STARTS = utc(2026, 12, 3, 0, 30)
USAGE = Usage(10_000, 2000, cache_read_tokens=4000)
# 6,000 uncached x 0.27 + 4,000 cached x 0.07 + 2,000 out x 1.10 = 0.00162 + 0.00028 + 0.0022.
PEAK_COST = D("0.0041")
# 6,000 x 0.135 + 4,000 x 0.035 + 2,000 x 0.55 = 0.00081 + 0.00014 + 0.0011.
OFF_PEAK_COST = D("0.00205")
JUST = 0.001  # a millisecond


def test_deepseek_off_peak_starts_at_1630_utc() -> None:
    clock = FakeClock(OFF_PEAK_STARTS - JUST)
    schedule = catalog_schedule("deepseek", "deepseek-chat", clock)
    before = schedule.cost(USAGE)
    assert (before.total, before.input, before.cached_input, before.output) == (
        PEAK_COST,
        D("0.00162"),
        D("0.00028"),
        D("0.0022"),
    )
    assert before.source == CATALOG_SOURCE
    clock.now = OFF_PEAK_STARTS  # the window ends at 16:30:00 exactly
    assert schedule.cost(USAGE).total == OFF_PEAK_COST
    clock.now = OFF_PEAK_STARTS + JUST
    assert schedule.cost(USAGE).total == OFF_PEAK_COST


def test_deepseek_peak_returns_at_0030_utc_the_next_day() -> None:
    clock = FakeClock(PEAK_STARTS - JUST)
    schedule = catalog_schedule("deepseek", "deepseek-chat", clock)
    assert schedule.cost(USAGE).total == OFF_PEAK_COST
    clock.now = PEAK_STARTS
    assert schedule.cost(USAGE).total == PEAK_COST


def test_a_price_starting_on_a_date_applies_from_midnight_utc() -> None:
    # deepseek-v4-flash in the catalog: $0.22 input, $0.66 output from 2026-08-17, then $0.15 and
    # $0.60 from 2026-09-10 (outside its 01:00-04:00 and 06:00-10:00 UTC windows, which cost more).
    usage = Usage(1_000_000, 100_000)
    clock = FakeClock(utc(2026, 9, 10) - JUST)
    schedule = catalog_schedule("deepseek", "deepseek-v4-flash", clock)
    assert schedule.cost(usage).total == D("0.286")  # 1,000,000 x 0.22 + 100,000 x 0.66
    clock.now = utc(2026, 9, 10)
    assert schedule.cost(usage).total == D("0.21")  # 1,000,000 x 0.15 + 100,000 x 0.60
    # And on that day its 01:00-04:00 UTC window: $0.30 input, $1.20 output.
    clock.now = utc(2026, 9, 10, 1)
    assert schedule.cost(usage).total == D("0.42")  # 1,000,000 x 0.30 + 100,000 x 1.20


def test_the_catalog_is_consulted_once_per_window(monkeypatch: pytest.MonkeyPatch) -> None:
    lookups: list[datetime] = []
    original: Callable[..., Any] = ModelInfo.get_prices

    def counted(self: ModelInfo, when: datetime, *args: Any) -> Any:
        lookups.append(when)
        return original(self, when, *args)

    monkeypatch.setattr(ModelInfo, "get_prices", counted)
    clock = FakeClock(utc(2026, 12, 2, 9))
    schedule = catalog_schedule("deepseek", "deepseek-chat", clock)
    assert len(lookups) == 1
    assert schedule.valid_until() == OFF_PEAK_STARTS
    first = schedule.now()
    for step in range(1000):  # 09:00 to 16:29:59.999: the same sheet, no lookup
        clock.now = utc(2026, 12, 2, 9) + step * 26.99
        assert schedule.now() is first
    clock.now = OFF_PEAK_STARTS - JUST
    assert schedule.now() is first
    assert len(lookups) == 1
    clock.now = OFF_PEAK_STARTS
    assert schedule.now() is not first
    assert len(lookups) == 2
    assert schedule.valid_until() == PEAK_STARTS


def test_a_clock_set_back_gets_the_earlier_price() -> None:
    clock = FakeClock(OFF_PEAK_STARTS + 60)
    schedule = catalog_schedule("deepseek", "deepseek-chat", clock)
    assert schedule.cost(USAGE).total == OFF_PEAK_COST
    clock.now = OFF_PEAK_STARTS - 60
    assert schedule.cost(USAGE).total == PEAK_COST


def test_at_prices_any_instant_without_moving_the_window() -> None:
    clock = FakeClock(utc(2026, 12, 2, 9))
    schedule = catalog_schedule("deepseek", "deepseek-chat", clock)
    assert schedule.at(OFF_PEAK_STARTS + 1).cost(USAGE).total == OFF_PEAK_COST
    assert schedule.valid_until() == OFF_PEAK_STARTS
    assert schedule.now().cost(USAGE).total == PEAK_COST


def test_a_fixed_price_holds_for_all_time() -> None:
    sheet = PriceSheet(PricingStatus.PRICED, "config", input=Rate(D(1)))
    schedule = PriceSchedule.fixed(sheet)
    assert schedule.now() is schedule.at(0) is schedule.at(utc(2100, 1, 1)) is sheet
    assert schedule.valid_until() == float("inf")
    # So is a catalog price without conditions (gpt-4o-mini).
    assert catalog_schedule("openai", "gpt-4o-mini").valid_until() == float("inf")


DEEPSEEK = """
[providers.deepseek.models.deepseek-chat]
context_window = 64000
max_output_tokens = 8000
"""


def deepseek_config(tmp_path: Path) -> GatewayConfig:
    path = tmp_path / "gateway.toml"
    path.write_text(DEEPSEEK)
    return load_config(path, {"DEEPSEEK_API_KEY": "sk-deepseek-test-0123456789"})


def test_a_call_keeps_the_price_in_force_when_it_looked_the_model_up(tmp_path: Path) -> None:
    config = deepseek_config(tmp_path)
    clock = FakeClock(OFF_PEAK_STARTS - JUST)
    catalog = Catalog(config, enabled_providers(config), clock=clock)
    received = catalog.get("deepseek", "deepseek-chat")
    assert received is not None
    clock.now = OFF_PEAK_STARTS + 5  # the call finishes after the discount started
    assert received.price.cost(USAGE).total == PEAK_COST
    # A call received now gets the discount, and ListModels shows the price in force now.
    now = catalog.get("deepseek", "deepseek-chat")
    assert now is not None
    assert now.price.cost(USAGE).total == OFF_PEAK_COST
    [listed] = [spec for spec in catalog.listed() if spec.id == "deepseek:deepseek-chat"]
    pricing = encode.pricing(listed.price)
    assert (pricing.input_per_million, pricing.cached_input_per_million, pricing.output_per_million) == (
        "0.135",
        "0.035",
        "0.55",
    )
    # Looked up twice within one window, a model is the same spec (nothing rebuilt per call).
    assert catalog.get("deepseek", "deepseek-chat") is now


def _request(dry_run: bool = False) -> ChatRequest:
    return ChatRequest(
        "deepseek:deepseek-chat",
        (Message(Role.USER, (TextPart("How much is a token at half past four?"),)),),
        dry_run=dry_run,
    )


async def test_estimates_and_dry_runs_use_the_price_in_force_now(tmp_path: Path) -> None:
    config = deepseek_config(tmp_path)
    clock = FakeClock(OFF_PEAK_STARTS - JUST)
    catalog = Catalog(config, enabled_providers(config), clock=clock)
    router = Router(catalog, config.aliases, config.routing.auto, list(config.providers))
    gateway = Gateway(router, catalog, {}, {})

    async def estimated() -> tuple[int, Decimal]:
        [estimate] = await gateway.estimate_cost(_request(), 100, ())
        assert estimate.expected_output_tokens == 100
        return estimate.prompt_tokens, estimate.expected_cost.total

    async def dry_run() -> tuple[Usage, Decimal]:
        outcome = await gateway.chat(_request(dry_run=True), CallScope("req-dry-run"))
        return outcome.summary.usage, outcome.summary.cost.total

    prompt, peak = await estimated()
    assert peak == (prompt * D("0.27") + 100 * D("1.1")) / 10**6
    usage, dry_peak = await dry_run()
    assert dry_peak == (usage.prompt_tokens * D("0.27") + usage.completion_tokens * D("1.1")) / 10**6
    clock.now = OFF_PEAK_STARTS
    assert await estimated() == (prompt, (prompt * D("0.135") + 100 * D("0.55")) / 10**6)
    usage, dry_off_peak = await dry_run()
    assert dry_off_peak == (usage.prompt_tokens * D("0.135") + usage.completion_tokens * D("0.55")) / 10**6
    assert dry_off_peak < dry_peak
