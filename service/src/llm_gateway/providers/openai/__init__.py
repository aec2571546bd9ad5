"""The Chat Completions wire format: OpenAI, Azure OpenAI and every compatible server."""

from llm_gateway.providers.openai.adapter import OpenAICompatibleProvider, OpenAIProvider
from llm_gateway.providers.openai.azure import AzureOpenAIProvider

__all__ = ["AzureOpenAIProvider", "OpenAICompatibleProvider", "OpenAIProvider"]
