"""Domain requests to Bedrock Converse bodies, and its replies and stream events back.

The shapes are botocore's (`bedrock-runtime` service model, 2023-09-30): messages of content
blocks (`text`, `image` with base64 bytes, `toolUse`, `toolResult`), `system` blocks,
`inferenceConfig`, `toolConfig`, structured output in `outputConfig.textFormat` (the schema as a
JSON string), and model-specific fields (Claude's `thinking`, `top_k`) in
`additionalModelRequestFields`. Usage counts cache reads and writes apart from `inputTokens`, as
Anthropic does.
"""

from __future__ import annotations

import base64
import json
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
from llm_gateway.providers.anthropic.mapping import DEFAULT_MAX_TOKENS, thinking_setting
from llm_gateway.providers.base import Checks, UpstreamCall

_STOP_REASONS = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "tool_use": FinishReason.TOOL_CALLS,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "guardrail_intervened": FinishReason.CONTENT_FILTER,
    "content_filtered": FinishReason.CONTENT_FILTER,
}
_IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif", "image/webp": "webp"}


def stop_reason(value: str | None) -> FinishReason:
    return _STOP_REASONS.get(value or "", FinishReason.OTHER)


def map_usage(usage: dict[str, Any] | None) -> Usage | None:
    if not usage:
        return None
    read = int(usage.get("cacheReadInputTokens") or 0)
    written = int(usage.get("cacheWriteInputTokens") or 0)
    # The writes per cache lifetime: one-hour writes cost more than five-minute ones.
    written_1h = sum(
        int(d.get("inputTokens") or 0) for d in usage.get("cacheDetails") or () if d.get("ttl") == "1h"
    )
    return Usage(
        prompt_tokens=int(usage.get("inputTokens") or 0) + read + written,
        completion_tokens=int(usage.get("outputTokens") or 0),
        cache_read_tokens=read,
        cache_write_tokens=written,
        cache_write_1h_tokens=min(written_1h, written),
    )


def build_body(call: UpstreamCall, *, prompt_caching: str = "off") -> dict[str, Any]:
    """The Converse body (the model goes in the URL). With `prompt_caching` ("5m", "1h") a cache
    point follows the system prompt and the tools, as Anthropic's `cache_control` marks them."""
    request = call.request
    gen = request.generation
    checks = Checks.of(call)
    system = [{"text": m.text()} for m in request.messages if m.role is Role.SYSTEM and m.text()]
    body: dict[str, Any] = {"messages": _messages(request.messages, checks)}
    cache_point = None
    if prompt_caching != "off":
        cache_point = {"cachePoint": {"type": "default", **({"ttl": "1h"} if prompt_caching == "1h" else {})}}
    if system:
        body["system"] = system + ([cache_point] if cache_point else [])
    inference: dict[str, Any] = {}
    if gen.max_tokens is not None:
        inference["maxTokens"] = gen.max_tokens
    if gen.temperature is not None:
        inference["temperature"] = gen.temperature
    if gen.top_p is not None:
        inference["topP"] = gen.top_p
    if gen.stop:
        inference["stopSequences"] = list(gen.stop)
    thinking = thinking_setting(call, checks)
    budget = thinking.get("budget_tokens", 0)
    if budget and inference.get("maxTokens", 0) <= budget:
        if gen.max_tokens is not None:
            checks.invalid("reasoning", f"the thinking budget ({budget}) must be below generation.max_tokens")
        inference["maxTokens"] = budget + DEFAULT_MAX_TOKENS  # Claude thinks within max_tokens
    if inference:
        body["inferenceConfig"] = inference
    extra: dict[str, Any] = {}
    if gen.top_k is not None:
        extra["top_k"] = gen.top_k
    for name, value in (
        ("seed", gen.seed),
        ("presence_penalty", gen.presence_penalty),
        ("frequency_penalty", gen.frequency_penalty),
    ):
        if value is not None:
            checks.unsupported(f"generation.{name}", f"Bedrock's Converse API does not accept {name}")
    _tools(call, body, cache_point, checks)
    fmt = request.response_format
    if fmt is not None and fmt.type is ResponseFormatType.JSON_SCHEMA:
        structure: dict[str, Any] = {"schema": json.dumps(fmt.json_schema or {})}
        if fmt.schema_name:
            structure["name"] = fmt.schema_name
        body["outputConfig"] = {"textFormat": {"type": "json_schema", "structure": {"jsonSchema": structure}}}
    elif fmt is not None and fmt.type is ResponseFormatType.JSON_OBJECT:
        checks.unsupported("response_format", "Bedrock produces JSON only to a schema (JSON_SCHEMA)")
    if thinking:
        extra["thinking"] = thinking
    if extra:
        body["additionalModelRequestFields"] = extra
    checks.raise_any()
    body.update(call.options)
    return body


def _tools(
    call: UpstreamCall, body: dict[str, Any], cache_point: dict[str, Any] | None, checks: Checks
) -> None:
    request = call.request
    if not request.tools:
        return
    tools: list[dict[str, Any]] = [
        {
            "toolSpec": {
                "name": t.name,
                **({"description": t.description} if t.description else {}),
                "inputSchema": {"json": t.parameters or {"type": "object", "properties": {}}},
                **({"strict": True} if t.strict else {}),
            }
        }
        for t in request.tools
    ]
    if cache_point:
        tools.append(cache_point)
    config: dict[str, Any] = {"tools": tools}
    choice = request.tool_choice
    if choice is not None:
        if choice.mode is ToolChoiceMode.NAMED:
            config["toolChoice"] = {"tool": {"name": choice.tool_name}}
        elif choice.mode is ToolChoiceMode.REQUIRED:
            config["toolChoice"] = {"any": {}}
        elif choice.mode is ToolChoiceMode.AUTO:
            config["toolChoice"] = {"auto": {}}
        else:
            checks.unsupported(
                "tool_choice", "Bedrock's Converse API has no tool choice 'none'; send no tools"
            )
    if request.parallel_tool_calls is False:
        checks.unsupported(
            "parallel_tool_calls", "Bedrock's Converse API cannot turn parallel tool calls off"
        )
    body["toolConfig"] = config


def _messages(messages: tuple[Message, ...], checks: Checks) -> list[dict[str, Any]]:
    """The turns, system messages aside (they go in `system`). Tool results join the user turn
    that follows the tool calls; consecutive turns of one role are merged, as Converse requires."""
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if message.role is Role.SYSTEM:
            continue
        role = "assistant" if message.role is Role.ASSISTANT else "user"
        blocks = _blocks(i, message, checks)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def _blocks(i: int, message: Message, checks: Checks) -> list[dict[str, Any]]:
    if message.role is Role.TOOL:
        return [
            {
                "toolResult": {
                    "toolUseId": message.tool_call_id,
                    "content": [{"text": message.text()}],
                    "status": "success",
                }
            }
        ]
    parts = (_part(i, j, part, checks) for j, part in enumerate(message.parts))
    blocks = [b for b in parts if b is not None]
    for call in message.tool_calls:
        try:
            arguments = json.loads(call.arguments) if call.arguments else {}
        except ValueError:
            arguments = {}
            checks.invalid(
                f"messages[{i}].tool_calls", "a tool call's arguments must be a JSON object for Bedrock"
            )
        blocks.append({"toolUse": {"toolUseId": call.id, "name": call.name, "input": arguments}})
    return blocks


def _part(i: int, j: int, part: TextPart | ImagePart, checks: Checks) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        return {"text": part.text} if part.text else None
    if part.data is None:
        checks.unsupported(f"messages[{i}].content[{j}].image", "Bedrock takes images as bytes, not URLs")
        return None
    fmt = _IMAGE_FORMATS.get(part.mime_type or "")
    if fmt is None:
        checks.invalid(f"messages[{i}].content[{j}].image", "Bedrock takes PNG, JPEG, GIF or WebP images")
        return None
    return {"image": {"format": fmt, "source": {"bytes": base64.b64encode(part.data).decode("ascii")}}}


def parse_response(data: dict[str, Any]) -> Completion:
    """Text blocks joined, tool uses as calls (their input as JSON text); reasoning blocks stay
    with the model."""
    message = (data.get("output") or {}).get("message") or {}
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in message.get("content") or ():
        if "text" in block:
            texts.append(block["text"])
        elif "toolUse" in block:
            use = block["toolUse"]
            calls.append(
                ToolCall(
                    str(use.get("toolUseId") or ""), str(use["name"]), json.dumps(use.get("input") or {})
                )
            )
    return Completion(
        text="".join(texts),
        tool_calls=calls,
        finish_reason=stop_reason(data.get("stopReason")),
        usage=map_usage(data.get("usage")),
    )


class EventDecoder:
    """Decodes ConverseStream's events (each the payload of one event-stream message, named by its
    `:event-type`). A tool use opens with `contentBlockStart` and its input follows as pieces;
    `messageStop` carries the stop reason and `metadata`, last, the usage."""

    __slots__ = ("_stop", "_tools", "_usage")

    def __init__(self) -> None:
        self._tools: dict[int, int] = {}  # contentBlockIndex -> tool call index
        self._stop: FinishReason | None = None
        self._usage: Usage | None = None

    @property
    def finished(self) -> bool:
        return self._stop is not None

    def feed(self, kind: str, event: dict[str, Any]) -> list[StreamEvent]:
        if kind == "contentBlockDelta":
            delta = event.get("delta") or {}
            if "text" in delta:
                return [TextDelta(delta["text"])] if delta["text"] else []
            tool = delta.get("toolUse")
            index = self._tools.get(int(event.get("contentBlockIndex") or 0))
            if tool is not None and index is not None and tool.get("input"):
                return [ToolCallDelta(index, arguments=tool["input"])]
            return []
        if kind == "contentBlockStart":
            tool = (event.get("start") or {}).get("toolUse")
            if tool is None:
                return []
            block = int(event.get("contentBlockIndex") or 0)
            index = self._tools.setdefault(block, len(self._tools))
            return [ToolCallDelta(index, str(tool.get("toolUseId") or ""), str(tool.get("name") or ""))]
        if kind == "messageStop":
            self._stop = stop_reason(event.get("stopReason"))
        elif kind == "metadata":
            self._usage = map_usage(event.get("usage"))
        return []

    def done(self) -> StreamDone:
        assert self._stop is not None
        return StreamDone(finish_reason=self._stop, usage=self._usage)
