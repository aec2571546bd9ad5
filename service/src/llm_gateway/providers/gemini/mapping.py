"""Domain requests to Gemini `generateContent` bodies, and replies back to domain results.

What differs from Chat Completions:
- Roles are `user` and `model`; system text is the top-level `systemInstruction`, not a turn.
  Consecutive turns of one role are merged into one.
- Sampling settings live in `generationConfig` (camelCase); at most 5 stop sequences.
- Tools are `functionDeclarations` whose argument schema goes in `parametersJsonSchema` (full
  JSON Schema; `parameters` takes only an OpenAPI subset). `tool_choice` becomes
  `toolConfig.functionCallingConfig` (AUTO, NONE, ANY, ANY + allowedFunctionNames); a strict tool
  asks for mode VALIDATED (schema-constrained calls). There is no way to forbid parallel calls.
- Tool calls carry arguments as a JSON object. A tool result is a `functionResponse` part in a
  user turn, matched to its call by function name: the gateway's tool message names only the call
  id, so the name comes from the earlier assistant tool call with that id. Call ids are never
  sent back: the generateContent request schema rejects `id` on functionCall and functionResponse.
- Replies may carry no call ids; the gateway then makes them up (`call_<index>_<hex>`). Streamed
  calls arrive whole, each as one chunk part.
- Gemini 3 rejects replayed function calls without the thought signature it sent with them. The
  gateway keeps none, so the first function call of each replayed model turn carries Google's
  documented stand-in signature (`SKIP_THOUGHT_SIGNATURE`).
- Images: inline bytes are `inlineData`, URLs `fileData`, which needs a MIME type (taken from the
  part or guessed from the URL's extension). Image detail is one `mediaResolution` per request.
- JSON output is `responseMimeType: application/json`, with `responseJsonSchema` for a schema.
- Reasoning is `thinkingConfig.thinkingBudget`: the request's budget, or by effort
  (`EFFORT_BUDGETS`): NONE 0 (thinking off), MINIMAL 1024, LOW 2048, MEDIUM 8192, HIGH 24576.
- Usage: thoughts are counted apart from candidates (`thoughtsTokenCount`); the gateway's
  completion tokens include them. Tool-use prompt tokens count as prompt; cached tokens are part
  of `promptTokenCount` already.
- Thought summaries (`thought: true` parts) are not part of the answer and are skipped.
- A prompt Gemini blocks (`promptFeedback.blockReason`, no candidates) is a completion with no
  text and finish reason CONTENT_FILTER, as when a candidate is stopped for safety.
"""

from __future__ import annotations

import base64
import json
import posixpath
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

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
from llm_gateway.providers.base import THINKING_BUDGETS, Checks, UpstreamCall, merge_options
from llm_gateway.providers.toolcalls import arguments_object, arguments_text, call_id, call_nonce

# thinkingBudget for each reasoning effort, when the request gives no budget of its own: the
# gateway's shared table, and 0 (thinking off) for NONE.
EFFORT_BUDGETS: Mapping[ReasoningEffort, int] = {ReasoningEffort.NONE: 0, **THINKING_BUDGETS}
MAX_STOP_SEQUENCES = 5
# Google's stand-in for the signature of a function call the caller replays without one
# (ai.google.dev/gemini-api/docs/thought-signatures, FAQ); accepted by the Gemini API and Vertex AI.
SKIP_THOUGHT_SIGNATURE = "skip_thought_signature_validator"

_FINISH_REASONS = {
    "STOP": FinishReason.STOP,
    "MAX_TOKENS": FinishReason.LENGTH,
    "SAFETY": FinishReason.CONTENT_FILTER,
    "RECITATION": FinishReason.CONTENT_FILTER,
    "BLOCKLIST": FinishReason.CONTENT_FILTER,
    "PROHIBITED_CONTENT": FinishReason.CONTENT_FILTER,
    "SPII": FinishReason.CONTENT_FILTER,
    "IMAGE_SAFETY": FinishReason.CONTENT_FILTER,
    "IMAGE_PROHIBITED_CONTENT": FinishReason.CONTENT_FILTER,
    "IMAGE_RECITATION": FinishReason.CONTENT_FILTER,
    "MODEL_ARMOR": FinishReason.CONTENT_FILTER,
}
_IMAGE_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
}
_MEDIA_RESOLUTIONS = {"low": "MEDIA_RESOLUTION_LOW", "high": "MEDIA_RESOLUTION_HIGH"}


def finish_reason(value: str | None, *, tool_calls: bool = False) -> FinishReason:
    """Gemini says STOP when it stops to call functions."""
    reason = _FINISH_REASONS.get(value or "", FinishReason.OTHER)
    if tool_calls and reason is FinishReason.STOP:
        return FinishReason.TOOL_CALLS
    return reason


def map_usage(meta: Mapping[str, Any] | None) -> Usage | None:
    if not meta:
        return None
    thoughts = int(meta.get("thoughtsTokenCount") or 0)
    return Usage(
        prompt_tokens=int(meta.get("promptTokenCount") or 0) + int(meta.get("toolUsePromptTokenCount") or 0),
        completion_tokens=int(meta.get("candidatesTokenCount") or 0) + thoughts,
        cache_read_tokens=int(meta.get("cachedContentTokenCount") or 0),
        reasoning_tokens=thoughts,
    )


def tool_call(function_call: Mapping[str, Any], index: int, nonce: str) -> ToolCall:
    """The domain call for a `functionCall` part: its own id when Gemini gave one."""
    arguments = arguments_text(function_call.get("args") or {})
    return ToolCall(call_id(function_call.get("id"), index, nonce), str(function_call["name"]), arguments)


def answer_parts(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The parts of the first candidate that are the answer (thought summaries left out)."""
    candidates = data.get("candidates") or ()
    if not candidates:
        return []
    parts = (candidates[0].get("content") or {}).get("parts") or ()
    return [p for p in parts if not p.get("thought")]


def candidate_finish(data: Mapping[str, Any]) -> str | None:
    """The first candidate's finish reason; only the last chunk of a stream has one."""
    candidates = data.get("candidates") or ()
    if not candidates:
        return None
    return str(candidates[0].get("finishReason") or "") or None


def block_reason(data: Mapping[str, Any]) -> str | None:
    """Why the prompt was blocked, when it was (no candidates then)."""
    if data.get("candidates"):
        return None
    return (data.get("promptFeedback") or {}).get("blockReason") or None


def parse_response(data: Mapping[str, Any]) -> Completion:
    text: list[str] = []
    calls: list[ToolCall] = []
    nonce = call_nonce()
    for part in answer_parts(data):
        if "functionCall" in part:
            calls.append(tool_call(part["functionCall"], len(calls), nonce))
        elif part.get("text"):
            text.append(part["text"])
    if block_reason(data):
        reason = FinishReason.CONTENT_FILTER
    elif not data.get("candidates"):
        raise ValueError("the reply has no candidates and no promptFeedback.blockReason")
    else:
        reason = finish_reason(candidate_finish(data), tool_calls=bool(calls))
    return Completion(
        text="".join(text),
        tool_calls=calls,
        finish_reason=reason,
        usage=map_usage(data.get("usageMetadata")),
        response_id=str(data.get("responseId") or ""),
        provider_model=str(data.get("modelVersion") or ""),
    )


# --- Requests -----------------------------------------------------------------------------------


def build_body(call: UpstreamCall) -> dict[str, Any]:
    """The same body serves `generateContent` and `streamGenerateContent`."""
    request = call.request
    checks = Checks.of(call)
    system, contents, resolution = _conversation(request.messages, checks)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    _tools(call, body, checks)
    config = _generation_config(call, checks)
    if resolution:
        config["mediaResolution"] = resolution
    if config:
        body["generationConfig"] = config
    checks.raise_any()
    merge_options(body, call.options, nested="generationConfig")
    return body


def _generation_config(call: UpstreamCall, checks: Checks) -> dict[str, Any]:
    request = call.request
    gen = request.generation
    config: dict[str, Any] = {}
    settings = (
        ("temperature", gen.temperature),
        ("topP", gen.top_p),
        ("topK", gen.top_k),
        ("maxOutputTokens", gen.max_tokens),
        ("seed", gen.seed),
        ("presencePenalty", gen.presence_penalty),
        ("frequencyPenalty", gen.frequency_penalty),
    )
    config.update((key, value) for key, value in settings if value is not None)
    if len(gen.stop) > MAX_STOP_SEQUENCES:
        checks.invalid("generation.stop", f"Gemini takes at most {MAX_STOP_SEQUENCES} stop sequences")
    elif gen.stop:
        config["stopSequences"] = list(gen.stop)
    fmt = request.response_format
    if fmt is not None and fmt.type is not ResponseFormatType.TEXT:
        config["responseMimeType"] = "application/json"
        if fmt.type is ResponseFormatType.JSON_SCHEMA:
            config["responseJsonSchema"] = fmt.json_schema or {}
    reasoning = request.reasoning
    if reasoning is not None:
        if reasoning.budget_tokens is not None:
            config["thinkingConfig"] = {"thinkingBudget": reasoning.budget_tokens}
        elif reasoning.effort is not None:
            config["thinkingConfig"] = {"thinkingBudget": EFFORT_BUDGETS[reasoning.effort]}
    return config


def _tools(call: UpstreamCall, body: dict[str, Any], checks: Checks) -> None:
    request = call.request
    if not request.tools:
        return
    declarations = []
    for tool in request.tools:
        declaration: dict[str, Any] = {"name": tool.name}
        if tool.description:
            declaration["description"] = tool.description
        if tool.parameters is not None:
            declaration["parametersJsonSchema"] = tool.parameters
        declarations.append(declaration)
    body["tools"] = [{"functionDeclarations": declarations}]

    choice = request.tool_choice
    mode = choice.mode if choice is not None else ToolChoiceMode.AUTO
    config: dict[str, Any]
    if mode is ToolChoiceMode.NAMED:
        assert choice is not None
        config = {"mode": "ANY", "allowedFunctionNames": [choice.tool_name]}
    elif mode is ToolChoiceMode.REQUIRED:
        config = {"mode": "ANY"}  # ANY already constrains calls to the schemas
    elif mode is ToolChoiceMode.NONE:
        config = {"mode": "NONE"}
    elif any(t.strict for t in request.tools):
        config = {"mode": "VALIDATED"}
    else:
        config = {"mode": "AUTO"} if choice is not None else {}
    if config:
        body["toolConfig"] = {"functionCallingConfig": config}
    if request.parallel_tool_calls is False and mode is not ToolChoiceMode.NONE:
        checks.unsupported("parallel_tool_calls", "Gemini models may always call tools in parallel")


def _conversation(
    messages: tuple[Message, ...], checks: Checks
) -> tuple[str, list[dict[str, Any]], str | None]:
    """The system text, the turns, and the request's media resolution (from image detail)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}  # tool call id -> function name, from earlier assistant turns
    media = _Media(checks)
    for i, message in enumerate(messages):
        if message.role is Role.SYSTEM:
            system.append(message.text())
            continue
        if message.role is Role.TOOL:
            role, parts = "user", [_function_response(i, message, call_names, checks)]
        elif message.role is Role.ASSISTANT:
            role, parts = "model", _model_parts(i, message, checks)
            call_names.update((c.id, c.name) for c in message.tool_calls)
        else:
            role, parts = "user", _user_parts(i, message, media, checks)
        if not parts:
            if not message.tool_calls:  # else its calls were refused already
                checks.invalid(f"messages[{i}].content", "Gemini does not accept an empty message")
        elif turns and turns[-1]["role"] == role:
            turns[-1]["parts"].extend(parts)
        else:
            turns.append({"role": role, "parts": parts})
    for turn in turns:
        if turn["role"] == "model":
            first_call = next((p for p in turn["parts"] if "functionCall" in p), None)
            if first_call is not None:
                first_call["thoughtSignature"] = SKIP_THOUGHT_SIGNATURE
    return "\n\n".join(s for s in system if s), turns, media.resolution


def _function_response(
    i: int, message: Message, call_names: Mapping[str, str], checks: Checks
) -> dict[str, Any]:
    name = call_names.get(message.tool_call_id)
    if name is None:
        checks.invalid(
            f"messages[{i}].tool_call_id",
            "no earlier assistant tool call has this id; Gemini needs the called function's name",
        )
        name = ""
    return {"functionResponse": {"name": name, "response": _tool_output(message.text())}}


def _tool_output(text: str) -> dict[str, Any]:
    """A JSON object result is sent as it is; any other text under "output", the key Gemini reads
    as the function's output."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    return value if isinstance(value, dict) else {"output": text}


def _model_parts(i: int, message: Message, checks: Checks) -> list[dict[str, Any]]:
    texts = (p.text for p in message.parts if isinstance(p, TextPart))
    parts: list[dict[str, Any]] = [{"text": text} for text in texts if text]
    for j, call in enumerate(message.tool_calls):
        args = arguments_object(call.arguments, checks, f"messages[{i}].tool_calls[{j}].arguments", "Gemini")
        if args is not None:
            parts.append({"functionCall": {"name": call.name, "args": args}})
    return parts


def _user_parts(i: int, message: Message, media: _Media, checks: Checks) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(message.parts):
        if isinstance(part, TextPart):
            if part.text:
                parts.append({"text": part.text})
        else:
            parts.append(_image(f"messages[{i}].content[{j}].image", part, checks))
            media.note(f"messages[{i}].content[{j}].image.detail", part.detail)
    return parts


def _image(path: str, part: ImagePart, checks: Checks) -> dict[str, Any]:
    if part.data is not None:
        data = base64.b64encode(part.data).decode("ascii")
        return {"inlineData": {"mimeType": part.mime_type, "data": data}}
    url = part.url or ""
    mime_type = part.mime_type or _IMAGE_TYPES.get(posixpath.splitext(urlsplit(url).path)[1].lower(), "")
    if not mime_type:
        checks.invalid(
            f"{path}.mime_type",
            "Gemini needs the MIME type of an image URL: set it, or use a URL whose path ends in "
            + ", ".join(_IMAGE_TYPES),
        )
    return {"fileData": {"mimeType": mime_type, "fileUri": url}}


class _Media:
    """Gemini takes one media resolution per request; image detail is per image."""

    __slots__ = ("_checks", "resolution")

    def __init__(self, checks: Checks) -> None:
        self._checks = checks
        self.resolution: str | None = None

    def note(self, path: str, detail: str) -> None:
        wanted = _MEDIA_RESOLUTIONS.get(detail)
        if wanted is None:  # "auto" or unset: Gemini's default
            return
        if self.resolution is None:
            self.resolution = wanted
        elif wanted != self.resolution:
            self._checks.unsupported(path, "Gemini takes one image detail for all images of a request")
