"""The Chat Completions wire format: OpenAI and Azure OpenAI."""

from llm_gateway.providers.openai.adapter import OpenAIProvider
from llm_gateway.providers.openai.azure import AzureOpenAIProvider

__all__ = ["AzureOpenAIProvider", "OpenAIProvider"]
