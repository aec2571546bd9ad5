"""Prices, how they change over time, and the exact cost of a call."""

from llm_gateway.pricing.catalog_prices import (
    CATALOG_SOURCE,
    PRICE_FILE_SOURCE,
    catalog_schedule,
    sheet_from_catalog,
    sheet_from_config,
)
from llm_gateway.pricing.schedule import Clock, PriceSchedule
from llm_gateway.pricing.sheet import (
    UNKNOWN_PRICE,
    BillingModel,
    Cost,
    CostCapabilities,
    PriceSheet,
    PricingStatus,
    Rate,
    format_decimal,
)

__all__ = [
    "CATALOG_SOURCE",
    "PRICE_FILE_SOURCE",
    "UNKNOWN_PRICE",
    "BillingModel",
    "Clock",
    "Cost",
    "CostCapabilities",
    "PriceSchedule",
    "PriceSheet",
    "PricingStatus",
    "Rate",
    "catalog_schedule",
    "format_decimal",
    "sheet_from_catalog",
    "sheet_from_config",
]
