"""What a provider returns: completions, stream events, usage and finish reasons."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from llm_gateway.domain.messages import ToolCall


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"
    OTHER = "other"


@dataclass(slots=True)
class Usage:
    """Token counts normalised across providers.

    `prompt_tokens` includes cache reads and writes; `completion_tokens` includes reasoning tokens.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0  # the part of cache_write_tokens in a one-hour cache
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Completion:
    """A whole reply from one upstream call."""

    text: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: FinishReason = FinishReason.STOP
    usage: Usage | None = None  # None when the provider reported none
    response_id: str = ""
    provider_model: str = ""


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call; `id` and `name` arrive on the first piece of each index."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(slots=True)
class StreamDone:
    """The last event of every provider stream."""

    finish_reason: FinishReason
    usage: Usage | None = None
    response_id: str = ""
    provider_model: str = ""


StreamEvent = TextDelta | ToolCallDelta | StreamDone
