"""Bad input gets INVALID_ARGUMENT (or NOT_FOUND for unknown models) naming the field, never INTERNAL."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2

from llmgateway.v1 import catalog_pb2, chat_pb2, content_pb2
from tests.conftest import RunningGateway, chat, error_details, user, violated_fields


async def invalid(gateway: RunningGateway, request: chat_pb2.ChatRequest) -> list[str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(request, timeout=5)
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT, details.message
    assert details.info.reason == "INVALID_REQUEST"
    fields = violated_fields(details)
    for field in fields:
        assert field in details.message  # the message names every field too
    return fields


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (chat_pb2.ChatRequest(model="mock:echo"), "messages"),
        (chat("mock:echo", generation=chat_pb2.GenerationConfig(temperature=7)), "generation.temperature"),
        (chat("mock:echo", generation=chat_pb2.GenerationConfig(temperature=-0.1)), "generation.temperature"),
        (
            chat("mock:echo", generation=chat_pb2.GenerationConfig(temperature=float("nan"))),
            "generation.temperature",
        ),
        (chat("mock:echo", generation=chat_pb2.GenerationConfig(top_p=0)), "generation.top_p"),
        (chat("mock:echo", generation=chat_pb2.GenerationConfig(top_k=0)), "generation.top_k"),
        (chat("mock:echo", generation=chat_pb2.GenerationConfig(max_tokens=0)), "generation.max_tokens"),
        (
            chat("mock:echo", generation=chat_pb2.GenerationConfig(presence_penalty=2.5)),
            "generation.presence_penalty",
        ),
        (
            chat("mock:echo", generation=chat_pb2.GenerationConfig(frequency_penalty=-3)),
            "generation.frequency_penalty",
        ),
        (
            chat("mock:echo", generation=chat_pb2.GenerationConfig(stop=["a", "b", "c", "d", "e"])),
            "generation.stop",
        ),
        (chat("mock:echo", generation=chat_pb2.GenerationConfig(stop=[""])), "generation.stop[0]"),
        (chat("mock:echo", max_cost="cheap"), "max_cost"),
        (chat("mock:echo", max_cost="-1"), "max_cost"),
        (chat("mock:echo", max_cost="NaN"), "max_cost"),
        (chat("mock:echo", max_cost="1E-100000"), "max_cost"),
        (chat("mock:echo", fallback_models=[f"mock:echo{i}" for i in range(11)]), "fallback_models"),
        (chat("mock:echo", caller=chat_pb2.CallerMetadata(user="u" * 300)), "caller.user"),
        (chat("mock:echo", tags={"": "x"}), "tags['']"),
        (chat("mock:echo has spaces"), "model"),
        (chat(""), "model"),
        (
            chat("mock:echo-large", reasoning=chat_pb2.ReasoningConfig(budget_tokens=0)),
            "reasoning.budget_tokens",
        ),
        (chat("mock:echo-large", reasoning=chat_pb2.ReasoningConfig(effort=99)), "reasoning.effort"),  # type: ignore[arg-type]
        (
            chat(
                "mock:echo-large",
                reasoning=chat_pb2.ReasoningConfig(effort=chat_pb2.REASONING_EFFORT_NONE, budget_tokens=100),
            ),
            "reasoning.budget_tokens",
        ),
        (chat("mock:echo", unsupported_parameters=7), "unsupported_parameters"),
    ],
)
async def test_out_of_range_fields_are_named(
    gateway: RunningGateway, request_: chat_pb2.ChatRequest, field: str
) -> None:
    assert await invalid(gateway, request_) == [field]


async def test_message_rules(gateway: RunningGateway) -> None:
    request = chat_pb2.ChatRequest(
        model="mock:echo",
        messages=[
            content_pb2.Message(content=[content_pb2.Part(text="no role")]),
            content_pb2.Message(role=content_pb2.ROLE_USER),
            content_pb2.Message(role=content_pb2.ROLE_TOOL, content=[content_pb2.Part(text="x")]),
            content_pb2.Message(role=content_pb2.ROLE_ASSISTANT),
            content_pb2.Message(
                role=content_pb2.ROLE_USER,
                content=[content_pb2.Part(text="hi")],
                tool_call_id="call_1",
                tool_calls=[content_pb2.ToolCall(id="c", name="bad name!", arguments="{not json")],
            ),
            content_pb2.Message(role=content_pb2.ROLE_USER, content=[content_pb2.Part()]),
        ],
    )
    assert await invalid(gateway, request) == [
        "messages[0].role",
        "messages[1].content",
        "messages[2].tool_call_id",
        "messages[3].content",
        "messages[4].tool_calls[0].name",
        "messages[4].tool_calls[0].arguments",
        "messages[4].tool_calls",
        "messages[4].tool_call_id",
        "messages[5].content[0]",
    ]


async def test_image_rules(gateway: RunningGateway) -> None:
    def image_message(role: content_pb2.Role.ValueType, image: content_pb2.Image) -> content_pb2.Message:
        return content_pb2.Message(role=role, content=[content_pb2.Part(image=image)])

    request = chat_pb2.ChatRequest(
        model="mock:echo",
        messages=[
            image_message(content_pb2.ROLE_USER, content_pb2.Image(url="ftp://example.com/cat.png")),
            image_message(content_pb2.ROLE_USER, content_pb2.Image(data=b"\x89PNG")),
            image_message(content_pb2.ROLE_USER, content_pb2.Image(data=b"GIF8", mime_type="image/tiff")),
            image_message(content_pb2.ROLE_USER, content_pb2.Image()),
            image_message(content_pb2.ROLE_SYSTEM, content_pb2.Image(url="https://example.com/a.png")),
        ],
    )
    assert await invalid(gateway, request) == [
        "messages[0].content[0].image.url",
        "messages[1].content[0].image.mime_type",
        "messages[2].content[0].image.mime_type",
        "messages[3].content[0].image",
        "messages[4].content[0].image",
    ]


async def test_valid_images_are_accepted(gateway: RunningGateway) -> None:
    request = chat_pb2.ChatRequest(
        model="mock:echo",
        messages=[
            content_pb2.Message(
                role=content_pb2.ROLE_USER,
                content=[
                    content_pb2.Part(text="What is in these?"),
                    content_pb2.Part(image=content_pb2.Image(url="https://example.com/cat.png")),
                    content_pb2.Part(
                        image=content_pb2.Image(
                            data=b"\x89PNG\r\n", mime_type="image/png", detail=content_pb2.IMAGE_DETAIL_LOW
                        )
                    ),
                ],
            )
        ],
    )
    reply = await gateway.stub.Chat(request)
    assert reply.message.content[0].text == "What is in these?"


async def test_tool_rules(gateway: RunningGateway) -> None:
    not_object = struct_pb2.Struct()
    not_object.update({"type": "string"})
    request = chat_pb2.ChatRequest(
        model="mock:echo",
        messages=[user("hi")],
        tools=[
            content_pb2.Tool(name="ok"),
            content_pb2.Tool(name="ok"),
            content_pb2.Tool(name="has space"),
            content_pb2.Tool(name="typed", parameters=not_object),
        ],
        tool_choice=content_pb2.ToolChoice(tool_name="missing"),
    )
    assert await invalid(gateway, request) == [
        "tools[1].name",
        "tools[2].name",
        "tools[3].parameters",
        "tool_choice.tool_name",
    ]


async def test_tool_choice_needs_tools_and_response_format_rules(gateway: RunningGateway) -> None:
    schema = struct_pb2.Struct()
    schema.update({"type": "object"})
    request = chat(
        "mock:echo",
        tool_choice=content_pb2.ToolChoice(mode=content_pb2.TOOL_CHOICE_MODE_REQUIRED),
        response_format=content_pb2.ResponseFormat(
            type=content_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT, json_schema=schema, schema_name="bad name"
        ),
    )
    assert await invalid(gateway, request) == [
        "tool_choice",
        "response_format.json_schema",
        "response_format.schema_name",
    ]
    missing = chat(
        "mock:echo",
        response_format=content_pb2.ResponseFormat(type=content_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA),
    )
    assert await invalid(gateway, missing) == ["response_format.json_schema"]


async def test_provider_options_must_name_a_configured_provider(gateway: RunningGateway) -> None:
    request = chat("mock:echo", provider_options={"nosuch": struct_pb2.Struct()})
    assert await invalid(gateway, request) == ["provider_options['nosuch']"]


async def test_json_fields_take_only_finite_numbers(gateway: RunningGateway) -> None:
    # A Struct number may be NaN or infinite, which JSON cannot carry: the provider would get a
    # body it cannot parse.
    def schema(number: float) -> struct_pb2.Struct:
        struct = struct_pb2.Struct()
        struct.update({"type": "object", "properties": {"n": {"type": "number", "maximum": number}}})
        return struct

    options = struct_pb2.Struct()
    options.update({"logit_bias": [1, {"x": float("-inf")}]})
    request = chat(
        "mock:echo",
        tools=[content_pb2.Tool(name="t", parameters=schema(float("inf")))],
        response_format=content_pb2.ResponseFormat(
            type=content_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA, json_schema=schema(float("nan"))
        ),
        provider_options={"mock": options},
    )
    assert await invalid(gateway, request) == [
        "tools[0].parameters",
        "response_format.json_schema",
        "provider_options['mock']",
    ]


async def test_max_cost_keeps_to_30_decimal_places(gateway: RunningGateway) -> None:
    # A finer budget is refused (see test_out_of_range_fields_are_named): written out in full in
    # BUDGET_EXCEEDED's metadata it outgrew gRPC's metadata limit, and the caller got no ErrorInfo.
    for budget in ("1000.000000000000000000000000000000000000", "0.30000000000000004"):
        await gateway.stub.Chat(chat("mock:echo", max_cost=budget), timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat("mock:echo", max_cost="1.5e-25"), timeout=5)
    details = error_details(caught.value)
    assert details.info.reason == "BUDGET_EXCEEDED"
    assert details.info.metadata["max_cost"] == "0.00000000000000000000000015"


@pytest.mark.parametrize(
    ("model", "why"),
    [
        ("nosuch:model", "unknown provider 'nosuch'"),
        ("mock:nosuch", "provider 'mock' has no model 'nosuch'"),
        ("openai:gpt-4o", "provider 'openai' is not enabled"),
        ("gpt-unknown", "unknown model or alias 'gpt-unknown'"),
    ],
)
async def test_unknown_models_are_not_found(gateway: RunningGateway, model: str, why: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat(model))
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.info.reason == "MODEL_NOT_FOUND"
    assert details.info.metadata["field"] == "model"
    assert details.info.metadata["model"] == model
    assert why in details.message


async def test_unknown_fallback_model_names_its_index(gateway: RunningGateway) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(chat("mock:echo", fallback_models=["mock:echo-large", "mock:nope"]))
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.info.metadata["field"] == "fallback_models[1]"


async def test_stream_errors_name_fields_under_request(gateway: RunningGateway) -> None:
    stream_request = chat_pb2.ChatStreamRequest(
        request=chat("mock:echo", generation=chat_pb2.GenerationConfig(temperature=7))
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in gateway.stub.ChatStream(stream_request):
            pass
    assert violated_fields(error_details(caught.value)) == ["request.generation.temperature"]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in gateway.stub.ChatStream(chat_pb2.ChatStreamRequest()):
            pass
    assert violated_fields(error_details(caught.value)) == ["request"]

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in gateway.stub.ChatStream(chat_pb2.ChatStreamRequest(request=chat("nosuch:model"))):
            pass
    details = error_details(caught.value)
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.info.metadata["field"] == "request.model"
    assert details.message.startswith("request.model:")


async def test_estimate_and_list_models_validate_their_own_fields(gateway: RunningGateway) -> None:
    bad = [
        (catalog_pb2.EstimateCostRequest(), ["request"]),
        (
            catalog_pb2.EstimateCostRequest(
                request=chat("mock:echo", generation=chat_pb2.GenerationConfig(top_p=2))
            ),
            ["request.generation.top_p"],
        ),
        (
            catalog_pb2.EstimateCostRequest(request=chat("mock:echo"), expected_output_tokens=-5),
            ["expected_output_tokens"],
        ),
    ]
    for request, fields in bad:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gateway.stub.EstimateCost(request)
        assert violated_fields(error_details(caught.value)) == fields

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.EstimateCost(
            catalog_pb2.EstimateCostRequest(request=chat("mock:echo"), candidate_models=["mock:echo", "x:y"])
        )
    assert error_details(caught.value).info.metadata["field"] == "candidate_models[1]"

    for list_request, field in [
        (catalog_pb2.ListModelsRequest(page_size=-1), "page_size"),
        (catalog_pb2.ListModelsRequest(page_size=1001), "page_size"),
        (catalog_pb2.ListModelsRequest(page_token="garbage!"), "page_token"),
        (catalog_pb2.ListModelsRequest(capabilities=[99]), "capabilities[0]"),  # type: ignore[list-item]
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gateway.stub.ListModels(list_request)
        assert violated_fields(error_details(caught.value)) == [field]


async def test_many_violations_are_reported_together(gateway: RunningGateway) -> None:
    request = chat_pb2.ChatRequest(
        model="mock:echo",
        generation=chat_pb2.GenerationConfig(temperature=9, top_p=3),
        max_cost="lots",
    )
    assert await invalid(gateway, request) == [
        "messages",
        "generation.temperature",
        "generation.top_p",
        "max_cost",
    ]


async def send_raw(gateway: RunningGateway, method: str, body: bytes) -> None:
    """Calls a GatewayService method with `body` as the request's bytes, as they are."""
    path = f"/llmgateway.v1.GatewayService/{method}"
    if method == "ChatStream":
        async for _ in gateway.channel.unary_stream(path, None, None)(body, timeout=5):
            pass
    else:
        await gateway.channel.unary_unary(path, None, None)(body, timeout=5)


@pytest.mark.parametrize("method", ["Chat", "ChatStream", "EstimateCost"])
@pytest.mark.parametrize(
    "body",
    [b"\xff\xff\xff\xff", b"\x0a\x02\xff\xfe"],  # a corrupt wire format; invalid UTF-8 in a string
    ids=["corrupt", "bad-utf8"],
)
async def test_a_body_that_is_not_a_protobuf_is_invalid_argument(
    gateway: RunningGateway, method: str, body: bytes
) -> None:
    """grpcio would answer UNKNOWN; the caller sent it, so it is INVALID_ARGUMENT with ErrorInfo."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await send_raw(gateway, method, body)
    details = error_details(caught.value)
    assert (details.code, details.info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNDECODABLE_REQUEST")
    assert details.info.metadata["request_id"]
