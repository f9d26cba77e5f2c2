"""Grafana: the committed dashboards are the builder's output and well-formed, and they
use only the datasources the provisioning creates."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

from stream.config import REPO_ROOT

pytestmark = pytest.mark.unit

GRAFANA = REPO_ROOT / "deploy" / "grafana"
DATASOURCES = yaml.safe_load(
    (GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text()
)
PROVIDERS = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "dashboards.yml").read_text())
PROVISIONED = {ds["uid"]: ds for ds in DATASOURCES["datasources"]}


def load_builder():
    spec = importlib.util.spec_from_file_location("grafana_build", GRAFANA / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BUILDER = load_builder()
BOARDS = {
    path.name: json.loads(path.read_text())
    for path in sorted((GRAFANA / "dashboards").glob("*.json"))
}


def test_committed_json_is_the_builder_output():
    built = BUILDER.dashboards()
    assert sorted(built) == sorted(BOARDS), "run: python deploy/grafana/build.py"
    for name, board in built.items():
        committed = (GRAFANA / "dashboards" / name).read_text()
        assert committed == BUILDER.render(board), (
            f"{name} is stale: run python deploy/grafana/build.py"
        )


def test_builder_check_mode_agrees():
    assert BUILDER.main(["--check"]) == 0


def test_dashboard_uids_and_titles_are_unique():
    assert len({b["uid"] for b in BOARDS.values()}) == len(BOARDS)
    assert len({b["title"] for b in BOARDS.values()}) == len(BOARDS)


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_dashboard_structure(name):
    board = BOARDS[name]
    assert board["uid"] and len(board["uid"]) <= 40
    assert board["title"]
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36
    assert board["time"]["from"] and board["time"]["to"] == "now"
    panels = board["panels"]
    assert panels
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"}
        assert grid["w"] > 0 and grid["h"] > 0
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["title"]
        assert panel["targets"], f"{panel['title']}: no queries"
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids))


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_panels_do_not_overlap(name):
    taken: set[tuple[int, int]] = set()
    for panel in BOARDS[name]["panels"]:
        g = panel["gridPos"]
        cells = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_queries_use_provisioned_datasources(name):
    board = BOARDS[name]
    refs = [v["datasource"] for v in board["templating"]["list"] if "datasource" in v]
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        refs.append(panel["datasource"])
        refs += [t["datasource"] for t in panel["targets"]]
    assert refs
    for ref in refs:
        assert ref["uid"] in PROVISIONED, ref
        assert ref["type"] == PROVISIONED[ref["uid"]]["type"], ref


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_queries_are_complete(name):
    for panel in BOARDS[name]["panels"]:
        for target in panel.get("targets", []):
            if target["datasource"]["type"] == "prometheus":
                assert target["expr"].strip()
            else:
                assert target["editorType"] == "sql" and target["rawSql"].strip()
                assert target["queryType"] in ("table", "timeSeries")


def test_every_dashboard_has_a_source_variable():
    for board in BOARDS.values():
        assert "source" in {v["name"] for v in board["templating"]["list"]}


def test_journey_panels_exclude_bots():
    board = next(b for b in BOARDS.values() if b["uid"] == "clickstream-journey")
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            assert "is_bot" in target["rawSql"], panel["title"]


def test_clickhouse_datasource_settings():
    ds = next(d for d in DATASOURCES["datasources"] if d["type"] == "grafana-clickhouse-datasource")
    data = ds["jsonData"]
    assert data["host"] and data["port"] in (8123, 9000)
    assert data["protocol"] == ("http" if data["port"] == 8123 else "native")
    assert data["defaultDatabase"] == "clickstream"
    assert data["username"] and ds["secureJsonData"]["password"]


def test_prometheus_datasource_is_the_default():
    ds = next(d for d in DATASOURCES["datasources"] if d["type"] == "prometheus")
    assert ds["isDefault"] is True and ds["url"].startswith("http://")


def test_dashboard_provider_reads_a_directory():
    (provider,) = PROVIDERS["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
