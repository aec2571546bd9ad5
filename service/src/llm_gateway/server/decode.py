"""Protobuf requests to domain requests, validated.

The decoder converts; the domain checks (`domain/validation.py`, shared with every front door).
What only protobuf can get wrong is found here: enum numbers the contract does not define, a part
whose oneof is unset, a `max_cost` string that is no decimal number. Those violations go to the
domain check with the request, so a caller gets all of a request's problems, protobuf's and the
domain's, in one INVALID_ARGUMENT with a BadRequest naming each field (paths like
"messages[1].content[0].image.url"; the servicer puts them under "request." inside ChatStream and
EstimateCost).
"""

from __future__ import annotations

from collections.abc import Collection
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf import struct_pb2

from llm_gateway.domain.errors import Violations
from llm_gateway.domain.limits import MESSAGES, PARTS, PARTS_IN_ALL, TAGS, TOOL_CALLS, TOOLS
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
from llmgateway.v1 import chat_pb2, content_pb2

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


def decode_chat_request(pb: chat_pb2.ChatRequest, providers: Collection[str]) -> ChatRequest:
    """The domain request `pb` carries; raises INVALID_ARGUMENT listing every problem, protobuf's
    and the domain's. `providers` are the configured names `provider_options` may use."""
    wire = Violations()
    request = _chat_request(pb, wire)
    validate_chat_request(request, providers, wire.items)
    return request


def _chat_request(pb: chat_pb2.ChatRequest, wire: Violations) -> ChatRequest:
    """`pb` as a domain request, not yet validated, with what protobuf got wrong added to `wire`.
    Where a value is wrong, a stand-in takes its place (a user's role for an unknown one, no
    budget for one that does not parse), so the rest of the request is still checked."""
    return ChatRequest(
        model=pb.model,
        messages=_messages(pb, wire),
        tools=_tools(pb, wire),
        tool_choice=_tool_choice(pb, wire),
        parallel_tool_calls=pb.parallel_tool_calls if pb.HasField("parallel_tool_calls") else None,
        response_format=_response_format(pb, wire),
        generation=_generation(pb),
        fallback_models=tuple(pb.fallback_models),
        max_cost=_budget(pb.max_cost, wire),
        cost_alert_threshold=_budget(pb.cost_alert_threshold, wire, "cost_alert_threshold"),
        dry_run=pb.dry_run,
        caller=_caller(pb),
        tags=_tags(pb, wire),
        provider_options={name: struct_to_dict(s) for name, s in pb.provider_options.items()},
        reasoning=_reasoning(pb, wire),
        lenient=_lenient(pb.unsupported_parameters, wire),
        cache=_cache(pb, wire),
        routing=_routing(pb, wire),
        task_type=pb.task_type,
    )


# Collections are counted before they are built, with the domain's limits: a request of a million
# tiny messages or parts is refused in microseconds rather than built and then refused. What was
# too large is left empty; the domain check does not look at a field reported here.


def _messages(pb: chat_pb2.ChatRequest, wire: Violations) -> tuple[Message, ...]:
    if wire.note(
        MESSAGES.exceeded("messages", len(pb.messages))
        or PARTS_IN_ALL.exceeded("messages", sum(len(m.content) for m in pb.messages))
    ):
        return ()
    return tuple(_message(m, f"messages[{i}]", wire) for i, m in enumerate(pb.messages))


def _message(pb: content_pb2.Message, path: str, wire: Violations) -> Message:
    role = _ROLES.get(pb.role)
    if role is None:
        wire.add(f"{path}.role", "must be ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL")
        role = Role.USER
    if len(pb.content) > PARTS.most or len(pb.tool_calls) > TOOL_CALLS.most:  # paths only when needed
        wire.note(
            PARTS.exceeded(f"{path}.content", len(pb.content))
            or TOOL_CALLS.exceeded(f"{path}.tool_calls", len(pb.tool_calls))
        )
        return Message(role)
    parts = tuple(_part(p, f"{path}.content[{i}]", wire) for i, p in enumerate(pb.content))
    tool_calls = tuple(ToolCall(c.id, c.name, c.arguments) for c in pb.tool_calls)
    return Message(role, parts, tool_calls, pb.tool_call_id, pb.name)


def _part(pb: content_pb2.Part, path: str, wire: Violations) -> Part:
    kind = pb.WhichOneof("kind")
    if kind == "text":
        return TextPart(pb.text)
    if kind != "image":
        wire.add(path, "a part must set text or image")
        return TextPart("")
    image = pb.image
    detail = _DETAILS.get(image.detail)
    if detail is None:
        wire.add(f"{path}.image.detail", "unknown image detail")
        detail = ""
    source = image.WhichOneof("source")
    if source == "url":
        return ImagePart(url=image.url, mime_type=image.mime_type, detail=detail)
    if source == "data":
        return ImagePart(data=image.data, mime_type=image.mime_type, detail=detail)
    return ImagePart(mime_type=image.mime_type, detail=detail)  # neither: the domain says so


def _tools(pb: chat_pb2.ChatRequest, wire: Violations) -> tuple[Tool, ...]:
    if wire.note(TOOLS.exceeded("tools", len(pb.tools))):
        return ()
    return tuple(
        Tool(
            tool.name,
            tool.description,
            struct_to_dict(tool.parameters) if tool.HasField("parameters") else None,
            tool.strict,
        )
        for tool in pb.tools
    )


def _tool_choice(pb: chat_pb2.ChatRequest, wire: Violations) -> ToolChoice | None:
    if not pb.HasField("tool_choice"):
        return None
    which = pb.tool_choice.WhichOneof("choice")
    if which == "tool_name":
        return ToolChoice(ToolChoiceMode.NAMED, pb.tool_choice.tool_name)
    if which != "mode":
        return None
    mode = _TOOL_MODES.get(pb.tool_choice.mode)
    if mode is None:
        if pb.tool_choice.mode != content_pb2.TOOL_CHOICE_MODE_UNSPECIFIED:
            wire.add("tool_choice.mode", "unknown tool choice mode")
        return None
    return ToolChoice(mode)


def _response_format(pb: chat_pb2.ChatRequest, wire: Violations) -> ResponseFormat | None:
    if not pb.HasField("response_format"):
        return None
    rf = pb.response_format
    kind = _FORMATS.get(rf.type)
    if kind is None:
        if rf.type != content_pb2.RESPONSE_FORMAT_TYPE_UNSPECIFIED:
            wire.add("response_format.type", "unknown response format type")
        kind = ResponseFormatType.TEXT
    schema = struct_to_dict(rf.json_schema) if rf.HasField("json_schema") else None
    return ResponseFormat(kind, schema, rf.schema_name or "response", rf.strict)


# What a request without settings or a caller decodes to (immutable, so shared): most calls.
_NO_SETTINGS = GenerationConfig()
_NO_CALLER = Caller()


def _generation(request: chat_pb2.ChatRequest) -> GenerationConfig:
    if not request.HasField("generation"):
        return _NO_SETTINGS
    pb = request.generation
    return GenerationConfig(
        temperature=pb.temperature if pb.HasField("temperature") else None,
        top_p=pb.top_p if pb.HasField("top_p") else None,
        top_k=pb.top_k if pb.HasField("top_k") else None,
        max_tokens=pb.max_tokens if pb.HasField("max_tokens") else None,
        stop=tuple(pb.stop),
        seed=pb.seed if pb.HasField("seed") else None,
        presence_penalty=pb.presence_penalty if pb.HasField("presence_penalty") else None,
        frequency_penalty=pb.frequency_penalty if pb.HasField("frequency_penalty") else None,
    )


def _caller(pb: chat_pb2.ChatRequest) -> Caller:
    return decode_caller(pb.caller) if pb.HasField("caller") else _NO_CALLER


def decode_caller(caller: chat_pb2.CallerMetadata) -> Caller:
    return Caller(caller.user, caller.project, caller.tenant, caller.tracking_id)


def _reasoning(pb: chat_pb2.ChatRequest, wire: Violations) -> Reasoning | None:
    if not pb.HasField("reasoning"):
        return None
    r = pb.reasoning
    effort = _EFFORTS.get(r.effort)
    if effort is None and r.effort != chat_pb2.REASONING_EFFORT_UNSPECIFIED:
        wire.add("reasoning.effort", "unknown reasoning effort")
    budget = r.budget_tokens if r.HasField("budget_tokens") else None
    if effort is None and budget is None:
        return None
    return Reasoning(effort, budget)


_STRATEGIES = {
    chat_pb2.ROUTING_STRATEGY_COST: RoutingStrategy.COST,
    chat_pb2.ROUTING_STRATEGY_SPEED: RoutingStrategy.SPEED,
    chat_pb2.ROUTING_STRATEGY_QUALITY: RoutingStrategy.QUALITY,
    chat_pb2.ROUTING_STRATEGY_AUTO: RoutingStrategy.AUTO,
}


def _routing(pb: chat_pb2.ChatRequest, wire: Violations) -> RoutingOptions | None:
    if not pb.HasField("routing"):
        return None
    r = pb.routing
    strategy = _STRATEGIES.get(r.strategy, RoutingStrategy.AUTO)
    if r.strategy not in _STRATEGIES and r.strategy != chat_pb2.ROUTING_STRATEGY_UNSPECIFIED:
        wire.add("routing.strategy", "unknown routing strategy")
    return RoutingOptions(
        strategy,
        _budget(r.max_cost_per_1k_tokens, wire, "routing.max_cost_per_1k_tokens"),
        r.max_latency_ms / 1000 if r.HasField("max_latency_ms") else None,
        tuple(r.preferred_providers),
        tuple(r.required_capabilities),
        r.min_context_window if r.HasField("min_context_window") else None,
    )


_CACHE_MODES = {
    chat_pb2.CACHE_MODE_ON: CacheMode.ON,
    chat_pb2.CACHE_MODE_OFF: CacheMode.OFF,
    chat_pb2.CACHE_MODE_READ_ONLY: CacheMode.READ_ONLY,
    chat_pb2.CACHE_MODE_WRITE_ONLY: CacheMode.WRITE_ONLY,
}


def _cache(pb: chat_pb2.ChatRequest, wire: Violations) -> CacheOptions | None:
    if not pb.HasField("cache"):
        return None
    mode = _CACHE_MODES.get(pb.cache.mode)
    if mode is None and pb.cache.mode != chat_pb2.CACHE_MODE_UNSPECIFIED:
        wire.add("cache.mode", "unknown cache mode")
    ttl = pb.cache.ttl.seconds + pb.cache.ttl.nanos / 1e9 if pb.cache.HasField("ttl") else None
    return CacheOptions(mode, ttl)


def _budget(text: str, wire: Violations, name: str = "max_cost") -> Decimal | None:
    if not text:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        wire.add(name, f"must be a decimal number of USD such as '0.05', got {text[:40]!r}")
        return None


def _tags(pb: chat_pb2.ChatRequest, wire: Violations) -> dict[str, str]:
    if wire.note(TAGS.exceeded("tags", len(pb.tags))):
        return {}
    return dict(pb.tags)


def _lenient(policy: chat_pb2.UnsupportedParameterPolicy.ValueType, wire: Violations) -> bool:
    lenient = _POLICIES.get(policy)
    if lenient is None:
        wire.add("unsupported_parameters", "unknown policy")
        return False
    return lenient


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
