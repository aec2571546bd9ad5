"""Price lookup: configured prices first, then the bundled genai-prices snapshot (no network)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from importlib.metadata import version

from genai_prices import data_snapshot
from genai_prices.types import TieredPrices

from llm_gateway.config.schema import PriceConfig
from llm_gateway.pricing.sheet import UNKNOWN_PRICE, PriceSheet, PricingStatus, Rate

CATALOG_SOURCE = f"genai-prices {version('genai-prices')}"
CONFIG_SOURCE = "config"


def sheet_from_config(price: PriceConfig) -> PriceSheet:
    if price.free:
        return PriceSheet(status=PricingStatus.FREE, source=CONFIG_SOURCE)

    def rate(value: Decimal | None) -> Rate | None:
        return None if value is None else Rate(value)

    return PriceSheet(
        status=PricingStatus.PRICED,
        source=CONFIG_SOURCE,
        input=rate(price.input_per_million),
        cached_input=rate(price.cached_input_per_million),
        cache_write=rate(price.cache_write_per_million),
        cache_write_1h=rate(price.cache_write_1h_per_million),
        output=rate(price.output_per_million),
        per_request=price.per_request or Decimal(0),
    )


def sheet_from_catalog(catalog_provider: str, model: str) -> PriceSheet:
    """The catalog's current price for `model`, or UNKNOWN when the catalog lacks it."""
    try:
        _, info = data_snapshot.get_snapshot().find_provider_model(model, None, catalog_provider, None)
    except LookupError:
        return UNKNOWN_PRICE
    prices = info.get_prices(datetime.now(UTC))
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


def catalog_context_window(catalog_provider: str, model: str) -> int | None:
    try:
        _, info = data_snapshot.get_snapshot().find_provider_model(model, None, catalog_provider, None)
    except LookupError:
        return None
    return info.context_window
