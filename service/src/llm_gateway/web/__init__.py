"""The HTTP front doors: OpenAI's Chat Completions and Anthropic's Messages formats onto the same
gateway core as gRPC. Each only decodes and encodes; auth, request ids, drain, the call's record
and everything observing it are shared with the gRPC door."""
