"""The built-in deterministic mock provider."""

from llm_gateway.providers.mock.provider import MockProvider

__all__ = ["MockProvider"]
