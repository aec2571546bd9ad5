"""An OpenAI Chat Completions request body as the gateway's domain request.

The body is OpenAI's `POST /v1/chat/completions` JSON, plus the gateway's extensions from the seed
documents: `routing` (`fallback_models`), `budget` (`max_cost`, `cost_alert_threshold`, `user_id`,
`project_id`, `tracking_id`), `metadata` (tags) and `unsupported_parameters` ("strict" or
"lenient"). Every problem is collected with the OpenAI parameter it is about (`messages[1].content`,
`max_tokens`), the door's and the domain's alike, so the caller hears of all of them at once, in
OpenAI's own terms. A parameter the gateway cannot honour is refused (400 naming it), never dropped
silently, unless the request asks for LENIENT handling.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from llm_gateway.domain.errors import FieldViolation, GatewayError, Violations, invalid_request
from llm_gateway.domain.messages import (
    CacheMode,
    CacheOptions,
    Caller,
    ChatRequest,
    GenerationConfig,
    ImagePart,
    Message,
    Part,
    Reasoning,
    ReasoningEffort,
    ResponseFormat,
    ResponseFormatType,
    Role,
    RoutingOptions,
    RoutingStrategy,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
)
from llm_gateway.domain.validation import validate_chat_request
from llm_gateway.web.fields import integer, number, openai_param, strings, text
from llm_gateway.web.openai_response import EVERYTHING, Include

_ROLES = {"system": Role.SYSTEM, "developer": Role.SYSTEM, "user": Role.USER, "assistant": Role.ASSISTANT}
_DATA_URL = re.compile(r"^data:([a-z]+/[a-z0-9.+-]+);base64,(.*)$", re.DOTALL | re.IGNORECASE)
# Accepted and meaningless here: OpenAI's defaults, or settings about OpenAI's own storage.
_IGNORED = frozenset({"store", "service_tier", "prediction", "modalities", "audio", "web_search_options"})
# Known to OpenAI, not honoured by the gateway: refused unless LENIENT (then reported as dropped).
_UNSUPPORTED = frozenset({"logprobs", "top_logprobs", "logit_bias", "functions", "function_call"})
_KNOWN = frozenset(
    {
        "model",
        "messages",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "reasoning_effort",
        "user",
        "n",
        "stream",
        "stream_options",
        "metadata",
        "routing",
        "budget",
        "response",
        "unsupported_parameters",
        "dry_run",
        "task_type",
        *_IGNORED,
        *_UNSUPPORTED,
    }
)


@dataclass(frozen=True, slots=True)
class OpenAIRequest:
    """The domain request, and what the door itself needs from the body."""

    chat: ChatRequest
    stream: bool
    include_usage: bool  # stream_options.include_usage
    max_tokens_param: str  # which of max_tokens / max_completion_tokens the caller used
    dropped: tuple[str, ...] = ()  # parameters the gateway does not honour, left out (LENIENT)
    include: Include = EVERYTHING  # the `response` flags


def decode(body: object, providers: Collection[str]) -> OpenAIRequest:
    """The request `body` describes (parsed JSON, its numbers with `parse_float=Decimal` so money is
    read exactly); raises INVALID_ARGUMENT naming every problem."""
    wire = Violations()
    if not isinstance(body, dict):
        wire.add("", "the body must be a JSON object")
        raise invalid_request(wire.items)
    decoded = _request(body, wire)
    try:
        validate_chat_request(decoded.chat, providers, wire.items)
    except GatewayError as err:
        raise invalid_request(
            FieldViolation(openai_param(v.field, decoded.max_tokens_param), v.description)
            for v in err.violations
        ) from None
    return decoded


def _request(body: dict[str, Any], wire: Violations) -> OpenAIRequest:
    lenient = _policy(body.get("unsupported_parameters"), wire)
    dropped = []
    for name in body:
        if name not in _KNOWN:
            wire.add(name, "is not a Chat Completions parameter the gateway knows")
        elif name in _UNSUPPORTED and body[name] not in (None, False):
            if lenient:
                dropped.append(name)
            else:
                wire.add(
                    name, "is not supported by the gateway; send unsupported_parameters: 'lenient' to drop it"
                )
    n = body.get("n")
    if n not in (None, 1):
        wire.add("n", "only 1 choice per request is supported")
    task_type = text(body.get("task_type"), "task_type", wire)
    model = body.get("model", "" if task_type else None)
    if not isinstance(model, str) or not (model or task_type):
        wire.add("model", "must be a non-empty string (or empty with a task_type)")
        model = ""
    max_tokens_param = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    stream = _bool(body, "stream", wire) or False
    options = _object(body, "stream_options", wire)
    include_usage = bool(options.get("include_usage")) if options else False
    budget = _object(body, "budget", wire) or {}
    routing = _object(body, "routing", wire) or {}
    chat = ChatRequest(
        model=model,
        messages=_messages(body.get("messages"), wire),
        tools=_tools(body.get("tools"), wire),
        tool_choice=_tool_choice(body.get("tool_choice"), wire),
        parallel_tool_calls=_bool(body, "parallel_tool_calls", wire),
        response_format=_response_format(body.get("response_format"), wire),
        generation=_generation(body, max_tokens_param, wire),
        fallback_models=tuple(strings(routing.get("fallback_models"), "routing.fallback_models", wire)),
        max_cost=_decimal(budget.get("max_cost"), "budget.max_cost", wire),
        cost_alert_threshold=_decimal(
            budget.get("cost_alert_threshold"), "budget.cost_alert_threshold", wire
        ),
        dry_run=_bool(body, "dry_run", wire) or False,
        caller=Caller(
            user=text(budget.get("user_id"), "budget.user_id", wire) or text(body.get("user"), "user", wire),
            project=text(budget.get("project_id"), "budget.project_id", wire),
            tenant=text(budget.get("tenant_id"), "budget.tenant_id", wire),
            tracking_id=text(budget.get("tracking_id"), "budget.tracking_id", wire),
        ),
        tags=_tags(body.get("metadata"), wire),
        reasoning=_reasoning(body.get("reasoning_effort"), wire),
        lenient=lenient,
        cache=_cache(routing, wire),
        routing=_routing_options(routing, wire),
        task_type=task_type,
    )
    return OpenAIRequest(
        chat, stream, include_usage, max_tokens_param, tuple(dropped), _include(body.get("response"), wire)
    )


_CACHE_MODES = {mode.value: mode for mode in CacheMode}
_STRATEGIES = {strategy.value: strategy for strategy in RoutingStrategy}
_STRATEGY_KEYS = (
    "strategy",
    "max_cost_per_1k_tokens",
    "max_latency_ms",
    "preferred_providers",
    "required_capabilities",
    "min_context_window",
)


def _routing_options(routing: Mapping[str, Any], wire: Violations) -> RoutingOptions | None:
    """`routing.strategy` ("cost", "speed", "quality", "auto") and its constraints, for model "auto"."""
    if not any(routing.get(k) is not None for k in _STRATEGY_KEYS):
        return None
    name = routing.get("strategy")
    strategy = RoutingStrategy.AUTO
    if name is not None:
        found = _STRATEGIES.get(name) if isinstance(name, str) else None
        if found is None:
            wire.add("routing.strategy", f"must be one of {', '.join(_STRATEGIES)}")
        strategy = found or strategy
    latency = integer(routing.get("max_latency_ms"), "routing.max_latency_ms", wire)
    return RoutingOptions(
        strategy,
        _decimal(routing.get("max_cost_per_1k_tokens"), "routing.max_cost_per_1k_tokens", wire),
        None if latency is None else latency / 1000,
        tuple(strings(routing.get("preferred_providers"), "routing.preferred_providers", wire)),
        tuple(strings(routing.get("required_capabilities"), "routing.required_capabilities", wire)),
        integer(routing.get("min_context_window"), "routing.min_context_window", wire),
    )


def _cache(routing: Mapping[str, Any], wire: Violations) -> CacheOptions | None:
    """`routing.enable_caching` (the seed documents' switch: on or off), or the finer
    `routing.cache_mode` ("on", "off", "read_only", "write_only") and `routing.cache_ttl_seconds`."""
    enable, mode_name, ttl_value = (
        routing.get(k) for k in ("enable_caching", "cache_mode", "cache_ttl_seconds")
    )
    mode = None
    if enable is not None:
        if isinstance(enable, bool):
            mode = CacheMode.ON if enable else CacheMode.OFF
        else:
            wire.add("routing.enable_caching", "must be true or false")
    if mode_name is not None:
        mode = _CACHE_MODES.get(mode_name) if isinstance(mode_name, str) else None
        if mode is None:
            wire.add("routing.cache_mode", f"must be one of {', '.join(_CACHE_MODES)}")
    ttl = None
    if ttl_value is not None:
        if isinstance(ttl_value, bool) or not isinstance(ttl_value, int | Decimal):
            wire.add("routing.cache_ttl_seconds", "must be a number of seconds")
        else:
            ttl = float(ttl_value)
    return None if mode is None and ttl is None else CacheOptions(mode, ttl)


def _include(value: object, wire: Violations) -> Include:
    if value is None:
        return EVERYTHING
    flags = {
        "include_usage": True,
        "include_cost": True,
        "include_latency": True,
        "include_model_info": False,
    }
    if not isinstance(value, dict):
        wire.add("response", "must be an object of include_* flags")
        return EVERYTHING
    for name, flag in value.items():
        if name not in flags or not isinstance(flag, bool):
            wire.add(f"response.{name}", f"must be one of {', '.join(flags)}, true or false")
            continue
        flags[name] = flag
    return Include(
        flags["include_usage"], flags["include_cost"], flags["include_latency"], flags["include_model_info"]
    )


def _policy(value: object, wire: Violations) -> bool:
    if value in (None, "strict"):
        return False
    if value == "lenient":
        return True
    wire.add("unsupported_parameters", "must be 'strict' or 'lenient'")
    return False


def _messages(value: object, wire: Violations) -> tuple[Message, ...]:
    if not isinstance(value, list):
        wire.add("messages", "must be a list of messages")
        return ()
    return tuple(_message(m, f"messages[{i}]", wire) for i, m in enumerate(value))


def _message(value: object, path: str, wire: Violations) -> Message:
    if not isinstance(value, dict):
        wire.add(path, "must be an object")
        return Message(Role.USER, (TextPart(""),))
    role_name = value.get("role")
    if role_name == "tool":
        role = Role.TOOL
    elif isinstance(role_name, str) and role_name in _ROLES:
        role = _ROLES[role_name]
    else:
        wire.add(f"{path}.role", "must be system, developer, user, assistant or tool")
        role = Role.USER
    parts = _content(value.get("content"), f"{path}.content", wire)
    calls = tuple(
        _tool_call(c, f"{path}.tool_calls[{i}]", wire)
        for i, c in enumerate(_list(value, "tool_calls", path, wire))
    )
    return Message(
        role,
        parts,
        calls,
        tool_call_id=text(value.get("tool_call_id"), f"{path}.tool_call_id", wire),
        name=text(value.get("name"), f"{path}.name", wire),
    )


def _content(value: object, path: str, wire: Violations) -> tuple[Part, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (TextPart(value),) if value else ()
    if not isinstance(value, list):
        wire.add(path, "must be a string or a list of content parts")
        return ()
    parts: list[Part] = []
    for i, item in enumerate(value):
        where = f"{path}[{i}]"
        kind = item.get("type") if isinstance(item, dict) else None
        if kind == "text" and isinstance(item.get("text"), str):
            parts.append(TextPart(item["text"]))
        elif kind == "image_url" and isinstance(item.get("image_url"), dict):
            parts.append(_image(item["image_url"], f"{where}.image_url", wire))
        else:
            wire.add(where, "must be a text part or an image_url part")
    return tuple(parts)


def _image(value: dict[str, Any], path: str, wire: Violations) -> ImagePart:
    url, detail = value.get("url"), value.get("detail") or ""
    if not isinstance(detail, str):
        wire.add(f"{path}.detail", "must be auto, low or high")
        detail = ""
    if not isinstance(url, str):
        wire.add(f"{path}.url", "must be a URL or a data URL")
        return ImagePart(url="", detail=detail)
    data_url = _DATA_URL.match(url)
    if data_url is None:
        return ImagePart(url=url, detail=detail)
    try:
        data = base64.b64decode(data_url.group(2), validate=True)
    except (binascii.Error, ValueError):
        wire.add(f"{path}.url", "is a data URL whose data is not base64")
        data = b""
    return ImagePart(data=data, mime_type=data_url.group(1).lower(), detail=detail)


def _tool_call(value: object, path: str, wire: Violations) -> ToolCall:
    function = value.get("function") if isinstance(value, dict) else None
    if (
        not isinstance(value, dict)
        or not isinstance(function, dict)
        or value.get("type", "function") != "function"
    ):
        wire.add(path, "must be a function tool call: {id, type: 'function', function: {name, arguments}}")
        return ToolCall("", "", "")
    arguments = function.get("arguments", "")
    return ToolCall(
        text(value.get("id"), f"{path}.id", wire),
        text(function.get("name"), f"{path}.function.name", wire),
        arguments if isinstance(arguments, str) else "",
    )


def _tools(value: object, wire: Violations) -> tuple[Tool, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        wire.add("tools", "must be a list of tools")
        return ()
    tools = []
    for i, item in enumerate(value):
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(item, dict) or item.get("type") != "function" or not isinstance(function, dict):
            wire.add(f"tools[{i}]", "must be {type: 'function', function: {name, description, parameters}}")
            continue
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            wire.add(f"tools[{i}].function.parameters", "must be a JSON Schema object")
            parameters = None
        tools.append(
            Tool(
                text(function.get("name"), f"tools[{i}].function.name", wire),
                text(function.get("description"), f"tools[{i}].function.description", wire),
                parameters,
                bool(function.get("strict")),
            )
        )
    return tuple(tools)


def _tool_choice(value: object, wire: Violations) -> ToolChoice | None:
    if value is None:
        return None
    if value in ("auto", "none", "required"):
        return ToolChoice(ToolChoiceMode(str(value)))
    function = value.get("function") if isinstance(value, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        return ToolChoice(ToolChoiceMode.NAMED, function["name"])
    wire.add("tool_choice", "must be auto, none, required or {type: 'function', function: {name}}")
    return None


def _response_format(value: object, wire: Violations) -> ResponseFormat | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return ResponseFormat(ResponseFormatType.TEXT)
    if kind == "json_object":
        return ResponseFormat(ResponseFormatType.JSON_OBJECT)
    if kind == "json_schema" and isinstance(value, dict):
        spec = value.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            wire.add("response_format.json_schema", "must be {name, schema, strict}")
            return None
        return ResponseFormat(
            ResponseFormatType.JSON_SCHEMA,
            spec.get("schema"),
            text(spec.get("name"), "response_format.json_schema.name", wire) or "response",
            bool(spec.get("strict")),
        )
    wire.add("response_format.type", "must be text, json_object or json_schema")
    return None


def _generation(body: Mapping[str, Any], max_tokens_param: str, wire: Violations) -> GenerationConfig:
    stop = body.get("stop")
    stops: tuple[str, ...] = ()
    if isinstance(stop, str):
        stops = (stop,)
    elif stop is not None:
        stops = tuple(strings(stop, "stop", wire))
    return GenerationConfig(
        temperature=number(body.get("temperature"), "temperature", wire),
        top_p=number(body.get("top_p"), "top_p", wire),
        max_tokens=integer(body.get(max_tokens_param), max_tokens_param, wire),
        stop=stops,
        seed=integer(body.get("seed"), "seed", wire),
        presence_penalty=number(body.get("presence_penalty"), "presence_penalty", wire),
        frequency_penalty=number(body.get("frequency_penalty"), "frequency_penalty", wire),
    )


def _reasoning(value: object, wire: Violations) -> Reasoning | None:
    if value is None:
        return None
    try:
        return Reasoning(effort=ReasoningEffort(str(value)))
    except ValueError:
        wire.add("reasoning_effort", "must be none, minimal, low, medium or high")
        return None


def _tags(value: object, wire: Violations) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        wire.add("metadata", "must be an object of string values")
        return {}
    return dict(value)


def _bool(body: Mapping[str, Any], name: str, wire: Violations) -> bool | None:
    value = body.get(name)
    if value is None or isinstance(value, bool):
        return value
    wire.add(name, "must be true or false")
    return None


def _object(body: Mapping[str, Any], name: str, wire: Violations) -> dict[str, Any] | None:
    value = body.get(name)
    if value is None or isinstance(value, dict):
        return value
    wire.add(name, "must be an object")
    return None


def _list(body: Mapping[str, Any], name: str, path: str, wire: Violations) -> list[Any]:
    value = body.get(name)
    if value is None:
        return []
    if isinstance(value, list):
        return value
    wire.add(f"{path}.{name}", "must be a list")
    return []


def _decimal(value: object, path: str, wire: Violations) -> Decimal | None:
    """A USD amount: a JSON number (read from its text, never through a float) or a decimal string."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        wire.add(path, "must be a decimal number of USD such as 0.05")
        return None
    try:
        return Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        wire.add(path, "must be a decimal number of USD such as 0.05")
        return None
