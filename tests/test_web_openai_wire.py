"""OpenAI Chat Completions bodies onto the domain request and back: every parameter the door maps,
the gateway's extensions, what it refuses (naming OpenAI's parameter), and the reply, chunk and
error shapes."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pytest

from llm_gateway.domain.errors import Code, FieldViolation, GatewayError, invalid_request
from llm_gateway.domain.messages import ImagePart, ReasoningEffort, ResponseFormatType, Role, ToolChoiceMode
from llm_gateway.web.fields import openai_param
from llm_gateway.web.openai_request import OpenAIRequest, decode
from llm_gateway.web.openai_response import error


def body(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


def refused(raw: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(GatewayError) as caught:
        decode(raw, ["mock"])
    assert caught.value.code is Code.INVALID_ARGUMENT
    return {v.field: v.description for v in caught.value.violations}


def ok(**fields: Any) -> OpenAIRequest:
    return decode({"model": "mock:echo", "messages": [{"role": "user", "content": "hi"}], **fields}, ["mock"])


def test_every_mapped_parameter_reaches_the_domain_request() -> None:
    decoded = decode(
        body(
            """{"model": "mock:echo", "messages": [
                 {"role": "developer", "content": "Be brief."},
                 {"role": "user", "name": "ann", "content": [
                   {"type": "text", "text": "What is this?"},
                   {"type": "image_url",
                    "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
                 {"role": "assistant", "content": null, "tool_calls": [
                   {"id": "call_1", "type": "function",
                    "function": {"name": "look", "arguments": "{\\"q\\": 1}"}}]},
                 {"role": "tool", "tool_call_id": "call_1", "content": "a cat"}],
               "tools": [{"type": "function", "function": {"name": "look", "description": "Looks",
                          "parameters": {"type": "object"}, "strict": true}}],
               "tool_choice": "required", "parallel_tool_calls": false,
               "response_format": {"type": "json_schema", "json_schema": {"name": "answer",
                                   "schema": {"type": "object"}, "strict": true}},
               "temperature": 0.2, "top_p": 0.9, "max_completion_tokens": 300, "stop": ["END", "STOP"],
               "seed": 7, "presence_penalty": 0.5, "frequency_penalty": -0.5, "reasoning_effort": "low",
               "user": "u-1", "n": 1, "stream": true, "stream_options": {"include_usage": true},
               "metadata": {"team": "search"}, "store": false,
               "routing": {"fallback_models": ["mock:echo-large"]},
               "budget": {"max_cost": 0.000000000000000001, "cost_alert_threshold": "0.5",
                          "project_id": "p-1", "tracking_id": "t-1"}}"""
        ),
        ["mock"],
    )
    chat = decoded.chat
    assert (decoded.stream, decoded.include_usage, decoded.max_tokens_param) == (
        True,
        True,
        "max_completion_tokens",
    )
    assert [m.role for m in chat.messages] == [Role.SYSTEM, Role.USER, Role.ASSISTANT, Role.TOOL]
    user = chat.messages[1]
    assert user.name == "ann"
    assert user.parts[1] == ImagePart(url="https://example.com/cat.png", detail="high")
    assert user.parts[2] == ImagePart(data=bytes.fromhex("89504e470d0a1a0a"), mime_type="image/png")
    assert chat.messages[2].tool_calls[0].arguments == '{"q": 1}'
    assert chat.messages[3].tool_call_id == "call_1"
    assert (chat.tools[0].name, chat.tools[0].strict) == ("look", True)
    assert chat.tool_choice is not None
    assert chat.tool_choice.mode is ToolChoiceMode.REQUIRED
    assert chat.parallel_tool_calls is False
    assert chat.response_format is not None
    assert (chat.response_format.type, chat.response_format.schema_name) == (
        ResponseFormatType.JSON_SCHEMA,
        "answer",
    )
    g = chat.generation
    assert (g.temperature, g.top_p, g.max_tokens, g.stop, g.seed) == (0.2, 0.9, 300, ("END", "STOP"), 7)
    assert (g.presence_penalty, g.frequency_penalty) == (0.5, -0.5)
    assert chat.reasoning is not None
    assert chat.reasoning.effort is ReasoningEffort.LOW
    assert (chat.caller.user, chat.caller.project, chat.caller.tracking_id) == ("u-1", "p-1", "t-1")
    assert chat.tags == {"team": "search"}
    assert chat.fallback_models == ("mock:echo-large",)
    # Money is read from the JSON text, never through a float.
    assert chat.max_cost == Decimal("1E-18")
    assert chat.cost_alert_threshold == Decimal("0.5")


def test_problems_are_named_as_openai_parameters_all_at_once() -> None:
    problems = refused(
        body(
            """{"model": "mock:echo", "messages": [{"role": "user", "content": [{"type": "image_url",
                 "image_url": {"url": "ftp://x"}}]}, {"role": "robot", "content": "hi"}],
               "temperature": 7, "max_tokens": 0, "logprobs": true, "n": 2, "frobnicate": 1,
               "tools": [{"type": "function", "function": {"name": "bad name"}}],
               "budget": {"max_cost": -1}, "user": 3}"""
        )
    )
    assert set(problems) == {
        "messages[0].content[0].image_url.url",
        "messages[1].role",
        "temperature",
        "max_tokens",
        "logprobs",
        "n",
        "frobnicate",
        "tools[0].function.name",
        "budget.max_cost",
        "user",
    }
    assert "lenient" in problems["logprobs"]


def test_lenient_drops_what_the_gateway_cannot_honour_and_says_so() -> None:
    decoded = ok(logprobs=True, logit_bias={"1": 2}, unsupported_parameters="lenient")
    assert decoded.dropped == ("logprobs", "logit_bias")
    assert decoded.chat.lenient
    assert refused({"model": "m", "messages": [], "unsupported_parameters": "loose"})[
        "unsupported_parameters"
    ]


def test_a_body_that_is_not_an_object_is_refused() -> None:
    assert refused([1, 2])  # type: ignore[arg-type]
    assert set(refused({"messages": "hi"})) == {"model", "messages"}


@pytest.mark.parametrize(
    ("domain", "openai"),
    [
        ("generation.temperature", "temperature"),
        ("messages[2].content[0].image.url", "messages[2].content[0].image_url.url"),
        ("messages[1].tool_calls[0].arguments", "messages[1].tool_calls[0].function.arguments"),
        ("tools[3].parameters", "tools[3].function.parameters"),
        ("max_cost", "budget.max_cost"),
        ("caller.project", "budget.project_id"),
        ("tags", "metadata"),
        ("fallback_models[1]", "routing.fallback_models[1]"),
    ],
)
def test_domain_fields_read_as_openai_parameters(domain: str, openai: str) -> None:
    assert openai_param(domain) == openai


def test_errors_carry_the_status_type_param_and_request_id() -> None:
    status, shown = error(invalid_request([FieldViolation("temperature", "too hot")]), "req-1")
    assert status == 400
    assert shown == {
        "error": {
            "message": "invalid request: temperature: too hot",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "invalid_request",
            "request_id": "req-1",
        }
    }
    limited = GatewayError(
        "slow down",
        code=Code.RESOURCE_EXHAUSTED,
        reason="UPSTREAM_RATE_LIMITED",
        metadata={"provider": "openai"},
    )
    status, shown = error(limited, "req-2")
    assert status == 429
    assert (shown["error"]["type"], shown["error"]["provider"], shown["error"]["code"]) == (
        "rate_limit_error",
        "openai",
        "upstream_rate_limited",
    )


def test_the_http_status_table_in_the_docs_is_what_the_door_answers() -> None:
    from pathlib import Path

    from llm_gateway.web import anthropic

    docs = (Path(__file__).resolve().parents[1] / "docs" / "errors.md").read_text()
    rows = re.findall(
        r"^\| `([A-Z_]+)` \| (\d{3})[^|]*\| `([a-z_]+)`[^|]*\| `([a-z_]+)` \|$", docs, re.MULTILINE
    )
    assert {code for code, *_ in rows} == {c.value for c in Code}
    for code, status, openai_type, anthropic_type in rows:
        err = GatewayError("x", code=Code(code), reason="SOME_REASON")
        assert error(err, "r")[0] == int(status), code
        assert error(err, "r")[1]["error"]["type"] == openai_type, code
        assert anthropic.error(err, "r")[1]["error"]["type"] == anthropic_type, code
