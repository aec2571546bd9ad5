"""The HTTP door's Anthropic Messages API through the official `anthropic` SDK: unary and streamed
replies, tools (a model behind another provider answering in Anthropic's blocks), count_tokens,
`x-api-key` auth, and errors in Anthropic's shape."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import anthropic
import pytest

from tests.conftest import RunningGateway, openai_toml, running_gateway
from tests.fakes import anthropic as claude
from tests.fakes import gemini
from tests.fakes.anthropic import FakeAnthropic
from tests.fakes.gemini import FakeGemini
from tests.fakes.openai import FakeOpenAI, Reply, chunk, completion, tool_call, usage

KEY = "anthropic-door-key-0123456789"
KEYS = f"""
[[auth.keys]]
name = "claude-code"
key = "{KEY}"
"""


def client_for(gw: RunningGateway, key: str = KEY) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gw.http_url, api_key=key, max_retries=0)


@pytest.fixture
async def gw() -> AsyncIterator[RunningGateway]:
    async with running_gateway(KEYS) as running:
        yield running


async def test_a_message_and_a_stream_from_the_mock(gw: RunningGateway) -> None:
    client = client_for(gw)
    reply = await client.messages.create(
        model="mock:echo",
        max_tokens=100,
        system="You echo.",
        stop_sequences=["never said"],
        # JSON fractions: read as decimals, taken as numbers.
        extra_body={"temperature": 0.5, "top_p": 0.9},
        messages=[{"role": "user", "content": "Hello Claude"}],
    )
    assert reply.type == "message"
    assert reply.model == "mock:echo"
    assert [(b.type, getattr(b, "text", None)) for b in reply.content] == [("text", "Hello Claude")]
    assert reply.stop_reason == "end_turn"
    assert reply.usage.output_tokens > 0
    assert reply.usage.input_tokens > 0
    assert json.loads(reply.model_dump_json())["cost"]["total_cost"]

    async with client.messages.stream(
        model="mock:echo", max_tokens=100, messages=[{"role": "user", "content": "one two three"}]
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "one two three"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    assert final.usage.input_tokens > 0

    counted = await client.messages.count_tokens(
        model="mock:echo", messages=[{"role": "user", "content": "Hello Claude"}]
    )
    assert counted.input_tokens > 0


async def test_tools_from_a_model_behind_another_provider(fake_openai: FakeOpenAI) -> None:
    async with running_gateway(KEYS + openai_toml(fake_openai.base_url)) as gw:
        client = client_for(gw)
        fake_openai.script(
            Reply(
                json_body=completion(
                    None,
                    tool_calls=[tool_call("call_7", "get_weather", '{"city": "Paris"}')],
                    finish_reason="tool_calls",
                    usage_=usage(20, 9),
                )
            )
        )
        tools: list[anthropic.types.ToolParam] = [
            {
                "name": "get_weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            }
        ]
        reply = await client.messages.create(
            model="openai:gpt-4o-mini",
            max_tokens=200,
            tools=tools,
            tool_choice={"type": "any"},
            messages=[{"role": "user", "content": "Weather in Paris?"}],
        )
        assert reply.stop_reason == "tool_use"
        (block,) = reply.content
        assert isinstance(block, anthropic.types.ToolUseBlock)
        assert (block.id, block.name, block.input) == ("call_7", "get_weather", {"city": "Paris"})
        sent = fake_openai.requests[-1].body
        assert sent["tool_choice"] == "required"
        assert sent["tools"][0]["function"]["name"] == "get_weather"

        # The tool's result goes back as a tool message; the next answer streams.
        fake_openai.script(
            Reply(
                sse=[
                    chunk({"role": "assistant", "content": ""}),
                    chunk({"content": "Sunny"}),
                    chunk({}, "stop"),
                    chunk(None, usage_=usage(40, 1)),
                    "[DONE]",
                ]
            )
        )
        async with client.messages.stream(
            model="openai:gpt-4o-mini",
            max_tokens=200,
            tools=tools,
            messages=[
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "call_7",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        }
                    ],
                },
                {
                    "role": "user",
                    "content": [{"type": "tool_result", "tool_use_id": "call_7", "content": "sunny, 21 C"}],
                },
            ],
        ) as stream:
            final = await stream.get_final_message()
        assert [getattr(b, "text", None) for b in final.content] == ["Sunny"]
        assert (final.usage.input_tokens, final.usage.output_tokens) == (40, 1)
        forwarded = fake_openai.requests[-1].body["messages"]
        assert forwarded[1]["tool_calls"][0]["id"] == "call_7"
        assert forwarded[2] == {"role": "tool", "tool_call_id": "call_7", "content": "sunny, 21 C"}


async def test_claude_and_gemini_upstreams_through_the_messages_door(
    fake_anthropic: FakeAnthropic, fake_gemini: FakeGemini
) -> None:
    """A Claude model is a round trip to Anthropic's own format (cache tokens kept); a Gemini
    model's function call comes back as a `tool_use` block, streamed."""
    upstreams = f"""
[providers.anthropic]
base_url = "{fake_anthropic.base_url}"
api_key = "sk-ant-test-0123456789abcdef"
retry = {{ max_retries = 0 }}
[providers.gemini]
kind = "gemini"
base_url = "{fake_gemini.base_url}"
api_key = "gemini-test-key-0123456789"
retry = {{ max_retries = 0 }}
"""
    async with running_gateway(KEYS + upstreams) as gw:
        client = client_for(gw)
        fake_anthropic.script(
            claude.Reply(events=claude.text_events(["Bon", "jour"], claude.usage(30, 2, cache_read=1000)))
        )
        async with client.messages.stream(
            model="anthropic:claude-haiku-4-5",
            max_tokens=100,
            system="Answer in French.",
            messages=[{"role": "user", "content": "Say hello"}],
        ) as stream:
            text = "".join([piece async for piece in stream.text_stream])
            final = await stream.get_final_message()
        assert text == "Bonjour"
        assert final.stop_reason == "end_turn"
        assert final.usage.output_tokens == 2
        assert final.usage.cache_read_input_tokens == 1000
        sent = fake_anthropic.requests[-1].body
        assert sent["model"] == "claude-haiku-4-5"
        assert sent["system"] == "Answer in French."

        fake_gemini.script(
            gemini.Reply(
                chunks=gemini.tool_call_chunks(
                    ["Checking."], [gemini.function_call_part("get_weather", {"city": "Rome"})]
                )
            )
        )
        async with client.messages.stream(
            model="gemini:gemini-2.5-flash",
            max_tokens=100,
            tools=[
                {
                    "name": "get_weather",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
                }
            ],
            messages=[{"role": "user", "content": "Weather in Rome?"}],
        ) as stream:
            final = await stream.get_final_message()
        assert final.stop_reason == "tool_use"
        text_block, tool_block = final.content
        assert isinstance(text_block, anthropic.types.TextBlock)
        assert text_block.text == "Checking."
        assert isinstance(tool_block, anthropic.types.ToolUseBlock)
        assert (tool_block.name, tool_block.input) == ("get_weather", {"city": "Rome"})
        assert fake_gemini.requests[-1].body["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"


async def test_errors_in_anthropics_shape(gw: RunningGateway) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        await client_for(gw).messages.create(
            model="mock:echo", max_tokens=0, messages=[{"role": "user", "content": "x"}]
        )
    assert bad.value.status_code == 400
    body = bad.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]
    with pytest.raises(anthropic.AuthenticationError) as refused:
        await client_for(gw, "wrong-key-0123456789").messages.create(
            model="mock:echo", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError):
        await client_for(gw).messages.create(
            model="mock:unknown", max_tokens=10, messages=[{"role": "user", "content": "x"}]
        )
