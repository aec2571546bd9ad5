"""A request fitted to the model that will serve it, by the catalog's capabilities.

A feature the catalog says the model lacks (tools, images, JSON output, reasoning) is rejected
under the STRICT policy and removed and reported under LENIENT. Unlisted models have no known
capabilities: the provider is left to judge. Settings a provider's API lacks altogether (a seed for
Anthropic, say) are each adapter's to check, by the same policy.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from llm_gateway.catalog import ModelSpec
from llm_gateway.domain.messages import ChatRequest, ImagePart, ResponseFormatType
from llm_gateway.providers.base import Checks


def fit_request(request: ChatRequest, spec: ModelSpec, dropped: list[str]) -> ChatRequest:
    if spec.capabilities is None:
        return request
    checks = Checks(request, dropped)
    changes: dict[str, Any] = {}

    def lacks(path: str, what: str) -> None:
        checks.unsupported(path, f"{spec.id} does not support {what}")

    if request.tools and not spec.supports("tools"):
        lacks("tools", "tools")
        changes.update(tools=(), tool_choice=None, parallel_tool_calls=None)
    if not spec.supports("vision") and any(m.has_images() for m in request.messages):
        for i, message in enumerate(request.messages):
            for j, part in enumerate(message.parts):
                if isinstance(part, ImagePart):
                    lacks(f"messages[{i}].content[{j}].image", "images")
        changes["messages"] = tuple(
            replace(m, parts=tuple(p for p in m.parts if not isinstance(p, ImagePart)))
            for m in request.messages
        )
    fmt = request.response_format
    if fmt is not None and fmt.type is not ResponseFormatType.TEXT and not spec.supports(fmt.type.value):
        lacks("response_format", f"{fmt.type.value} output")
        changes["response_format"] = None
    if request.reasoning is not None and not spec.supports("reasoning"):
        lacks("reasoning", "reasoning settings")
        changes["reasoning"] = None
    checks.raise_any()
    return replace(request, **changes) if changes else request
