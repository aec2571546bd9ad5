"""Cohere's streamed Chat v2 events to domain stream events.

Each SSE event's data is JSON with a `type`. The sequence: `message-start` (the id), then text as
`content-start` / `content-delta`s / `content-end` (a reasoning model's `thinking` content comes the
same way, and is left out), or a tool-calling turn as `tool-plan-delta`s followed, per call, by
`tool-call-start` (id, name), `tool-call-delta`s (argument text) and `tool-call-end`; citation events
may come between; `message-end` carries the finish reason and usage and ends the stream. A failure
inside a 200 stream arrives as `message-end` with finish reason ERROR and an `error` message.

The tool plan is streamed as text, as the unary reply returns it (see `mapping`).
"""

from __future__ import annotations

from typing import Any

from llm_gateway.domain.results import FinishReason, StreamDone, StreamEvent, TextDelta, ToolCallDelta, Usage
from llm_gateway.providers.cohere.mapping import finish_reason, map_usage


class EventDecoder:
    __slots__ = ("_finish", "_response_id", "_tools", "_usage", "_with_arguments", "ended", "error")

    def __init__(self) -> None:
        self._finish: FinishReason | None = None
        self._usage: Usage | None = None
        self._response_id = ""
        self._tools: dict[int, int] = {}  # Cohere's event index -> the gateway's tool call index
        self._with_arguments: set[int] = set()  # tool calls that have had argument text
        self.ended = False  # `message-end` arrived
        self.error: str | None = None  # the message of a generation that failed mid-stream

    def feed(self, data: dict[str, Any]) -> list[StreamEvent]:
        kind = data.get("type")
        delta = data.get("delta") or {}
        message = delta.get("message") or {}
        if kind in ("content-delta", "content-start"):
            text = (message.get("content") or {}).get("text")
            return [TextDelta(text)] if text else []
        if kind == "tool-plan-delta":
            plan = message.get("tool_plan")
            return [TextDelta(plan)] if plan else []
        if kind == "tool-call-start":
            call = message.get("tool_calls") or {}
            function = call.get("function") or {}
            tool = len(self._tools)
            self._tools[int(data.get("index", tool))] = tool
            arguments = str(function.get("arguments") or "")
            if arguments:
                self._with_arguments.add(tool)
            return [
                ToolCallDelta(
                    index=tool,
                    id=str(call.get("id") or ""),
                    name=str(function.get("name") or ""),
                    arguments=arguments,
                )
            ]
        if kind == "tool-call-delta":
            piece = ((message.get("tool_calls") or {}).get("function") or {}).get("arguments")
            target = self._tool(data)
            if piece and target is not None:
                self._with_arguments.add(target)
                return [ToolCallDelta(index=target, arguments=str(piece))]
            return []
        if kind == "tool-call-end":
            # A call without arguments streams none; the unary reply gives it "{}".
            ended = self._tool(data)
            if ended is not None and ended not in self._with_arguments:
                self._with_arguments.add(ended)
                return [ToolCallDelta(index=ended, arguments="{}")]
            return []
        if kind == "message-start":
            self._response_id = str(data.get("id") or "")
        elif kind == "message-end":
            self.ended = True
            self._response_id = self._response_id or str(data.get("id") or "")
            reason = delta.get("finish_reason")
            self._finish = finish_reason(reason)
            self._usage = map_usage(delta.get("usage"))
            if reason == "ERROR" or delta.get("error"):
                self.error = str(delta.get("error") or "the generation failed (finish reason ERROR)")
        return []

    def _tool(self, data: dict[str, Any]) -> int | None:
        """The gateway's index of the call an event is about: by its index, else the latest call."""
        if "index" in data:
            return self._tools.get(int(data["index"]))
        return len(self._tools) - 1 if self._tools else None

    def done(self) -> StreamDone:
        return StreamDone(
            finish_reason=self._finish or FinishReason.OTHER,
            usage=self._usage,
            response_id=self._response_id,
        )
