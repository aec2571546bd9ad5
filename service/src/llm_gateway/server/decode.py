"""Protobuf requests to validated domain requests.

Every field is checked; all violations of a request are collected and reported together as one
INVALID_ARGUMENT with a BadRequest detail naming each field (paths like
"messages[1].content[0].image.url"; the servicer puts them under "request." inside ChatStream and
EstimateCost).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf import struct_pb2

from llm_gateway.domain.errors import FieldViolation, invalid_request
from llm_gateway.domain.messages import (
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
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    image_url_problem,
)
from llm_gateway.server.shape import MAX_MESSAGES
from llmgateway.v1 import chat_pb2, content_pb2

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
# Counts are checked before anything is built, so a request of a million tiny parts is refused in
# microseconds rather than validated item by item.
_MAX_PARTS = 1_000  # per message
_MAX_TOTAL_PARTS = 100_000
_MAX_TOOL_CALLS = 256  # per message
_MAX_TOOLS = 512
_MAX_STOP = 4
_MAX_FALLBACKS = 10
_MAX_TAGS = 64
_MAX_CALLER_FIELD = 256
_MAX_BUDGET = Decimal(1_000_000)
# Enough for any float's repr down to 1e-13 USD. A finer budget means nothing, and written out in
# full (as BUDGET_EXCEEDED's metadata does) it could outgrow gRPC's limit on trailing metadata.
_MAX_BUDGET_PLACES = 30

_ROLES = {
    content_pb2.ROLE_SYSTEM: Role.SYSTEM,
    content_pb2.ROLE_USER: Role.USER,
    content_pb2.ROLE_ASSISTANT: Role.ASSISTANT,
    content_pb2.ROLE_TOOL: Role.TOOL,
}
_DETAILS = {
    content_pb2.IMAGE_DETAIL_UNSPECIFIED: "",
    content_pb2.IMAGE_DETAIL_AUTO: "auto",
    content_pb2.IMAGE_DETAIL_LOW: "low",
    content_pb2.IMAGE_DETAIL_HIGH: "high",
}
_TOOL_MODES = {
    content_pb2.TOOL_CHOICE_MODE_AUTO: ToolChoiceMode.AUTO,
    content_pb2.TOOL_CHOICE_MODE_NONE: ToolChoiceMode.NONE,
    content_pb2.TOOL_CHOICE_MODE_REQUIRED: ToolChoiceMode.REQUIRED,
}
_EFFORTS = {
    chat_pb2.REASONING_EFFORT_NONE: ReasoningEffort.NONE,
    chat_pb2.REASONING_EFFORT_MINIMAL: ReasoningEffort.MINIMAL,
    chat_pb2.REASONING_EFFORT_LOW: ReasoningEffort.LOW,
    chat_pb2.REASONING_EFFORT_MEDIUM: ReasoningEffort.MEDIUM,
    chat_pb2.REASONING_EFFORT_HIGH: ReasoningEffort.HIGH,
}
_POLICIES = {
    chat_pb2.UNSUPPORTED_PARAMETER_POLICY_UNSPECIFIED: False,
    chat_pb2.UNSUPPORTED_PARAMETER_POLICY_STRICT: False,
    chat_pb2.UNSUPPORTED_PARAMETER_POLICY_LENIENT: True,
}
_FORMATS = {
    content_pb2.RESPONSE_FORMAT_TYPE_TEXT: ResponseFormatType.TEXT,
    content_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT: ResponseFormatType.JSON_OBJECT,
    content_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA: ResponseFormatType.JSON_SCHEMA,
}


class _Violations:
    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))


def decode_chat_request(pb: chat_pb2.ChatRequest, providers: Collection[str]) -> ChatRequest:
    """Validates `pb` and returns the domain request; raises INVALID_ARGUMENT listing every problem."""
    v = _Violations()
    messages = _messages(pb, v)
    tools = _tools(pb, v)
    request = ChatRequest(
        model=pb.model,
        messages=messages,
        tools=tools,
        tool_choice=_tool_choice(pb, tools, v),
        parallel_tool_calls=pb.parallel_tool_calls if pb.HasField("parallel_tool_calls") else None,
        response_format=_response_format(pb, v),
        generation=_generation(pb.generation, v),
        fallback_models=tuple(pb.fallback_models),
        max_cost=_budget(pb.max_cost, v),
        dry_run=pb.dry_run,
        caller=_caller(pb.caller, v),
        tags=_tags(pb, v),
        provider_options=_provider_options(pb, providers, v),
        reasoning=_reasoning(pb, v),
        lenient=_POLICIES.get(pb.unsupported_parameters, False),
    )
    if pb.unsupported_parameters not in _POLICIES:
        v.add("unsupported_parameters", "unknown policy")
    if len(pb.fallback_models) > _MAX_FALLBACKS:
        v.add("fallback_models", f"at most {_MAX_FALLBACKS} fallback models")
    if v.items:
        raise invalid_request(v.items)
    return request


def _messages(pb: chat_pb2.ChatRequest, v: _Violations) -> tuple[Message, ...]:
    if not pb.messages:
        v.add("messages", "must contain at least one message")
        return ()
    if len(pb.messages) > MAX_MESSAGES:
        v.add("messages", f"at most {MAX_MESSAGES} messages, got {len(pb.messages)}")
        return ()
    parts = sum(len(m.content) for m in pb.messages)
    if parts > _MAX_TOTAL_PARTS:
        v.add("messages", f"at most {_MAX_TOTAL_PARTS} content parts in all, got {parts}")
        return ()
    return tuple(_message(m, f"messages[{i}]", v) for i, m in enumerate(pb.messages))


def _message(pb: content_pb2.Message, path: str, v: _Violations) -> Message:
    role = _ROLES.get(pb.role)
    if role is None:
        v.add(f"{path}.role", "must be ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL")
        role = Role.USER
    if len(pb.content) > _MAX_PARTS:
        v.add(f"{path}.content", f"at most {_MAX_PARTS} parts, got {len(pb.content)}")
        return Message(role)
    if len(pb.tool_calls) > _MAX_TOOL_CALLS:
        v.add(f"{path}.tool_calls", f"at most {_MAX_TOOL_CALLS} tool calls, got {len(pb.tool_calls)}")
        return Message(role)
    parts = tuple(_part(p, f"{path}.content[{i}]", role, v) for i, p in enumerate(pb.content))
    tool_calls = tuple(_tool_call(c, f"{path}.tool_calls[{i}]", v) for i, c in enumerate(pb.tool_calls))
    if role is Role.ASSISTANT:
        if not parts and not tool_calls:
            v.add(f"{path}.content", "an assistant message needs content or tool calls")
    elif not parts:
        v.add(f"{path}.content", f"a {role.value} message needs content")
    if tool_calls and role is not Role.ASSISTANT:
        v.add(f"{path}.tool_calls", "only assistant messages carry tool calls")
    if role is Role.TOOL:
        if not pb.tool_call_id:
            v.add(f"{path}.tool_call_id", "a tool message must name the tool call it answers")
    elif pb.tool_call_id:
        v.add(f"{path}.tool_call_id", "only tool messages carry a tool_call_id")
    if pb.name and not _NAME.match(pb.name):
        v.add(f"{path}.name", "must be 1 to 64 characters of [a-zA-Z0-9_-]")
    return Message(role, parts, tool_calls, pb.tool_call_id, pb.name)


def _part(pb: content_pb2.Part, path: str, role: Role, v: _Violations) -> Part:
    kind = pb.WhichOneof("kind")
    if kind == "text":
        return TextPart(pb.text)
    if kind != "image":
        v.add(path, "a part must set text or image")
        return TextPart("")
    if role is not Role.USER:
        v.add(f"{path}.image", "only user messages may carry images")
    image = pb.image
    source = image.WhichOneof("source")
    detail = _DETAILS.get(image.detail)
    if detail is None:
        v.add(f"{path}.image.detail", "unknown image detail")
        detail = ""
    if image.mime_type and image.mime_type not in _IMAGE_TYPES:
        v.add(f"{path}.image.mime_type", f"must be one of {', '.join(sorted(_IMAGE_TYPES))}")
    if source == "url":
        problem = image_url_problem(image.url)
        if problem is not None:
            v.add(f"{path}.image.url", problem)
        return ImagePart(url=image.url, mime_type=image.mime_type, detail=detail)
    if source == "data":
        if not image.data:
            v.add(f"{path}.image.data", "must not be empty")
        if not image.mime_type:
            v.add(f"{path}.image.mime_type", "is required with inline data")
        return ImagePart(data=image.data, mime_type=image.mime_type, detail=detail)
    v.add(f"{path}.image", "must set url or data")
    return ImagePart()


def _tool_call(pb: content_pb2.ToolCall, path: str, v: _Violations) -> ToolCall:
    if not pb.id:
        v.add(f"{path}.id", "must be set")
    if not _NAME.match(pb.name):
        v.add(f"{path}.name", "must be 1 to 64 characters of [a-zA-Z0-9_-]")
    if pb.arguments:
        try:
            json.loads(pb.arguments)
        except ValueError:
            v.add(f"{path}.arguments", "must be JSON text")
    return ToolCall(pb.id, pb.name, pb.arguments)


def _tools(pb: chat_pb2.ChatRequest, v: _Violations) -> tuple[Tool, ...]:
    if len(pb.tools) > _MAX_TOOLS:
        v.add("tools", f"at most {_MAX_TOOLS} tools, got {len(pb.tools)}")
        return ()
    seen: set[str] = set()
    tools = []
    for i, tool in enumerate(pb.tools):
        path = f"tools[{i}]"
        if not _NAME.match(tool.name):
            v.add(f"{path}.name", "must be 1 to 64 characters of [a-zA-Z0-9_-]")
        elif tool.name in seen:
            v.add(f"{path}.name", f"duplicate tool name {tool.name!r}")
        seen.add(tool.name)
        parameters = (
            _json_struct(tool.parameters, f"{path}.parameters", v) if tool.HasField("parameters") else None
        )
        if parameters is not None and parameters.get("type", "object") != "object":
            v.add(f"{path}.parameters", "must be a JSON Schema of type object")
        tools.append(Tool(tool.name, tool.description, parameters, tool.strict))
    return tuple(tools)


def _tool_choice(pb: chat_pb2.ChatRequest, tools: tuple[Tool, ...], v: _Violations) -> ToolChoice | None:
    if not pb.HasField("tool_choice"):
        return None
    which = pb.tool_choice.WhichOneof("choice")
    if which == "tool_name":
        name = pb.tool_choice.tool_name
        if name not in {t.name for t in tools}:
            v.add("tool_choice.tool_name", f"{name!r} is not one of the request's tools")
        return ToolChoice(ToolChoiceMode.NAMED, name)
    if which == "mode":
        mode = _TOOL_MODES.get(pb.tool_choice.mode)
        if mode is None:
            if pb.tool_choice.mode != content_pb2.TOOL_CHOICE_MODE_UNSPECIFIED:
                v.add("tool_choice.mode", "unknown tool choice mode")
            return None
        if mode is not ToolChoiceMode.NONE and not tools:
            v.add("tool_choice", "needs tools")
        return ToolChoice(mode)
    return None


def _response_format(pb: chat_pb2.ChatRequest, v: _Violations) -> ResponseFormat | None:
    if not pb.HasField("response_format"):
        return None
    rf = pb.response_format
    kind = _FORMATS.get(rf.type)
    schema = (
        _json_struct(rf.json_schema, "response_format.json_schema", v) if rf.HasField("json_schema") else None
    )
    if kind is None:
        if rf.type != content_pb2.RESPONSE_FORMAT_TYPE_UNSPECIFIED:
            v.add("response_format.type", "unknown response format type")
        kind = ResponseFormatType.TEXT
    if kind is ResponseFormatType.JSON_SCHEMA and not schema:
        v.add("response_format.json_schema", "is required with RESPONSE_FORMAT_TYPE_JSON_SCHEMA")
    if kind is not ResponseFormatType.JSON_SCHEMA and schema is not None:
        v.add("response_format.json_schema", "is only valid with RESPONSE_FORMAT_TYPE_JSON_SCHEMA")
    if rf.schema_name and not _NAME.match(rf.schema_name):
        v.add("response_format.schema_name", "must be 1 to 64 characters of [a-zA-Z0-9_-]")
    return ResponseFormat(kind, schema, rf.schema_name or "response", rf.strict)


def _generation(pb: chat_pb2.GenerationConfig, v: _Violations) -> GenerationConfig:
    def ranged(name: str, low: float, high: float, low_open: bool = False) -> float | None:
        if not pb.HasField(name):  # type: ignore[arg-type]
            return None
        value = float(getattr(pb, name))
        below = value <= low if low_open else value < low
        if math.isnan(value) or below or value > high:
            bound = f"greater than {low:g}" if low_open else f"at least {low:g}"
            v.add(f"generation.{name}", f"must be {bound} and at most {high:g}, got {value:g}")
        return value

    def positive(name: str) -> int | None:
        if not pb.HasField(name):  # type: ignore[arg-type]
            return None
        value = int(getattr(pb, name))
        if value < 1:
            v.add(f"generation.{name}", f"must be at least 1, got {value}")
        return value

    if len(pb.stop) > _MAX_STOP:
        v.add("generation.stop", f"at most {_MAX_STOP} stop sequences")
    for i, stop in enumerate(pb.stop[:_MAX_STOP]):
        if not stop:
            v.add(f"generation.stop[{i}]", "must not be empty")
    return GenerationConfig(
        temperature=ranged("temperature", 0.0, 2.0),
        top_p=ranged("top_p", 0.0, 1.0, low_open=True),
        top_k=positive("top_k"),
        max_tokens=positive("max_tokens"),
        stop=tuple(pb.stop),
        seed=pb.seed if pb.HasField("seed") else None,
        presence_penalty=ranged("presence_penalty", -2.0, 2.0),
        frequency_penalty=ranged("frequency_penalty", -2.0, 2.0),
    )


def _reasoning(pb: chat_pb2.ChatRequest, v: _Violations) -> Reasoning | None:
    if not pb.HasField("reasoning"):
        return None
    r = pb.reasoning
    effort = _EFFORTS.get(r.effort)
    if effort is None and r.effort != chat_pb2.REASONING_EFFORT_UNSPECIFIED:
        v.add("reasoning.effort", "unknown reasoning effort")
    budget = r.budget_tokens if r.HasField("budget_tokens") else None
    if budget is not None and budget < 1:
        v.add("reasoning.budget_tokens", f"must be at least 1, got {budget}")
    if effort is ReasoningEffort.NONE and budget:
        v.add("reasoning.budget_tokens", "must be unset when reasoning.effort is NONE")
    if effort is None and budget is None:
        return None
    return Reasoning(effort, budget)


def _budget(text: str, v: _Violations) -> Decimal | None:
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        v.add("max_cost", f"must be a decimal number of USD such as '0.05', got {text[:40]!r}")
        return None
    if not value.is_finite() or value < 0 or value > _MAX_BUDGET:
        v.add("max_cost", f"must be between 0 and {_MAX_BUDGET} USD")
        return None
    if _decimal_places(value) > _MAX_BUDGET_PLACES:
        v.add("max_cost", f"at most {_MAX_BUDGET_PLACES} decimal places")
        return None
    return value


def _decimal_places(value: Decimal) -> int:
    """Digits after the point, trailing zeros aside: 0.0500 has 2. Counted on the digits as written,
    so no context rounds a tiny value to zero first."""
    if not value:
        return 0
    _, digits, exponent = value.as_tuple()
    trailing = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -(int(exponent) + trailing))


def _caller(pb: chat_pb2.CallerMetadata, v: _Violations) -> Caller:
    for name in ("user", "project", "tenant", "tracking_id"):
        if len(getattr(pb, name)) > _MAX_CALLER_FIELD:
            v.add(f"caller.{name}", f"at most {_MAX_CALLER_FIELD} characters")
    return Caller(pb.user, pb.project, pb.tenant, pb.tracking_id)


def _tags(pb: chat_pb2.ChatRequest, v: _Violations) -> dict[str, str]:
    if len(pb.tags) > _MAX_TAGS:
        v.add("tags", f"at most {_MAX_TAGS} tags, got {len(pb.tags)}")
        return {}
    for key, value in pb.tags.items():
        if not 1 <= len(key) <= 63:
            v.add(f"tags[{key[:63]!r}]", "keys are 1 to 63 characters")
        if len(value) > 256:
            v.add(f"tags[{key[:63]!r}]", "values are at most 256 characters")
    return dict(pb.tags)


def _provider_options(
    pb: chat_pb2.ChatRequest, providers: Collection[str], v: _Violations
) -> dict[str, dict[str, Any]]:
    options = {}
    for name, struct in pb.provider_options.items():
        if name not in providers:
            v.add(f"provider_options[{name[:64]!r}]", "not a configured provider")
            continue
        options[name] = _json_struct(struct, f"provider_options[{name[:64]!r}]", v)
    return options


def _json_struct(struct: struct_pb2.Struct, path: str, v: _Violations) -> dict[str, Any]:
    """`struct` as plain JSON values, checked: a Struct number may be NaN or infinite, which JSON has
    no way to write, so the provider would get a body it cannot parse."""
    if not _finite(struct.fields.values()):
        v.add(path, "numbers must be finite (JSON has no NaN or Infinity)")
    return struct_to_dict(struct)


def _finite(values: Iterable[struct_pb2.Value]) -> bool:
    for value in values:
        kind = value.WhichOneof("kind")
        if kind == "number_value" and not math.isfinite(value.number_value):
            return False
        if kind == "struct_value" and not _finite(value.struct_value.fields.values()):
            return False
        if kind == "list_value" and not _finite(value.list_value.values):
            return False
    return True


def struct_to_dict(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain JSON values. Struct carries every number as a double; integral ones come
    back as ints, so JSON Schema keywords like maxItems and options like max_tokens stay integers."""
    return {key: _value(value) for key, value in struct.fields.items()}


def _value(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return struct_to_dict(value.struct_value)
    if kind == "list_value":
        return [_value(item) for item in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None
