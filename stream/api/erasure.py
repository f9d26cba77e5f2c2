"""The erasure endpoints (README, "Privacy"), served with the query API.

    DELETE /api/v1/visitors/{id}     erase an anonymous id (a device) or a user id (the
                                     person: every device linked to it); 202 + status URL
    GET    /api/v1/erasures/{id}     pending | complete (+ rows removed per table);
                                     answered across a restart (the `erasures` table)

Both need `Authorization: Bearer <CLICKSTREAM_ADMIN_TOKEN>` (401 without, 403 when
wrong); with no token configured, loopback callers only. 400: a malformed id; 404: an
id no table names and that was never erased; 503: erasure unavailable here.
"""

from __future__ import annotations

import hmac
import ipaddress

from aiohttp import web

from stream.config import Settings
from stream.privacy.erase import Erasures, UnknownId
from stream.privacy.subject import IdError

ERASURES = web.AppKey("erasures", Erasures)


def refusal(settings: Settings, request: web.Request) -> tuple[int, str] | None:
    """(status, reason) when the caller may not erase; None when it may."""
    header = request.headers.get("Authorization")
    if not settings.admin_token:
        forwarded = "Forwarded" in request.headers or "X-Forwarded-For" in request.headers
        remote = (request.remote or "").split("%")[0]
        try:
            loopback = ipaddress.ip_address(remote).is_loopback
        except ValueError:
            loopback = False
        if loopback and not forwarded:
            return None
        return 403, "erasure takes loopback callers, or set CLICKSTREAM_ADMIN_TOKEN"
    if not header:
        return 401, "erasure needs Authorization: Bearer <admin token>"
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), settings.admin_token.encode()
    ):
        return 403, "the admin token is wrong"
    return None


def _service(request: web.Request) -> Erasures | None:
    return request.app.get(ERASURES)


async def erase(request: web.Request) -> web.Response:
    from stream.api.app import SETTINGS, error, json_response

    refused = refusal(request.app[SETTINGS], request)
    if refused:
        return error(*refused)
    service = _service(request)
    if service is None:
        return error(503, "erasure runs in the process that runs the sink")
    try:
        erasure = await service.erase(request.match_info["id"])
    except IdError as exc:
        return error(400, str(exc))
    except UnknownId:
        return error(404, "no such id: no table names it and it was never erased")
    body = erasure.view()
    body["status_url"] = f"/api/v1/erasures/{erasure.erasure_id}"
    return json_response(body, status=202)


async def status(request: web.Request) -> web.Response:
    import asyncio

    from stream.api.app import SETTINGS, error, json_response

    refused = refusal(request.app[SETTINGS], request)
    if refused:
        return error(*refused)
    service = _service(request)
    if service is None:
        return error(503, "erasure runs in the process that runs the sink")
    erasure_id = request.match_info["id"]
    if not erasure_id.isalnum() or len(erasure_id) > 64:
        return error(400, "an erasure id is up to 64 letters and digits")
    answer = await asyncio.to_thread(service.status, erasure_id)
    if answer is None:
        return error(404, "no such erasure")
    return json_response(answer)


def add_routes(app: web.Application, service: Erasures | None) -> None:
    if service is not None:
        app[ERASURES] = service
    app.router.add_delete("/api/v1/visitors/{id}", erase)
    app.router.add_get("/api/v1/erasures/{id}", status)
