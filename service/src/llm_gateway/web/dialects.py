"""The HTTP door's two API dialects, OpenAI's Chat Completions and Anthropic's Messages, behind one
shape: decode a body into a domain request (and whether it streams), and an encoder for the reply,
the stream's events and the errors. The door's call handling is the same for both."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Protocol

from llm_gateway.domain.errors import GatewayError
from llm_gateway.domain.messages import ChatRequest
from llm_gateway.domain.results import TextDelta, ToolCallDelta
from llm_gateway.gateway.outcome import CallHeader, CallSummary, ChatOutcome
from llm_gateway.web import anthropic
from llm_gateway.web import openai_response as out
from llm_gateway.web.openai_request import decode as decode_openai


class Encoder(Protocol):
    def reply(self, outcome: ChatOutcome) -> dict[str, Any]: ...

    def start(self, header: CallHeader) -> list[bytes]: ...

    def delta(self, event: TextDelta | ToolCallDelta) -> list[bytes]: ...

    def finish(self, summary: CallSummary) -> list[bytes]: ...

    def end(self) -> list[bytes]: ...

    def error(self, err: GatewayError, request_id: str) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    decode: Callable[[Any, Collection[str]], tuple[ChatRequest, bool, Encoder]]
    error: Callable[[GatewayError, str], tuple[int, dict[str, Any]]]


class OpenAIEncoder:
    def __init__(self, include_usage: bool, dropped: tuple[str, ...], include: out.Include) -> None:
        self._include_usage = include_usage
        self._dropped = dropped
        self._include = include
        self._header: CallHeader | None = None

    def reply(self, outcome: ChatOutcome) -> dict[str, Any]:
        return out.completion(outcome, self._dropped, self._include)

    def start(self, header: CallHeader) -> list[bytes]:
        self._header = header
        return [out.sse(out.first_chunk(header))]

    def delta(self, event: TextDelta | ToolCallDelta) -> list[bytes]:
        assert self._header is not None
        return [out.sse(out.delta_chunk(self._header, event))]

    def finish(self, summary: CallSummary) -> list[bytes]:
        assert self._header is not None
        return [
            out.sse(c) for c in out.final_chunks(self._header, summary, self._include_usage, self._dropped)
        ]

    def end(self) -> list[bytes]:
        return [out.sse("[DONE]")]

    def error(self, err: GatewayError, request_id: str) -> bytes:
        return out.sse(out.error(err, request_id)[1])


class AnthropicEncoder:
    def __init__(self) -> None:
        self._stream: anthropic.StreamEncoder | None = None

    def reply(self, outcome: ChatOutcome) -> dict[str, Any]:
        return anthropic.message(outcome)

    def start(self, header: CallHeader) -> list[bytes]:
        self._stream = anthropic.StreamEncoder(header)
        return self._stream.start()

    def delta(self, event: TextDelta | ToolCallDelta) -> list[bytes]:
        assert self._stream is not None
        return self._stream.delta(event)

    def finish(self, summary: CallSummary) -> list[bytes]:
        assert self._stream is not None
        return self._stream.finish(summary)

    def end(self) -> list[bytes]:
        return []

    def error(self, err: GatewayError, request_id: str) -> bytes:
        return anthropic.event("error", anthropic.error(err, request_id)[1])


def _openai(body: Any, providers: Collection[str]) -> tuple[ChatRequest, bool, Encoder]:
    decoded = decode_openai(body, providers)
    return (
        decoded.chat,
        decoded.stream,
        OpenAIEncoder(decoded.include_usage, decoded.dropped, decoded.include),
    )


def _anthropic(body: Any, providers: Collection[str]) -> tuple[ChatRequest, bool, Encoder]:
    decoded = anthropic.decode(body, providers)
    return decoded.chat, decoded.stream, AnthropicEncoder()


OPENAI = Dialect(_openai, out.error)
ANTHROPIC = Dialect(_anthropic, anthropic.error)
