"""Configuration: schema, embedded defaults and loading."""

from llm_gateway.config.loader import ConfigError, default_config_text, load_config
from llm_gateway.config.schema import (
    AzureOpenAIProviderConfig,
    GatewayConfig,
    MockProviderConfig,
    OpenAIProviderConfig,
    PriceConfig,
    ProviderConfig,
)

__all__ = [
    "AzureOpenAIProviderConfig",
    "ConfigError",
    "GatewayConfig",
    "MockProviderConfig",
    "OpenAIProviderConfig",
    "PriceConfig",
    "ProviderConfig",
    "default_config_text",
    "load_config",
]
