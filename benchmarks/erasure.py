"""Erasure time-to-complete on the embedded pipeline (README, "Privacy").

    .venv/bin/python -m benchmarks.erasure --visitors 500 --erasures 5

`clickstream run` on a fresh data directory (2 partitions, the test settings), traffic
for `--visitors` visitors (a few events each; every tenth identified, with a second
device), then `--erasures` anonymous ids and as many user ids erased one after the
other while a live stream goes on: the seconds from DELETE to "complete" (the API's
own measure) for each, and their median.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from tests.integration.test_erasure import AUTH, TOKEN, event, identify
from tests.support.pipeline import http, start_pipeline


def erase(pipeline, subject_id: str) -> float:
    status, answer = http("DELETE", f"{pipeline.api}/api/v1/visitors/{subject_id}", headers=AUTH)
    assert status == 202, answer
    url = pipeline.api + answer["status_url"]
    while answer["status"] == "pending":
        time.sleep(0.1)
        status, answer = http("GET", url, headers=AUTH)
    assert answer["status"] == "complete", answer
    return float(answer["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--visitors", type=int, default=500)
    parser.add_argument("--erasures", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = start_pipeline(
            Path(tmp) / "erase", CLICKSTREAM_ADMIN_TOKEN=TOKEN, CLICKSTREAM_PARTITIONS="2"
        )
        try:
            run = uuid.uuid4().hex[:6]
            visitors = [f"v-{run}-{i}" for i in range(args.visitors)]
            batch = []
            for i, v in enumerate(visitors):
                batch += [event(v), event(v, kind="Product Added")]
                if i % 10 == 0:
                    batch += [identify(v, f"u-{run}-{i}"), identify(f"{v}-b", f"u-{run}-{i}")]
                    batch += [event(f"{v}-b", f"u-{run}-{i}")]
                if len(batch) >= 100:
                    assert pipeline.post("/v1/batch", {"batch": batch})[0] == 200
                    batch = []
            if batch:
                pipeline.post("/v1/batch", {"batch": batch})
            pipeline.wait_for(
                "SELECT uniqExact(visitor_id) >= "
                f"{args.visitors} FROM clickstream.visitors WHERE visitor_id LIKE 'v-{run}-%'",
                [[True]],
                timeout=120,
            )
            pipeline.wait_for(
                f"SELECT count() > 0 FROM clickstream.customers WHERE user_id = 'u-{run}-0'",
                [[True]],
                timeout=60,
            )
            stop = threading.Event()

            def stream():
                while not stop.is_set():
                    pipeline.post("/v1/batch", {"batch": [event(v) for v in visitors[-20:]]})
                    time.sleep(0.2)

            threading.Thread(target=stream, daemon=True).start()
            anonymous = [erase(pipeline, visitors[1 + i]) for i in range(args.erasures)]
            users = [erase(pipeline, f"u-{run}-{10 * (i + 1)}") for i in range(args.erasures)]
            stop.set()
            print(f"anonymous ids: {anonymous}, median {statistics.median(anonymous):.2f}s")
            print(f"user ids (2 devices): {users}, median {statistics.median(users):.2f}s")
        finally:
            pipeline.stop()


if __name__ == "__main__":
    main()
