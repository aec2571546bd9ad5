"""The generated tables of docs/providers.md: the provider-by-feature matrix and the presets.

For every provider of the embedded defaults (every kind and every compatible preset), each feature
is a small request given to the adapter's own request builder under the STRICT policy: the feature
is supported when the builder maps it, and not when the builder refuses it. The presets table is
read from presets.toml: each preset's base URL, key, the dialect fields it sets (its quirks), and
the server documentation or source its dialect was checked against. Nothing is typed by hand, so
the tables cannot drift from the code.

`python -m llm_gateway.providers.matrix --write docs/providers.md` rewrites the tables in place
(between their `<!-- name:start -->` and `<!-- name:end -->` markers); without `--write` it prints
them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import aiohttp

from llm_gateway.catalog import ModelSpec
from llm_gateway.config import load_config
from llm_gateway.config.schema import (
    COMPATIBLE_PRESETS,
    ChatCompletionsDialect,
    GatewayConfig,
    OpenAIProviderConfig,
    ProviderConfig,
)
from llm_gateway.domain.errors import GatewayError
from llm_gateway.domain.messages import (
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
from llm_gateway.pricing import UNKNOWN_PRICE
from llm_gateway.providers.adapter import HttpAdapter
from llm_gateway.providers.base import UpstreamCall
from llm_gateway.providers.registry import build_providers

_WEATHER = Tool(
    "get_weather", "Weather for a city", {"type": "object", "properties": {"city": {"type": "string"}}}
)
_SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
_PNG = b"\x89PNG\r\n\x1a\n"


def _ask(**fields: Any) -> ChatRequest:
    messages = fields.pop("messages", (Message(Role.USER, (TextPart("Hi"),)),))
    return ChatRequest(model="matrix", messages=messages, **fields)


def _with_image(image: ImagePart) -> ChatRequest:
    return _ask(messages=(Message(Role.USER, (TextPart("What is this?"), image)),))


def _tool_round_trip() -> ChatRequest:
    return _ask(
        tools=(_WEATHER,),
        messages=(
            Message(Role.USER, (TextPart("Weather in Paris?"),)),
            Message(Role.ASSISTANT, tool_calls=(ToolCall("call_1", "get_weather", '{"city":"Paris"}'),)),
            Message(Role.TOOL, (TextPart('{"temp_c":18}'),), tool_call_id="call_1"),
        ),
    )


# Feature name -> the request that exercises it.
FEATURES: dict[str, Callable[[], ChatRequest]] = {
    "System prompt": lambda: _ask(
        messages=(Message(Role.SYSTEM, (TextPart("Be brief."),)), Message(Role.USER, (TextPart("Hi"),)))
    ),
    "Stop sequences": lambda: _ask(generation=GenerationConfig(stop=("END",))),
    "Temperature above 1": lambda: _ask(generation=GenerationConfig(temperature=1.5)),
    "top_k": lambda: _ask(generation=GenerationConfig(top_k=40)),
    "Seed": lambda: _ask(generation=GenerationConfig(seed=7)),
    "Presence / frequency penalty": lambda: _ask(
        generation=GenerationConfig(presence_penalty=0.5, frequency_penalty=0.5)
    ),
    "Tools": lambda: _ask(tools=(_WEATHER,)),
    "Tool results in history": _tool_round_trip,
    "Tool choice: required": lambda: _ask(tools=(_WEATHER,), tool_choice=ToolChoice(ToolChoiceMode.REQUIRED)),
    "Tool choice: a named tool": lambda: _ask(
        tools=(_WEATHER,), tool_choice=ToolChoice(ToolChoiceMode.NAMED, "get_weather")
    ),
    "Tool choice: none": lambda: _ask(tools=(_WEATHER,), tool_choice=ToolChoice(ToolChoiceMode.NONE)),
    "Parallel tool calls off": lambda: _ask(tools=(_WEATHER,), parallel_tool_calls=False),
    "Image by URL": lambda: _with_image(ImagePart(url="https://example.com/cat.png", mime_type="image/png")),
    "Image as bytes": lambda: _with_image(ImagePart(data=_PNG, mime_type="image/png")),
    "JSON object output": lambda: _ask(response_format=ResponseFormat(ResponseFormatType.JSON_OBJECT)),
    "JSON schema output": lambda: _ask(
        response_format=ResponseFormat(ResponseFormatType.JSON_SCHEMA, _SCHEMA, "answer")
    ),
    "Reasoning effort": lambda: _ask(reasoning=Reasoning(ReasoningEffort.HIGH)),
    "Reasoning budget": lambda: _ask(reasoning=Reasoning(budget_tokens=4096)),
    "Reasoning off": lambda: _ask(reasoning=Reasoning(ReasoningEffort.NONE)),
}

# Enough for every provider to be built without a network or a real key.
_ENV = {"AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com"}


# The column of OpenAI's Responses API: the `openai` provider with `api = "responses"`.
RESPONSES_COLUMN = "openai-responses"


def provider_configs(config: GatewayConfig) -> dict[str, ProviderConfig]:
    """Every provider of `config` but the mock, and OpenAI once more on its Responses API."""
    configs: dict[str, ProviderConfig] = {n: p for n, p in config.providers.items() if p.kind != "mock"}
    openai = configs.get("openai")
    if isinstance(openai, OpenAIProviderConfig):
        configs[RESPONSES_COLUMN] = openai.model_copy(update={"api": "responses"})
    return configs


def adapters(configs: dict[str, ProviderConfig]) -> dict[str, HttpAdapter]:
    """One adapter per provider config."""
    built = build_providers(configs, cast(aiohttp.ClientSession, None), token_counters=False)
    return {name: cast(HttpAdapter, adapter) for name, adapter in built.items()}


def supports(adapter: HttpAdapter, request: ChatRequest) -> bool:
    spec = ModelSpec(
        id=f"{adapter.name}:model",
        provider=adapter.name,
        name="model",
        display_name="model",
        context_window=None,
        max_output_tokens=None,
        capabilities=None,
        price=UNKNOWN_PRICE,
        listed=False,
    )
    try:
        adapter._body(UpstreamCall(request, spec), stream=False)
    except GatewayError:
        return False
    return True


def render_matrix() -> str:
    kinds = provider_configs(load_config(None, _ENV))
    found = adapters(kinds)
    names = sorted(found, key=lambda n: (kinds[n].kind != "openai", kinds[n].kind, n))
    lines = [
        "| Feature | " + " | ".join(f"`{n}`" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for feature, make in FEATURES.items():
        marks = ["yes" if supports(found[n], make()) else "—" for n in names]
        lines.append(f"| {feature} | " + " | ".join(marks) + " |")
    return "\n".join(lines) + "\n"


# Dialect fields that document the dialect rather than change a request.
_NOT_QUIRKS = frozenset({"checked_against"})


def render_presets() -> str:
    lines = [
        "| Preset | `base_url` | Key | Quirks handled | Checked against |",
        "|---|---|---|---|---|",
    ]
    default = ChatCompletionsDialect()
    for name, preset in COMPATIBLE_PRESETS.items():
        dialect = ChatCompletionsDialect(**preset.get("dialect", {}))
        quirks = [
            f"`{field}` = `{_show(getattr(dialect, field))}`"
            for field in ChatCompletionsDialect.model_fields
            if field not in _NOT_QUIRKS and getattr(dialect, field) != getattr(default, field)
        ]
        key = (
            "required" if preset.get("requires_api_key") else "none (free)" if preset.get("free") else "none"
        )
        checked = dialect.checked_against or "—"
        lines.append(
            f"| `{name}` | `{preset['base_url']}` | {key} | {', '.join(quirks) or 'none'} | {checked} |"
        )
    return "\n".join(lines) + "\n"


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


TABLES: dict[str, Callable[[], str]] = {"matrix": render_matrix, "presets": render_presets}


def rewrite(text: str) -> str:
    """`text` with every generated table replaced by its current rendering."""
    for name, render in TABLES.items():
        start, end = f"<!-- {name}:start -->\n", f"<!-- {name}:end -->"
        head, found, rest = text.partition(start)
        if not found:
            raise ValueError(f"no {start.strip()} marker")
        _, found, tail = rest.partition(end)
        if not found:
            raise ValueError(f"no {end} marker")
        text = head + start + render() + end + tail
    return text


def main(argv: list[str]) -> int:
    if argv[:1] == ["--write"] and len(argv) == 2:
        path = Path(argv[1])
        path.write_text(rewrite(path.read_text()))
        return 0
    if argv:
        sys.stderr.write("usage: python -m llm_gateway.providers.matrix [--write docs/providers.md]\n")
        return 2
    for render in TABLES.values():
        sys.stdout.write(render() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
