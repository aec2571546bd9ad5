"""AWS Bedrock's Converse API."""

from llm_gateway.providers.bedrock.adapter import BedrockProvider

__all__ = ["BedrockProvider"]
