"""Domain requests to Cohere Chat API v2 bodies, and v2 replies back to domain results.

What differs from Chat Completions:
- Sampling is `p` (0.01 to 0.99) and `k` (0 to 500); temperature and both penalties take 0 to 1.
  Values outside those ranges are settings Cohere cannot honour, not values to clamp.
- The system turn must open the conversation (Cohere answers "system turn must be the first in the
  list" otherwise): every system message is joined into one first turn, as for Anthropic.
- An assistant turn with tool calls carries its text as `tool_plan` (the model's stated plan
  before calling), not `content`. Replies do the same, and the plan is returned as the turn's text
  so that it goes back as `tool_plan` on the next request.
- `tool_choice` is only "REQUIRED" or "NONE": there is no named tool choice and no switch for
  parallel calls. Strict tool schemas are one request-wide `strict_tools`.
- JSON output is `{"type": "json_object"}`, carrying the schema (if any) as `json_schema`; Cohere
  does not take it together with tools.
- Reasoning is `thinking`: enabled with an optional `token_budget`, or disabled. Cohere has no
  levels, so a level becomes a budget by `THINKING_BUDGETS` (the same budgets as Anthropic's).
- Finish reasons are upper-case words; usage counts billed units and model tokens apart (see
  `map_usage`); the reply does not name the model.
"""

from __future__ import annotations

from typing import Any

from llm_gateway.domain.messages import (
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
from llm_gateway.providers.openai.mapping import content_part

# Cohere's documented ranges (API reference, Chat v2; temperature from its temperature guide).
TEMPERATURE_MAX = 1.0
P_RANGE = (0.01, 0.99)
K_MAX = 500
PENALTY_RANGE = (0.0, 1.0)


# ERROR and TIMEOUT end a reply Cohere could not finish; in a stream, ERROR is an error instead.
_FINISH_REASONS = {
    "COMPLETE": FinishReason.STOP,
    "STOP_SEQUENCE": FinishReason.STOP,
    "MAX_TOKENS": FinishReason.LENGTH,
    "TOOL_CALL": FinishReason.TOOL_CALLS,
}


def finish_reason(value: str | None) -> FinishReason:
    return _FINISH_REASONS.get(value or "", FinishReason.OTHER)


def map_usage(usage: dict[str, Any] | None) -> Usage | None:
    """The gateway's usage from Cohere's.

    Cohere reports `billed_units` (the tokens it charges for: the caller's input and the model's
    output) apart from `tokens` (what the model processed, including the prompt template Cohere adds
    around the conversation, which is not billed). The gateway prices usage with Cohere's per-token
    prices, which apply to billed units, so those are the counts when present; `tokens` only when
    billed units are missing.

    `cached_tokens` counts prompt cache hits among `tokens.input_tokens`, so it can exceed the
    billed input (1360 hits against 8 billed input tokens in one reply). The gateway's
    `cache_read_tokens` must be part of `prompt_tokens`, and Cohere does not say where the hits
    fell, so it is the number of billed input tokens that were certainly hits: those beyond the
    unbilled part of the input. Cohere has no cached-input price, so this count changes no cost.
    Reasoning tokens are inside the output counts, not reported apart.
    """
    if not usage:
        return None
    billed = usage.get("billed_units") or {}
    tokens = usage.get("tokens") or {}
    cached = int(usage.get("cached_tokens") or 0)
    if billed.get("input_tokens") is not None or billed.get("output_tokens") is not None:
        prompt = int(billed.get("input_tokens") or 0)
        completion = int(billed.get("output_tokens") or 0)
        unbilled = max(int(tokens.get("input_tokens") or prompt) - prompt, 0)
        cache_read = max(cached - unbilled, 0)
    elif tokens.get("input_tokens") is not None or tokens.get("output_tokens") is not None:
        prompt = int(tokens.get("input_tokens") or 0)
        completion = int(tokens.get("output_tokens") or 0)
        cache_read = cached
    else:
        return None
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, cache_read_tokens=min(cache_read, prompt)
    )


def build_body(call: UpstreamCall, *, stream: bool) -> dict[str, Any]:
    request = call.request
    checks = Checks.of(call)
    body: dict[str, Any] = {
        "model": call.model.name,
        "messages": _messages(request.messages, checks),
        "stream": stream,  # Cohere's reference marks `stream` required on both forms
    }
    _generation(call, body, checks)
    _tools(call, body, checks)
    _response_format(call, body, checks)
    thinking = _thinking(call)
    if thinking is not None:
        body["thinking"] = thinking
    checks.raise_any()
    body.update(call.options)
    return body


def _generation(call: UpstreamCall, body: dict[str, Any], checks: Checks) -> None:
    gen = call.request.generation
    if gen.temperature is not None:
        if gen.temperature > TEMPERATURE_MAX:
            checks.unsupported("generation.temperature", f"Cohere accepts 0 to {TEMPERATURE_MAX:g}")
        else:
            body["temperature"] = gen.temperature
    if gen.top_p is not None:
        low, high = P_RANGE
        if low <= gen.top_p <= high:
            body["p"] = gen.top_p
        else:
            checks.unsupported("generation.top_p", f"Cohere accepts top_p (its `p`) from {low:g} to {high:g}")
    if gen.top_k is not None:
        if gen.top_k > K_MAX:
            checks.unsupported("generation.top_k", f"Cohere accepts top_k (its `k`) from 0 to {K_MAX}")
        else:
            body["k"] = gen.top_k
    if gen.max_tokens is not None:
        body["max_tokens"] = gen.max_tokens
    if gen.stop:
        body["stop_sequences"] = list(gen.stop)
    if gen.seed is not None:
        body["seed"] = gen.seed
    low, high = PENALTY_RANGE
    for name, value in (
        ("frequency_penalty", gen.frequency_penalty),
        ("presence_penalty", gen.presence_penalty),
    ):
        if value is None:
            continue
        if low <= value <= high:
            body[name] = value
        else:
            checks.unsupported(f"generation.{name}", f"Cohere accepts {low:g} to {high:g}")


def _tools(call: UpstreamCall, body: dict[str, Any], checks: Checks) -> None:
    request = call.request
    tools = request.tools
    if tools:
        body["tools"] = [_tool(t.name, t.description, t.parameters) for t in tools]
        if all(t.strict for t in tools):
            body["strict_tools"] = True
        else:
            for i, tool in enumerate(tools):
                if tool.strict:
                    checks.unsupported(
                        f"tools[{i}].strict",
                        "Cohere makes either every tool of a request strict (strict_tools) or none",
                    )
    choice = request.tool_choice
    if choice is not None:
        if choice.mode is ToolChoiceMode.NAMED:
            checks.unsupported("tool_choice", "Cohere cannot be made to call one named tool (only REQUIRED)")
        elif choice.mode is ToolChoiceMode.REQUIRED:
            body["tool_choice"] = "REQUIRED"
        elif choice.mode is ToolChoiceMode.NONE and tools:
            body["tool_choice"] = "NONE"
        # AUTO is Cohere's behaviour when tool_choice is left out; NONE without tools needs nothing.
    # Cohere may call several tools in one turn and has no switch to stop it: True is its default.
    if request.parallel_tool_calls is False and tools:
        checks.unsupported("parallel_tool_calls", "Cohere has no setting to limit a turn to one tool call")


def _tool(name: str, description: str, parameters: dict[str, Any] | None) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if description:
        function["description"] = description
    function["parameters"] = parameters or {"type": "object", "properties": {}}
    return {"type": "function", "function": function}


def _response_format(call: UpstreamCall, body: dict[str, Any], checks: Checks) -> None:
    fmt = call.request.response_format
    if fmt is None or fmt.type is ResponseFormatType.TEXT:
        return
    if call.request.tools:
        checks.unsupported("response_format", "Cohere does not take JSON output together with tools")
        return
    response_format: dict[str, Any] = {"type": "json_object"}
    if fmt.type is ResponseFormatType.JSON_SCHEMA:
        response_format["json_schema"] = fmt.json_schema or {}
    body["response_format"] = response_format


def _thinking(call: UpstreamCall) -> dict[str, Any] | None:
    """A budget when the request sets one (it wins over a level), a level's budget, or `disabled`."""
    reasoning = call.request.reasoning
    if reasoning is None:
        return None
    if reasoning.effort is ReasoningEffort.NONE:
        return {"type": "disabled"}
    budget = reasoning.budget_tokens
    if budget is None and reasoning.effort is not None:
        budget = THINKING_BUDGETS[reasoning.effort]
    if budget is None:
        return None
    return {"type": "enabled", "token_budget": budget}


def _messages(messages: tuple[Message, ...], checks: Checks) -> list[dict[str, Any]]:
    system = "\n\n".join(text for m in messages if m.role is Role.SYSTEM and (text := m.text()))
    out: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for i, message in enumerate(messages):
        if message.name:
            checks.unsupported(f"messages[{i}].name", "Cohere takes no author names")
        if message.role is not Role.SYSTEM:
            out.append(_message(message))
    return out


def _message(message: Message) -> dict[str, Any]:
    if message.role is Role.TOOL:
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text()}
    if message.role is Role.ASSISTANT:
        out: dict[str, Any] = {"role": "assistant"}
        if not message.tool_calls:
            out["content"] = message.text()
            return out
        if message.text():
            out["tool_plan"] = message.text()
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                # Cohere writes "{}" for a call without arguments.
                "function": {"name": c.name, "arguments": c.arguments or "{}"},
            }
            for c in message.tool_calls
        ]
        return out
    if message.has_images():
        parts = [content_part(p) for p in message.parts if not (isinstance(p, TextPart) and not p.text)]
        return {"role": "user", "content": parts}
    return {"role": "user", "content": message.text()}


def _reply_text(message: dict[str, Any]) -> str:
    """The turn's text: the tool plan, then the text content items (thinking items are left out)."""
    text = [str(message.get("tool_plan") or "")]
    text.extend(
        str(item.get("text") or "") for item in message.get("content") or () if item.get("type") == "text"
    )
    return "".join(text)


def parse_chat(data: dict[str, Any]) -> Completion:
    message = data.get("message") or {}
    calls = []
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        calls.append(
            ToolCall(str(call["id"]), str(function.get("name") or ""), function.get("arguments") or "{}")
        )
    return Completion(
        text=_reply_text(message),
        tool_calls=calls,
        finish_reason=finish_reason(data.get("finish_reason")),
        usage=map_usage(data.get("usage")),
        response_id=str(data.get("id") or ""),
        provider_model=str(data.get("model") or ""),
    )
