"""docker-compose.yml, the Dockerfile and the Prometheus configs agree with the app:
only settings stream/config.py knows, values it accepts, ports it listens on."""

from __future__ import annotations

import re

import pytest
import yaml

from stream import config
from stream.config import ENV, REPO_ROOT, Settings

pytestmark = pytest.mark.unit

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
DOCKERFILE = (REPO_ROOT / "deploy" / "Dockerfile").read_text()
APP_SERVICES = sorted(
    name
    for name, svc in SERVICES.items()
    if isinstance(svc.get("build"), dict) and svc["build"].get("dockerfile") == "deploy/Dockerfile"
)
DEFAULTS = Settings()


def interpolate(value: str, environ: dict[str, str] | None = None) -> str:
    """Compose's ${VAR}, ${VAR:-default} and $$, with an empty (or given) environment."""
    environ = environ or {}

    def one(match: re.Match) -> str:
        if match[0] == "$$":
            return "$"
        name, default = match[1], match[3] or ""
        return environ.get(name) or default

    return re.sub(r"\$\$|\$\{(\w+)(:-([^}]*))?\}", one, value)


def environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def command(service: str) -> list[str]:
    return [str(part) for part in SERVICES[service].get("command", [])]


def test_app_services_are_built_from_the_dockerfile():
    assert APP_SERVICES == ["migrate", "sink", "worker"]


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_environment_uses_only_known_settings(service):
    unknown = set(environment(service)) - set(ENV)
    assert not unknown, f"{service} sets variables stream/config.py does not know: {unknown}"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_environment_loads(service):
    settings = config.load(environment(service))  # raises SettingsError on a bad value
    assert not settings.embedded_broker and not settings.embedded_clickhouse
    assert settings.database == "clickstream"
    assert settings.bootstrap_servers == "kafka:9092"
    assert settings.write_keys  # the default dev key unless CLICKSTREAM_WRITE_KEYS is set


def test_clickhouse_dsn_matches_the_clickhouse_service():
    dsn = config.load(environment("worker")).clickhouse_dsn
    ch = environment("clickhouse")
    assert dsn == (
        f"http://{ch['CLICKHOUSE_USER']}:{ch['CLICKHOUSE_PASSWORD']}@clickhouse:8123/{ch['CLICKHOUSE_DB']}"
    )
    assert "***" in repr(config.load(environment("worker")))  # the password is masked


def test_secrets_come_from_the_environment():
    raw = SERVICES["worker"]["environment"]
    assert "${CLICKHOUSE_PASSWORD" in raw["CLICKHOUSE_DSN"]
    assert raw["CLICKSTREAM_WRITE_KEYS"].startswith("${CLICKSTREAM_WRITE_KEYS")
    env = config.load(
        {k: interpolate(str(v), {"CLICKSTREAM_WRITE_KEYS": "k3y-123:shop"}) for k, v in raw.items()}
    )
    assert env.write_keys == {"k3y-123": "shop"}


def test_worker_scales_collector_and_processor():
    worker = SERVICES["worker"]
    assert "ports" not in worker, "fixed host ports would stop --scale worker=3"
    assert "container_name" not in worker
    assert command("worker") == ["worker", "--roles", "collector,processor"]


def test_sink_runs_sink_and_api():
    assert command("sink") == ["worker", "--roles", "sink,api"]


def test_migrate_runs_once_before_the_workers():
    assert command("migrate") == ["migrate"]
    assert SERVICES["migrate"]["restart"] == "no"
    for service in ("worker", "sink"):
        deps = SERVICES[service]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["kafka"]["condition"] == "service_healthy"


def test_kafka_is_one_kraft_node():
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = environment("kafka")
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://kafka:9092"
    assert "zookeeper" not in " ".join(env).lower()


def test_clickhouse_creates_the_database():
    assert SERVICES["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert environment("clickhouse")["CLICKHOUSE_DB"] == "clickstream"


def test_prometheus_mounts_its_config_and_rules():
    prometheus = SERVICES["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]


@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus.local.yml"])
def test_prometheus_config_references_the_rules_file(name):
    cfg = yaml.safe_load((PROMETHEUS_DIR / name).read_text())
    assert cfg["rule_files"] == ["alerts.yml"]
    assert (PROMETHEUS_DIR / "alerts.yml").exists()


def test_prometheus_discovers_every_worker_replica_through_docker_dns():
    cfg = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in cfg["scrape_configs"]}
    discovered = {
        (sd["names"][0], sd["port"])
        for sd in jobs["clickstream"]["dns_sd_configs"]
        if sd["type"] == "A"
    }
    assert discovered == {("worker", DEFAULTS.http_port), ("sink", DEFAULTS.api_port)}
    for name, _ in discovered:
        assert name in SERVICES
    (processor,) = jobs["clickstream-processor"]["dns_sd_configs"]
    assert (processor["names"], processor["port"]) == (["worker"], DEFAULTS.processor_port)


def test_secondary_ports_do_not_export_pipeline_metrics_twice():
    for name in ("prometheus.yml", "prometheus.local.yml"):
        cfg = yaml.safe_load((PROMETHEUS_DIR / name).read_text())
        for job in cfg["scrape_configs"]:
            if job["job_name"] in ("clickstream-processor", "clickstream-api"):
                (drop,) = job["metric_relabel_configs"]
                assert drop == {
                    "source_labels": ["__name__"],
                    "regex": "clickstream_.*",
                    "action": "drop",
                }


def test_local_prometheus_scrapes_the_default_ports():
    cfg = yaml.safe_load((PROMETHEUS_DIR / "prometheus.local.yml").read_text())
    targets = {
        t for job in cfg["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    assert targets == {
        f"127.0.0.1:{DEFAULTS.http_port}",
        f"127.0.0.1:{DEFAULTS.api_port}",
        f"127.0.0.1:{DEFAULTS.processor_port}",
    }


def test_grafana_installs_the_clickhouse_plugin_and_mounts_provisioning():
    grafana = SERVICES["grafana"]
    assert "grafana-clickhouse-datasource" in environment("grafana")["GF_INSTALL_PLUGINS"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    providers = yaml.safe_load(
        (REPO_ROOT / "deploy/grafana/provisioning/dashboards/dashboards.yml").read_text()
    )
    path = providers["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in grafana["volumes"]


def test_grafana_datasources_point_at_compose_services():
    datasources = yaml.safe_load(
        (REPO_ROOT / "deploy/grafana/provisioning/datasources/datasources.yml").read_text()
    )["datasources"]
    by_type = {d["type"]: d for d in datasources}
    assert by_type["prometheus"]["url"] == "http://prometheus:9090"
    clickhouse = by_type["grafana-clickhouse-datasource"]["jsonData"]
    assert clickhouse["host"] in SERVICES
    assert clickhouse["username"] == environment("clickhouse")["CLICKHOUSE_USER"]
    password = by_type["grafana-clickhouse-datasource"]["secureJsonData"]["password"]
    assert password == "$CLICKHOUSE_PASSWORD" and "CLICKHOUSE_PASSWORD" in environment("grafana")


def test_dockerfile_image_shape():
    assert re.search(r"^FROM python:3\.11-slim", DOCKERFILE, flags=re.M)
    assert re.search(r"^RUN pip install -e \.$", DOCKERFILE, flags=re.M)
    assert "COPY --from=core /app/build/core ./build/core" in DOCKERFILE
    assert re.search(r"^COPY schemas \./schemas", DOCKERFILE, flags=re.M)
    assert "CLICKSTREAM_SCHEMAS_DIR=/app/schemas" in DOCKERFILE
    assert 'ENTRYPOINT ["clickstream"]' in DOCKERFILE
    assert 'CMD ["worker"]' in DOCKERFILE
    exposed = set(re.search(r"^EXPOSE (.+)$", DOCKERFILE, flags=re.M)[1].split())
    assert exposed == {
        str(DEFAULTS.http_port),
        str(DEFAULTS.api_port),
        str(DEFAULTS.processor_port),
    }


def test_dockerfile_sets_only_known_settings():
    names = set(re.findall(r"\b(CLICKSTREAM_\w+|KAFKA_\w+|CLICKHOUSE_\w+)=", DOCKERFILE))
    assert names and names <= set(ENV)
