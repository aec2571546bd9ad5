"""Prices and the exact cost of a call."""

from llm_gateway.pricing.catalog_prices import CATALOG_SOURCE, sheet_from_catalog, sheet_from_config
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
    "UNKNOWN_PRICE",
    "BillingModel",
    "Cost",
    "CostCapabilities",
    "PriceSheet",
    "PricingStatus",
    "Rate",
    "format_decimal",
    "sheet_from_catalog",
    "sheet_from_config",
]
