"""`clickstream`: run the pipeline, its parts, and the tools around it."""

from __future__ import annotations

import asyncio
import sys
import threading
import time

import click

from stream import config, logs
from stream.broker import BrokerError
from stream.config import Settings, SettingsError

READY_TIMEOUT_S = 240.0


def _settings() -> Settings:
    settings = config.load()
    secrets = tuple(settings.write_keys) + ((settings.admin_token,) if settings.admin_token else ())
    logs.setup(settings.log_level, secrets)
    return settings


def _roles_option(default: str = "collector,processor,sink,api"):
    return click.option(
        "--roles",
        default=default,
        show_default=True,
        help="Comma-separated roles for this worker: collector, processor, sink, api.",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clickstream-journeys")
def cli() -> None:
    """Real-time customer-journey clickstream processor.

    Settings come from environment variables (see README, "Settings").
    """


@cli.command()
@_roles_option()
@click.option(
    "--simulate", is_flag=True, help="Feed the pipeline with simulated storefront traffic."
)
@click.option("--rate", default=50.0, show_default=True, help="Simulated events per second.")
def run(roles: str, simulate: bool, rate: float) -> None:
    """The whole pipeline in the foreground, on the embedded defaults when unconfigured.

    Ctrl-C or SIGTERM: the collector stops first, then (embedded broker) the runner waits
    up to CLICKSTREAM_STOP_DRAIN_SECONDS until what was accepted is processed and
    stored, then stops the processor, the sink and API, the broker. A second signal
    skips the wait and shortens every grace period; a third kills everything at once.
    """
    from rich.console import Console

    from stream.broker import EmbeddedBroker
    from stream.privacy.subject import load_salt
    from stream.roles import parse_roles
    from stream.supervisor import StopSignals, Supervisor, create_topics_sync

    settings = _settings()
    wanted = _parse(parse_roles, roles)
    load_salt(settings)  # created once, before the workers share it (bad: exit 2)
    # Recorded only; acted upon by this flow (a handler that took a lock could hang).
    stop = StopSignals().install()
    _check_ports(settings, wanted)
    console = Console(stderr=True)
    started = time.monotonic()
    broker = None
    supervisor = None
    ready = False
    try:
        if settings.embedded_broker:
            broker = EmbeddedBroker(settings.broker_port)
            broker.start()
            assert broker.pid is not None
            stop.guard("broker", broker.pid)
            console.print(
                f"[green]embedded broker[/] on 127.0.0.1:{settings.broker_port} (memory only)"
            )
        if stop.is_set():
            return
        created = create_topics_sync(settings)
        if created:
            console.print(f"created {len(created)} topics with {settings.partitions} partitions")
        from stream.restore import before_start  # processor state across broker restarts

        before_start(settings, console, stop)
        supervisor = Supervisor(settings, wanted, signals=stop)
        supervisor.start()

        def on_ready(child):
            console.print(f"[green]ready[/] {child.name} ({time.monotonic() - started:.1f}s)")

        # Generous: a processor recovering a large restored state takes a while (about
        # 2,500 changelog records/s on 2 cores); a child that dies ends the wait at once.
        ready = supervisor.wait_ready(READY_TIMEOUT_S, on_ready)
        if ready:
            console.print(_urls(settings, time.monotonic() - started), soft_wrap=True)
        elif not stop.is_set():
            console.print("[red]a process failed to start; see the log above[/]")
            raise SystemExit(1)
        if simulate and not stop.is_set():
            _start_simulation(settings, rate, stop)
        while not stop.is_set() and supervisor.check():
            if broker is not None and not broker.alive():
                console.print("[red]the embedded broker exited; stopping[/]")
                break
            time.sleep(0.2)
    finally:
        _stop_run(console, stop, settings, wanted, supervisor, broker, ready)


def _check_ports(settings: Settings, roles: tuple[str, ...]) -> None:
    """Every port this run will listen on is free, or one line naming who holds it."""
    from stream.broker import check_port_free

    ports = []
    if settings.embedded_broker:
        ports.append((settings.broker_port, "CLICKSTREAM_BROKER_PORT"))
    if "collector" in roles:
        ports.append((settings.http_port, "CLICKSTREAM_HTTP_PORT"))
    if "processor" in roles:
        ports.append((settings.processor_port, "CLICKSTREAM_PROCESSOR_PORT"))
    if "api" in roles:
        ports.append((settings.api_port, "CLICKSTREAM_API_PORT"))
    for port, variable in ports:
        check_port_free(port, variable)


def _stop_run(console, stop, settings: Settings, roles, supervisor, broker, ready: bool) -> None:
    """The ordered stop of `run`: collector, drain (embedded broker, all ready, no second
    signal), processor, sink and API, broker. Signals keep being recorded meanwhile."""
    import logging

    console.print("stopping..." if stop.count < 2 else "stopping fast...")
    started = time.monotonic()

    def drain() -> None:
        from stream.drain import drain as run_drain
        from stream.drain import groups_for

        if not ready or broker is None:
            return  # nothing accepted yet, or a Kafka cluster that keeps its log
        seconds = settings.stop_drain_s
        if seconds <= 0:
            logging.getLogger("stream.drain").info(
                "no drain (CLICKSTREAM_STOP_DRAIN_SECONDS=0): unprocessed events are lost"
            )
            return
        needed = [supervisor.child(r) for r in ("processor", "sink") if r in roles]

        def should_stop() -> bool:
            return stop.fast() or not broker.alive() or not all(c and c.alive() for c in needed)

        asyncio.run(run_drain(settings, groups_for(settings, roles), seconds, should_stop))

    try:
        if supervisor is not None:
            supervisor.stop(drain=drain, fast=stop.fast)
    finally:
        if broker is not None:
            broker.stop(timeout=1.0 if stop.fast() else 5.0)
            stop.release("broker")
    console.print(f"stopped in {time.monotonic() - started:.1f}s")


@cli.command()
@_roles_option()
def worker(roles: str) -> None:
    """A worker joining the Kafka cluster in KAFKA_BOOTSTRAP_SERVERS (no embedded broker).

    Several can run side by side and share partitions.
    """
    from stream.roles import parse_roles, process_groups, run_group
    from stream.supervisor import StopSignals, Supervisor, create_topics_sync

    settings = _settings()
    wanted = _parse(parse_roles, roles)
    create_topics_sync(settings)
    groups = process_groups(wanted)
    if len(groups) == 1:  # one process: run it here (a SIGKILL then really kills the worker)
        run_group(groups[0], settings)
        return
    stop = StopSignals().install()  # recorded only; watch() polls it
    supervisor = Supervisor(settings, wanted, signals=stop)
    try:
        supervisor.start()
        supervisor.watch()
    finally:
        supervisor.stop(fast=stop.fast)


@cli.command(hidden=True)
@click.argument("group")
def role(group: str) -> None:
    """Run one process group (used by the supervisor)."""
    from stream.roles import run_group

    run_group(tuple(group.split(",")), _settings())


@cli.command()
def broker() -> None:
    """The embedded broker alone, in the foreground, with the project's topics created."""
    from stream.broker import EmbeddedBroker
    from stream.supervisor import StopSignals, create_topics_sync

    settings = _settings()
    embedded = EmbeddedBroker(settings.broker_port)
    stop = StopSignals().install()  # recorded only; the loop below polls it
    try:
        embedded.start()
        assert embedded.pid is not None
        stop.guard("broker", embedded.pid)
        create_topics_sync(settings)
        click.echo(f"broker ready on 127.0.0.1:{settings.broker_port}", err=True)
        while not stop.is_set() and embedded.alive():
            time.sleep(0.2)
    finally:
        embedded.stop(timeout=1.0 if stop.fast() else 5.0)
        stop.release("broker")


@cli.command("restore-state", hidden=True)
def restore_state() -> None:
    """Re-seed empty changelog topics from processor_state (run by `run` before the processor)."""
    from stream.restore import main as restore_main

    raise SystemExit(restore_main(_settings()))


@cli.command()
def migrate() -> None:
    """Apply the pending ClickHouse migrations from schemas/clickhouse/ (idempotent)."""
    settings = _settings()
    from stream.sink.clickhouse import connect
    from stream.sink.migrate import apply

    applied = apply(connect(settings), settings)
    click.echo(
        f"applied {len(applied)} migration(s): {', '.join(map(str, applied)) or 'none pending'}"
    )


@cli.command()
@click.option(
    "--rate", default=200.0, show_default=True, help="Events per second (0 = as fast as possible)."
)
@click.option("--visitors", default=1000, show_default=True, help="Distinct visitors.")
@click.option(
    "--duration", default=30.0, show_default=True, help="Seconds to run (0 = until Ctrl-C)."
)
@click.option(
    "--events",
    "max_events",
    default=0,
    show_default=True,
    help="Stop after this many events (0 = no limit).",
)
@click.option(
    "--seed",
    default=1,
    show_default=True,
    help="Random seed: the same seed sends the same traffic.",
)
@click.option(
    "--url",
    default="",
    help="Collector base URL (default: http://127.0.0.1:$CLICKSTREAM_HTTP_PORT).",
)
@click.option(
    "--to-kafka", is_flag=True, help="Write straight to Kafka instead of posting over HTTP."
)
def simulate(
    rate: float,
    visitors: int,
    duration: float,
    max_events: int,
    seed: int,
    url: str,
    to_kafka: bool,
) -> None:
    """Synthetic storefront traffic: visitors browsing, searching, carting, buying."""
    from stream.simulate import run_simulation

    settings = _settings()
    asyncio.run(
        run_simulation(
            settings,
            rate=rate,
            visitors=visitors,
            duration=duration,
            max_events=max_events,
            seed=seed,
            url=url or f"http://127.0.0.1:{settings.http_port}",
            to_kafka=to_kafka,
        )
    )


@cli.command()
@click.argument("ids", nargs=-1, required=True)
@click.option(
    "--url", default="", help="API base URL (default: http://127.0.0.1:$CLICKSTREAM_API_PORT)."
)
def forget(ids: tuple[str, ...], url: str) -> None:
    """Erase visitors (anonymous ids) or people (user ids: every linked device) from the
    whole pipeline; waits until each erasure is complete (README, "Privacy")."""
    from stream.privacy.forget import run_forget

    settings = _settings()
    url = url or f"http://127.0.0.1:{settings.api_port}"
    raise SystemExit(run_forget(url, ids, settings.admin_token))


@cli.command()
@click.argument("sql")
@click.option(
    "--url", default="", help="API base URL (default: http://127.0.0.1:$CLICKSTREAM_API_PORT)."
)
def query(sql: str, url: str) -> None:
    """Run read-only SQL through the query API and print the result as a table."""
    settings = _settings()
    from stream.api.client import run_query

    run_query(url or f"http://127.0.0.1:{settings.api_port}", sql, settings.admin_token)


@cli.command()
@click.option(
    "--url", default="", help="API base URL (default: http://127.0.0.1:$CLICKSTREAM_API_PORT)."
)
@click.option(
    "--collector",
    default="",
    help="Collector base URL for events/s (default: http://127.0.0.1:$CLICKSTREAM_HTTP_PORT; 'none' to skip).",
)
@click.option(
    "--interval",
    default=2.0,
    show_default=True,
    type=click.FloatRange(min=0.5),
    help="Seconds between refreshes.",
)
@click.option(
    "--hours",
    default=24.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Time range of the figures, in hours up to now.",
)
def top(url: str, collector: str, interval: float, hours: float) -> None:
    """A live terminal view: funnel, throughput, open sessions, rates, latest stage changes."""
    settings = _settings()
    from stream.top import run as run_top

    collector = collector or f"http://127.0.0.1:{settings.http_port}"
    run_top(
        url or f"http://127.0.0.1:{settings.api_port}",
        None if collector == "none" else collector.rstrip("/") + "/metrics",
        interval=interval,
        hours=hours,
    )


def _parse(parser, raw):
    try:
        return parser(raw)
    except ValueError as exc:
        raise SettingsError(f"--roles: {exc}") from None


def _urls(settings: Settings, elapsed: float) -> str:
    return (
        f"[bold green]pipeline ready in {elapsed:.1f}s[/]\n"
        f"  collector   http://127.0.0.1:{settings.http_port}/v1/batch   (tracker: /tracker.js, demo shop: /demo/)\n"
        f"  query API   http://127.0.0.1:{settings.api_port}/api/v1/funnel\n"
        f"  metrics     http://127.0.0.1:{settings.http_port}/metrics, http://127.0.0.1:{settings.api_port}/metrics\n"
        f"  write key   {next(iter(settings.write_keys.values()))!r} source (key from CLICKSTREAM_WRITE_KEYS)\n"
        "Ctrl-C stops everything."
    )


def _start_simulation(settings: Settings, rate: float, stop) -> None:
    """Simulated traffic in a thread until `stop.is_set()` (StopSignals or an Event)."""

    def target() -> None:
        from stream.simulate import run_simulation

        asyncio.run(
            run_simulation(
                settings,
                rate=rate,
                visitors=500,
                duration=0,
                max_events=0,
                seed=int(time.time()),
                url=f"http://127.0.0.1:{settings.http_port}",
                to_kafka=False,
                stop=stop,
                progress=False,
            )
        )

    threading.Thread(target=target, daemon=True).start()


def main() -> None:
    try:
        cli(standalone_mode=True)
    except SettingsError as exc:
        click.echo(f"clickstream: {exc}", err=True)
        sys.exit(2)
    except BrokerError as exc:
        click.echo(f"clickstream: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
