"""A real Prometheus (Debian's package) scrapes `clickstream run` with the project's local
scrape config and rules; after simulated traffic, the key series exist and move."""

import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
import yaml

from tests.support.pipeline import free_port, http

pytestmark = pytest.mark.integration
PROMETHEUS = shutil.which("prometheus")


def query(base: str, promql: str) -> list[dict]:
    status, answer = http("GET", f"{base}/api/v1/query?query={urllib.parse.quote(promql)}")
    assert status == 200, answer
    return answer["data"]["result"]


@pytest.mark.skipif(
    PROMETHEUS is None,
    reason="prometheus is not installed (tests/setup_tools.py installs it as root)",
)
def test_prometheus_scrapes_the_pipeline(tmp_path, pipeline):
    running = pipeline  # the shared one: its counters only have to exist and move
    prom = None
    try:
        config = yaml.safe_load(Path("deploy/prometheus/prometheus.local.yml").read_text())
        config["global"]["scrape_interval"] = "1s"
        config["global"]["evaluation_interval"] = "1s"
        ports = {
            "8080": running.http_port,
            "8081": running.api_port,
            "6066": running.processor_port,
        }
        for job in config["scrape_configs"]:
            for static in job["static_configs"]:
                static["targets"] = [
                    f"127.0.0.1:{ports[t.rsplit(':', 1)[1]]}" for t in static["targets"]
                ]
        config["rule_files"] = [str((tmp_path / "alerts.yml").resolve())]
        shutil.copy("deploy/prometheus/alerts.yml", tmp_path / "alerts.yml")
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        prom = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "prometheus.log", "wb"),  # noqa: SIM115 - lives with the process
        )
        base = f"http://127.0.0.1:{port}"
        # simulated storefront traffic through the collector
        subprocess.run(
            [
                sys.executable,
                "-m",
                "stream.cli",
                "simulate",
                "--rate",
                "300",
                "--duration",
                "8",
                "--seed",
                "3",
            ],
            env={**running.env},
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 40
        wanted = {
            "accepted": "sum(clickstream_events_accepted_total)",
            "processed": "sum(clickstream_events_processed_total)",
            "transitions": "sum(clickstream_stage_transitions_total)",
            "sink_rows": "sum(clickstream_sink_rows_written_total)",
            "request_p99": "histogram_quantile(0.99, sum by (le) (rate(clickstream_request_duration_seconds_bucket[30s])))",
            "lag": "max(clickstream_consumer_lag_records)",
        }
        found: dict[str, float] = {}
        while time.monotonic() < deadline and len(found) < len(wanted):
            for name, promql in wanted.items():
                result = query(base, promql)
                if (
                    result
                    and result[0]["value"][1] not in ("NaN",)
                    and (name in ("lag",) or float(result[0]["value"][1]) > 0)
                ):
                    found[name] = float(result[0]["value"][1])
            time.sleep(1)
        assert set(found) == set(wanted), (found, running.log_tail())
        targets = http("GET", f"{base}/api/v1/targets")[1]["data"]["activeTargets"]
        assert {t["health"] for t in targets} == {"up"}, targets
        # the counters keep moving with more traffic
        before = found["accepted"]
        subprocess.run(
            [
                sys.executable,
                "-m",
                "stream.cli",
                "simulate",
                "--rate",
                "300",
                "--duration",
                "3",
                "--seed",
                "4",
            ],
            env={**running.env},
            check=True,
            capture_output=True,
            timeout=60,
        )
        deadline = time.monotonic() + 15  # the next scrapes (every second)
        while (now := float(query(base, wanted["accepted"])[0]["value"][1])) <= before:
            assert time.monotonic() < deadline, (before, now)
            time.sleep(0.25)
        rules = http("GET", f"{base}/api/v1/rules")[1]["data"]["groups"]
        assert rules, "alert rules were not loaded"
    finally:
        if prom is not None:
            prom.terminate()
            prom.wait(10)
