"""Anthropic's Messages API onto the gateway core and back: `POST /v1/messages` request bodies as
domain requests, replies as `message` objects, streams as Anthropic's event sequence, and errors in
Anthropic's shape. Claude Code and the `anthropic` SDKs can then use any model behind the gateway.

Anthropic counts `input_tokens` without the prompt's cache reads and writes (they are reported
apart); the gateway's prompt count includes them, so they are taken off here.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from llm_gateway.domain.errors import Code, FieldViolation, GatewayError, Violations, invalid_request
from llm_gateway.domain.messages import (
    Caller,
    ChatRequest,
    GenerationConfig,
    ImagePart,
    Message,
    Part,
    Reasoning,
    Role,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
)
from llm_gateway.domain.results import FinishReason, TextDelta, ToolCallDelta, Usage
from llm_gateway.domain.validation import validate_chat_request
from llm_gateway.gateway.outcome import CallHeader, CallSummary, ChatOutcome
from llm_gateway.web.fields import integer, number, strings
from llm_gateway.web.openai_response import extensions

_STOP = {
    FinishReason.STOP: "end_turn",
    FinishReason.LENGTH: "max_tokens",
    FinishReason.TOOL_CALLS: "tool_use",
    FinishReason.CONTENT_FILTER: "refusal",
    FinishReason.OTHER: "end_turn",
}
_ERROR_TYPES = {
    Code.INVALID_ARGUMENT: "invalid_request_error",
    Code.FAILED_PRECONDITION: "invalid_request_error",
    Code.UNAUTHENTICATED: "authentication_error",
    Code.PERMISSION_DENIED: "permission_error",
    Code.NOT_FOUND: "not_found_error",
    Code.RESOURCE_EXHAUSTED: "rate_limit_error",
    Code.UNAVAILABLE: "overloaded_error",
    Code.DEADLINE_EXCEEDED: "timeout_error",
}
_KNOWN = frozenset(
    {
        "model",
        "messages",
        "system",
        "max_tokens",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
    }
)


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    chat: ChatRequest
    stream: bool


def decode(body: object, providers: Collection[str]) -> MessagesRequest:
    """The request a Messages API body describes; INVALID_ARGUMENT naming every problem."""
    wire = Violations()
    if not isinstance(body, dict):
        wire.add("", "the body must be a JSON object")
        raise invalid_request(wire.items)
    for name in body:
        if name not in _KNOWN:
            wire.add(name, "is not a Messages API parameter the gateway knows")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        wire.add("model", "must be a non-empty string")
        model = ""
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        wire.add("max_tokens", "is required: an integer")
        max_tokens = None
    messages = [*_system(body.get("system"), wire), *_messages(body.get("messages"), wire)]
    metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    user = metadata.get("user_id", "") if isinstance(metadata, dict) else ""
    chat = ChatRequest(
        model=model,
        messages=tuple(messages),
        tools=_tools(body.get("tools"), wire),
        tool_choice=_tool_choice(body.get("tool_choice"), wire),
        generation=GenerationConfig(
            temperature=number(body.get("temperature"), "temperature", wire),
            top_p=number(body.get("top_p"), "top_p", wire),
            top_k=integer(body.get("top_k"), "top_k", wire),
            max_tokens=max_tokens,
            stop=tuple(strings(body.get("stop_sequences"), "stop_sequences", wire)),
        ),
        caller=Caller(user=user if isinstance(user, str) else ""),
        reasoning=_thinking(body.get("thinking"), wire),
    )
    try:
        validate_chat_request(chat, providers, wire.items)
    except GatewayError as err:
        raise invalid_request(
            FieldViolation(_param(v.field), v.description) for v in err.violations
        ) from None
    return MessagesRequest(chat, bool(body.get("stream")))


def _param(field: str) -> str:
    return field.replace("generation.stop", "stop_sequences").removeprefix("generation.")


def _system(value: object, wire: Violations) -> list[Message]:
    if value is None:
        return []
    if isinstance(value, str):
        return [Message(Role.SYSTEM, (TextPart(value),))] if value else []
    if isinstance(value, list) and all(isinstance(b, dict) and b.get("type") == "text" for b in value):
        return [Message(Role.SYSTEM, tuple(TextPart(str(b.get("text", ""))) for b in value))]
    wire.add("system", "must be a string or a list of text blocks")
    return []


def _messages(value: object, wire: Violations) -> list[Message]:
    if not isinstance(value, list):
        wire.add("messages", "must be a list of messages")
        return []
    found: list[Message] = []
    for i, item in enumerate(value):
        path = f"messages[{i}]"
        role = item.get("role") if isinstance(item, dict) else None
        if role not in ("user", "assistant"):
            wire.add(f"{path}.role", "must be user or assistant")
            continue
        content = item.get("content")
        if isinstance(content, str):
            found.append(Message(Role(role), (TextPart(content),) if content else ()))
            continue
        if not isinstance(content, list):
            wire.add(f"{path}.content", "must be a string or a list of content blocks")
            continue
        found.extend(_blocks(Role(role), content, f"{path}.content", wire))
    return found


def _blocks(role: Role, blocks: list[Any], path: str, wire: Violations) -> list[Message]:
    """A message's blocks as domain messages: tool results become tool messages of their own."""
    parts: list[Part] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    for i, block in enumerate(blocks):
        where = f"{path}[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append(TextPart(block["text"]))
        elif kind == "image" and isinstance(block.get("source"), dict):
            parts.append(_image(block["source"], f"{where}.source", wire))
        elif kind == "tool_use" and role is Role.ASSISTANT:
            arguments = json.dumps(block.get("input") or {}, separators=(",", ":"))
            calls.append(ToolCall(str(block.get("id", "")), str(block.get("name", "")), arguments))
        elif kind == "tool_result" and role is Role.USER:
            content = block.get("content", "")
            text = (
                content
                if isinstance(content, str)
                else "".join(
                    str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text"
                )
            )
            results.append(
                Message(
                    Role.TOOL,
                    (TextPart(text or ("error" if block.get("is_error") else "")),),
                    tool_call_id=str(block.get("tool_use_id", "")),
                )
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue  # a model's earlier thinking: not sent back to other providers
        else:
            wire.add(where, f"is not a content block the gateway takes in a {role.value} message")
    if results:
        return [*results, *([Message(role, tuple(parts))] if parts else [])]
    return [Message(role, tuple(parts), tuple(calls))]


def _image(source: dict[str, Any], path: str, wire: Violations) -> ImagePart:
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return ImagePart(url=source["url"])
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        try:
            data = base64.b64decode(source["data"], validate=True)
        except (binascii.Error, ValueError):
            wire.add(f"{path}.data", "is not base64")
            data = b""
        return ImagePart(data=data, mime_type=str(source.get("media_type", "")))
    wire.add(path, "must be {type: 'base64', media_type, data} or {type: 'url', url}")
    return ImagePart(url="")


def _tools(value: object, wire: Violations) -> tuple[Tool, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        wire.add("tools", "must be a list of tools")
        return ()
    tools = []
    for i, tool in enumerate(value):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            wire.add(f"tools[{i}]", "must be {name, description, input_schema}")
            continue
        schema = tool.get("input_schema")
        tools.append(
            Tool(tool["name"], str(tool.get("description", "")), schema if isinstance(schema, dict) else None)
        )
    return tuple(tools)


def _tool_choice(value: object, wire: Violations) -> ToolChoice | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "auto":
        return ToolChoice(ToolChoiceMode.AUTO)
    if kind == "any":
        return ToolChoice(ToolChoiceMode.REQUIRED)
    if kind == "none":
        return ToolChoice(ToolChoiceMode.NONE)
    if kind == "tool" and isinstance(value, dict) and isinstance(value.get("name"), str):
        return ToolChoice(ToolChoiceMode.NAMED, value["name"])
    wire.add("tool_choice", "must be {type: auto|any|none} or {type: 'tool', name}")
    return None


def _thinking(value: object, wire: Violations) -> Reasoning | None:
    if value is None:
        return None
    if isinstance(value, dict) and value.get("type") == "disabled":
        return None
    budget = value.get("budget_tokens") if isinstance(value, dict) else None
    if isinstance(value, dict) and value.get("type") == "enabled" and isinstance(budget, int):
        return Reasoning(budget_tokens=budget)
    wire.add("thinking", "must be {type: 'enabled', budget_tokens} or {type: 'disabled'}")
    return None


# -- replies ------------------------------------------------------------------------------------


def message(outcome: ChatOutcome) -> dict[str, Any]:
    header, reply, summary = outcome.header, outcome.completion, outcome.summary
    content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text else []
    content += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": _input(c.arguments)}
        for c in reply.tool_calls
    ]
    return {
        "id": header.id,
        "type": "message",
        "role": "assistant",
        "model": header.model.id,
        "content": content,
        "stop_reason": _STOP.get(summary.finish_reason or reply.finish_reason, "end_turn"),
        "stop_sequence": None,
        "usage": usage(summary.usage),
        **extensions(summary, header),
    }


def usage(used: Usage) -> dict[str, int]:
    return {
        "input_tokens": max(used.prompt_tokens - used.cache_read_tokens - used.cache_write_tokens, 0),
        "output_tokens": used.completion_tokens,
        "cache_read_input_tokens": used.cache_read_tokens,
        "cache_creation_input_tokens": used.cache_write_tokens,
    }


class StreamEncoder:
    """A stream's events in Anthropic's order: message_start, then per content block its start,
    deltas and stop, then message_delta (stop reason, usage) and message_stop."""

    def __init__(self, header: CallHeader) -> None:
        self._header = header
        self._block = -1
        self._kind = ""  # "text" or "tool_use": the open block's
        self._tools: dict[int, int] = {}  # the gateway's tool call index -> block index

    def start(self) -> list[bytes]:
        h = self._header
        started: dict[str, Any] = {
            "id": h.id,
            "type": "message",
            "role": "assistant",
            "model": h.model.id,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [event("message_start", {"type": "message_start", "message": started})]

    def delta(self, item: TextDelta | ToolCallDelta) -> list[bytes]:
        out: list[bytes] = []
        if isinstance(item, TextDelta):
            if self._kind != "text":
                out += self._open({"type": "text", "text": ""}, "text")
            out.append(self._event_delta({"type": "text_delta", "text": item.text}))
            return out
        if item.index not in self._tools:
            out += self._open({"type": "tool_use", "id": item.id, "name": item.name, "input": {}}, "tool_use")
            self._tools[item.index] = self._block
        if item.arguments:
            out.append(
                event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": self._tools[item.index],
                        "delta": {"type": "input_json_delta", "partial_json": item.arguments},
                    },
                )
            )
        return out

    def finish(self, summary: CallSummary) -> list[bytes]:
        out = self._close()
        done = {
            "type": "message_delta",
            "delta": {
                "stop_reason": _STOP.get(summary.finish_reason or FinishReason.STOP),
                "stop_sequence": None,
            },
            "usage": usage(summary.usage),
            **extensions(summary, self._header),
        }
        return [*out, event("message_delta", done), event("message_stop", {"type": "message_stop"})]

    def _open(self, block: dict[str, Any], kind: str) -> list[bytes]:
        out = self._close()
        self._block += 1
        self._kind = kind
        return [
            *out,
            event(
                "content_block_start",
                {"type": "content_block_start", "index": self._block, "content_block": block},
            ),
        ]

    def _close(self) -> list[bytes]:
        if not self._kind:
            return []
        self._kind = ""
        return [event("content_block_stop", {"type": "content_block_stop", "index": self._block})]

    def _event_delta(self, delta: dict[str, Any]) -> bytes:
        return event(
            "content_block_delta", {"type": "content_block_delta", "index": self._block, "delta": delta}
        )


def error(err: GatewayError, request_id: str) -> tuple[int, dict[str, Any]]:
    from llm_gateway.web.openai_response import STATUS

    status = STATUS.get(err.code, (500, ""))[0]
    if err.code is Code.UNAVAILABLE and err.reason != "SHUTTING_DOWN":
        status = 529 if err.reason in ("UPSTREAM_UNAVAILABLE", "CIRCUIT_OPEN") else status
    body = {
        "type": "error",
        "error": {"type": _ERROR_TYPES.get(err.code, "api_error"), "message": err.message},
        "request_id": request_id,
    }
    return status, body


def event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _input(arguments: str) -> Any:
    try:
        return json.loads(arguments) if arguments else {}
    except ValueError:
        return {"arguments": arguments}
