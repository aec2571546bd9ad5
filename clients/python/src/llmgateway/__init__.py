"""Python client for the LLM Gateway gRPC API.

The generated messages and stubs live in `llmgateway.v1`; the helpers of `llmgateway.client`
(connecting with an API key, reading rich errors, building messages) are re-exported here.
"""

from llmgateway.client import (
    AsyncConnection,
    Connection,
    assistant,
    bad_request,
    connect,
    connect_async,
    error_info,
    retry_info,
    rpc_status,
    system,
    text,
    to_decimal,
    user,
)

__all__ = [
    "AsyncConnection",
    "Connection",
    "assistant",
    "bad_request",
    "connect",
    "connect_async",
    "error_info",
    "retry_info",
    "rpc_status",
    "system",
    "text",
    "to_decimal",
    "user",
]
