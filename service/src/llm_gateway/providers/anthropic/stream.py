"""Anthropic's streamed Messages events to domain stream events.

The sequence: `message_start` (id, model, input and cache usage), then per content block
`content_block_start`, deltas (`text_delta`, `input_json_delta` for tool input, `thinking_delta`
and `signature_delta` for thinking) and `content_block_stop`; then `message_delta` (stop reason,
cumulative output usage) and `message_stop`. `ping` may come at any point; `error` ends the stream.
"""

from __future__ import annotations

from typing import Any

from llm_gateway.domain.results import FinishReason, StreamDone, StreamEvent, TextDelta, ToolCallDelta, Usage
from llm_gateway.providers.anthropic.mapping import map_usage, stop_reason


class EventDecoder:
    __slots__ = ("_finish", "_model", "_response_id", "_tools", "_usage", "error", "stopped")

    def __init__(self) -> None:
        self._finish: FinishReason | None = None
        self._usage: dict[str, Any] = {}
        self._response_id = ""
        self._model = ""
        self._tools: dict[int, int] = {}  # content block index -> tool call index
        self.error: dict[str, Any] | None = None  # an `error` event inside a 200 stream
        self.stopped = False  # `message_stop` arrived

    def feed(self, kind: str, data: dict[str, Any]) -> list[StreamEvent]:
        kind = str(data.get("type") or kind)
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            delta_kind = delta.get("type")
            if delta_kind == "text_delta" and delta.get("text"):
                return [TextDelta(delta["text"])]
            if delta_kind == "input_json_delta" and delta.get("partial_json"):
                tool = self._tools.get(int(data.get("index", 0)))
                if tool is not None:
                    return [ToolCallDelta(index=tool, arguments=delta["partial_json"])]
            return []
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                tool = self._tools[int(data.get("index", 0))] = len(self._tools)
                return [
                    ToolCallDelta(
                        index=tool, id=str(block.get("id") or ""), name=str(block.get("name") or "")
                    )
                ]
            if block.get("type") == "text" and block.get("text"):
                return [TextDelta(block["text"])]
            return []
        if kind == "message_start":
            message = data.get("message") or {}
            self._response_id = str(message.get("id") or "")
            self._model = str(message.get("model") or "")
            self._usage.update(message.get("usage") or {})
        elif kind == "message_delta":
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason:
                self._finish = stop_reason(reason)
            # Cumulative counts: later values replace earlier ones.
            self._usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})
        elif kind == "message_stop":
            self.stopped = True
        elif kind == "error":
            error = data.get("error")
            self.error = error if isinstance(error, dict) else {"message": str(error)}
        return []

    def usage(self) -> Usage | None:
        return map_usage(self._usage) if "output_tokens" in self._usage else None

    def done(self) -> StreamDone:
        return StreamDone(
            finish_reason=self._finish or FinishReason.OTHER,
            usage=self.usage(),
            response_id=self._response_id,
            provider_model=self._model,
        )
