"""Which providers are enabled, and their adapters."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp

from llm_gateway.config.schema import (
    AnthropicProviderConfig,
    AzureOpenAIProviderConfig,
    CohereProviderConfig,
    GatewayConfig,
    GeminiProviderConfig,
    MockProviderConfig,
    OllamaProviderConfig,
    OpenAICompatibleProviderConfig,
    OpenAIProviderConfig,
    ProviderConfig,
)
from llm_gateway.providers.anthropic import AnthropicProvider
from llm_gateway.providers.base import Provider
from llm_gateway.providers.cohere import CohereProvider
from llm_gateway.providers.gemini import GeminiProvider
from llm_gateway.providers.mock import MockProvider
from llm_gateway.providers.ollama import OllamaProvider
from llm_gateway.providers.openai import AzureOpenAIProvider, OpenAICompatibleProvider, OpenAIProvider

# Hosted APIs that are enabled by default only when their key is set.
_KEYED = (OpenAIProviderConfig, AnthropicProviderConfig, GeminiProviderConfig, CohereProviderConfig)


def is_enabled(config: ProviderConfig) -> bool:
    """`enabled` when set; otherwise on when the provider needs no key or has one."""
    if config.enabled is not None:
        return config.enabled
    if isinstance(
        config, OpenAIProviderConfig | AnthropicProviderConfig | GeminiProviderConfig | CohereProviderConfig
    ):
        return bool(config.api_key and config.api_key.get_secret_value())
    if isinstance(config, OpenAICompatibleProviderConfig):
        if config.requires_api_key:
            return bool(config.api_key and config.api_key.get_secret_value())
        return True
    if isinstance(config, AzureOpenAIProviderConfig):
        return bool(config.endpoint and config.api_key and config.api_key.get_secret_value())
    return True


def enabled_providers(config: GatewayConfig) -> dict[str, ProviderConfig]:
    return {name: p for name, p in config.providers.items() if is_enabled(p)}


def build_providers(
    enabled: Mapping[str, ProviderConfig], http: aiohttp.ClientSession
) -> dict[str, Provider]:
    providers: dict[str, Provider] = {}
    for name, config in enabled.items():
        if isinstance(config, MockProviderConfig):
            providers[name] = MockProvider(name, config.chunk_delay)
        elif isinstance(config, AzureOpenAIProviderConfig):
            providers[name] = AzureOpenAIProvider(name, config, http)
        elif isinstance(config, OpenAICompatibleProviderConfig):
            providers[name] = OpenAICompatibleProvider(name, config, http)
        elif isinstance(config, AnthropicProviderConfig):
            providers[name] = AnthropicProvider(name, config, http)
        elif isinstance(config, GeminiProviderConfig):
            providers[name] = GeminiProvider(name, config, http)
        elif isinstance(config, OllamaProviderConfig):
            providers[name] = OllamaProvider(name, config, http)
        elif isinstance(config, CohereProviderConfig):
            providers[name] = CohereProvider(name, config, http)
        else:
            providers[name] = OpenAIProvider(name, config, http)
    return providers
