"""Structured logs: one JSON object per line on stderr, with the `extra=` fields.

Never log raw IPs, e-mail addresses or write keys: `scrub` masks them in case a
message or an exception text carries one.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time

import orjson

_IPV4 = re.compile(r"\b(\d{1,3}\.\d{1,3}\.\d{1,3})\.\d{1,3}\b")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "taskName"}


def scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    text = _EMAIL.sub("<email>", text)
    text = _IPV4.sub(r"\1.0", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage(), self.secrets),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["error"] = scrub(self.formatException(record.exc_info), self.secrets)
        return orjson.dumps(entry, default=str).decode()


def setup(level: str = "INFO", secrets: tuple[str, ...] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Kafka and Faust internals stay at WARNING unless asked for (they log per message).
    verbose = os.environ.get("CLICKSTREAM_KAFKA_LOG_LEVEL", "WARNING").upper()
    for noisy in ("aiokafka", "faust", "mode", "kafka"):
        logging.getLogger(noisy).setLevel(verbose)
