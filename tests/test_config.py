"""Configuration: defaults, file merge, ${ENV} interpolation, environment overrides, validation."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from llm_gateway.config import AzureOpenAIProviderConfig, ConfigError, load_config
from llm_gateway.providers import enabled_providers


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_embedded_defaults_enable_mock_and_keep_openai_off_without_a_key() -> None:
    config = load_config(None, {})
    assert config.server.port == 50051
    assert set(enabled_providers(config)) == {"mock"}
    assert set(enabled_providers(load_config(None, {"OPENAI_API_KEY": "sk-x"}))) == {"mock", "openai"}


def test_file_merges_over_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nport = 6000\n[providers.mock.models.echo]\ndisplay_name = "Echo"\n')
    config = load_config(path, {})
    assert config.server.port == 6000
    assert config.server.grace_period == 10.0  # untouched default
    echo = config.providers["mock"].models["echo"]
    assert echo.display_name == "Echo"
    # Tables merge key by key: the default price of mock:echo survives.
    assert echo.price is not None
    assert echo.price.input_per_million == Decimal("0.15")


def test_interpolation_required_and_fallback(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[providers.openai]\napi_key = "${MY_KEY}"\nbase_url = "${BASE:-http://localhost:8000/v1}"\n',
    )
    config = load_config(path, {"MY_KEY": "sk-abc"})
    openai = config.providers["openai"]
    assert openai.kind == "openai"
    assert openai.api_key is not None
    assert openai.api_key.get_secret_value() == "sk-abc"
    assert openai.base_url == "http://localhost:8000/v1"
    with pytest.raises(
        ConfigError, match=r"providers\.openai\.api_key: environment variable MY_KEY is not set"
    ):
        load_config(path, {})


def test_environment_overrides_last(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 6000\n")
    config = load_config(
        path,
        {
            "LLM_GATEWAY__SERVER__PORT": "7000",
            "LLM_GATEWAY__LOGGING__ACCESS_LOG": "false",
            "LLM_GATEWAY__ROUTING__AUTO": '["mock:echo"]',
        },
    )
    assert config.server.port == 7000
    assert config.logging.access_log is False
    assert config.routing.auto == ("mock:echo",)


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[server]\nport = 70000\n", {}, "config error at server.port"),
        ("[server]\nprot = 1\n", {}, "config error at server.prot: Extra inputs are not permitted"),
        ('[providers.openai]\nbase_url = "ftp://x"\n', {}, "config error at providers.openai.base_url"),
        ('[providers.x]\nkind = "nope"\n', {}, "providers.x"),
        ('[auth]\nkeys = [{ name = "a", key = "short" }]\n', {}, "at least 16 characters"),
        ('[auth]\nkeys = [{ name = "a" }]\n', {}, "set exactly one of 'key' and 'sha256'"),
        ('[aliases]\nfast = "nosuch:model"\n', {}, "aliases.fast: unknown provider 'nosuch'"),
        ('[routing]\nauto = ["gpt-4o"]\n', {}, "routing.auto[0]"),
        (
            '[providers.mock.models.x]\nprice = { free = true, input_per_million = "1" }\n',
            {},
            "a free model has no prices",
        ),
        (
            '[providers.mock.models.echo]\nfallbacks = ["gpt-4o"]\n',
            {},
            "providers.mock.models.echo.fallbacks[0]: 'gpt-4o' is not an alias or 'provider:model'",
        ),
        (
            "[providers.mock]\nretry = { max_retries = -1 }\n",
            {},
            "config error at providers.mock.retry.max_retries",
        ),
        (
            "[providers.mock]\nrate_limit = { requests_per_minute = 0 }\n",
            {},
            "config error at providers.mock.rate_limit.requests_per_minute",
        ),
        ("[providers.mock]\ntimeout = { first_token = 0 }\n", {}, "providers.mock.timeout.first_token"),
        ("not = [toml", {}, "is not valid TOML"),
        ("", {"LLM_GATEWAY__SERVER__PORT": "abc"}, "config error at server.port"),
    ],
)
def test_errors_name_the_bad_key(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_config(write(tmp_path, text), env)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "absent.toml", {})


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llm_gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        check=False,
    )


def test_check_config_command(tmp_path: Path) -> None:
    ok = run_cli("check-config", env={"OPENAI_API_KEY": "sk-secret-value-123"})
    assert ok.returncode == 0, ok.stderr
    assert "configuration OK" in ok.stdout
    assert "provider openai (openai): enabled" in ok.stdout
    assert "sk-secret-value-123" not in ok.stdout + ok.stderr

    plan = write(tmp_path, '[providers.mock.subscription]\nfee_usd = "2500"\nincluded_tokens = 50000000\n')
    planned = run_cli("check-config", "--config", str(plan))
    assert "subscription of mock: 2500 USD per month, covering 50,000,000 tokens" in planned.stdout

    bad = run_cli("check-config", "--config", str(write(tmp_path, "[server]\nport = -1\n")))
    assert bad.returncode == 2
    assert "config error at server.port" in bad.stderr


def test_hash_key_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "llm_gateway", "hash-key"],
        input="my-gateway-key\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    import hashlib

    assert result.stdout.strip() == hashlib.sha256(b"my-gateway-key").hexdigest()


@pytest.mark.parametrize(
    ("table", "key"),
    [("openai", "base_url"), ("anthropic", "base_url"), ("azure", "endpoint")],
)
def test_provider_urls_must_be_http_and_lose_their_trailing_slash(
    tmp_path: Path, table: str, key: str
) -> None:
    with pytest.raises(
        ConfigError, match=rf"providers\.{table}\.{key}: .*must start with http:// or https://"
    ):
        load_config(write(tmp_path, f'[providers.{table}]\n{key} = "ftp://example.com"\n'), {})
    config = load_config(write(tmp_path, f'[providers.{table}]\n{key} = "https://example.com/v1/"\n'), {})
    assert getattr(config.providers[table], key) == "https://example.com/v1"


def test_an_empty_azure_endpoint_is_unset(tmp_path: Path) -> None:
    azure = load_config(write(tmp_path, '[providers.azure]\nendpoint = ""\n'), {}).providers["azure"]
    assert isinstance(azure, AzureOpenAIProviderConfig)
    assert azure.endpoint is None


def test_budgets_quotas_and_webhooks_are_validated_and_summarised(tmp_path: Path) -> None:
    good = """
[budgets]
time_zone = "Europe/Paris"

[[budgets.limits]]
id = "search"
scope = "project:search"
limit_usd = "250.5"
period = "month"
thresholds = [80, 50]

[[auth.keys]]
name = "free-tier"
key = "a-key-of-sixteen-chars"
quota = { requests_per_hour = 100, tokens_per_hour = 50000 }

[[webhooks]]
name = "finops"
url = "https://hooks.example.com/t/TOKEN-123"
secret = "whsec-0123456789abcdef"

[fleet]
redis_url = "redis://:redis-PASS-42@cache.internal:6379/2"
limits_when_down = "refuse"
"""
    ok = run_cli("check-config", "--config", str(write(tmp_path, good)))
    assert ok.returncode == 0, ok.stderr
    assert "budget search: project:search, 250.5 USD per month (Europe/Paris), 50%, 80%" in ok.stdout
    assert "quota of key free-tier: 100 requests per hour, 50000 tokens per hour" in ok.stdout
    assert "webhook finops: cost_alert" in ok.stdout
    assert "TOKEN-123" not in ok.stdout
    assert "whsec" not in ok.stdout
    fleet = (
        "fleet: rate limits, pauses and circuit breakers shared on redis://cache.internal:6379/2 "
        "(while it is down: limits refuse, breakers local)"
    )
    assert fleet in ok.stdout
    assert "redis-PASS-42" not in ok.stdout
    for bad, where in [
        ('[[budgets.limits]]\nid = "x"\nscope = "team:x"\nlimit_usd = "1"\n', "budgets.limits.0.scope"),
        ('[[budgets.limits]]\nid = "x"\nscope = "gateway"\nlimit_usd = "-1"\n', "budgets.limits.0.limit_usd"),
        ('[[budgets.limits]]\nid = "Bad Id"\nscope = "gateway"\nlimit_usd = "1"\n', "budgets.limits.0.id"),
        ('[budgets]\ntime_zone = "Mars/Olympus"\n', "budgets.time_zone"),
        ('[fleet]\nredis_url = "http://cache:6379"\n', "fleet.redis_url"),
        ('[fleet]\nlimits_when_down = "maybe"\n', "fleet.limits_when_down"),
        ('[[webhooks]]\nname = "a"\nurl = "ftp://x"\nsecret = "0123456789abcdef"\n', "webhooks.0.url"),
        ('[[webhooks]]\nname = "a"\nurl = "https://x"\nsecret = "short"\n', "webhooks.0.secret"),
        (
            '[ledger]\nenabled = false\n[[budgets.limits]]\nid = "x"\nscope = "gateway"\nlimit_usd = "1"\n',
            "enable the ledger",
        ),
    ]:
        refused = run_cli("check-config", "--config", str(write(tmp_path, bad)))
        assert refused.returncode == 2, bad
        assert where in refused.stderr, refused.stderr


def test_a_provider_of_another_kind_under_a_default_name_replaces_the_default(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text('[providers.vertex]\nkind = "gemini"\napi_key = "key-for-this-test-only"\n')
    config = load_config(path, {})
    vertex = config.providers["vertex"]
    assert vertex.kind == "gemini"
    assert vertex.models == {}  # none of the default Vertex provider's models
    path.write_text('[providers.vertex]\nlocation = "europe-west4"\n')
    assert load_config(path, {}).providers["vertex"].models  # same kind: merged over the default
