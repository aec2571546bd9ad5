"""deploy/compose and deploy/kubernetes, checked without Docker or a cluster: the Compose file
against the Compose Specification's JSON schema, Prometheus's scrape config with promtool, and
both sets against the gateway itself: their gateway.toml loads with the gateway's own config
loader, and the ports, probes, grace periods, user and secrets they name agree with it and with
the Dockerfile."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from llm_gateway.config import load_config
from llm_gateway.config.schema import GatewayConfig

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose"
KUBERNETES = DEPLOY / "kubernetes"
# What an operator puts in .env or the Secret: the files must load with any values.
ENV = {
    "LLM_GATEWAY__LEDGER__URL": "postgresql://gateway:pw@postgres:5432/gateway",
    "LLM_GATEWAY__FLEET__REDIS_URL": "redis://:pw@redis:6379/0",
    "GATEWAY_ADMIN_KEY": "an-admin-key-of-some-length",
}


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    return loaded


def gateway_config(toml: str, tmp_path: Path) -> GatewayConfig:
    path = tmp_path / "gateway.toml"
    path.write_text(toml)
    return load_config(path, ENV)


def compose_schema() -> jsonschema.Draft7Validator:
    """The Compose Specification's schema (draft 7, which its `$schema` names without the `#` the
    library looks for)."""
    schema = json.loads((DEPLOY / "schemas" / "compose-spec.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_the_compose_file_is_valid_compose() -> None:
    compose_schema().validate(compose())


def test_a_compose_file_that_is_not_compose_is_refused() -> None:
    """The schema check can fail: a misspelt key and a wrong type are caught."""
    schema = compose_schema()
    for broken in (
        {**compose(), "service": {}},
        {**compose(), "services": {"gateway-1": {**compose()["services"]["gateway-1"], "ports": "50051"}}},
    ):
        try:
            schema.validate(broken)
        except jsonschema.ValidationError:
            continue
        raise AssertionError(f"accepted: {sorted(broken)}")


def test_the_compose_replicas_share_redis_and_postgres_and_wait_for_them(tmp_path: Path) -> None:
    services = compose()["services"]
    replicas = [name for name in services if name.startswith("gateway-")]
    assert replicas == ["gateway-1", "gateway-2"]
    config = gateway_config((COMPOSE / "gateway.toml").read_text(), tmp_path)
    for name in replicas:
        service = services[name]
        env = service["environment"]
        assert env["LLM_GATEWAY__LEDGER__URL"].startswith("postgresql://gateway:${POSTGRES_PASSWORD")
        assert env["LLM_GATEWAY__LEDGER__URL"].endswith("@postgres:5432/gateway")
        assert env["LLM_GATEWAY__FLEET__REDIS_URL"].endswith("@redis:6379/0")
        assert service["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }
        published = {int(p.split(":")[1]) for p in service["ports"]}
        assert published == {config.server.port, config.http.port}
        assert int(service["stop_grace_period"].rstrip("s")) > config.server.grace_period
    assert "healthcheck" in services["postgres"]
    assert "healthcheck" in services["redis"]
    assert config.fleet.redis_url is not None
    assert config.ledger.url.get_secret_value() == ENV["LLM_GATEWAY__LEDGER__URL"]
    for source in compose()["configs"].values():
        assert (COMPOSE / source["file"]).exists(), source


def test_the_compose_prometheus_scrapes_both_replicas_and_passes_promtool(tmp_path: Path) -> None:
    scrape = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    assert targets == ["gateway-1:8080", "gateway-2:8080"]
    # The rules file is mounted at /etc/prometheus in the container; here it is the repository's.
    scrape["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
    checked_file = tmp_path / "prometheus.yml"
    checked_file.write_text(yaml.safe_dump(scrape))
    promtool = shutil.which("promtool")
    assert promtool is not None, "scripts/install-prometheus.sh (make test-python) installs it"
    checked = subprocess.run(
        [promtool, "check", "config", str(checked_file)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def kubernetes() -> dict[str, dict[str, Any]]:
    """The manifests kustomization.yaml lists, by kind."""
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    found: dict[str, dict[str, Any]] = {}
    for resource in kustomization["resources"]:
        for document in yaml.safe_load_all((KUBERNETES / resource).read_text()):
            assert {"apiVersion", "kind", "metadata"} <= set(document), resource
            found[document["kind"]] = document
    return found


def test_the_kubernetes_manifests_agree_with_the_gateway(tmp_path: Path) -> None:
    manifests = kubernetes()
    assert set(manifests) == {"ConfigMap", "Deployment", "Service"}
    config = gateway_config(manifests["ConfigMap"]["data"]["gateway.toml"], tmp_path)
    deployment = manifests["Deployment"]
    assert deployment["apiVersion"] == "apps/v1"
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert deployment["spec"]["replicas"] >= 2
    spec = pod["spec"]
    assert spec["terminationGracePeriodSeconds"] > config.server.grace_period
    (container,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": config.server.port, "http": config.http.port}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["grpc"]["port"] == config.server.port, probe
    # The Dockerfile's unprivileged user, and no secret in the manifests: each comes from the Secret.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"USER {spec['securityContext']['runAsUser']}" in dockerfile
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
    assert {ref["name"] for ref in secrets.values()} == {"llm-gateway"}
    assert {"LLM_GATEWAY__LEDGER__URL", "LLM_GATEWAY__FLEET__REDIS_URL", "GATEWAY_ADMIN_KEY"} <= set(secrets)
    assert all(not ref.get("optional") for name, ref in secrets.items() if name in ENV)
    mounted = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/etc/llm-gateway", "/data", "/tmp"} <= mounted  # read-only root: the gateway writes here
    assert container["args"] == ["serve", "--config", "/etc/llm-gateway/gateway.toml"]
    service = manifests["Service"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
