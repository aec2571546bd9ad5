"""What costing adds to a call, in microseconds: pricing the usage, putting the cost on the wire,
and (for EstimateCost, max_cost and dry runs only) counting the prompt and estimating.

    .venv/bin/python bench/cost.py            # print the table
    .venv/bin/python bench/cost.py --write    # and rewrite bench/COST.md

Each figure is the median over 7 repetitions of the mean of a timed loop (timeit), in one process.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import timeit
from collections.abc import Callable
from pathlib import Path

from llm_gateway.catalog import Catalog, ModelSpec
from llm_gateway.config import load_config
from llm_gateway.domain.messages import ChatRequest, Message, Role, TextPart
from llm_gateway.domain.results import Usage
from llm_gateway.gateway.estimate import estimate
from llm_gateway.pricing import catalog_schedule, sheet_from_catalog
from llm_gateway.providers import enabled_providers
from llm_gateway.server import encode
from llm_gateway.tokens import counter_for
from llm_gateway.tokens.encodings import get_encoding

REPEATS = 7
OUT = Path(__file__).with_name("COST.md")

GPT_4O_MINI = sheet_from_catalog("openai", "gpt-4o-mini")
SONNET = sheet_from_catalog("anthropic", "claude-sonnet-4-5")
PRO = sheet_from_catalog("google", "gemini-2.5-pro")
# Prices over time: gpt-4o-mini's never change; DeepSeek's change at 00:30 and 16:30 UTC.
GPT_4O_MINI_PRICES = catalog_schedule("openai", "gpt-4o-mini")
DEEPSEEK_PRICES = catalog_schedule("deepseek", "deepseek-chat")
_CONFIG = load_config(None, {"OPENAI_API_KEY": "sk-bench", "DEEPSEEK_API_KEY": "sk-bench"})
CATALOG = Catalog(_CONFIG, enabled_providers(_CONFIG))


SPEC = ModelSpec(
    id="openai:gpt-4o-mini",
    provider="openai",
    name="gpt-4o-mini",
    display_name="gpt-4o-mini",
    context_window=128_000,
    max_output_tokens=16_384,
    capabilities=frozenset({"streaming"}),
    price=GPT_4O_MINI,
    tokenizer="o200k_base",
)


def _prompt(words: int) -> ChatRequest:
    text = " ".join(f"word{i % 97} and some plain English prose" for i in range(words // 6))
    return ChatRequest(
        "openai:gpt-4o-mini",
        (
            Message(Role.SYSTEM, (TextPart("You are a careful assistant."),)),
            Message(Role.USER, (TextPart(text),)),
        ),
    )


def _micros(fn: Callable[[], object]) -> float:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    return statistics.median(t / number for t in timer.repeat(REPEATS, number)) * 1e6


def measure() -> list[tuple[str, str, float]]:
    get_encoding("o200k_base")  # loaded once per process, outside the timings
    cached = Usage(12_000, 800, cache_read_tokens=8_000, reasoning_tokens=300)
    writes = Usage(
        250_000, 2_000, cache_read_tokens=200_000, cache_write_tokens=40_000, cache_write_1h_tokens=10_000
    )
    cost = GPT_4O_MINI.cost(cached)
    exact, approx = counter_for("o200k_base"), counter_for("")
    small, large = _prompt(1_000), _prompt(10_000)
    counted = exact.prompt(small)
    small_n, large_n = f"{counted.tokens:,}", f"{exact.prompt(large).tokens:,}"
    # An instant in DeepSeek's other window: what a call past the cached window pays, once.
    elsewhere = DEEPSEEK_PRICES.valid_until() + 60
    rows = [
        (
            "every call",
            "the price in force: DeepSeek's time-of-day schedule inside its window",
            _micros(DEEPSEEK_PRICES.now),
        ),
        (
            "every call",
            "the model with the price in force (`Catalog.get`, as the router looks it up)",
            _micros(lambda: CATALOG.get("deepseek", "deepseek-chat")),
        ),
        (
            "once a window",
            "the price in force past the window: the genai-prices lookup the cache saves",
            _micros(lambda: DEEPSEEK_PRICES.at(elsewhere)),
        ),
        (
            "every call",
            "price the usage: gpt-4o-mini, cache reads and reasoning",
            _micros(lambda: GPT_4O_MINI.cost(cached)),
        ),
        (
            "every call",
            "price the usage: Claude Sonnet 4.5 long-context tier, 5 min + 1 h writes",
            _micros(lambda: SONNET.cost(writes)),
        ),
        (
            "every call",
            "price the usage: Gemini 2.5 Pro above its 200k tier",
            _micros(lambda: PRO.cost(writes)),
        ),
        (
            "every call",
            "the cost on the wire (decimal strings in the protobuf Cost)",
            _micros(lambda: encode.cost(cost)),
        ),
        (
            "every call",
            "**all three: what costing adds to a call** (price in force, cost, wire)",
            _micros(lambda: encode.cost(GPT_4O_MINI_PRICES.now().cost(cached))),
        ),
        (
            "estimates",
            f"count a {small_n}-token prompt with o200k_base (exact)",
            _micros(lambda: exact.prompt(small)),
        ),
        (
            "estimates",
            f"count the {small_n}-token prompt by the approximation",
            _micros(lambda: approx.prompt(small)),
        ),
        (
            "estimates",
            f"count a {large_n}-token prompt with o200k_base (exact; a worker thread past 32k characters)",
            _micros(lambda: exact.prompt(large)),
        ),
        (
            "estimates",
            "expected and worst-case cost from a counted prompt",
            _micros(lambda: estimate(small, SPEC, counted)),
        ),
    ]
    return rows


def table(rows: list[tuple[str, str, float]]) -> str:
    lines = [
        "# Cost computation",
        "",
        "Generated by `bench/cost.py` (`make bench-cost`); do not edit. "
        f"Python {platform.python_version()} on {platform.machine()}, one process, "
        f"medians of {REPEATS} timed loops.",
        "",
        "| When | What | µs |",
        "| --- | --- | ---: |",
    ]
    lines += [f"| {when} | {what} | {micros:.1f} |" for when, what, micros in rows]
    lines += [
        "",
        "Every call takes the price in force when its model is looked up (a clock read and a comparison",
        "until the price's window ends), and every reply prices its usage and encodes the cost. Prompt",
        "counting and estimates run only for EstimateCost, a request with `max_cost`, a dry run, and",
        "usage a provider did not report.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--write", action="store_true", help=f"rewrite {OUT.name}")
    args = parser.parse_args()
    text = table(measure())
    print(text)
    if args.write:
        OUT.write_text(text)


if __name__ == "__main__":
    main()
