"""OpenAI-compatible servers as presets of one adapter, against the fake Chat Completions server:
each preset's quirks in the exact request sent, usage quirks in the reply, local servers free, and a
server configured from scratch. Also the OpenAI adapter's reasoning and unsupported-setting rules."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from llm_gateway.config import ConfigError, load_config
from llm_gateway.config.schema import COMPATIBLE_PRESETS, ChatCompletionsDialect
from llmgateway.v1 import accounting_pb2, chat_pb2, content_pb2
from tests.conftest import (
    OPENAI_TEST_KEY,
    RunningGateway,
    chat,
    error_details,
    running_gateway,
    violated_fields,
)
from tests.fakes.openai import FakeOpenAI, Reply, chunk, completion, tool_call, usage

LENIENT = chat_pb2.UNSUPPORTED_PARAMETER_POLICY_LENIENT


def preset_toml(name: str, preset: str, base_url: str, extra: str = "") -> str:
    return f"""
[providers.{name}]
kind = "openai_compatible"
preset = "{preset}"
base_url = "{base_url}"
api_key = "{OPENAI_TEST_KEY}"
enabled = true
{extra}
"""


@asynccontextmanager
async def preset_gateway(fake: FakeOpenAI, preset: str, extra: str = "") -> AsyncIterator[RunningGateway]:
    async with running_gateway(preset_toml(preset, preset, fake.base_url, extra)) as gw:
        yield gw


def with_tool(request: chat_pb2.ChatRequest) -> chat_pb2.ChatRequest:
    tool = request.tools.add(name="get_weather")
    tool.parameters.update({"type": "object", "properties": {"city": {"type": "string"}}})
    return request


async def test_mistral_gets_its_own_field_names(fake_openai: FakeOpenAI) -> None:
    async with preset_gateway(fake_openai, "mistral") as gw:
        request = with_tool(chat("mistral:mistral-small-latest", "Hi"))
        request.generation.max_tokens = 50
        request.generation.seed = 7
        request.tool_choice.mode = content_pb2.TOOL_CHOICE_MODE_REQUIRED
        await gw.stub.Chat(request)
        stream = gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=chat("mistral:mistral-small-latest")))
        events = [event async for event in stream]
    unary, streamed = fake_openai.requests
    assert unary.path == "/v1/chat/completions"
    assert unary.headers["authorization"] == f"Bearer {OPENAI_TEST_KEY}"
    assert {k: unary.body[k] for k in ("max_tokens", "random_seed", "tool_choice")} == {
        "max_tokens": 50,
        "random_seed": 7,
        "tool_choice": "any",
    }
    assert not {"max_completion_tokens", "seed"} & unary.body.keys()
    assert streamed.body["stream"] is True
    assert "stream_options" not in streamed.body
    # Mistral sends no usage chunk without stream_options: the gateway estimates and says so.
    assert events[-1].finish.usage.estimated


async def test_an_author_name_mistral_rejects_is_refused_or_dropped(fake_openai: FakeOpenAI) -> None:
    async with preset_gateway(fake_openai, "mistral") as gw:
        request = chat("mistral:mistral-small-latest", "Hi")
        request.messages[0].name = "ada"
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.stub.Chat(request)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert violated_fields(error_details(caught.value)) == ["messages[0].name"]
        assert fake_openai.requests == []

        request.unsupported_parameters = LENIENT
        reply = await gw.stub.Chat(request)
    assert list(reply.dropped_parameters) == ["messages[0].name"]
    assert "name" not in fake_openai.requests[0].body["messages"][0]


async def test_xai_reasoning_tokens_count_as_completion(fake_openai: FakeOpenAI) -> None:
    xai_usage = usage(10, 5, reasoning=20)  # xAI: completion_tokens excludes the 20 reasoning tokens
    fake_openai.script(Reply(json_body=completion("42", usage_=xai_usage)))
    async with preset_gateway(fake_openai, "xai") as gw:
        request = chat("xai:grok-3-mini", "Think")
        request.reasoning.effort = chat_pb2.REASONING_EFFORT_HIGH
        reply = await gw.stub.Chat(request)
        request.reasoning.effort = chat_pb2.REASONING_EFFORT_MEDIUM  # xAI takes low and high only
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.stub.Chat(request)
    assert fake_openai.requests[0].body["reasoning_effort"] == "high"
    assert (reply.usage.completion_tokens, reply.usage.reasoning_tokens) == (25, 20)
    assert violated_fields(error_details(caught.value)) == ["reasoning.effort"]
    assert "LOW, HIGH" in error_details(caught.value).message


async def test_deepseek_reads_text_only_and_reports_cache_hits_its_own_way(fake_openai: FakeOpenAI) -> None:
    deepseek_usage = {
        "prompt_tokens": 100,
        "completion_tokens": 5,
        "total_tokens": 105,
        "prompt_cache_hit_tokens": 60,
        "prompt_cache_miss_tokens": 40,
    }
    fake_openai.script(Reply(json_body=completion("ok", usage_=deepseek_usage)))
    async with preset_gateway(fake_openai, "deepseek") as gw:
        reply = await gw.stub.Chat(chat("deepseek:deepseek-chat", "Hi"))
        request = chat("deepseek:deepseek-chat", "What is this?")
        request.messages[0].content.add(image=content_pb2.Image(url="https://example.com/cat.png"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.stub.Chat(request)
        request.unsupported_parameters = LENIENT
        lenient = await gw.stub.Chat(request)
    assert (reply.usage.prompt_tokens, reply.usage.cache_read_tokens) == (100, 60)
    assert reply.cost.status == accounting_pb2.PRICING_STATUS_PRICED
    assert reply.cost.cached_input  # the 60 cache hits are priced at the cached rate
    assert violated_fields(error_details(caught.value)) == ["messages[0].content[1].image"]
    assert list(lenient.dropped_parameters) == ["messages[0].content[1].image"]
    assert fake_openai.requests[-1].body["messages"][0]["content"] == "What is this?"


async def test_openrouter_takes_reasoning_as_its_own_object(fake_openai: FakeOpenAI) -> None:
    async with preset_gateway(fake_openai, "openrouter") as gw:
        request = chat("openrouter:openai/gpt-4o-mini", "Hi")
        request.reasoning.budget_tokens = 2000
        await gw.stub.Chat(request)
        request.ClearField("reasoning")
        request.reasoning.effort = chat_pb2.REASONING_EFFORT_LOW
        request.generation.top_k = 40
        await gw.stub.Chat(request)
    first, second = fake_openai.requests
    assert first.body["reasoning"] == {"max_tokens": 2000}
    assert (second.body["reasoning"], second.body["top_k"]) == ({"effort": "low"}, 40)


async def test_groq_stream_usage_under_x_groq_is_read(fake_openai: FakeOpenAI) -> None:
    groq_usage = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    last = chunk({}, "stop")
    last["x_groq"] = {"id": "req_1", "usage": groq_usage}
    fake_openai.script(Reply(sse=[chunk({"role": "assistant", "content": "Hi"}), last, "[DONE]"]))
    async with preset_gateway(fake_openai, "groq") as gw:
        call = gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=chat("groq:llama-3.3-70b-versatile")))
        events = [event async for event in call]
    finish = events[-1].finish
    assert (finish.usage.prompt_tokens, finish.usage.completion_tokens, finish.usage.estimated) == (
        12,
        3,
        False,
    )
    assert fake_openai.requests[0].body["stream_options"] == {"include_usage": True}


async def test_a_local_server_needs_no_key_and_costs_nothing(fake_openai: FakeOpenAI) -> None:
    toml = f"""
[providers.vllm]
base_url = "{fake_openai.base_url}"
enabled = true
"""
    async with running_gateway(toml) as gw:
        request = chat("vllm:Qwen/Qwen3-8B", "Hi")
        request.generation.top_k = 20
        request.generation.max_tokens = 30
        reply = await gw.stub.Chat(request)
    sent = fake_openai.requests[0]
    assert "authorization" not in sent.headers
    assert (sent.body["top_k"], sent.body["max_tokens"]) == (20, 30)
    assert reply.cost.status == accounting_pb2.PRICING_STATUS_FREE
    assert reply.cost.total == "0"


async def test_another_compatible_server_is_a_config_entry(fake_openai: FakeOpenAI) -> None:
    toml = f"""
[providers.inhouse]
kind = "openai_compatible"
base_url = "{fake_openai.base_url}"
dialect = {{ max_tokens_field = "max_tokens", stream_usage = false, unsupported = ["seed"] }}
[providers.inhouse.models.llama]
name = "meta-llama/Llama-3.1-8B-Instruct"
capabilities = ["streaming", "tools"]
price = {{ input_per_million = "0.10", output_per_million = "0.20" }}
"""
    async with running_gateway(toml) as gw:
        request = chat("inhouse:llama", "Hi")
        request.generation.max_tokens = 9
        reply = await gw.stub.Chat(request)
        request.generation.seed = 1
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.stub.Chat(request)
    assert fake_openai.requests[0].body["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert fake_openai.requests[0].body["max_tokens"] == 9
    assert reply.cost.status == accounting_pb2.PRICING_STATUS_PRICED
    assert violated_fields(error_details(caught.value)) == ["generation.seed"]


def test_presets_are_checked_when_the_config_loads(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown preset 'mistrall'.*mistral"):
        load_config(None, {"LLM_GATEWAY__PROVIDERS__MISTRAL__PRESET": "mistrall"})
    config = tmp_path / "gateway.toml"
    config.write_text('[providers.inhouse]\nkind = "openai_compatible"\n')
    with pytest.raises(ConfigError, match="'base_url' is required without a preset"):
        load_config(config, {})


async def test_openai_reasoning_effort_and_what_it_cannot_take(
    fake_openai: FakeOpenAI, openai_gateway: RunningGateway
) -> None:
    gw = openai_gateway
    request = chat("openai:o4-mini", "Think")
    request.reasoning.effort = chat_pb2.REASONING_EFFORT_LOW
    await gw.stub.Chat(request)
    assert fake_openai.requests[0].body["reasoning_effort"] == "low"
    request.reasoning.budget_tokens = 4000  # beside a level: the level is used
    await gw.stub.Chat(request)
    assert fake_openai.requests[1].body["reasoning_effort"] == "low"
    request.reasoning.effort = chat_pb2.REASONING_EFFORT_UNSPECIFIED  # a budget alone: refused
    request.generation.top_k = 3
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gw.stub.Chat(request)
    assert violated_fields(error_details(caught.value)) == ["generation.top_k", "reasoning.budget_tokens"]
    request.unsupported_parameters = LENIENT
    stream = gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request))
    events = [event async for event in stream]
    assert not {"top_k", "reasoning"} & fake_openai.requests[-1].body.keys()
    assert list(events[-1].finish.dropped_parameters) == ["generation.top_k", "reasoning.budget_tokens"]


async def test_a_capability_the_catalog_denies_is_refused_or_dropped(gateway: RunningGateway) -> None:
    # mock:echo-free lists no vision, JSON output or reasoning.
    request = chat("mock:echo-free", "Describe")
    request.messages[0].content.add(image=content_pb2.Image(url="https://example.com/cat.png"))
    request.response_format.type = content_pb2.RESPONSE_FORMAT_TYPE_JSON_OBJECT
    request.reasoning.effort = chat_pb2.REASONING_EFFORT_LOW
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(request)
    details = error_details(caught.value)
    assert details.code is grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(details) == ["messages[0].content[1].image", "response_format", "reasoning"]
    request.unsupported_parameters = LENIENT
    reply = await gateway.stub.Chat(request)
    assert list(reply.dropped_parameters) == ["messages[0].content[1].image", "response_format", "reasoning"]
    assert reply.message.content[0].text == "Describe"  # plain text: the JSON format was dropped


def tool_call_chunks() -> list[dict[str, Any] | str]:
    """Two tool calls streamed as OpenAI does: id and name first, then argument pieces."""

    def call_delta(index: int, **fields: Any) -> dict[str, Any]:
        return chunk({"tool_calls": [{"index": index, **fields}]})

    return [
        chunk({"role": "assistant", "content": None}),
        call_delta(0, id="call_a", type="function", function={"name": "get_weather", "arguments": ""}),
        call_delta(0, function={"arguments": '{"city":'}),
        call_delta(0, function={"arguments": '"Paris"}'}),
        call_delta(
            1, id="call_b", type="function", function={"name": "get_weather", "arguments": '{"city":'}
        ),
        call_delta(1, function={"arguments": '"Rome"}'}),
        chunk({}, "tool_calls"),
        chunk(None, usage_=usage(40, 18)),
        "[DONE]",
    ]


PNG = b"\x89PNG\r\n\x1a\n"
SCHEMA: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "string"}}}


@pytest.mark.parametrize("preset", sorted(COMPATIBLE_PRESETS))
async def test_every_preset_translates_tools_images_and_json_schema(
    fake_openai: FakeOpenAI, preset: str
) -> None:
    """One request with a system prompt, an image, a tool and a JSON schema, unary and streamed,
    through each preset: the body the server gets, and the same tool calls back both ways."""
    fake_openai.script(
        Reply(
            json_body=completion(
                None,
                tool_calls=[
                    tool_call("call_a", "get_weather", '{"city":"Paris"}'),
                    tool_call("call_b", "get_weather", '{"city":"Rome"}'),
                ],
                finish_reason="tool_calls",
                usage_=usage(40, 18),
            )
        ),
        Reply(sse=tool_call_chunks()),
    )
    request = with_tool(chat(f"{preset}:some-model", "Weather here and in Rome?"))
    request.messages.insert(
        0, content_pb2.Message(role=content_pb2.ROLE_SYSTEM, content=[content_pb2.Part(text="Be brief.")])
    )
    request.messages[1].content.add(image=content_pb2.Image(data=PNG, mime_type="image/png"))
    request.response_format.type = content_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
    request.response_format.json_schema.update(SCHEMA)
    request.generation.max_tokens = 64
    request.unsupported_parameters = LENIENT
    async with preset_gateway(fake_openai, preset) as gw:
        unary = await gw.stub.Chat(request)
        events = [e async for e in gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request))]

    dialect = ChatCompletionsDialect(**COMPATIBLE_PRESETS[preset].get("dialect", {}))
    takes_images, takes_schema = "images" not in dialect.unsupported, "json_schema" not in dialect.unsupported
    expected_dropped = [
        *([] if takes_images else ["messages[1].content[1].image"]),
        *([] if takes_schema else ["response_format"]),
    ]
    assert list(unary.dropped_parameters) == expected_dropped
    assert list(events[-1].finish.dropped_parameters) == expected_dropped
    if preset == "deepseek":  # the one preset that reads text only and has no JSON schema mode
        assert expected_dropped == ["messages[1].content[1].image", "response_format"]

    sent, streamed = fake_openai.requests
    assert sent.body["model"] == streamed.body["model"] == "some-model"
    assert sent.body["messages"][0] == {"role": "system", "content": "Be brief."}
    user_content = sent.body["messages"][1]["content"]
    if takes_images:
        assert user_content[1] == {
            "type": "image_url",
            "image_url": {"url": "data:image/png;base64," + base64.b64encode(PNG).decode()},
        }
    else:
        assert user_content == "Weather here and in Rome?"
    assert sent.body["tools"][0]["function"]["name"] == "get_weather"
    assert sent.body[dialect.max_tokens_field] == 64
    if takes_schema and dialect.json_schema_format == "json_object_schema":
        assert sent.body["response_format"] == {"type": "json_object", "schema": SCHEMA}
    elif takes_schema:
        assert sent.body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert streamed.body["stream"] is True
    assert ("stream_options" in streamed.body) is dialect.stream_usage

    assert unary.finish_reason == events[-1].finish.finish_reason == chat_pb2.FINISH_REASON_TOOL_CALLS
    calls: dict[int, list[str]] = {}
    for event in events:
        if event.HasField("tool_call_delta"):
            piece = calls.setdefault(event.tool_call_delta.index, ["", "", ""])
            piece[0] += event.tool_call_delta.id
            piece[1] += event.tool_call_delta.name
            piece[2] += event.tool_call_delta.arguments
    assert [tuple(calls[i]) for i in sorted(calls)] == [
        (c.id, c.name, c.arguments) for c in unary.message.tool_calls
    ]
    assert len(unary.message.tool_calls) == 2


async def test_a_dry_run_refuses_what_the_call_would(gateway: RunningGateway) -> None:
    request = chat("mock:echo-free", "Describe", dry_run=True)
    request.messages[0].content.add(image=content_pb2.Image(url="https://example.com/cat.png"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.Chat(request)
    assert violated_fields(error_details(caught.value)) == ["messages[0].content[1].image"]
    request.unsupported_parameters = LENIENT
    reply = await gateway.stub.Chat(request)
    assert reply.dry_run
    assert list(reply.dropped_parameters) == ["messages[0].content[1].image"]
