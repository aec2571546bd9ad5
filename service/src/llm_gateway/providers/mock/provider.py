"""The built-in mock provider: deterministic replies with no network, for integration tests and demos.

Behaviour, in order of precedence:

- The last message is a tool result: the reply is "Tool result: <its text>".
- Tools are given, tool choice is not NONE, and the choice names a tool, is REQUIRED, or the last
  user message mentions a tool by name: the reply calls that tool (or the first one), with
  arguments built from its JSON Schema: numbers 0, booleans false, an enum its first value, and
  strings what the user text names, found the same way every time: its first quoted phrase
  ("...", '...' or curly quotes), else its last capitalised word or run of them, leaving out each
  sentence's first word and the pronoun "I" ("What is the weather in New York?" gives
  "New York"), else the whole text.
- A JSON response format: the reply is a JSON object (for a schema, its properties filled as
  above, with strings taking the whole user text; otherwise {"text": <user text>}).
- Otherwise the reply is the text of the last user message.

A stop sequence cuts the reply before it; `max_tokens` truncates it (finish reason LENGTH). Usage
uses the gateway's token approximation, so a dry run's estimate equals the real call's usage.
Streams send the reply word by word.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import AsyncGenerator
from typing import Any

from llm_gateway.domain.messages import (
    ChatRequest,
    ResponseFormatType,
    Role,
    Tool,
    ToolCall,
    ToolChoiceMode,
)
from llm_gateway.domain.results import (
    Completion,
    FinishReason,
    StreamDone,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from llm_gateway.providers.base import NO_RULES, UpstreamCall
from llm_gateway.tokens.approximate import CHARS_PER_TOKEN, completion_tokens, prompt_tokens, text_tokens

_WORD = re.compile(r"\s*\S+")
# A quoted phrase: double quotes, curly quotes, or single quotes that are not apostrophes.
_QUOTED = re.compile(r'"([^"]+)"|“([^”]+)”|‘([^’]+)’|(?<!\w)\'([^\']+)\'(?!\w)')
# Words (letters first, then letters, digits, apostrophes or hyphens), sentence ends, and any
# other single character (which breaks a run of capitalised words).
_TOKEN = re.compile(r"[^\W\d_][\w'’-]*|[.!?]|\S")


class MockProvider:
    option_rules = NO_RULES  # the mock reads no options

    def __init__(self, name: str, chunk_delay: float = 0.0) -> None:
        self.name = name
        self._chunk_delay = chunk_delay

    async def chat(self, call: UpstreamCall) -> Completion:
        return _reply(call)

    async def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        completion = _reply(call)
        for piece in _pieces(completion.text):
            if self._chunk_delay:
                await asyncio.sleep(self._chunk_delay)
            yield TextDelta(piece)
        for index, tool_call in enumerate(completion.tool_calls):
            half = len(tool_call.arguments) // 2
            yield ToolCallDelta(index, tool_call.id, tool_call.name, tool_call.arguments[:half])
            yield ToolCallDelta(index, arguments=tool_call.arguments[half:])
        yield StreamDone(
            completion.finish_reason,
            completion.usage,
            completion.response_id,
            completion.provider_model,
        )

    async def aclose(self) -> None:
        return None


def _reply(call: UpstreamCall) -> Completion:
    request = call.request
    text, tool_calls, finish = _answer(request)
    stops = [s for s in request.generation.stop if s in text]
    if stops:
        text = text[: min(text.index(s) for s in stops)]
    max_tokens = request.generation.max_tokens
    if max_tokens is not None and text_tokens(text) > max_tokens:
        text = text[: max_tokens * CHARS_PER_TOKEN]
        finish = FinishReason.LENGTH
    digest = hashlib.sha256(repr(request.messages).encode()).hexdigest()[:24]
    return Completion(
        text=text,
        tool_calls=tool_calls,
        finish_reason=finish,
        usage=Usage(prompt_tokens(request), completion_tokens(text, tool_calls)),
        response_id=f"mock-{digest}",
        provider_model=call.model.name,
    )


def _answer(request: ChatRequest) -> tuple[str, list[ToolCall], FinishReason]:
    last = request.messages[-1]
    user_text = request.last_user_text()
    if last.role is Role.TOOL:
        return f"Tool result: {last.text()}", [], FinishReason.STOP
    tool = _tool_to_call(request, user_text)
    if tool is not None:
        arguments = json.dumps(_fill(tool.parameters or {}, _argument(user_text)), separators=(",", ":"))
        call_id = "call_" + hashlib.sha256(f"{tool.name}:{arguments}".encode()).hexdigest()[:16]
        return "", [ToolCall(call_id, tool.name, arguments)], FinishReason.TOOL_CALLS
    fmt = request.response_format
    if fmt is not None and fmt.type is ResponseFormatType.JSON_SCHEMA and fmt.json_schema:
        return json.dumps(_fill(fmt.json_schema, user_text)), [], FinishReason.STOP
    if fmt is not None and fmt.type is ResponseFormatType.JSON_OBJECT:
        return json.dumps({"text": user_text}), [], FinishReason.STOP
    return user_text, [], FinishReason.STOP


def _tool_to_call(request: ChatRequest, user_text: str) -> Tool | None:
    if not request.tools:
        return None
    choice = request.tool_choice
    mode = choice.mode if choice else ToolChoiceMode.AUTO
    if mode is ToolChoiceMode.NONE:
        return None
    if mode is ToolChoiceMode.NAMED and choice is not None:
        return next((t for t in request.tools if t.name == choice.tool_name), None)
    mentioned = next((t for t in request.tools if t.name in user_text), None)
    if mentioned is not None:
        return mentioned
    return request.tools[0] if mode is ToolChoiceMode.REQUIRED else None


def _fill(schema: Any, text: str) -> Any:
    """A value matching `schema`. The schema is the caller's and unchecked: a keyword of the wrong
    JSON type (`"properties": "x"`, `"enum": 3`) is ignored, as if it were absent."""
    if not isinstance(schema, dict):
        return text
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        properties = schema.get("properties")
        if not isinstance(properties, dict):
            properties = {}
        required = schema.get("required")
        if isinstance(required, list) and required:
            names = [name for name in required if isinstance(name, str)]
        else:
            names = list(properties)
        return {name: _fill(properties.get(name) or {}, text) for name in names}
    if kind == "array":
        return []
    if kind in ("number", "integer"):
        return 0
    if kind == "boolean":
        return False
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    return text


def _argument(text: str) -> str:
    """The value a model would pass for a string argument: what `text` quotes, else the name it
    ends on (a capitalised word or run of them that does not open a sentence), else all of it."""
    quoted = _QUOTED.search(text)
    if quoted is not None:
        return next(group for group in quoted.groups() if group is not None)
    name: list[str] = []
    last = ""
    opens_sentence = True
    for token in _TOKEN.findall(text):
        if token[0].isupper() and not opens_sentence and token != "I" and not token.startswith(("I'", "I’")):
            name.append(token)
        elif name:
            last, name = " ".join(name), []
        opens_sentence = token in ".!?"
    return " ".join(name) if name else last or text


def _pieces(text: str) -> list[str]:
    pieces = _WORD.findall(text)
    rest = text[sum(len(p) for p in pieces) :]
    if rest:
        pieces.append(rest)
    return pieces
