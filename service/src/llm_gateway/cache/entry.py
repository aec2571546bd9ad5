"""What the cache keeps of a reply: enough to answer the same call again, unary or streamed, with
the same text, tool calls, events, usage and finish reason. Stored as JSON (never pickle: a
shared Redis must not be able to run code in the gateway)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from llm_gateway.domain.messages import ToolCall
from llm_gateway.domain.results import Completion, FinishReason, TextDelta, ToolCallDelta, Usage

Event = TextDelta | ToolCallDelta


@dataclass(frozen=True, slots=True)
class CachedReply:
    model: str  # the catalog id of the model that served it
    text: str
    tool_calls: tuple[ToolCall, ...]
    finish_reason: FinishReason
    usage: Usage
    provider_model: str = ""
    response_id: str = ""
    # A streamed reply's events as they came; a unary reply's are made from its text and tool calls.
    events: tuple[Event, ...] = field(default=())
    stored_at: float = 0.0  # Unix time

    def completion(self) -> Completion:
        return Completion(
            text=self.text,
            tool_calls=list(self.tool_calls),
            finish_reason=self.finish_reason,
            usage=self.usage,
            response_id=self.response_id,
            provider_model=self.provider_model,
        )

    def replay(self) -> tuple[Event, ...]:
        if self.events:
            return self.events
        made: list[Event] = [TextDelta(self.text)] if self.text else []
        made += [ToolCallDelta(i, c.id, c.name, c.arguments) for i, c in enumerate(self.tool_calls)]
        return tuple(made)

    def dumps(self) -> bytes:
        return json.dumps(
            {
                "model": self.model,
                "text": self.text,
                "tool_calls": [asdict(c) for c in self.tool_calls],
                "finish_reason": self.finish_reason.value,
                "usage": asdict(self.usage),
                "provider_model": self.provider_model,
                "response_id": self.response_id,
                "events": [
                    ["t", e.text] if isinstance(e, TextDelta) else ["c", e.index, e.id, e.name, e.arguments]
                    for e in self.events
                ],
                "stored_at": self.stored_at,
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def loads(cls, data: bytes) -> CachedReply:
        """The reply stored as `data`; ValueError (or KeyError, TypeError) when it is not one."""
        raw = json.loads(data)
        events: list[Event] = []
        for e in raw["events"]:
            events.append(
                TextDelta(str(e[1])) if e[0] == "t" else ToolCallDelta(int(e[1]), *map(str, e[2:5]))
            )
        return cls(
            model=str(raw["model"]),
            text=str(raw["text"]),
            tool_calls=tuple(ToolCall(**c) for c in raw["tool_calls"]),
            finish_reason=FinishReason(raw["finish_reason"]),
            usage=Usage(**raw["usage"]),
            provider_model=str(raw["provider_model"]),
            response_id=str(raw["response_id"]),
            events=tuple(events),
            stored_at=float(raw["stored_at"]),
        )
