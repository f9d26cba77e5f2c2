"""What each worker process runs. A worker's roles are split into processes:

- collector: the HTTP tracking API (its own process, so it keeps accepting events
  while a Faust worker recovers or rebalances);
- processor: the Faust worker (sessions, journeys, metrics);
- sink + api: the ClickHouse sink and the query API, in ONE process, because the
  embedded engine (chDB) allows one engine per data directory, in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from stream.config import Settings

ROLES = ("collector", "processor", "sink", "api")
log = logging.getLogger(__name__)


def parse_roles(raw: str) -> tuple[str, ...]:
    roles = tuple(dict.fromkeys(r.strip() for r in raw.split(",") if r.strip()))
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise ValueError(
            f"unknown role(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(ROLES)}"
        )
    return roles


def process_groups(roles: tuple[str, ...]) -> list[tuple[str, ...]]:
    """One process per group: the sink and the API share one (and its ClickHouse engine)."""
    groups: list[tuple[str, ...]] = []
    for role in ("collector", "processor"):
        if role in roles:
            groups.append((role,))
    storage = tuple(r for r in ("sink", "api") if r in roles)
    if storage:
        groups.append(storage)
    return groups


def run_group(group: tuple[str, ...], settings: Settings) -> None:
    """Run one process group in the foreground until SIGTERM/SIGINT."""
    if group == ("processor",):
        from stream import compiled
        from stream.processor.app import run_worker

        log.info("processor core: %s", compiled.STATUS)
        run_worker(settings)
        return
    _use_uvloop()
    if group == ("collector",):
        asyncio.run(_serve_collector(settings))
    else:
        asyncio.run(_serve_storage(settings, sink="sink" in group, api="api" in group))


def _use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _serve_collector(settings: Settings) -> None:
    from stream import compiled
    from stream.collector.server import serve

    log.info("collector core: %s", compiled.STATUS)
    stop = _stop_event()
    runner = await serve(settings)
    log.info("collector listening", extra={"port": settings.http_port})
    await stop.wait()
    await runner.cleanup()


async def _serve_storage(settings: Settings, *, sink: bool, api: bool) -> None:
    from stream.sink.consumer import run_sink, tune_gc

    stop = _stop_event()
    tune_gc()
    await run_sink(settings, stop=stop, sink=sink, serve_api=api)
