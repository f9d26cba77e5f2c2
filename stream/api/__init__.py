"""The query API: read-only answers over ClickHouse, served by the sink's process."""

from stream.api.app import build_app

__all__ = ["build_app"]
