"""Token counts for estimates, budgets and usage a provider did not report: exact with a model's own
tokenizer where one is available offline, by the model's server where it counts tokens, else a
documented approximation."""

from llm_gateway.tokens.count import (
    APPROXIMATE,
    Counter,
    CountMethod,
    TokenCount,
    count_completion,
    count_prompt,
    counter_for,
    ready_counter,
)
from llm_gateway.tokens.encodings import SPECS as ENCODINGS
from llm_gateway.tokens.encodings import encoding_for_model
from llm_gateway.tokens.server import TokenizeApi, tokenizer_id

__all__ = [
    "APPROXIMATE",
    "ENCODINGS",
    "CountMethod",
    "Counter",
    "TokenCount",
    "TokenizeApi",
    "count_completion",
    "count_prompt",
    "counter_for",
    "encoding_for_model",
    "ready_counter",
    "tokenizer_id",
]
