"""OpenAI Chat Completions."""

from llm_gateway.providers.openai.adapter import OpenAIProvider

__all__ = ["OpenAIProvider"]
