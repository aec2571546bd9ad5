"""Domain requests to OpenAI Chat Completions bodies, and replies back to domain results.

One mapping serves OpenAI, Azure and every compatible server; a `Dialect` (config) says where a
server differs: field names, what it does not accept, how it takes reasoning settings, how it wants
an empty assistant turn and a JSON Schema output format.
"""

from __future__ import annotations

import base64
from collections.abc import Collection
from dataclasses import replace
from typing import Any

from llm_gateway.config.schema import ChatCompletionsDialect as Dialect
from llm_gateway.domain.messages import (
    ChatRequest,
    ImagePart,
    Message,
    ReasoningEffort,
    ResponseFormatType,
    Role,
    TextPart,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
)
from llm_gateway.domain.results import Completion, FinishReason, Usage
from llm_gateway.providers.base import Checks, UpstreamCall

__all__ = [
    "Dialect",
    "build_body",
    "content_part",
    "finish_reason",
    "image_url",
    "map_usage",
    "parse_completion",
    "prompt_body",
]

_FINISH_REASON_MAP = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
    "content_filter": FinishReason.CONTENT_FILTER,
}


def finish_reason(value: str | None) -> FinishReason:
    return _FINISH_REASON_MAP.get(value or "", FinishReason.OTHER)


def map_usage(usage: dict[str, Any] | None, *, reasoning_in_completion: bool = True) -> Usage | None:
    """OpenAI's usage; DeepSeek reports cache hits as `prompt_cache_hit_tokens` instead."""
    if not usage:
        return None
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    reasoning = int(completion_details.get("reasoning_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    return Usage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=completion if reasoning_in_completion else completion + reasoning,
        cache_read_tokens=int(
            prompt_details.get("cached_tokens") or usage.get("prompt_cache_hit_tokens") or 0
        ),
        reasoning_tokens=reasoning,
    )


_DEFAULT_DIALECT = Dialect()


def build_body(call: UpstreamCall, *, stream: bool, dialect: Dialect = _DEFAULT_DIALECT) -> dict[str, Any]:
    request = call.request
    gen = request.generation
    checks = Checks.of(call)
    unsupported = dialect.unsupported
    body: dict[str, Any] = {
        "model": call.model.name,
        "messages": _messages(request.messages, dialect, checks),
    }
    if stream:
        body["stream"] = True
        if dialect.stream_usage:
            body["stream_options"] = {"include_usage": True}
    settings: tuple[tuple[str, str, Any], ...] = (
        ("temperature", "temperature", gen.temperature),
        ("top_p", "top_p", gen.top_p),
        ("max_tokens", dialect.max_tokens_field, gen.max_tokens),
        ("seed", dialect.seed_field, gen.seed),
        ("presence_penalty", "presence_penalty", gen.presence_penalty),
        ("frequency_penalty", "frequency_penalty", gen.frequency_penalty),
        ("top_k", "top_k", gen.top_k),
    )
    for name, key, value in settings:
        if value is None:
            continue
        if name in unsupported or (name == "top_k" and not dialect.top_k):
            checks.unsupported(f"generation.{name}", f"{call.model.provider} does not accept {name}")
        else:
            body[key] = value
    if gen.stop:
        if "stop" in unsupported:
            checks.unsupported("generation.stop", f"{call.model.provider} does not accept stop sequences")
        else:
            body["stop"] = list(gen.stop)
    _tools(call, body, dialect, checks)
    _response_format(call, body, dialect, checks)
    _reasoning(call, body, dialect, checks)
    checks.raise_any()
    body.update(call.options)
    return body


def _tools(call: UpstreamCall, body: dict[str, Any], dialect: Dialect, checks: Checks) -> None:
    request = call.request
    if request.tools and "tools" in dialect.unsupported:
        checks.unsupported("tools", f"{call.model.provider} does not accept tools")
        return
    if request.tools:
        body["tools"] = [_tool(t.name, t.description, t.parameters, t.strict) for t in request.tools]
    if request.tool_choice is not None:
        body["tool_choice"] = _tool_choice(request.tool_choice, dialect)
    if request.parallel_tool_calls is not None:
        if "parallel_tool_calls" in dialect.unsupported:
            checks.unsupported(
                "parallel_tool_calls", f"{call.model.provider} does not accept parallel_tool_calls"
            )
        else:
            body["parallel_tool_calls"] = request.parallel_tool_calls


def _tool_choice(choice: ToolChoice, dialect: Dialect) -> str | dict[str, Any]:
    if choice.mode is ToolChoiceMode.NAMED:
        return {"type": "function", "function": {"name": choice.tool_name}}
    if choice.mode is ToolChoiceMode.REQUIRED:
        return dialect.tool_choice_required
    return choice.mode.value


def _response_format(call: UpstreamCall, body: dict[str, Any], dialect: Dialect, checks: Checks) -> None:
    fmt = call.request.response_format
    if fmt is None:
        return
    if fmt.type.value in dialect.unsupported:
        checks.unsupported(
            "response_format", f"{call.model.provider} does not accept {fmt.type.value} output"
        )
    elif fmt.type is ResponseFormatType.JSON_SCHEMA and dialect.json_schema_format == "json_object_schema":
        # The schema constrains the output through a grammar, so the output always conforms:
        # `strict` is honoured without being sent, and the schema's name has no field.
        body["response_format"] = {"type": "json_object", "schema": fmt.json_schema or {}}
    elif fmt.type is ResponseFormatType.JSON_SCHEMA:
        schema: dict[str, Any] = {"name": fmt.schema_name, "schema": fmt.json_schema or {}}
        if fmt.strict:
            schema["strict"] = True
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    else:
        body["response_format"] = {"type": fmt.type.value}


def _reasoning(call: UpstreamCall, body: dict[str, Any], dialect: Dialect, checks: Checks) -> None:
    """OpenAI takes a level (`reasoning_effort`), never a token budget: a budget alone is refused,
    a budget beside a level is the portable form and the level is used. OpenRouter takes either."""
    reasoning = call.request.reasoning
    if reasoning is None:
        return
    provider = call.model.provider
    if dialect.reasoning == "none":
        checks.unsupported("reasoning", f"{provider} has no reasoning setting")
        return
    if dialect.reasoning == "openrouter":
        if reasoning.budget_tokens is not None:
            body["reasoning"] = {"max_tokens": reasoning.budget_tokens}
        elif reasoning.effort is ReasoningEffort.NONE:
            body["reasoning"] = {"enabled": False}
        elif reasoning.effort is not None:
            effort = "low" if reasoning.effort is ReasoningEffort.MINIMAL else reasoning.effort.value
            body["reasoning"] = {"effort": effort}
        return
    if reasoning.budget_tokens is not None and reasoning.effort is None:
        checks.unsupported(
            "reasoning.budget_tokens", f"{provider} takes a reasoning level (reasoning.effort), not a budget"
        )
    if reasoning.effort is not None:
        if reasoning.effort.value in dialect.reasoning_efforts:
            body["reasoning_effort"] = reasoning.effort.value
        else:
            levels = ", ".join(e.upper() for e in dialect.reasoning_efforts)
            checks.unsupported("reasoning.effort", f"{provider} accepts the levels {levels}")


def _tool(name: str, description: str, parameters: dict[str, Any] | None, strict: bool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if description:
        function["description"] = description
    function["parameters"] = parameters or {"type": "object", "properties": {}}
    if strict:
        function["strict"] = True
    return {"type": "function", "function": function}


def _messages(messages: tuple[Message, ...], dialect: Dialect, checks: Checks) -> list[dict[str, Any]]:
    unsupported: Collection[str] = dialect.unsupported
    out = []
    for i, message in enumerate(messages):
        if message.name and "message_name" in unsupported:
            checks.unsupported(f"messages[{i}].name", "this provider does not accept author names")
            message = replace(message, name="")
        if message.has_images() and "images" in unsupported:
            for j, part in enumerate(message.parts):
                if isinstance(part, ImagePart):
                    checks.unsupported(f"messages[{i}].content[{j}].image", "this provider reads text only")
            message = replace(message, parts=tuple(p for p in message.parts if isinstance(p, TextPart)))
        out.append(_message(message, dialect))
    return out


def _message(message: Message, dialect: Dialect) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role.value}
    if message.role is Role.TOOL:
        out["tool_call_id"] = message.tool_call_id
        out["content"] = message.text()
        return out
    if message.role is Role.ASSISTANT:
        text = message.text()
        out["content"] = text or ("" if dialect.empty_assistant_content == "empty_string" else None)
        if message.tool_calls:
            out["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in message.tool_calls
            ]
    elif message.has_images():
        out["content"] = [content_part(p) for p in message.parts]
    else:
        out["content"] = message.text()
    if message.name:
        out["name"] = message.name
    return out


def prompt_body(request: ChatRequest, dialect: Dialect = _DEFAULT_DIALECT) -> dict[str, Any]:
    """The part of a Chat Completions body that a server's chat template turns into the model's
    prompt: the messages and the tools with the tool choice, as `build_body` sends them. For a
    server that renders a prompt without running it, to count its tokens (llama.cpp's
    `/apply-template`). Images are left out: a server without its vision projector refuses them,
    and the counter adds the approximation's count for each instead. So is what the server does not
    take."""
    messages = []
    for message in request.messages:
        text_only = tuple(p for p in message.parts if isinstance(p, TextPart))
        name = "" if "message_name" in dialect.unsupported else message.name
        messages.append(_message(replace(message, parts=text_only, name=name), dialect))
    body: dict[str, Any] = {"messages": messages}
    if request.tools and "tools" not in dialect.unsupported:
        body["tools"] = [_tool(t.name, t.description, t.parameters, t.strict) for t in request.tools]
        if request.tool_choice is not None:
            body["tool_choice"] = _tool_choice(request.tool_choice, dialect)
    return body


def image_url(part: ImagePart) -> str:
    """The image's URL, its inline bytes as a data: URL (Chat Completions and Responses alike)."""
    if part.data is not None:
        return f"data:{part.mime_type};base64,{base64.b64encode(part.data).decode('ascii')}"
    return part.url or ""


def content_part(part: TextPart | ImagePart) -> dict[str, Any]:
    """A text or `image_url` content part."""
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    image: dict[str, Any] = {"url": image_url(part)}
    if part.detail:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}


def parse_completion(data: dict[str, Any], *, reasoning_in_completion: bool = True) -> Completion:
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
        usage=map_usage(data.get("usage"), reasoning_in_completion=reasoning_in_completion),
        response_id=str(data.get("id") or ""),
        provider_model=str(data.get("model") or ""),
    )
