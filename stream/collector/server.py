"""The collector: Segment-compatible tracking API over HTTP, publishing to Kafka.

Browser trackers work unchanged: analytics.js 2.0's short paths (`/v1/t`, `/v1/b`, ...)
and its settings document, RudderStack JS v3's `/sourceConfig` and beacon batch, and
Snowplow's tracker protocol (`snowplow.py`); preflights are answered for the headers
they ask for, to configured origins only.

Each request is decoded and authenticated as a whole (intake), then each event is
validated on its own: valid events go to `clickstream.events`, invalid ones to
`clickstream.invalid` with their reasons. The response is sent only after Kafka has
acknowledged every record of the request, so an answered request is never lost.
"""

from __future__ import annotations

import gc
import logging
import time
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from stream.collector import consent, intake, sdk_config, snowplow
from stream.collector.accept import Acceptor
from stream.collector.consent import ConsentRules, DailySalt
from stream.collector.intake import IntakeError
from stream.collector.publish import Publisher
from stream.collector.validate import Validator
from stream.config import Settings
from stream.enrich import Enricher
from stream.privacy.suppressions import SuppressionList
from stream.records import EventRecord
from stream.telemetry import (
    EVENTS_ACCEPTED,
    EVENTS_RECEIVED,
    EVENTS_REJECTED,
    EVENTS_SUPPRESSED,
    REQUEST_LATENCY,
    REQUESTS_REJECTED,
    render,
)

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
ENDPOINTS = ("batch", "track", "page", "identify", "alias", "screen", "group")
SNOWPLOW_POST = "/com.snowplowanalytics.snowplow/tp2"
NETWORK_USER_COOKIE = "sp"  # Snowplow's collector cookie: the network user id
# Asked for by the SDKs' preflights (RudderStack: AnonymousId, SentAt, Rsa-*; Segment:
# X-Retry-Count; Snowplow: SP-Anonymous); any other requested header is answered too.
ALLOW_HEADERS = (
    "Authorization, Content-Type, Content-Encoding, AnonymousId, SentAt, X-Retry-Count,"
    " SP-Anonymous"
)
_HEADER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
PUBLISHER = web.AppKey("publisher", Publisher)
SETTINGS = web.AppKey("settings", Settings)
# Children of the per-request metrics, one per label value: `.labels()` locks on every call.
_received = cache(EVENTS_RECEIVED.labels)
_accepted = cache(EVENTS_ACCEPTED.labels)
_latency = cache(REQUEST_LATENCY.labels)


def json_response(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


class Collector:
    """Turns one HTTP request into published records and a Segment-style answer."""

    def __init__(
        self, settings: Settings, publisher: Publisher, suppressions: SuppressionList | None = None
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.suppressions = suppressions  # erased ids: their new events are dropped
        self.validator = Validator(settings.schemas_dir)
        self.enricher = Enricher(anonymize_ip=settings.anonymize_ip)
        self.consent_rules = ConsentRules(
            analytics_categories=frozenset(settings.consent_analytics_categories),
            marketing_categories=frozenset(settings.consent_marketing_categories),
            required=settings.consent_required,
            honor_gpc=settings.honor_gpc,
        )
        self.salt = DailySalt()
        self.acceptor = Acceptor(
            self.validator,
            self.enricher,
            self.consent_rules,
            self.salt,
            settings.max_clock_skew_s * 1000,
        )

    async def handle(self, request: web.Request, endpoint: str) -> web.Response:
        started = time.perf_counter()
        try:
            response = await self._handle(request, endpoint)
        except IntakeError as exc:
            REQUESTS_REJECTED.labels(str(exc.status), exc.code).inc()
            response = json_response({"success": False, "error": exc.reason}, exc.status)
        _latency(endpoint).observe(time.perf_counter() - started)
        return response

    async def _handle(self, request: web.Request, endpoint: str) -> web.Response:
        raw = await _read_body(request)
        body = intake.parse_json(
            intake.decode_body(raw, request.headers.get("Content-Encoding", ""))
        )
        source = intake.resolve_source(
            request.headers.get("Authorization", ""),
            body,
            self.settings.write_keys,
            request.query.get("writeKey", ""),
        )
        calls, shared = intake.split_calls(body, endpoint)
        answer = await self.ingest(request, source, calls, shared)
        status = 400 if answer["rejected"] and not answer["accepted"] else 200
        return json_response(answer, status)

    async def snowplow(self, request: web.Request, pixel: bool) -> web.Response:
        """Snowplow's tracker protocol: POST tp2 (JSON payload_data) or GET /i (the pixel)."""
        endpoint = "snowplow_pixel" if pixel else "snowplow"
        started = time.perf_counter()
        nuid = request.cookies.get(NETWORK_USER_COOKIE, "")
        new_nuid = "" if nuid else str(uuid.uuid4())
        try:
            answer = await self._snowplow(request, pixel, nuid or new_nuid)
            status = 400 if answer["rejected"] and not answer["accepted"] else 200
            response = json_response(answer, status)
        except IntakeError as exc:
            REQUESTS_REJECTED.labels(str(exc.status), exc.code).inc()
            response = json_response({"success": False, "error": exc.reason}, exc.status)
        if pixel:  # an <img> gets an image whatever happened; the reason is in a header
            reason = "" if response.status == 200 else str(response.status)
            response = web.Response(
                body=snowplow.PIXEL,
                content_type="image/gif",
                headers={"Cache-Control": "no-cache, no-store, must-revalidate"},
            )
            if reason:
                response.headers["X-Clickstream-Status"] = reason
        if new_nuid:
            secure = request.secure or request.headers.get("X-Forwarded-Proto", "") == "https"
            response.set_cookie(
                NETWORK_USER_COOKIE,
                new_nuid,
                max_age=365 * 86400,
                path="/",
                httponly=True,
                secure=secure,
                samesite="None" if secure else "Lax",
            )
        _latency(endpoint).observe(time.perf_counter() - started)
        return response

    async def _snowplow(self, request: web.Request, pixel: bool, nuid: str) -> dict[str, Any]:
        if pixel:
            events: list[Any] = [dict(request.query)]
        else:
            raw = await _read_body(request)
            body = intake.parse_json(
                intake.decode_body(raw, request.headers.get("Content-Encoding", ""))
            )
            try:
                events = snowplow.parse_post_body(body)
            except snowplow.SnowplowError as exc:
                raise IntakeError(400, str(exc), "bad_shape") from None
        apps = self.settings.snowplow_app_ids
        known = [apps[a] for a in map(snowplow.app_id, events) if a in apps]
        if not known:  # nothing in the request is authorised: refuse it whole
            app = next((a for a in map(snowplow.app_id, events) if a), "")
            raise IntakeError(
                401,
                f"app id {app[:100]!r} is not allowed: list it in CLICKSTREAM_SNOWPLOW_APP_IDS"
                if app
                else "missing app id (aid): set appId in newTracker",
                "bad_app_id",
            )
        by_source: dict[str, list[int]] = {}
        refused: dict[int, list[str]] = {}
        for index, event in enumerate(events):
            app = snowplow.app_id(event)
            if app in apps:
                by_source.setdefault(apps[app], []).append(index)
            else:  # next to authorised events: a dead letter of the request's first source
                by_source.setdefault(known[0], []).append(index)
                refused[index] = [f"aid: app id {app[:100]!r} is not allowed for this source"]
        total: dict[str, Any] = {"success": True, "accepted": 0, "rejected": 0}
        for source, indexes in by_source.items():
            calls: list[intake.Call] = []
            failed: dict[int, list[str]] = {}
            for index in indexes:
                if index in refused:
                    failed[index] = refused[index]
                    calls.append(intake.Call(index, events[index], intake.size_of(events[index])))
                    continue
                try:
                    call = snowplow.translate(
                        events[index],
                        heartbeat_s=self.settings.snowplow_heartbeat_s,
                        network_user_id=nuid,
                    )
                except snowplow.SnowplowError as exc:
                    call, failed[index] = events[index], [str(exc)]
                calls.append(intake.Call(index, call, intake.size_of(events[index])))
            answer = await self.ingest(request, source, calls, {}, originals=events, failed=failed)
            total["accepted"] += answer["accepted"]
            total["rejected"] += answer["rejected"]
            total["errors"] = total.get("errors", []) + answer.get("errors", [])
        total["success"] = not total["rejected"]
        if not total.get("errors"):
            total.pop("errors", None)
        return total

    async def ingest(
        self,
        request: web.Request,
        source: str,
        calls: list[intake.Call],
        shared: dict[str, Any],
        *,
        originals: list[Any] | None = None,
        failed: dict[int, list[str]] | None = None,
    ) -> dict[str, Any]:
        """Validate, normalize and publish the calls of one source; the Segment-style answer.

        `originals` (by call index) is what a dead letter keeps when the call was
        translated from another protocol; `failed` holds reasons found before validation.
        """
        received_at = int(time.time() * 1000)
        ip = request.remote or ""
        user_agent = request.headers.get("User-Agent", "")
        gpc = consent.header_on(request.headers.get("Sec-GPC"))
        dnt = consent.header_on(request.headers.get("DNT"))

        out = self.acceptor.sort(
            calls, shared, source, received_at, ip, user_agent, gpc, dnt, originals, failed or {}
        )
        events, invalid, errors, dropped = out.events, out.invalid, out.errors, out.dropped
        _received(source).inc(len(calls))
        accepted = len(events)
        if self.suppressions is not None and self.suppressions.matcher.hashes:
            events = self._unsuppressed(events, source)
        try:
            await self.publisher.publish(events, invalid)
        except Exception as exc:  # noqa: BLE001 - the client must retry; nothing was acknowledged
            log.warning("kafka publish failed: %s", type(exc).__name__)
            raise IntakeError(503, "events could not be stored, retry later", "kafka") from None
        _accepted(source).inc(accepted)
        for error in errors:
            EVENTS_REJECTED.labels(source, _reason_label(error["reasons"])).inc()

        answer: dict[str, Any] = {
            "success": not errors,
            "accepted": accepted + dropped,  # a dropped call is done with: no retry
            "rejected": len(errors),
        }
        if errors:
            answer["errors"] = errors
        return answer

    def _unsuppressed(self, events: list[EventRecord], source: str) -> list[EventRecord]:
        """Events of an erased id are dropped (and counted), answered as accepted: the
        client must not retry them, and whether an id was erased is not its business."""
        matcher = self.suppressions.matcher  # type: ignore[union-attr]
        kept = [
            e
            for e in events
            if not matcher.any((e.get("visitor_id"), e.get("anonymous_id"), e.get("user_id")))
        ]
        if len(kept) != len(events):
            EVENTS_SUPPRESSED.labels("collector", source).inc(len(events) - len(kept))
        return kept


def _reason_label(reasons: list[str]) -> str:
    """A bounded label for metrics: the field path of the first reason, not its free text."""
    first = reasons[0] if reasons else "unknown"
    head = first.split(":", 1)[0].strip()
    return head[:60] if " " not in head else first.split(" ", 1)[0][:60]


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > intake.MAX_REQUEST_BYTES:
        raise IntakeError(413, "request body is larger than 500 KB", "too_large")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise IntakeError(413, "request body is larger than 500 KB", "too_large") from None


@web.middleware
async def cors(request: web.Request, handler):
    """CORS for configured storefront origins (browsers post from the shop's own domain)."""
    settings = request.app[SETTINGS]
    origin = request.headers.get("Origin", "")
    if request.method == "OPTIONS":
        response: web.StreamResponse = web.Response(status=204)
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:  # redirects keep their Location header
                raise
            response = json_response({"success": False, "error": exc.reason}, exc.status)
    if origin and ("*" in settings.cors_origins or origin.rstrip("/") in settings.cors_origins):
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Access-Control-Allow-Methods"] = "POST, GET, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = _allow_headers(
            request.headers.get("Access-Control-Request-Headers", "")
        )
        response.headers["Access-Control-Max-Age"] = "86400"
        response.headers["Vary"] = "Origin"
    return response


def _allow_headers(requested: str) -> str:
    """Our list plus the header names a preflight asks for (names only: the origin check
    decides who may send them, this only tells the browser they are understood)."""
    names = [h.strip() for h in requested.split(",") if h.strip()]
    extra = [n for n in names[:32] if len(n) <= 64 and set(n) <= _HEADER_CHARS]
    known = {h.strip().lower() for h in ALLOW_HEADERS.split(",")}
    extra = [n for n in dict.fromkeys(extra) if n.lower() not in known]
    return ", ".join([ALLOW_HEADERS, *extra]) if extra else ALLOW_HEADERS


def build_app(
    settings: Settings, publisher: Publisher, suppressions: SuppressionList | None = None
) -> web.Application:
    # client_max_size bounds what aiohttp buffers; our own 500 KB check gives the JSON reason.
    app = web.Application(middlewares=[cors], client_max_size=intake.MAX_REQUEST_BYTES + 1)
    app[SETTINGS] = settings
    app[PUBLISHER] = publisher
    collector = Collector(settings, publisher, suppressions)

    for endpoint in ENDPOINTS:

        async def handler(request: web.Request, endpoint: str = endpoint) -> web.Response:
            return await collector.handle(request, endpoint)

        app.router.add_post(f"/v1/{endpoint}", handler)
        app.router.add_route("OPTIONS", f"/v1/{endpoint}", handler)
    for short, endpoint in intake.SHORT_PATHS.items():  # analytics.js 2.0: /v1/t, /v1/b, ...

        async def short_handler(request: web.Request, endpoint: str = endpoint) -> web.Response:
            return await collector.handle(request, endpoint)

        app.router.add_post(f"/v1/{short}", short_handler)

    async def rudder_beacon(request: web.Request) -> web.Response:  # sendBeacon, ?writeKey=
        return await collector.handle(request, "batch")

    app.router.add_post("/beacon/v1/batch", rudder_beacon)

    async def snowplow_post(request: web.Request) -> web.Response:
        return await collector.snowplow(request, pixel=False)

    async def snowplow_pixel(request: web.Request) -> web.Response:
        return await collector.snowplow(request, pixel=True)

    app.router.add_post(SNOWPLOW_POST, snowplow_post)
    app.router.add_get("/i", snowplow_pixel)

    def public(request: web.Request) -> tuple[str, str]:
        return sdk_config.public_host(
            request.headers, request.host, "https" if request.secure else "http"
        )

    async def segment_settings(request: web.Request) -> web.Response:
        write_key = request.match_info["write_key"]
        if write_key not in settings.write_keys:
            return json_response({"success": False, "error": "unknown write key"}, 401)
        scheme, host = public(request)
        response = json_response(sdk_config.segment_settings(write_key, scheme, host))
        response.headers["Cache-Control"] = "public, max-age=300"
        return response

    async def rudder_source_config(request: web.Request) -> web.Response:
        write_key = intake.basic_auth_user(request.headers.get("Authorization", ""))
        write_key = write_key or request.query.get("writeKey", "")
        if write_key not in settings.write_keys:
            return json_response({"success": False, "error": "unknown write key"}, 401)
        document = sdk_config.rudderstack_source_config(write_key, settings.write_keys[write_key])
        response = json_response(document)
        response.headers["Cache-Control"] = "private, max-age=300"
        return response

    app.router.add_get("/v1/projects/{write_key}/settings", segment_settings)
    app.router.add_get("/sourceConfig", rudder_source_config)
    app.router.add_get("/sourceConfig/", rudder_source_config)

    async def healthz(request: web.Request) -> web.Response:
        reason = await publisher.healthy()
        if reason:
            return json_response({"status": "unavailable", "reason": reason}, 503)
        return json_response({"status": "ok"})

    async def metrics(request: web.Request) -> web.Response:
        body, content_type = render()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def tracker(request: web.Request) -> web.StreamResponse:
        path = STATIC_DIR / "tracker.min.js"
        if not path.exists():
            path = STATIC_DIR / "tracker.js"
        if not path.exists():
            raise web.HTTPNotFound()
        return web.FileResponse(
            path,
            headers={
                "Content-Type": "application/javascript",
                "Cache-Control": "public, max-age=300",
            },
        )

    async def demo_index(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/demo/index.html")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/tracker.js", tracker)
    app.router.add_get("/demo", demo_index)
    app.router.add_get("/demo/", demo_index)
    if (STATIC_DIR / "demo").is_dir():
        app.router.add_static("/demo/", STATIC_DIR / "demo")

    async def on_startup(app: web.Application) -> None:
        await publisher.start()

    async def on_cleanup(app: web.Application) -> None:
        await publisher.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def serve(settings: Settings, host: str = "0.0.0.0") -> web.AppRunner:
    """Start the collector on settings.http_port; the caller keeps the runner to stop it."""
    suppressions = SuppressionList(settings)
    await suppressions.start()  # read to its end before the first event is accepted
    app = build_app(settings, Publisher(settings), suppressions)
    app.on_cleanup.append(lambda app: suppressions.stop())
    # auto_decompress off: intake inflates gzip itself, bounded to 500 KB (no zip bombs)
    runner = web.AppRunner(app, access_log=None, auto_decompress=False)
    await runner.setup()
    await web.TCPSite(runner, host, settings.http_port, reuse_address=True).start()
    _quiet_gc()
    return runner


def _quiet_gc() -> None:
    """Keep the garbage collector off the request path (the collector is its own process).

    A request's objects live until Kafka acknowledges it, long enough to be promoted, so
    full collections ran every half second and re-scanned everything loaded at start-up
    (schemas, user-agent rules): pauses of 30-100 ms. Frozen, start-up objects are never
    scanned again; a larger first generation lets request objects die before promotion.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)
