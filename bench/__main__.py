"""Run the benchmark: `make bench` (or `python -m bench --help`).

Starts its own stack on bench-only ports in a fresh folder, the five services, seeds plenty of
stock, warms up, drives open-loop load over HTTP at each rate of a schedule (or doubles the rate
until the platform saturates with --find-max), then runs the two baselines on the same machine: a
monolith (one FastAPI process, one transaction per order) and the raw transport (aiokafka alone).
Then the log tools: `shop events export` and `shop events rebuild analytics` on a log of at
least --log-records records (`--only logtools` runs just those on a stack of their own).
Writes bench/results/latest.json and PNG charts, and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]

from bench import pgstats, saga_log, transport
from bench.loadgen import (
    Customers,
    FreshnessProbe,
    Sent,
    StepResult,
    TerminalTracker,
    http_client,
    open_loop,
    order_body,
    poster,
)
from bench.memory import MemorySampler
from bench.monolith import prepare
from deploy.eventlog import reader
from deploy.eventlog import rebuild as rebuilding
from deploy.eventlog.transfer import export
from deploy.local.services import SERVICES, ServiceSupervisor
from deploy.local.stack import LocalStack
from deploy.seed import demo_catalog, initial_stock, seed_platform
from events.kit import gcsettle
from events.topics import all_topics

# Below Linux's ephemeral range (32768-60999), so no outgoing connection holds one of its ports
# (the stack's on base..base+2, the services' from base+10, the monolith's on base+30).
DEFAULT_PORT_BASE = 27100

RESULTS = Path(__file__).with_name("results")
STOCK = 1_000_000


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# Groups whose first pid is the root of a process tree whose members come and go (PostgreSQL's
# backends): their CPU is read from the tree as it is at each sample, plus what the root has reaped.
TREES = frozenset({"postgres"})


def tree_cpu_seconds(root: int) -> float:
    """CPU of a process and everything under it, including children that have exited: the kernel
    adds a reaped child's time to its parent's children_user/children_system. Counting a fixed list
    of pids instead lost a backend's time when it exited (negative figures) and never saw one that
    started later (the monolith's pool)."""
    proc = psutil.Process(root)
    with proc.oneshot():
        t = proc.cpu_times()
        total: float = t.user + t.system + t.children_user + t.children_system
        children = proc.children(recursive=True)
    for child in children:
        with contextlib.suppress(psutil.Error):
            c = child.cpu_times()
            total += c.user + c.system + c.children_user + c.children_system
    return total


# Groups that are JVMs (the broker): their JIT compiler threads are counted apart.
JVMS = frozenset({"kafka"})


def jit_name(group: str) -> str:
    return f"{group} (JIT compiler)"


def jit_compiler_seconds(pid: int, proc: Path = Path("/proc")) -> float:
    """CPU of a JVM's JIT compiler threads (`C1 CompilerThre`, `C2 CompilerThre`). In the
    broker's first minute or two they use up to half of its CPU: warming up, not the step's work,
    and it made the first steps' Kafka figures look several times the later ones."""
    ticks = 0
    with contextlib.suppress(OSError):
        for task in (proc / str(pid) / "task").iterdir():
            try:
                if "CompilerThre" not in (task / "comm").read_text():
                    continue
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime, stime
            except (OSError, IndexError, ValueError):
                continue  # a thread that ended between the listing and the read
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: dict[str, list[int]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, group in pids.items():
        if name in TREES and group:
            with contextlib.suppress(psutil.Error):
                out[name] = tree_cpu_seconds(group[0])
            continue
        total = 0.0
        jit = 0.0
        for pid in group:
            try:
                t = psutil.Process(pid).cpu_times()
                total += t.user + t.system
            except psutil.Error:
                continue
            if name in JVMS:
                jit += jit_compiler_seconds(pid)
        out[name] = total - jit
        if name in JVMS:
            out[jit_name(name)] = jit
    return out


def process_groups(stack: LocalStack, sup: ServiceSupervisor) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {"bench (load generator)": [os.getpid()]}
    if (kpid := stack.kafka.running_pid()) is not None:
        groups["kafka"] = [kpid]
    if (ppid := stack.postgres.running_pid()) is not None:
        with_children = [ppid]
        with contextlib.suppress(psutil.Error):
            with_children += [c.pid for c in psutil.Process(ppid).children(recursive=True)]
        groups["postgres"] = with_children
    for svc in SERVICES:
        if (pid := sup.pid(svc.package)) is not None:
            groups[svc.package] = [pid]
    return groups


def summarize(step: StepResult, started: float, ended: float, *, sync: bool) -> dict[str, Any]:
    """Throughput in the step's window, and latency: accepted -> terminal for the saga; for the
    synchronous monolith (terminal when it answers) from the scheduled send to the answer."""
    sents = step.sent
    accepted = [s for s in sents if s.order_id or s.outcome]
    in_window = [
        s for s in sents if s.terminal_at is not None and started <= s.terminal_at <= ended
    ]
    confirmed = [s for s in in_window if s.outcome == "CONFIRMED"]
    latency = [
        (s.terminal_at - (s.scheduled if sync else s.accepted_at)) * 1000
        for s in sents
        if s.terminal_at is not None and s.accepted_at is not None
    ]
    response = [(s.accepted_at - s.scheduled) * 1000 for s in sents if s.accepted_at is not None]
    seconds = max(ended - started, 1e-9)
    outcomes: dict[str, int] = {}
    for s in sents:
        key = s.outcome or (f"HTTP {s.status}" if s.status else s.error or "no answer")
        outcomes[key] = outcomes.get(key, 0) + 1
    return {
        "offered_per_s": step.rate,
        "seconds": round(seconds, 2),
        "sent": len(sents),
        "accepted_per_s": round(len(accepted) / step.seconds, 1),
        "terminal_per_s": round(len(in_window) / seconds, 1),
        "confirmed_per_s": round(len(confirmed) / seconds, 1),
        "outcomes": outcomes,
        "latency_ms": {
            "p50": pct(latency, 0.50),
            "p95": pct(latency, 0.95),
            "p99": pct(latency, 0.99),
            "max": max(latency) if latency else None,
        },
        "http_response_ms_p99": pct(response, 0.99),
    }


async def drive(
    url: str,
    rates: list[float],
    seconds: float,
    skus: list[str],
    *,
    tracker: TerminalTracker | None,
    groups: dict[str, list[int]],
    find_max: bool,
    label: str,
    accepted_status: int,
    probe: FreshnessProbe | None = None,
    settle_s: float = 30.0,
    pg_url: str | None = None,
) -> tuple[list[dict[str, Any]], list[Sent]]:
    rnd = random.Random(7)
    weights = [1 / (i + 1) ** 0.6 for i in range(len(skus))]
    customers = Customers()
    steps: list[dict[str, Any]] = []
    everything: list[Sent] = []
    async with http_client(in_flight=256) as client:
        rate_list = list(rates)
        i = 0
        while i < len(rate_list):
            rate = rate_list[i]
            cpu_before = cpu_seconds(groups)
            pg_before = await pgstats.counters(pg_url) if pg_url else None
            started = time.time()
            step = await open_loop(
                poster(client, [url]),
                rate,
                seconds,
                lambda: order_body(rnd, skus, weights, customers),
                on_accept=tracker.watch if tracker else None,
                accepted_status=accepted_status,
            )
            if tracker:
                await tracker.wait_for(step.sent, timeout_s=max(settle_s, seconds))
            ended = max([started + seconds] + [s.terminal_at or 0 for s in step.sent])
            cpu_after = cpu_seconds(groups)
            summary = summarize(step, started, ended, sync=tracker is None)
            if probe is not None:
                summary["freshness_ms"] = await freshness(probe, started, ended)
            confirmed = sum(1 for s in step.sent if s.outcome == "CONFIRMED")
            summary["cpu_ms_per_order"] = {
                k: round((cpu_after[k] - cpu_before.get(k, 0)) * 1000 / max(confirmed, 1), 2)
                for k in cpu_after
            }
            if pg_url and pg_before:
                pg_after = await pgstats.counters(pg_url)
                summary["postgres_per_order"] = pgstats.per_order(pg_before, pg_after, confirmed)
            steps.append(summary)
            everything += step.sent
            print(
                f"  {label} @ {rate:>6.0f}/s: confirmed {summary['confirmed_per_s']:>7.1f}/s, "
                f"p99 {summary['latency_ms']['p99'] or 0:>8.1f} ms, "
                f"freshness p99 {(summary.get('freshness_ms') or {}).get('p99') or 0:>7.1f} ms, "
                + (
                    f"WAL {summary['postgres_per_order']['wal_kib']:.1f} KiB/order, "
                    if "postgres_per_order" in summary
                    else ""
                )
                + f"outcomes {summary['outcomes']}",
                flush=True,
            )
            summary["saturated"] = saturated(summary)
            if find_max and i == len(rate_list) - 1 and not summary["saturated"]:
                rate_list.append(rate * 2)
            i += 1
    return steps, everything


async def freshness(probe: FreshnessProbe, started: float, ended: float) -> dict[str, Any]:
    """Terminal event time -> visible in the analytics API, for the step's terminal events."""
    await probe.drained(timeout_s=30)
    values = probe.freshness_ms(started, ended)
    trailing = probe.tracker_delay_ms(started, ended)
    return {
        "p50": pct(values, 0.50),
        "p99": pct(values, 0.99),
        "max": max(values) if values else None,
        "events": len(values),
        "not_visible_after_30s": probe.unseen(),
        # not part of freshness: how late the load generator itself read the terminal events
        "tracker_delay_p99": pct(trailing, 0.99),
    }


def saturated(step: dict[str, Any]) -> bool:
    """Whether a step found the system's limit: it confirmed under 85 % of the rate offered, or
    its p99 passed 5 s (falling behind). A system that never saturated kept up with every rate,
    so its best step is a floor of what it can do, not its limit."""
    return bool(
        step["confirmed_per_s"] < 0.85 * step["offered_per_s"]
        or (step["latency_ms"]["p99"] or 0) > 5000
    )


def best(steps: list[dict[str, Any]]) -> float:
    return max((s["confirmed_per_s"] for s in steps), default=0.0)


def ratio_basis(steps: list[dict[str, Any]], mono_steps: list[dict[str, Any]]) -> str:
    """What `vs_monolith` (the platform's best over the monolith's) can say: a comparison of the
    two limits only when both saturated; with one side keeping up with every rate, a bound."""
    platform = any(s.get("saturated") for s in steps)
    monolith = any(s.get("saturated") for s in mono_steps)
    if platform and monolith:
        return "both at their limits"
    if monolith:
        return "a floor: the platform kept up with every rate offered"
    if platform:
        return "a ceiling: the monolith kept up with every rate offered"
    return "neither reached its limit: a floor over a floor, no comparison"


def machine() -> dict[str, Any]:
    """The machine the figures are of, and the interpreter every process of the run used (the
    services are started with this one): which build matters, pyenv's default one ran the
    platform's Python 10-25 % slower than a distribution's, built with PGO and LTO
    (docs/performance.md, "The interpreter's build")."""
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "python_executable": os.path.realpath(sys.executable),
        "python_build": " ".join((*platform.python_build(), platform.python_compiler())),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }


def charts(series: dict[str, list[Sent]], out: Path, sync: set[str]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    fig, ax = plt.subplots(figsize=(9, 4))
    fig2, ax2 = plt.subplots(figsize=(9, 4))
    for name, sents in series.items():
        done = [s for s in sents if s.terminal_at and s.accepted_at and s.outcome == "CONFIRMED"]
        if not done:
            continue
        t0 = min(s.scheduled for s in sents)
        buckets: dict[int, list[float]] = {}
        for s in done:
            assert s.terminal_at is not None
            assert s.accepted_at is not None
            since = s.scheduled if name in sync else s.accepted_at
            buckets.setdefault(int(s.terminal_at - t0), []).append((s.terminal_at - since) * 1000)
        xs = sorted(buckets)
        ax.plot(xs, [len(buckets[x]) for x in xs], label=name)
        ax2.plot(xs, [pct(buckets[x], 0.99) or 0 for x in xs], label=f"{name} p99")
        ax2.plot(xs, [pct(buckets[x], 0.5) or 0 for x in xs], label=f"{name} p50", alpha=0.6)
    ax.set(xlabel="seconds", ylabel="orders confirmed per second", title="Throughput")
    ax2.set(xlabel="seconds", ylabel="accepted → confirmed (ms)", title="Latency", yscale="log")
    for a, f, name in ((ax, fig, "throughput.png"), (ax2, fig2, "latency.png")):
        a.legend()
        a.grid(alpha=0.3)
        f.tight_layout()
        f.savefig(out / name, dpi=100)
        written.append(str(out / name))
    return written


async def wait_http(url: str, ok: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                if ok(await client.get(url)):
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    raise TimeoutError(f"{url} not ready within {timeout}s")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="shop-bench-"))
    base = args.port_base
    stack = LocalStack(data, kafka_port=base, kafka_controller_port=base + 1, pg_port=base + 2)
    ports = {svc.package: base + 10 + i for i, svc in enumerate(SERVICES)}
    sup = ServiceSupervisor(
        kafka_bootstrap=stack.kafka.bootstrap,
        database_url=stack.postgres.database_url,
        data_dir=data,
        ports=ports,
        env={f"{s.prefix}LOG_LEVEL": "WARNING" for s in SERVICES},
    )
    monolith: subprocess.Popen[bytes] | None = None
    try:
        print(f"starting the stack and services in {data}", flush=True)
        stack.up(databases=[s.database for s in SERVICES] + ["monolith"])
        sup.start_all()
        catalog = demo_catalog(args.products)
        stock = initial_stock(catalog, STOCK)
        skus = [s for s, units in stock.items() if units == STOCK]
        await seed_platform(
            catalog_url=sup.url("catalog"),
            kafka=stack.kafka.bootstrap,
            products=args.products,
            stock=STOCK,
        )
        last = skus[-1]
        await wait_http(f"{sup.url('order')}/catalog/{last}", lambda r: r.status_code == 200)
        await wait_http(
            f"{sup.url('inventory')}/stock/{last}",
            lambda r: r.status_code == 200 and r.json()["on_hand"] == STOCK,
        )
        groups = process_groups(stack, sup)
        tracker = TerminalTracker(stack.kafka.bootstrap)
        await tracker.start()
        probe = FreshnessProbe(sup.url("analytics"), tracker)
        probe.start()
        gcsettle.settle()  # as every service does: a full collection here paused the load
        print("warming up", flush=True)
        await drive(
            f"{sup.url('order')}/orders",
            [args.warmup_rate],
            args.warmup_s,
            skus,
            tracker=tracker,
            groups=groups,
            find_max=False,
            label="warm-up",
            accepted_status=202,
        )
        print("platform (saga over Kafka)", flush=True)
        memory = MemorySampler(lambda: process_groups(stack, sup))
        memory.start()
        steps, platform_sents = await drive(
            f"{sup.url('order')}/orders",
            args.rates,
            args.step_s,
            skus,
            tracker=tracker,
            groups=groups,
            find_max=args.find_max,
            label="platform",
            accepted_status=202,
            probe=probe,
            settle_s=args.settle_s,
            pg_url=stack.postgres.database_url("postgres"),
        )
        await memory.stop()
        rss = memory.report()
        lag = await scrape_lag(sup.url("order"))
        await probe.stop()
        await tracker.stop()
        sup.stop_all()

        print("baseline 1: monolith (one process, one transaction per order)", flush=True)
        mono_url = stack.postgres.database_url("monolith")
        await prepare(mono_url, {p.sku: (p.price, STOCK) for p in catalog})
        mono_port = base + 30
        monolith = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.monolith",
                "--port",
                str(mono_port),
                "--database-url",
                mono_url,
                # the gateway simulator's books in SQLite, as the platform's payment service
                # keeps them on the local stack: the same gateway work on both sides
                "--gateway-state",
                str(data / "monolith-gateway.sqlite3"),
            ],
        )
        await wait_http(
            f"http://127.0.0.1:{mono_port}/health/ready", lambda r: r.status_code == 200
        )
        mono_groups = {
            "monolith": [monolith.pid],
            "postgres": groups.get("postgres", []),
            "bench (load generator)": [os.getpid()],
        }
        await drive(
            f"http://127.0.0.1:{mono_port}/orders",
            [args.warmup_rate],
            args.warmup_s,
            skus,
            tracker=None,
            groups=mono_groups,
            find_max=False,
            label="warm-up",
            accepted_status=201,
        )
        mono_steps, mono_sents = await drive(
            f"http://127.0.0.1:{mono_port}/orders",
            args.baseline_rates or args.rates,
            args.baseline_step_s or args.step_s,
            skus,
            tracker=None,
            groups=mono_groups,
            find_max=args.find_max,
            label="monolith",
            accepted_status=201,
            pg_url=mono_url,
        )

        tools = await logtools(stack.kafka.bootstrap, data, args.log_records)

        print("baseline 2: raw transport (aiokafka alone)", flush=True)
        raw = await transport.measure(stack.kafka.bootstrap, messages=args.transport_messages)
        print(f"  produce {raw['produce_per_s']:.0f}/s, consume {raw['consume_per_s']:.0f}/s")

        RESULTS.mkdir(exist_ok=True)
        pngs = charts(
            {"platform": platform_sents, "monolith": mono_sents}, RESULTS, sync={"monolith"}
        )
        if (memory_png := memory.chart(RESULTS)) is not None:
            pngs.append(memory_png)
        at_500 = next((s for s in steps if s["offered_per_s"] == 500), None)
        result: dict[str, Any] = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(),
            "command": "make bench " + " ".join(sys.argv[1:]),
            "confirmed_per_s": best(steps),
            "monolith_confirmed_per_s": best(mono_steps),
            "vs_monolith": round(best(steps) / best(mono_steps), 3) if best(mono_steps) else None,
            "vs_monolith_basis": ratio_basis(steps, mono_steps),
            "p99_ms": max((s["latency_ms"]["p99"] or 0) for s in steps) if steps else None,
            "p99_ms_at_500_per_s": at_500["latency_ms"]["p99"] if at_500 else None,
            "freshness_p99_ms": max(
                (s["freshness_ms"]["p99"] or 0 for s in steps if "freshness_ms" in s), default=None
            ),
            **tools,
            "transport": raw,
            "vs_transport": round(best(steps) / raw["consume_per_s"], 4),
            "consumer_lag_after_load": lag,
            "peak_rss_mb": {k: v["peak_mb"] for k, v in rss.get("processes", {}).items()},
            "memory": rss,
            "platform_steps": steps,
            "monolith_steps": mono_steps,
            "charts": pngs,
        }
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
            # python -m bench.scaling's figures: this run does not measure them again
            result["scaling"] = json.loads((RESULTS / "latest.json").read_text())["scaling"]
        (RESULTS / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
        return result
    finally:
        if monolith is not None:
            monolith.terminate()
            monolith.wait(10)
        sup.stop_all()
        stack.down()
        shutil.rmtree(data, ignore_errors=True)


def cpu_with_children() -> float:
    """CPU seconds of this process and of its children that have ended (the rebuild's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


async def logtools(bootstrap: str, data: Path, min_records: int) -> dict[str, Any]:
    """Export (`shop events export`) and rebuild (`shop events rebuild analytics`) throughput on
    a log of at least `min_records` records: what the load left, topped up with a synthetic
    saga log (bench/saga_log.py) when that is fewer."""
    names = [t.name for t in all_topics() if t.kind in ("event", "command")]
    async with reader.consumer(bootstrap) as kafka:
        ranges = await reader.resolve(kafka, names, reader.EARLIEST, reader.LATEST)
    have = sum(hi - lo for lo, hi in ranges.values())
    if have < min_records:
        print(f"topping the log up from {have} to {min_records} records", flush=True)
        skus = [f"SYN-{i:04d}" for i in range(240)]
        log = saga_log.SagaLog(skus, seed=5)
        started = datetime.now(UTC) - timedelta(hours=1)
        # + the catalog's records, which are on a compacted topic the export does not read
        wanted = min_records - have + len(skus)
        await saga_log.produce(bootstrap, log.records(10**9, started), until=wanted)
    print("event export (shop events export) of every event and command topic", flush=True)
    cpu = time.process_time()
    exported = await export(bootstrap, names, data / "export.jsonl")
    export_cpu = time.process_time() - cpu
    print(
        f"  {exported.records} records in {exported.seconds:.1f}s: {exported.rate:.0f}/s "
        f"({exported.records / export_cpu:.0f} per CPU second of the exporting process)"
    )
    print("analytics rebuild (shop events rebuild analytics) from the whole log", flush=True)
    cpu = cpu_with_children()
    rebuilt = await rebuilding.fold_log(
        bootstrap, "bench-rebuild-analytics", grace_s=600, retention_h=25
    )
    await rebuilding.write_changelogs(bootstrap, rebuilt)
    rebuild_cpu = cpu_with_children() - cpu
    await rebuilding.drop(bootstrap, rebuilt.app_id)
    print(
        f"  {rebuilt.records} events in {rebuilt.seconds:.1f}s: {rebuilt.rate:.0f}/s "
        f"(fold {rebuilt.fold_seconds:.1f}s, changelogs {rebuilt.write_seconds:.1f}s; "
        f"{rebuilt.records / rebuild_cpu:.0f} per CPU second of the rebuilding processes)"
    )
    return {
        "export_events_per_s": round(exported.rate),
        "export_records": exported.records,
        "export_events_per_cpu_s": round(exported.records / export_cpu),
        "rebuild_events_per_s": round(rebuilt.rate),
        "rebuild_records": rebuilt.records,
        "rebuild_events_per_cpu_s": round(rebuilt.records / rebuild_cpu),
        "load_average_1m": round(os.getloadavg()[0], 1),
    }


async def run_logtools(args: argparse.Namespace) -> dict[str, Any]:
    """Only the log tools, on a stack of their own: `python -m bench --only logtools`."""
    data = Path(tempfile.mkdtemp(prefix="shop-bench-"))
    base = args.port_base
    stack = LocalStack(data, kafka_port=base, kafka_controller_port=base + 1, pg_port=base + 2)
    try:
        print(f"starting the stack in {data}", flush=True)
        stack.up(databases=[])
        figures = await logtools(stack.kafka.bootstrap, data, args.log_records)
    finally:
        stack.down()
        shutil.rmtree(data, ignore_errors=True)
    latest = RESULTS / "latest.json"
    result: dict[str, Any] = json.loads(latest.read_text()) if latest.exists() else {}
    result.update(figures)
    result["logtools_when"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["logtools_command"] = "python -m bench " + " ".join(sys.argv[1:])
    RESULTS.mkdir(exist_ok=True)
    latest.write_text(json.dumps(result, indent=2) + "\n")
    return figures


async def scrape_lag(order_url: str) -> float | None:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"{order_url}/metrics")).text
    except httpx.HTTPError:
        return None
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("shop_consumer_lag{")
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rates", type=lambda s: [float(x) for x in s.split(",")], default=[50.0, 100.0, 200.0]
    )
    parser.add_argument("--step-s", type=float, default=20.0, help="seconds per rate")
    parser.add_argument(
        "--baseline-rates",
        type=lambda s: [float(x) for x in s.split(",")],
        default=None,
        help="the monolith's rates (default: --rates); higher ones find its own maximum, so "
        "that vs_monolith compares the two maxima",
    )
    parser.add_argument(
        "--baseline-step-s",
        type=float,
        default=None,
        help="seconds per rate for the monolith (default: --step-s; a shorter one keeps a long "
        "memory run of the platform from doubling the bench's length)",
    )
    parser.add_argument(
        "--find-max", action="store_true", help="double the last rate until saturated"
    )
    parser.add_argument("--warmup-rate", type=float, default=20.0)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument(
        "--settle-s",
        type=float,
        default=30.0,
        help="after each step, wait this long at most for its orders to end (CPU per order "
        "counts until then; raise it on a busy machine so every order is counted)",
    )
    parser.add_argument("--products", type=int, default=240)
    parser.add_argument("--transport-messages", type=int, default=100_000)
    parser.add_argument("--port-base", type=int, default=DEFAULT_PORT_BASE)
    parser.add_argument(
        "--log-records",
        type=int,
        default=300_000,
        help="export and rebuild a log of at least this many records (topped up if needed; "
        "big enough that starting the consumers and workers is not what is measured)",
    )
    parser.add_argument(
        "--only",
        choices=["logtools"],
        help="logtools: only the export and rebuild throughput (latest.json keeps the rest)",
    )
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the stack and services the bench started are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.only == "logtools":
        print(json.dumps(asyncio.run(run_logtools(args)), indent=2))
        return
    result = asyncio.run(run(args))
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "confirmed_per_s",
                    "monolith_confirmed_per_s",
                    "vs_monolith",
                    "vs_monolith_basis",
                    "p99_ms",
                    "freshness_p99_ms",
                    "vs_transport",
                    "export_events_per_s",
                    "rebuild_events_per_s",
                )
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
