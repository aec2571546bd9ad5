"""The docs match the code: documented error reasons, the generated provider tables, and the
README's configuration example."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

from llm_gateway.config import load_config
from llm_gateway.providers.matrix import rewrite

ROOT = Path(__file__).resolve().parents[1]


def test_every_error_reason_is_documented_in_the_contract_and_docs() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "service" / "src").rglob("*.py"))
    in_code = set(re.findall(r'reason="([A-Z_]+)"', source))
    assert "INVALID_REQUEST" in in_code
    docs = (ROOT / "docs" / "errors.md").read_text()
    documented = set(re.findall(r"^\| `[A-Z_]+` \| `([A-Z_]+)` \|", docs, re.MULTILINE))
    assert documented == in_code
    services = sorted((ROOT / "protos" / "llmgateway" / "v1").glob("*_service.proto"))
    contract = "\n".join(path.read_text() for path in services)
    for reason in in_code:
        assert re.search(rf"\b{reason}\b", contract), f"{reason} is missing from the services' comments"


def test_the_generated_provider_tables_are_current() -> None:
    path = ROOT / "docs" / "providers.md"
    text = path.read_text()
    command = ".venv/bin/python -m llm_gateway.providers.matrix --write docs/providers.md"
    assert rewrite(text) == text, f"docs/providers.md is stale: run {command}"


def test_the_readme_configuration_example_is_a_valid_config(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Configuration") :]
    example = section[section.index("```toml\n") + len("```toml\n") :]
    example = example[: example.index("```")]
    # The example stores a key as a digest the reader makes with `llm-gateway hash-key`, as the
    # README says, rather than a digest of some published key.
    placeholder = "<its key's digest, from llm-gateway hash-key>"
    assert placeholder in example
    key = "a-key-only-the-search-service-knows"
    hashed = subprocess.run(
        [ROOT / ".venv" / "bin" / "llm-gateway", "hash-key"],
        input=f"{key}\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    digest = hashed.stdout.strip()
    assert digest == hashlib.sha256(key.encode()).hexdigest()
    path = tmp_path / "gateway.toml"
    path.write_text(example.replace(placeholder, digest))
    env = {name: "k" * 20 for name in ("CHECKOUT_GATEWAY_KEY", "BATCH_GATEWAY_KEY", "OPENAI_API_KEY")}
    config = load_config(path, env)
    assert {k.name: k.sha256 for k in config.auth.keys}["search-service"] == digest
    openai = config.providers["openai"]
    assert openai.rate_limit.requests_per_minute == 5000
    assert openai.models["gpt-4o-mini"].fallbacks == ("anthropic:claude-haiku-4-5",)


def test_the_model_group_example_is_a_valid_config(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "routing.md").read_text()
    section = text[text.index("## Model groups") :]
    example = section[section.index("```toml\n") + len("```toml\n") :]
    path = tmp_path / "gateway.toml"
    path.write_text(example[: example.index("```")])
    config = load_config(path, {"AZURE_EU_KEY": "k" * 32, "AZURE_US_KEY": "k" * 32})
    group = config.groups["gpt-4o-prod"]
    assert (group.policy, [(d.model, d.weight) for d in group.deployments]) == (
        "weighted",
        [("azure-eu:gpt-4o", 3), ("azure-us:gpt-4o", 1), ("openai:gpt-4o", 0)],
    )
