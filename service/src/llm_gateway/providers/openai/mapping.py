"""Domain requests to OpenAI Chat Completions bodies, and OpenAI replies back to domain results."""

from __future__ import annotations

import base64
from typing import Any

from llm_gateway.domain.errors import invalid_field
from llm_gateway.domain.messages import (
    ImagePart,
    Message,
    ResponseFormatType,
    Role,
    TextPart,
    ToolCall,
    ToolChoiceMode,
)
from llm_gateway.domain.results import Completion, FinishReason, Usage
from llm_gateway.providers.base import UpstreamCall

_FINISH_REASON_MAP = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
    "content_filter": FinishReason.CONTENT_FILTER,
}


def finish_reason(value: str | None) -> FinishReason:
    return _FINISH_REASON_MAP.get(value or "", FinishReason.OTHER)


def map_usage(usage: dict[str, Any] | None) -> Usage | None:
    if not usage:
        return None
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cache_read_tokens=int(prompt_details.get("cached_tokens") or 0),
        reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
    )


def build_body(call: UpstreamCall, *, stream: bool) -> dict[str, Any]:
    request = call.request
    gen = request.generation
    if gen.top_k is not None:
        raise invalid_field("generation.top_k", "OpenAI models do not support top_k")
    body: dict[str, Any] = {
        "model": call.model.name,
        "messages": [_message(m) for m in request.messages],
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    for key, value in (
        ("temperature", gen.temperature),
        ("top_p", gen.top_p),
        ("max_completion_tokens", gen.max_tokens),
        ("seed", gen.seed),
        ("presence_penalty", gen.presence_penalty),
        ("frequency_penalty", gen.frequency_penalty),
    ):
        if value is not None:
            body[key] = value
    if gen.stop:
        body["stop"] = list(gen.stop)
    if request.tools:
        body["tools"] = [_tool(t.name, t.description, t.parameters, t.strict) for t in request.tools]
    if request.tool_choice is not None:
        choice = request.tool_choice
        if choice.mode is ToolChoiceMode.NAMED:
            body["tool_choice"] = {"type": "function", "function": {"name": choice.tool_name}}
        else:
            body["tool_choice"] = choice.mode.value
    if request.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = request.parallel_tool_calls
    fmt = request.response_format
    if fmt is not None:
        if fmt.type is ResponseFormatType.JSON_SCHEMA:
            schema: dict[str, Any] = {"name": fmt.schema_name, "schema": fmt.json_schema or {}}
            if fmt.strict:
                schema["strict"] = True
            body["response_format"] = {"type": "json_schema", "json_schema": schema}
        else:
            body["response_format"] = {"type": fmt.type.value}
    body.update(call.options)
    return body


def _tool(name: str, description: str, parameters: dict[str, Any] | None, strict: bool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if description:
        function["description"] = description
    function["parameters"] = parameters or {"type": "object", "properties": {}}
    if strict:
        function["strict"] = True
    return {"type": "function", "function": function}


def _message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role.value}
    if message.role is Role.TOOL:
        out["tool_call_id"] = message.tool_call_id
        out["content"] = message.text()
        return out
    if message.role is Role.ASSISTANT:
        out["content"] = message.text() or None
        if message.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in message.tool_calls
            ]
    elif message.has_images():
        out["content"] = [_part(p) for p in message.parts]
    else:
        out["content"] = message.text()
    if message.name:
        out["name"] = message.name
    return out


def _part(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if part.data is not None:
        url = f"data:{part.mime_type};base64,{base64.b64encode(part.data).decode('ascii')}"
    else:
        url = part.url or ""
    image: dict[str, Any] = {"url": url}
    if part.detail:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}


def parse_completion(data: dict[str, Any]) -> Completion:
    choice = data["choices"][0]
    message = choice["message"]
    text = message.get("content") or ""
    reason = finish_reason(choice.get("finish_reason"))
    refusal = message.get("refusal")
    if refusal and not text:
        text, reason = refusal, FinishReason.CONTENT_FILTER
    tool_calls = [
        ToolCall(call["id"], call["function"]["name"], call["function"].get("arguments") or "")
        for call in message.get("tool_calls") or ()
    ]
    return Completion(
        text=text,
        tool_calls=tool_calls,
        finish_reason=reason,
        usage=map_usage(data.get("usage")),
        response_id=str(data.get("id") or ""),
        provider_model=str(data.get("model") or ""),
    )
