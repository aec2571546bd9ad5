"""LangChain's `ChatOpenAI`, pointed at the HTTP door, as a LangChain user would: a reply with its
token usage, a stream, tools bound to the model, and structured output, from the mock provider and
from a fake OpenAI upstream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, SecretStr

from tests.conftest import RunningGateway, openai_toml, running_gateway
from tests.fakes.openai import FakeOpenAI, Reply, completion, tool_call, usage

KEY = "langchain-door-key-0123456789"
KEYS = f'[[auth.keys]]\nname = "notebook"\nkey = "{KEY}"\n'


@pytest.fixture
async def gw(fake_openai: FakeOpenAI) -> AsyncIterator[RunningGateway]:
    async with running_gateway(KEYS + openai_toml(fake_openai.base_url)) as running:
        yield running


def chat_model(gw: RunningGateway, model: str) -> ChatOpenAI:
    return ChatOpenAI(
        model=model,
        base_url=f"{gw.http_url}/v1",
        api_key=SecretStr(KEY),
        max_retries=0,
        stream_usage=True,
    )


async def test_a_reply_and_a_stream_with_their_usage(gw: RunningGateway) -> None:
    llm = chat_model(gw, "mock:echo")
    reply = await llm.ainvoke([SystemMessage("Be brief."), HumanMessage("Hello from LangChain")])
    assert isinstance(reply, AIMessage)
    assert reply.content == "Hello from LangChain"
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["output_tokens"] > 0
    assert reply.usage_metadata["input_tokens"] > 0
    assert reply.response_metadata["model_name"] == "mock:echo"

    chunks = [chunk async for chunk in llm.astream("streamed words arrive one by one")]
    assert all(isinstance(chunk, AIMessageChunk) for chunk in chunks)
    assert len(chunks) > 2
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk
    assert whole.content == "streamed words arrive one by one"
    assert isinstance(whole, AIMessageChunk)
    assert whole.usage_metadata is not None  # the usage chunk `stream_usage` asks for
    assert whole.usage_metadata["output_tokens"] > 0


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


class City(BaseModel):
    name: str
    population: int


async def test_bound_tools_and_structured_output_through_a_fake_openai(
    gw: RunningGateway, fake_openai: FakeOpenAI
) -> None:
    llm = chat_model(gw, "openai:gpt-4o-mini")
    fake_openai.script(
        Reply(
            json_body=completion(
                None,
                tool_calls=[tool_call("call_7", "get_weather", '{"city": "Lyon"}')],
                finish_reason="tool_calls",
                usage_=usage(40, 12),
            )
        )
    )
    reply = await llm.bind_tools([get_weather]).ainvoke("What is the weather in Lyon?")
    assert isinstance(reply, AIMessage)
    assert reply.tool_calls == [
        {"name": "get_weather", "args": {"city": "Lyon"}, "id": "call_7", "type": "tool_call"}
    ]
    assert reply.usage_metadata is not None
    assert (reply.usage_metadata["input_tokens"], reply.usage_metadata["output_tokens"]) == (40, 12)
    sent = fake_openai.requests[-1].body
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["model"] == "gpt-4o-mini"

    fake_openai.script(
        Reply(json_body=completion('{"name": "Lyon", "population": 520000}', usage_=usage(30, 9)))
    )
    city = await llm.with_structured_output(City).ainvoke("The third city of France?")
    assert city == City(name="Lyon", population=520000)
    assert fake_openai.requests[-1].body["response_format"]["type"] == "json_schema"
