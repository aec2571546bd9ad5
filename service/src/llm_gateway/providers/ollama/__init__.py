"""Ollama's native chat API."""

from llm_gateway.providers.ollama.adapter import OllamaProvider

__all__ = ["OllamaProvider"]
