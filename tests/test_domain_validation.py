"""The check of a chat request belongs to the domain, so every front door refuses the same requests
with the same violations. Each case is one request written twice, as protobuf sent through the gRPC
door and as domain values built directly (as an HTTP door would build them): both must give the
same field paths and descriptions."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from llm_gateway.config import load_config
from llm_gateway.domain import validate_chat_request
from llm_gateway.domain.errors import FieldViolation, GatewayError
from llm_gateway.domain.messages import (
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
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
)
from llmgateway.v1 import chat_pb2, content_pb2
from tests.conftest import RunningGateway, chat, error_details, user

# What the servicer is given: every configured provider of the embedded defaults.
PROVIDERS = frozenset(load_config().providers)
TEXT = "Hello there, gateway"
Violation = tuple[str, str]


def domain_chat(**fields: Any) -> ChatRequest:
    """The domain twin of `chat`: mock:echo and one user message, then `fields`."""
    base: dict[str, Any] = {"model": "mock:echo", "messages": (said(Role.USER, TEXT),)}
    return ChatRequest(**{**base, **fields})


def said(role: Role, text: str) -> Message:
    return Message(role, (TextPart(text),))


def struct(fields: dict[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(fields)
    return out


def pb_message(
    role: content_pb2.Role.ValueType, *parts: content_pb2.Part, **fields: Any
) -> content_pb2.Message:
    return content_pb2.Message(role=role, content=list(parts), **fields)


def pb_image(**fields: Any) -> content_pb2.Part:
    return content_pb2.Part(image=content_pb2.Image(**fields))


def pb_text(text: str) -> content_pb2.Part:
    return content_pb2.Part(text=text)


def domain_violations(request: ChatRequest, wire: tuple[FieldViolation, ...] = ()) -> list[Violation]:
    with pytest.raises(GatewayError) as caught:
        validate_chat_request(request, PROVIDERS, wire)
    assert caught.value.code == "INVALID_ARGUMENT"
    assert caught.value.reason == "INVALID_REQUEST"
    return [(v.field, v.description) for v in caught.value.violations]


async def grpc_violations(gateway: RunningGateway, request: chat_pb2.ChatRequest) -> list[Violation]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(request, timeout=10)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT, details.message
    assert details.info.reason == "INVALID_REQUEST"
    assert details.bad_request is not None
    return [(v.field, v.description) for v in details.bad_request.field_violations]


DEEP_JSON = "[" * 5_000 + "]" * 5_000
MANY_PARTS = [pb_text("a")] * 1_001

CASES = [
    pytest.param(
        chat_pb2.ChatRequest(model="mock:echo"), domain_chat(messages=()), ["messages"], id="no-messages"
    ),
    pytest.param(
        chat("mock:echo", generation=chat_pb2.GenerationConfig(temperature=7)),
        domain_chat(generation=GenerationConfig(temperature=7.0)),
        ["generation.temperature"],
        id="temperature",
    ),
    pytest.param(
        chat("mock:echo", generation=chat_pb2.GenerationConfig(temperature=float("nan"))),
        domain_chat(generation=GenerationConfig(temperature=float("nan"))),
        ["generation.temperature"],
        id="temperature-nan",
    ),
    pytest.param(
        chat(
            "mock:echo",
            generation=chat_pb2.GenerationConfig(
                top_p=0,
                top_k=0,
                max_tokens=0,
                presence_penalty=2.5,
                frequency_penalty=-3,
                stop=["", "a", "b", "c", "d"],
            ),
        ),
        domain_chat(
            generation=GenerationConfig(
                top_p=0.0,
                top_k=0,
                max_tokens=0,
                presence_penalty=2.5,
                frequency_penalty=-3.0,
                stop=("", "a", "b", "c", "d"),
            )
        ),
        [
            "generation.stop",
            "generation.stop[0]",
            "generation.top_p",
            "generation.top_k",
            "generation.max_tokens",
            "generation.presence_penalty",
            "generation.frequency_penalty",
        ],
        id="generation",
    ),
    *(
        pytest.param(
            chat("mock:echo", max_cost=text), domain_chat(max_cost=Decimal(text)), ["max_cost"], id=text
        )
        for text in ("-1", "NaN", "1E+7", "1E-100000")
    ),
    pytest.param(
        chat("mock:echo", fallback_models=[f"mock:echo{i}" for i in range(11)]),
        domain_chat(fallback_models=tuple(f"mock:echo{i}" for i in range(11))),
        ["fallback_models"],
        id="fallbacks",
    ),
    pytest.param(
        chat("mock:echo", caller=chat_pb2.CallerMetadata(user="u" * 300, tracking_id="t" * 257)),
        domain_chat(caller=Caller(user="u" * 300, tracking_id="t" * 257)),
        ["caller.user", "caller.tracking_id"],
        id="caller",
    ),
    # One key per map: protobuf does not keep a map's order.
    pytest.param(
        chat("mock:echo", tags={"": "v" * 257}),
        domain_chat(tags={"": "v" * 257}),
        ["tags['']", "tags['']"],
        id="tags",
    ),
    pytest.param(
        chat("mock:echo", tags={f"k{i}": "v" for i in range(65)}),
        domain_chat(tags={f"k{i}": "v" for i in range(65)}),
        ["tags"],
        id="too-many-tags",
    ),
    pytest.param(
        chat("mock:echo-large", reasoning=chat_pb2.ReasoningConfig(budget_tokens=0)),
        domain_chat(model="mock:echo-large", reasoning=Reasoning(budget_tokens=0)),
        ["reasoning.budget_tokens"],
        id="reasoning-budget",
    ),
    pytest.param(
        chat(
            "mock:echo-large",
            reasoning=chat_pb2.ReasoningConfig(effort=chat_pb2.REASONING_EFFORT_NONE, budget_tokens=100),
        ),
        domain_chat(model="mock:echo-large", reasoning=Reasoning(ReasoningEffort.NONE, 100)),
        ["reasoning.budget_tokens"],
        id="reasoning-none-with-budget",
    ),
    pytest.param(
        chat_pb2.ChatRequest(
            model="mock:echo",
            messages=[
                pb_message(content_pb2.ROLE_USER),
                pb_message(content_pb2.ROLE_TOOL, pb_text("x")),
                pb_message(content_pb2.ROLE_ASSISTANT),
                pb_message(
                    content_pb2.ROLE_USER,
                    pb_text("hi"),
                    tool_call_id="call_1",
                    tool_calls=[
                        content_pb2.ToolCall(name="bad name!", arguments="{not json"),
                        content_pb2.ToolCall(id="c", name="f", arguments=DEEP_JSON),
                    ],
                ),
                pb_message(content_pb2.ROLE_SYSTEM, pb_text("be brief"), name="bad name!"),
            ],
        ),
        domain_chat(
            messages=(
                Message(Role.USER),
                said(Role.TOOL, "x"),
                Message(Role.ASSISTANT),
                Message(
                    Role.USER,
                    (TextPart("hi"),),
                    (ToolCall("", "bad name!", "{not json"), ToolCall("c", "f", DEEP_JSON)),
                    tool_call_id="call_1",
                ),
                Message(Role.SYSTEM, (TextPart("be brief"),), name="bad name!"),
            )
        ),
        [
            "messages[0].content",
            "messages[1].tool_call_id",
            "messages[2].content",
            "messages[3].tool_calls[0].id",
            "messages[3].tool_calls[0].name",
            "messages[3].tool_calls[0].arguments",
            "messages[3].tool_calls[1].arguments",
            "messages[3].tool_calls",
            "messages[3].tool_call_id",
            "messages[4].name",
        ],
        id="messages",
    ),
    pytest.param(
        chat_pb2.ChatRequest(
            model="mock:echo",
            messages=[
                pb_message(content_pb2.ROLE_USER, pb_image(url="ftp://example.com/cat.png")),
                pb_message(content_pb2.ROLE_USER, pb_image(data=b"\x89PNG")),
                pb_message(content_pb2.ROLE_USER, pb_image(data=b"", mime_type="image/tiff")),
                pb_message(content_pb2.ROLE_USER, pb_image(mime_type="image/png")),
                pb_message(content_pb2.ROLE_SYSTEM, pb_image(url="https://example.com/a.png")),
                pb_message(content_pb2.ROLE_USER, pb_image(url="https://[::1/a.png")),
            ],
        ),
        domain_chat(
            messages=(
                Message(Role.USER, (ImagePart(url="ftp://example.com/cat.png"),)),
                Message(Role.USER, (ImagePart(data=b"\x89PNG"),)),
                Message(Role.USER, (ImagePart(data=b"", mime_type="image/tiff"),)),
                Message(Role.USER, (ImagePart(mime_type="image/png"),)),
                Message(Role.SYSTEM, (ImagePart(url="https://example.com/a.png"),)),
                Message(Role.USER, (ImagePart(url="https://[::1/a.png"),)),
            )
        ),
        [
            "messages[0].content[0].image.url",
            "messages[1].content[0].image.mime_type",
            "messages[2].content[0].image.mime_type",
            "messages[2].content[0].image.data",
            "messages[3].content[0].image",
            "messages[4].content[0].image",
            "messages[5].content[0].image.url",
        ],
        id="images",
    ),
    pytest.param(
        chat(
            "mock:echo",
            tools=[
                content_pb2.Tool(name="ok"),
                content_pb2.Tool(name="ok"),
                content_pb2.Tool(name="has space"),
                content_pb2.Tool(name="typed", parameters=struct({"type": "string"})),
                content_pb2.Tool(
                    name="inf", parameters=struct({"properties": {"n": {"maximum": float("inf")}}})
                ),
            ],
            tool_choice=content_pb2.ToolChoice(tool_name="missing"),
        ),
        domain_chat(
            tools=(
                Tool("ok"),
                Tool("ok"),
                Tool("has space"),
                Tool("typed", parameters={"type": "string"}),
                Tool("inf", parameters={"properties": {"n": {"maximum": float("inf")}}}),
            ),
            tool_choice=ToolChoice(ToolChoiceMode.NAMED, "missing"),
        ),
        [
            "tools[1].name",
            "tools[2].name",
            "tools[3].parameters",
            "tools[4].parameters",
            "tool_choice.tool_name",
        ],
        id="tools",
    ),
    pytest.param(
        chat(
            "mock:echo",
            tool_choice=content_pb2.ToolChoice(mode=content_pb2.TOOL_CHOICE_MODE_REQUIRED),
            response_format=content_pb2.ResponseFormat(
                type=content_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
                json_schema=struct({"type": "object", "maximum": float("nan")}),
                schema_name="bad name",
            ),
        ),
        domain_chat(
            tool_choice=ToolChoice(ToolChoiceMode.REQUIRED),
            response_format=ResponseFormat(
                ResponseFormatType.JSON_OBJECT, {"type": "object", "maximum": float("nan")}, "bad name"
            ),
        ),
        [
            "tool_choice",
            "response_format.json_schema",
            "response_format.json_schema",
            "response_format.schema_name",
        ],
        id="tool-choice-and-response-format",
    ),
    pytest.param(
        chat(
            "mock:echo",
            response_format=content_pb2.ResponseFormat(type=content_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA),
        ),
        domain_chat(response_format=ResponseFormat(ResponseFormatType.JSON_SCHEMA)),
        ["response_format.json_schema"],
        id="json-schema-missing",
    ),
    pytest.param(
        chat("mock:echo", provider_options={"nosuch": struct({})}),
        domain_chat(provider_options={"nosuch": {}}),
        ["provider_options['nosuch']"],
        id="provider-options-unknown",
    ),
    pytest.param(
        chat("mock:echo", provider_options={"mock": struct({"bias": [1, {"x": float("-inf")}]})}),
        domain_chat(provider_options={"mock": {"bias": [1, {"x": float("-inf")}]}}),
        ["provider_options['mock']"],
        id="provider-options-infinite",
    ),
    # Too many of something: the gRPC door counts before it builds, the domain counts what it is
    # given, and both say the same.
    pytest.param(
        chat_pb2.ChatRequest(model="mock:echo", messages=[user("a")] * 10_001),
        domain_chat(messages=(said(Role.USER, "a"),) * 10_001),
        ["messages"],
        id="too-many-messages",
    ),
    pytest.param(
        chat_pb2.ChatRequest(
            model="mock:echo", messages=[pb_message(content_pb2.ROLE_USER, *[pb_text("a")] * 600)] * 200
        ),
        domain_chat(messages=(Message(Role.USER, (TextPart("a"),) * 600),) * 200),
        ["messages"],
        id="too-many-parts-in-all",
    ),
    pytest.param(
        chat_pb2.ChatRequest(
            model="mock:echo",
            messages=[
                pb_message(content_pb2.ROLE_USER, *MANY_PARTS, tool_call_id="x"),
                pb_message(
                    content_pb2.ROLE_ASSISTANT, tool_calls=[content_pb2.ToolCall(id="c", name="f")] * 257
                ),
                pb_message(content_pb2.ROLE_USER, name="bad name!"),
            ],
            tools=[content_pb2.Tool(name=f"t{i}") for i in range(513)],
            tool_choice=content_pb2.ToolChoice(tool_name="missing"),
        ),
        domain_chat(
            messages=(
                Message(Role.USER, (TextPart("a"),) * 1_001, tool_call_id="x"),
                Message(Role.ASSISTANT, tool_calls=(ToolCall("c", "f", ""),) * 257),
                Message(Role.USER, name="bad name!"),
            ),
            tools=tuple(Tool(f"t{i}") for i in range(513)),
            tool_choice=ToolChoice(ToolChoiceMode.NAMED, "missing"),
        ),
        ["messages[0].content", "messages[1].tool_calls", "messages[2].content", "messages[2].name", "tools"],
        id="too-many-parts-tool-calls-and-tools",
    ),
]


@pytest.mark.parametrize(("pb", "domain", "fields"), CASES)
async def test_every_door_gets_the_same_violations(
    gateway: RunningGateway, pb: chat_pb2.ChatRequest, domain: ChatRequest, fields: list[str]
) -> None:
    through_grpc = await grpc_violations(gateway, pb)
    assert through_grpc == domain_violations(domain)
    assert [field for field, _ in through_grpc] == fields


async def test_the_doors_findings_come_with_the_domains_in_request_order(gateway: RunningGateway) -> None:
    """What only protobuf can get wrong (an unknown enum number, a budget that is no number) is
    reported in the same error as the domain's violations, placed by field."""
    pb = chat_pb2.ChatRequest(
        model="mock:echo",
        messages=[user("hi"), pb_message(99)],  # type: ignore[arg-type]
        generation=chat_pb2.GenerationConfig(temperature=9),
        max_cost="lots",
        unsupported_parameters=7,  # type: ignore[arg-type]
    )
    wire = (
        FieldViolation("messages[1].role", "must be ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL"),
        FieldViolation("max_cost", "must be a decimal number of USD such as '0.05', got 'lots'"),
        FieldViolation("unsupported_parameters", "unknown policy"),
    )
    # As the gRPC door builds it: a user's role stands in for the unknown one, and no budget.
    domain = domain_chat(
        messages=(said(Role.USER, "hi"), Message(Role.USER)), generation=GenerationConfig(temperature=9.0)
    )
    through_grpc = await grpc_violations(gateway, pb)
    assert through_grpc == domain_violations(domain, wire)
    assert [field for field, _ in through_grpc] == [
        "messages[1].role",
        "messages[1].content",
        "generation.temperature",
        "max_cost",
        "unsupported_parameters",
    ]


@pytest.mark.parametrize(
    ("domain", "reported"),
    [
        (domain_chat(messages=()), "messages"),
        (domain_chat(messages=(Message(Role.ASSISTANT),)), "messages[0].tool_calls"),
        (domain_chat(messages=(Message(Role.USER),)), "messages[0].content"),
        (domain_chat(tool_choice=ToolChoice(ToolChoiceMode.REQUIRED)), "tools"),
        (domain_chat(tool_choice=ToolChoice(ToolChoiceMode.NAMED, "t")), "tools"),
        (domain_chat(tags={}), "tags"),
    ],
)
def test_a_field_the_door_reported_is_not_examined_again(domain: ChatRequest, reported: str) -> None:
    """A door builds nothing of what it found too large; that empty stand-in must not add a second
    violation ("must contain at least one message", "needs tools")."""
    assert domain_violations(domain, (FieldViolation(reported, "at most a few"),)) == [
        (reported, "at most a few")
    ]


def test_a_valid_request_passes() -> None:
    validate_chat_request(domain_chat(), PROVIDERS)
    validate_chat_request(
        domain_chat(
            messages=(
                said(Role.SYSTEM, "be brief"),
                Message(
                    Role.USER, (TextPart("see"), ImagePart(url="https://example.com/a.png", detail="low"))
                ),
                Message(Role.ASSISTANT, tool_calls=(ToolCall("c", "f", '{"a": 1}'),)),
                Message(Role.TOOL, (TextPart("done"),), tool_call_id="c"),
            ),
            tools=(Tool("f", parameters={"type": "object"}),),
            tool_choice=ToolChoice(ToolChoiceMode.NAMED, "f"),
            max_cost=Decimal("0.05"),
            provider_options={"mock": {"x": 1.5}},
        ),
        PROVIDERS,
    )


def test_what_no_protobuf_request_can_hold_is_checked_too() -> None:
    """Domain values another door could build but the protobuf contract cannot express."""
    both = ImagePart(url="https://example.com/a.png", data=b"\x89PNG", mime_type="image/png")
    odd_detail = ImagePart(url="https://example.com/a.png", detail="ultra")
    deep: dict[str, Any] = {"n": float("nan")}
    for _ in range(5_000):  # deeper than Python recurses
        deep = {"items": [deep]}
    request = domain_chat(
        messages=(Message(Role.USER, (both, odd_detail)),),
        tools=(Tool("f", parameters=deep),),
    )
    assert [field for field, _ in domain_violations(request)] == [
        "messages[0].content[0].image",
        "messages[0].content[1].image.detail",
        "tools[0].parameters",
    ]
