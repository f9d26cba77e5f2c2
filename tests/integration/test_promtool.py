"""The Prometheus configs, rules and rule unit tests pass `promtool` (Debian package prometheus)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import yaml

from stream.config import REPO_ROOT

pytestmark = pytest.mark.integration

PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not installed (apt-get install prometheus, or run tests/setup_tools.py as root)",
)


def promtool(*args: str) -> str:
    done = subprocess.run(
        [PROMTOOL, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


@needs_promtool
@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.local.yml"])
def test_config_is_valid_and_loads_the_rules(config):
    output = promtool("check", "config", str(PROMETHEUS_DIR / config))
    assert "1 rule files found" in output


@needs_promtool
def test_rules_are_valid():
    promtool("check", "rules", str(PROMETHEUS_DIR / "alerts.yml"))


@needs_promtool
@pytest.mark.parametrize(
    "tests", sorted(p.name for p in (PROMETHEUS_DIR / "tests").glob("*_test.yml"))
)
def test_rule_unit_tests_pass(tests):
    promtool("test", "rules", str(PROMETHEUS_DIR / "tests" / tests))


@needs_promtool
def test_dashboard_expressions_parse(tmp_path):
    """Every PromQL query of the Grafana dashboards, Grafana's variables filled in."""
    exprs = []
    for path in sorted((REPO_ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            exprs += [t["expr"] for t in panel.get("targets", []) if "expr" in t]
    assert exprs
    rules = [
        {
            "record": f"dashboard:query_{i}",
            "expr": expr.replace("$__rate_interval", "1m").replace("$source", ".*"),
        }
        for i, expr in enumerate(exprs)
    ]
    rules_file = tmp_path / "dashboard_queries.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    promtool("check", "rules", str(rules_file))
