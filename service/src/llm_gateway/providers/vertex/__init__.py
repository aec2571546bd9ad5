"""Google Vertex AI: Gemini and Anthropic's Claude."""

from llm_gateway.providers.vertex.adapter import VertexProvider

__all__ = ["VertexProvider"]
