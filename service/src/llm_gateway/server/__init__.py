"""The gRPC server: servicer, interceptors, health, reflection."""

from llm_gateway.server.app import SERVICE_NAME, GatewayServer, create_server

__all__ = ["SERVICE_NAME", "GatewayServer", "create_server"]
