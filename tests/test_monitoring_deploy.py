"""deploy/: the Prometheus alerting rules pass promtool (syntax, and unit tests that each alert
fires on the series it should and not on others), the Grafana dashboard is well formed, and every
metric the rules and the dashboard use is one a running gateway serves, in a scrape promtool's
linter accepts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import running_gateway

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "llm-gateway.json"
METRIC = re.compile(r"\bllm_gateway_[a-z_]+")


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    assert found is not None, "scripts/install-prometheus.sh (make test-python) installs it"
    return subprocess.run(
        [found, *args], input=stdin, capture_output=True, text=True, check=False, cwd=RULES.parent
    )


def dashboard_expressions() -> list[str]:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in board["panels"] for target in panel["targets"]]


def test_the_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 5 rules found" in checked.stdout
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_the_dashboard_is_well_formed() -> None:
    board = json.loads(DASHBOARD.read_text())
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels) >= 12
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
    cells = {
        (p["gridPos"]["x"] + dx, p["gridPos"]["y"] + dy)
        for p in panels
        for dx in range(p["gridPos"]["w"])
        for dy in range(p["gridPos"]["h"])
    }
    assert len(cells) == sum(p["gridPos"]["w"] * p["gridPos"]["h"] for p in panels), "panels overlap"


async def test_every_metric_the_rules_and_the_dashboard_use_is_served() -> None:
    async with (
        running_gateway("") as gw,
        aiohttp.ClientSession() as http,
        http.get(f"{gw.http_url}/metrics") as response,
    ):
        scrape = await response.text()
    linted = promtool("check", "metrics", stdin=scrape)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    served = set()
    for name, kind in re.findall(r"^# TYPE (\w+) (\w+)$", scrape, re.M):
        served.add(name)
        if kind == "histogram":
            served |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    used = {name for expr in [RULES.read_text(), *dashboard_expressions()] for name in METRIC.findall(expr)}
    assert used, "the rules and the dashboard use the gateway's metrics"
    assert used <= served, sorted(used - served)
