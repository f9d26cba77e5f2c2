#!/usr/bin/env bash
# Build stream/static/tracker.min.js (committed) from stream/static/tracker.js.
#
#   tools/build_tracker.sh
#
# Needs Node >= 18 and access to the npm registry: `npx` fetches a pinned
# terser once into the npm cache. Run it after every edit to tracker.js and
# commit both files. The banner records the first 16 hex digits of the
# source's sha256; tests/unit/test_tracker_size.py fails when the minified
# file is stale (hash mismatch) or over the 5 KB gzip budget.
set -euo pipefail
cd "$(dirname "$0")/.."

SRC=stream/static/tracker.js
OUT=stream/static/tracker.min.js
TERSER=terser@5.36.0

if command -v sha256sum >/dev/null 2>&1; then
  hash=$(sha256sum "$SRC" | cut -c1-16)
else
  hash=$(shasum -a 256 "$SRC" | cut -c1-16) # macOS
fi

{
  printf '/*! clickstream tracker.js v1 | src-sha256:%s | tools/build_tracker.sh */\n' "$hash"
  npx --yes "$TERSER" "$SRC" --compress passes=2 --mangle --comments false
} >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"

python3 - "$OUT" <<'PY'
import gzip, sys
data = open(sys.argv[1], "rb").read()
print(f"{sys.argv[1]}: {len(data)} bytes, {len(gzip.compress(data, 9))} bytes gzip -9")
PY
