"""The start-up documents browser SDKs load before they send anything, pure.

- Segment analytics.js 2.0 fetches `{cdn}/v1/projects/{writeKey}/settings`: which
  destinations run and where `Segment.io` (the tracking API) is. Ours names the
  collector itself as the API host and turns off everything that would reach
  Segment's own hosts (remote plugins, middleware, error metrics).
- RudderStack JS SDK v3 fetches `{configUrl}/sourceConfig/?writeKey=...`: the source,
  its destinations (none: device-mode destinations would load from RudderStack's CDN)
  and stats collection (off: it would post to the data plane's `rsaMetrics`).

The collector's public address comes from the request (Host, X-Forwarded-Proto and
X-Forwarded-Host behind a proxy), so one document serves any deployment.
"""

from __future__ import annotations

from typing import Any


def public_host(headers: Any, fallback_host: str, fallback_scheme: str) -> tuple[str, str]:
    """(scheme, host[:port]) as the browser sees the collector."""
    forwarded_host = (headers.get("X-Forwarded-Host") or "").split(",")[0].strip()
    forwarded_proto = (headers.get("X-Forwarded-Proto") or "").split(",")[0].strip().lower()
    host = forwarded_host or headers.get("Host") or fallback_host
    scheme = forwarded_proto if forwarded_proto in ("http", "https") else fallback_scheme
    return scheme, host


def segment_settings(write_key: str, scheme: str, host: str) -> dict[str, Any]:
    """analytics.js's CDN settings, with the collector as the tracking API."""
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": f"{host}/v1",
                "protocol": scheme,
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
                "versionSettings": {"version": "4.4.7", "componentTypes": ["browser"]},
            }
        },
        "plan": {
            "track": {"__default": {"enabled": True, "integrations": {}}},
            "identify": {"__default": {"enabled": True}},
            "group": {"__default": {"enabled": True}},
        },
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }


def rudderstack_source_config(write_key: str, source: str) -> dict[str, Any]:
    """RudderStack's `/sourceConfig` answer for the source behind a write key."""
    return {
        "isHosted": False,
        "source": {
            "id": f"clickstream-{source}",
            "name": source,
            "writeKey": write_key,
            "workspaceId": "clickstream",
            "enabled": True,
            "config": {
                "statsCollection": {
                    "errors": {"enabled": False},
                    "metrics": {"enabled": False},
                },
            },
            "destinations": [],
        },
    }
