"""Price lookup: the operator's price file and configured prices, then the bundled genai-prices
snapshot (no network), whose prices may change with the time of day or from a date on."""

from __future__ import annotations

import functools
import math
import time as _time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from datetime import time as time_of_day
from decimal import Decimal
from importlib.metadata import version

from genai_prices import data_snapshot
from genai_prices.types import (
    ModelInfo,
    ModelPrice,
    StartDateConstraint,
    TieredPrices,
    TimeOfDateConstraint,
)

from llm_gateway.config.schema import PriceConfig, RateConfig
from llm_gateway.pricing.schedule import Clock, PriceSchedule, Window
from llm_gateway.pricing.sheet import UNKNOWN_PRICE, PriceSheet, PricingStatus, Rate

CATALOG_SOURCE = f"genai-prices {version('genai-prices')}"
CONFIG_SOURCE = "config"
PRICE_FILE_SOURCE = "price file"


def sheet_from_config(price: PriceConfig, source: str = CONFIG_SOURCE) -> PriceSheet:
    if price.free:
        return PriceSheet(status=PricingStatus.FREE, source=source)

    def rate(value: Decimal | RateConfig | None) -> Rate | None:
        if isinstance(value, RateConfig):
            return Rate(value.base, tuple((tier.start, tier.price) for tier in value.tiers))
        return None if value is None else Rate(value)

    return PriceSheet(
        status=PricingStatus.PRICED,
        source=source,
        input=rate(price.input_per_million),
        cached_input=rate(price.cached_input_per_million),
        cache_write=rate(price.cache_write_per_million),
        cache_write_1h=rate(price.cache_write_1h_per_million),
        output=rate(price.output_per_million),
        per_request=price.per_request or Decimal(0),
    )


def catalog_schedule(catalog_provider: str, model: str, clock: Clock = _time.time) -> PriceSchedule:
    """The catalog's prices for `model` over time; UNKNOWN when the catalog lacks it."""
    info = _find(catalog_provider, model)
    if info is None:
        return PriceSchedule.fixed(UNKNOWN_PRICE)
    if isinstance(info.prices, ModelPrice):
        return PriceSchedule.fixed(_sheet(info.prices))
    # One sheet per conditional price, so a window that opens on the same price reuses its sheet.
    sheets = {id(conditional.prices): _sheet(conditional.prices) for conditional in info.prices}
    return PriceSchedule(functools.partial(_window, info, sheets), clock)


def sheet_from_catalog(catalog_provider: str, model: str) -> PriceSheet:
    """The catalog's price for `model` in force now, or UNKNOWN when the catalog lacks it."""
    return catalog_schedule(catalog_provider, model).now()


def catalog_context_window(catalog_provider: str, model: str) -> int | None:
    info = _find(catalog_provider, model)
    return None if info is None else info.context_window


def _find(catalog_provider: str, model: str) -> ModelInfo | None:
    try:
        _, info = data_snapshot.get_snapshot().find_provider_model(model, None, catalog_provider, None)
    except LookupError:
        return None
    return info


def _window(info: ModelInfo, sheets: dict[int, PriceSheet], instant: float) -> Window:
    """The sheet genai-prices gives for `instant`, and the window around it bounded by the nearest
    instants at which any of the model's conditions turns on or off (between two of them, every
    condition, and so the price chosen, stays the same)."""
    when = datetime.fromtimestamp(instant, UTC)
    sheet = sheets[id(info.get_prices(when))]
    # Edges are compared with `when` (rounded to the microsecond), the instant genai-prices judged.
    at = when.timestamp()
    since, until = -math.inf, math.inf
    for edge in _edges(info, when.date()):
        if edge <= at:
            since = max(since, edge)
        else:
            until = min(until, edge)
    return sheet, since, until


def _edges(info: ModelInfo, day: date) -> Iterator[float]:
    """The instants near `day` at which one of the model's price conditions starts or ends."""
    assert not isinstance(info.prices, ModelPrice)
    for conditional in info.prices:
        constraint = conditional.constraint
        if isinstance(constraint, StartDateConstraint):
            # Judged by the UTC date: the price starts at midnight UTC.
            yield datetime.combine(constraint.start_date, time_of_day(), UTC).timestamp()
        elif isinstance(constraint, TimeOfDateConstraint):
            # The day before, of and after `day`: the last edge before and the next edge after.
            for offset in (-1, 0, 1):
                for moment in (constraint.start_time, constraint.end_time):
                    yield datetime.combine(day + timedelta(days=offset), _utc(moment)).timestamp()


def _utc(moment: time_of_day) -> time_of_day:
    """A time of day in UTC, as genai-prices reads it: a naive time is UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return datetime.combine(date(1970, 1, 1), moment).astimezone(UTC).timetz()


def _sheet(prices: ModelPrice) -> PriceSheet:
    per_kilo_requests = prices.requests_kcount
    return PriceSheet(
        status=PricingStatus.PRICED,
        source=CATALOG_SOURCE,
        input=_rate(prices.input_mtok),
        cached_input=_rate(prices.cache_read_mtok),
        cache_write=_rate(prices.cache_write_mtok),
        cache_write_1h=_rate(getattr(prices, "cache_write_1h_mtok", None)),
        output=_rate(prices.output_mtok),
        per_request=(per_kilo_requests / 1000) if isinstance(per_kilo_requests, Decimal) else Decimal(0),
    )


def _rate(value: object) -> Rate | None:
    if isinstance(value, TieredPrices):
        return Rate(value.base, tuple((tier.start, tier.price) for tier in value.tiers))
    if isinstance(value, Decimal):
        return Rate(value)
    return None
