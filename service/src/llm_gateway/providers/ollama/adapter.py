"""Placeholder until the Ollama adapter lands."""

from __future__ import annotations

import aiohttp

from llm_gateway.config.schema import OllamaProviderConfig
from llm_gateway.providers.adapter import HttpAdapter


class OllamaProvider(HttpAdapter):
    def __init__(self, name: str, config: OllamaProviderConfig, http: aiohttp.ClientSession) -> None:
        api_key = config.api_key.get_secret_value() if config.api_key else ""
        super().__init__(name, http, {}, (api_key,), config.timeout)
