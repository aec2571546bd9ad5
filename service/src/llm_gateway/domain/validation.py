"""The checks every chat request passes, whichever front door it came through.

A door decodes its wire format into a domain `ChatRequest` and hands it to `validate_chat_request`,
so every door refuses the same requests with the same violations: each names its field by the
contract's path ("messages[1].content[0].image.url", "generation.temperature", "tags['k']") and
all of them are raised together as one INVALID_ARGUMENT.

What only a wire format can get wrong (an enum number it does not define, a decimal string that
does not parse, a part that is neither text nor image) never reaches a domain value, so the door
finds it while decoding and passes it in as `wire`: it is reported in the same error, in request
order with the rest. A door also counts what it is about to build (`domain/limits.py`) and builds
nothing of a collection over its limit; the field it reported is not examined again here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterable, Mapping
from decimal import Decimal
from typing import Any

from llm_gateway.domain.errors import FieldViolation, Violations, invalid_request
from llm_gateway.domain.limits import (
    FALLBACKS,
    MAX_BUDGET,
    MAX_BUDGET_PLACES,
    MAX_CALLER_FIELD,
    MAX_TAG_KEY,
    MAX_TAG_VALUE,
    MESSAGES,
    PARTS,
    PARTS_IN_ALL,
    STOP,
    TAGS,
    TOOL_CALLS,
    TOOLS,
)
from llm_gateway.domain.messages import (
    CAPABILITIES,
    Caller,
    ChatRequest,
    GenerationConfig,
    ImagePart,
    Message,
    Reasoning,
    ReasoningEffort,
    ResponseFormat,
    ResponseFormatType,
    Role,
    RoutingOptions,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    image_url_problem,
)

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_NAME_RULE = "must be 1 to 64 characters of [a-zA-Z0-9_-]"
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
IMAGE_DETAILS = frozenset({"", "auto", "low", "high"})
_NOT_FINITE = "numbers must be finite (JSON has no NaN or Infinity)"

# Violations are listed in this order of the request's fields, and within `messages` or `tools` by
# item, so a caller reads them top to bottom whichever door found them. Within one item the door's
# come first: they are about what the item is (its role), the domain's about what it holds.
_FIELD_ORDER = {
    name: rank
    for rank, name in enumerate(
        (
            "messages",
            "tools",
            "tool_choice",
            "response_format",
            "generation",
            "max_cost",
            "cost_alert_threshold",
            "caller",
            "tags",
            "provider_options",
            "reasoning",
            "unsupported_parameters",
            "fallback_models",
        )
    )
}
# A task's name, as `[tasks]` in the config spells it.
TASK_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LEADING = re.compile(r"(\w*)(?:\[(\d+)\])?")


def validate_chat_request(
    request: ChatRequest, providers: Collection[str], wire: Iterable[FieldViolation] = ()
) -> None:
    """Raises INVALID_ARGUMENT listing every violation of `request` and the door's own `wire`
    ones (what it found while decoding), or returns when there are none. `providers` are the
    configured provider names that `provider_options` may use."""
    wire = tuple(wire)
    v = _Checks(wire)
    _messages(request.messages, v)
    if _tools(request.tools, v):
        _tool_choice(request.tool_choice, request.tools, v)
    _response_format(request.response_format, v)
    _generation(request.generation, v)
    _budget(request.max_cost, v)
    _budget(request.cost_alert_threshold, v, "cost_alert_threshold")
    _caller(request.caller, v)
    _tags(request.tags, v)
    _provider_options(request.provider_options, providers, v)
    _reasoning(request.reasoning, v)
    _routing(request.routing, v)
    if request.cache is not None and request.cache.ttl is not None and request.cache.ttl <= 0:
        v.add("cache.ttl", "must be positive")
    if request.task_type and not TASK_NAME.match(request.task_type):
        v.add("task_type", f"must match {TASK_NAME.pattern} (a task such as 'summarization')")
    v.note(FALLBACKS.exceeded("fallback_models", len(request.fallback_models)))
    if wire or v.items:
        # A stable sort: equal places keep the door's first, then the domain's in check order.
        raise invalid_request(sorted([*wire, *v.items], key=_request_order))


def _routing(options: RoutingOptions | None, v: _Checks) -> None:
    if options is None:
        return
    for i, capability in enumerate(options.required_capabilities):
        if capability not in CAPABILITIES:
            v.add(f"routing.required_capabilities[{i}]", f"must be one of {', '.join(sorted(CAPABILITIES))}")
    if options.max_latency is not None and options.max_latency < 0.001:
        v.add("routing.max_latency_ms", "must be at least 1")
    if options.min_context_window is not None and options.min_context_window < 1:
        v.add("routing.min_context_window", "must be at least 1")
    per_1k = options.max_cost_per_1k_tokens
    if per_1k is not None and per_1k < 0:
        v.add("routing.max_cost_per_1k_tokens", "must not be negative")


class _Checks(Violations):
    """The domain's violations, and the fields the door already reported."""

    __slots__ = ("_reported",)

    def __init__(self, wire: tuple[FieldViolation, ...]) -> None:
        super().__init__()
        self._reported = frozenset(violation.field for violation in wire)

    def reported(self, field: str) -> bool:
        """Whether the door found `field` wrong: what it built there is a stand-in, not the
        caller's value, and checking it would only add a second, misleading violation."""
        return field in self._reported


def _request_order(violation: FieldViolation) -> tuple[int, int]:
    match = _LEADING.match(violation.field)
    name, index = match.groups() if match else ("", None)
    return _FIELD_ORDER.get(name, len(_FIELD_ORDER)), -1 if index is None else int(index)


def _messages(messages: tuple[Message, ...], v: _Checks) -> None:
    if v.reported("messages"):
        return
    if not messages:
        v.add("messages", "must contain at least one message")
        return
    # Counted first, parts only once the messages are within bounds: a request of a million tiny
    # parts is refused without looking at any of them.
    if v.note(
        MESSAGES.exceeded("messages", len(messages))
        or PARTS_IN_ALL.exceeded("messages", sum(len(m.parts) for m in messages))
    ):
        return
    for i, message in enumerate(messages):
        _message(message, f"messages[{i}]", v)


def _message(message: Message, path: str, v: _Checks) -> None:
    content, calls = f"{path}.content", f"{path}.tool_calls"
    if v.reported(content) or v.reported(calls):
        return
    if v.note(
        PARTS.exceeded(content, len(message.parts)) or TOOL_CALLS.exceeded(calls, len(message.tool_calls))
    ):
        return
    role = message.role
    for i, part in enumerate(message.parts):
        if isinstance(part, ImagePart):
            _image(part, f"{content}[{i}].image", role, v)
    for i, call in enumerate(message.tool_calls):
        _tool_call(call, f"{calls}[{i}]", v)
    if role is Role.ASSISTANT:
        if not message.parts and not message.tool_calls:
            v.add(content, "an assistant message needs content or tool calls")
    elif not message.parts:
        v.add(content, f"a {role.value} message needs content")
    if message.tool_calls and role is not Role.ASSISTANT:
        v.add(calls, "only assistant messages carry tool calls")
    if role is Role.TOOL:
        if not message.tool_call_id:
            v.add(f"{path}.tool_call_id", "a tool message must name the tool call it answers")
    elif message.tool_call_id:
        v.add(f"{path}.tool_call_id", "only tool messages carry a tool_call_id")
    if message.name and not _NAME.match(message.name):
        v.add(f"{path}.name", _NAME_RULE)


def _image(image: ImagePart, path: str, role: Role, v: _Checks) -> None:
    if role is not Role.USER:
        v.add(path, "only user messages may carry images")
    if image.detail not in IMAGE_DETAILS:
        v.add(f"{path}.detail", "unknown image detail")
    if image.mime_type and image.mime_type not in IMAGE_TYPES:
        v.add(f"{path}.mime_type", f"must be one of {', '.join(sorted(IMAGE_TYPES))}")
    if image.url is not None and image.data is not None:
        v.add(path, "must set url or data, not both")
    elif image.url is not None:
        problem = image_url_problem(image.url)
        if problem is not None:
            v.add(f"{path}.url", problem)
    elif image.data is not None:
        if not image.data:
            v.add(f"{path}.data", "must not be empty")
        if not image.mime_type:
            v.add(f"{path}.mime_type", "is required with inline data")
    else:
        v.add(path, "must set url or data")


def _tool_call(call: ToolCall, path: str, v: _Checks) -> None:
    if not call.id:
        v.add(f"{path}.id", "must be set")
    if not _NAME.match(call.name):
        v.add(f"{path}.name", _NAME_RULE)
    if call.arguments:
        try:
            json.loads(call.arguments)
        except ValueError:
            v.add(f"{path}.arguments", "must be JSON text")
        except RecursionError:
            # Valid perhaps, but no adapter could parse it either.
            v.add(f"{path}.arguments", "is nested too deeply")


def _tools(tools: tuple[Tool, ...], v: _Checks) -> bool:
    """Checks the tools; whether they were looked at (not when too many), since the tool choice is
    checked against them only then."""
    if v.reported("tools") or v.note(TOOLS.exceeded("tools", len(tools))):
        return False
    seen: set[str] = set()
    for i, tool in enumerate(tools):
        path = f"tools[{i}]"
        if not _NAME.match(tool.name):
            v.add(f"{path}.name", _NAME_RULE)
        elif tool.name in seen:
            v.add(f"{path}.name", f"duplicate tool name {tool.name!r}")
        seen.add(tool.name)
        if tool.parameters is not None:
            _json(tool.parameters, f"{path}.parameters", v)
            if tool.parameters.get("type", "object") != "object":
                v.add(f"{path}.parameters", "must be a JSON Schema of type object")
    return True


def _tool_choice(choice: ToolChoice | None, tools: tuple[Tool, ...], v: _Checks) -> None:
    if choice is None:
        return
    if choice.mode is ToolChoiceMode.NAMED:
        if choice.tool_name not in {t.name for t in tools}:
            v.add("tool_choice.tool_name", f"{choice.tool_name!r} is not one of the request's tools")
    elif choice.mode is not ToolChoiceMode.NONE and not tools:
        v.add("tool_choice", "needs tools")


def _response_format(rf: ResponseFormat | None, v: _Checks) -> None:
    if rf is None:
        return
    schema = rf.json_schema
    if schema is not None:
        _json(schema, "response_format.json_schema", v)
    if rf.type is ResponseFormatType.JSON_SCHEMA and not schema:
        v.add("response_format.json_schema", "is required with RESPONSE_FORMAT_TYPE_JSON_SCHEMA")
    if rf.type is not ResponseFormatType.JSON_SCHEMA and schema is not None:
        v.add("response_format.json_schema", "is only valid with RESPONSE_FORMAT_TYPE_JSON_SCHEMA")
    if rf.schema_name and not _NAME.match(rf.schema_name):
        v.add("response_format.schema_name", _NAME_RULE)


def _generation(g: GenerationConfig, v: _Checks) -> None:
    def ranged(name: str, value: float | None, low: float, high: float, low_open: bool = False) -> None:
        if value is None:
            return
        below = value <= low if low_open else value < low
        if math.isnan(value) or below or value > high:
            bound = f"greater than {low:g}" if low_open else f"at least {low:g}"
            v.add(f"generation.{name}", f"must be {bound} and at most {high:g}, got {value:g}")

    def positive(name: str, value: int | None) -> None:
        if value is not None and value < 1:
            v.add(f"generation.{name}", f"must be at least 1, got {value}")

    v.note(STOP.exceeded("generation.stop", len(g.stop)))
    for i, stop in enumerate(g.stop[: STOP.most]):
        if not stop:
            v.add(f"generation.stop[{i}]", "must not be empty")
    ranged("temperature", g.temperature, 0.0, 2.0)
    ranged("top_p", g.top_p, 0.0, 1.0, low_open=True)
    positive("top_k", g.top_k)
    positive("max_tokens", g.max_tokens)
    ranged("presence_penalty", g.presence_penalty, -2.0, 2.0)
    ranged("frequency_penalty", g.frequency_penalty, -2.0, 2.0)


def _budget(value: Decimal | None, v: _Checks, name: str = "max_cost") -> None:
    if value is None:
        return
    if not value.is_finite() or value < 0 or value > MAX_BUDGET:
        v.add(name, f"must be between 0 and {MAX_BUDGET} USD")
    elif _decimal_places(value) > MAX_BUDGET_PLACES:
        v.add(name, f"at most {MAX_BUDGET_PLACES} decimal places")


def _decimal_places(value: Decimal) -> int:
    """Digits after the point, trailing zeros aside: 0.0500 has 2. Counted on the digits as written,
    so no context rounds a tiny value to zero first."""
    if not value:
        return 0
    _, digits, exponent = value.as_tuple()
    trailing = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -(int(exponent) + trailing))


def _caller(caller: Caller, v: _Checks) -> None:
    for name, value in (
        ("user", caller.user),
        ("project", caller.project),
        ("tenant", caller.tenant),
        ("tracking_id", caller.tracking_id),
    ):
        if len(value) > MAX_CALLER_FIELD:
            v.add(f"caller.{name}", f"at most {MAX_CALLER_FIELD} characters")


def _tags(tags: Mapping[str, str], v: _Checks) -> None:
    if v.reported("tags") or v.note(TAGS.exceeded("tags", len(tags))):
        return
    for key, value in tags.items():
        path = f"tags[{key[:MAX_TAG_KEY]!r}]"
        if not 1 <= len(key) <= MAX_TAG_KEY:
            v.add(path, f"keys are 1 to {MAX_TAG_KEY} characters")
        if len(value) > MAX_TAG_VALUE:
            v.add(path, f"values are at most {MAX_TAG_VALUE} characters")


def _provider_options(
    options: Mapping[str, Mapping[str, Any]], providers: Collection[str], v: _Checks
) -> None:
    for name, fields in options.items():
        path = f"provider_options[{name[:64]!r}]"
        if name not in providers:
            v.add(path, "not a configured provider")
        else:
            _json(fields, path, v)


def _reasoning(reasoning: Reasoning | None, v: _Checks) -> None:
    if reasoning is None:
        return
    budget = reasoning.budget_tokens
    if budget is not None and budget < 1:
        v.add("reasoning.budget_tokens", f"must be at least 1, got {budget}")
    if reasoning.effort is ReasoningEffort.NONE and budget:
        v.add("reasoning.budget_tokens", "must be unset when reasoning.effort is NONE")


def _json(value: Mapping[str, Any], path: str, v: _Checks) -> None:
    """JSON values the gateway sends upstream: a float may be NaN or infinite (a protobuf Struct
    carries them, and so does Python's JSON parser), which JSON has no way to write, so the
    provider would get a body it cannot parse."""
    if not _finite(value):
        v.add(path, _NOT_FINITE)


def _finite(value: object) -> bool:
    # A stack rather than recursion: a door's JSON may nest deeper than Python recurses.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict):  # not Mapping: an ABC check costs several times more
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return True
