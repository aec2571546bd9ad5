"""Anthropic's Messages API."""

from llm_gateway.providers.anthropic.adapter import AnthropicProvider

__all__ = ["AnthropicProvider"]
