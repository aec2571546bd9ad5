"""Prices the operator sets: long-context tiers in a model's configured `price`, and a price file
that overrides the catalog and the config, re-read on SIGHUP without dropping calls."""

from __future__ import annotations

import asyncio
import json
import signal
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest

from llm_gateway import cli
from llm_gateway.catalog import Catalog
from llm_gateway.config import ConfigError, GatewayConfig, load_config
from llm_gateway.config.schema import PriceFileError, read_price_file
from llm_gateway.domain.results import Usage
from llm_gateway.pricing import CATALOG_SOURCE, PRICE_FILE_SOURCE, PricingStatus
from llm_gateway.providers import enabled_providers
from llmgateway.v1 import chat_pb2, gateway_service_pb2_grpc
from tests.conftest import GatewayProcess, chat, gateway_process, read_event

D = Decimal
MILLION = 10**6

# Gemini 2.5 Pro's published prices (https://ai.google.dev/gemini-api/docs/pricing): $1.25 input
# and $10 output up to 200k prompt tokens, $2.50 and $15 above; as a catalog lacking the tier
# would miss them, written in the config.
TIERED = """
[providers.mock.models.long.price]
input_per_million = { base = "1.25", tiers = [{ start = 200000, price = "2.50" }] }
output_per_million = { base = "10", tiers = [{ start = 200000, price = "15" }] }
"""


def config_from(tmp_path: Path, toml: str, env: dict[str, str] | None = None) -> GatewayConfig:
    path = tmp_path / "gateway.toml"
    path.write_text(toml)
    return load_config(path, env or {})


def catalog_from(tmp_path: Path, toml: str, env: dict[str, str] | None = None) -> Catalog:
    config = config_from(tmp_path, toml, env)
    return Catalog(config, enabled_providers(config))


def total(catalog: Catalog, provider: str, model: str, usage: Usage) -> Decimal:
    spec = catalog.get(provider, model)
    assert spec is not None
    return spec.price.cost(usage).total


def test_configured_tiers_charge_the_whole_call_above_the_threshold(tmp_path: Path) -> None:
    catalog = catalog_from(tmp_path, TIERED)
    # 205,000 x 2.50 + 1,000 x 15 = 0.5125 + 0.015: the whole call at the long-context rates.
    assert total(catalog, "mock", "long", Usage(205_000, 1000)) == D("0.5275")
    # 199,000 x 1.25 + 1,000 x 10 = 0.24875 + 0.01.
    assert total(catalog, "mock", "long", Usage(199_000, 1000)) == D("0.25875")
    # Exactly 200,000 is not more than `start`: base rates. 200,000 x 1.25 + 1,000 x 10.
    assert total(catalog, "mock", "long", Usage(200_000, 1000)) == D("0.26")
    spec = catalog.get("mock", "long")
    assert spec is not None
    assert spec.price.tiered


@pytest.mark.parametrize(
    ("price", "problem"),
    [
        (
            '{ base = "1", tiers = [{ start = 200000, price = "2" }, { start = 100000, price = "3" }] }',
            "price.input_per_million: Value error, tiers: tier starts must ascend and differ: "
            "tiers[1].start 100000 follows 200000",
        ),
        (
            '{ base = "1", tiers = [{ start = 200000, price = "2" }, { start = 200000, price = "3" }] }',
            "tiers[1].start 200000 follows 200000",
        ),
        ('{ base = "1", tiers = [{ start = -5, price = "2" }] }', "tiers[0].start: Input should be greater"),
        ('{ base = "1", tiers = [{ start = 5, price = "-2" }] }', "tiers[0].price: Input should be greater"),
        ('{ base = "-1", tiers = [] }', "input_per_million: Value error, base: Input should be greater"),
        ('"-0.5"', "input_per_million: Value error, Input should be greater than or equal to 0"),
        ('{ base = "1", tier = [] }', "tier: Extra inputs are not permitted"),
        ('{ tiers = [{ start = 5, price = "2" }] }', "base: Field required"),
    ],
)
def test_invalid_tiers_are_config_errors_naming_the_field(tmp_path: Path, price: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from(tmp_path, f"[providers.mock.models.echo]\nprice = {{ input_per_million = {price} }}\n")
    message = str(caught.value)
    assert message.startswith("config error at providers.mock.models.echo.price.input_per_million: ")
    assert problem in message


def test_a_plain_decimal_stays_a_decimal(tmp_path: Path) -> None:
    config = config_from(tmp_path, "[providers.mock.models.echo]\nprice = { input_per_million = 0.12 }\n")
    price = config.providers["mock"].models["echo"].price
    assert price is not None
    assert price.input_per_million == D("0.12")


OPENAI = {"OPENAI_API_KEY": "sk-test-0123456789abcdef"}


def test_the_price_file_overrides_the_catalog_and_the_config(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        """
# A negotiated gpt-4o-mini price, the catalog's claude tier absent from a model, and mock:echo.
["openai:gpt-4o-mini"]
input_per_million = "0.10"
cached_input_per_million = "0.05"
output_per_million = "0.40"

["openai:ft-gpt-4o-mini-acme"]
input_per_million = "0.30"
output_per_million = { base = "1.20", tiers = [{ start = 100000, price = "2.40" }] }

["mock:echo"]
input_per_million = "1"
output_per_million = "2"
"""
    )
    usage = Usage(10_000, 1000, cache_read_tokens=4000)
    without = catalog_from(tmp_path, "", OPENAI)
    # The catalog: gpt-4o-mini $0.15 input, $0.075 cached, $0.60 output.
    # 6,000 x 0.15 + 4,000 x 0.075 + 1,000 x 0.60 = 0.0009 + 0.0003 + 0.0006.
    assert total(without, "openai", "gpt-4o-mini", usage) == D("0.0018")
    catalog = catalog_from(tmp_path, f'[pricing]\nfile = "{prices}"\n', OPENAI)
    spec = catalog.get("openai", "gpt-4o-mini")
    assert spec is not None
    cost = spec.price.cost(usage)
    # 6,000 x 0.10 + 4,000 x 0.05 + 1,000 x 0.40 = 0.0006 + 0.0002 + 0.0004.
    assert (cost.total, cost.source) == (D("0.0012"), PRICE_FILE_SOURCE)
    # An unlisted model the catalog does not know, priced by the file, tier included:
    # 200,000 x 0.30 + 1,000 x 2.40 = 0.06 + 0.0024.
    assert total(catalog, "openai", "ft-gpt-4o-mini-acme", Usage(200_000, 1000)) == D("0.0624")
    # mock:echo's configured price ($0.15 / $0.60) gives way to the file's: 10,000 x 1 + 1,000 x 2.
    assert total(catalog, "mock", "echo", Usage(10_000, 1000)) == D("0.012")
    # A model the file does not name keeps the catalog's price (gpt-4o: $2.50 input, $10 output).
    other = catalog.get("openai", "gpt-4o")
    assert other is not None
    assert other.price.source == CATALOG_SOURCE
    assert other.price.cost(Usage(1000, 100)).total == D("0.0035")


def test_reloading_reprices_new_lookups_and_keeps_what_calls_hold(
    tmp_path: Path, log_lines: list[str]
) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('["mock:echo"]\ninput_per_million = "1"\noutput_per_million = "2"\n')
    catalog = catalog_from(tmp_path, f'[pricing]\nfile = "{prices}"\n')
    usage = Usage(1000, 1000)
    held = catalog.get("mock", "echo")
    assert held is not None
    assert held.price.cost(usage).total == D("0.003")

    prices.write_text(
        '["mock:echo"]\ninput_per_million = "3"\noutput_per_million = "4"\n["mock:echo-large"]\nfree = true\n'
    )
    assert catalog.reload_prices() == 2
    assert total(catalog, "mock", "echo", usage) == D("0.007")
    large = catalog.get("mock", "echo-large")
    assert large is not None
    assert large.price.status is PricingStatus.FREE
    assert held.price.cost(usage).total == D("0.003")  # a call in flight keeps its price

    prices.write_text('["mock:echo"]\noutput_per_million = "oops"\n')
    assert catalog.reload_prices() is None
    assert total(catalog, "mock", "echo", usage) == D("0.007")  # the previous prices stay
    events = [json.loads(line) for line in log_lines]
    reloaded = [e for e in events if e.get("event") == "prices_reloaded"]
    assert [(e["file"], e["prices"]) for e in reloaded] == [(str(prices), 2)]
    [failed] = [e for e in events if e.get("event") == "prices_reload_failed"]
    assert failed["level"] == "error"
    assert failed["file"] == str(prices)
    assert failed["error"] == (
        f'price file {prices}: "mock:echo".output_per_million: Input should be a valid decimal'
    )
    assert "oops" not in json.dumps(failed)


def test_reloading_without_a_price_file_changes_nothing(tmp_path: Path, log_lines: list[str]) -> None:
    catalog = catalog_from(tmp_path, "")
    assert catalog.reload_prices() is None
    assert total(catalog, "mock", "echo", Usage(1000, 1000)) == D("0.00075")  # 1,000 x 0.15 + 1,000 x 0.60
    assert any(json.loads(line).get("event") == "prices_not_reloaded" for line in log_lines)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('["mock:echo"\ninput_per_million = "1"\n', "is not valid TOML: "),
        ('[echo]\ninput_per_million = "1"\n', ": 'echo' is not 'provider:model'"),
        ('["mock:echo"]\n', ": \"mock:echo\": give 'free = true' or at least one price"),
        ('["mock:echo"]\ninput = "1"\n', ': "mock:echo".input: Extra inputs are not permitted'),
        (
            '["mock:echo"]\ninput_per_million = { base = "1", tiers = [{ start = 9, price = "2" }, '
            '{ start = 3, price = "1" }] }\n',
            ': "mock:echo".input_per_million: tiers: tier starts must ascend and differ: '
            "tiers[1].start 3 follows 9",
        ),
    ],
)
def test_price_file_errors_name_the_file_and_the_field(tmp_path: Path, text: str, problem: str) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(text)
    with pytest.raises(PriceFileError) as caught:
        read_price_file(prices)
    assert str(prices) in str(caught.value)
    assert problem in str(caught.value)


def test_check_config_refuses_an_invalid_price_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('["mock:echo"]\ninput_per_million = "-1"\n')
    config = tmp_path / "gateway.toml"
    config.write_text(f'[pricing]\nfile = "{prices}"\n')
    assert cli.main(["check-config", "--config", str(config)]) == 2
    assert capsys.readouterr().err.strip() == (
        f'config error at pricing.file: Value error, price file {prices}: "mock:echo".input_per_million: '
        "Input should be greater than or equal to 0"
    )
    prices.write_text('["mock:echo"]\ninput_per_million = "1"\n')
    assert cli.main(["check-config", "--config", str(config)]) == 0
    missing = tmp_path / "absent.toml"
    config.write_text(f'[pricing]\nfile = "{missing}"\n')
    assert cli.main(["check-config", "--config", str(config)]) == 2
    assert f"cannot read price file {missing}: No such file or directory" in capsys.readouterr().err


async def events_logged(gateway: GatewayProcess, event: str, count: int) -> list[dict[str, Any]]:
    """The gateway's log lines of `event`, once there are `count` of them."""
    for _ in range(200):
        found = [e for e in gateway.log_lines() if e.get("event") == event]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.025)
    raise AssertionError(f"no {event} logged: {gateway.log.read_text()}")


def priced(reply: chat_pb2.ChatResponse | chat_pb2.StreamFinish, per_input: int, per_output: int) -> Decimal:
    """What the reply's usage costs at the given prices per million tokens."""
    usage = reply.usage
    return D(usage.prompt_tokens * per_input + usage.completion_tokens * per_output) / MILLION


async def test_sighup_reloads_the_price_file_without_dropping_calls(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('["mock:echo"]\ninput_per_million = "1"\noutput_per_million = "2"\n')
    toml = (
        f'[server]\nhost = "127.0.0.1"\n[providers.mock]\nchunk_delay = 0.05\n[pricing]\nfile = "{prices}"\n'
    )
    text = " ".join(f"word{i}" for i in range(30))  # 30 chunks, 50 ms apart
    async with (
        gateway_process(tmp_path, toml) as gateway,
        grpc.aio.insecure_channel(gateway.address) as channel,
    ):
        stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        first = await stub.Chat(chat("mock:echo", "one"), timeout=10)
        assert first.cost.price_source == PRICE_FILE_SOURCE
        assert D(first.cost.total) == priced(first, 1, 2)

        stream = stub.ChatStream(chat_pb2.ChatStreamRequest(request=chat("mock:echo", text)), timeout=30)
        started, delta = await read_event(stream), await read_event(stream)
        assert started is not None
        assert started.HasField("start")
        assert delta is not None
        assert delta.HasField("text_delta")

        prices.write_text('["mock:echo"]\ninput_per_million = "3"\noutput_per_million = "5"\n')
        gateway.process.send_signal(signal.SIGHUP)
        [reloaded] = await events_logged(gateway, "prices_reloaded", 1)
        assert (reloaded["file"], reloaded["prices"]) == (str(prices), 1)
        second = await stub.Chat(chat("mock:echo", "two"), timeout=10)
        assert D(second.cost.total) == priced(second, 3, 5)

        # The stream that was in flight across the reload finishes, at the prices it started with.
        events = [delta]
        while (event := await read_event(stream)) is not None:
            events.append(event)
        finish = events[-1].finish
        assert events[-1].HasField("finish")
        assert "".join(e.text_delta.text for e in events if e.HasField("text_delta")) == text
        assert D(finish.cost.total) == priced(finish, 1, 2)

        # An unusable file on reload: the error is logged, the prices stay.
        prices.write_text(
            '["mock:echo"]\ninput_per_million = { base = "3", tiers = [{ start = 0, price = "-1" }] }\n'
        )
        gateway.process.send_signal(signal.SIGHUP)
        [failed] = await events_logged(gateway, "prices_reload_failed", 1)
        assert failed["level"] == "error"
        assert failed["error"] == (
            f'price file {prices}: "mock:echo".input_per_million: tiers[0].price: '
            "Input should be greater than or equal to 0"
        )
        third = await stub.Chat(chat("mock:echo", "three"), timeout=10)
        assert D(third.cost.total) == priced(third, 3, 5)
        assert gateway.process.returncode is None


def test_the_documented_examples_are_valid(tmp_path: Path) -> None:
    docs = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    section = docs[docs.index("**Long-context tiers.**") :]
    blocks = [block.split("```", 1)[0] for block in section.split("```toml\n")[1:]]
    tiers, price_file = blocks[0], blocks[1]
    vertex = '[providers.vertex]\nkind = "gemini"\napi_key = "key-for-this-test-only"\n'
    config = config_from(tmp_path, vertex + tiers)
    catalog = Catalog(config, enabled_providers(config))
    # The documented correction: 205,000 x 2.50 + 1,000 x 15; 199,000 x 1.25 + 1,000 x 10.
    assert total(catalog, "vertex", "gemini-2.5-pro", Usage(205_000, 1000)) == D("0.5275")
    assert total(catalog, "vertex", "gemini-2.5-pro", Usage(199_000, 1000)) == D("0.25875")
    path = tmp_path / "prices.toml"
    path.write_text(price_file)
    assert sorted(read_price_file(path)) == [
        "anthropic:claude-sonnet-4-5",
        "local:llama3.1:8b",
        "openai:gpt-4o-mini",
    ]


async def test_every_worker_reloads_on_sighup_to_the_supervisor(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text('["mock:echo"]\ninput_per_million = "1"\noutput_per_million = "2"\n')
    toml = f'[server]\nhost = "127.0.0.1"\n[pricing]\nfile = "{prices}"\n'
    async with (
        gateway_process(tmp_path, toml, "--workers", "2") as gateway,
        grpc.aio.insecure_channel(gateway.address) as channel,
    ):
        await events_logged(gateway, "serving", 2)
        prices.write_text('["mock:echo"]\ninput_per_million = "7"\noutput_per_million = "11"\n')
        gateway.process.send_signal(signal.SIGHUP)
        reloaded = await events_logged(gateway, "prices_reloaded", 2)
        assert sorted(e["worker"] for e in reloaded) == [0, 1]
        stub = gateway_service_pb2_grpc.GatewayServiceStub(channel)
        for text in ("one", "two", "three", "four"):
            reply = await stub.Chat(chat("mock:echo", text), timeout=10)
            assert D(reply.cost.total) == priced(reply, 7, 11)
