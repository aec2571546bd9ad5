"""The conversation: messages, content parts, tools and output settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

MAX_URL = 8192


class Role(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


@dataclass(frozen=True, slots=True)
class TextPart:
    text: str


@dataclass(frozen=True, slots=True)
class ImagePart:
    """An image by URL or inline bytes. `detail` is "auto", "low", "high" or "" (provider default)."""

    url: str | None = None
    data: bytes | None = None
    mime_type: str = ""
    detail: str = ""


Part = TextPart | ImagePart


def image_url_problem(url: str) -> str | None:
    """Why `url` cannot be an image URL, or None: every provider takes http(s) URLs to a host, and
    the adapters parse them (Gemini reads the file type off the path), so one that does not parse
    is the caller's mistake, found here once rather than in each adapter."""
    if len(url) > MAX_URL:
        return f"must be at most {MAX_URL} characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (parsed lazily: a bad port raises only here)
    except ValueError as exc:
        return f"is not a valid URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL with a host"
    if any(c.isspace() or ord(c) < 0x20 for c in url):
        return "must not contain spaces or control characters"
    return None


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text exactly as the model produced it


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    parts: tuple[Part, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""
    name: str = ""

    def text(self) -> str:
        return "".join(p.text for p in self.parts if isinstance(p, TextPart))

    def has_images(self) -> bool:
        return any(isinstance(p, ImagePart) for p in self.parts)


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None  # JSON Schema of the arguments
    strict: bool = False


class ToolChoiceMode(StrEnum):
    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"
    NAMED = "named"


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: ToolChoiceMode
    tool_name: str = ""  # set when mode is NAMED


class ResponseFormatType(StrEnum):
    TEXT = "text"
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    type: ResponseFormatType
    json_schema: dict[str, Any] | None = None
    schema_name: str = "response"
    strict: bool = False


@dataclass(frozen=True, slots=True)
class GenerationConfig:
    """Sampling settings; None means the provider's default."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None


class ReasoningEffort(StrEnum):
    NONE = "none"
    MINIMAL = "minimal"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


@dataclass(frozen=True, slots=True)
class Reasoning:
    """How much a reasoning model may think; None fields take the provider's default."""

    effort: ReasoningEffort | None = None
    budget_tokens: int | None = None


class RoutingStrategy(StrEnum):
    COST = "cost"
    SPEED = "speed"
    QUALITY = "quality"
    AUTO = "auto"


# What a model may support (the catalog's `capabilities`, a strategy's `required_capabilities`).
CapabilityName = Literal["streaming", "tools", "vision", "json_object", "json_schema", "reasoning"]
CAPABILITIES: frozenset[str] = frozenset(get_args(CapabilityName))


@dataclass(frozen=True, slots=True)
class RoutingOptions:
    """How `model: "auto"` ranks the catalog's models, and what passes a model over."""

    strategy: RoutingStrategy = RoutingStrategy.AUTO
    max_cost_per_1k_tokens: Decimal | None = None  # USD
    max_latency: float | None = None  # seconds
    preferred_providers: tuple[str, ...] = ()
    required_capabilities: tuple[str, ...] = ()  # as the caller gave them; validation checks each
    min_context_window: int | None = None


class CacheMode(StrEnum):
    ON = "on"
    OFF = "off"
    READ_ONLY = "read_only"
    WRITE_ONLY = "write_only"


@dataclass(frozen=True, slots=True)
class CacheOptions:
    """A call's use of the gateway's response cache; None: the gateway's default."""

    mode: CacheMode | None = None
    ttl: float | None = None  # seconds


@dataclass(frozen=True, slots=True)
class Caller:
    user: str = ""
    project: str = ""
    tenant: str = ""
    tracking_id: str = ""


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A chat request, independent of protobuf and of any provider. A front door builds one from
    its wire format and has `validate_chat_request` check it before the gateway takes it."""

    model: str
    messages: tuple[Message, ...]
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    fallback_models: tuple[str, ...] = ()
    max_cost: Decimal | None = None  # USD
    # A call costing more raises a cost alert (USD); the call is not stopped.
    cost_alert_threshold: Decimal | None = None
    dry_run: bool = False
    caller: Caller = field(default_factory=Caller)
    tags: dict[str, str] = field(default_factory=dict)
    provider_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    reasoning: Reasoning | None = None
    # Unsupported settings are dropped and reported instead of rejected (policy LENIENT).
    lenient: bool = False
    cache: CacheOptions | None = None
    routing: RoutingOptions | None = None
    # What the call is for ("summarization", ...): with no model, the task's configured models
    # serve it.
    task_type: str = ""

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role is Role.USER:
                return message.text()
        return ""
