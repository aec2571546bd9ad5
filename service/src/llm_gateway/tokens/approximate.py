"""The documented approximation used where no offline tokenizer exists for a model.

Not a tokenizer: about 4 characters of English text per token (OpenAI's
rule of thumb), 4 tokens of framing per message, and 85 tokens per image (the low-detail cost of an
OpenAI image). Results are marked as approximate wherever they reach a caller.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence

from llm_gateway.domain.messages import ChatRequest, ImagePart, Message, TextPart, ToolCall

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_PER_IMAGE = 85
TOKENS_REPLY_PRIMING = 3


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def message_tokens(message: Message) -> int:
    tokens = TOKENS_PER_MESSAGE + text_tokens(message.name)
    for part in message.parts:
        if isinstance(part, TextPart):
            tokens += text_tokens(part.text)
        elif isinstance(part, ImagePart):
            tokens += TOKENS_PER_IMAGE
    for call in message.tool_calls:
        tokens += text_tokens(call.name) + text_tokens(call.arguments)
    return tokens


def definition_texts(request: ChatRequest) -> Iterator[str]:
    """The text outside the messages that reaches the model: each tool's name, description and
    compact parameter schema, and the response schema. Every counter counts these the same way."""
    for tool in request.tools:
        yield tool.name
        yield tool.description
        if tool.parameters:
            yield json.dumps(tool.parameters, separators=(",", ":"))
    fmt = request.response_format
    if fmt is not None and fmt.json_schema:
        yield json.dumps(fmt.json_schema, separators=(",", ":"))


def prompt_tokens(request: ChatRequest) -> int:
    tokens = TOKENS_REPLY_PRIMING + sum(message_tokens(m) for m in request.messages)
    return tokens + sum(text_tokens(text) for text in definition_texts(request))


def completion_tokens(text: str, tool_calls: Sequence[ToolCall] = ()) -> int:
    return text_tokens(text) + sum(text_tokens(c.name) + text_tokens(c.arguments) for c in tool_calls)
