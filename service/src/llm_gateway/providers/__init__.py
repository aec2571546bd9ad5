"""Provider adapters: one per wire format, each translating requests and replies only."""

from llm_gateway.providers.base import Provider, UpstreamCall
from llm_gateway.providers.registry import build_providers, enabled_providers, is_enabled

__all__ = ["Provider", "UpstreamCall", "build_providers", "enabled_providers", "is_enabled"]
