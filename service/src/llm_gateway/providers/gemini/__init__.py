"""The Google Gemini API."""

from llm_gateway.providers.gemini.adapter import GeminiProvider

__all__ = ["GeminiProvider"]
