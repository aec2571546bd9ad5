"""llama.cpp's and llama-cpp-python's servers through the gateway, against fakes of each: their
request quirks as dialect data, and token counts by the server that runs the model (EstimateCost,
streams without usage), falling back to the approximation, never failing or stalling a call."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from llm_gateway.config import ConfigError, load_config
from llm_gateway.tokens import server as token_server
from llmgateway.v1 import catalog_pb2, chat_pb2, content_pb2
from tests.conftest import RunningGateway, chat, running_gateway, text_message
from tests.fakes.llamacpp import FakeLlamaCppPython, FakeLlamaServer, count, prompt_tokens, render
from tests.fakes.openai import Reply, text_chunks

PROVIDER = catalog_pb2.TOKEN_COUNT_METHOD_PROVIDER
APPROXIMATE = catalog_pb2.TOKEN_COUNT_METHOD_APPROXIMATE
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
}
DIGITS = "31415926535897932384"  # 20 tokens to a tokenizer that splits digits, 5 by characters / 4


def local_toml(name: str, preset: str, base_url: str, extra: str = "") -> str:
    return f"""
[providers.{name}]
kind = "openai_compatible"
preset = "{preset}"
base_url = "{base_url}"
enabled = true
retry = {{ max_retries = 0 }}
{extra}
"""


def tool_history(model: str) -> chat_pb2.ChatRequest:
    """A call after a tool round: the assistant's tool call (no text) and the tool's result."""
    request = chat(model, "Weather in Paris?")
    tool = request.tools.add(name="get_weather", description="Weather for a city")
    tool.parameters.update({"type": "object", "properties": {"city": {"type": "string"}}})
    call = content_pb2.Message(role=content_pb2.ROLE_ASSISTANT)
    call.tool_calls.add(id="call_1", name="get_weather", arguments='{"city":"Paris"}')
    result = text_message(content_pb2.ROLE_TOOL, '{"temp_c":18}')
    result.tool_call_id = "call_1"
    request.messages.extend([call, result])
    return request


async def stream(gw: RunningGateway, request: chat_pb2.ChatRequest) -> list[chat_pb2.ChatStreamResponse]:
    return [event async for event in gw.stub.ChatStream(chat_pb2.ChatStreamRequest(request=request))]


async def estimate(gw: RunningGateway, request: chat_pb2.ChatRequest) -> catalog_pb2.CostEstimate:
    reply = await gw.stub.EstimateCost(catalog_pb2.EstimateCostRequest(request=request))
    (only,) = reply.estimates
    return only


async def test_a_tool_calling_history_is_accepted_by_llama_cpp_python(
    llama_cpp_python: FakeLlamaCppPython,
) -> None:
    toml = local_toml("llama_cpp_python", "llama_cpp_python", llama_cpp_python.base_url)
    # The same server under OpenAI's own form of an empty assistant turn, `"content": null`.
    toml += local_toml(
        "as_openai",
        "llama_cpp_python",
        llama_cpp_python.base_url,
        'dialect = { empty_assistant_content = "null" }',
    )
    async with running_gateway(toml) as gw:
        reply = await gw.stub.Chat(tool_history("llama_cpp_python:qwen2.5-0.5b"))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await gw.stub.Chat(tool_history("as_openai:qwen2.5-0.5b"))
    accepted, refused = llama_cpp_python.requests
    assert accepted.body["messages"][1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }
    assert accepted.body["messages"][2] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": '{"temp_c":18}',
    }
    assert reply.message.content[0].text == "Weather in Paris?"
    assert refused.body["messages"][1]["content"] is None
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE  # the server's HTTP 500


async def test_json_schema_output_reaches_each_server_in_its_own_shape(
    llama_cpp_python: FakeLlamaCppPython, llama_server: FakeLlamaServer
) -> None:
    toml = local_toml("llama_cpp_python", "llama_cpp_python", llama_cpp_python.base_url)
    toml += local_toml("llamacpp", "llamacpp", llama_server.base_url)
    async with running_gateway(toml) as gw:
        for model in ("llama_cpp_python:qwen2.5-0.5b", "llamacpp:qwen2.5-0.5b"):
            request = chat(model, "Answer in JSON")
            request.response_format.type = content_pb2.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
            request.response_format.schema_name = "answer"
            request.response_format.json_schema.update(SCHEMA)
            await gw.stub.Chat(request)
    # llama-cpp-python takes response_format types "text" and "json_object" (with a schema) only.
    assert llama_cpp_python.requests[0].body["response_format"] == {"type": "json_object", "schema": SCHEMA}
    assert llama_server.requests[0].body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SCHEMA},
    }


async def test_estimate_cost_is_the_llama_cpp_servers_own_count(llama_server: FakeLlamaServer) -> None:
    toml = local_toml("llamacpp", "llamacpp", llama_server.base_url, 'api_key = "local-server-key-0123"')
    # The same server without its tokenize endpoint: the gateway's approximation.
    toml += local_toml("uncounted", "llamacpp", llama_server.base_url, 'dialect = { tokenize = "none" }')
    async with running_gateway(toml) as gw:
        counted = await estimate(gw, tool_history("llamacpp:qwen2.5-0.5b"))
        approximated = await estimate(gw, tool_history("uncounted:qwen2.5-0.5b"))
        reply = await gw.stub.Chat(tool_history("llamacpp:qwen2.5-0.5b"))
    assert counted.token_count_method == PROVIDER
    assert approximated.token_count_method == APPROXIMATE
    # The estimate is the prompt the server then counted for the call, template and tools included.
    assert counted.prompt_tokens == reply.usage.prompt_tokens == prompt_tokens(llama_server.requests[0].body)
    assert approximated.prompt_tokens != counted.prompt_tokens
    template, tokenize = llama_server.count_requests[:2]
    assert (template.path, tokenize.path) == ("/apply-template", "/tokenize")
    assert template.body["messages"][1]["content"] is None  # llama.cpp takes OpenAI's null
    assert template.body["tools"][0]["function"]["name"] == "get_weather"
    assert tokenize.body == {
        "model": "qwen2.5-0.5b",
        "content": render(template.body),
        "add_special": True,
        "parse_special": True,
    }
    assert tokenize.headers["authorization"] == "Bearer local-server-key-0123"


async def test_an_image_is_approximated_beside_the_servers_count(llama_server: FakeLlamaServer) -> None:
    async with running_gateway(local_toml("llamacpp", "llamacpp", llama_server.base_url)) as gw:
        request = chat("llamacpp:qwen2.5-vl", "What is this?")
        request.messages[0].content.add(
            image=content_pb2.Image(data=b"\x89PNG\r\n\x1a\n", mime_type="image/png")
        )
        with_image = await estimate(gw, request)
        text_only = await estimate(gw, chat("llamacpp:qwen2.5-vl", "What is this?"))
    # The server renders and counts the text; the image, which it could not take without its vision
    # projector, is counted as the approximation counts one (85 tokens).
    assert [r.body["messages"] for r in llama_server.count_requests if r.path == "/apply-template"] == [
        [{"role": "user", "content": "What is this?"}]
    ] * 2
    assert with_image.prompt_tokens == text_only.prompt_tokens + 85
    assert with_image.token_count_method == PROVIDER


async def test_a_llama_cpp_stream_without_usage_is_counted_by_the_server(
    llama_server: FakeLlamaServer,
) -> None:
    llama_server.script(Reply(sse=text_chunks(["31415", "92653", "58979", "32384"], None)))
    async with running_gateway(local_toml("llamacpp", "llamacpp", llama_server.base_url)) as gw:
        events = await stream(gw, chat("llamacpp:qwen2.5-0.5b", "Twenty digits of pi, digits only"))
    usage = events[-1].finish.usage
    sent = llama_server.requests[0].body
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt_tokens(sent), 20)
    assert usage.estimated  # the gateway's count, not the provider's report
    assert [r.path for r in llama_server.count_requests] == ["/apply-template", "/tokenize", "/tokenize"]
    assert llama_server.count_requests[2].body["content"] == DIGITS


async def test_a_llama_cpp_python_stream_is_counted_by_its_tokenizer(
    llama_cpp_python: FakeLlamaCppPython,
) -> None:
    async with running_gateway(
        local_toml("llama_cpp_python", "llama_cpp_python", llama_cpp_python.base_url)
    ) as gw:
        request = chat("llama_cpp_python:qwen2.5-0.5b", DIGITS)
        estimated = await estimate(gw, request)
        events = await stream(gw, request)
        unary = await gw.stub.Chat(request)
    usage = events[-1].finish.usage
    assert "stream_options" not in llama_cpp_python.requests[0].body  # it takes none, sends no usage
    # The answer, the digits echoed: a token per digit, where 20 characters / 4 would say 5.
    assert (usage.completion_tokens, usage.estimated) == (20, True)
    # The prompt's text through the server's tokenizer (with its BOS), each message's framing
    # approximated: 3 to prime the reply and 4 per message.
    assert usage.prompt_tokens == estimated.prompt_tokens == count(DIGITS, add_special=True) + 3 + 4
    assert estimated.token_count_method == PROVIDER
    # Within a token of what the server reports for the rendered prompt; characters / 4 give 12.
    assert abs(usage.prompt_tokens - unary.usage.prompt_tokens) <= 1
    inputs = [(r.path, r.body["input"]) for r in llama_cpp_python.count_requests]
    assert inputs == [
        ("/extras/tokenize/count", DIGITS),  # the prompt, counted once for the estimate
        ("/extras/tokenize/count", DIGITS),  # and once for the stream
        ("/extras/tokenize/count", ""),  # the tokens it adds to any input (a BOS), learnt once
        ("/extras/tokenize/count", DIGITS),  # the answer
    ]


async def test_a_failing_tokenize_falls_back_to_the_approximation(
    llama_cpp_python: FakeLlamaCppPython, log_lines: list[str]
) -> None:
    llama_cpp_python.count_status = 500
    async with running_gateway(
        local_toml("llama_cpp_python", "llama_cpp_python", llama_cpp_python.base_url)
    ) as gw:
        request = chat("llama_cpp_python:qwen2.5-0.5b", DIGITS)
        estimated = await estimate(gw, request)
        events = await stream(gw, request)
    usage = events[-1].finish.usage
    approximate = math.ceil(len(DIGITS) / 4)
    assert (estimated.token_count_method, estimated.prompt_tokens) == (APPROXIMATE, 3 + 4 + approximate)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.estimated) == (
        3 + 4 + approximate,
        approximate,
        True,
    )
    assert events[-1].finish.finish_reason == chat_pb2.FINISH_REASON_STOP
    # Asked once; after a failure the server is left alone for a while rather than once per call.
    assert len(llama_cpp_python.count_requests) == 1
    warnings = [json.loads(line) for line in log_lines if '"llm_gateway.tokens"' in line]
    assert len(warnings) == 1
    assert "failed" in warnings[0]["msg"]


async def test_a_hanging_tokenize_does_not_stall_the_call(
    llama_server: FakeLlamaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(token_server, "TIMEOUT", 0.2)
    llama_server.count_delay = 10
    async with running_gateway(local_toml("llamacpp", "llamacpp", llama_server.base_url)) as gw:
        started = time.monotonic()
        estimated = await estimate(gw, chat("llamacpp:qwen2.5-0.5b", DIGITS))
        elapsed = time.monotonic() - started
        assert await llama_server.disconnected(within=2.0) is not None  # the count was given up
    assert estimated.token_count_method == APPROXIMATE
    assert elapsed < 1.5


async def test_a_model_can_opt_out_of_server_counting(llama_server: FakeLlamaServer) -> None:
    extra = '[providers.llamacpp.models.tiny]\nname = "tiny.gguf"\ntokenizer = "approximate"\n'
    async with running_gateway(local_toml("llamacpp", "llamacpp", llama_server.base_url, extra)) as gw:
        opted_out = await estimate(gw, chat("llamacpp:tiny", DIGITS))
        counted = await estimate(gw, chat("llamacpp:other.gguf", DIGITS))
    assert (opted_out.token_count_method, counted.token_count_method) == (APPROXIMATE, PROVIDER)
    assert all(r.body["model"] == "other.gguf" for r in llama_server.count_requests)


def test_a_server_tokenizer_needs_a_server_that_counts(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[providers.vllm.models.m]\ntokenizer = "server"\n')
    with pytest.raises(ConfigError, match="tokenizer 'server' needs a dialect whose 'tokenize'"):
        load_config(config, {})
    config.write_text(
        '[providers.vllm]\ndialect = { tokenize = "llama_cpp" }\n'
        '[providers.vllm.models.m]\ntokenizer = "server"\n'
    )
    assert load_config(config, {}).providers["vllm"].models["m"].tokenizer == "server"
