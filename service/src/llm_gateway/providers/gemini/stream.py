"""Gemini's streamed replies (`streamGenerateContent?alt=sse`) to domain stream events.

Every SSE `data:` line is a whole `GenerateContentResponse` holding the next piece: text parts,
and function calls whole (never split across chunks). `usageMetadata` counts so far ride on the
chunks, the last ones final; the last chunk carries the candidate's `finishReason`. There is no
end marker: the stream ends when the connection closes, so one that closes before any finish
reason (or prompt block) was cut off. An `error` object in place of a chunk ends the stream.
"""

from __future__ import annotations

from typing import Any

from llm_gateway.domain.results import FinishReason, StreamDone, StreamEvent, TextDelta, ToolCallDelta, Usage
from llm_gateway.providers.gemini.mapping import (
    answer_parts,
    block_reason,
    candidate_finish,
    finish_reason,
    map_usage,
    tool_call,
)
from llm_gateway.providers.toolcalls import call_nonce


class ChunkDecoder:
    __slots__ = ("_blocked", "_calls", "_finish", "_model", "_nonce", "_response_id", "_usage", "error")

    def __init__(self) -> None:
        self._nonce = call_nonce()
        self._calls = 0
        self._finish: str | None = None  # the candidate's finishReason
        self._blocked = False  # promptFeedback.blockReason: the prompt was refused
        self._usage: Usage | None = None
        self._response_id = ""
        self._model = ""
        self.error: dict[str, Any] | None = None  # an `error` object inside a 200 stream

    @property
    def finished(self) -> bool:
        return self._finish is not None or self._blocked

    def feed(self, data: dict[str, Any]) -> list[StreamEvent]:
        if "error" in data:
            error = data["error"]
            self.error = error if isinstance(error, dict) else {"message": str(error)}
            return []
        self._response_id = str(data.get("responseId") or self._response_id)
        self._model = str(data.get("modelVersion") or self._model)
        if data.get("usageMetadata"):
            self._usage = map_usage(data["usageMetadata"])
        if block_reason(data):
            self._blocked = True
        self._finish = candidate_finish(data) or self._finish
        events: list[StreamEvent] = []
        for part in answer_parts(data):
            if "functionCall" in part:
                call = tool_call(part["functionCall"], self._calls, self._nonce)
                events.append(ToolCallDelta(self._calls, call.id, call.name, call.arguments))
                self._calls += 1
            elif part.get("text"):
                events.append(TextDelta(part["text"]))
        return events

    def done(self) -> StreamDone:
        if self._blocked:
            reason = FinishReason.CONTENT_FILTER
        else:
            reason = finish_reason(self._finish, tool_calls=self._calls > 0)
        return StreamDone(
            finish_reason=reason,
            usage=self._usage,
            response_id=self._response_id,
            provider_model=self._model,
        )
