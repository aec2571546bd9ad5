"""Which providers are enabled, their adapters, and the servers that count their models' tokens."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import aiohttp

from llm_gateway.config.schema import (
    AnthropicProviderConfig,
    AzureOpenAIProviderConfig,
    BedrockProviderConfig,
    CohereProviderConfig,
    GatewayConfig,
    GeminiProviderConfig,
    MockProviderConfig,
    OllamaProviderConfig,
    OpenAICompatibleProviderConfig,
    OpenAIProviderConfig,
    ProviderConfig,
    VertexProviderConfig,
)
from llm_gateway.providers.adapter import bearer
from llm_gateway.providers.anthropic import AnthropicProvider
from llm_gateway.providers.base import Provider
from llm_gateway.providers.bedrock import BedrockProvider
from llm_gateway.providers.cohere import CohereProvider
from llm_gateway.providers.gemini import GeminiProvider
from llm_gateway.providers.mock import MockProvider
from llm_gateway.providers.ollama import OllamaProvider
from llm_gateway.providers.openai import AzureOpenAIProvider, OpenAICompatibleProvider, OpenAIProvider
from llm_gateway.providers.openai.mapping import prompt_body
from llm_gateway.providers.vertex import VertexProvider
from llm_gateway.tokens import server as token_server

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
    if isinstance(config, VertexProviderConfig):
        return config.project is not None
    if isinstance(config, BedrockProviderConfig):  # a key pair, an API key or a profile
        return bool((config.access_key_id and config.secret_access_key) or config.api_key or config.profile)
    return True


def enabled_providers(config: GatewayConfig) -> dict[str, ProviderConfig]:
    return {name: p for name, p in config.providers.items() if is_enabled(p)}


def build_providers(
    enabled: Mapping[str, ProviderConfig], http: aiohttp.ClientSession, *, token_counters: bool = True
) -> dict[str, Provider]:
    """The adapters of the `enabled` providers, all on the one `http` client. With `token_counters`
    (a serving gateway; not the docs generator, which makes no calls) the compatible servers whose
    dialect names a tokenize endpoint are registered to count their models' tokens."""
    providers: dict[str, Provider] = {}
    for name, config in enabled.items():
        if isinstance(config, MockProviderConfig):
            providers[name] = MockProvider(name, config.chunk_delay)
        elif isinstance(config, AzureOpenAIProviderConfig):
            providers[name] = AzureOpenAIProvider(name, config, http)
        elif isinstance(config, OpenAICompatibleProviderConfig):
            providers[name] = OpenAICompatibleProvider(name, config, http)
            if token_counters:
                _register_token_counter(config, http)
        elif isinstance(config, AnthropicProviderConfig):
            providers[name] = AnthropicProvider(name, config, http)
        elif isinstance(config, GeminiProviderConfig):
            providers[name] = GeminiProvider(name, config, http)
        elif isinstance(config, OllamaProviderConfig):
            providers[name] = OllamaProvider(name, config, http)
        elif isinstance(config, CohereProviderConfig):
            providers[name] = CohereProvider(name, config, http)
        elif isinstance(config, BedrockProviderConfig):
            providers[name] = BedrockProvider(name, config, http)
        elif isinstance(config, VertexProviderConfig):
            providers[name] = VertexProvider(name, config, http)
        else:
            providers[name] = OpenAIProvider(name, config, http)
    return providers


def _register_token_counter(config: OpenAICompatibleProviderConfig, http: aiohttp.ClientSession) -> None:
    """The server counts with the same client, key and message mapping as its chat calls use."""
    dialect = config.dialect
    if dialect.tokenize == "none" or config.base_url is None:
        return
    api_key = config.api_key.get_secret_value() if config.api_key else ""
    render = partial(prompt_body, dialect=dialect)
    token_server.register(dialect.tokenize, config.base_url, http, bearer(api_key), render)
