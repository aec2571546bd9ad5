"""Ollama's NDJSON chat stream to domain stream events.

Each line is a whole chat response object: `message.content` holds the next piece of text,
`message.thinking` the next piece of thinking (not part of the answer, so not passed on), and
`message.tool_calls` complete calls, never pieces. The last line has `done: true`, the
`done_reason` and the token counts. A line `{"error": "..."}` reports a failure inside the 200 reply.
"""

from __future__ import annotations

from typing import Any

from llm_gateway.domain.results import StreamDone, StreamEvent, TextDelta, ToolCallDelta, Usage
from llm_gateway.providers.ollama.mapping import finish_reason, map_usage, tool_call
from llm_gateway.providers.toolcalls import call_nonce


class ChunkDecoder:
    __slots__ = ("_calls", "_model", "_nonce", "_reason", "_usage", "error", "finished")

    def __init__(self) -> None:
        self._calls = 0  # tool calls so far: the next call's index
        self._nonce = call_nonce()
        self._model = ""
        self._reason: str | None = None
        self._usage: Usage | None = None
        self.error: str | None = None  # an error line inside a 200 stream
        self.finished = False  # the `done: true` line arrived

    def feed(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        if "error" in chunk:
            error = chunk["error"]
            self.error = str(error.get("message") or error) if isinstance(error, dict) else str(error)
            return []
        if not self._model:
            self._model = str(chunk.get("model") or "")
        message = chunk.get("message") or {}
        events: list[StreamEvent] = []
        if message.get("content"):
            events.append(TextDelta(message["content"]))
        for raw in message.get("tool_calls") or ():
            call = tool_call(raw, self._calls, self._nonce)
            events.append(ToolCallDelta(self._calls, call.id, call.name, call.arguments))
            self._calls += 1
        if chunk.get("done"):
            self.finished = True
            self._reason = chunk.get("done_reason")
            self._usage = map_usage(chunk)
        return events

    def done(self) -> StreamDone:
        return StreamDone(
            finish_reason=finish_reason(self._reason, self._calls > 0),
            usage=self._usage,
            provider_model=self._model,
        )
