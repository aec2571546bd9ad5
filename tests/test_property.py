"""Property: whatever `ChatRequest` a caller sends, the gateway answers OK or a documented canonical
error (docs/errors.md), never INTERNAL or UNKNOWN.

Requests are drawn over the generated protobuf classes in three shapes: valid ones, valid ones with
one field broken, and wholly random ones. Many pass validation, so they reach the mock provider or
an adapter of every wire format (OpenAI, Anthropic, Gemini, Ollama, Cohere), each talking to its
fake upstream over loopback HTTP. A second property rides along: a request with `dry_run` never
reaches any upstream, whichever RPC carries it.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf import struct_pb2
from hypothesis import given, settings
from hypothesis import strategies as st

from llmgateway.v1 import catalog_pb2, chat_pb2, content_pb2
from tests.conftest import RunningGateway, error_details, openai_toml, running_gateway
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.cohere import FakeCohere
from tests.fakes.gemini import FakeGemini
from tests.fakes.ollama import FakeOllama
from tests.fakes.openai import FakeOpenAI
from tests.fakes.server import FakeServer

T = TypeVar("T")
TIMEOUT = 10.0
EXAMPLES = 200
ROOT = Path(__file__).resolve().parents[1]

# The aliases cover a listed model, an adapter model, and a configured provider that is not enabled.
# `auto` lists a model of a fake-backed provider first. The circuit breaker is kept closed: a fuzzed
# `provider_options` body the fake upstream cannot take is answered HTTP 500, and an open circuit
# would keep every later example away from the adapter.
GATEWAY_TOML = """
[aliases]
fast = "mock:echo"
smart = "openai:gpt-4o-mini"
gone = "groq:llama-3.1-8b-instant"

[routing]
auto = ["openai:gpt-4o-mini", "mock:echo"]
"""
KEEP_CIRCUIT_CLOSED = "circuit_breaker = { failure_threshold = 10000 }"


def documented_reasons() -> dict[str, set[str]]:
    """Reason -> the status codes docs/errors.md gives it, read from the table there."""
    table = (ROOT / "docs" / "errors.md").read_text()
    reasons: dict[str, set[str]] = {}
    for code, reason in re.findall(r"^\| `([A-Z_]+)` \| `([A-Z_]+)` \|", table, re.MULTILINE):
        reasons.setdefault(reason, set()).add(code)
    return reasons


REASONS = documented_reasons()


# Every other wire format, each at its own fake.
OTHER_PROVIDERS_TOML = """
[providers.anthropic]
base_url = "{anthropic}"
api_key = "sk-ant-fuzz-0123456789"
{common}
[providers.gemini]
base_url = "{gemini}"
api_key = "gemini-fuzz-key-0123456789"
{common}
[providers.ollama]
enabled = true
base_url = "{ollama}"
{common}
[providers.cohere]
base_url = "{cohere}"
api_key = "cohere-fuzz-key-0123456789"
{common}
"""
Fakes = list[FakeServer[Any]]


@pytest.fixture(scope="module")
async def fuzz_gateway() -> AsyncIterator[tuple[RunningGateway, Fakes]]:
    async with (
        FakeOpenAI() as fake,
        FakeAnthropic() as anthropic,
        FakeGemini() as gemini,
        FakeOllama() as ollama,
        FakeCohere() as cohere,
    ):
        others = OTHER_PROVIDERS_TOML.format(
            anthropic=anthropic.base_url,
            gemini=gemini.base_url,
            ollama=ollama.base_url,
            cohere=cohere.base_url,
            common=f"retry = {{ max_retries = 0 }}\n{KEEP_CIRCUIT_CLOSED}",
        )
        toml = openai_toml(fake.base_url, KEEP_CIRCUIT_CLOSED) + others + GATEWAY_TOML
        async with running_gateway(toml) as gw:
            yield gw, [fake, anthropic, gemini, ollama, cohere]


# --- Scalars -----------------------------------------------------------------------------------

# Protobuf strings are UTF-8, so lone surrogates cannot be sent at all.
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
# Past tokens.count.OFFLOAD_CHARS, so counting moves to a worker thread; no spaces, since the mock
# and the fake stream replies word by word.
LONG_TEXT = st.just("lorem-ipsum-" * 3_000)
EDGE_TEXT = st.sampled_from(["", " ", "\n\t", "\x00", "🙂" * 3, "<|endoftext|>", "null", "{}", "é\u200b"])
TEXTS = st.one_of(TEXT, EDGE_TEXT, LONG_TEXT)
NAMES = st.from_regex(r"[a-zA-Z0-9_-]{1,64}", fullmatch=True)
BAD_NAMES = st.one_of(TEXT, st.sampled_from(["", "a" * 65, "bad name", "naïve", "a.b", "x/y"]))
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
ANY_FLOAT = st.one_of(
    st.floats(),  # NaN and both infinities included
    st.sampled_from([0.0, -0.0, 1e-320, 1e308, -1e308, 2.0000001, -2.0000001, 1.0000001]),
)

# --- Models ------------------------------------------------------------------------------------

MOCK_MODELS = ["mock:echo", "mock:echo-large"]
OPENAI_MODELS = ["openai:gpt-4o-mini", "openai:o3", "openai:gpt-5-nano", "openai:fuzz-unlisted-model"]
OTHER_MODELS = [
    "anthropic:claude-haiku-4-5",
    "anthropic:claude-sonnet-4-6",
    "gemini:gemini-2.5-flash",
    "ollama:llama3.2",
    "cohere:command-a-03-2025",
]
SERVABLE_MODELS = [
    *MOCK_MODELS,
    "mock:echo-free",
    *OPENAI_MODELS,
    *OTHER_MODELS,
    "fast",
    "smart",
    "echo",
    "auto",
]
ODD_MODELS = [
    "",
    " ",
    "AUTO",
    "gone",
    "mock:",
    ":echo",
    ":",
    "::",
    "mock:nope",
    "mock:echo ",
    " mock:echo",
    "mock:echo:extra",
    "nope:echo",
    "groq:llama-3.1-8b-instant",
    "vllm:",
    "openai:" + "g" * 300,
    "m" * 257,
    "mock:écho",
    "模型:模型",
    "provider:model",
    "\x00",
    "openai:\u200bgpt",
]
# Weighted towards the models that run: the mock provider and the OpenAI adapter.
VALID_MODELS = st.one_of(
    st.sampled_from(MOCK_MODELS),
    st.sampled_from(MOCK_MODELS),
    st.sampled_from(OPENAI_MODELS),
    st.sampled_from(OTHER_MODELS),
    st.sampled_from(SERVABLE_MODELS),
)
ANY_MODELS = st.one_of(
    VALID_MODELS,
    st.sampled_from(ODD_MODELS),
    TEXT,
    st.builds("{}:{}".format, st.sampled_from(["mock", "openai", "anthropic", "nope", ""]), TEXT),
)

# --- JSON (google.protobuf.Struct) ---------------------------------------------------------------

SCHEMA_KEYS = st.sampled_from(
    ["type", "properties", "required", "items", "enum", "additionalProperties", "description", "$ref"]
)
# Upstream body keys, for provider_options that overwrite what the adapter built.
BODY_KEYS = st.sampled_from(
    ["model", "messages", "stream", "max_tokens", "temperature", "tools", "n", "user"]
)
JSON_KEYS = st.one_of(SCHEMA_KEYS, BODY_KEYS, TEXT)
JSON_VALUES: st.SearchStrategy[Any] = st.recursive(
    st.one_of(st.none(), st.booleans(), ANY_FLOAT, st.integers(-(2**60), 2**60), TEXT),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(JSON_KEYS, children, max_size=3)
    ),
    max_leaves=10,
)


def message_of(message: Callable[..., T]) -> Callable[[Mapping[str, Any]], T]:
    """Builds `message` from drawn fields, enum fields as plain numbers (unknown ones included)."""
    return lambda fields: message(**fields)


def struct(fields: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(fields)
    return out


def one_field_off(
    required: Mapping[str, st.SearchStrategy[Any]],
    wild: Mapping[str, st.SearchStrategy[Any]],
    optional: Mapping[str, st.SearchStrategy[Any]] | None = None,
) -> st.SearchStrategy[dict[str, Any]]:
    """Valid fields (every `required` one, some `optional` ones) with one of `wild` replacing its
    field: a message off in one place only, so validation and the adapters get to see the rest."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        fields: dict[str, Any] = draw(st.fixed_dictionaries(dict(required), optional=dict(optional or {})))
        name = draw(st.sampled_from(sorted(wild)))
        fields[name] = draw(wild[name])
        return fields

    return build()


VALID_SCHEMAS: st.SearchStrategy[dict[str, Any]] = st.sampled_from(
    [
        {},
        {"type": "object", "properties": {}},
        {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name"},
                "days": {"type": "integer"},
                "units": {"enum": ["c", "f"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "exact": {"type": "boolean"},
            },
            "required": ["city"],
            "additionalProperties": False,
        },
    ]
)
# Schemas whose keywords have the wrong JSON type, which the gateway and the mock must survive.
ODD_SCHEMAS: st.SearchStrategy[dict[str, Any]] = st.sampled_from(
    [
        {"type": "object", "properties": "city"},
        {"properties": [1, 2]},
        {"type": "object", "required": "city"},
        {"type": "object", "required": [1, None, {"a": 1}]},
        {"type": "object", "properties": {"a": "string", "b": None, "c": [1]}},
        {"type": "object", "properties": {"a": {"enum": 3}}},
        {"type": "object", "properties": {"a": {"enum": {"x": 1}}}},
        {"type": "object", "properties": {"a": {"enum": []}}},
        {"type": ["object", "null"]},
        {"type": 7},
        {"type": "array", "items": {"type": "object"}},
        {"type": "object", "properties": {"a": {"properties": {"b": {"type": "number"}}}}},
        {"type": "object", "properties": {"n": {"type": "number", "maximum": float("nan")}}},
    ]
)
ANY_SCHEMAS = st.one_of(
    ODD_SCHEMAS, ODD_SCHEMAS, VALID_SCHEMAS, st.dictionaries(JSON_KEYS, JSON_VALUES, max_size=4)
).map(struct)


# --- Messages ------------------------------------------------------------------------------------

ROLES = [content_pb2.ROLE_SYSTEM, content_pb2.ROLE_USER, content_pb2.ROLE_ASSISTANT, content_pb2.ROLE_TOOL]
ANY_ROLES = st.one_of(st.sampled_from([content_pb2.ROLE_UNSPECIFIED, *ROLES]), INT32)
ODD_IMAGE_URLS = [
    "https://example.com/cat.png",
    "https://[::1/a.png",
    "http://[::1]:99999/x.png",
    "https://example.com:port/a.png",
    "https://exa mple.com/a.png",
    "https://example.com/a\x00.png",
    "https:///a.png",
    "https://user:pass@[v1.fe80::a+en1]/x",
    "HTTPS://EXAMPLE.COM/A.PNG",
    "https://",
    "ftp://example.com/cat.png",
    "data:image/png;base64,AAAA",
    "https://" + "a" * 9000,
]
IMAGE_URLS = st.one_of(
    st.sampled_from(
        [
            *ODD_IMAGE_URLS,
            "http://example.com/cat.jpg",
            "http:/x",
            "javascript:alert(1)",
            "file:///etc/passwd",
            "",
        ]
    ),
    TEXT,
)
MIME_TYPES = st.one_of(
    st.sampled_from(["", "image/png", "image/jpeg", "image/gif", "image/webp", "image/tiff", "text/plain"]),
    TEXT,
)


@st.composite
def images(draw: st.DrawFn) -> content_pb2.Image:
    image = content_pb2.Image(
        mime_type=draw(MIME_TYPES),
        detail=content_pb2.ImageDetail.ValueType(draw(st.one_of(st.integers(0, 3), INT32))),
    )
    source = draw(st.sampled_from(["url", "data", "none"]))
    if source == "url":
        image.url = draw(IMAGE_URLS)
    elif source == "data":
        image.data = draw(st.one_of(st.binary(max_size=64), st.just(b"\x89PNG\r\n\x1a\n" + bytes(100))))
    return image


ANY_PARTS = st.one_of(
    st.builds(content_pb2.Part, text=TEXTS),
    st.builds(content_pb2.Part, image=images()),
    st.just(content_pb2.Part()),
)
TOOL_ARGUMENTS = st.one_of(
    st.sampled_from(['{"city": "Paris"}', "{}", "", "null", "[1, 2]", "3", '"s"', "{not json", "{", "NaN"]),
    TEXT,
    JSON_VALUES.map(json.dumps),
)
ANY_TOOL_CALLS = st.builds(
    content_pb2.ToolCall,
    id=st.one_of(st.just("call_1"), TEXT),
    name=st.one_of(NAMES, BAD_NAMES),
    arguments=TOOL_ARGUMENTS,
)


MESSAGE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "role": ANY_ROLES,
    "content": st.lists(ANY_PARTS, max_size=3),
    "tool_calls": st.lists(ANY_TOOL_CALLS, max_size=2),
    "tool_call_id": st.one_of(st.just(""), st.just("call_1"), TEXT),
    "name": st.one_of(st.just(""), NAMES, BAD_NAMES),
}
VALID_USER_MESSAGE: dict[str, st.SearchStrategy[Any]] = {
    "role": st.just(content_pb2.ROLE_USER),
    "content": st.lists(st.builds(content_pb2.Part, text=TEXT), min_size=1, max_size=2),
}
ANY_MESSAGES = st.one_of(
    one_field_off(VALID_USER_MESSAGE, MESSAGE_FIELDS),
    st.fixed_dictionaries({}, optional=MESSAGE_FIELDS),
).map(message_of(content_pb2.Message))


def text_message(role: content_pb2.Role.ValueType, text: str) -> content_pb2.Message:
    return content_pb2.Message(role=role, content=[content_pb2.Part(text=text)])


@st.composite
def valid_conversations(draw: st.DrawFn) -> list[content_pb2.Message]:
    """A conversation the gateway accepts: a system prompt, user turns, a tool round trip, images."""
    messages = []
    if draw(st.booleans()):
        messages.append(text_message(content_pb2.ROLE_SYSTEM, draw(TEXTS)))
    messages.append(text_message(content_pb2.ROLE_USER, draw(TEXTS)))
    if draw(st.booleans()):
        call_id, name = draw(st.from_regex(r"call_[a-z0-9]{1,8}", fullmatch=True)), draw(NAMES)
        arguments = draw(st.sampled_from(['{"city": "Paris"}', "{}", ""]))
        call = content_pb2.ToolCall(id=call_id, name=name, arguments=arguments)
        messages.append(content_pb2.Message(role=content_pb2.ROLE_ASSISTANT, tool_calls=[call]))
        messages.append(
            content_pb2.Message(
                role=content_pb2.ROLE_TOOL, tool_call_id=call_id, content=[content_pb2.Part(text=draw(TEXT))]
            )
        )
    if draw(st.booleans()):
        image = draw(
            st.sampled_from(
                [
                    content_pb2.Image(url="https://example.com/cat.png", detail=content_pb2.IMAGE_DETAIL_LOW),
                    content_pb2.Image(data=b"\x89PNG\r\n\x1a\n", mime_type="image/png"),
                ]
            )
        )
        messages.append(
            content_pb2.Message(
                role=content_pb2.ROLE_USER,
                content=[content_pb2.Part(text=draw(TEXT)), content_pb2.Part(image=image)],
                name=draw(st.one_of(st.just(""), NAMES)),
            )
        )
    # Mostly a user turn last: after a tool result the mock only quotes it.
    if messages[-1].role != content_pb2.ROLE_USER and draw(st.integers(0, 3)):
        messages.append(text_message(content_pb2.ROLE_USER, draw(TEXT)))
    return messages


@st.composite
def broken_conversations(draw: st.DrawFn) -> list[content_pb2.Message]:
    """Random messages, alone or slipped into a valid conversation."""
    if draw(st.booleans()):
        return draw(st.lists(ANY_MESSAGES, max_size=4))
    messages = draw(valid_conversations())
    messages.insert(draw(st.integers(0, len(messages))), draw(ANY_MESSAGES))
    return messages


# --- Tools and output settings -------------------------------------------------------------------

VALID_TOOLS = st.lists(
    st.builds(
        content_pb2.Tool,
        name=NAMES,
        description=TEXT,
        parameters=st.one_of(st.none(), VALID_SCHEMAS.map(struct)),
        strict=st.booleans(),
    ),
    max_size=3,
    unique_by=lambda tool: tool.name,
)
ANY_TOOLS = st.one_of(
    # Valid names with schemas of any shape, which the mock fills in when it calls the tool.
    st.lists(
        st.builds(content_pb2.Tool, name=NAMES, description=TEXT, parameters=ANY_SCHEMAS),
        min_size=1,
        max_size=2,
        unique_by=lambda tool: tool.name,
    ),
    st.lists(
        st.builds(
            content_pb2.Tool,
            name=st.one_of(NAMES, BAD_NAMES),
            description=TEXTS,
            parameters=st.one_of(st.none(), ANY_SCHEMAS),
            strict=st.booleans(),
        ),
        max_size=3,
    ),
)
ANY_TOOL_CHOICES = st.one_of(
    st.just(content_pb2.ToolChoice()),
    st.builds(content_pb2.ToolChoice, mode=st.one_of(st.integers(0, 3), INT32)),
    st.builds(content_pb2.ToolChoice, tool_name=st.one_of(NAMES, BAD_NAMES)),
)


def tool_choices_for(tools: list[content_pb2.Tool]) -> st.SearchStrategy[content_pb2.ToolChoice]:
    """Choices valid for `tools`; with tools, mostly ones that make the mock call a tool."""
    choices = [content_pb2.ToolChoice(mode=content_pb2.TOOL_CHOICE_MODE_NONE)]
    if tools:
        choices += [
            content_pb2.ToolChoice(mode=content_pb2.TOOL_CHOICE_MODE_AUTO),
            content_pb2.ToolChoice(mode=content_pb2.TOOL_CHOICE_MODE_REQUIRED),
            content_pb2.ToolChoice(mode=content_pb2.TOOL_CHOICE_MODE_REQUIRED),
            content_pb2.ToolChoice(tool_name=tools[-1].name),
        ]
    return st.sampled_from(choices)


@st.composite
def valid_response_formats(draw: st.DrawFn) -> content_pb2.ResponseFormat:
    kind = draw(
        st.sampled_from(
            [
                content_pb2.RESPONSE_FORMAT_TYPE_TEXT,
                content_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
                content_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
            ]
        )
    )
    if kind != content_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        return content_pb2.ResponseFormat(type=kind)
    return content_pb2.ResponseFormat(
        type=kind,
        json_schema=struct(draw(VALID_SCHEMAS.filter(bool))),
        schema_name=draw(st.one_of(st.just(""), NAMES)),
        strict=draw(st.booleans()),
    )


ANY_RESPONSE_FORMATS = st.one_of(
    # A JSON schema of any shape, which the mock fills in for its reply.
    st.builds(
        content_pb2.ResponseFormat,
        type=st.just(content_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA),
        json_schema=ANY_SCHEMAS,
        strict=st.booleans(),
    ),
    st.builds(
        content_pb2.ResponseFormat,
        type=st.one_of(st.integers(0, 3), INT32),
        json_schema=st.one_of(st.none(), ANY_SCHEMAS),
        schema_name=st.one_of(st.just(""), NAMES, BAD_NAMES),
        strict=st.booleans(),
    ),
)

# --- Generation, reasoning, budget ---------------------------------------------------------------

VALID_GENERATION_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1, exclude_min=True),
    "top_k": st.integers(1, 100),
    "max_tokens": st.integers(1, 4096),
    "stop": st.lists(TEXT.filter(bool), max_size=4),
    "seed": INT64,
    "presence_penalty": st.floats(-2, 2),
    "frequency_penalty": st.floats(-2, 2),
}
ANY_GENERATION_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "temperature": ANY_FLOAT,
    "top_p": ANY_FLOAT,
    "top_k": INT32,
    "max_tokens": st.one_of(INT32, st.sampled_from([0, 1, 2**31 - 1])),
    "stop": st.lists(TEXTS, max_size=6),
    "seed": INT64,
    "presence_penalty": ANY_FLOAT,
    "frequency_penalty": ANY_FLOAT,
}
VALID_GENERATION = st.fixed_dictionaries({}, optional=VALID_GENERATION_FIELDS).map(
    message_of(chat_pb2.GenerationConfig)
)
ANY_GENERATION = st.one_of(
    one_field_off({}, ANY_GENERATION_FIELDS, VALID_GENERATION_FIELDS),
    st.fixed_dictionaries({}, optional=ANY_GENERATION_FIELDS),
).map(message_of(chat_pb2.GenerationConfig))
# Always with a level: OpenAI takes no budget alone.
VALID_REASONING = st.fixed_dictionaries(
    {"effort": st.integers(2, 5)}, optional={"budget_tokens": st.integers(1024, 8192)}
).map(message_of(chat_pb2.ReasoningConfig))
ANY_REASONING = st.fixed_dictionaries(
    {}, optional={"effort": st.one_of(st.integers(0, 5), INT32), "budget_tokens": INT32}
).map(message_of(chat_pb2.ReasoningConfig))
VALID_BUDGETS = st.sampled_from(["", "1000", "1", "0.05", "0"])
ODD_BUDGETS = st.sampled_from(
    [
        "cheap",
        "-1",
        "-0",
        "NaN",
        "sNaN",
        "Infinity",
        "-Infinity",
        "1e9",
        "1E+1000000",
        "1e-30",
        "0." + "0" * 200 + "1",
        "9" * 100,
        " 1",
        "1_000",
        "0x10",
        "1,5",
        "١٢٣",
    ]
)
# Budgets so fine that written out in full they outgrow gRPC's metadata limit.
TINY_BUDGETS = st.sampled_from(["1E-100000", "5e-20000", "1E-9000", "0." + "0" * 10_000 + "1"])
ANY_BUDGETS = st.one_of(
    ODD_BUDGETS,
    TINY_BUDGETS,
    VALID_BUDGETS,
    TEXT,
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
)

# --- Caller, tags, provider options --------------------------------------------------------------

ANY_CALLERS = st.builds(
    chat_pb2.CallerMetadata,
    user=st.one_of(TEXT, st.just("u" * 257)),
    project=TEXT,
    tenant=st.one_of(TEXT, st.just("t" * 300)),
    tracking_id=TEXT,
)
ANY_TAGS = st.dictionaries(
    st.one_of(TEXT, st.just("k" * 64)), st.one_of(TEXT, st.just("v" * 257)), max_size=4
)
ANY_POLICIES = st.one_of(st.integers(0, 2), INT32)
VALID_PROVIDER_OPTIONS = st.sampled_from(
    [{}, {"openai": struct({"user": "fuzz", "logprobs": False})}, {"mock": struct({})}]
)
RANDOM_STRUCTS = st.dictionaries(JSON_KEYS, JSON_VALUES, max_size=4).map(struct)
ANY_PROVIDER_OPTIONS = st.one_of(
    # Random fields merged into the body of a provider that serves the call.
    st.dictionaries(
        st.sampled_from(["openai", "mock", "anthropic", "gemini", "ollama", "cohere"]),
        RANDOM_STRUCTS,
        min_size=1,
        max_size=2,
    ),
    st.dictionaries(
        st.one_of(st.sampled_from(["openai", "mock", "anthropic", "groq", "nope", ""]), TEXT),
        RANDOM_STRUCTS,
        max_size=3,
    ),
)

# --- Whole requests ------------------------------------------------------------------------------

# Listed with the reasoning capability, or unlisted (the provider judges).
REASONING_MODELS = frozenset(
    {
        "mock:echo-large",
        "openai:o3",
        "openai:gpt-5-nano",
        "openai:fuzz-unlisted-model",
        "anthropic:claude-sonnet-4-6",
        "gemini:gemini-2.5-flash",
        "ollama:llama3.2",
    }
)
VALID_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "tools": VALID_TOOLS,
    "parallel_tool_calls": st.booleans(),
    "response_format": valid_response_formats(),
    "generation": VALID_GENERATION,
    "fallback_models": st.lists(VALID_MODELS, max_size=3),
    "max_cost": VALID_BUDGETS,
    "dry_run": st.booleans(),
    "caller": st.builds(chat_pb2.CallerMetadata, user=TEXT, project=TEXT, tenant=TEXT, tracking_id=TEXT),
    "tags": st.dictionaries(st.text("abc-_", min_size=1, max_size=8), TEXT, max_size=3),
    "provider_options": VALID_PROVIDER_OPTIONS,
    "unsupported_parameters": st.integers(0, 2),
}
ANY_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "model": ANY_MODELS,
    "messages": broken_conversations(),
    "tools": ANY_TOOLS,
    "tool_choice": ANY_TOOL_CHOICES,
    "parallel_tool_calls": st.booleans(),
    "response_format": ANY_RESPONSE_FORMATS,
    "generation": ANY_GENERATION,
    "fallback_models": st.lists(ANY_MODELS, max_size=12),
    "max_cost": ANY_BUDGETS,
    "dry_run": st.booleans(),
    "caller": ANY_CALLERS,
    "tags": ANY_TAGS,
    "provider_options": ANY_PROVIDER_OPTIONS,
    "reasoning": ANY_REASONING,
    "unsupported_parameters": ANY_POLICIES,
}


# Fields whose content reaches deep (the adapters, the mock, cost checks) come up twice as often.
DEEP_FIELDS = ["messages", "tools", "response_format", "generation", "max_cost", "provider_options"]
BROKEN_FIELDS = st.sampled_from(sorted(ANY_FIELDS) + DEEP_FIELDS)


@st.composite
def near_valid_requests(draw: st.DrawFn, broken: bool) -> dict[str, Any]:
    """The fields of a request that passes validation (a model and messages, some of the rest, a
    tool choice that fits the tools), or, when `broken`, of one with one or two fields drawn wild."""
    model = draw(VALID_MODELS)
    fields: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {"model": st.just(model), "messages": valid_conversations()}, optional=VALID_FIELDS
        )
    )
    if model in REASONING_MODELS and draw(st.booleans()):
        fields["reasoning"] = draw(VALID_REASONING)
    names = draw(st.lists(BROKEN_FIELDS, min_size=1, max_size=2, unique=True)) if broken else []
    for name in names:
        fields[name] = draw(ANY_FIELDS[name])
    if "tool_choice" not in names and draw(st.sampled_from([True, True, False])):
        fields["tool_choice"] = draw(tool_choices_for(list(fields.get("tools", []))))
    return fields


CHAT_REQUESTS = st.one_of(
    near_valid_requests(broken=False),
    near_valid_requests(broken=True),
    near_valid_requests(broken=True),
    near_valid_requests(broken=True),
    st.fixed_dictionaries({}, optional=ANY_FIELDS),
).map(message_of(chat_pb2.ChatRequest))

# x-request-id: printable ASCII the gateway takes, and values it must replace (too long, spaces).
REQUEST_IDS = st.one_of(
    st.none(), st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=140)
)


# --- The property --------------------------------------------------------------------------------


def assert_documented(err: grpc.aio.AioRpcError, rpc: str) -> None:
    assert err.code() not in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN), (
        f"{rpc}: {err.code()} {err.details()}"
    )
    details = error_details(err)
    reason = details.info.reason
    assert reason in REASONS, f"{rpc}: undocumented reason {reason!r}: {details.message}"
    assert details.code.name in REASONS[reason], f"{rpc}: {reason} with {details.code.name}"
    if reason == "INVALID_REQUEST":
        assert details.bad_request is not None, f"{rpc}: INVALID_REQUEST without BadRequest"
        assert [v.field for v in details.bad_request.field_violations], f"{rpc}: no field named"


def assert_json(body: Any) -> None:
    """The fake upstream parses leniently, as Python does; real providers refuse the NaN and
    Infinity that JSON lacks."""
    try:
        json.dumps(body, allow_nan=False)
    except ValueError:
        pytest.fail(f"the gateway sent a body that is not JSON upstream: {body!r:.500}")


def call_metadata(request_id: str | None) -> tuple[tuple[str, str], ...]:
    return () if request_id is None else (("x-request-id", request_id),)


async def check(fakes: Fakes, rpc: str, call: Awaitable[None], dry_run: bool = False) -> None:
    """Runs one call: it succeeds or fails as documented, sending only JSON upstream, and nothing
    at all for a dry run."""
    try:
        try:
            await call
        except grpc.aio.AioRpcError as err:
            assert_documented(err, rpc)
        for fake in fakes:
            if dry_run:
                assert not fake.requests, f"a dry run reached {type(fake).__name__}"
            for recorded in fake.requests:
                assert_json(recorded.body)
    finally:
        for fake in fakes:
            fake.requests.clear()


# Reproducible in CI: the same examples on every run (each test its own), and no example database.
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
)


@FUZZ
@given(chat_request=CHAT_REQUESTS, request_id=REQUEST_IDS)
async def test_chat_answers_as_documented(
    fuzz_gateway: tuple[RunningGateway, Fakes],
    chat_request: chat_pb2.ChatRequest,
    request_id: str | None,
) -> None:
    gw, fakes = fuzz_gateway

    async def chat() -> None:
        reply = await gw.stub.Chat(chat_request, timeout=TIMEOUT, metadata=call_metadata(request_id))
        assert reply.request_id

    await check(fakes, "Chat", chat(), chat_request.dry_run)


@FUZZ
@given(chat_request=CHAT_REQUESTS, request_id=REQUEST_IDS)
async def test_chat_stream_answers_as_documented(
    fuzz_gateway: tuple[RunningGateway, Fakes],
    chat_request: chat_pb2.ChatRequest,
    request_id: str | None,
) -> None:
    gw, fakes = fuzz_gateway

    async def stream() -> None:
        call = gw.stub.ChatStream(
            chat_pb2.ChatStreamRequest(request=chat_request),
            timeout=TIMEOUT,
            metadata=call_metadata(request_id),
        )
        events = [event async for event in call]
        assert events, "a stream that succeeds sends start and finish"
        assert events[0].HasField("start"), events[0]
        assert events[-1].HasField("finish"), events[-1]

    await check(fakes, "ChatStream", stream(), chat_request.dry_run)


@FUZZ
@given(
    chat_request=CHAT_REQUESTS,
    request_id=REQUEST_IDS,
    candidates=st.lists(ANY_MODELS, max_size=3),
    expected=st.one_of(st.none(), st.integers(0, 4096), INT32),
)
async def test_estimate_cost_answers_as_documented(
    fuzz_gateway: tuple[RunningGateway, Fakes],
    chat_request: chat_pb2.ChatRequest,
    request_id: str | None,
    candidates: list[str],
    expected: int | None,
) -> None:
    gw, fakes = fuzz_gateway
    request = catalog_pb2.EstimateCostRequest(request=chat_request, candidate_models=candidates)
    if expected is not None:
        request.expected_output_tokens = expected

    async def estimate() -> None:
        reply = await gw.stub.EstimateCost(request, timeout=TIMEOUT, metadata=call_metadata(request_id))
        assert reply.estimates

    await check(fakes, "EstimateCost", estimate(), dry_run=True)  # estimates never call anyone


@FUZZ
@given(
    body=st.one_of(
        st.binary(max_size=64),
        # A valid request with bytes flipped or cut: mostly still a message, sometimes not.
        CHAT_REQUESTS.map(lambda r: r.SerializeToString()).flatmap(
            lambda raw: st.integers(0, max(len(raw) - 1, 0)).map(lambda i: raw[:i] + b"\xff" + raw[i + 1 :])
        ),
    ),
    method=st.sampled_from(["Chat", "EstimateCost"]),
)
async def test_any_bytes_are_answered_as_documented(
    fuzz_gateway: tuple[RunningGateway, Fakes], body: bytes, method: str
) -> None:
    """Bytes that are no protobuf message at all are the caller's fault too, not UNKNOWN."""
    gw, fakes = fuzz_gateway
    call = gw.channel.unary_unary(f"/llmgateway.v1.GatewayService/{method}", None, None)

    async def send() -> None:
        await call(body, timeout=TIMEOUT)

    await check(fakes, method, send())


VISION_MODELS = [
    "mock:echo",
    "openai:gpt-4o-mini",
    "anthropic:claude-haiku-4-5",
    "gemini:gemini-2.5-flash",
    "ollama:llama3.2",
    "cohere:command-a-03-2025",
]


async def image_call(gw: RunningGateway, model: str, image: content_pb2.Image, streamed: bool) -> None:
    message = content_pb2.Message(
        role=content_pb2.ROLE_USER, content=[content_pb2.Part(text="see"), content_pb2.Part(image=image)]
    )
    request = chat_pb2.ChatRequest(model=model, messages=[message])
    if streamed:
        stream = gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request), timeout=TIMEOUT)
        events = [event async for event in stream]
        assert events[-1].HasField("finish")
    else:
        await gw.stub.Chat(request, timeout=TIMEOUT)


async def test_every_adapter_takes_or_refuses_odd_image_urls_as_documented(
    fuzz_gateway: tuple[RunningGateway, Fakes],
) -> None:
    """Every odd URL, with and without a type, unary and streamed, at every wire format: refused
    as INVALID_ARGUMENT naming the field, or taken; never INTERNAL (a URL that does not parse
    used to escape Gemini's mapping as INTERNAL)."""
    gw, fakes = fuzz_gateway
    for model in VISION_MODELS:
        for url in ODD_IMAGE_URLS:
            for mime_type in ("", "image/png"):
                for streamed in (False, True):
                    image = content_pb2.Image(url=url, mime_type=mime_type)
                    rpc = "ChatStream" if streamed else "Chat"
                    await check(fakes, rpc, image_call(gw, model, image, streamed))


@FUZZ
@given(model=st.sampled_from(VISION_MODELS), image=images(), streamed=st.booleans())
async def test_images_reach_every_adapter_as_documented(
    fuzz_gateway: tuple[RunningGateway, Fakes], model: str, image: content_pb2.Image, streamed: bool
) -> None:
    """Images drawn wild (URL, bytes, type, detail) at every wire format."""
    gw, fakes = fuzz_gateway
    await check(fakes, "ChatStream" if streamed else "Chat", image_call(gw, model, image, streamed))
