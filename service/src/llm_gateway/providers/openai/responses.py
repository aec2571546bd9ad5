"""OpenAI's Responses API (`POST /responses`): domain requests to its bodies, and its replies and
typed stream events back to domain results.

The conversation goes as input items: messages (system, user, assistant), the assistant's
`function_call` items and the tools' `function_call_output` items. Function tools are flat
(`{"type": "function", "name", ...}`) and strict unless said otherwise, so `strict` is always sent.
Structured output is `text.format`, reasoning `reasoning.effort`. Nothing is stored at OpenAI
(`store: false`): the gateway sends the whole conversation every time.
"""

from __future__ import annotations

from typing import Any

from llm_gateway.domain.messages import (
    ImagePart,
    Message,
    ResponseFormatType,
    Role,
    TextPart,
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
from llm_gateway.providers.base import Checks, UpstreamCall
from llm_gateway.providers.openai.mapping import image_url

# Models the Responses API serves and Chat Completions does not (OpenAI's model pages): they use it
# whatever the provider's `api`. A dated snapshot matches its family.
RESPONSES_ONLY = (
    "o1-pro",
    "o3-pro",
    "o3-deep-research",
    "o4-mini-deep-research",
    "codex-mini",
    "computer-use-preview",
    "gpt-5-pro",
    "gpt-5-codex",
    "gpt-5.1-codex",
)


def responses_only(model: str) -> bool:
    return model.startswith(RESPONSES_ONLY)


def build_body(call: UpstreamCall, *, stream: bool, model: str) -> dict[str, Any]:
    request = call.request
    gen = request.generation
    checks = Checks.of(call)
    body: dict[str, Any] = {"model": model, "input": _input(request.messages), "store": False}
    if stream:
        body["stream"] = True
    if gen.max_tokens is not None:
        body["max_output_tokens"] = gen.max_tokens
    if gen.temperature is not None:
        body["temperature"] = gen.temperature
    if gen.top_p is not None:
        body["top_p"] = gen.top_p
    for name, value in (
        ("seed", gen.seed),
        ("presence_penalty", gen.presence_penalty),
        ("frequency_penalty", gen.frequency_penalty),
        ("top_k", gen.top_k),
    ):
        if value is not None:
            checks.unsupported(f"generation.{name}", f"the Responses API does not accept {name}")
    if gen.stop:
        checks.unsupported("generation.stop", "the Responses API does not accept stop sequences")
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "parameters": t.parameters or {"type": "object", "properties": {}},
                "strict": t.strict,
            }
            for t in request.tools
        ]
    choice = request.tool_choice
    if choice is not None:
        body["tool_choice"] = (
            {"type": "function", "name": choice.tool_name}
            if choice.mode is ToolChoiceMode.NAMED
            else choice.mode.value
        )
    if request.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = request.parallel_tool_calls
    fmt = request.response_format
    if fmt is not None and fmt.type is ResponseFormatType.JSON_SCHEMA:
        schema: dict[str, Any] = {
            "type": "json_schema",
            "name": fmt.schema_name,
            "schema": fmt.json_schema or {},
        }
        schema["strict"] = fmt.strict
        body["text"] = {"format": schema}
    elif fmt is not None:
        body["text"] = {"format": {"type": fmt.type.value}}
    reasoning = request.reasoning
    if reasoning is not None:
        if reasoning.budget_tokens is not None and reasoning.effort is None:
            checks.unsupported(
                "reasoning.budget_tokens",
                "the Responses API takes a reasoning level (reasoning.effort), not a budget",
            )
        elif reasoning.effort is not None:
            body["reasoning"] = {"effort": reasoning.effort.value}
    checks.raise_any()
    body.update(call.options)
    return body


def _input(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for message in messages:
        if message.role is Role.TOOL:
            items.append(
                {"type": "function_call_output", "call_id": message.tool_call_id, "output": message.text()}
            )
        elif message.role is Role.ASSISTANT:
            text = message.text()
            if text:
                items.append({"role": "assistant", "content": text})
            items.extend(
                {"type": "function_call", "call_id": c.id, "name": c.name, "arguments": c.arguments}
                for c in message.tool_calls
            )
        elif message.has_images():
            items.append({"role": message.role.value, "content": [_part(p) for p in message.parts]})
        else:
            items.append({"role": message.role.value, "content": message.text()})
    return items


def _part(part: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "input_text", "text": part.text}
    return {"type": "input_image", "image_url": image_url(part), "detail": part.detail or "auto"}


def map_usage(usage: dict[str, Any] | None) -> Usage | None:
    """The Responses API's usage: input tokens include cached ones (and cache writes, where it
    reports them); output tokens include reasoning tokens."""
    if not usage:
        return None
    inputs = usage.get("input_tokens_details") or {}
    outputs = usage.get("output_tokens_details") or {}
    return Usage(
        prompt_tokens=int(usage.get("input_tokens") or 0),
        completion_tokens=int(usage.get("output_tokens") or 0),
        cache_read_tokens=int(inputs.get("cached_tokens") or 0),
        cache_write_tokens=int(inputs.get("cache_write_tokens") or 0),
        reasoning_tokens=int(outputs.get("reasoning_tokens") or 0),
    )


def _finish(response: dict[str, Any], has_tool_calls: bool) -> FinishReason:
    if response.get("status") == "incomplete":
        reason = (response.get("incomplete_details") or {}).get("reason")
        return FinishReason.CONTENT_FILTER if reason == "content_filter" else FinishReason.LENGTH
    return FinishReason.TOOL_CALLS if has_tool_calls else FinishReason.STOP


def parse_response(data: dict[str, Any]) -> Completion:
    """A `response` object's text (refusals count as text, with finish reason CONTENT_FILTER when
    there is nothing else), its function calls, finish reason and usage. Reasoning items are the
    model's own and are not passed on."""
    texts: list[str] = []
    refusals: list[str] = []
    calls: list[ToolCall] = []
    for item in data.get("output") or ():
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                if part.get("type") == "output_text":
                    texts.append(part.get("text") or "")
                elif part.get("type") == "refusal":
                    refusals.append(part.get("refusal") or "")
        elif kind == "function_call":
            calls.append(
                ToolCall(str(item.get("call_id") or ""), str(item["name"]), item.get("arguments") or "")
            )
    reason = _finish(data, bool(calls))
    text = "".join(texts)
    if refusals and not text:
        text, reason = "".join(refusals), FinishReason.CONTENT_FILTER
    return Completion(
        text=text,
        tool_calls=calls,
        finish_reason=reason,
        usage=map_usage(data.get("usage")),
        response_id=str(data.get("id") or ""),
        provider_model=str(data.get("model") or ""),
    )


class EventDecoder:
    """Decodes one stream's typed events. Text and refusals arrive as deltas; a function call opens
    with `response.output_item.added` (its call id and name) and its arguments follow as deltas;
    `response.completed` or `response.incomplete` ends it with the usage, `response.failed` and
    `error` end it with an error."""

    __slots__ = ("_calls", "_done", "error")

    def __init__(self) -> None:
        self._calls: dict[int, int] = {}  # output_index -> tool call index
        self._done: StreamDone | None = None
        self.error: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self._done is not None

    def feed(self, event: dict[str, Any]) -> list[StreamEvent]:
        kind = event.get("type")
        if kind in ("response.output_text.delta", "response.refusal.delta"):
            delta = event.get("delta") or ""
            return [TextDelta(delta)] if delta else []
        if kind == "response.output_item.added":
            item = event.get("item") or {}
            if item.get("type") == "function_call":
                index = self._calls.setdefault(int(event.get("output_index") or 0), len(self._calls))
                return [ToolCallDelta(index, str(item.get("call_id") or ""), str(item.get("name") or ""))]
            return []
        if kind == "response.function_call_arguments.delta":
            found = self._calls.get(int(event.get("output_index") or 0))
            delta = event.get("delta") or ""
            return [ToolCallDelta(found, arguments=delta)] if found is not None and delta else []
        if kind in ("response.completed", "response.incomplete"):
            response = event.get("response") or {}
            self._done = StreamDone(
                finish_reason=_finish(response, bool(self._calls)),
                usage=map_usage(response.get("usage")),
                response_id=str(response.get("id") or ""),
                provider_model=str(response.get("model") or ""),
            )
        elif kind == "response.failed":
            response = event.get("response") or {}
            self.error = response.get("error") or {"message": "the response failed"}
        elif kind == "error":
            self.error = event
        return []

    def done(self) -> StreamDone:
        assert self._done is not None
        return self._done
