"""Throughput at 1, 2 and 3 replicas of the platform's busiest service: `make bench-scaling`, or
`python -m bench.scaling --replicas 1,2,3 --rate 60 --step-s 30`.

Starts its own stack (one broker) and the five services on ports from --port-base, seeds ample
stock, and measures at one replica first: the busiest service is the one with the most CPU per
confirmed order (unless --service names one). Then, for each replica count, it runs that many
processes of it in one consumer group (HTTP load spread over their ports when it is the order
service), warms up, and drives open-loop load at --rate for --step-s seconds. Each step records
confirmed orders/s, latency percentiles, CPU per confirmed order of every process, and how busy
the machine's cores were. The figures go to bench/results/latest.json under `scaling`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench.__main__ import RESULTS, STOCK, cpu_seconds, summarize, wait_http
from bench.loadgen import Customers, TerminalTracker, http_client, open_loop, order_body, poster
from deploy.local.services import SERVICES, ServiceSupervisor
from deploy.local.stack import LocalStack
from deploy.seed import demo_catalog, initial_stock, seed_platform

SERVICE_NAMES = [s.package for s in SERVICES]


@dataclass
class Bench:
    stack: LocalStack
    sup: ServiceSupervisor
    tracker: TerminalTracker
    skus: list[str]
    args: argparse.Namespace

    def processes(self) -> dict[str, list[int]]:
        """Every process that works for an order, one entry per replica."""
        groups: dict[str, list[int]] = {"bench (load generator)": [os.getpid()]}
        for node, pid in zip(self.stack.kafka.nodes, self.stack.kafka.running_pids(), strict=True):
            if pid is not None:
                groups[node.name] = [pid]
        if (ppid := self.stack.postgres.running_pid()) is not None:
            pids = [ppid]
            with contextlib.suppress(psutil.Error):
                pids += [c.pid for c in psutil.Process(ppid).children(recursive=True)]
            groups["postgres"] = pids
        for svc in SERVICES:
            for k in range(self.sup.replica_count(svc)):
                if (pid := self.sup.pid(svc.package, k)) is not None:
                    groups[f"{svc.package}[{k}]" if k else svc.package] = [pid]
        return groups

    def order_ports(self) -> list[int]:
        order = next(s for s in SERVICES if s.package == "order_service")
        return [self.sup.port(order, k) for k in range(self.sup.replica_count(order))]

    async def step(self, rate: float, seconds: float, seed: int) -> dict[str, Any]:
        """Open-loop load at `rate` for `seconds`; throughput, latency and CPU per order."""
        rnd = random.Random(seed)
        weights = [1 / (i + 1) ** 0.6 for i in range(len(self.skus))]
        customers = Customers()
        groups = self.processes()
        urls = [f"http://127.0.0.1:{port}/orders" for port in self.order_ports()]
        async with http_client(in_flight=64) as client:
            cpu_before, machine_before = cpu_seconds(groups), psutil.cpu_times()
            started = time.time()
            result = await open_loop(
                poster(client, urls),
                rate,
                seconds,
                lambda: order_body(rnd, self.skus, weights, customers),
                on_accept=self.tracker.watch,
                in_flight=64,
            )
            await self.tracker.wait_for(result.sent, timeout_s=max(60.0, seconds))
            ended = max([started + seconds] + [s.terminal_at or 0 for s in result.sent])
            cpu_after, machine_after = cpu_seconds(groups), psutil.cpu_times()
        summary = summarize(result, started, ended, sync=False)
        confirmed = max(1, sum(1 for s in result.sent if s.outcome == "CONFIRMED"))
        summary["cpu_ms_per_order"] = {
            name: round((cpu_after[name] - cpu_before.get(name, 0)) * 1000 / confirmed, 2)
            for name in cpu_after
        }
        summary["cpu_ms_per_order_total"] = round(sum(summary["cpu_ms_per_order"].values()), 1)
        summary["machine_cores_busy"] = cores_busy(machine_before, machine_after)
        summary["load_average_1m"] = round(os.getloadavg()[0], 2)
        return summary

    async def scale(self, service: str, replicas: int) -> None:
        """Run `replicas` processes of the service (start or stop the difference), all ready."""
        svc = next(s for s in SERVICES if s.package == service)
        current = self.sup.replica_count(svc)
        self.sup.replicas = {service: replicas}
        for k in range(replicas, current):
            self.sup.stop(service, replica=k)
        self.sup.start(service)
        await asyncio.to_thread(self.sup.wait_ready, service, 180)


def cores_busy(before: Any, after: Any) -> float:
    """How many of the machine's cores were busy between two psutil.cpu_times() samples."""
    elapsed: float = sum(after) - sum(before)
    idle: float = (after.idle + after.iowait) - (before.idle + before.iowait)
    cores: int = psutil.cpu_count()
    return round((elapsed - idle) / max(elapsed, 1e-9) * cores, 2)


def busiest(cpu_ms_per_order: dict[str, float]) -> str:
    """The service whose processes spent the most CPU per confirmed order."""
    per_service = {
        name: sum(v for k, v in cpu_ms_per_order.items() if k.split("[")[0] == name)
        for name in SERVICE_NAMES
    }
    return max(per_service, key=lambda name: per_service[name])


def processes_for(args: argparse.Namespace, data: Path) -> tuple[LocalStack, ServiceSupervisor]:
    base = args.port_base
    most = max(args.replicas)
    stack = LocalStack(data, kafka_port=base, kafka_controller_port=base + 1, pg_port=base + 2)
    sup = ServiceSupervisor(
        kafka_bootstrap=stack.kafka.bootstrap,
        database_url=stack.postgres.database_url,
        data_dir=data,
        # replica k of service i on base + 10 + 10i + k
        ports={
            s.package: [base + 10 + 10 * i + k for k in range(most)] for i, s in enumerate(SERVICES)
        },
        env={f"{s.prefix}LOG_LEVEL": "WARNING" for s in SERVICES},
    )
    return stack, sup


async def run(
    args: argparse.Namespace, stack: LocalStack, sup: ServiceSupervisor
) -> dict[str, Any]:
    data = sup.data_dir
    tracker = TerminalTracker(stack.kafka.bootstrap)
    try:
        print(f"starting the stack and services in {data}", flush=True)
        stack.up(databases=[s.database for s in SERVICES])
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
        await tracker.start()
        bench = Bench(stack, sup, tracker, skus, args)

        service = args.service
        if service is None and args.replicas[0] != 1:
            print(f"calibrating: which service is busiest at {args.rate:.0f}/s", flush=True)
            await bench.step(args.warmup_rate, args.warmup_s, seed=1)
            calibration = await bench.step(args.rate, args.step_s, seed=2)
            service = busiest(calibration["cpu_ms_per_order"])
        steps = []
        for n in args.replicas:
            if service is not None:
                await bench.scale(service, n)
            await bench.step(args.warmup_rate, args.warmup_s, seed=10 + n)
            summary = await bench.step(args.rate, args.step_s, seed=20 + n)
            if service is None:  # one process of each: this step tells which is busiest
                service = busiest(summary["cpu_ms_per_order"])
                print(f"  busiest: {service} {summary['cpu_ms_per_order']}", flush=True)
            summary["replicas"] = n
            steps.append(summary)
            print(
                f"  {service} x{n} @ {args.rate:.0f}/s: confirmed {summary['confirmed_per_s']}/s, "
                f"p99 {summary['latency_ms']['p99'] or 0:.0f} ms, "
                f"CPU {summary['cpu_ms_per_order_total']} ms/order, "
                f"cores busy {summary['machine_cores_busy']}",
                flush=True,
            )
        return {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": "python -m bench.scaling " + " ".join(sys.argv[1:]),
            "machine": {"cores": os.cpu_count(), "load_average_at_start": args.load_at_start},
            "service": service,
            "offered_note": "open loop; above the 1-replica capacity so each step measures it",
            "chosen_by": "given" if args.service else "most CPU per confirmed order at 1 replica",
            "offered_per_s": args.rate,
            "step_s": args.step_s,
            "steps": steps,
        }
    finally:
        with contextlib.suppress(Exception):
            await tracker.stop()


def save(scaling: dict[str, Any], path: Path = RESULTS / "latest.json") -> None:
    """Put the figures under `scaling` in latest.json, keeping what the main bench wrote."""
    path.parent.mkdir(exist_ok=True)
    try:
        result: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        result = {}
    result["scaling"] = scaling
    path.write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--replicas", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3]
    )
    parser.add_argument("--service", choices=SERVICE_NAMES, help="[default: the busiest]")
    parser.add_argument("--rate", type=float, default=60.0, help="offered orders per second")
    parser.add_argument("--step-s", type=float, default=30.0, help="seconds of load per count")
    parser.add_argument("--warmup-rate", type=float, default=20.0)
    parser.add_argument("--warmup-s", type=float, default=5.0)
    parser.add_argument("--products", type=int, default=240)
    parser.add_argument("--port-base", type=int, default=27200)
    args = parser.parse_args()
    args.load_at_start = round(os.getloadavg()[0], 2)
    # SIGTERM unwinds like Ctrl-C, so the stack and services the bench started are stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    data = Path(tempfile.mkdtemp(prefix="shop-bench-scaling-"))
    stack, sup = processes_for(args, data)
    try:
        scaling = asyncio.run(run(args, stack, sup))
    finally:
        # Here, not in run(): Ctrl-C / SIGTERM may interrupt the event loop outside any await.
        sup.stop_all()
        stack.down()
        shutil.rmtree(data, ignore_errors=True)
    save(scaling)
    print(json.dumps({k: v for k, v in scaling.items() if k != "steps"}, indent=2))


if __name__ == "__main__":
    main()
