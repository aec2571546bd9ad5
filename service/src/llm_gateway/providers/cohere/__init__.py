"""The Cohere Chat API v2."""

from llm_gateway.providers.cohere.adapter import CohereProvider

__all__ = ["CohereProvider"]
