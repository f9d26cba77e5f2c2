"""`clickstream top`: the live journey view in a terminal.

Every `interval` seconds it reads the query API's page endpoints (/api/v1/page/summary,
funnel, rates, recent: bots left out) and, when reachable, the collector's /metrics,
whose counters' deltas give events per second. `poll` does the I/O; everything that
turns a poll into text (`parse_counters`, `throughput`, the formatters, `render`) is
pure, so it is tested without a pipeline. Ctrl-C quits.
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

STAGE_STYLES = {
    "awareness": "bright_blue",
    "consideration": "blue",
    "decision": "magenta",
    "purchase": "green",
    "retention": "cyan",
    "advocacy": "yellow",
    "lapsed": "bright_black",
}
COUNTERS = {  # what the view shows -> Prometheus counter (summed over its labels)
    "accepted": "clickstream_events_accepted_total",
    "rejected": "clickstream_events_rejected_total",
    "processed": "clickstream_events_processed_total",
}
BLOCKS = " ▏▎▍▌▋▊▉█"
SPARKS = "▁▂▃▄▅▆▇█"
RECENT_ROWS = 10
WIDE = 110  # columns from which panels sit side by side


# --- data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counters:
    """Counter totals read at `at` (time.monotonic())."""

    totals: Mapping[str, float]
    at: float


@dataclass
class Snapshot:
    """One poll: the API's answers (None when a call failed) and what went wrong."""

    api_url: str
    hours: float
    taken_at: dt.datetime
    summary: dict[str, Any] | None = None
    funnel: dict[str, Any] | None = None
    rates: dict[str, Any] | None = None
    recent: dict[str, Any] | None = None
    per_second: dict[str, float] | None = None  # None: no collector metrics (yet)
    errors: list[str] = field(default_factory=list)


def parse_counters(text: str, names: Mapping[str, str] = COUNTERS) -> dict[str, float]:
    """Totals of the named counters in Prometheus text: every sample of a counter, whatever
    its labels, added up. A counter with no sample is left out."""
    wanted = {metric: key for key, metric in names.items()}
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        metric = line.split("{", 1)[0].split(" ", 1)[0]
        key = wanted.get(metric)
        if key is None:
            continue
        try:
            value = float(line.rsplit(" ", 1)[1])
        except (IndexError, ValueError):
            continue
        totals[key] = totals.get(key, 0.0) + value
    return totals


def throughput(previous: Counters | None, current: Counters) -> dict[str, float] | None:
    """Per-second rates between two readings; None without an earlier one. A counter that
    went down (a restarted process) counts from zero."""
    if previous is None:
        return None
    elapsed = current.at - previous.at
    if elapsed <= 0:
        return None
    rates = {}
    for key, value in current.totals.items():
        before = previous.totals.get(key, 0.0)
        delta = value - before if value >= before else value
        rates[key] = delta / elapsed
    return rates


# --- formatting ---------------------------------------------------------------------------


def fmt_count(value: float | None) -> str:
    """12, 1,234, 12.3k, 4.5M."""
    if value is None:
        return "–"
    if abs(value) >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if abs(value) >= 100_000:
        return f"{value / 1000:.0f}k"
    if abs(value) >= 10_000:
        return f"{value / 1000:.1f}k"
    return f"{round(value):,}"


def fmt_rate(value: float | None) -> str:
    """A fraction as a percentage: 0.3125 -> 31.2%."""
    return "–" if value is None else f"{100 * value:.1f}%"


def fmt_money(value: float | None) -> str:
    return "–" if value is None else f"{value:,.2f}"


def fmt_per_second(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}/s" if value >= 100 else f"{value:,.1f}/s"


def bar(value: float, maximum: float, width: int) -> str:
    """A horizontal bar of `width` cells, in eighths of a cell."""
    if width <= 0 or maximum <= 0 or value <= 0:
        return ""
    eighths = round(8 * width * min(value, maximum) / maximum)
    full, rest = divmod(max(eighths, 1), 8)
    return "█" * full + (BLOCKS[rest] if rest else "")


def sparkline(values: Sequence[float | None]) -> str:
    """One character per value, scaled to the largest; missing values are blanks."""
    present = [v for v in values if v is not None]
    top = max(present, default=0)
    if top <= 0:
        return "".join(" " if v is None else SPARKS[0] for v in values)
    return "".join(
        " " if v is None else SPARKS[min(len(SPARKS) - 1, int(v / top * (len(SPARKS) - 1)))]
        for v in values
    )


def clock(value: str | None) -> str:
    """HH:MM:SS of an ISO time from the API (UTC)."""
    if not value:
        return ""
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%H:%M:%S")
    except ValueError:
        return value


def window_label(hours: float) -> str:
    return f"last {hours:g} h" if hours < 48 else f"last {hours / 24:g} d"


# --- rendering ----------------------------------------------------------------------------


def _kv(rows: Sequence[tuple[str, str]]) -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="dim")
    table.add_column(justify="right", style="bold")
    for name, value in rows:
        table.add_row(name, value)
    return table


def render_throughput(snapshot: Snapshot) -> Panel:
    rates = snapshot.per_second
    if rates is None:
        body: RenderableType = Text("collector metrics: waiting…", style="dim")
    else:
        body = _kv(
            [
                # no sample yet is none counted: the collector reports both
                ("accepted", fmt_per_second(rates.get("accepted", 0.0))),
                ("rejected", fmt_per_second(rates.get("rejected", 0.0))),
                ("processed", fmt_per_second(rates.get("processed"))),
            ]
        )
    return Panel(body, title="events", box=box.ROUNDED, padding=(0, 1))


def render_sessions(summary: Mapping[str, Any] | None) -> Panel:
    s = summary or {}
    body = _kv(
        [
            ("open now", fmt_count(s.get("active_sessions"))),
            ("sessions", fmt_count(s.get("sessions"))),
            ("visitors", fmt_count(s.get("visitors"))),
            ("orders", fmt_count(s.get("orders"))),
        ]
    )
    return Panel(body, title="sessions", box=box.ROUNDED, padding=(0, 1))


def render_rates(summary: Mapping[str, Any] | None) -> Panel:
    s = summary or {}
    body = _kv(
        [
            ("conversion", fmt_rate(s.get("conversion_rate"))),
            ("bounce", fmt_rate(s.get("bounce_rate"))),
            ("cart abandonment", fmt_rate(s.get("cart_abandonment_rate"))),
            ("revenue", fmt_money(s.get("revenue"))),
            ("avg order", fmt_money(s.get("average_order_value"))),
        ]
    )
    return Panel(body, title="rates", box=box.ROUNDED, padding=(0, 1))


def render_trend(rates: Mapping[str, Any] | None) -> Panel:
    points = (rates or {}).get("points") or []
    table = Table.grid(padding=(0, 1))
    table.add_column(style="dim")
    table.add_column()
    if not points:
        table.add_row("", Text("no completed windows yet", style="dim"))
    else:
        table.add_row("sessions", Text(sparkline([p.get("sessions") for p in points]), "cyan"))
        table.add_row("orders", Text(sparkline([p.get("orders") for p in points]), "green"))
        table.add_row(
            "conversion", Text(sparkline([p.get("conversion_rate") for p in points]), "green")
        )
    bucket = (rates or {}).get("bucket", "")
    return Panel(table, title=f"per {bucket}" if bucket else "trend", box=box.ROUNDED)


def render_funnel(funnel: Mapping[str, Any] | None, width: int = 24) -> Table:
    table = Table(box=box.SIMPLE_HEAD, expand=True, title="funnel", title_justify="left")
    table.add_column("stage")
    table.add_column("reached", no_wrap=True, overflow="crop")
    table.add_column("", justify="right")
    table.add_column("step", justify="right")
    table.add_column("now", justify="right", style="dim")
    stages = (funnel or {}).get("stages") or []
    top = max((s["visitors"] for s in stages), default=0)
    for s in stages:
        style = STAGE_STYLES.get(s["stage"], "white")
        table.add_row(
            Text(s["stage"], style=style),
            Text(bar(s["visitors"], top, width), style=style),
            fmt_count(s["visitors"]),
            "" if s.get("conversion") is None else "→ " + fmt_rate(s["conversion"]),
            fmt_count(s.get("current")),
        )
    if not stages:
        table.add_row(Text("waiting for the API…", style="dim"), "", "", "", "")
    return table


def render_recent(recent: Mapping[str, Any] | None, limit: int = RECENT_ROWS) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD, expand=True, title="latest stage changes", title_justify="left"
    )
    table.add_column("time", style="dim", no_wrap=True, min_width=8)
    table.add_column("visitor", overflow="ellipsis", no_wrap=True, ratio=1)
    table.add_column("change", no_wrap=True, min_width=27)
    for c in ((recent or {}).get("changes") or [])[:limit]:
        change = Text()
        change.append(
            c.get("from_stage") or "new", style=STAGE_STYLES.get(c.get("from_stage"), "dim")
        )
        change.append(" → ", style="dim")
        change.append(c["to_stage"], style=STAGE_STYLES.get(c["to_stage"], "white"))
        table.add_row(clock(c.get("ts")), c.get("user_id") or c.get("visitor_id", ""), change)
    return table


def render(snapshot: Snapshot, width: int = 120) -> RenderableType:
    """The whole screen for one snapshot, for a terminal `width` columns wide: side by side
    from WIDE columns on, stacked below."""
    header = Text(no_wrap=True, overflow="ellipsis")
    header.append("clickstream top", style="bold")
    header.append(f"  {snapshot.taken_at.strftime('%H:%M:%S')}")
    header.append(
        f"  ·  {window_label(snapshot.hours)}, bots excluded  ·  {snapshot.api_url}", "dim"
    )
    wide = width >= WIDE
    tiles = [
        render_throughput(snapshot),
        render_sessions(snapshot.summary),
        render_rates(snapshot.summary),
        render_trend(snapshot.rates),
    ]
    funnel = render_funnel(snapshot.funnel, max(6, (width // 2 if wide else width) - 44))
    recent = render_recent(snapshot.recent, RECENT_ROWS if wide else RECENT_ROWS // 2)
    parts: list[RenderableType] = [header, _columns(tiles, 4 if wide else 2)]
    parts += [_columns([funnel, recent], 2)] if wide else [funnel, recent]
    for message in snapshot.errors:
        parts.append(Text(f"! {message}", style="red"))
    parts.append(Text("Ctrl-C quits", style="dim"))
    return Group(*parts)


def _columns(items: Sequence[RenderableType], per_row: int) -> Table:
    grid = Table.grid(expand=True, padding=(0, 1))
    for _ in range(per_row):
        grid.add_column(ratio=1)
    for start in range(0, len(items), per_row):
        grid.add_row(*items[start : start + per_row])
    return grid


# --- I/O ----------------------------------------------------------------------------------


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _reason(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        try:
            return f"{exc.code}: {orjson.loads(exc.read()).get('error', exc.reason)}"
        except (orjson.JSONDecodeError, AttributeError):
            return f"{exc.code}: {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _unreachable(exc: Exception) -> bool:
    """Refused, reset or timed out, as opposed to an answer we did not like."""
    return isinstance(exc, OSError) and not isinstance(exc, urllib.error.HTTPError)


def poll(
    api_url: str,
    metrics_url: str | None,
    hours: float,
    previous: Counters | None,
    timeout: float = 5.0,
) -> tuple[Snapshot, Counters | None]:
    """Read the API and the collector's counters once; returns the snapshot and the
    counters to compare the next reading with."""
    now = dt.datetime.now(dt.UTC)
    snapshot = Snapshot(api_url, hours, now.astimezone())
    window = {"from": (now - dt.timedelta(hours=hours)).isoformat(), "to": now.isoformat()}
    calls = {
        "summary": window,
        "funnel": window,
        "rates": {**window, "bucket": "minute" if hours <= 6 else "hour"},
        "recent": {**window, "limit": RECENT_ROWS},
    }
    base = api_url.rstrip("/") + "/api/v1/page/"
    for name, query in calls.items():
        try:
            setattr(snapshot, name, orjson.loads(_get(f"{base}{name}?{urlencode(query)}", timeout)))
        except (OSError, ValueError) as exc:
            snapshot.errors.append(f"API {name}: {_reason(exc)}")
            if _unreachable(exc):
                break  # the other calls would fail (or wait) the same way
    current = previous
    if metrics_url:
        try:
            text = _get(metrics_url, timeout).decode("utf-8", "replace")
            current = Counters(parse_counters(text), time.monotonic())
            snapshot.per_second = throughput(previous, current)
        except (OSError, ValueError) as exc:
            snapshot.errors.append(f"collector metrics: {_reason(exc)}")
    return snapshot, current


def run(
    api_url: str,
    metrics_url: str | None = None,
    interval: float = 2.0,
    hours: float = 24.0,
    console: Console | None = None,
) -> None:
    """Refresh the view every `interval` seconds until Ctrl-C."""
    console = console or Console()
    previous: Counters | None = None
    waiting = Snapshot(api_url, hours, dt.datetime.now().astimezone())
    try:
        with Live(render(waiting, console.width), console=console, auto_refresh=False) as live:
            while True:
                started = time.monotonic()
                snapshot, previous = poll(api_url, metrics_url, hours, previous)
                live.update(render(snapshot, console.width), refresh=True)
                time.sleep(max(0.0, interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        pass
