"""The provider adapter interface, and what every adapter's request builder shares.

An adapter translates a domain request into its provider's HTTP request and the reply or stream
back into domain results. It never sleeps, retries, limits or prices: those wrap adapters from
outside. Cancellation is the caller's: cancelling the task that awaits `chat` or iterates `stream`
closes the upstream request at once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from llm_gateway.catalog import ModelSpec
from llm_gateway.domain.errors import FieldViolation, invalid_request
from llm_gateway.domain.messages import ChatRequest, ReasoningEffort
from llm_gateway.domain.results import Completion, StreamEvent

# The thinking budget, in tokens, for each reasoning level, for providers that take a budget
# (Anthropic, Gemini, Cohere) when a request gives a level and no budget.
THINKING_BUDGETS: Mapping[ReasoningEffort, int] = {
    ReasoningEffort.MINIMAL: 1024,
    ReasoningEffort.LOW: 2048,
    ReasoningEffort.MEDIUM: 8192,
    ReasoningEffort.HIGH: 24576,
}


@dataclass(frozen=True, slots=True)
class UpstreamCall:
    request: ChatRequest
    model: ModelSpec
    # The request's provider_options entry for this provider, merged verbatim into the body.
    options: Mapping[str, Any] = field(default_factory=dict)
    # Settings left out of the upstream request under the LENIENT policy, by field path.
    dropped: list[str] = field(default_factory=list)


# Appended to a rejected setting the serving model cannot honour.
LENIENT_HINT = " (leave it out, or set unsupported_parameters to LENIENT)"


class Checks:
    """What a request builder finds it cannot send as asked.

    `unsupported` is a setting the model cannot honour: under the STRICT policy it is rejected,
    under LENIENT it is left out and recorded in `dropped`. Either way the builder must not send
    it. `invalid` is a request the provider cannot take at all, whatever the policy. `raise_any`
    raises every rejection at once, as one INVALID_ARGUMENT naming each field.
    """

    __slots__ = ("_dropped", "_lenient", "problems")

    def __init__(self, request: ChatRequest, dropped: list[str]) -> None:
        self._lenient = request.lenient
        self._dropped = dropped
        self.problems: list[FieldViolation] = []

    @classmethod
    def of(cls, call: UpstreamCall) -> Checks:
        """Checks that record what LENIENT drops in the call's own `dropped` list."""
        return cls(call.request, call.dropped)

    def unsupported(self, path: str, why: str) -> None:
        if self._lenient:
            if path not in self._dropped:
                self._dropped.append(path)
        else:
            self.problems.append(FieldViolation(path, why + LENIENT_HINT))

    def invalid(self, path: str, why: str) -> None:
        self.problems.append(FieldViolation(path, why))

    def raise_any(self) -> None:
        if self.problems:
            raise invalid_request(self.problems)


@dataclass(frozen=True, slots=True)
class OptionRules:
    """What a request's `provider_options` may not set in a provider's body: the keys the gateway
    sets itself (the model, the messages, streaming and usage reporting, which the replies are
    parsed by) or carries in the contract (sampling, limits, tools, output format, reasoning, which
    budgets, capability checks and pricing rely on). `merged` names nested objects that options
    add to key by key instead of replacing (Ollama's `options`), with their own reserved keys."""

    reserved: frozenset[str] = frozenset()
    merged: Mapping[str, frozenset[str]] = field(default_factory=dict)
    hint: str = "set it through the request's own fields, or leave it to the gateway"

    def violations(self, provider: str, options: Mapping[str, Any]) -> list[FieldViolation]:
        path = f"provider_options[{provider!r}]"
        problems = [
            FieldViolation(f"{path}.{key}", f"is set by the gateway and cannot be overridden; {self.hint}")
            for key in options
            if key in self.reserved
        ]
        for key, reserved in self.merged.items():
            nested = options.get(key)
            if isinstance(nested, Mapping):
                problems.extend(
                    FieldViolation(
                        f"{path}.{key}.{inner}",
                        f"is set by the gateway and cannot be overridden; {self.hint}",
                    )
                    for inner in nested
                    if inner in reserved
                )
        return problems


def merge_options(body: dict[str, Any], options: Mapping[str, Any], nested: str = "") -> None:
    """Merges a call's (checked) provider options into its body: each key replaces the body's,
    except that the `nested` object adds to the body's own key by key instead of replacing it."""
    for key, value in options.items():
        current = body.get(key)
        if key == nested and isinstance(value, Mapping) and isinstance(current, dict):
            body[key] = {**current, **value}
        else:
            body[key] = value


NO_RULES = OptionRules()


class Provider(Protocol):
    name: str
    # What the request's provider_options may not set (checked before any attempt).
    option_rules: OptionRules

    async def chat(self, call: UpstreamCall) -> Completion:
        """One whole reply."""
        ...

    def stream(self, call: UpstreamCall) -> AsyncGenerator[StreamEvent, None]:
        """Deltas as they arrive, ending with exactly one `StreamDone`."""
        ...

    async def aclose(self) -> None:
        """Releases what the adapter owns (not the shared HTTP client)."""
        ...
