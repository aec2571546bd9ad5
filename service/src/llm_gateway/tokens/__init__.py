"""Token counts for estimates, budgets and usage a provider did not report: exact with a model's own
tokenizer where one is available offline, else a documented approximation."""

from llm_gateway.tokens.count import (
    APPROXIMATE,
    Counter,
    TokenCount,
    count_completion,
    count_prompt,
    counter_for,
    ready_counter,
)
from llm_gateway.tokens.encodings import SPECS as ENCODINGS
from llm_gateway.tokens.encodings import encoding_for_model

__all__ = [
    "APPROXIMATE",
    "ENCODINGS",
    "Counter",
    "TokenCount",
    "count_completion",
    "count_prompt",
    "counter_for",
    "encoding_for_model",
    "ready_counter",
]
