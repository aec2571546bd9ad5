"""OpenAI `chat.completion.chunk` SSE events to domain stream events."""

from __future__ import annotations

from typing import Any

from llm_gateway.domain.results import FinishReason, StreamDone, StreamEvent, TextDelta, ToolCallDelta, Usage
from llm_gateway.providers.openai.mapping import finish_reason, map_usage


class ChunkDecoder:
    """Decodes one stream's chunks. With `stream_options.include_usage`, usage arrives in a last
    chunk with no choices, after the chunk that carries the finish reason."""

    __slots__ = ("_finish", "_model", "_reasoning_in_completion", "_response_id", "_usage", "error")

    def __init__(self, *, reasoning_in_completion: bool = True) -> None:
        self._reasoning_in_completion = reasoning_in_completion
        self._finish: FinishReason | None = None
        self._usage: Usage | None = None
        self._response_id = ""
        self._model = ""
        self.error: dict[str, Any] | None = None  # an error event inside a 200 stream

    @property
    def finished(self) -> bool:
        return self._finish is not None

    def feed(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        if "error" in chunk:
            self.error = (
                chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            )
            return []
        if not self._response_id:
            self._response_id = str(chunk.get("id") or "")
            self._model = str(chunk.get("model") or "")
        # Groq has sent stream usage under `x_groq` instead of a usage chunk.
        raw_usage = chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage")
        usage = map_usage(raw_usage, reasoning_in_completion=self._reasoning_in_completion)
        if usage is not None:
            self._usage = usage
        events: list[StreamEvent] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content") or delta.get("refusal")
            if content:
                events.append(TextDelta(content))
            for call in delta.get("tool_calls") or ():
                function = call.get("function") or {}
                events.append(
                    ToolCallDelta(
                        index=int(call["index"]),
                        id=call.get("id") or "",
                        name=function.get("name") or "",
                        arguments=function.get("arguments") or "",
                    )
                )
            if choice.get("finish_reason"):
                self._finish = finish_reason(choice["finish_reason"])
        return events

    def done(self) -> StreamDone:
        return StreamDone(
            finish_reason=self._finish or FinishReason.OTHER,
            usage=self._usage,
            response_id=self._response_id,
            provider_model=self._model,
        )
