"""What a new user meets first: ListModels filtered to a provider that cannot list anything, the
mock's tool-call arguments, and the API docs that reflection serves."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import descriptor_pb2, struct_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llm_gateway.server.reflection import documented_files
from llmgateway.v1 import catalog_pb2, content_pb2
from tests.conftest import RunningGateway, chat, error_details, running_gateway


async def test_list_models_of_a_disabled_provider_says_how_to_enable_it(gateway: RunningGateway) -> None:
    # ollama is configured by the embedded defaults but off; openai is off without its key.
    for provider in ("ollama", "openai"):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gateway.stub.ListModels(catalog_pb2.ListModelsRequest(provider=provider), timeout=5)
        err = error_details(caught.value)
        assert (err.code, err.info.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PROVIDER_DISABLED")
        assert dict(err.info.metadata) == {
            "field": "provider",
            "provider": provider,
            "request_id": err.info.metadata["request_id"],
        }
        assert f"providers.{provider}.enabled = true" in err.message
        assert f"LLM_GATEWAY__PROVIDERS__{provider.upper()}__ENABLED=true" in err.message
        assert "API key" in err.message


async def test_list_models_of_an_unknown_provider_is_invalid(gateway: RunningGateway) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.ListModels(catalog_pb2.ListModelsRequest(provider="nosuch"), timeout=5)
    err = error_details(caught.value)
    assert (err.code, err.info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_REQUEST")
    assert err.bad_request is not None
    [violation] = err.bad_request.field_violations
    assert violation.field == "provider"
    assert "unknown provider 'nosuch'" in violation.description
    # It names the configured providers.
    assert "mock" in violation.description
    assert "ollama" in violation.description


async def test_list_models_of_an_enabled_provider_lists_it() -> None:
    async with running_gateway("[providers.ollama]\nenabled = true\n") as gw:
        reply = await gw.stub.ListModels(catalog_pb2.ListModelsRequest(provider="mock"), timeout=5)
        assert [m.id for m in reply.models] == ["mock:echo", "mock:echo-free", "mock:echo-large"]
        # Enabled with no models listed in its config: an empty list, not an error.
        ollama = await gw.stub.ListModels(catalog_pb2.ListModelsRequest(provider="ollama"), timeout=5)
        assert (list(ollama.models), ollama.total_size) == ([], 0)


@pytest.mark.parametrize(
    ("question", "city"),
    [
        ("What is the weather in Paris?", "Paris"),
        ("What is the weather in New York today?", "New York"),
        ("Is it cold in Oslo?", "Oslo"),
        ("Oslo or Bergen: which is colder?", "Bergen"),  # a sentence's first word is no name
        ("Should I pack for Rome, or should I stay?", "Rome"),  # nor is "I"
        ('Use get_weather for "Rio de Janeiro", not Lima', "Rio de Janeiro"),  # a quote wins
        ("Hi. Is it hot in São Paulo?", "São Paulo"),
        ("what about it", "what about it"),  # nothing named: the whole text
    ],
)
async def test_the_mock_fills_a_string_argument_with_what_the_user_names(
    gateway: RunningGateway, question: str, city: str
) -> None:
    schema = struct_pb2.Struct()
    schema.update(
        {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        }
    )
    request = chat(
        "mock:echo",
        question,
        tools=[content_pb2.Tool(name="get_weather", parameters=schema)],
        tool_choice=content_pb2.ToolChoice(mode=content_pb2.TOOL_CHOICE_MODE_REQUIRED),
    )
    first, again = [await gateway.stub.Chat(request, timeout=5) for _ in range(2)]
    [call] = first.message.tool_calls
    assert json.loads(call.arguments) == {"city": city, "days": 0}
    assert again.message.tool_calls == first.message.tool_calls  # deterministic, id included


def test_the_descriptor_set_declares_what_the_generated_code_does() -> None:
    # Reflection attaches the set's comments to the runtime's descriptors only where the two
    # match; a stale set would serve the contract without its docs (`make generate` fixes it).
    from llm_gateway.server.reflection import _with_comments

    files = documented_files().file
    assert {f.name for f in files} >= {"llmgateway/v1/gateway_service.proto", "llmgateway/v1/chat.proto"}
    for file in files:
        assert file.source_code_info.location, f"{file.name} has no comments"
        served = _with_comments(file)
        assert served is not None, f"{file.name} differs from the generated code: run make generate"
        assert served.source_code_info == file.source_code_info


async def test_reflection_serves_the_contract_with_its_comments(gateway: RunningGateway) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(gateway.channel)
    asks = [
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="llmgateway.v1.GatewayService.Chat"),
        reflection_pb2.ServerReflectionRequest(file_by_filename="llmgateway/v1/chat.proto"),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health"),
    ]
    answers = [a async for a in stub.ServerReflectionInfo(iter(asks))]
    files = [
        {
            f.name: f
            for f in map(
                descriptor_pb2.FileDescriptorProto.FromString,
                a.file_descriptor_response.file_descriptor_proto,
            )
        }
        for a in answers
    ]
    service = files[0]["llmgateway/v1/gateway_service.proto"]
    comments = [loc.leading_comments for loc in service.source_code_info.location]
    assert " Runs a chat completion and returns the whole reply.\n" in comments
    # The file's imports come along, the contract's with their comments too.
    assert files[0]["llmgateway/v1/chat.proto"].source_code_info.location
    assert "google/protobuf/struct.proto" in files[0]
    # Field names stay as the runtime has them: no json_name, so grpcurl prints snake_case.
    chat_file = files[1]["llmgateway/v1/chat.proto"]
    assert chat_file.source_code_info.location
    assert not any(f.HasField("json_name") for m in chat_file.message_type for f in m.field)
    # Everything else is grpcio-reflection's answer.
    assert "grpc_health/v1/health.proto" in files[2]
