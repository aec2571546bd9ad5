"""LLM Gateway: one gRPC contract to every LLM provider, with exact usage, cost and latency.

Run it with the `llm-gateway` command; embed it with `create_server(load_config(...))`.
"""

from llm_gateway.config import load_config
from llm_gateway.server import GatewayServer, create_server

__all__ = ["GatewayServer", "create_server", "load_config"]
