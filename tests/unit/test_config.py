import subprocess
import sys

import pytest

from stream import config
from stream.config import SettingsError

pytestmark = pytest.mark.unit


def test_defaults_are_embedded():
    s = config.load({})
    assert s.embedded_broker and s.embedded_clickhouse
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.clickhouse_url.startswith("chdb://")
    assert s.database == "clickstream"
    assert s.write_keys == {config.DEV_WRITE_KEY: "dev"}


def test_server_dsn_names_the_database_and_is_masked():
    s = config.load({"CLICKHOUSE_DSN": "http://app:s3cret@ch:8123/shop"})
    assert s.database == "shop"
    assert "s3cret" not in repr(s)


def test_write_keys_with_source_names_are_masked():
    s = config.load({"CLICKSTREAM_WRITE_KEYS": "abcd1234:web, efgh5678"})
    assert s.write_keys == {"abcd1234": "web", "efgh5678": "efgh5678"}
    assert "abcd1234" not in repr(s)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CLICKSTREAM_HTTP_PORT": "eighty"}, "CLICKSTREAM_HTTP_PORT"),
        ({"CLICKSTREAM_HTTP_PORT": "70000"}, "between"),
        ({"CLICKSTREAM_PARTITIONS": "0"}, "CLICKSTREAM_PARTITIONS"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "localhost"}, "host:port"),
        ({"CLICKHOUSE_DSN": "mysql://x"}, "CLICKHOUSE_DSN"),
        ({"CLICKSTREAM_WRITE_KEYS": ","}, "CLICKSTREAM_WRITE_KEYS"),
        ({"CLICKSTREAM_API_PORT": "8080"}, "both 8080"),
        ({"CLICKSTREAM_ANONYMIZE_IP": "maybe"}, "true or false"),
        ({"CLICKSTREAM_CORS_ORIGINS": "shop.example"}, "http"),
    ],
)
def test_bad_values_name_the_variable(env, needle):
    with pytest.raises(SettingsError, match=needle):
        config.load(env)


def test_cli_bad_setting_is_one_line_and_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "stream.cli", "migrate"],
        env={"CLICKSTREAM_PARTITIONS": "lots", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "CLICKSTREAM_PARTITIONS" in lines[0]
    assert "Traceback" not in proc.stderr
