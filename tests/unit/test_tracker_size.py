"""The browser tracker stays tiny, and the committed minified build matches its source.

Rebuild with tools/build_tracker.sh after editing stream/static/tracker.js.
"""

import gzip
import hashlib
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

STATIC = Path(__file__).resolve().parents[2] / "stream" / "static"
SRC = STATIC / "tracker.js"
MIN = STATIC / "tracker.min.js"
BUDGET = 5 * 1024  # bytes, minified + gzip -9


def test_minified_tracker_under_5kb_gzipped():
    data = MIN.read_bytes()
    size = len(gzip.compress(data, compresslevel=9))
    assert size < BUDGET, f"tracker.min.js is {size} B gzipped; budget is {BUDGET} B"


def test_minified_tracker_is_built_from_current_source():
    banner = MIN.read_text(encoding="utf-8").splitlines()[0]
    m = re.search(r"src-sha256:([0-9a-f]{16})", banner)
    assert m, f"tracker.min.js has no build banner: {banner[:120]!r}"
    expected = hashlib.sha256(SRC.read_bytes()).hexdigest()[:16]
    assert m.group(1) == expected, (
        "stream/static/tracker.min.js is stale: run tools/build_tracker.sh and commit the result"
    )


def test_minified_tracker_is_really_minified():
    # Guard against committing the readable source under the .min name.
    assert MIN.stat().st_size < SRC.stat().st_size / 2
