"""The collector's drop-in routes for browser SDKs, over HTTP, with a publisher that
only records: Segment analytics.js 2.0's short paths, RudderStack's beacon and config,
Snowplow's tracker protocol (fixtures of real tracker payloads), preflights and
tracking plans."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.collector import snowplow
from stream.collector.server import build_app
from stream.collector.validate import Validator
from stream.config import REPO_ROOT, Settings
from tests.support.examples import examples

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "snowplow"
KEY = "shop-write-key"
ORIGIN = "http://shop.example:8000"


class RecordingPublisher:
    def __init__(self) -> None:
        self.events: list[dict] = []
        self.invalid: list[dict] = []

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def healthy(self) -> str:
        return ""

    async def publish(self, events, invalid) -> None:
        self.events.extend(events)
        self.invalid.extend(invalid)


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


@pytest.fixture
async def collector(tmp_path):
    schemas = tmp_path / "schemas"
    shutil.copytree(REPO_ROOT / "schemas" / "events", schemas / "events")
    plans = schemas / "tracking_plans"
    plans.mkdir()
    (plans / "strict.json").write_text(
        json.dumps(
            {
                "mode": "refuse",
                "events": {"Product List Viewed": {"type": "object", "required": ["list_id"]}},
            }
        )
    )
    (plans / "flagged.json").write_text(
        json.dumps({"mode": "flag", "unplanned_events": "refuse", "events": {}})
    )
    settings = Settings(
        write_keys={KEY: "shop", "strict-key": "strict", "flag-key": "flagged"},
        cors_origins=(ORIGIN,),
        snowplow_app_ids={"shop-web": "shop"},
        schemas_dir=schemas,
    )
    publisher = RecordingPublisher()
    client = TestClient(TestServer(build_app(settings, publisher)))  # type: ignore[arg-type]
    await client.start_server()
    client.publisher = publisher  # type: ignore[attr-defined]
    yield client
    await client.close()


def call(kind: str = "track", **fields) -> dict:
    base = {"type": kind, "anonymousId": "anon-1", "messageId": f"m-{kind}-{len(fields)}"}
    if kind == "track":
        base.update(event="Product Viewed", properties={"product_id": "p1", "price": 9.5})
    base.update(fields)
    return base


async def test_segment_short_paths_with_text_plain_and_basic_auth(collector):
    shorts = [("t", "track"), ("p", "page"), ("i", "identify"), ("g", "group"), ("s", "screen")]
    for short, kind in shorts:
        body = call(kind, messageId=f"ajs-{short}", writeKey=KEY, groupId="acme")
        response = await collector.post(
            f"/v1/{short}",
            data=orjson.dumps(body),
            headers={**auth(), "Content-Type": "text/plain", "Origin": ORIGIN},
        )
        assert response.status == 200, await response.text()
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    alias = {"type": "alias", "userId": "u1", "previousId": "anon-1", "messageId": "ajs-a"}
    response = await collector.post("/v1/a", data=orjson.dumps(alias), headers=auth())
    assert response.status == 200, await response.text()
    batch = {"batch": [call(messageId="b1"), call("page", messageId="b2")], "writeKey": KEY}
    response = await collector.post("/v1/b", data=orjson.dumps(batch), headers=auth())
    assert (await response.json())["accepted"] == 2
    events = collector.publisher.events
    kinds = ["track", "page", "identify", "group", "screen", "alias", "track", "page"]
    assert [e["type"] for e in events] == kinds
    assert {e["source"] for e in events} == {"shop"}


async def test_long_group_path(collector):
    response = await collector.post("/v1/group", json=call("group", groupId="g1"), headers=auth())
    assert response.status == 200


async def test_preflight_answers_the_headers_asked_for_only_to_allowed_origins(collector):
    asked = "anonymousid, sentat, content-type, rsa-retry-attempt, rsa-retry-reason, x-custom"
    response = await collector.options(
        "/v1/track",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": asked,
        },
    )
    assert response.status == 204
    allowed = {
        h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert {h.strip() for h in asked.split(",")} <= allowed
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    response = await collector.options(
        "/v1/track",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Headers": asked},
    )
    assert "Access-Control-Allow-Origin" not in response.headers


async def test_segment_settings_document(collector):
    response = await collector.get(f"/v1/projects/{KEY}/settings", headers={"Origin": ORIGIN})
    assert response.status == 200
    settings = await response.json()
    segmentio = settings["integrations"]["Segment.io"]
    assert segmentio["apiKey"] == KEY
    assert segmentio["apiHost"] == f"{collector.host}:{collector.port}/v1"
    assert segmentio["protocol"] == "http"
    assert settings["metrics"]["sampleRate"] == 0
    forwarded = await collector.get(
        f"/v1/projects/{KEY}/settings",
        headers={"X-Forwarded-Host": "collect.shop.example", "X-Forwarded-Proto": "https"},
    )
    segmentio = (await forwarded.json())["integrations"]["Segment.io"]
    assert (segmentio["apiHost"], segmentio["protocol"]) == ("collect.shop.example/v1", "https")
    assert (await collector.get("/v1/projects/nope/settings")).status == 401


async def test_rudderstack_source_config_and_beacon(collector):
    response = await collector.get(f"/sourceConfig/?p=npm&v=3.34.1&writeKey={KEY}")
    assert response.status == 200
    config = await response.json()
    assert config["source"]["enabled"] is True and config["source"]["destinations"] == []
    assert (await collector.get("/sourceConfig/?writeKey=nope")).status == 401
    beacon = {"batch": [call(messageId="rs-1"), call("page", messageId="rs-2")], "sentAt": "x"}
    beacon["sentAt"] = "2024-05-01T10:00:00.000Z"
    response = await collector.post(
        f"/beacon/v1/batch?writeKey={KEY}",
        data=orjson.dumps(beacon),
        headers={"Content-Type": "text/plain;charset=UTF-8"},
    )
    assert response.status == 200, await response.text()
    assert [e["message_id"] for e in collector.publisher.events] == ["rs-1", "rs-2"]


async def test_a_spec_valid_event_without_properties_is_accepted(collector):
    body = call(event="Product List Viewed", properties={})
    response = await collector.post("/v1/track", json=body, headers=auth())
    assert (await response.json())["accepted"] == 1
    bad = call(properties={"price": "9.50"})
    response = await collector.post("/v1/track", json=bad, headers=auth())
    assert response.status == 400
    assert "properties.price: must be a number" in (await response.json())["errors"][0]["reasons"]


async def test_tracking_plan_refuse_and_flag(collector):
    body = call(event="Product List Viewed", properties={"category": "Games"})
    response = await collector.post("/v1/track", json=body, headers=auth("strict-key"))
    answer = await response.json()
    assert response.status == 400
    assert answer["errors"][0]["reasons"] == ["tracking plan: properties.list_id is required"]
    body["properties"]["list_id"] = "games"
    response = await collector.post("/v1/track", json=body, headers=auth("strict-key"))
    assert response.status == 200
    response = await collector.post("/v1/track", json=call(), headers=auth("flag-key"))
    assert response.status == 200
    flagged = collector.publisher.events[-1]
    assert flagged["context"]["tracking_plan"]["violations"] == [
        "event: 'Product Viewed' is not in the tracking plan of 'flagged'"
    ]


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


async def test_snowplow_post_fixtures_map_to_our_events(collector):
    body = fixture("tp2_journey.json")
    response = await collector.post(
        "/com.snowplowanalytics.snowplow/tp2",
        data=orjson.dumps(body),
        headers={"Content-Type": "application/json; charset=UTF-8", "Origin": ORIGIN},
    )
    answer = await response.json()
    assert response.status == 200, answer
    assert answer == {"success": True, "accepted": len(body["data"]), "rejected": 0}
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "sp=" in response.headers.get("Set-Cookie", "")
    events = collector.publisher.events
    names = [e["event"] or e["type"] for e in events]
    expected = fixture("tp2_journey.expected.json")
    assert names == expected["names"]
    assert {e["source"] for e in events} == {"shop"}
    assert {e["anonymous_id"] for e in events} == {expected["domain_user_id"]}
    assert [e["message_id"] for e in events] == [ev["eid"] for ev in body["data"]]
    by_name = {e["event"]: e for e in events if e["event"]}
    for name, properties in expected["properties"].items():
        got = by_name[name]["properties"]
        assert {k: got.get(k) for k in properties} == properties, name
    assert by_name["Page Ping"]["properties"]["engaged_seconds"] == 10


async def test_snowplow_unknown_app_id_is_refused(collector):
    body = fixture("tp2_journey.json")
    for event in body["data"]:
        event["aid"] = "someone-else"
    response = await collector.post("/com.snowplowanalytics.snowplow/tp2", json=body)
    assert response.status == 401
    assert "CLICKSTREAM_SNOWPLOW_APP_IDS" in (await response.json())["error"]
    assert collector.publisher.events == []


async def test_snowplow_pixel_answers_a_gif(collector):
    query = fixture("pixel_page_view.json")
    response = await collector.get("/i", params=query)
    assert response.status == 200
    assert response.headers["Content-Type"] == "image/gif"
    assert await response.read() == snowplow.PIXEL
    (event,) = collector.publisher.events
    assert event["type"] == "page" and event["anonymous_id"] == query["duid"]
    response = await collector.get("/i", params={**query, "aid": "nope"})
    assert response.status == 200 and response.headers["X-Clickstream-Status"] == "401"
    assert len(collector.publisher.events) == 1


async def test_snowplow_bad_event_is_dead_lettered_with_its_original(collector):
    good = fixture("pixel_page_view.json")
    bad = {**good, "e": "ue", "ue_px": "%%%", "eid": "bad-1"}
    body = {
        "schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4",
        "data": [good, bad],
    }
    response = await collector.post("/com.snowplowanalytics.snowplow/tp2", json=body)
    answer = await response.json()
    assert (answer["accepted"], answer["rejected"]) == (1, 1)
    (dead,) = collector.publisher.invalid
    assert json.loads(dead["payload"])["ue_px"] == "%%%"
    response = await collector.post("/com.snowplowanalytics.snowplow/tp2", json={"data": 1})
    assert response.status == 400


async def test_snowplow_unlisted_app_ids_next_to_listed_ones_are_dead_letters(collector):
    body = fixture("tp2_journey.json")
    body["data"][1]["aid"] = "someone-else"
    del body["data"][2]["aid"]
    response = await collector.post("/com.snowplowanalytics.snowplow/tp2", json=body)
    answer = await response.json()
    assert response.status == 200
    assert (answer["accepted"], answer["rejected"]) == (len(body["data"]) - 2, 2)
    assert [e["index"] for e in answer["errors"]] == [1, 2]
    assert [d["message_id"] for d in collector.publisher.invalid] == [
        body["data"][1]["eid"],
        body["data"][2]["eid"],
    ]


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20))
FIELDS = st.sampled_from(
    [
        "e",
        "eid",
        "aid",
        "duid",
        "uid",
        "nuid",
        "dtm",
        "stm",
        "ttm",
        "url",
        "refr",
        "page",
        "se_ac",
        "se_ca",
        "se_va",
        "ue_pr",
        "ue_px",
        "co",
        "cx",
        "tr_tt",
        "ti_qu",
        "vid",
        "pp_mix",
    ]
)
EVENT_TYPES = st.sampled_from(["pv", "pp", "se", "ue", "tr", "ti", "xx", ""])


@settings(max_examples=examples(150), deadline=None)
@given(
    kind=EVENT_TYPES,
    fields=st.dictionaries(
        FIELDS, st.one_of(SCALARS, st.dictionaries(st.text(max_size=5), SCALARS))
    ),
)
def test_snowplow_translation_only_ever_gives_a_reason(kind, fields):
    """Any event, however odd, becomes a call or a SnowplowError: never another exception,
    and the call it becomes is validated like any other (reasons, not errors)."""
    event = {"e": kind, **fields} if "e" not in fields else fields
    try:
        call = snowplow.translate(event, heartbeat_s=10)
    except snowplow.SnowplowError:
        return
    assert isinstance(VALIDATOR.validate(call), list)


VALIDATOR = Validator(REPO_ROOT / "schemas")


async def test_snowplow_network_user_id_comes_from_the_sp_cookie(collector):
    query = fixture("pixel_page_view.json")
    response = await collector.get("/i", params=query, headers={"Cookie": "sp=nuid-123"})
    assert response.status == 200 and "Set-Cookie" not in response.headers
    (event,) = collector.publisher.events
    assert event["context"]["snowplow"]["network_user_id"] == "nuid-123"
    assert event["anonymous_id"] == query["duid"]  # the domain user id stays the visitor
    anonymous = {k: v for k, v in query.items() if k != "duid"}  # anonymous tracking
    await collector.get("/i", params={**anonymous, "eid": "e-2"}, headers={"Cookie": "sp=n-9"})
    assert collector.publisher.events[-1]["anonymous_id"] == "n-9"
