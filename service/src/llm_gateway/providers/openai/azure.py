"""Azure OpenAI: the Chat Completions wire format at a deployment's URL, with an `api-key` header.

Each gateway model maps to a deployment (`deployment` in its catalog entry, else its name); the
`model` field of the body is ignored by Azure. Azure streams open with a chunk that carries only
`prompt_filter_results` and no choices, which the Chat Completions decoder passes over.
"""

from __future__ import annotations

from urllib.parse import quote

import aiohttp

from llm_gateway.config.schema import AzureOpenAIProviderConfig
from llm_gateway.providers.base import UpstreamCall
from llm_gateway.providers.openai.adapter import ChatCompletionsProvider


class AzureOpenAIProvider(ChatCompletionsProvider):
    def __init__(self, name: str, config: AzureOpenAIProviderConfig, http: aiohttp.ClientSession) -> None:
        if config.endpoint is None:
            raise ValueError(f"providers.{name}.endpoint is required")
        api_key = config.api_key.get_secret_value() if config.api_key else ""
        super().__init__(name, http, {"api-key": api_key}, (api_key,), config.timeout)
        self._base = f"{config.endpoint}/openai/deployments/"
        self._query = f"/chat/completions?api-version={quote(config.api_version)}"
        # gateway model name -> deployment, for listed models; unlisted ones use their own name
        self._deployments = {
            key: model.deployment or model.name or key for key, model in config.models.items()
        }

    def _url(self, call: UpstreamCall, *, stream: bool) -> str:
        key = call.model.id.partition(":")[2]
        deployment = self._deployments.get(key) or call.model.name
        return f"{self._base}{quote(deployment, safe='')}{self._query}"
