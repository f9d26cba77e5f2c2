"""Settings: every knob in one place, read once from the environment.

A bad value raises `SettingsError` with one line naming the variable; the CLI
prints it and exits with code 2 (never a traceback).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
DEV_WRITE_KEY = "dev-write-key"


class SettingsError(ValueError):
    """A setting has a bad value; the message is one line naming the variable."""


def _secret(value: str) -> str:
    return "***" if value else ""


@dataclass(frozen=True, slots=True)
class Settings:
    # Transport and storage: unset means "embedded".
    kafka_bootstrap_servers: str = ""
    clickhouse_dsn: str = ""
    clickhouse_database: str = ""  # overrides the DSN's database (tests use one per test)
    data_dir: Path = Path("./data")
    # Ports.
    http_port: int = 8080
    api_port: int = 8081
    broker_port: int = 9092
    processor_port: int = 6066
    # Topics.
    partitions: int = 4
    topic_prefix: str = ""
    # Collection: write key -> source name. "key" alone names the source after the key.
    write_keys: Mapping[str, str] = field(default_factory=lambda: {DEV_WRITE_KEY: "dev"})
    cors_origins: tuple[str, ...] = ("*",)
    anonymize_ip: bool = True
    # Consent (README, "Consent"): Segment consent categories (lower case) that grant
    # each purpose; whether a call without a consent object has none; whether Sec-GPC
    # and DNT withdraw marketing consent.
    consent_analytics_categories: tuple[str, ...] = ("analytics", "performance", "statistics")
    consent_marketing_categories: tuple[str, ...] = ("marketing", "advertising", "targeting")
    consent_required: bool = False
    honor_gpc: bool = False
    # Snowplow's JavaScript tracker sends no write key: app id (`aid`) -> source name.
    snowplow_app_ids: Mapping[str, str] = field(default_factory=dict)
    # Engaged seconds one Snowplow page ping stands for (the tracker's heartbeatDelay).
    snowplow_heartbeat_s: int = 10
    # Event time is clamped to receive time + this (a client's clock is data, not a clock).
    max_clock_skew_s: int = 180
    # Sessions and journeys (event time).
    session_timeout_s: int = 1800
    session_max_s: int = 86400
    allowed_lateness_s: int = 300
    # Arrival-time silence that closes a visitor's sessions; 0 = timeout + lateness.
    idle_close_s: int = 0
    lapse_days: int = 90
    # A visitor's state is dropped after this long without an event (event time), so
    # memory stays bounded; the visitor's last snapshot stays in ClickHouse.
    state_ttl_days: int = 365
    # Processor state: "memory" or "rocksdb"; "" = rocksdb with an external Kafka,
    # memory with the embedded broker (whose topics vanish on restart: state on disk
    # would outlive the offsets it refers to).
    state_store: str = ""
    faust_metrics: bool = False  # Faust's own sensors as faust_* metrics (per-message cost)
    # Processor state archived in ClickHouse by the sink and re-seeded into a fresh
    # broker's changelog topics at start (stream/restore.py): "on", "off", or "auto" =
    # on with the embedded broker (whose log is in memory only).
    state_archive: str = "auto"
    # Sink.
    sink_batch_rows: int = 10_000
    sink_batch_seconds: float = 1.0
    # Caught up with the topics: write a batch once its first row is this old, without
    # waiting for sink_batch_seconds (latency under light and steady load).
    sink_idle_flush_seconds: float = 0.25
    # The same for the processor's outputs (journey tables, metrics, archived state), at
    # least sink_idle_flush_seconds: each insert makes the engine write a new part (about
    # 15 ms of CPU on a 2-core machine, however few the rows), and these batches are small.
    sink_journey_flush_seconds: float = 1.0
    events_ttl_days: int = 0
    # API.
    admin_token: str = ""
    # Privacy: the salt of the hashes on the suppression list (stream/privacy/subject.py);
    # "" = a random one created once in the data directory.
    privacy_salt: str = ""
    # Operations.
    log_level: str = "INFO"
    # A clean stop of `clickstream run` waits this long, at most, for what was accepted
    # to be processed and stored (the embedded broker loses the rest); 0 = no wait.
    stop_drain_s: float = 30.0
    schemas_dir: Path = REPO_ROOT / "schemas"
    # Ignore the mypyc-compiled core even when it is built and current (stream/compiled.py
    # reads the variable itself, at import, before settings exist).
    pure_python: bool = False

    def __repr__(self) -> str:  # secrets masked
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "write_keys":
                value = {_secret(k): v for k, v in value.items()}
            elif f.name in ("admin_token", "privacy_salt"):
                value = _secret(value)
            elif f.name == "clickhouse_dsn" and value:
                value = _mask_dsn(value)
            parts.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(parts)})"

    @property
    def embedded_broker(self) -> bool:
        return not self.kafka_bootstrap_servers

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.broker_port}"

    @property
    def embedded_clickhouse(self) -> bool:
        return not self.clickhouse_dsn

    @property
    def clickhouse_url(self) -> str:
        """The DSN clickhouse-connect opens: the server's, or chdb's on the data dir."""
        if self.clickhouse_dsn:
            return self.clickhouse_dsn
        return f"chdb://{(self.data_dir / 'clickhouse').resolve()}"

    @property
    def database(self) -> str:
        if self.clickhouse_database:
            return self.clickhouse_database
        if self.clickhouse_dsn and not self.clickhouse_dsn.startswith("chdb:"):
            path = urlsplit(self.clickhouse_dsn).path.strip("/")
            if path:
                return path
        return "clickstream"

    @property
    def archives_state(self) -> bool:
        return self.state_archive == "on" or (self.state_archive == "auto" and self.embedded_broker)

    @property
    def store(self) -> str:
        return self.state_store or ("memory" if self.embedded_broker else "rocksdb")

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"


def _mask_dsn(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return dsn


# Environment variable -> (field, parser). The README table documents each one.
def _int(lo: int, hi: int):
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise SettingsError(f"{name}={raw!r} must be between {lo} and {hi}")
        return value

    return parse


def _float(lo: float, hi: float):
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name}={raw!r} is not a number") from None
        if not lo <= value <= hi:
            raise SettingsError(f"{name}={raw!r} must be between {lo} and {hi}")
        return value

    return parse


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name}={raw!r} must be true or false")


def _str(name: str, raw: str) -> str:
    return raw.strip()


def _path(name: str, raw: str) -> Path:
    if not raw.strip():
        raise SettingsError(f"{name} is empty; give a directory path")
    return Path(raw.strip())


def _bootstrap(name: str, raw: str) -> str:
    servers = [s.strip() for s in raw.split(",") if s.strip()]
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise SettingsError(f"{name}={raw!r}: each server must be host:port")
    return ",".join(servers)


def _dsn(name: str, raw: str) -> str:
    raw = raw.strip()
    if not raw:
        return ""
    scheme = urlsplit(raw).scheme
    if scheme not in ("http", "https", "chdb", "clickhouse"):
        raise SettingsError(
            f"{name}={_mask_dsn(raw)!r}: use http(s)://user:password@host:8123/database or chdb:///path"
        )
    return raw


def _database(name: str, raw: str) -> str:
    raw = raw.strip()
    if raw and (
        raw[0].isdigit() or not all(c.isascii() and (c.isalnum() or c == "_") for c in raw)
    ):
        raise SettingsError(f"{name}={raw!r} may hold letters, digits and '_' only")
    return raw


def _write_keys(name: str, raw: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        key, _, source = item.partition(":")
        key, source = key.strip(), source.strip() or key.strip()
        if len(key) < 4:
            raise SettingsError(f"{name}: write keys must be at least 4 characters long")
        keys[key] = source
    if not keys:
        raise SettingsError(f"{name} is set but names no write key")
    return keys


def _app_ids(name: str, raw: str) -> dict[str, str]:
    apps: dict[str, str] = {}
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        app, _, source = item.partition(":")
        app, source = app.strip(), source.strip() or app.strip()
        if not app or not all(c.isalnum() or c in "._-" for c in app + source):
            raise SettingsError(
                f"{name}: {item!r} must be app-id[:source] (letters, digits, . _ -)"
            )
        apps[app] = source
    return apps


def _origins(name: str, raw: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not origin.startswith(("http://", "https://")):
            raise SettingsError(f"{name}: origin {origin!r} must start with http:// or https://")
    return origins


def _categories(name: str, raw: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(c.strip().lower() for c in raw.split(",") if c.strip()))
    if not names:
        raise SettingsError(f"{name} is set but names no consent category")
    return names


def _state_store(name: str, raw: str) -> str:
    store = raw.strip().lower()
    if store not in ("memory", "rocksdb"):
        raise SettingsError(f"{name}={raw!r} must be memory or rocksdb")
    return store


def _state_archive(name: str, raw: str) -> str:
    mode = raw.strip().lower()
    if mode not in ("auto", "on", "off"):
        raise SettingsError(f"{name}={raw!r} must be auto, on or off")
    return mode


def _salt(name: str, raw: str) -> str:
    raw = raw.strip()
    if raw and len(raw) < 16:
        raise SettingsError(f"{name} must be at least 16 characters long (or unset)")
    return raw


def _log_level(name: str, raw: str) -> str:
    level = raw.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise SettingsError(f"{name}={raw!r} must be DEBUG, INFO, WARNING or ERROR")
    return level


def _topic_prefix(name: str, raw: str) -> str:
    raw = raw.strip()
    if raw and not all(c.isalnum() or c in "._-" for c in raw):
        raise SettingsError(f"{name}={raw!r} may hold letters, digits, '.', '_' and '-' only")
    return raw


ENV: dict[str, tuple[str, object]] = {
    "KAFKA_BOOTSTRAP_SERVERS": ("kafka_bootstrap_servers", _bootstrap),
    "CLICKHOUSE_DSN": ("clickhouse_dsn", _dsn),
    "CLICKSTREAM_DATABASE": ("clickhouse_database", _database),
    "CLICKSTREAM_DATA_DIR": ("data_dir", _path),
    "CLICKSTREAM_HTTP_PORT": ("http_port", _int(1, 65535)),
    "CLICKSTREAM_API_PORT": ("api_port", _int(1, 65535)),
    "CLICKSTREAM_BROKER_PORT": ("broker_port", _int(1, 65535)),
    "CLICKSTREAM_PROCESSOR_PORT": ("processor_port", _int(1, 65535)),
    "CLICKSTREAM_PARTITIONS": ("partitions", _int(1, 256)),
    "CLICKSTREAM_TOPIC_PREFIX": ("topic_prefix", _topic_prefix),
    "CLICKSTREAM_WRITE_KEYS": ("write_keys", _write_keys),
    "CLICKSTREAM_CORS_ORIGINS": ("cors_origins", _origins),
    "CLICKSTREAM_ANONYMIZE_IP": ("anonymize_ip", _bool),
    "CLICKSTREAM_CONSENT_ANALYTICS_CATEGORIES": ("consent_analytics_categories", _categories),
    "CLICKSTREAM_CONSENT_MARKETING_CATEGORIES": ("consent_marketing_categories", _categories),
    "CLICKSTREAM_CONSENT_REQUIRED": ("consent_required", _bool),
    "CLICKSTREAM_HONOR_GPC": ("honor_gpc", _bool),
    "CLICKSTREAM_SNOWPLOW_APP_IDS": ("snowplow_app_ids", _app_ids),
    "CLICKSTREAM_SNOWPLOW_HEARTBEAT_SECONDS": ("snowplow_heartbeat_s", _int(1, 3600)),
    "CLICKSTREAM_MAX_CLOCK_SKEW_SECONDS": ("max_clock_skew_s", _int(0, 86400)),
    "CLICKSTREAM_SESSION_TIMEOUT_SECONDS": ("session_timeout_s", _int(60, 86400)),
    "CLICKSTREAM_SESSION_MAX_SECONDS": ("session_max_s", _int(600, 7 * 86400)),
    "CLICKSTREAM_ALLOWED_LATENESS_SECONDS": ("allowed_lateness_s", _int(0, 86400)),
    "CLICKSTREAM_IDLE_CLOSE_SECONDS": ("idle_close_s", _int(0, 30 * 86400)),
    "CLICKSTREAM_LAPSE_DAYS": ("lapse_days", _int(1, 3650)),
    "CLICKSTREAM_STATE_TTL_DAYS": ("state_ttl_days", _int(1, 3650)),
    "CLICKSTREAM_STATE_STORE": ("state_store", _state_store),
    "CLICKSTREAM_FAUST_METRICS": ("faust_metrics", _bool),
    "CLICKSTREAM_STATE_ARCHIVE": ("state_archive", _state_archive),
    "CLICKSTREAM_SINK_BATCH_ROWS": ("sink_batch_rows", _int(1, 1_000_000)),
    "CLICKSTREAM_SINK_BATCH_SECONDS": ("sink_batch_seconds", _float(0.01, 60.0)),
    "CLICKSTREAM_SINK_IDLE_FLUSH_SECONDS": ("sink_idle_flush_seconds", _float(0.0, 60.0)),
    "CLICKSTREAM_SINK_JOURNEY_FLUSH_SECONDS": ("sink_journey_flush_seconds", _float(0.0, 60.0)),
    "CLICKSTREAM_EVENTS_TTL_DAYS": ("events_ttl_days", _int(0, 36500)),
    "CLICKSTREAM_ADMIN_TOKEN": ("admin_token", _str),
    "CLICKSTREAM_PRIVACY_SALT": ("privacy_salt", _salt),
    "CLICKSTREAM_LOG_LEVEL": ("log_level", _log_level),
    "CLICKSTREAM_STOP_DRAIN_SECONDS": ("stop_drain_s", _float(0.0, 3600.0)),
    "CLICKSTREAM_SCHEMAS_DIR": ("schemas_dir", _path),
    "CLICKSTREAM_PURE_PYTHON": ("pure_python", _bool),
}


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from the environment; raise SettingsError on a bad value."""
    environ = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for var, (attr, parse) in ENV.items():
        raw = environ.get(var)
        if raw is None:
            continue
        values[attr] = parse(var, raw)  # type: ignore[operator]
    settings = Settings(**values)  # type: ignore[arg-type]
    ports = {
        "CLICKSTREAM_HTTP_PORT": settings.http_port,
        "CLICKSTREAM_API_PORT": settings.api_port,
        "CLICKSTREAM_PROCESSOR_PORT": settings.processor_port,
    }
    if settings.embedded_broker:
        ports["CLICKSTREAM_BROKER_PORT"] = settings.broker_port
    seen: dict[int, str] = {}
    for var, port in ports.items():
        if port in seen:
            raise SettingsError(f"{var} and {seen[port]} are both {port}; give each its own port")
        seen[port] = var
    if settings.session_max_s < settings.session_timeout_s:
        raise SettingsError(
            "CLICKSTREAM_SESSION_MAX_SECONDS must be at least CLICKSTREAM_SESSION_TIMEOUT_SECONDS"
        )
    if both := set(settings.consent_analytics_categories) & set(
        settings.consent_marketing_categories
    ):
        raise SettingsError(
            "CLICKSTREAM_CONSENT_ANALYTICS_CATEGORIES and CLICKSTREAM_CONSENT_MARKETING_CATEGORIES"
            f" both name {sorted(both)[0]!r}; a category grants one purpose"
        )
    if settings.state_ttl_days < settings.lapse_days:
        raise SettingsError(
            "CLICKSTREAM_STATE_TTL_DAYS must be at least CLICKSTREAM_LAPSE_DAYS"
            " (a customer's state must outlive the wait for lapsing)"
        )
    return settings
