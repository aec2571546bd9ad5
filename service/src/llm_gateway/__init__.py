"""LLM Gateway: one gRPC contract to every LLM provider, with exact usage, cost and latency."""
