"""Domain requests to Anthropic Messages bodies, and Messages replies back to domain results.

What differs from Chat Completions: system text is the top-level `system` field, not a message;
`max_tokens` is required (the model's max output when the caller sets none); tool results are
`tool_result` blocks in a user turn, and consecutive ones share that turn; tool-call arguments are
JSON objects, not text; temperature stops at 1; there is no seed or penalty. JSON output takes a
schema (`output_config.format`): there is no schema-less JSON mode. Reasoning is extended thinking
with a token budget (at least 1024, below `max_tokens`); a level maps to a budget by
`THINKING_BUDGETS`, and while thinking, temperature, top_k and forced tool use are not allowed.
"""

from __future__ import annotations

import base64
from typing import Any

from llm_gateway.domain.messages import (
    ImagePart,
    Message,
    ReasoningEffort,
    ResponseFormatType,
    Role,
    TextPart,
    ToolCall,
    ToolChoiceMode,
)
from llm_gateway.domain.results import Completion, FinishReason, Usage
from llm_gateway.providers.base import THINKING_BUDGETS, Checks, UpstreamCall
from llm_gateway.providers.toolcalls import arguments_object, arguments_text

DEFAULT_MAX_TOKENS = 4096  # when neither the request nor the model's catalog entry says
MIN_THINKING_BUDGET = 1024

_STOP_REASONS = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.CONTENT_FILTER,
}


def stop_reason(value: str | None) -> FinishReason:
    return _STOP_REASONS.get(value or "", FinishReason.OTHER)


def map_usage(usage: dict[str, Any] | None) -> Usage | None:
    """Anthropic counts uncached input, cache writes and cache reads apart; the gateway's
    `prompt_tokens` is their sum. Thinking is billed inside `output_tokens`."""
    if not usage:
        return None
    uncached = int(usage.get("input_tokens") or 0)
    written = int(usage.get("cache_creation_input_tokens") or 0)
    read = int(usage.get("cache_read_input_tokens") or 0)
    details = usage.get("output_tokens_details") or {}
    # The split of the writes by cache lifetime: one-hour writes cost more than five-minute ones.
    written_1h = int((usage.get("cache_creation") or {}).get("ephemeral_1h_input_tokens") or 0)
    return Usage(
        prompt_tokens=uncached + written + read,
        completion_tokens=int(usage.get("output_tokens") or 0),
        cache_read_tokens=read,
        cache_write_tokens=written,
        cache_write_1h_tokens=written_1h,
        reasoning_tokens=int(details.get("thinking_tokens") or 0),
    )


def build_body(call: UpstreamCall, *, stream: bool, prompt_caching: str = "off") -> dict[str, Any]:
    """The Messages API body for `call`. With `prompt_caching` ("5m", "1h"), the prefix every call
    with the same tools and system prompt shares is marked cacheable: the last tool and the system
    prompt (Anthropic caches everything up to a marked block; a prefix shorter than the model's
    minimum is simply not cached)."""
    request = call.request
    gen = request.generation
    checks = Checks.of(call)
    system, messages = _conversation(request.messages, checks)
    max_tokens = gen.max_tokens or call.model.max_output_tokens or DEFAULT_MAX_TOKENS
    thinking = thinking_setting(call, checks)
    budget = thinking.get("budget_tokens", 0)
    if budget >= max_tokens:
        if gen.max_tokens is not None:
            checks.invalid("reasoning", f"the thinking budget ({budget}) must be below generation.max_tokens")
        max_tokens = budget + DEFAULT_MAX_TOKENS
    body: dict[str, Any] = {"model": call.model.name, "max_tokens": max_tokens, "messages": messages}
    if system:
        body["system"] = system
    if stream:
        body["stream"] = True
    if thinking:
        body["thinking"] = thinking
    thinks = bool(budget)
    if gen.temperature is not None:
        if gen.temperature > 1:
            checks.unsupported("generation.temperature", "Anthropic models accept 0 to 1")
        elif thinks:
            checks.unsupported(
                "generation.temperature", "Anthropic models take no temperature while thinking"
            )
        else:
            body["temperature"] = gen.temperature
    if gen.top_p is not None:
        if thinks and gen.top_p < 0.95:
            checks.unsupported("generation.top_p", "Anthropic models take top_p 0.95 to 1 while thinking")
        else:
            body["top_p"] = gen.top_p
    if gen.top_k is not None:
        if thinks:
            checks.unsupported("generation.top_k", "Anthropic models take no top_k while thinking")
        else:
            body["top_k"] = gen.top_k
    for name, value in (
        ("seed", gen.seed),
        ("presence_penalty", gen.presence_penalty),
        ("frequency_penalty", gen.frequency_penalty),
    ):
        if value is not None:
            checks.unsupported(f"generation.{name}", f"Anthropic models do not support {name}")
    if gen.stop:
        body["stop_sequences"] = list(gen.stop)
    if request.tools:
        body["tools"] = [
            {
                **({"description": t.description} if t.description else {}),
                "name": t.name,
                "input_schema": t.parameters or {"type": "object", "properties": {}},
                **({"strict": True} if t.strict else {}),
            }
            for t in request.tools
        ]
    choice = _tool_choice(call)
    if choice is not None:
        if thinks and choice["type"] in ("any", "tool"):
            checks.unsupported(
                "tool_choice", "Anthropic models cannot be forced to use a tool while thinking"
            )
        else:
            body["tool_choice"] = choice
    fmt = request.response_format
    if fmt is not None and fmt.type is ResponseFormatType.JSON_OBJECT:
        checks.unsupported("response_format", "Anthropic models produce JSON only to a schema (JSON_SCHEMA)")
    elif fmt is not None and fmt.type is ResponseFormatType.JSON_SCHEMA:
        body["output_config"] = {"format": {"type": "json_schema", "schema": fmt.json_schema or {}}}
    if request.caller.user:
        body["metadata"] = {"user_id": request.caller.user}
    checks.raise_any()
    if prompt_caching != "off":
        _mark_cacheable(body, prompt_caching)
    body.update(call.options)
    return body


def _mark_cacheable(body: dict[str, Any], ttl: str) -> None:
    mark = {"type": "ephemeral", **({"ttl": ttl} if ttl != "5m" else {})}
    tools = body.get("tools")
    if tools:
        tools[-1] = {**tools[-1], "cache_control": mark}
    system = body.get("system")
    if system:
        body["system"] = [{"type": "text", "text": system, "cache_control": mark}]


def thinking_setting(call: UpstreamCall, checks: Checks) -> dict[str, Any]:
    """Claude's `thinking` setting (on Anthropic's API, and on Bedrock and Vertex): a budget when
    the request sets one or a level, `disabled` for NONE."""
    reasoning = call.request.reasoning
    if reasoning is None:
        return {}
    if reasoning.effort is ReasoningEffort.NONE:
        return {"type": "disabled"}
    budget = reasoning.budget_tokens
    if budget is None and reasoning.effort is not None:
        budget = THINKING_BUDGETS[reasoning.effort]
    if budget is None:
        return {}
    if budget < MIN_THINKING_BUDGET:
        checks.unsupported(
            "reasoning.budget_tokens", f"Anthropic models think with at least {MIN_THINKING_BUDGET}"
        )
        return {}
    return {"type": "enabled", "budget_tokens": budget}


def _tool_choice(call: UpstreamCall) -> dict[str, Any] | None:
    request = call.request
    choice: dict[str, Any] | None = None
    if request.tool_choice is not None:
        mode = request.tool_choice.mode
        if mode is ToolChoiceMode.NAMED:
            choice = {"type": "tool", "name": request.tool_choice.tool_name}
        else:
            choice = {"type": {"auto": "auto", "none": "none", "required": "any"}[mode.value]}
    if request.parallel_tool_calls is False and request.tools:
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    return choice


def _conversation(messages: tuple[Message, ...], checks: Checks) -> tuple[str, list[dict[str, Any]]]:
    """The top-level system text and the turns. Tool results join the user turn that follows the
    assistant's tool calls; consecutive turns of one role are merged, as the API expects."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if message.role is Role.SYSTEM:
            system.append(message.text())
            continue
        role = "assistant" if message.role is Role.ASSISTANT else "user"
        blocks = _blocks(i, message, checks)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return "\n\n".join(s for s in system if s), turns


def _blocks(i: int, message: Message, checks: Checks) -> list[dict[str, Any]]:
    if message.role is Role.TOOL:
        return [{"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.text()}]
    blocks = [_part(p) for p in message.parts if not (isinstance(p, TextPart) and not p.text)]
    for j, call in enumerate(message.tool_calls):
        path = f"messages[{i}].tool_calls[{j}].arguments"
        arguments = arguments_object(call.arguments, checks, path, "Anthropic")
        if arguments is None:
            continue
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return blocks


def _part(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if part.data is not None:
        data = base64.b64encode(part.data).decode("ascii")
        return {"type": "image", "source": {"type": "base64", "media_type": part.mime_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": part.url or ""}}


def parse_message(data: dict[str, Any]) -> Completion:
    text: list[str] = []
    calls = []
    for block in data.get("content") or ():
        kind = block.get("type")
        if kind == "text":
            text.append(block.get("text") or "")
        elif kind == "tool_use":
            arguments = arguments_text(block.get("input") or {})
            calls.append(ToolCall(str(block["id"]), str(block["name"]), arguments))
    return Completion(
        text="".join(text),
        tool_calls=calls,
        finish_reason=stop_reason(data.get("stop_reason")),
        usage=map_usage(data.get("usage")),
        response_id=str(data.get("id") or ""),
        provider_model=str(data.get("model") or ""),
    )
