"""Azure OpenAI: the Chat Completions wire format at a deployment's URL, with an `api-key` header;
or, for the models that use it, the Responses API of Azure's v1 API, the deployment as `model`.

Each gateway model maps to a deployment (`deployment` in its catalog entry, else its name); the
`model` field of the body is ignored by Azure. Azure streams open with a chunk that carries only
`prompt_filter_results` and no choices, which the Chat Completions decoder passes over.
"""

from __future__ import annotations

from urllib.parse import quote

import aiohttp

from llm_gateway.config.schema import AzureOpenAIProviderConfig
from llm_gateway.providers.base import UpstreamCall
from llm_gateway.providers.openai.adapter import EitherApiProvider


class AzureOpenAIProvider(EitherApiProvider):
    def __init__(self, name: str, config: AzureOpenAIProviderConfig, http: aiohttp.ClientSession) -> None:
        if config.endpoint is None:
            raise ValueError(f"providers.{name}.endpoint is required")
        api_key = config.api_key.get_secret_value() if config.api_key else ""
        super().__init__(
            name,
            http,
            {"api-key": api_key},
            (api_key,),
            config.timeout,
            url="",
            # Azure's v1 API: the deployment is the body's `model`, not a part of the URL.
            responses_url=f"{config.endpoint}/openai/v1/responses",
            api=config.api,
            models=config.models,
        )
        self._base = f"{config.endpoint}/openai/deployments/"
        self._query = f"/chat/completions?api-version={quote(config.api_version)}"
        # gateway model name -> deployment, for listed models; unlisted ones use their own name
        self._deployments = {
            key: model.deployment or model.name or key for key, model in config.models.items()
        }

    def _upstream_model(self, call: UpstreamCall) -> str:
        return self._deployments.get(call.model.id.partition(":")[2]) or call.model.name

    def _url(self, call: UpstreamCall, *, stream: bool) -> str:
        if self.uses_responses(call):
            return super()._url(call, stream=stream)
        return f"{self._base}{quote(self._upstream_model(call), safe='')}{self._query}"
