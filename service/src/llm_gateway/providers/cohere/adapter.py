"""Placeholder until the Cohere adapter lands."""

from __future__ import annotations

import aiohttp

from llm_gateway.config.schema import CohereProviderConfig
from llm_gateway.providers.adapter import HttpAdapter


class CohereProvider(HttpAdapter):
    def __init__(self, name: str, config: CohereProviderConfig, http: aiohttp.ClientSession) -> None:
        api_key = config.api_key.get_secret_value() if config.api_key else ""
        super().__init__(name, http, {}, (api_key,), config.timeout)
