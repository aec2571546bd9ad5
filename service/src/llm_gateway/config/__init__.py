"""Configuration: schema, embedded defaults and loading."""

from llm_gateway.config.loader import ConfigError, default_config_text, load_config
from llm_gateway.config.schema import (
    AnthropicProviderConfig,
    AzureOpenAIProviderConfig,
    GatewayConfig,
    MockProviderConfig,
    OpenAIProviderConfig,
    PriceConfig,
    ProviderConfig,
)

__all__ = [
    "AnthropicProviderConfig",
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
