"""Domain requests to Ollama `/api/chat` bodies, and replies back to domain results.

What differs from Chat Completions: sampling settings sit in a nested `options` object, with
max_tokens as `num_predict`; a message's `content` is one string and its images a separate list of
base64 strings (inline data only: Ollama fetches no URLs); tool-call arguments are JSON objects, a
tool result names its tool (`tool_name`) rather than a call id, and replies carry no call ids (the
gateway makes them up); there is no tool_choice and no parallel_tool_calls switch; JSON output is
`format` ("json", or the JSON Schema itself); reasoning is the `think` switch; `stream` defaults to
true, so it is always sent; usage is `prompt_eval_count` and `eval_count` on the last message.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any

from llm_gateway.domain.messages import (
    ImagePart,
    Message,
    ReasoningEffort,
    ResponseFormat,
    ResponseFormatType,
    Role,
    ToolCall,
    ToolChoiceMode,
)
from llm_gateway.domain.results import Completion, FinishReason, Usage
from llm_gateway.providers.base import Checks, UpstreamCall, merge_options
from llm_gateway.providers.toolcalls import arguments_object, arguments_text, call_id, call_nonce

_UNITLESS = re.compile(r"^-?\d+$")


def build_body(call: UpstreamCall, *, stream: bool, keep_alive: str | None = None) -> dict[str, Any]:
    """`keep_alive` is the provider's configured value. `call.options` is merged in last, key by key,
    except that an `options` object in it adds to (and overrides within) the mapped `options`
    instead of replacing them, so `{"options": {"num_ctx": 8192}}` keeps the request's temperature."""
    request = call.request
    checks = Checks.of(call)
    body: dict[str, Any] = {
        "model": call.model.name,
        "messages": _messages(request.messages, checks),
        "stream": stream,  # explicit either way: Ollama streams when it is left out
    }
    options = _options(call)
    if options:
        body["options"] = options
    fmt = _format(request.response_format)
    if fmt is not None:
        body["format"] = fmt
    _tools(call, body, checks)
    think = _think(call, checks)
    if think is not None:
        body["think"] = think
    if keep_alive:
        body["keep_alive"] = _duration(keep_alive)
    checks.raise_any()
    merge_options(body, call.options, nested="options")
    return body


def _duration(value: str) -> str | int:
    """Ollama parses a string duration with Go's time.ParseDuration, which refuses a number without
    a unit ("300", "-1"); a JSON number is taken as seconds (negative: keep loaded for ever)."""
    return int(value) if _UNITLESS.match(value) else value


def _options(call: UpstreamCall) -> dict[str, Any]:
    gen = call.request.generation
    settings: tuple[tuple[str, Any], ...] = (
        ("temperature", gen.temperature),
        ("top_p", gen.top_p),
        ("top_k", gen.top_k),
        ("seed", gen.seed),
        ("num_predict", gen.max_tokens),
        ("presence_penalty", gen.presence_penalty),
        ("frequency_penalty", gen.frequency_penalty),
    )
    options = {key: value for key, value in settings if value is not None}
    if gen.stop:
        options["stop"] = list(gen.stop)
    return options


def _format(fmt: ResponseFormat | None) -> str | dict[str, Any] | None:
    """JSON mode is `"json"`; a schema is sent as `format` itself, and Ollama constrains decoding to
    it (so `strict` is honoured). The schema's name has no place on the wire."""
    if fmt is None or fmt.type is ResponseFormatType.TEXT:
        return None
    if fmt.type is ResponseFormatType.JSON_SCHEMA and fmt.json_schema is not None:
        return fmt.json_schema
    return "json"


def _tools(call: UpstreamCall, body: dict[str, Any], checks: Checks) -> None:
    """Ollama has no tool_choice: AUTO is its only behaviour, NONE is honoured exactly by not
    offering the tools, and a forced call cannot be asked for. It may return several calls in one
    turn and cannot be told not to."""
    request = call.request
    if not request.tools:
        return
    choice = request.tool_choice
    if choice is not None and choice.mode is ToolChoiceMode.NONE:
        return
    if choice is not None and choice.mode in (ToolChoiceMode.REQUIRED, ToolChoiceMode.NAMED):
        checks.unsupported("tool_choice", "Ollama cannot force a tool call; it takes AUTO or NONE")
    if request.parallel_tool_calls is False:
        checks.unsupported("parallel_tool_calls", "Ollama cannot limit a turn to one tool call")
    tools = []
    for tool in request.tools:
        function: dict[str, Any] = {"name": tool.name}
        if tool.description:
            function["description"] = tool.description
        function["parameters"] = tool.parameters or {"type": "object", "properties": {}}
        tools.append({"type": "function", "function": function})
    body["tools"] = tools


def _think(call: UpstreamCall, checks: Checks) -> bool | None:
    """`think` on or off. Ollama also takes "low"/"medium"/"high", but only for gpt-oss: other
    thinking models answer 400 to a level, so any effort but NONE turns thinking on, at the model's
    own depth (pass a level to gpt-oss in provider_options as {"think": "high"}). A token budget,
    which the request may give alongside an effort for providers that take one, has no Ollama form."""
    reasoning = call.request.reasoning
    if reasoning is None:
        return None
    if reasoning.effort is None:
        if reasoning.budget_tokens is not None:
            checks.unsupported(
                "reasoning.budget_tokens",
                "Ollama turns thinking on or off (reasoning.effort) and takes no token budget",
            )
        return None
    return reasoning.effort is not ReasoningEffort.NONE


def _messages(messages: tuple[Message, ...], checks: Checks) -> list[dict[str, Any]]:
    names: dict[str, str] = {}  # tool call id -> tool name, from the assistant turns so far
    out = []
    for i, message in enumerate(messages):
        if message.name:
            checks.unsupported(f"messages[{i}].name", "Ollama messages carry no author name")
        item: dict[str, Any] = {"role": message.role.value, "content": message.text()}
        images = []
        for j, part in enumerate(message.parts):
            if not isinstance(part, ImagePart):
                continue
            if part.data is None:
                checks.unsupported(
                    f"messages[{i}].content[{j}].image",
                    "Ollama takes images only as inline data, not by URL",
                )
            else:
                images.append(base64.b64encode(part.data).decode("ascii"))
        if images:
            item["images"] = images
        if message.tool_calls:
            calls = []
            for j, tool_call in enumerate(message.tool_calls):
                names[tool_call.id] = tool_call.name
                path = f"messages[{i}].tool_calls[{j}].arguments"
                arguments = arguments_object(tool_call.arguments, checks, path, "Ollama")
                if arguments is None:
                    continue
                calls.append({"function": {"name": tool_call.name, "arguments": arguments}})
            item["tool_calls"] = calls
        if message.role is Role.TOOL:
            # Ollama matches a result to its call by tool name; an id from no earlier turn has none.
            name = names.get(message.tool_call_id)
            if name:
                item["tool_name"] = name
        out.append(item)
    return out


# --- Replies --------------------------------------------------------------------------------------


def tool_call(raw: dict[str, Any], index: int, nonce: str) -> ToolCall:
    """A reply's tool call. Ollama sends no id (recent servers may: then it is kept), so the id is
    `call_<index>_<nonce>`: unique, and the same for a call wherever it is seen in one reply."""
    function = raw["function"]
    arguments = function.get("arguments")
    text = arguments if isinstance(arguments, str) else arguments_text(arguments)
    return ToolCall(call_id(raw.get("id"), index, nonce), str(function["name"]), text)


def finish_reason(done_reason: str | None, has_tool_calls: bool) -> FinishReason:
    """Ollama says "stop" after tool calls too; "load" and "unload" end calls that generated
    nothing."""
    if done_reason == "length":
        return FinishReason.LENGTH
    if done_reason == "stop":
        return FinishReason.TOOL_CALLS if has_tool_calls else FinishReason.STOP
    return FinishReason.OTHER


def map_usage(data: Mapping[str, Any]) -> Usage | None:
    """Ollama omits a zero count. A missing `prompt_eval_count` (the whole prompt came from its
    cache) cannot be told from a missing report, and 0 would understate the prompt, so usage is then
    unknown and the gateway estimates it. A missing `eval_count` means no output tokens; thinking
    is counted in it, and not apart."""
    prompt = data.get("prompt_eval_count")
    if prompt is None:
        return None
    return Usage(prompt_tokens=int(prompt), completion_tokens=int(data.get("eval_count") or 0))


def parse_chat(data: dict[str, Any]) -> Completion:
    message = data["message"]
    nonce = call_nonce()
    calls = [tool_call(raw, i, nonce) for i, raw in enumerate(message.get("tool_calls") or ())]
    return Completion(
        text=message.get("content") or "",
        tool_calls=calls,
        finish_reason=finish_reason(data.get("done_reason"), bool(calls)),
        usage=map_usage(data),
        response_id=str(data.get("id") or ""),
        provider_model=str(data.get("model") or ""),
    )
