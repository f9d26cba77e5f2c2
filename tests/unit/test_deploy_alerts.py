"""Prometheus rules: every alert is documented and tested; every metric they use exists."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from stream import telemetry
from stream.config import REPO_ROOT

pytestmark = pytest.mark.unit

DEPLOY = REPO_ROOT / "deploy"
RULES = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
# promtool's rule unit tests, in several files (each with its own evaluation interval).
RULE_TEST_FILES = {
    path.name: yaml.safe_load(path.read_text())
    for path in sorted((DEPLOY / "prometheus" / "tests").glob("*_test.yml"))
}
RULE_TESTS = {"tests": [test for tests in RULE_TEST_FILES.values() for test in tests["tests"]]}
ALERTS = [rule for group in RULES["groups"] for rule in group["rules"] if "alert" in rule]
RECORDED = {
    rule["record"] for group in RULES["groups"] for rule in group["rules"] if "record" in rule
}
# Exported by every Prometheus target or by prometheus_client's process collector.
STANDARD = {"up", "process_cpu_seconds_total", "process_resident_memory_bytes"}


def exported_series() -> set[str]:
    """Every series name stream/telemetry.py exports."""
    names = set()
    for metric in vars(telemetry).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        base = metric._name
        names |= {
            "counter": {f"{base}_total"},
            "gauge": {base},
            "histogram": {f"{base}_bucket", f"{base}_count", f"{base}_sum"},
        }[metric._type]
    return names


def series_in(expr: str) -> set[str]:
    """Metric and recorded-series names in a PromQL expression (not labels, not functions)."""
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {n for n in names if ":" in n or n.startswith(("clickstream_", "process_")) or n == "up"}


def dashboard_exprs() -> list[str]:
    exprs = []
    for path in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            exprs += [t["expr"] for t in panel.get("targets", []) if "expr" in t]
    return exprs


def github_anchors(markdown: str) -> set[str]:
    anchors = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_there_are_alerts_and_recording_rules():
    assert len(ALERTS) >= 6
    assert "clickstream:conversion_rate:ratio1h" in RECORDED


@pytest.mark.parametrize("alert", ALERTS, ids=[a["alert"] for a in ALERTS])
def test_alert_has_severity_summary_description_and_runbook(alert):
    assert alert["labels"]["severity"] in ("critical", "warning")
    annotations = alert["annotations"]
    assert annotations["summary"].strip() and annotations["description"].strip()
    page, _, anchor = annotations["runbook_url"].partition("#")
    assert page == "deploy/README.md"
    assert anchor in github_anchors((REPO_ROOT / page).read_text()), anchor


@pytest.mark.parametrize("alert", ALERTS, ids=[a["alert"] for a in ALERTS])
def test_alert_is_unit_tested_firing_and_not_firing(alert):
    cases = [
        case
        for test in RULE_TESTS["tests"]
        for case in test.get("alert_rule_test", [])
        if case["alertname"] == alert["alert"]
    ]
    assert any(case.get("exp_alerts") for case in cases), "no firing case"
    assert any(not case.get("exp_alerts") for case in cases), "no not-firing case"


def test_rules_and_dashboards_use_only_exported_or_recorded_series():
    known = exported_series() | RECORDED | STANDARD
    exprs = [rule["expr"] for group in RULES["groups"] for rule in group["rules"]]
    exprs += dashboard_exprs()
    used = set().union(*(series_in(e) for e in exprs))
    assert used - known == set()
    assert "clickstream_events_received_total" in used  # the extraction works


def test_rule_tests_load_the_rules_file():
    assert "alerts_test.yml" in RULE_TEST_FILES
    for name, tests in RULE_TEST_FILES.items():
        assert tests["rule_files"] == ["../alerts.yml"], name
