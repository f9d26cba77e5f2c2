"""The benchmark suite: `make bench` = `.venv/bin/python -m benchmarks`.

    .venv/bin/python -m benchmarks                      # everything, ~15 minutes
    .venv/bin/python -m benchmarks --quick              # short runs, ~3 minutes
    .venv/bin/python -m benchmarks --only processor,naive
    .venv/bin/python -m benchmarks --rate 5000 --seconds 30   # the full pipeline's load

Runs, one after the other on this machine: the transport ceiling (raw aiokafka), the
naive Faust baseline, the processor alone (and a py-spy profile of it), the sink
alone, the collector alone (benchmarks/collector.py), the full pipeline under HTTP
load, the scale-out check and the memory figures. Prints one table, the targets met
or not, and the profile summary; writes everything as JSON to benchmarks/results/.
Each benchmark starts and stops its own processes; nothing else should run meanwhile
(the machine's load average is recorded with every figure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from benchmarks import memory, naive_faust, pipeline, processor, scaleout, sink, transport
from benchmarks.common import RESULTS_DIR, Result, load_now, machine, use_uvloop

NAMES = ("transport", "naive", "processor", "sink", "collector", "pipeline", "scaleout", "memory")
COLLECTOR = Path(__file__).resolve().parent / "collector.py"


@dataclass(frozen=True)
class Plan:
    transport_events: int
    naive_events: int
    processor_events: int
    profile_events: int  # 0: no profile
    sink_events: int
    sink_in_process: bool
    collector_seconds: float
    pipeline_seconds: float
    pipeline_warmup: float
    scale_events: int
    scale_partitions: tuple[int, ...]
    scale_workers: tuple[int, ...]
    memory_visitors: int
    memory_seconds: float
    crowd_visitors: int  # distinct visitors for the RSS-per-visitor run
    crowd_budget_s: float
    sustained_rate: int  # the pipeline's sustained-load run (0: none)
    sustained_seconds: float


FULL = Plan(
    transport_events=200_000,
    naive_events=50_000,
    processor_events=200_000,
    profile_events=100_000,
    sink_events=200_000,
    sink_in_process=True,
    collector_seconds=15,
    pipeline_seconds=30,
    pipeline_warmup=5,
    scale_events=100_000,
    scale_partitions=(4, 8),
    scale_workers=(1, 2, 3),
    memory_visitors=5_000,
    memory_seconds=150,
    crowd_visitors=1_000_000,
    crowd_budget_s=420,
    sustained_rate=10_000,
    sustained_seconds=60,
)
QUICK = Plan(
    transport_events=50_000,
    naive_events=10_000,
    processor_events=50_000,
    profile_events=0,
    sink_events=50_000,
    sink_in_process=False,
    collector_seconds=5,
    pipeline_seconds=10,
    pipeline_warmup=3,
    scale_events=15_000,
    scale_partitions=(4,),
    scale_workers=(1, 2),
    memory_visitors=500,
    memory_seconds=16,
    crowd_visitors=20_000,
    crowd_budget_s=60,
    sustained_rate=10_000,
    sustained_seconds=15,
)


def run_collector(seconds: float) -> Result:
    """benchmarks/collector.py (another engineer's) as it is, its figures parsed from its output."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.collector",
            "--seconds",
            str(seconds),
            "--concurrency",
            "32",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout
    result = Result("collector (benchmarks/collector.py)", extra={"its_output": out.strip()})
    rate = re.search(
        r"collector: ([\d,]+) events/s accepted \(([\d,]+) in ([\d.]+)s, (\d+) errors\)", out
    )
    cost = re.search(
        r"latency p50 ([\d.]+) ms, p99 ([\d.]+) ms; collector CPU ([\d.]+) s per 1,000 events; RSS (\d+) MB",
        out,
    )
    broker = re.search(r"broker ([\d.]+) s", out)
    if done.returncode != 0 or not rate:
        result.notes.append(f"benchmarks/collector.py failed: {(done.stderr or out)[-300:]}")
        return result
    result.events_per_s = float(rate.group(1).replace(",", ""))
    result.events = int(rate.group(2).replace(",", ""))
    result.seconds = float(rate.group(3))
    result.extra["errors"] = int(rate.group(4))
    if cost:
        result.extra["request_p50_ms"], result.extra["request_p99_ms"] = (
            float(cost.group(1)),
            float(cost.group(2)),
        )
        result.cpu_s_per_1k, result.peak_rss_mb = float(cost.group(3)), float(cost.group(4))
    if broker:
        result.broker_cpu_s_per_1k = float(broker.group(1))
    result.extra["load_average_after"] = load_now()
    result.notes.append("batches of 20, 32 connections, as fast as it answers; RSS at the end")
    return result


FLOOR_LINE = re.compile(
    r"^\s*(\S+): +([\d,]+) events/s, CPU ([\d.]+) s per 1,000 events .*broker ([\d.]+)", re.M
)


def run_collector_floor(seconds: float) -> list[Result]:
    """benchmarks/collector_floor.py: the same traffic through aiohttp and aiokafka with
    none of our per-event work, so the collector's target reads against the stack's floor."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.collector_floor",
            "--seconds",
            str(seconds),
            "--no-collector",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    results = []
    for level, rate, cpu, broker in FLOOR_LINE.findall(done.stdout):
        result = Result(
            f"collector floor: {level}",
            events_per_s=float(rate.replace(",", "")),
            unit="events/s, floor",
        )
        result.cpu_s_per_1k, result.broker_cpu_s_per_1k = float(cpu), float(broker)
        result.notes.append(
            "no validation, normalisation or enrichment (benchmarks/collector_floor.py)"
        )
        results.append(result)
    if done.returncode != 0 or not results:
        failed = Result("collector floor")
        failed.notes.append(
            f"benchmarks/collector_floor.py failed: {(done.stderr or done.stdout)[-300:]}"
        )
        return [failed]
    return results


def run_one(name: str, plan: Plan, args: argparse.Namespace, profile: dict) -> list[Result]:
    if name == "transport":
        return asyncio.run(transport.run(plan.transport_events))
    if name == "naive":
        return [asyncio.run(naive_faust.run(plan.naive_events))]
    if name == "processor":
        results = [asyncio.run(processor.run(plan.processor_events))]
        if plan.profile_events and not args.no_profile:
            profile.update(asyncio.run(processor.profile(plan.profile_events)))
        return results
    if name == "sink":
        results = [asyncio.run(sink.run(plan.sink_events))]
        if plan.sink_in_process:
            results.append(sink.run_in_process(plan.sink_events))
        return results
    if name == "collector":
        return [run_collector(plan.collector_seconds), *run_collector_floor(plan.collector_seconds)]
    if name == "pipeline":
        runs = [(args.rate, args.seconds or plan.pipeline_seconds)]
        if plan.sustained_rate and not args.seconds:
            runs.append((plan.sustained_rate, plan.sustained_seconds))
        return [
            asyncio.run(pipeline.run(rate, seconds, plan.pipeline_warmup)) for rate, seconds in runs
        ]
    if name == "scaleout":
        return asyncio.run(
            scaleout.run(plan.scale_events, plan.scale_partitions, plan.scale_workers)
        )
    if name == "memory":
        return [
            memory.state_sizes(plan.memory_visitors),
            asyncio.run(memory.rss_growth(plan.memory_seconds)),
            asyncio.run(memory.crowd(plan.crowd_visitors, plan.crowd_budget_s)),
        ]
    raise ValueError(name)


# --- the report ------------------------------------------------------------------------


def ceilings(results: list[Result]) -> tuple[float | None, float | None]:
    transport_rates = [
        r.events_per_s for r in results if r.name.startswith("transport") and r.events_per_s
    ]
    naive_rates = [r.events_per_s for r in results if r.name.startswith("naive") and r.events_per_s]
    return (
        min(transport_rates) if transport_rates else None,
        naive_rates[0] if naive_rates else None,
    )


def highlights(r: Result) -> str:
    e = r.extra
    if "http_to_clickhouse" in e:
        ch, st = e["http_to_clickhouse"], e["http_to_stage_change"]
        return (
            f"HTTP→CH p50 {ch.get('p50_ms')} / p99 {ch.get('p99_ms')} ms; HTTP→stage p50 {st.get('p50_ms')} / "
            f"p99 {st.get('p99_ms')} ms; processor lag at end {e['processor_lag_at_end_s_of_traffic']} s "
            f"of traffic; "
            f"other processes busy {e['others_busy_cores']} cores"
        )
    if "identical_stage_keys" in e:
        same = e["identical_stage_keys"] and e["identical_session_ids"]
        return (
            f"{e['stage_change_keys']} stage keys, {e['session_ids']} sessions: "
            f"{'IDENTICAL' if same else 'DIFFERENT'} to {e['reference']}"
            + ("" if e["identical_session_rows"] else " (session rows differ)")
        )
    if "active_mean_bytes" in e:
        return (
            f"active {e['active_mean_bytes']} B (p99 {e['active_p99_bytes']}, max {e['active_max_bytes']}), "
            f"inactive {e['inactive_mean_bytes']} B, {e['visitors']} visitors"
        )
    if "rss_bytes_per_visitor_in_state_slope" in e:
        return (
            f"{e['visitors_in_state']:,} visitors in state: {e['idle_rss_mb']} → "
            f"{e['final_rss_mb']} MB, {e['rss_bytes_per_visitor_in_state_slope']:,} B/visitor "
            f"(slope), {e['rss_bytes_per_visitor_in_state']:,} B/visitor overall"
        )
    if "growth_bytes_per_visitor" in e:
        return (
            f"{e['visitors']:,} visitors: {e['idle_rss_mb']} → {e['final_rss_mb']} MB, "
            f"{e['growth_bytes_per_visitor']:,} B/visitor ({e['growth_bytes_per_visitor_second_half']:,} B 2nd half)"
        )
    if "request_p50_ms" in e:
        return f"request p50 {e['request_p50_ms']} / p99 {e['request_p99_ms']} ms"
    if "busy_cores" in e:
        return f"busy {e['busy_cores']} cores (others {e.get('others_busy_cores')})"
    return ""


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def print_table(results: list[Result]) -> None:
    from rich.console import Console
    from rich.table import Table

    ceiling, naive = ceilings(results)
    table = Table(title="clickstream benchmarks", show_lines=False)
    for column in (
        "benchmark",
        "rate",
        "CPU s/1k",
        "broker CPU s/1k",
        "peak RSS MB",
        "× transport",
        "× naive",
        "notes",
    ):
        table.add_column(column, justify="left" if column in ("benchmark", "notes") else "right")
    for r in results:
        rate = f"{fmt(r.events_per_s)} {r.unit}" if r.events_per_s else "–"
        comparable = (
            r.events_per_s
            and r.unit in ("events/s", "rows/s")
            and not r.name.startswith("transport")
        )
        vs_transport = f"{r.events_per_s / ceiling:.2f}" if comparable and ceiling else "–"
        vs_naive = (
            f"{r.events_per_s / naive:.1f}"
            if comparable and naive and not r.name.startswith("naive")
            else "–"
        )
        notes = "; ".join(filter(None, [highlights(r), *r.notes]))
        table.add_row(
            r.name,
            rate,
            fmt(r.cpu_s_per_1k, 3),
            fmt(r.broker_cpu_s_per_1k, 3),
            fmt(r.peak_rss_mb),
            vs_transport,
            vs_naive,
            notes,
        )
    Console(width=200).print(table)


def targets(results: list[Result]) -> list[tuple[str, str, bool | None]]:
    """(target, measured, met) for each target of issue 15; met None = not measured."""
    by = {r.name: r for r in results}
    ceiling, _ = ceilings(results)
    consume = by.get("transport: aiokafka consume")
    proc = by.get("processor (1 worker)")
    pipes = {r.extra.get("offered_rate"): r for r in results if r.name.startswith("full pipeline")}
    collector = by.get("collector (benchmarks/collector.py)")
    crowd = next((r for r in results if r.name.startswith("processor RSS, a crowd")), None)
    out: list[tuple[str, str, bool | None]] = []
    rate = proc.events_per_s if proc else None
    out.append(
        ("processor >= 25,000 events/s per worker", f"{fmt(rate)} events/s", _met(rate, 25_000))
    )
    share = rate / consume.events_per_s if rate and consume and consume.events_per_s else None
    out.append(
        (
            "processor >= 18 % of the transport consume ceiling (same run)",
            f"{share:.1%}" if share else "–",
            _met(share, 0.18),
        )
    )
    sustained = next((p for r, p in pipes.items() if r and r >= 10_000), None)
    if sustained is not None:
        e = sustained.extra
        ok = (
            sustained.events_per_s >= 0.99 * e["offered_rate"]
            and e["processor_lag_at_end_s_of_traffic"] <= 2.0
        )
        out.append(
            (
                f"full pipeline >= 10,000 events/s offered for {e['seconds']:.0f} s, lag bounded",
                f"{fmt(sustained.events_per_s)} events/s accepted (the offer took "
                f"{sustained.seconds:.0f} s to get in); processor lag at the end "
                f"{e['processor_lag_at_end_s_of_traffic']} s of traffic (max "
                f"{e['lag_events']['processor']['max']:,} events)",
                ok,
            )
        )
    else:
        out.append(("full pipeline >= 10,000 events/s sustained", "not run", None))
    latency = pipes.get(5000) or next((p for r, p in pipes.items() if r and r < 10_000), None)
    if latency is not None:
        e = latency.extra
        ch, st = e["http_to_clickhouse"].get("p99_ms"), e["http_to_stage_change"].get("p99_ms")
        at = f"at {e['offered_rate']:,.0f}/s: "
        out.append(
            ("p99 HTTP -> ClickHouse < 1 s at 5,000/s", at + f"{fmt(ch)} ms", _below(ch, 1000))
        )
        out.append(
            ("p99 HTTP -> stage change < 500 ms at 5,000/s", at + f"{fmt(st)} ms", _below(st, 500))
        )
    else:
        out.append(("p99 latencies at 5,000 events/s", "not run", None))
    cpu = collector.cpu_s_per_1k if collector else None
    floor = by.get("collector floor: http+json+kafka")
    floor_cpu = floor.cpu_s_per_1k if floor else None
    out.append(
        (
            "collector CPU <= 0.0265 s per 1,000 events",
            f"{fmt(cpu, 4)} s (aiohttp + aiokafka alone, no work of ours: {fmt(floor_cpu, 4)} s)",
            _below(cpu, 0.0265),
        )
    )
    if crowd is not None:
        per = crowd.extra.get("rss_bytes_per_visitor_in_state_slope")
        held = crowd.extra.get("visitors_in_state")
        out.append(
            (
                "<= 1 KB processor RSS per visitor in state, 1,000,000 visitors",
                f"{fmt(per)} B per visitor (slope), {fmt(held)} visitors in state",
                None if per is None else (per <= 1024 and held >= 1_000_000),
            )
        )
    else:
        out.append(("<= 1 KB processor RSS per visitor in state", "not run", None))
    return out


def _met(value: float | None, at_least: float) -> bool | None:
    return None if value is None else value >= at_least


def _below(value: float | None, limit: float) -> bool | None:
    return None if value is None else value < limit


def print_targets(rows: list[tuple[str, str, bool | None]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="targets")
    for column in ("target", "measured", "met"):
        table.add_column(column)
    for target, measured, met in rows:
        table.add_row(
            target, measured, "–" if met is None else ("[green]yes[/]" if met else "[red]NO[/]")
        )
    Console(width=200).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short runs (~3 minutes)")
    parser.add_argument("--only", default="", help=f"comma-separated: {', '.join(NAMES)}")
    parser.add_argument(
        "--rate", type=float, default=5000, help="offered events/s of the full pipeline"
    )
    parser.add_argument(
        "--seconds", type=float, default=0, help="seconds of pipeline load (default 30, quick 10)"
    )
    parser.add_argument(
        "--no-profile", action="store_true", help="skip the py-spy run of the processor"
    )
    args = parser.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(NAMES)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(NAMES)}")
    plan = QUICK if args.quick else FULL
    use_uvloop()
    info = machine()
    print(
        f"machine: {info['nproc']} cores, {info['cpu_model']}, {info['ram_gib']} GiB; load average {info['load_average']}"
    )
    results: list[Result] = []
    profile: dict = {}
    failures: dict[str, str] = {}
    started = time.monotonic()
    for name in names:
        print(f"--- {name} (load average {load_now()})", flush=True)
        t0 = time.monotonic()
        try:
            new = run_one(name, plan, args, profile)
        except Exception as exc:  # noqa: BLE001 - one failed benchmark does not lose the others
            traceback.print_exc()
            failures[name] = f"{type(exc).__name__}: {exc}"[:2000]
            continue
        results.extend(new)
        print(f"    {name}: {time.monotonic() - t0:.0f} s", flush=True)
    total = time.monotonic() - started
    print_table(results)
    goals = targets(results)
    print_targets(goals)
    if profile:
        processor.print_profile(profile, top=20)
    for name, error in failures.items():
        print(f"FAILED {name}: {error.splitlines()[0]}")
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / time.strftime("%Y%m%d-%H%M%S.json")
    report = {
        "command": " ".join([Path(sys.executable).name, "-m", "benchmarks", *sys.argv[1:]]),
        "mode": "quick" if args.quick else "full",
        "plan": plan.__dict__,
        "machine": info,
        "seconds": round(total, 1),
        "results": [r.to_json() for r in results],
        "targets": [{"target": t, "measured": m, "met": ok} for t, m, ok in goals],
        "profile": profile,
        "failures": failures,
    }
    path.write_text(json.dumps(report, indent=2, default=list))
    print(f"results: {path} ({total / 60:.1f} minutes)")
    if failures:
        sys.exit(1)


if __name__ == "__main__":
    main()
