"""EstimateCost, ListModels (AIP-158 pages), the health service and server reflection."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llm_gateway.server.reflection import V1_SERVICE, _v1_messages
from llmgateway.v1 import accounting_pb2, catalog_pb2, chat_pb2, content_pb2
from tests.conftest import RunningGateway, chat, running_gateway, text_message, user

MOCK_MODELS = ["mock:echo", "mock:echo-free", "mock:echo-large"]


async def test_estimate_ranks_candidates_cheapest_first(gateway: RunningGateway) -> None:
    request = catalog_pb2.EstimateCostRequest(
        request=chat("mock:echo", "How much would this cost?"),
        expected_output_tokens=100,
        candidate_models=["mock:echo-large", "mock:echo", "mock:echo-free"],
    )
    reply = await gateway.stub.EstimateCost(request)
    assert [e.model for e in reply.estimates] == ["mock:echo-free", "mock:echo", "mock:echo-large"]
    free, small, large = reply.estimates
    assert free.expected_cost.status == accounting_pb2.PRICING_STATUS_FREE
    for estimate in reply.estimates:
        assert estimate.token_count_method == catalog_pb2.TOKEN_COUNT_METHOD_APPROXIMATE
        assert estimate.prompt_tokens == small.prompt_tokens > 0
        assert estimate.expected_output_tokens == 100
        assert estimate.fits_context_window
        assert estimate.within_budget
        assert estimate.expected_cost.estimated
    # Worst case is the model's maximum output when the request sets no max_tokens.
    assert (small.worst_case_output_tokens, large.worst_case_output_tokens) == (16384, 32768)
    prompt = Decimal(small.prompt_tokens)
    assert Decimal(small.expected_cost.total) == (prompt * Decimal("0.15") + 100 * Decimal("0.60")) / 10**6
    assert Decimal(large.worst_case_cost.total) == (prompt * Decimal("2.5") + 32768 * Decimal("10")) / 10**6


async def test_estimate_defaults_to_the_request_model_and_checks_budget(gateway: RunningGateway) -> None:
    request = chat("mock:echo-large", generation=chat_pb2.GenerationConfig(max_tokens=50), max_cost="0.0001")
    reply = await gateway.stub.EstimateCost(catalog_pb2.EstimateCostRequest(request=request))
    [estimate] = reply.estimates
    assert estimate.model == "mock:echo-large"
    assert (estimate.expected_output_tokens, estimate.worst_case_output_tokens) == (50, 50)
    assert estimate.expected_cost.total == estimate.worst_case_cost.total
    assert Decimal(estimate.worst_case_cost.total) > Decimal("0.0001")
    assert not estimate.within_budget


async def test_estimate_auto_compares_every_auto_candidate() -> None:
    async with running_gateway('[routing]\nauto = ["mock:echo-large", "mock:echo"]\n') as gw:
        reply = await gw.stub.EstimateCost(catalog_pb2.EstimateCostRequest(request=chat("auto")))
        assert [e.model for e in reply.estimates] == ["mock:echo", "mock:echo-large"]


async def test_estimate_counts_openai_models_exactly_and_says_which_method() -> None:
    """gpt-4o-mini is counted with OpenAI's o200k_base encoding (exact), Claude by the
    approximation; a configured `tokenizer` makes a compatible server's model exact too."""
    toml = """
[providers.openai]
api_key = "sk-not-used-in-this-test-0000"

[providers.anthropic]
api_key = "sk-ant-not-used-in-this-test"

[providers.local]
kind = "openai_compatible"
base_url = "http://127.0.0.1:9"
models.gpt-4o-copy = { tokenizer = "o200k_base" }
"""
    async with running_gateway(toml) as gw:
        request = catalog_pb2.EstimateCostRequest(
            # system "Be brief." and user "Hi!": 3 priming + (3 + 1 + 3) + (3 + 1 + 2) = 16 tokens.
            request=chat_pb2.ChatRequest(
                model="openai:gpt-4o-mini",
                messages=[text_message(content_pb2.ROLE_SYSTEM, "Be brief."), user("Hi!")],
            ),
            candidate_models=["openai:gpt-4o-mini", "anthropic:claude-haiku-4-5", "local:gpt-4o-copy"],
        )
        reply = await gw.stub.EstimateCost(request)
        by_model = {e.model: e for e in reply.estimates}
        for model in ("openai:gpt-4o-mini", "local:gpt-4o-copy"):
            assert by_model[model].token_count_method == catalog_pb2.TOKEN_COUNT_METHOD_EXACT
            assert by_model[model].prompt_tokens == 16
        claude = by_model["anthropic:claude-haiku-4-5"]
        assert claude.token_count_method == catalog_pb2.TOKEN_COUNT_METHOD_APPROXIMATE
        # 3 priming + 4 framing per message + ceil(9 / 4) + ceil(3 / 4).
        assert claude.prompt_tokens == 3 + (4 + 3) + (4 + 1)


async def test_list_models_pages_through_everything_once(gateway: RunningGateway) -> None:
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await gateway.stub.ListModels(catalog_pb2.ListModelsRequest(page_size=1, page_token=token))
        pages += 1
        assert page.total_size == 3
        seen += [m.id for m in page.models]
        token = page.next_page_token
        if not token:
            break
    assert seen == MOCK_MODELS
    assert pages == 3

    first = (await gateway.stub.ListModels(catalog_pb2.ListModelsRequest(page_size=2))).models[0]
    assert (first.id, first.provider, first.name) == ("mock:echo", "mock", "echo")
    assert (first.context_window, first.max_output_tokens) == (128000, 16384)
    assert catalog_pb2.CAPABILITY_TOOLS in first.capabilities
    assert (first.pricing.input_per_million, first.pricing.output_per_million) == ("0.15", "0.6")
    assert first.pricing.cached_input_per_million == "0.075"
    assert first.pricing.billing_model == catalog_pb2.BILLING_MODEL_PER_TOKEN
    assert first.state.circuit_state == catalog_pb2.CIRCUIT_STATE_CLOSED


async def test_list_models_filters_and_rejects_tokens_of_other_filters() -> None:
    async with running_gateway('[aliases]\ncheap = "mock:echo"\n') as gw:
        reasoning = await gw.stub.ListModels(
            catalog_pb2.ListModelsRequest(capabilities=[catalog_pb2.CAPABILITY_REASONING])
        )
        assert [m.id for m in reasoning.models] == ["mock:echo-large"]
        mocks = await gw.stub.ListModels(catalog_pb2.ListModelsRequest(provider="mock", page_size=1))
        assert mocks.models[0].aliases == ["cheap"]
        # A page token only works with the filters it was issued for.
        other_filters = catalog_pb2.ListModelsRequest(provider="openai", page_token=mocks.next_page_token)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.stub.ListModels(other_filters)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_openai_models_are_listed_with_catalog_prices_when_enabled() -> None:
    toml = '[providers.openai]\napi_key = "sk-not-used-in-this-test-0000"\n'
    async with running_gateway(toml) as gw:
        reply = await gw.stub.ListModels(catalog_pb2.ListModelsRequest(provider="openai", page_size=100))
        models = {m.id: m for m in reply.models}
        mini = models["openai:gpt-4o-mini"]
        # OpenAI's published gpt-4o-mini prices: $0.15 input, $0.075 cached input, $0.60 output.
        assert (mini.pricing.input_per_million, mini.pricing.cached_input_per_million) == ("0.15", "0.075")
        assert mini.pricing.output_per_million == "0.6"
        assert mini.pricing.price_source.startswith("genai-prices ")
        assert catalog_pb2.CAPABILITY_REASONING in models["openai:o4-mini"].capabilities


async def test_health_check_and_watch_follow_draining() -> None:
    async with running_gateway() as gw:
        health = health_pb2_grpc.HealthStub(gw.channel)
        for service in ("", "llmgateway.v1.GatewayService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await health.Check(health_pb2.HealthCheckRequest(service="nosuch"))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND

        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        await gw.server.health.enter_graceful_shutdown()
        second = await asyncio.wait_for(watch.read(), timeout=5)
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
        reply = await health.Check(health_pb2.HealthCheckRequest(service="llmgateway.v1.GatewayService"))
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_v1alpha_and_v1(gateway: RunningGateway) -> None:
    v1alpha = reflection_pb2_grpc.ServerReflectionStub(gateway.channel)
    listing = [
        r
        async for r in v1alpha.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
    ]
    names = {s.name for s in listing[0].list_services_response.service}
    assert names == {
        "llmgateway.v1.GatewayService",
        "llmgateway.v1.UsageService",
        "llmgateway.v1.BudgetService",
        "llmgateway.v1.BatchService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        V1_SERVICE,
    }

    v1_request, v1_response = _v1_messages()
    method = gateway.channel.stream_stream(
        f"/{V1_SERVICE}/ServerReflectionInfo",
        request_serializer=v1_request.SerializeToString,
        response_deserializer=v1_response.FromString,
    )
    asks = [v1_request(list_services=""), v1_request(file_containing_symbol="llmgateway.v1.GatewayService")]
    answers = [r async for r in method(iter(asks))]
    assert {s.name for s in answers[0].list_services_response.service} == names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in answers[1].file_descriptor_response.file_descriptor_proto
    ]
    service_file = next(f for f in files if f.name == "llmgateway/v1/gateway_service.proto")
    assert [m.name for m in service_file.service[0].method] == [
        "Chat",
        "ChatStream",
        "EstimateCost",
        "ListModels",
    ]


async def test_list_models_reports_observed_latency_of_recent_calls() -> None:
    async with running_gateway("[providers.mock]\nchunk_delay = 0.05\n") as gw:

        async def state(model: str) -> catalog_pb2.ModelState:
            reply = await gw.stub.ListModels(catalog_pb2.ListModelsRequest(provider="mock"))
            return {m.id: m for m in reply.models}[model].state

        before = await state("mock:echo")
        assert before.recent_calls == 0
        assert not before.HasField("latency_p50")
        assert not before.HasField("time_to_first_token_p50")

        for _ in range(3):
            await gw.stub.Chat(chat("mock:echo"))
        async for _ in gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=chat("mock:echo"))):
            pass
        after = await state("mock:echo")
        assert after.recent_calls == 4
        assert after.HasField("latency_p50")
        # The mock waits chunk_delay before each streamed chunk, the first one included.
        assert after.time_to_first_token_p50.ToTimedelta().total_seconds() >= 0.05
        assert after.circuit_state == catalog_pb2.CIRCUIT_STATE_CLOSED
        # Other models keep their own windows.
        assert (await state("mock:echo-large")).recent_calls == 0


async def test_list_models_shows_each_providers_cost_capabilities() -> None:
    toml = """
[providers.openai]
api_key = "sk-not-used-in-this-test-0000"

[providers.local]
kind = "ollama"
enabled = true
models.llama = {}

[providers.search]
kind = "openai_compatible"
base_url = "http://127.0.0.1:9"
models.answer = { price = { input_per_million = "1", output_per_million = "1", per_request = "0.005" } }

[providers.lookup]
kind = "openai_compatible"
base_url = "http://127.0.0.1:9"
models.lookup = { price = { per_request = "0.001" } }
"""
    async with running_gateway(toml) as gw:
        reply = await gw.stub.ListModels(catalog_pb2.ListModelsRequest(page_size=1000))
        by_provider = {m.provider: m.cost_capabilities for m in reply.models}
        got = {
            provider: (c.tracks_tokens, c.token_caching, c.request_fees, c.billing_model)
            for provider, c in by_provider.items()
        }
        assert got == {
            "openai": (True, True, False, catalog_pb2.BILLING_MODEL_PER_TOKEN),
            "mock": (True, False, False, catalog_pb2.BILLING_MODEL_PER_TOKEN),
            "local": (True, False, False, catalog_pb2.BILLING_MODEL_FREE),
            "search": (True, False, True, catalog_pb2.BILLING_MODEL_HYBRID),
            "lookup": (True, False, True, catalog_pb2.BILLING_MODEL_PER_REQUEST),
        }
