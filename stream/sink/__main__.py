"""`python -m stream.sink`: the sink and the query API in one process (it owns chdb).

Settings come from the environment (stream/config.py). Two knobs for tests and
rehearsals, outside Settings: CLICKSTREAM_SINK_SESSION_TIMEOUT_MS (the consumer's group
session timeout, default 6000; a restart after a crash waits for it) and
CLICKSTREAM_SINK_FAULT (writer.py). SIGTERM / SIGINT stop it cleanly: flush, commit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from stream import config
from stream.sink.consumer import run_sink, tune_gc


async def main() -> None:
    settings = config.load()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tune_gc()
    session_timeout_ms = int(os.environ.get("CLICKSTREAM_SINK_SESSION_TIMEOUT_MS", "6000"))
    await run_sink(settings, stop=stop, session_timeout_ms=session_timeout_ms)


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except config.SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
